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

from src.eval import load_run
from src.evaluation.guide import fair_ideal
from src.toyworld import assets
from src.toyworld.attributes import SCHEMA, Attributes
from src.toyworld.judge.rule import changed_region
from src.toyworld.judge.shortcuts import clip_reads, rule_reads
from src.toyworld.render import render_batch
from src.toyworld.training import decode, invert


def reads(clip, x, attrs, seeds, target) -> dict[str, float]:
    attribute, value = target
    rule = torch.tensor([getattr(a, attribute) == value for a in rule_reads(x, attrs, seeds, target)])
    read = clip_reads(clip, x, attribute) == SCHEMA[attribute].index(value)
    return {k: round(v.float().mean().item(), 3) for k, v in (("rule", rule), ("clip", read), ("fooled", read & ~rule))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--faces", type=int, default=32)
    p.add_argument("--steps", type=int, default=100, help="fair ideal optimisation steps")
    p.add_argument("--grid", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    module, cfg, _ = load_run(args.ckpt)
    module.eval()
    gen, inv = module.generator, assets.load_inverter()
    target = tuple(cfg.domain.edits[cfg.prompt.name])
    test = assets.load_latents("test")
    k = args.faces
    w = test["latents"][:k]
    attrs = [Attributes.decode(v.numpy()) for v in test["labels"][:k]]
    seeds = test["seeds"][:k].tolist()
    attribute, value = target
    with torch.no_grad():
        source = render_batch(attrs, seeds)
        ideal = render_batch([a.replace(**{attribute: value}) for a in attrs], seeds)
        w_edit = module.edit(w)
    w_fair = fair_ideal(gen, w, ideal, changed_region(ideal, source), steps=args.steps)
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
