"""Probe: can the judge follow a rule whose colour vote uses CIEDE2000 instead of CIE76?

The shipped judge follows its rule on the lips (dense reader, docs/judge.md), including the CIE76 vote's call of dark
navy lips as black; a CIEDE2000 vote rejects them, but the pooled oracle calibrated on CIEDE2000 labels agreed less
with that rule (black 0.919, blue 0.897). This fits the build's dense lip reader to the per-pixel maps of the CIEDE2000
vote, on a work dir whose calibration sets were relabelled with it (``build/toyfaces_p3``), attaches it to that dir's
calibrated oracle, and prints held-out agreement with the CIEDE2000 rule (and the true maps' own, as a check).

Usage: python experiments/probes/dense_distance.py <work dir> [STEPS=4000]. Evaluation only: nothing here trains a
mapper.
"""

import os
import sys
import time
from pathlib import Path

import torch
from colour_distance import de2000_distance  # the sibling probe module (this folder is on sys.path)

from src.toyworld import assets
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.judge.calibration_set import CalibrationSet, heldout_metrics, references
from src.toyworld.judge.dense import DenseReader, read_maps
from src.toyworld.judge.dense_calibration import dense_targets, train_head
from src.toyworld.judge.oracle import Oracle

ATTR = "lip_color"


def main(work: Path, steps: int) -> None:
    sets = torch.load(work / "calibration.pt", map_location="cpu", weights_only=True)
    fit, held = CalibrationSet(**sets["fit"]), CalibrationSet(**sets["heldout"])
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    gen = assets.load_generator()
    saved = torch.load(work / "oracle_calibrated.pt", map_location="cpu", weights_only=True)["state_dict"]
    oracle = Oracle.from_state({k: v for k, v in saved.items() if not k.startswith("dense.")})
    maps, refs = {}, {}
    for name, cs, split in (("fit", fit, "train"), ("heldout", held, "test")):
        attrs = [Attributes.decode(v.numpy()) for v in lat[f"{split}_labels"]]
        seeds = lat[f"{split}_seeds"].tolist()
        rows = torch.tensor([i for i, t in enumerate(cs.targets) if t is None or t[0] == ATTR])
        faces = cs.faces[rows].tolist()
        t0 = time.time()
        maps[name] = (rows, dense_targets(cs.float_images()[rows], [attrs[f] for f in faces],
                                          [seeds[f] for f in faces], ATTR, de2000_distance))  # fmt: skip
        refs[name] = references(gen, lat[split].float(), cs.faces[rows])
        print(
            f"[dense_distance] {name}: {len(rows)} lip images, CIEDE2000 maps in {time.time() - t0:.0f}s",
            flush=True,
        )
    # check: the true CIEDE2000 maps read back the stored (relabelled) verdicts
    rows, (region, nearest, first) = maps["heldout"]
    src = oracle.predict(refs["heldout"].float() / 127.5 - 1.0)[ATTR]
    for value in ("black", "blue", "green"):
        t, col = SCHEMA[ATTR].index(value), LABEL_ATTRIBUTES.index(ATTR)
        j = torch.tensor([k for k, i in enumerate(rows.tolist()) if held.targets[i] == (ATTR, value)])
        read = read_maps(region[j], nearest[j].long(), first[j], t, src[j], paired=False)
        rule = held.labels[rows[j], col] == t
        print(
            f"[dense_distance] true CIEDE2000 maps vs stored labels, {value}: {(read == rule).float().mean():.3f}"
        )
    reader = DenseReader([ATTR])
    rows, fit_maps = maps["fit"]
    train_head(reader.heads[ATTR], fit.images[rows], refs["fit"], fit_maps, steps, seed=34, log=print)
    ref_held = references(gen, lat["test"].float(), held.faces).float() / 127.5 - 1.0
    pooled = heldout_metrics(oracle, held, ref_held)["agreement"]["target"]
    oracle.dense = reader.eval()
    dense = heldout_metrics(oracle, held, ref_held)["agreement"]["target"]
    for k in pooled:
        print(
            f"[dense_distance] {k:22s} vs the CIEDE2000 rule: heads {pooled[k]:.3f}, with the dense reader {dense[k]:.3f}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(os.environ.get("STEPS", sys.argv[2] if len(sys.argv) > 2 else 4000)))
