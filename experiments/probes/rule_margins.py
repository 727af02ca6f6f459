"""Probe: how decided the region rule's verdicts are on one held-out calibration set, and where an oracle misses.

1. The rule's own noise: every held-out edit re-labelled by the rule (``rule_labels``, with the colour vote) after
   imperceptible Gaussian pixel noise, rounded back to 8 bits; the share of edits whose target verdict is unchanged,
   per counterfactual value. A reader that follows the rule cannot be held to more than this.
2. With ``NAME=<oracle .pt>``: the oracle's agreement with the rule on each value's edits, split by the vote's margin
   (share of the region's pixels nearest the first value minus the second; near tie: < ``MARGIN``).

Usage: python experiments/probes/rule_margins.py <work dir> [NAME=<oracle .pt> ...]
(SIGMAS=1,2,4 in 1/255 steps; MARGIN=0.2). Reads <work>/calibration.pt (the build's calibrate stage). Evaluation only.
"""

import collections
import os
import sys
from pathlib import Path

import torch

from src.evaluation.ideal import changed_region, lab
from src.toyworld import assets
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.calibration import _candidates, rule_labels
from src.toyworld.calibration_set import CalibrationSet, read_edits, references
from src.toyworld.oracle import Oracle


def vote_margin(y: torch.Tensor, attrs: Attributes, seed: int, attribute: str, value: str) -> float:
    """First minus second value's share of the target region's pixels (CIELAB nearest render) on image y (3, H, W)."""
    values = SCHEMA[attribute].values
    cands = _candidates(attrs, seed, attribute)  # (K, 3, H, W)
    t, s = values.index(value), values.index(getattr(attrs, attribute))
    m = changed_region(cands[t : t + 1], cands[s : s + 1])[0, 0]
    d = (lab(y[None])[:, None] - lab(cands)[None]).pow(2).sum(2)[0]  # (K, H, W)
    share = torch.bincount(d.argmin(0)[m], minlength=len(values)).float() / m.sum().clamp_min(1)
    top = share.sort(descending=True).values
    return (top[0] - top[1]).item()


def main(work: Path, oracles: dict[str, Path], sigmas: list[float], margin: float) -> None:
    torch.set_num_threads(1)
    held = CalibrationSet(
        **torch.load(work / "calibration.pt", map_location="cpu", weights_only=True)["heldout"]
    )
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    attrs = [Attributes.decode(v.numpy()) for v in lat["test_labels"]]
    seeds = lat["test_seeds"].tolist()
    idx = [i for i, t in enumerate(held.targets) if t is not None]
    a = [attrs[int(held.faces[i])] for i in idx]
    s = [int(seeds[int(held.faces[i])]) for i in idx]
    targets = [held.targets[i] for i in idx]
    x = held.float_images()[idx]
    ruled = torch.stack([held.labels[i, LABEL_ATTRIBUTES.index(t[0])] == SCHEMA[t[0]].index(t[1]) for i, t in
                         zip(idx, targets)])  # fmt: skip
    keys = sorted(set(targets))
    g = torch.Generator().manual_seed(0)
    for sigma in sigmas:
        noisy = (x + torch.randn(x.shape, generator=g) * 2 * sigma / 255).clamp(-1, 1)
        noisy = torch.round((noisy + 1) * 127.5) / 127.5 - 1  # back to the stored 8 bits
        labels = rule_labels(noisy, a, s, targets)[0]
        again = torch.stack([labels[j, LABEL_ATTRIBUTES.index(t[0])] == SCHEMA[t[0]].index(t[1]) for j, t in
                             enumerate(targets)])  # fmt: skip
        same = {
            f"{k[0]}:{k[1]}": (again == ruled)[[t == k for t in targets]].float().mean().item() for k in keys
        }
        print(
            f"rule vs itself, noise {sigma}/255: " + " ".join(f"{k}={v:.3f}" for k, v in same.items()),
            flush=True,
        )
    if not oracles:
        return
    gen = assets.load_generator()
    refs = references(gen, lat["test"].float(), held.faces).float() / 127.5 - 1.0
    margins = []
    for j, (attrs_j, seed_j, (attribute, value)) in enumerate(zip(a, s, targets)):
        _candidates.cache_clear()
        margins.append(vote_margin(x[j], attrs_j, seed_j, attribute, value))
    _candidates.cache_clear()
    tie = torch.tensor(margins) < margin
    for name, path in oracles.items():
        oracle = Oracle.from_state(
            torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        ).eval()
        pred = read_edits(oracle, held.float_images(), refs, held.targets)
        reads = torch.stack([pred[t[0]][i] == SCHEMA[t[0]].index(t[1]) for i, t in zip(idx, targets)])
        agree = reads == ruled
        for k in keys:
            sel = torch.tensor([t == k for t in targets])
            c = collections.Counter()
            for part, m in (("decisive", sel & ~tie), ("near tie", sel & tie)):
                c[part] = (int(agree[m].sum()), int(m.sum()))
            print(
                f"{name} {k[0]}:{k[1]}: " + ", ".join(f"{p} {n}/{d}" for p, (n, d) in c.items()), flush=True
            )


if __name__ == "__main__":
    oracles = dict(arg.split("=", 1) for arg in sys.argv[2:])
    sig = [float(v) for v in os.environ.get("SIGMAS", "1,2,4").split(",") if v]
    main(
        Path(sys.argv[1]),
        {k: Path(v) for k, v in oracles.items()},
        sig,
        float(os.environ.get("MARGIN", "0.2")),
    )
