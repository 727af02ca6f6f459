"""Probe: do a run's edits keep the parts the prompt does not name, by the world's rule? Per other attribute, every
side of that part votes (CIELAB) among the face rendered with the target applied under each of the attribute's
values (``src.toyworld.judge.composed.kept_by_rule``); printed beside the reconstruction's own vote, the oracle's
reading, and the run's faithful rate with and without the rule's "kept" (``src.eval`` prints the totals too).

Usage: python experiments/probes/kept_by_rule.py <run>/checkpoints/last.ckpt [...]
Evaluation only: nothing here trains anything.
"""

from __future__ import annotations

import sys

import torch
from kway_faithful import judged_run  # the sibling probe (this folder is on sys.path when run as a script)

from src.toyworld.judge.composed import kept_by_rule


@torch.no_grad()
def main(ckpts: list[str]) -> None:
    torch.set_num_threads(1)
    for ckpt in ckpts:
        _, x, x_hat, ev, m = judged_run(ckpt)
        attribute, value = m["target"].split(":")
        if m["faithful_rule_kept_rate"] is None:
            print(
                f"{ckpt}: {m['target']} repaints the whole image: every part changes, nothing to keep",
                flush=True,
            )
            continue
        attrs, seeds = ev.scenes(x.shape[0])
        edit, recon = kept_by_rule(x_hat, attrs, seeds, {attribute: value}), kept_by_rule(x, attrs, seeds, {})
        print(
            f"{ckpt}: {m['target']}, {x.shape[0]} faces; faithful {m['faithful_rate']:.3f}, with the rule's kept "
            f"{m['faithful_rule_kept_rate']:.3f}; others kept: rule {m['others_kept_rule_rate']:.3f}, oracle "
            f"{m['others_kept_rate']:.3f}, agreement {m['oracle_rule_agreement_kept']:.3f}",
            flush=True,
        )
        for a, kept in edit.items():
            print(
                f"  {a}: kept by the rule {kept.float().mean():.3f} (reconstruction "
                f"{recon[a].float().mean():.3f}), by the oracle {m['preservation_per_attribute'][a]:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
