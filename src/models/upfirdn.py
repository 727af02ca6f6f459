"""StyleGAN2 resampling in plain PyTorch: ``upfirdn2d`` (upsample, pad, FIR filter, downsample) and the
``Blur``/``Upsample`` modules built on it.

This is the reference path of rosinality's ``op/upfirdn2d.py`` written with stock ops, so it runs on any
device and autograd derives its backward. Buffer names (``kernel``) and kernel scaling follow rosinality,
so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Normalised 2-D FIR kernel; a 1-D kernel becomes its outer product (separable filter)."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), convolve with ``kernel``, keep every ``down``-th pixel.

    Same ``pad`` on both axes, as in rosinality. x: (B, C, H, W); kernel: (kh, kw).
    Output side: (H * up + pad0 + pad1 - kh) // down + 1.
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])  # zeros after every pixel, on both axes
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [p0, p1, p0, p1])  # (B, C, H', W'); negative pads crop
    # True convolution = correlation with the flipped kernel, one filter per channel.
    weight = kernel.flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, kh, kw)
    return F.conv2d(x, weight, stride=down, groups=c)


class Blur(nn.Module):
    """FIR low-pass (``kernel`` buffer, times ``upsample_factor**2`` after an upsampling conv to keep gain)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 (or ``factor``) upsampling with an FIR filter: (B, C, H, W) -> (B, C, H*f, W*f)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)
