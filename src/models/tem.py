"""Text Embedding Mapping (TEM): one mapping net per style layer, then the fusion layer (CF-CLIP §3.2)."""

from __future__ import annotations

import torch
from torch import nn

from src.models.layers import EqualLinear, PixelNorm, fused_leaky_relu


class MappingNet(nn.Sequential):
    """PixelNorm + ``n_layers`` x EqualLinear (lr_mul 0.01, fused leaky ReLU after every layer, also the last).

    ``pixelnorm_axis="feature"`` normalises each vector over its features (correct). ``"layer"`` reproduces the
    official code, which normalises [B, 1, D] over the size-1 layer axis and so keeps only the signs.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        n_layers: int = 4,
        lr_mul: float = 0.01,
        pixelnorm_axis: str = "feature",
    ):
        if pixelnorm_axis not in ("feature", "layer"):
            raise ValueError(f"pixelnorm_axis must be 'feature' or 'layer', got {pixelnorm_axis!r}")
        layers: list[nn.Module] = [PixelNorm(dim=-1 if pixelnorm_axis == "feature" else 1)]
        for i in range(n_layers):
            layers.append(
                EqualLinear(in_dim if i == 0 else out_dim, out_dim, lr_mul=lr_mul, activation="fused_lrelu")
            )
        super().__init__(*layers)


class TextEmbeddingMapper(nn.Module):
    """CLIP text embedding (B, E) -> per-layer text codes t_w (B, L, D), one mapping net per layer."""

    def __init__(
        self,
        n_latent: int,
        text_dim: int,
        latent_dim: int,
        n_layers: int = 4,
        pixelnorm_axis: str = "feature",
    ):
        super().__init__()
        self.n_latent = n_latent
        self.pixelnorm_axis = pixelnorm_axis
        self.nets = nn.ModuleList(
            MappingNet(text_dim, latent_dim, n_layers, pixelnorm_axis=pixelnorm_axis) for _ in range(n_latent)
        )

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """(B, E) -> (B, L, D): the L nets run as one batched matmul per layer, their weights stacked per call (the
        same maths and state-dict keys as running each net; one kernel per layer for all nets, on a GPU)."""
        # each net sees (B, 1, E) as in the official code, so the "layer" PixelNorm quirk is exact; the norm has
        # no parameters, so it is computed once for all nets
        x = self.nets[0][0](text.unsqueeze(1))[:, 0]  # (B, E)
        for j in range(1, len(self.nets[0])):
            layers = [net[j] for net in self.nets]
            first = layers[0]
            weight = torch.stack([m.weight for m in layers]) * first.scale  # (L, D_out, D_in)
            bias = torch.stack([m.bias for m in layers]) * first.lr_mul  # (L, D_out)
            x = fused_leaky_relu(
                torch.einsum("bi,loi->blo" if x.ndim == 2 else "bli,loi->blo", x, weight) + bias
            )
        return x  # (B, L, D)


class Fusion(nn.Module):
    """Concatenate w and t_w on features and project back: (B, L, 2D) -> (B, L, D), shared across layers."""

    def __init__(self, latent_dim: int, lr_mul: float = 0.01):
        super().__init__()
        self.proj = EqualLinear(2 * latent_dim, latent_dim, lr_mul=lr_mul, activation="fused_lrelu")

    def forward(self, w: torch.Tensor, t_w: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([w, t_w], dim=-1))
