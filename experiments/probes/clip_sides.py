"""Probe: does a toy CLIP read a paired part (ears, eyebrows, irises) from both sides of the face, or from one?

For held-out faces with the part's natural value, renders the counterfactual value on the image's left half only,
on the right half only, and on both, and prints the share each CLIP reads as the target (prompt-ensembled
zero-shot, the build report's method). The world's rule needs both sides; a CLIP that reads one side only pays
a mapper for half an edit (docs/guide.md). Evaluation only, one thread.

Usage: python experiments/probes/clip_sides.py [--faces 96] [ASSET_DIR | RESNET_CKPT.pt ...]
  (no argument: the shipped CLIP; an asset dir: its clip.pt; a .pt file: a second CLIP of clip_ensemble_train.py)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from clip_ensemble_train import second_clip  # sibling probe (on sys.path as a script)

from src.toyworld import assets
from src.toyworld.attributes import SCHEMA
from src.toyworld.clip_training import PAIRED
from src.toyworld.judge.shortcuts import clip_reads
from src.toyworld.pool import TEST_SEED_OFFSET, sample_scenes
from src.toyworld.render import render_batch


def load(source: str | None, arch: str = "resnet") -> torch.nn.Module:
    """An asset dir's CLIP (None: the shipped one), or a second CLIP's ``.pt`` file."""
    if source is None or not source.endswith(".pt"):
        return assets.load_clip(source)
    return second_clip(source, arch)


@torch.no_grad()
def sides(clip: torch.nn.Module, faces: int = 96, seed: int = 5) -> dict[str, dict[str, float]]:
    """Per paired counterfactual value: the share of faces read as it with none, left, right or both sides."""
    out = {}
    for attribute in PAIRED:
        spec = SCHEMA[attribute]
        for value in spec.counterfactual:
            rng = np.random.default_rng([seed, len(out)])
            attrs, seeds = sample_scenes(faces, rng, 0.0, seed_offset=TEST_SEED_OFFSET)
            natural = [a.replace(**{attribute: spec.natural[0]}) for a in attrs]
            xn = render_batch(natural, seeds)  # (N, 3, H, W) in [-1, 1]
            xe = render_batch([a.replace(**{attribute: value}) for a in natural], seeds)
            left = torch.zeros(xn.shape[-1], dtype=torch.bool)
            left[: xn.shape[-1] // 2] = True  # the image's left half (the faces are centred)
            k = spec.index(value)
            images = {
                "none": xn,
                "left": torch.where(left, xe, xn),
                "right": torch.where(~left, xe, xn),
                "both": xe,
            }
            out[f"{attribute}:{value}"] = {
                name: round((clip_reads(clip, x, attribute) == k).float().mean().item(), 3)
                for name, x in images.items()
            }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clips", nargs="*", default=[None])
    p.add_argument("--faces", type=int, default=96)
    p.add_argument("--arch", default="resnet")
    a = p.parse_args()
    torch.set_num_threads(1)
    for source in a.clips:
        print(source or "shipped", json.dumps(sides(load(source, a.arch), a.faces)), flush=True)


if __name__ == "__main__":
    main()
