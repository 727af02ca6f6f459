"""Probe: a dense lip-colour reader that counts pixels as the region rule does, instead of pooling features.

The calibrated oracle pools an 8x8 feature map, and on the lips it misses the rule on near ties (docs/judge.md). This
probe trains a small full-resolution CNN (the image, its difference from the reconstruction, and CIELAB) to predict,
per pixel, what the rule computes from the face's renders under every lip value: the lip region, the value whose
render is nearest in CIELAB (the vote), and for every pair of values which render is nearer in RGB (region
fidelity). The target is then read from the predicted maps the way the rule reads it from the true ones: fidelity
>= 0.5 over the region and the plurality vote for the target. Fit on the lip images of a build's cached fit set,
read on its held-out lip images, against the stored rule labels. Evaluation only (lip_color only, a probe).

Usage: python experiments/probes/dense_reader.py <work dir with calibration.pt> [STEPS=1500]
(SEED=0; SOURCE=attributes, or SOURCE=oracle: the source value read from the reconstruction by the shipped oracle,
as the judge reads it)
"""

import itertools
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from src.evaluation.ideal import CHANGE_THRESHOLD, cie76, lab
from src.evaluation.toyfaces_composed import value_renders
from src.toyworld import assets
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.calibration_set import CalibrationSet, references
from src.toyworld.oracle import scaled_lab

ATTR = "lip_color"
K = len(SCHEMA[ATTR].values)
PAIRS = list(itertools.combinations(range(K), 2))  # map j: RGB nearer value a than value b, (a, b) = PAIRS[j]


def dense_labels(x: torch.Tensor, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For images x (N, 3, H, W) of one face with its renders cands (K, 3, H, W): region (N, H, W) bool, nearest
    value in CIELAB (N, H, W) long, and per pair RGB-nearer-first (N, len(PAIRS), H, W) bool."""
    region = ((cands.amax(0) - cands.amin(0)).amax(0) > CHANGE_THRESHOLD).expand(x.shape[0], -1, -1)
    nearest = cie76(lab(x)[:, None], lab(cands)[None]).argmin(1)  # (N, H, W)
    d = (x[:, None] - cands[None]).pow(2).sum(2)  # (N, K, H, W)
    pairs = torch.stack([d[:, a] < d[:, b] for a, b in PAIRS], 1)
    return region, nearest, pairs


def read_target(region, nearest, pairs, t: int, s: int) -> bool:
    """The rule's reading of target t over source s from dense maps (H, W) / (P, H, W)."""
    if t == s or not region.any():
        return t == s
    j = PAIRS.index((min(t, s), max(t, s)))
    nearer_t = pairs[j] if t < s else ~pairs[j]
    fidelity = nearer_t[region].float().mean() >= 0.5
    vote = torch.bincount(nearest[region], minlength=K).argmax() == t
    return bool(fidelity and vote)


class Dense(nn.Module):
    def __init__(self, w: int = 32) -> None:
        super().__init__()
        layers, cin = [], 9
        for d in (1, 1, 2, 4, 8, 1):
            layers += [nn.Conv2d(cin, w, 3, padding=d, dilation=d), nn.ReLU(True)]
            cin = w
        self.body = nn.Sequential(*layers, nn.Conv2d(w, 1 + K + len(PAIRS), 1))

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([x, x - ref, scaled_lab(x)], 1))


def labelled(cs: CalibrationSet, attrs, seeds, rows: list[int]):
    x = cs.float_images()[rows]
    faces = cs.faces[rows]
    region = torch.zeros(len(rows), *x.shape[2:], dtype=torch.bool)
    nearest = torch.zeros(len(rows), *x.shape[2:], dtype=torch.uint8)
    pairs = torch.zeros(len(rows), len(PAIRS), *x.shape[2:], dtype=torch.bool)
    for f in faces.unique().tolist():
        i = (faces == f).nonzero().squeeze(1)
        cands = value_renders([attrs[f]], [int(seeds[f])], ATTR)[0].float()
        r, n, p = dense_labels(x[i], cands)
        region[i], nearest[i], pairs[i] = r, n.to(torch.uint8), p
    return x, region, nearest, pairs


def main(work: Path, steps: int, seed: int = 0, source: str = "attributes") -> None:
    torch.manual_seed(seed)
    sets = torch.load(work / "calibration.pt", map_location="cpu", weights_only=True)
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    gen = assets.load_generator()
    data = {}
    for part, split in (("fit", "train"), ("heldout", "test")):
        cs = CalibrationSet(**sets[part])
        attrs = [Attributes.decode(v.numpy()) for v in lat[f"{split}_labels"]]
        seeds = lat[f"{split}_seeds"].tolist()
        rows = [i for i, t in enumerate(cs.targets) if t is None or t[0] == ATTR]
        t0 = time.time()
        x, region, nearest, pairs = labelled(cs, attrs, seeds, rows)
        ref = references(gen, lat[split].float(), cs.faces[rows]).float() / 127.5 - 1.0
        src = torch.tensor([SCHEMA[ATTR].index(getattr(attrs[int(cs.faces[i])], ATTR)) for i in rows])
        if source == "oracle":
            read = assets.load_oracle().eval().predict(ref)[ATTR]
            print(f"[dense] {part}: the oracle reads the source lip colour right on "
                  f"{(read == src).float().mean():.4f} of the reconstructions", flush=True)  # fmt: skip
            src = read
        data[part] = (x, ref, region, nearest, pairs, src, [cs.targets[i] for i in rows], cs.labels[rows])
        print(
            f"[dense] {part}: {len(rows)} lip images labelled densely in {time.time() - t0:.0f}s", flush=True
        )
    # the reading from the true maps must be the rule's (up to the rule's region being the target-source pair's)
    x, ref, region, nearest, pairs, src, targets, labels = data["heldout"]
    col = LABEL_ATTRIBUTES.index(ATTR)

    def agreement(reg, near, pr, name: str) -> None:
        out = {}
        for v in ("black", "blue", "green"):
            t = SCHEMA[ATTR].index(v)
            rows = [j for j, tg in enumerate(targets) if tg == (ATTR, v)]
            ok = [
                read_target(reg[j], near[j], pr[j], t, int(src[j])) == bool(labels[j, col] == t) for j in rows
            ]
            out[v] = sum(ok) / len(ok)
        print(f"[dense] {name}: " + " ".join(f"{k}={v:.3f}" for k, v in out.items()), flush=True)

    agreement(region, nearest.long(), pairs, "true maps vs the rule's labels")
    model = Dense()
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    fx, fref, freg, fnear, fpairs = data["fit"][:5]
    g = torch.Generator().manual_seed(seed + 1)
    t0 = time.time()
    for step in range(steps):
        i = torch.randint(len(fx), (32,), generator=g)
        xb, rb, mb, nb, pb = fx[i], fref[i], freg[i], fnear[i].long(), fpairs[i].float()
        if torch.rand((), generator=g) < 0.5:
            xb, rb, mb, nb, pb = (v.flip(-1) for v in (xb, rb, mb, nb, pb))
        out = model(xb, rb)
        m = mb.float()
        loss = F.binary_cross_entropy_with_logits(out[:, 0], m)
        ce = F.cross_entropy(out[:, 1 : 1 + K], nb, reduction="none")
        bce = F.binary_cross_entropy_with_logits(out[:, 1 + K :], pb, reduction="none").mean(1)
        loss = loss + ((ce + bce) * m).sum() / m.sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"[dense] step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[j : j + 256], ref[j : j + 256]) for j in range(0, len(x), 256)])
    agreement(
        out[:, 0] > 0, out[:, 1 : 1 + K].argmax(1), out[:, 1 + K :] > 0, "dense reader vs the rule's labels"
    )
    print(f"[dense] pixel accuracy in the true region: nearest value "
          f"{(out[:, 1:1 + K].argmax(1) == nearest.long())[region].float().mean():.4f}, region IoU "
          f"{((out[:, 0] > 0) & region).sum() / ((out[:, 0] > 0) | region).sum():.4f}")  # fmt: skip


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        int(os.environ.get("STEPS", sys.argv[2] if len(sys.argv) > 2 else 1500)),
        int(os.environ.get("SEED", 0)),
        os.environ.get("SOURCE", "attributes"),
    )
