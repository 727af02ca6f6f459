"""The trainable part of CF-CLIP: TEM + fusion + StyleCLIP's LevelsMapper, and the residual edit."""

from __future__ import annotations

import torch
from torch import nn

from src.models.tem import Fusion, MappingNet, TextEmbeddingMapper

# StyleCLIP's split of the W+ layers into coarse / medium / fine groups.
COARSE_END, MEDIUM_END = 4, 8


class LevelsMapper(nn.Module):
    """Coarse [:4], medium [4:8] and fine [8:] layers each through their own mapping net; a group switched off
    outputs zeros (StyleCLIP's --no_*_mapper)."""

    def __init__(
        self,
        n_latent: int,
        latent_dim: int,
        coarse: bool = True,
        medium: bool = True,
        fine: bool = True,
        n_layers: int = 4,
        pixelnorm_axis: str = "feature",
    ):
        super().__init__()
        self.bounds = {
            "coarse": (0, min(COARSE_END, n_latent)),
            "medium": (min(COARSE_END, n_latent), min(MEDIUM_END, n_latent)),
            "fine": (min(MEDIUM_END, n_latent), n_latent),
        }
        enabled = {"coarse": coarse, "medium": medium, "fine": fine}
        self.nets = nn.ModuleDict(
            {
                name: MappingNet(latent_dim, latent_dim, n_layers, pixelnorm_axis=pixelnorm_axis)
                for name, (lo, hi) in self.bounds.items()
                if enabled[name] and hi > lo
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, D) -> (B, L, D)
        parts = []
        for name, (lo, hi) in self.bounds.items():
            if hi <= lo:
                continue
            xs = x[:, lo:hi]
            parts.append(self.nets[name](xs) if name in self.nets else torch.zeros_like(xs))
        return torch.cat(parts, dim=1)


class CFCLIPMapper(nn.Module):
    """delta = LevelsMapper(Fusion(w, TEM(text))) with TEM, or LevelsMapper(w) without (StyleCLIP's mapper).

    Sizes come from the generator and CLIP at build time (n_latent, latent_dim, text_dim): nothing hard-coded.
    ``text_factors=2`` (``prompt.tem_input=factored``): the text is (modifier, noun), each (B, text_dim) through its
    own TEM, and their codes multiply, so a colour's code is bound to the part it names.
    """

    def __init__(
        self,
        n_latent: int,
        latent_dim: int,
        text_dim: int,
        use_tem: bool = True,
        coarse: bool = True,
        medium: bool = True,
        fine: bool = True,
        n_layers: int = 4,
        pixelnorm_axis: str = "feature",
        text_factors: int = 1,
    ):
        super().__init__()
        if text_factors not in (1, 2):
            raise ValueError(f"text_factors must be 1 or 2, got {text_factors}")
        self.n_latent, self.latent_dim, self.text_dim, self.use_tem = n_latent, latent_dim, text_dim, use_tem
        self.text_factors = text_factors
        if use_tem:
            self.tem = TextEmbeddingMapper(n_latent, text_dim, latent_dim, n_layers, pixelnorm_axis)
            if text_factors == 2:
                self.tem_noun = TextEmbeddingMapper(n_latent, text_dim, latent_dim, n_layers, pixelnorm_axis)
            self.fusion = Fusion(latent_dim)
        self.mapper = LevelsMapper(n_latent, latent_dim, coarse, medium, fine, n_layers, pixelnorm_axis)

    def forward(self, w: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """w: (B, L, D) source W+; text: (B, E) raw CLIP text embedding of the target -> delta (B, L, D)."""
        if w.ndim != 3 or w.shape[1:] != (self.n_latent, self.latent_dim):
            raise ValueError(
                f"mapper expects W+ latents (B, {self.n_latent}, {self.latent_dim}), got {tuple(w.shape)}"
            )
        x = w
        if self.use_tem:
            if text is None:
                raise ValueError("this mapper uses TEM (model.tem=true) and needs the target text embedding")
            width = self.text_dim * self.text_factors
            if text.shape != (w.shape[0], width):
                raise ValueError(f"text embedding must be (B, {width}), got {tuple(text.shape)}")
            text = text.to(w.dtype)
            if self.text_factors == 1:
                t_w = self.tem(text)
            else:  # (modifier, noun) codes multiply: (B, L, D)
                t_w = self.tem(text[:, : self.text_dim]) * self.tem_noun(text[:, self.text_dim :])
            x = self.fusion(w, t_w)
        return self.mapper(x)


def apply_edit(w: torch.Tensor, delta: torch.Tensor, step: float) -> torch.Tensor:
    """The residual edit of the official code: w_hat = w + step * delta (step 0.1)."""
    return w + step * delta
