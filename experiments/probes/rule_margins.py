"""Probe: how decided the region rule's verdicts are on one held-out calibration set, and where an oracle misses.

1. The rule's own noise: every held-out edit re-labelled by the rule (``rule_labels``, with the colour vote) after
   imperceptible Gaussian pixel noise, rounded back to 8 bits; the share of edits whose target verdict is unchanged,
   per counterfactual value. A reader that follows the rule cannot be held to more than this.
2. With ``NAME=<oracle .pt>``: the oracle's agreement with the rule on each value's edits, split by the vote's margin
   (share of the region's pixels nearest the first value minus the second; near tie: < ``MARGIN``).

Usage: python experiments/probes/rule_margins.py <work dir> [NAME=<oracle .pt> ...]
(SIGMAS=1,2,4 in 1/255 steps; MARGIN=0.2). Reads <work>/calibration.pt (the build's calibrate stage). Evaluation only.
"""

import os
import sys
from pathlib import Path

import torch

from src.toyworld import assets
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.judge.calibration import _candidates, rule_labels
from src.toyworld.judge.calibration_set import CalibrationSet, read_edits, references
from src.toyworld.judge.oracle import Oracle
from src.toyworld.judge.rule import changed_region, cie76, lab


def vote_margin(y: torch.Tensor, attrs: Attributes, seed: int, attribute: str, value: str) -> float:
    """First minus second value's share of the target region's pixels (CIELAB nearest render) on image y (3, H, W)."""
    values = SCHEMA[attribute].values
    cands = _candidates(attrs, seed, attribute)  # (K, 3, H, W)
    t, s = values.index(value), values.index(getattr(attrs, attribute))
    m = changed_region(cands[t : t + 1], cands[s : s + 1])[0, 0]
    d = cie76(lab(y[None]), lab(cands))  # (K, H, W)
    share = torch.bincount(d.argmin(0)[m], minlength=len(values)).float() / m.sum().clamp_min(1)
    top = share.sort(descending=True).values
    return (top[0] - top[1]).item()


def target_read(labels: torch.Tensor, targets: list[tuple[str, str]]) -> torch.Tensor:
    """Whether each row of ``labels`` (N, len(LABEL_ATTRIBUTES)) reads its own target value (N,) bool."""
    cols = torch.tensor([LABEL_ATTRIBUTES.index(a) for a, _ in targets])
    values = torch.tensor([SCHEMA[a].index(v) for a, v in targets])
    return labels.gather(1, cols[:, None])[:, 0] == values


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
    ruled = target_read(held.labels[idx], targets)
    keys = sorted(set(targets))
    g = torch.Generator().manual_seed(0)
    for sigma in sigmas:
        noisy = (x + torch.randn(x.shape, generator=g) * 2 * sigma / 255).clamp(-1, 1)
        noisy = torch.round((noisy + 1) * 127.5) / 127.5 - 1  # back to the stored 8 bits
        again = target_read(rule_labels(noisy, a, s, targets)[0], targets)
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
    refs = references(gen, lat["test"].float(), held.faces[idx]).float() / 127.5 - 1.0
    margins = [vote_margin(x[j], a[j], s[j], *targets[j]) for j in range(len(targets))]
    _candidates.cache_clear()  # renders of the faces under every value, cached while the margins are read
    tie = torch.tensor(margins) < margin
    for name, path in oracles.items():
        oracle = Oracle.from_state(
            torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        ).eval()
        pred = read_edits(oracle, x, refs, targets)
        agree = target_read(torch.stack([pred[n] for n in LABEL_ATTRIBUTES], 1), targets) == ruled
        for k in keys:
            sel = torch.tensor([t == k for t in targets])
            parts = {
                p: (int(agree[m].sum()), int(m.sum()))
                for p, m in (("decisive", sel & ~tie), ("near tie", sel & tie))
            }
            print(
                f"{name} {k[0]}:{k[1]}: " + ", ".join(f"{p} {n}/{d}" for p, (n, d) in parts.items()),
                flush=True,
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
