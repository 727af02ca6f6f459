"""The layers of the StyleGAN2 generator (``src.models.stylegan2``), named as in rosinality's stylegan2-pytorch so
checkpoints load unchanged: modulated convolution, noise injection, the constant input, styled convolution, ToRGB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.models.layers import EqualLinear, FusedLeakyReLU
from src.models.upfirdn import Blur, Upsample


class ModulatedConv2d(nn.Module):
    """Conv whose weight is scaled per sample by a style (modulation), then normalised (demodulation).

    ``fused=True`` folds the batch into groups of one grouped conv (rosinality's form);
    ``fused=False`` scales the input by the style instead and the output by the demodulation factor, which
    is the same linear map but lets one shared weight serve the whole batch (faster on CPU, cheaper backward).
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        fused: bool = False,
    ):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate, self.fused = upsample, demodulate, fused
        self.eps = 1e-8
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
            f"demodulate={self.demodulate}, fused={self.fused}"
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        out, demod = self.forward_parts(x, style)
        return out if demod is None else out * demod.view(*demod.shape, 1, 1)

    def forward_parts(self, x: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(conv output before demodulation (B, Cout, H', W'), demodulation factors (B, Cout) or None).

        ``forward`` = out * demod; StyledConv folds the product into its bias/noise/activation pass instead.
        """
        b, c, h, w = x.shape  # (B, Cin, H, W); style: (B, D)
        s = self.modulation(style)  # (B, Cin)
        if self.fused:
            return self._forward_grouped(x, s), None
        weight = self.scale * self.weight[0]  # (Cout, Cin, k, k)
        x = x * s.view(b, c, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))  # (B, Cout, 2H, 2W)
        else:
            out = F.conv2d(x, weight, padding=self.padding)  # (B, Cout, H, W)
        if not self.demodulate:
            return out, None
        # |w * s|^2 summed over (Cin, k, k) = s^2 @ sum_k w^2 -> (B, Cout)
        return out, torch.rsqrt(s.square() @ weight.square().sum([2, 3]).t() + self.eps)

    def _forward_grouped(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k, c_out = self.kernel_size, self.out_channel
        weight = self.scale * self.weight * s.view(b, 1, c, 1, 1)  # (B, Cout, Cin, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum([2, 3, 4]) + self.eps).view(b, c_out, 1, 1, 1)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, c_out, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=b)
            return self.blur(out.view(b, c_out, *out.shape[-2:]))  # (B, Cout, 2H, 2W)
        out = F.conv2d(x, weight.reshape(b * c_out, c, k, k), padding=self.padding, groups=b)
        return out.view(b, c_out, h, w)


class NoiseInjection(nn.Module):
    """Adds ``weight`` * noise; fresh N(0, 1) noise per sample when none is given."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 starting feature map (rosinality name: ``input``)."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)  # (B, C, 4, 4)


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally x2 upsampling) + noise + biased scaled leaky ReLU."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """activate(noise(conv(x, style))) with three full-size in-place passes instead of five new tensors.

        lrelu(z) * g = lrelu(g * z) for the gain g > 0, so the gain folds into the demodulation factors, the
        noise strength and the bias: y = out * (g * demod); y += g * w_noise * noise; y += g * bias; lrelu_(y).
        """
        out, demod = self.conv.forward_parts(x, style)  # (B, C, H, W), (B, C) or None
        b = out.shape[0]
        act = self.activate
        gain = act.scale
        if noise is None:
            noise = out.new_empty(b, 1, *out.shape[-2:]).normal_()
        y = out * gain if demod is None else out * (demod * gain).view(b, -1, 1, 1)
        y += (self.noise.weight * gain) * noise  # (1|B, 1, H, W) broadcast
        y += (act.bias * gain).view(1, -1, 1, 1)
        return F.leaky_relu_(y, act.negative_slope)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) added to the upsampled RGB skip of the previous block."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias  # (B, 3, H, W)
        if skip is not None:
            out = out + self.upsample(skip)
        return out
