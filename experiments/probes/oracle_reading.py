"""Probe: the calibrated oracle's reading of an edit's target against the region rule, on the build's held-out
calibration set, read three ways:
- edit question (what the judge does): the target is read, or beats the value read on the face's reconstruction on
  every side of a pair (``Oracle.reads_target``), the edit read beside that reconstruction;
- absolute: the target is the oracle's top value;
- whole: the attribute's own head, without the side heads of a pair.

Usage: python experiments/probes/oracle_reading.py [build dir, default build/toyfaces] [oracle file in it]
Prints the agreement per target value and source kind for each reading. Evaluation only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA
from src.toyworld.build import BuildConfig, Builder
from src.toyworld.calibration_set import CalibrationSet, read_edits, references
from src.toyworld.oracle import Oracle


def main(work: Path, name: str) -> None:
    torch.set_num_threads(1)
    held = CalibrationSet(**torch.load(work / "calibration.pt", weights_only=True)["heldout"])
    oracle = Oracle.from_state(torch.load(work / name, weights_only=True)["state_dict"])
    gen, _ = Builder(BuildConfig(), work, work, progress=False).load_autoencoder()
    w = torch.load(work / "latents.pt", weights_only=True)["test"].float()
    x, ref = held.float_images(), references(gen, w, held.faces).float() / 127.5 - 1.0
    question = read_edits(oracle, x, ref, held.targets)
    lo = oracle.logits(x, ref)
    top = oracle.read(lo)
    rows = {}
    for i, t in enumerate(held.targets):
        if t is None:
            continue
        attribute, value = t
        k = SCHEMA[attribute].index(value)
        rule = int(held.labels[i, LABEL_ATTRIBUTES.index(attribute)]) == k
        reads = (
            int(question[attribute][i]) == k,
            int(top[attribute][i]) == k,
            int(lo[attribute][i].argmax()) == k,
        )
        for group in (f"{attribute}:{value}", f"{attribute}:{value} / {held.kinds[i]}"):
            r = rows.setdefault(group, [0, 0, 0, 0])
            r[0] += 1
            for j, read in enumerate(reads):
                r[j + 1] += read == rule
    print(f"{'target / kind':56s} {'n':>5s} {'edit question':>13s} {'absolute':>9s} {'whole head':>10s}")
    for group, (n, q, a, h) in sorted(rows.items()):
        print(f"{group:56s} {n:5d} {q / n:13.3f} {a / n:9.3f} {h / n:10.3f}")


if __name__ == "__main__":
    args = sys.argv[1:] + [None, None]
    main(Path(args[0] or "build/toyfaces"), args[1] or "oracle_calibrated.pt")
