"""Small statistics: Student-t 95% confidence intervals for sweep reports (without scipy), PSNR of images."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

# two-sided 95% Student t quantiles, df = 1..30
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042)  # fmt: skip


def t95(df: int) -> float:
    if df <= len(T95):
        return T95[df - 1]
    z = 1.959964  # Cornish-Fisher expansion, < 1e-4 off beyond the table
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Iterable[float | None]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% CI, n) of the non-missing values; the CI is nan below two values."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    m = sum(v) / n
    if n < 2:
        return m, math.nan, n
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    return m, t95(n - 1) * sd / math.sqrt(n), n


def psnr_db(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR (N,) in dB between images in [-1, 1] (peak-to-peak 2), over ``mask`` (N, 1, H, W) if given; NaN
    where the mask is empty."""
    err = (a.float() - b.float()).pow(2).mean(1, keepdim=True)  # (N, 1, H, W)
    if mask is None:
        mask = torch.ones_like(err)
    mask = mask.float()
    count = mask.sum((1, 2, 3))
    mse01 = (err * mask).sum((1, 2, 3)) / count.clamp_min(1) / 4  # on the [0, 1] scale
    out = -10 * torch.log10(mse01.clamp_min(1e-10))
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))
