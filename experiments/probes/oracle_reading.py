"""Probe: the calibrated oracle's reading of an edit's target against the region rule, on the build's held-out
calibration set, read three ways:
- absolute (what the judge does): the target is the oracle's top value;
- whole: the attribute's own head, without the side heads of a pair;
- relative to the face: the target beats the value the oracle reads on the face's unedited reconstruction (per
  side for pairs, both sides needed), as the rule compares the edit with the source and the ideal only.

Usage: python experiments/probes/oracle_reading.py [build dir, default build/toyfaces]
Prints the agreement per target value and source kind for each reading. Evaluation only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from src.evaluation.ideal import PAIRED
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA
from src.toyworld.build import BuildConfig, Builder
from src.toyworld.calibration_set import CalibrationSet
from src.toyworld.oracle import Oracle
from src.toyworld.training import decode


def main(work: Path) -> None:
    torch.set_num_threads(1)
    held = CalibrationSet(**torch.load(work / "calibration.pt", weights_only=True)["heldout"])
    oracle = Oracle.from_state(torch.load(work / "oracle_calibrated.pt", weights_only=True)["state_dict"])
    gen, _ = Builder(BuildConfig(), work, work, progress=False).load_autoencoder()
    w = torch.load(work / "latents.pt", weights_only=True)["test"].float()
    faces = held.faces.unique()
    recon = dict(zip(faces.tolist(), decode(gen, w[faces]).split(1)))
    lo_edit = oracle.logits(held.float_images())
    lo_src = oracle.logits(torch.cat([recon[i] for i in held.faces.tolist()]))
    pred = oracle.read(lo_edit)
    rows = {}
    for i, t in enumerate(held.targets):
        if t is None:
            continue
        attribute, value = t
        k = SCHEMA[attribute].index(value)
        keys = (
            [f"{attribute}_left", f"{attribute}_right"]
            if attribute in PAIRED and oracle.sided
            else [attribute]
        )
        src = [int(lo_src[key][i].argmax()) for key in keys]
        relative = all(
            (s == k and int(lo_edit[key][i].argmax()) == k)
            or (s != k and lo_edit[key][i, k] > lo_edit[key][i, s])
            for key, s in zip(keys, src)
        )
        rule = int(held.labels[i, LABEL_ATTRIBUTES.index(attribute)]) == k
        absolute = int(pred[attribute][i]) == k
        whole = int(lo_edit[attribute][i].argmax()) == k  # the pair's head, without the sides
        for group in (f"{attribute}:{value}", f"{attribute}:{value} / {held.kinds[i]}"):
            r = rows.setdefault(group, [0, 0, 0, 0])
            r[0] += 1
            r[1] += absolute == rule
            r[2] += relative == rule
            r[3] += whole == rule
    print(f"{'target / kind':56s} {'n':>5s} {'absolute':>9s} {'relative':>9s} {'whole head':>10s}")
    for group, (n, a, r, h) in sorted(rows.items()):
        print(f"{group:56s} {n:5d} {a / n:9.3f} {r / n:9.3f} {h / n:10.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/toyfaces"))
