"""StyleGAN2 generator in plain PyTorch, state-dict compatible with rosinality's stylegan2-pytorch.

Parameter and buffer names (``style.1.weight``, ``input.input``, ``conv1.conv.weight``,
``convs.0.conv.blur.kernel``, ``to_rgbs.0.upsample.kernel``, ``noises.noise_0``, ...) are the checkpoint
format StyleCLIP / e4e / CF-CLIP load, so ``g_ema`` state dicts load with ``strict=True``. No compiled ops:
resampling is the reference ``upfirdn2d`` path (``src.models.upfirdn``).

Latents: W is (B, D), W+ is (B, L, D) with L = ``n_latent`` = 2 * log2(size) - 2 (one style per layer).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn

from src.models.layers import EqualLinear, PixelNorm
from src.models.stylegan2_blocks import ConstantInput, StyledConv, ToRGB


class Generator(nn.Module):
    """StyleGAN2 generator (config-f layout): mapping net ``style`` + synthesis with skip-ToRGB outputs.

    ``channels[res] = min(channel_max, channel_base * channel_multiplier // res)``: rosinality's table at
    the defaults, tiny generators with a small ``channel_max``. ``channels_last`` (also settable as an
    attribute) runs the styled convolutions in NHWC memory layout (same values up to rounding; the image may
    come back in either layout); the default ``None`` uses NHWC on CPU only.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        channel_max: int = 512,
        channel_base: int = 16384,
        channels_last: bool | None = None,
    ):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        self.size, self.style_dim = size, style_dim
        # NHWC activations in synthesis. None = on CPU only, where oneDNN's NHWC convolutions measured ~20%
        # faster at 1024 px (docs/performance.md); on GPU set True to try it (tensor cores, bf16).
        self.channels_last = channels_last
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1  # styled convs = noise inputs
        self.n_latent = self.log_size * 2 - 2  # styled convs + final ToRGB = W+ layers
        self.channels = {
            2**i: min(channel_max, channel_base * channel_multiplier // 2**i)
            for i in range(2, self.log_size + 1)
        }

        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
                for _ in range(n_mlp)
            ],
        )
        ch = self.channels[4]
        self.input = ConstantInput(ch)
        self.conv1 = StyledConv(ch, ch, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch, style_dim, upsample=False)

        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for i in range(3, self.log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(StyledConv(ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel))
            ch = out_ch

        # Fixed per-layer noise (noise_0 at 4x4, then two per resolution): deterministic synthesis.
        self.noises = nn.Module()
        for layer_idx, shape in enumerate(self._noise_shapes()):
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(shape))

    def _noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(self.num_layers)]

    def make_noise(self) -> list[torch.Tensor]:
        """Fresh random noise maps, one per styled conv, shaped like the ``noises`` buffers."""
        device = self.input.input.device
        return [torch.randn(shape, device=device) for shape in self._noise_shapes()]

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Z -> W: (..., D) -> (..., D)."""
        if z.shape[-1] != self.style_dim:
            raise ValueError(f"mapping expects z of shape (B, {self.style_dim}), got {tuple(z.shape)}")
        return self.style(z)

    get_latent = mapping  # rosinality's name

    @torch.no_grad()
    def mean_latent(self, n_latent: int) -> torch.Tensor:
        """Mean of W over ``n_latent`` random z: (1, D), the truncation centre."""
        z = torch.randn(n_latent, self.style_dim, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def _as_wplus(self, w: torch.Tensor) -> torch.Tensor:
        """(B, D) or (B, L, D) -> (B, L, D), with a clear error on any other shape."""
        d, n = self.style_dim, self.n_latent
        if w.ndim == 2 and w.shape[1] == d:
            return w.unsqueeze(1).expand(-1, n, -1)
        if w.ndim == 3 and tuple(w.shape[1:]) == (n, d):
            return w
        raise ValueError(f"expected W of shape (B, {d}) or W+ of shape (B, {n}, {d}), got {tuple(w.shape)}")

    def _noise_inputs(
        self, noise: Sequence[torch.Tensor | None] | None, randomize_noise: bool
    ) -> list[torch.Tensor | None]:
        if noise is None:
            if randomize_noise:
                return [None] * self.num_layers
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
        return list(noise)

    def synthesis(
        self,
        w: torch.Tensor,
        noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = False,
    ) -> torch.Tensor:
        """W (B, D) or W+ (B, L, D) -> image (B, 3, size, size), roughly in [-1, 1].

        By default uses the fixed ``noises`` buffers, so the same latent always gives the same image.
        """
        w = self._as_wplus(w)  # (B, L, D)
        noise = self._noise_inputs(noise, randomize_noise)
        x = self.input(w.shape[0])  # (B, C, 4, 4)
        nhwc = self.channels_last if self.channels_last is not None else x.device.type == "cpu"
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)  # the convolutions keep the layout
        x = self.conv1(x, w[:, 0], noise=noise[0])
        skip = self.to_rgb1(x, w[:, 1])  # (B, 3, 4, 4)
        for k, to_rgb in enumerate(self.to_rgbs):
            i = 2 * k + 1  # style / noise index of this block's first conv
            x = self.convs[2 * k](x, w[:, i], noise=noise[i])  # (B, C, 2H, 2W)
            x = self.convs[2 * k + 1](x, w[:, i + 1], noise=noise[i + 1])
            skip = to_rgb(x, w[:, i + 2], skip)  # (B, 3, 2H, 2W)
        return skip

    def forward(
        self,
        styles: Sequence[torch.Tensor],
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rosinality's call: a list of one or two z (or W with ``input_is_latent``; a single W+ works too),
        optional truncation toward ``truncation_latent`` and style mixing at ``inject_index``.
        Returns (image (B, 3, size, size), W+ latent (B, L, D) if ``return_latents`` else None).
        """
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"expected 1 or 2 style tensors, got {len(styles)}")
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) == 1:
            latent = self._as_wplus(styles[0])
        else:
            n = self.n_latent
            if inject_index is None:
                inject_index = random.randint(1, n - 1)
            if any(s.ndim != 2 or s.shape[1] != self.style_dim for s in styles):
                raise ValueError(
                    f"style mixing expects two W of shape (B, {self.style_dim}), "
                    f"got {[tuple(s.shape) for s in styles]}"
                )
            latent = torch.cat(
                [
                    styles[0].unsqueeze(1).expand(-1, inject_index, -1),
                    styles[1].unsqueeze(1).expand(-1, n - inject_index, -1),
                ],
                1,
            )  # (B, L, D)

        image = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise)
        return image, (latent if return_latents else None)
