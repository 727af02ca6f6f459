"""Probe: which colour the faithful edits of a toyfaces run really have. Region fidelity asks whether each pixel of
the part is nearer the ideal than the source, so a colour between them passes (dark navy lips for "black
lipstick"). Here every side of the part votes among all values of the attribute (the renders of the face under
each value; the region rule's ``side_votes``), and the faithful faces are counted by the value they vote for.

Usage: python experiments/probes/kway_faithful.py [--lab] <run>/checkpoints/last.ckpt [...]
Prints per run: faithful faces, how many of them vote for the target on every side, and the other values voted.
--lab: each pixel votes by its distance in CIELAB (nearer how colours look apart) instead of RGB.
Evaluation only: nothing here trains anything.
"""

from __future__ import annotations

import collections
import sys
from typing import Any

import torch
from hydra.utils import instantiate

from src.eval import load_run
from src.evaluation.generic import edit_test_set
from src.toyworld.attributes import SCHEMA
from src.toyworld.judge.calibration import _candidates
from src.toyworld.judge.rule import lab, side_votes


@torch.no_grad()
def judged_run(ckpt: str, n: int = 64) -> tuple[Any, torch.Tensor, torch.Tensor, Any, dict[str, Any]]:
    """A run's first ``n`` test edits judged as its final evaluation does: (cfg, x, x_hat, evaluator, metrics); the
    evaluator's ``last`` holds the ideal renders and the per-face verdicts."""
    module, cfg, dm = load_run(ckpt)
    module.eval()
    dm.setup("test")
    x, x_hat = edit_test_set(module, dm.splits["test"], n, None)
    evaluator = instantiate(cfg.domain.evaluator)
    return cfg, x, x_hat, evaluator, evaluator(x.float(), x_hat.float(), cfg.prompt.name, cfg.prompt.target)


@torch.no_grad()
def main(ckpts: list[str], lab_space: bool = False) -> None:
    torch.set_num_threads(1)
    space = lab if lab_space else None
    for ckpt in ckpts:
        cfg, x, x_hat, evaluator, m = judged_run(ckpt)
        attribute, value = m["target"].split(":")
        faithful = evaluator.last["faithful"]
        attrs, seeds = evaluator.scenes(x.shape[0])
        votes = collections.Counter()
        for i in torch.nonzero(faithful).flatten().tolist():
            cands = _candidates(attrs[i], seeds[i], attribute)  # (K, 3, H, W): the face under every value
            read = [v for v in side_votes(x_hat[i].float(), cands, attribute, space=space) if v is not None]
            names = sorted({SCHEMA[attribute].values[v] for v in read})
            votes["+".join(names)] += 1
        n = int(faithful.sum())
        print(
            f"{ckpt}: {m['target']} faithful {n}/{x.shape[0]}; all sides vote {value}: {votes.get(value, 0)}; "
            f"votes of the faithful faces: {dict(votes)}",
            flush=True,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main([a for a in args if a != "--lab"], lab_space="--lab" in args)
