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
import torch.nn.functional as F
from torch import nn

from src.models.layers import EqualLinear, FusedLeakyReLU, PixelNorm
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
