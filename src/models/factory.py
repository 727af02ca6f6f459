"""Constructors the configs call: a generator or a CLIP from sizes, a built-in config name or a weight file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from src.models.legacy import convert_network_pickle, describe_generator_state
from src.models.stylegan2 import Generator
from src.models.weights import WeightsError, load_checkpoint
from src.utils.dicts import plain

CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"


def create_generator(
    size: int,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    channel_max: int = 512,
    channel_base: int = 16384,
    checkpoint: str | None = None,
    checkpoint_key: str = "g_ema",
    seed: int = 0,
) -> torch.nn.Module:
    """A StyleGAN2 generator: random weights (seeded) or a rosinality-format checkpoint loaded strictly."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = Generator(
            size, style_dim, n_mlp, channel_multiplier, channel_max=channel_max, channel_base=channel_base
        )
    if checkpoint is not None:
        if str(checkpoint).endswith(".pkl"):  # NVIDIA StyleGAN2-ADA pickle: converted safely on the fly
            ckpt = convert_network_pickle(checkpoint)
        else:
            ckpt = load_checkpoint(checkpoint, what="StyleGAN2 generator")
        state = ckpt.get(checkpoint_key, ckpt) if isinstance(ckpt, dict) else ckpt
        if not isinstance(state, dict):
            raise WeightsError(
                f"StyleGAN2 generator: {checkpoint} holds no state dict under '{checkpoint_key}'"
            )
        try:
            g.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise WeightsError(
                f"StyleGAN2 generator: {checkpoint} does not fit the configured generator (size={size}, "
                f"style_dim={style_dim}, n_mlp={n_mlp}, channel_multiplier={channel_multiplier}); the file holds "
                f"{describe_generator_state(state)}. Set domain.generator to the checkpoint's settings. "
                f"Details: {str(err).splitlines()[0][:300]}"
            ) from err
        if isinstance(ckpt, dict) and isinstance(ckpt.get("latent_avg"), torch.Tensor):
            g.register_buffer("latent_avg", ckpt["latent_avg"].float().reshape(1, -1), persistent=False)
    return g


def clip_model_config(model_config: str | Mapping | None) -> dict | None:
    """A CLIP architecture as data: a mapping (a dict, or a config node as Hydra passes it), or the name of a JSON
    file in ``clip_configs/``."""
    if model_config is None:
        return None
    if isinstance(model_config, Mapping):
        return plain(model_config)
    path = CLIP_CONFIG_DIR / f"{model_config}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CLIP_CONFIG_DIR.glob("*.json"))
        raise ValueError(f"unknown CLIP model config {model_config!r}; built-in configs: {known}")
    return json.loads(path.read_text())


def create_clip(
    model_name: str,
    pretrained: str | None = None,
    model_config: str | Mapping | None = None,
    checkpoint: str | None = None,
    seed: int = 0,
) -> torch.nn.Module:
    """A FrozenCLIP from an open_clip name + pretrained tag/file, or a custom architecture config."""
    from src.models.clip import FrozenCLIP

    cfg = clip_model_config(model_config)
    if cfg is not None and not isinstance(cfg, dict):
        cfg = dict(cfg)
    return FrozenCLIP.create(
        model_name, pretrained=pretrained, model_config=cfg, checkpoint=checkpoint, seed=seed
    )
