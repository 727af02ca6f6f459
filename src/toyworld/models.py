"""The toyfaces networks besides the oracle: generator config, the inverter (render -> W+), a latent sampler.

The generator is the project's own StyleGAN2 class in a small configuration (same code path as FFHQ-1024).
"""

from __future__ import annotations

import torch
from torch import nn

from src.models.stylegan2 import Generator

# Toy StyleGAN2: 64 px, 10 style layers of width 128 (channels 128 up to 32 px, 64 at 64 px).
GENERATOR_KWARGS: dict = dict(size=64, style_dim=128, n_mlp=2, channel_multiplier=1, channel_max=128)
GENERATOR_CHANNEL_BASE = 4096


def build_generator(seed: int = 0) -> nn.Module:
    """The toy generator with seeded random weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Generator(**GENERATOR_KWARGS, channel_base=GENERATOR_CHANNEL_BASE)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 2, 1),
        nn.GroupNorm(8, cout),
        nn.LeakyReLU(0.2),
        nn.Conv2d(cout, cout, 3, 1, 1),
        nn.GroupNorm(8, cout),
        nn.LeakyReLU(0.2),
    )


class Inverter(nn.Module):
    """A pSp-style encoder: images (B, 3, 64, 64) in [-1, 1] -> W+ (B, L, D).

    Coarse layers read the 4x4 features, medium the 8x8, fine the 16x16 (pooled), as in pSp's feature pyramid.
    """

    def __init__(self, n_latent: int = 10, style_dim: int = 128, width: int = 32, squeeze: int = 32):
        super().__init__()
        self.n_latent, self.style_dim = n_latent, style_dim
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1), nn.LeakyReLU(0.2))  # 64
        self.d32, self.d16 = _down(w, 2 * w), _down(2 * w, 4 * w)  # 32, 16
        self.d8, self.d4 = _down(4 * w, 8 * w), _down(8 * w, 8 * w)  # 8, 4
        self.n_coarse = min(4, n_latent)
        self.n_medium = min(4, n_latent - self.n_coarse)
        self.n_fine = n_latent - self.n_coarse - self.n_medium
        # 1x1 convs squeeze each pyramid level to `squeeze` channels before the linear heads (keeps assets small)
        self.squeeze4, self.squeeze8, self.squeeze16 = (
            nn.Conv2d(c, squeeze, 1) for c in (8 * w, 8 * w, 4 * w)
        )
        self.coarse = nn.Linear(squeeze * 16, self.n_coarse * style_dim)
        self.medium = nn.Linear(squeeze * 16, self.n_medium * style_dim) if self.n_medium else None
        self.fine = nn.Linear(squeeze * 16, self.n_fine * style_dim) if self.n_fine else None
        self.register_buffer("w_mean", torch.zeros(1, n_latent, style_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        f16 = self.d16(self.d32(self.stem(x)))  # (B, 4w, 16, 16)
        f8 = self.d8(f16)  # (B, 8w, 8, 8)
        f4 = self.d4(f8)  # (B, 8w, 4, 4)
        pool = nn.functional.adaptive_avg_pool2d
        parts = [self.coarse(self.squeeze4(f4).flatten(1)).view(B, self.n_coarse, -1)]
        if self.medium is not None:
            parts.append(self.medium(self.squeeze8(pool(f8, 4)).flatten(1)).view(B, self.n_medium, -1))
        if self.fine is not None:
            parts.append(self.fine(self.squeeze16(pool(f16, 4)).flatten(1)).view(B, self.n_fine, -1))
        return torch.cat(parts, dim=1) + self.w_mean  # (B, L, D)


class GaussianLatentSampler(nn.Module):
    """Random W+ latents from a Gaussian fitted to inverted renders (the AFHQ-style "random latents").

    Stores the mean (L*D,) and a low-rank factor (L*D, R) of the covariance plus a diagonal residual.
    """

    def __init__(self, n_latent: int, style_dim: int, rank: int = 64):
        super().__init__()
        self.n_latent, self.style_dim = n_latent, style_dim
        dim = n_latent * style_dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("factor", torch.zeros(dim, rank))
        self.register_buffer("residual_std", torch.zeros(dim))

    @torch.no_grad()
    def fit(self, latents: torch.Tensor) -> GaussianLatentSampler:
        x = latents.flatten(1).double()  # (N, L*D)
        mean = x.mean(0)
        xc = x - mean
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)
        r = self.factor.shape[1]
        factor = vh[:r].T * (s[:r] / (x.shape[0] - 1) ** 0.5)  # (dim, r)
        resid = (xc - xc @ vh[:r].T @ vh[:r]).pow(2).mean(0).sqrt()
        self.mean.copy_(mean.float())
        self.factor.copy_(factor.float())
        self.residual_std.copy_(resid.float())
        return self

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, truncation: float = 1.0
    ) -> torch.Tensor:
        r = self.factor.shape[1]
        eps = torch.randn(n, r, generator=generator)
        eta = torch.randn(n, self.mean.numel(), generator=generator)
        x = eps @ self.factor.T + eta * self.residual_std
        return (self.mean + truncation * x).view(n, self.n_latent, self.style_dim)
