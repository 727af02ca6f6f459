"""Building blocks shared by the StyleGAN2 generator and the CF-CLIP mappers.

Parameter names follow rosinality's stylegan2-pytorch (``weight``, ``bias``), the ecosystem's checkpoint
format. Everything is plain PyTorch: no compiled extensions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def fused_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    scale: float = math.sqrt(2),
) -> torch.Tensor:
    """Bias add + leaky ReLU + gain, the StyleGAN2 "fused" activation (reference PyTorch path)."""
    if bias is not None:
        shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
        x = x + bias.view(shape)
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Learned bias followed by the scaled leaky ReLU (rosinality name: ``bias``)."""

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = math.sqrt(2)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class PixelNorm(nn.Module):
    """x / rms(x) over ``dim``. dim=-1 normalises features (correct); the official mapper used dim=1."""

    def __init__(self, dim: int = -1, eps: float = 1e-8):
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=self.dim, keepdim=True) + self.eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight stored as randn/lr_mul, scaled at run time.

    Works on any leading shape ([..., in_dim] -> [..., out_dim]), so mappers can run on [B, L, D] directly.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            if bias is not None:
                out = out + bias
            return F.leaky_relu(out, 0.2) * math.sqrt(2)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, "
            f"activation={self.activation}"
        )
