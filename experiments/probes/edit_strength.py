"""Probe: how does a run's own loss score an edit of growing strength? (Does it pay for finishing an edit?)

Loads a toyfaces run checkpoint, builds the fair ideal edit of its prompt on test faces (the source latent optimised
toward the ideal render inside the part, its own reconstruction outside: ``src.evaluation.guide.fair_ideal``), and
scores w + a (w_ideal - w) for a = 0 .. 1.5 with the run's loss, term by term, and with the world's rule (region
pass rate). CLIP-NCE compares the direction of the image change with the text's, not its length; if its minimum lies
below a = 1 the guide pays a half-done edit more than the whole one, and the regularisers only push it lower
(docs/guide.md). Evaluation only, one thread.

Usage: python experiments/probes/edit_strength.py CKPT [--faces 16] [--alphas 0,0.25,0.5,0.75,1,1.25,1.5]
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--faces", type=int, default=16)
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1,1.25,1.5")
    a = p.parse_args()
    torch.set_num_threads(1)
    from hydra.utils import instantiate

    from src.eval import load_run
    from src.evaluation.guide import fair_ideal, per_face_loss

    module, run_cfg, dm = load_run(a.ckpt)
    dm.setup("test")
    module.eval()
    evaluator = instantiate(run_cfg.domain.evaluator)
    name = run_cfg.prompt.name
    w = dm.splits["test"][: a.faces].float()
    with torch.no_grad():
        x = module.generator.synthesis(w)
    evaluator(x, x, name)
    ideal, region = evaluator.last["ideal"], evaluator.last["region"]
    with torch.enable_grad():
        w_ideal = fair_ideal(module.generator, w, ideal, region)
    for alpha in (float(s) for s in a.alphas.split(",")):
        w_a = w + alpha * (w_ideal - w)
        total, parts = per_face_loss(module, w, w_a, None)
        with torch.no_grad():
            judged = evaluator(x, module.generator.synthesis(w_a), name)
        row = {"total": round(total.mean().item(), 4)}
        row.update({k: round(v.mean().item(), 4) for k, v in parts.items()})
        row.update(
            {k: round(judged[k], 3) for k in ("region_pass_rate", "nearest_target_rate", "faithful_rate")}
        )
        print(alpha, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
