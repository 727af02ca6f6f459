"""Probe: do the mapper's shortcut edits leave the latents' own subspace, where real edits stay? (docs/guide.md)

The toy generator paints whatever W+ asks for (an autoencoder decoder, no discriminator), so a mapper's W+ move
can draw a streak that no face in the data has. This measures, on a run's test faces, how much of each edit's
W+ move lies in the top-k principal subspace of the training latents (PCA of the flattened W+), for the run's
edit, a fair ideal edit (real target, nothing else changed: src.evaluation.guide.fair_ideal) and the inverter's
move from the source render to the ideal one; then renders each edit projected onto that subspace and asks the world's rule and the guiding CLIP what they show.
If the ideal keeps its target and the shortcut loses its hold on the CLIP at some k, a generator whose edits stay
in the data's subspace (a real StyleGAN property) would remove the shortcut. Evaluation only, one thread.

Usage: python experiments/probes/edit_subspace.py <run>/checkpoints/last.ckpt [--faces 32] [--json OUT]
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

KS = (8, 16, 32, 64, 128, 256, 512)


def principal_basis(w: torch.Tensor) -> torch.Tensor:
    """(L*D, L*D) right singular vectors of the centred, flattened training latents (N, L, D), by variance."""
    x = w.flatten(1)
    return torch.linalg.svd(x - x.mean(0), full_matrices=False).Vh.T


def project(delta: torch.Tensor, basis: torch.Tensor, k: int) -> torch.Tensor:
    """The part of each W+ move (B, L, D) in the span of the first k basis vectors."""
    v = basis[:, :k]
    return ((delta.flatten(1) @ v) @ v.T).view_as(delta)


def reads(module, gen, w, attrs, seeds, target) -> dict[str, float]:
    """Share of faces the rule and the guiding CLIP read as the target, and where the CLIP alone does."""
    attribute, value = target
    x = decode(gen, w)
    rule = torch.tensor([getattr(a, attribute) == value for a in rule_reads(x, attrs, seeds, target)])
    clip = clip_reads(module.clip, x, attribute) == SCHEMA[attribute].index(value)
    return {
        "rule": rule.float().mean().item(),
        "clip": clip.float().mean().item(),
        "fooled": (clip & ~rule).float().mean().item(),
    }


def load_edits(ckpt: str, faces: int, steps: int = 100) -> dict:
    """A run's first ``faces`` test faces: its module and target, the source latents ``w``, their attributes and
    seeds, the source and ideal renders, and the W+ latents of the run's edit and of a fair ideal edit."""
    module, cfg, _ = load_run(ckpt)
    module.eval()
    target = tuple(cfg.domain.edits[cfg.prompt.name])
    test = assets.load_latents("test")
    w = test["latents"][:faces]
    attrs = [Attributes.decode(v.numpy()) for v in test["labels"][:faces]]
    seeds = test["seeds"][:faces].tolist()
    attribute, value = target
    with torch.no_grad():
        source = render_batch(attrs, seeds)
        ideal = render_batch([a.replace(**{attribute: value}) for a in attrs], seeds)
        edit = module.edit(w)
    fair = fair_ideal(module.generator, w, ideal, changed_region(ideal, source), steps=steps)
    return {"module": module, "target": target, "w": w, "attrs": attrs, "seeds": seeds, "source": source,
            "ideal": ideal, "edit": edit, "fair_ideal": fair}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--faces", type=int, default=32)
    p.add_argument("--steps", type=int, default=100, help="fair ideal optimisation steps")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load_edits(args.ckpt, args.faces, args.steps)
    module, target, w, attrs, seeds = (run[k] for k in ("module", "target", "w", "attrs", "seeds"))
    gen, k = module.generator, len(w)
    basis = principal_basis(assets.load_latents("train")["latents"])
    delta_edit, delta_ideal = run["edit"] - w, run["fair_ideal"] - w
    source, ideal = run["source"], run["ideal"]
    with (
        torch.no_grad()
    ):  # the inverter's move from the source render to the ideal one: latents of real faces
        inv = assets.load_inverter()
        delta_inverted = invert(inv, ideal) - invert(inv, source)
    out: dict = {"ckpt": args.ckpt, "target": list(target), "faces": k, "latent_dims": basis.shape[0]}
    edits = (("edit", delta_edit), ("fair_ideal", delta_ideal), ("inverted_ideal", delta_inverted))
    for name, delta in edits:
        norm = delta.flatten(1).norm(dim=1)
        row = {"norm": norm.mean().item(), "full": reads(module, gen, w + delta, attrs, seeds, target)}
        for kk in KS:
            proj = project(delta, basis, kk)
            row[f"energy@{kk}"] = (proj.flatten(1).norm(dim=1) ** 2 / norm.clamp_min(1e-8) ** 2).mean().item()
            with torch.no_grad():
                row[f"reads@{kk}"] = reads(module, gen, w + proj, attrs, seeds, target)
        out[name] = row
        print(name, json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
