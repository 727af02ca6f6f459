"""GAN inversion by optimisation in W+ (the StyleGAN2 projector recipe): image -> latent that re-renders it.

Start from the mean latent (``generator.latent_avg`` from the checkpoint, else the mean of 4096 mapped z),
optimise one W+ code (B, L, D) with Adam under LPIPS + pixel L2, with a decaying latent-noise ramp and a
cosine learning-rate ramp-down. ``optimize_noise=True`` also optimises the per-layer noise maps, with the
multi-scale noise regularisation and per-step re-normalisation that keep them from encoding the image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger("cfclip")


@dataclass
class Inversion:
    w: torch.Tensor  # (B, L, D) W+ latents
    noises: list[torch.Tensor] | None  # optimised noise maps, or None (the generator's fixed ones)
    image: torch.Tensor  # (B, 3, H, W) the re-rendered image in [-1, 1]
    losses: list[float]  # total loss per step


@torch.no_grad()
def mean_latent(generator: nn.Module, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """(1, D) mean W: the checkpoint's ``latent_avg`` when it has one, else mapped random z (seeded)."""
    avg = getattr(generator, "latent_avg", None)
    if isinstance(avg, torch.Tensor):
        return avg.reshape(1, -1).float()
    device = next(generator.parameters()).device
    z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return generator.mapping(z).mean(0, keepdim=True)


@torch.no_grad()
def latent_std(generator: nn.Module, mean: torch.Tensor, n: int = 4096, seed: int = 1) -> float:
    """Spread of W around its mean (scales the latent-noise ramp)."""
    device = next(generator.parameters()).device
    z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return float(((generator.mapping(z) - mean) ** 2).sum() / n) ** 0.5


def noise_regularize(noises: list[torch.Tensor]) -> torch.Tensor:
    """Autocorrelation of each noise map with its 1-pixel shifts, over a pyramid down to 8x8 (StyleGAN2)."""
    loss = noises[0].new_zeros(())
    for noise in noises:
        size = noise.shape[2]
        while True:
            loss = (
                loss
                + (noise * torch.roll(noise, shifts=1, dims=3)).mean().pow(2)
                + (noise * torch.roll(noise, shifts=1, dims=2)).mean().pow(2)
            )
            if size <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
            size //= 2
    return loss


@torch.no_grad()
def noise_normalize_(noises: list[torch.Tensor]) -> None:
    for noise in noises:
        noise.sub_(noise.mean()).div_(noise.std().clamp_min(1e-8))


def learning_rate(t: float, initial: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """Cosine ramp-down over the last ``rampdown`` fraction, linear ramp-up over the first ``rampup``."""
    lr_ramp = min(1.0, (1.0 - t) / rampdown)
    lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
    return initial * lr_ramp * min(1.0, t / rampup)


def invert(
    generator: nn.Module,
    target: torch.Tensor,
    steps: int = 500,
    lr: float = 0.1,
    lpips: nn.Module | None = None,
    lpips_weight: float = 1.0,
    l2_weight: float = 1.0,
    optimize_noise: bool = True,
    noise_weight: float = 1e5,
    noise_ramp: float = 0.75,
    noise_strength: float = 0.05,
    lpips_size: int = 256,
    w_init: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Inversion:
    """Invert ``target`` (B, 3, H, W) in [-1, 1] at the generator's resolution into W+ (B, L, D).

    ``lpips``: an LPIPS module (``src.models.perceptual.lpips_model`` or ``lpips.LPIPS``) used at ``lpips_size``;
    None or ``lpips_weight=0`` inverts with the pixel L2 only.
    """
    if target.ndim != 4 or target.shape[1] != 3 or target.shape[-1] != generator.size:
        raise ValueError(
            f"target must be (B, 3, {generator.size}, {generator.size}) in [-1, 1], got {tuple(target.shape)}"
        )
    device = next(generator.parameters()).device
    target = target.to(device, torch.float32)
    B = target.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    mean = mean_latent(generator).to(device)
    std = latent_std(generator, mean)
    start = (w_init if w_init is not None else mean[:, None].expand(B, generator.n_latent, -1)).to(device)
    w = start.detach().clone().float().requires_grad_(True)  # (B, L, D)
    params: list[torch.Tensor] = [w]
    noises = None
    if optimize_noise:
        noises = [
            torch.randn((B, *s[1:]), generator=gen).to(device).requires_grad_(True)
            for s in generator._noise_shapes()
        ]
        params += noises
    opt = torch.optim.Adam(params, lr=lr)
    use_lpips = lpips is not None and lpips_weight > 0
    if use_lpips:
        lpips = lpips.to(device).eval().requires_grad_(False)
    size = min(lpips_size, generator.size)

    def down(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="area") if x.shape[-1] != size else x

    target_small = down(target)
    losses: list[float] = []
    bar = tqdm(range(steps), desc="inverting", disable=not progress, leave=False)
    for step in bar:
        t = step / max(steps, 1)
        for group in opt.param_groups:
            group["lr"] = learning_rate(t, lr)
        ramp = std * noise_strength * max(0.0, 1.0 - t / noise_ramp) ** 2
        w_in = w + torch.randn(w.shape, generator=gen).to(device) * ramp
        img = generator.synthesis(w_in, noise=noises)
        loss = l2_weight * F.mse_loss(img, target)
        if use_lpips:
            loss = loss + lpips_weight * lpips(down(img), target_small).mean()
        if noises is not None and noise_weight > 0:
            loss = loss + noise_weight * noise_regularize(noises)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)  # only the latents (and noise maps): no gradients for the generator
        opt.step()
        if noises is not None:
            noise_normalize_(noises)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    with torch.no_grad():
        w_out = w.detach()
        final_noises = [n.detach() for n in noises] if noises is not None else None
        image = generator.synthesis(w_out, noise=final_noises)
    return Inversion(w_out, final_noises, image, losses)
