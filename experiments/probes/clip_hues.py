"""Probe: does a toy CLIP pay a part painted in a near-miss colour as much as the counterfactual value itself
(magenta irises as much as red eyes)?

For held-out faces with natural values, paints a colour part (brows, lips, irises, skin) in (a) each near-miss
colour word of ``src.toyworld.recolour`` and (b) random held-out hues (never a training colour), keeping only colours
whose nearest world value (CIELAB, the judge's colour vote) is not the counterfactual value, and prints the share of
(face, colour) pairs on which the CLIP's score for the value (cosine to its prompt-ensembled class embedding, the
build report's zero-shot method) is at least that of the same face rendered with the value: a guide that pays a near
miss as much as the real edit lets a mapper stop there. Evaluation only, one thread (docs/guide.md).

Usage: python experiments/probes/clip_hues.py [--faces 48] [ASSET_DIR ...] [--file clip.pt|clip_resnet.pt]
"""

from __future__ import annotations

import argparse
import colorsys
import json

import numpy as np
import torch

from src.toyworld import assets
from src.toyworld.attributes import SCHEMA
from src.toyworld.judge.shortcuts import class_embeddings
from src.toyworld.pool import TEST_SEED_OFFSET, sample_scenes
from src.toyworld.recolour import (
    COLOUR_WORDS,
    PALETTES,
    cielab,
    distractors,
    nearest_colour_value,
    nearest_value,
    paint,
)
from src.toyworld.render import render_batch


def heldout_hues(attribute: str, n: int, seed: int) -> list[tuple[int, int, int]]:
    """``n`` random saturated colours at least 25 CIELAB units from every training colour and palette colour."""
    rng = np.random.default_rng([seed, 77])
    known = [cielab(c) for c in (*COLOUR_WORDS.values(), *PALETTES[attribute].values())]
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        h, s, v = rng.random(), 0.5 + 0.5 * rng.random(), 0.4 + 0.6 * rng.random()
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))
        if min(float((cielab(rgb) - k).norm()) for k in known) >= 25:
            out.append(rgb)
    return out


@torch.no_grad()
def hues(clip: torch.nn.Module, faces: int = 48, seed: int = 9) -> dict[str, dict[str, float]]:
    """Per counterfactual colour value: the share of (face, colour) pairs whose near miss scores at least the real
    edit, over the vocabulary's near misses and over held-out hues (only colours the judge's vote gives another
    value)."""
    out = {}
    for attribute in PALETTES:
        spec = SCHEMA[attribute]
        rng = np.random.default_rng([seed, len(out)])
        attrs, seeds = sample_scenes(faces, rng, 0.0, seed_offset=TEST_SEED_OFFSET)
        x, masks = render_batch(attrs, seeds, return_masks=True)
        region = torch.stack([masks[r] for r in spec.regions]).any(0)  # (N, H, W)
        for value in spec.counterfactual:
            text = class_embeddings(clip, attribute)[spec.index(value)]  # (D,)
            score = lambda images, t=text: clip.encode_image(images) @ t  # noqa: E731
            real = score(render_batch([a.replace(**{attribute: value}) for a in attrs], seeds))  # (N,)
            sets = {
                "vocabulary": [
                    COLOUR_WORDS[w] for w in distractors(attribute) if nearest_value(attribute, w) != value
                ],
                "heldout": [
                    c for c in heldout_hues(attribute, 8, seed) if nearest_colour_value(attribute, c) != value
                ],
            }
            row = {}
            for name, colours in sets.items():
                reads = []
                for rgb in colours:
                    painted = torch.stack([paint(x[i], region[i], rgb) for i in range(faces)])
                    reads.append((score(painted) >= real).float())
                row[name] = round(torch.cat(reads).mean().item(), 3) if reads else float("nan")
            out[f"{attribute}:{value}"] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("asset_dirs", nargs="*", default=[None])
    p.add_argument("--faces", type=int, default=48)
    p.add_argument("--file", default="clip.pt")
    a = p.parse_args()
    torch.set_num_threads(1)
    for source in a.asset_dirs:
        result = hues(assets.load_clip(source, a.file), a.faces)
        print(source or "shipped", a.file, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
