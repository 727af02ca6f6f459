"""Probe: oracles against the region rule with and without the colour vote, on one held-out calibration set.

The build's calibrate stage caches its labelled sets in <work>/calibration.pt; its held-out part holds the
judge's rule labels (region fidelity + nearest-target vote, ``calib_nearest``) and whether region fidelity alone
reads each image's target. This reads every oracle given on those images, as the judge reads them (beside the
reconstruction of each face), and prints per counterfactual value its agreement with both rules, overall and on
mapper edits only, and with the judge's rule per held-out mapper run (a value's agreement rests on 1-2 runs).

Usage: python experiments/probes/calibration_rules.py <work dir> NAME=<oracle .pt> [NAME=<oracle .pt> ...]
(an oracle file: a build's oracle.pt / oracle_calibrated.pt, or an unpacked asset; ``<oracle .pt>+mirror``: its
members read each image mirrored too, as ``calib_mirror``). Evaluation only.
"""

import json
import sys
from pathlib import Path

import torch

from src.toyworld import assets
from src.toyworld.judge.calibration import agreement
from src.toyworld.judge.calibration_set import CalibrationSet, read_edits, references, run_checkpoints
from src.toyworld.judge.oracle import Oracle, OracleEnsemble


def main(work: Path, oracles: dict[str, Path]) -> dict:
    sets = torch.load(work / "calibration.pt", map_location="cpu", weights_only=True)
    held = CalibrationSet(**sets["heldout"])
    gen = assets.load_generator()  # the shipped generator, which the build dir unpacks (--from-assets)
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    refs = references(gen, lat["test"].float(), held.faces).float() / 127.5 - 1.0
    x = held.float_images()
    mapper = torch.tensor([k == "mapper edit" for k in held.kinds])
    rule_reads = {"vote": None, "fidelity": held.fidelity_ok}  # None: the labels' own target reading
    out = {"n": len(held), "n_mapper": int(mapper.sum())}
    # the mapper edits close the set, run after run in run_checkpoints' order, the same faces count per checkpoint
    runs = run_checkpoints(work / "calibration_runs" / "heldout")
    n_mapper, n_ckpts = int(mapper.sum()), sum(len(c) for c in runs)
    per_ckpt = n_mapper // max(1, n_ckpts)
    first = len(held) - n_mapper
    assert bool(mapper[first:].all()) and per_ckpt * n_ckpts == n_mapper
    for name, path in oracles.items():
        file = str(path).removesuffix("+mirror")
        oracle = Oracle.from_state(torch.load(file, map_location="cpu", weights_only=True)["state_dict"])
        if file != str(path):  # NAME=<oracle .pt>+mirror
            dense = oracle.dense  # a dense reader reads mirrored images already
            oracle = OracleEnsemble(list(getattr(oracle, "members", [oracle])), mirror=True)
            oracle.dense = dense
        oracle = oracle.eval()
        pred = read_edits(oracle, x, refs, held.targets)
        for rule, reads in rule_reads.items():
            out[f"{name} vs {rule}"] = agreement(pred, held.labels, held.targets, reads)["target"]
            sub = {a: p[mapper] for a, p in pred.items()}
            targets = [t for t, m in zip(held.targets, mapper) if m]
            on_mapper = None if reads is None else reads[mapper]
            out[f"{name} vs {rule}, mapper edits"] = agreement(sub, held.labels[mapper], targets, on_mapper)[
                "target"
            ]
        start = first
        for ckpts in runs:
            block = slice(start, start + per_ckpt * len(ckpts))
            start = block.stop
            assert len(set(held.targets[block])) == 1, "held-out mapper edits out of run order"
            sub = {a: p[block] for a, p in pred.items()}
            run = ckpts[-1].parent.parent.name
            out[f"{name} vs vote, run {run}"] = agreement(sub, held.labels[block], held.targets[block])[
                "target"
            ]
    return out


if __name__ == "__main__":
    work = Path(sys.argv[1])
    oracles = dict(arg.split("=", 1) for arg in sys.argv[2:])
    result = main(work, {k: Path(v) for k, v in oracles.items()})
    for key, row in result.items():
        if isinstance(row, dict):
            print(f"{key:42s} " + " ".join(f"{k.split(':')[1][:7]}={v:.3f}" for k, v in row.items()))
        else:
            print(key, row)
    print(json.dumps(result))
