"""``python -m src.convert IN.pkl OUT.pt``: NVIDIA StyleGAN2-ADA pickle -> rosinality-format checkpoint.

The pickle is read by ``src.models.legacy``'s restricted unpickler (no code from the file runs); the output
holds ``g_ema`` (our Generator's state dict), ``latent_avg`` and ``generator_config`` (size, style dim,
mapping depth, channels read from the file) and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch

from src.models.legacy import Record, nvidia_to_rosinality, read_network_pickle, record_state_dict
from src.models.weights import WeightsError, save_atomic


def _find_attr(obj: Record, name: str) -> Any:
    """First value of attribute ``name`` in a Record tree (e.g. ``conv_clamp``), or None."""
    if name in obj.state:
        return obj.state[name]
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, Record) and (value := _find_attr(child, name)) is not None:
            return value
    return None


def convert_network_pickle(path: str | Path, key: str = "G_ema") -> dict[str, Any]:
    """Read an NVIDIA ``.pkl`` safely -> ``{"g_ema", "latent_avg", "generator_config", "source"}``.

    ``generator_config`` holds our Generator's arguments; ``source`` notes NVIDIA settings our generator does
    not reproduce (``conv_clamp``: NVIDIA clamps activations to +-256, ours never clamps).
    """
    data = read_network_pickle(path)
    net = data.get(key) if isinstance(data, dict) else data
    if not isinstance(net, Record):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise WeightsError(f"{path}: no NVIDIA network under '{key}' (found {found})")
    architecture = _find_attr(net, "architecture")
    if architecture not in (None, "skip"):
        raise WeightsError(f"{path}: synthesis architecture '{architecture}' is not supported (only 'skip')")
    state, latent_avg, config = nvidia_to_rosinality(record_state_dict(net))
    source: dict[str, Any] = {"format": "nvidia-stylegan2-ada-pkl", "file": Path(path).name, "key": key}
    clamp = _find_attr(net, "conv_clamp")
    if isinstance(clamp, (int, float)):
        source["conv_clamp"] = float(clamp)
    mapping = (net.state.get("_modules") or {}).get("mapping")
    mapping_lr = _find_attr(mapping, "bias_gain") if isinstance(mapping, Record) else None
    if isinstance(mapping_lr, (int, float)) and not math.isclose(float(mapping_lr), 0.01, rel_tol=1e-6):
        raise WeightsError(f"{path}: mapping lr_multiplier {mapping_lr} differs from StyleGAN2's 0.01")
    return {"g_ema": state, "latent_avg": latent_avg, "generator_config": config, "source": source}


def check_loads(ckpt: dict) -> None:
    """Strictly load the converted state dict into our Generator built on the meta device (no memory, no init)."""
    from src.models.stylegan2 import Generator

    with torch.device("meta"):
        g = Generator(**ckpt["generator_config"])
    try:
        g.load_state_dict(ckpt["g_ema"], strict=True, assign=True)
    except RuntimeError as err:
        raise WeightsError(f"converted weights do not fit our Generator: {str(err)[:500]}") from err


def convert(src: str | Path, dst: str | Path, key: str = "G_ema", overwrite: bool = False) -> dict:
    """Convert ``src`` (.pkl) into ``dst`` (.pt); returns the checkpoint dict written."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise WeightsError(f"{dst} exists; pass --overwrite to replace it")
    ckpt = convert_network_pickle(src, key=key)
    check_loads(ckpt)
    save_atomic(ckpt, dst)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.convert",
        description="Convert an NVIDIA StyleGAN2-ADA .pkl into a rosinality-format .pt (no code from the pickle runs).",
    )
    parser.add_argument("input", help="NVIDIA network pickle, e.g. afhqdog.pkl")
    parser.add_argument("output", help="checkpoint to write, e.g. afhqdog.pt")
    parser.add_argument("--key", default="G_ema", help="network in the pickle (default: G_ema)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    args = parser.parse_args(argv)
    try:
        ckpt = convert(args.input, args.output, key=args.key, overwrite=args.overwrite)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg, source = ckpt["generator_config"], ckpt["source"]
    print(f"wrote {args.output}: generator_config={cfg}")
    if "conv_clamp" in source:
        print(
            f"note: the NVIDIA network clamps activations to +-{source['conv_clamp']:g}; ours does not clamp"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
