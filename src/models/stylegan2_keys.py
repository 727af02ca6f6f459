"""NVIDIA StyleGAN2-ADA generator state dicts -> the rosinality layout our ``Generator`` loads, and the reverse
reading: which Generator arguments (size, style dim, mapping depth, channel table) a rosinality state dict fits.

Pure tensor renaming; the safe reading of NVIDIA's ``.pkl`` files is ``src.models.legacy``.
"""

from __future__ import annotations

import math
import re

import torch

from src.models.weights import WeightsError


def _channels_config(channels: dict[int, int]) -> dict[str, int]:
    """channel_multiplier / channel_max / channel_base of our Generator that reproduce NVIDIA's table."""
    cmax = max(channels.values())
    candidates = [16384] + sorted({c * res // 2 for res, c in channels.items() if c < cmax})
    for base in candidates:
        if all(min(cmax, base * 2 // res) == c for res, c in channels.items()):
            return {"channel_multiplier": 2, "channel_max": cmax, "channel_base": base}
    raise WeightsError(
        f"the generator's channel table {channels} has no StyleGAN2 (channel_base, channel_max) form"
    )


def nvidia_to_rosinality(nv: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    """NVIDIA ``G_ema.state_dict()`` names -> ours. Returns (g_ema state dict, latent_avg (D,), generator config).

    Sizes come from the tensors: resolution from the ``synthesis.b{res}`` blocks, style dim and mapping depth
    from the ``mapping.fc{i}`` layers, channels from the conv weights. Conventions (checked in tests against a
    forward written in NVIDIA's formulation): weights and biases carry over unscaled (both sides apply the
    equalised-lr gains at run time; NVIDIA's ToRGB style gain 1/sqrt(C) is our ModulatedConv2d scale; affine
    biases are stored with their init-1 offset on both sides); the upsampling conv weight needs no flip or
    transpose (NVIDIA's up=2 path runs conv_transpose2d on the stored weight, as ours does); NVIDIA's FIR
    filter is stored normalised and gains up**2 = 4 when used, our Blur/Upsample kernels store it x4.
    """
    if any(k.startswith("mapping.embed.") for k in nv):
        raise WeightsError(
            "conditional (class-label) generators are not supported: the pickle has mapping.embed"
        )
    n_mlp = len([k for k in nv if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    blocks = sorted({int(m.group(1)) for k in nv if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    if not n_mlp or not blocks or "synthesis.b4.const" not in nv:
        raise WeightsError("the network is not a StyleGAN2 generator (no mapping.fc* / synthesis.b4.const)")
    size = blocks[-1]
    if blocks != [2**i for i in range(2, int(math.log2(size)) + 1)]:
        raise WeightsError(f"synthesis blocks {blocks} are not 4, 8, ..., {size}")
    style_dim = nv[f"mapping.fc{n_mlp - 1}.weight"].shape[0]
    if nv["mapping.fc0.weight"].shape[1] != style_dim:
        raise WeightsError(f"z_dim {nv['mapping.fc0.weight'].shape[1]} != w_dim {style_dim}: not supported")
    if nv[f"synthesis.b{size}.torgb.weight"].shape[0] != 3:
        raise WeightsError("only RGB generators are supported")

    ros: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        ros[f"style.{i + 1}.weight"] = nv[f"mapping.fc{i}.weight"]
        ros[f"style.{i + 1}.bias"] = nv[f"mapping.fc{i}.bias"]
    ros["input.input"] = nv["synthesis.b4.const"][None]  # (C, 4, 4) -> (1, C, 4, 4)
    layers = [("conv1", "synthesis.b4.conv1")]
    for k, res in enumerate(blocks[1:]):
        layers += [
            (f"convs.{2 * k}", f"synthesis.b{res}.conv0"),
            (f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1"),
        ]
    for idx, (ours, theirs) in enumerate(layers):
        ros[f"{ours}.conv.weight"] = nv[f"{theirs}.weight"][None]  # (Cout, Cin, 3, 3) -> (1, Cout, Cin, 3, 3)
        ros[f"{ours}.conv.modulation.weight"] = nv[f"{theirs}.affine.weight"]
        ros[f"{ours}.conv.modulation.bias"] = nv[f"{theirs}.affine.bias"]  # bias init 1 on both sides
        ros[f"{ours}.activate.bias"] = nv[f"{theirs}.bias"]
        res = blocks[(idx + 1) // 2]
        strength = nv.get(f"{theirs}.noise_strength", torch.zeros([]))
        ros[f"{ours}.noise.weight"] = strength.reshape(1)
        ros[f"noises.noise_{idx}"] = nv.get(f"{theirs}.noise_const", torch.zeros(res, res))[None, None]
    for ours, res in [("to_rgb1", 4)] + [(f"to_rgbs.{k}", r) for k, r in enumerate(blocks[1:])]:
        ros[f"{ours}.conv.weight"] = nv[f"synthesis.b{res}.torgb.weight"][None]  # (1, 3, C, 1, 1)
        ros[f"{ours}.conv.modulation.weight"] = nv[f"synthesis.b{res}.torgb.affine.weight"]
        ros[f"{ours}.conv.modulation.bias"] = nv[f"synthesis.b{res}.torgb.affine.bias"]
        ros[f"{ours}.bias"] = nv[f"synthesis.b{res}.torgb.bias"].view(1, 3, 1, 1)
    for k, res in enumerate(blocks[1:]):
        fir = nv.get(f"synthesis.b{res}.resample_filter")
        if fir is None or fir.shape != (4, 4):
            raise WeightsError(f"synthesis.b{res}.resample_filter must be a 4x4 FIR filter")
        ros[f"convs.{2 * k}.conv.blur.kernel"] = fir * 4  # upsample gain 2**2, stored in our kernel
        ros[f"to_rgbs.{k}.upsample.kernel"] = fir * 4

    latent_avg = nv.get("mapping.w_avg", torch.zeros(style_dim))
    return {k: v.contiguous() for k, v in ros.items()}, latent_avg.clone(), rosinality_config(ros)


def rosinality_config(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The Generator arguments a rosinality ``g_ema`` state dict fits: size, style_dim, n_mlp, channel table."""
    try:
        n_mlp = len([k for k in state if re.fullmatch(r"style\.\d+\.weight", k)])
        n_up = len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
        channels = {4: state["input.input"].shape[1]}
        channels.update({2 ** (k + 3): state[f"convs.{2 * k + 1}.conv.weight"].shape[1] for k in range(n_up)})
        style_dim = state["conv1.conv.modulation.weight"].shape[1]
    except (KeyError, IndexError, AttributeError) as err:
        raise WeightsError(f"not a StyleGAN2 generator state dict (no {err})") from None
    return {"size": 2 ** (n_up + 2), "style_dim": style_dim, "n_mlp": n_mlp, **_channels_config(channels)}


def describe_generator_state(state: dict[str, torch.Tensor]) -> str:
    """'size=512, style_dim=512, n_mlp=8, ...' of a state dict, for mismatch messages."""
    try:
        return ", ".join(f"{k}={v}" for k, v in rosinality_config(state).items())
    except WeightsError:
        return "not a StyleGAN2 generator"
