"""The build's ``dense`` stage: the oracle's dense colour reader (``src.toyworld.judge.dense``) fitted to the region rule's
per-pixel maps on the calibration set, attached to the calibrated oracle and measured on the held-out edits.
Evaluation only: nothing here feeds a mapper's loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from src.toyworld.attributes import SCHEMA, Attributes
from src.toyworld.judge.calibration_set import CalibrationSet, heldout_metrics, references
from src.toyworld.judge.composed import value_renders
from src.toyworld.judge.dense import DenseHead, DenseReader, dense_labels, pairs
from src.toyworld.judge.oracle import Oracle
from src.toyworld.judge.rule import cie76


def dense_targets(
    images: torch.Tensor,
    attrs: Sequence[Attributes],
    seeds: Sequence[int],
    attribute: str,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cie76,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dense_labels`` of images (N, 3, H, W) in [-1, 1] of faces (``attrs``, ``seeds`` per image), face by face
    (its renders made once), the vote under ``distance``; compact dtypes: region and pair maps bool, nearest uint8."""
    n, (h, w) = images.shape[0], images.shape[-2:]
    k = len(SCHEMA[attribute].values)
    region = torch.zeros(n, h, w, dtype=torch.bool)
    nearest = torch.zeros(n, h, w, dtype=torch.uint8)
    first = torch.zeros(n, len(pairs(k)), h, w, dtype=torch.bool)
    faces: dict[tuple, list[int]] = {}
    for i, (a, s) in enumerate(zip(attrs, seeds)):
        faces.setdefault((a, int(s)), []).append(i)
    for (a, s), rows in faces.items():
        cands = value_renders([a], [s], attribute)[0].float()
        r, near, f = dense_labels(images[rows].float(), cands, distance)
        region[rows], nearest[rows], first[rows] = r, near.to(torch.uint8), f
    return region, nearest, first


def train_head(
    head: DenseHead,
    images: torch.Tensor,
    references: torch.Tensor,
    maps: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    steps: int,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> DenseHead:
    """Fit a head on uint8 ``images`` and their ``references`` (N, 3, H, W) to the rule's ``maps``
    (``dense_targets``): the region everywhere, the value maps inside the true region; mirrored at random."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(head.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(1, steps), pct_start=0.1)
    region, nearest, first = maps
    t0 = time.perf_counter()
    head.train()
    for step in range(steps):
        i = torch.randint(len(images), (batch,), generator=g)
        x, r = images[i].float() / 127.5 - 1.0, references[i].float() / 127.5 - 1.0
        m, near, f = region[i].float(), nearest[i].long(), first[i].float()
        if torch.rand((), generator=g) < 0.5:
            x, r, m, near, f = (v.flip(-1) for v in (x, r, m, near, f))
        out = head(x, r)
        inside = F.cross_entropy(out[:, 1 : 1 + head.k], near, reduction="none")
        inside = inside + F.binary_cross_entropy_with_logits(out[:, 1 + head.k :], f, reduction="none").mean(
            1
        )
        loss = F.binary_cross_entropy_with_logits(out[:, 0], m) + (inside * m).sum() / m.sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"[dense] step {step}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
    return head.eval()


def calibrate_dense(builder: object, c: object) -> dict:
    """The build's ``dense`` stage: for each attribute of ``c.calib_dense`` a dense head fitted (``c.calib_dense_steps``)
    to the rule's maps of the calibration set's images of that attribute (its edits and the untargeted images),
    attached to the calibrate stage's oracle, which then reads those targets with it; held-out agreement measured
    with and without it. Rewrites ``oracle_calibrated.pt`` (a re-run replaces the reader) and writes ``dense.pt``."""
    work, log = builder.work, builder.log
    attributes = dense_attributes(c.calib_dense)
    cache, calibrated = work / "calibration.pt", work / "oracle_calibrated.pt"
    if not cache.is_file() or not calibrated.is_file():
        raise FileNotFoundError(f"the dense stage reads the calibrate stage's {cache.name} and {calibrated.name} "
                                f"in {work}: run --stages calibrate first")  # fmt: skip
    sets = torch.load(cache, map_location="cpu", weights_only=True)
    fit, held = CalibrationSet(**sets["fit"]), CalibrationSet(**sets["heldout"])
    saved = torch.load(calibrated, map_location="cpu", weights_only=True)
    oracle = Oracle.from_state({k: v for k, v in saved["state_dict"].items() if not k.startswith("dense.")})
    gen, _ = builder.load_autoencoder()
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    attrs = [Attributes.decode(v.numpy()) for v in lat["train_labels"]]
    seeds = lat["train_seeds"].tolist()
    reader = DenseReader(attributes, c.calib_dense_width)
    for attribute in attributes:
        rows = torch.tensor([i for i, t in enumerate(fit.targets) if t is None or t[0] == attribute])
        faces = fit.faces[rows].tolist()
        t0 = time.perf_counter()
        images = fit.images[rows]
        maps = dense_targets(images.float() / 127.5 - 1.0, [attrs[f] for f in faces], [seeds[f] for f in faces],
                             attribute)  # fmt: skip
        log(f"[dense] {attribute}: {len(rows)} images labelled per pixel ({time.perf_counter() - t0:.0f}s)")
        refs = references(gen, lat["train"].float(), fit.faces[rows])
        train_head(
            reader.heads[attribute], images, refs, maps, c.calib_dense_steps, seed=c.seed + 34, log=log
        )
    ref_held = references(gen, lat["test"].float(), held.faces).float() / 127.5 - 1.0
    pooled = heldout_metrics(oracle, held, ref_held)
    oracle.dense = reader.eval()
    after = heldout_metrics(oracle, held, ref_held)
    log(f"[dense] held-out agreement with the region rule: pooled heads {pooled['agreement']['target']}, "
        f"with the dense reader {after['agreement']['target']}")  # fmt: skip
    metrics = {**saved["metrics"], **after, "agreement_pooled": pooled["agreement"],
               "dense": {"attributes": attributes, "steps": c.calib_dense_steps, "width": c.calib_dense_width}}  # fmt: skip
    torch.save({"state_dict": oracle.state_dict(), "metrics": metrics}, calibrated)
    torch.save({"state_dict": reader.state_dict(), "metrics": after}, work / "dense.pt")
    return metrics


def dense_attributes(text: str) -> list[str]:
    """Attribute names of a comma-separated ``calib_dense`` setting, checked against the schema."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in SCHEMA]
    if unknown:
        raise ValueError(f"calib_dense: unknown attributes {unknown}; known: {sorted(SCHEMA)}")
    return names
