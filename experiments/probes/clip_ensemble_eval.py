"""Probe: a toyfaces run's test edits as each toy CLIP reads them (docs/guide.md, the CLIP ensemble): the judge's
faithful rate and collateral once, then ``clip_fooled_rate`` by the shipped toy CLIP and by the second CLIP of
experiments/probes/clip_ensemble_train.py, whichever CLIPs guided the run; and, on the first ``--faces``, the run's
CLIP-NCE under each CLIP (its views, each CLIP's own text features) of the trained edit, of a fair ideal edit
(src.evaluation.guide.fair_ideal: real ears, nothing else changed) and of no edit. Evaluation only, one thread.

Usage: python experiments/probes/clip_ensemble_eval.py <run>/checkpoints/last.ckpt [--second PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json

import torch
from clip_ensemble_train import second_clip  # sibling probe (on sys.path as a script)
from hydra.utils import instantiate

KEYS = (
    "faithful_rate",
    "collateral_psnr",
    "psnr_to_ideal",
    "region_fidelity_left",
    "region_fidelity_right",
    "nearest_target_rate",
    "edit_accuracy",
)


@torch.no_grad()
def clip_nce_per_face(module, clip, w: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """The run's CLIP-NCE term of each face's edit w -> w_hat (B,) under ``clip``, views seeded per face."""
    from src.losses.base import StepContext
    from src.losses.clip import add_clip_features
    from src.text_bank import TextBank

    text = TextBank(clip, module.prompts).features(0)
    term, out = module.loss.terms["clip_nce"], []
    for i in range(w.shape[0]):
        ctx = StepContext(w=w[i : i + 1], w_hat=w_hat[i : i + 1], text=text)
        ctx.x, ctx.x_hat = module.generator.synthesis(ctx.w), module.generator.synthesis(ctx.w_hat)
        with torch.random.fork_rng():
            torch.manual_seed(i)
            ctx = add_clip_features(ctx, clip, module.augment, term.requires, module.augment_source)
        out.append(term(ctx))
    return torch.stack(out)


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt")
    p.add_argument("--second", default="outputs/clip_ensemble/clip_resnet.pt")
    p.add_argument("--json", default=None)
    p.add_argument("--faces", type=int, default=16)
    a = p.parse_args()
    torch.set_num_threads(1)
    from src.eval import load_run
    from src.evaluation.generic import edit_test_set
    from src.evaluation.guide import fair_ideal, fooling_metrics
    from src.toyworld import assets
    from src.toyworld.attributes import SCHEMA

    module, cfg, dm = load_run(a.ckpt)
    module.eval()
    dm.setup("test")
    latents = dm.splits["test"]
    x, x_hat = edit_test_set(module, latents, 64, None)
    evaluator = instantiate(cfg.domain.evaluator)
    metrics = evaluator(x, x_hat, cfg.prompt.name)
    out = {k: metrics.get(k) for k in KEYS if k in metrics}
    attribute, value = evaluator.last["target"]
    label = SCHEMA[attribute].index(value)
    n = min(a.faces, latents.shape[0])
    w = latents[:n].float()
    with torch.enable_grad():
        w_ideal = fair_ideal(module.generator, w, evaluator.last["ideal"][:n], evaluator.last["region"][:n])
    for name, clip in (("shipped", assets.load_clip()), ("second", second_clip(a.second))):
        reads = fooling_metrics(clip, x, x_hat, evaluator.last["rule"], label, attribute)
        out.update({f"{k}[{name}]": v for k, v in reads.items()})
        if "clip_nce" in module.loss.terms and n:
            nce = {
                e: clip_nce_per_face(module, clip, w, v)
                for e, v in (("edit", module.edit(w)), ("fair_ideal", w_ideal), ("no_edit", w))
            }
            out.update({f"clip_nce_{e}[{name}]": v.mean().item() for e, v in nce.items()})
            out[f"ideal_beats_edit[{name}]"] = (nce["fair_ideal"] < nce["edit"]).float().mean().item()
    out.update(
        n=int(x.shape[0]), ckpt=a.ckpt, guide=len(module.extra_clips) + 1, clip_weights=module.clip_weights
    )
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
