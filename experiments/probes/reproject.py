"""Probe: does a trip through the inverter (the e4e analogue, trained on renders only) take a shortcut edit off and
keep a real one? For a run's test faces: the run's edit, a fair ideal edit (real target, nothing else changed) and
the source, each decoded, then re-encoded by the inverter and decoded again; the world's rule and the guiding CLIP
read every image (docs/guide.md). Evaluation only, one thread.

Usage: python experiments/probes/reproject.py <run>/checkpoints/last.ckpt [--faces 32] [--grid PNG]
"""

from __future__ import annotations

import argparse
import json

import torch
from edit_subspace import load_edits  # sibling probe (on sys.path as a script)

from src.toyworld import assets
from src.toyworld.attributes import SCHEMA
from src.toyworld.judge.shortcuts import clip_reads, rule_reads
from src.toyworld.training import decode, invert


def reads(clip, x, attrs, seeds, target) -> dict[str, float]:
    attribute, value = target
    rule = torch.tensor([getattr(a, attribute) == value for a in rule_reads(x, attrs, seeds, target)])
    read = clip_reads(clip, x, attribute) == SCHEMA[attribute].index(value)
    return {
        k: round(v.float().mean().item(), 3)
        for k, v in (("rule", rule), ("clip", read), ("fooled", read & ~rule))
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--faces", type=int, default=32)
    p.add_argument("--steps", type=int, default=100, help="fair ideal optimisation steps")
    p.add_argument("--grid", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load_edits(args.ckpt, args.faces, args.steps)
    module, target, w, attrs, seeds = (run[k] for k in ("module", "target", "w", "attrs", "seeds"))
    gen, inv = module.generator, assets.load_inverter()
    w_edit, w_fair = run["edit"], run["fair_ideal"]
    rows, images = {}, []
    with torch.no_grad():
        for name, lat in (("source", w), ("edit", w_edit), ("fair_ideal", w_fair)):
            x = decode(gen, lat)
            xr = decode(gen, invert(inv, x))
            rows[name] = {"decoded": reads(module.clip, x, attrs, seeds, target),
                          "reprojected": reads(module.clip, xr, attrs, seeds, target),
                          "l1_to_reprojection": round((x - xr).abs().mean().item(), 4)}  # fmt: skip
            print(name, json.dumps(rows[name]), flush=True)
            images += [x[:8], xr[:8]]
    if args.grid:
        import torchvision

        torchvision.utils.save_image(torch.cat(images) / 2 + 0.5, args.grid, nrow=8)


if __name__ == "__main__":
    main()
