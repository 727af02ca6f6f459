"""Probe: the judge's nearest-target vote with plain CIELAB distance (CIE76, shipped) against CIEDE2000 (which
weighs hue and chroma more than lightness) on a toyfaces run's 64 test edits.

Usage: python experiments/probes/nearest_metric.py <run>/checkpoints/last.ckpt [...]
Prints per run: the faithful rate, each vote's pass rate, and the faces on which the two votes differ. With
PROBE_OUT=<dir>, saves each run's edits and verdicts as <dir>/<prompt>_<seed>.pt for looking at them.
Evaluation only: nothing here trains anything.
"""

import json
import os
import sys

import torch
from colour_distance import (
    de2000_distance,  # sibling probes (this folder is on sys.path when run as a script)
)
from kway_faithful import judged_run

from src.evaluation.toyfaces import ideal_edits
from src.toyworld.attributes import SCHEMA
from src.toyworld.judge.composed import value_renders
from src.toyworld.judge.rule import PAIRED, changed_region, nearest_value, sides


def main() -> None:
    torch.set_num_threads(1)
    for ckpt in sys.argv[1:]:
        cfg, x, x_hat, ev, m = judged_run(ckpt)
        attribute, value = m["target"].split(":")
        attrs, seeds = ev.scenes(x.shape[0])
        ideal = ev.last["ideal"]
        _, _, source = ideal_edits(attrs, seeds, attribute, value)
        cands = value_renders(attrs, seeds, attribute)
        t = SCHEMA[attribute].index(value)
        sm = sides(changed_region(ideal, source), attribute in PAIRED)
        with torch.no_grad():
            v76 = nearest_value(x_hat.float(), cands, t, sm).all(1)  # the shipped vote
            v00 = nearest_value(x_hat.float(), cands, t, sm, de2000_distance).all(1)
        faithful = ev.last["faithful"]  # the shipped verdict: includes the CIE76 vote
        if os.environ.get("PROBE_OUT"):
            torch.save(
                {"x": x, "x_hat": x_hat, "ideal": ideal, "v76": v76, "v00": v00, "faithful": faithful},
                os.path.join(os.environ["PROBE_OUT"], f"{cfg.prompt.name}_{cfg.seed}.pt"),
            )
        print(
            json.dumps(
                {
                    "run": ckpt,
                    "target": m["target"],
                    "faithful": m["faithful_rate"],
                    "vote76": v76.float().mean().item(),
                    "vote2000": v00.float().mean().item(),
                    "faithful_76_not_2000": int((faithful & ~v00).sum()),
                    "2000_not_76": int((v00 & ~v76).sum()),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
