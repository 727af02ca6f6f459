"""Training the toyfaces oracle: on renders (stage one of the build), then fine-tuned on generated images labelled
by the region rule (the calibrate stage, ``src.toyworld.judge.calibration_set``). Evaluation only: nothing here feeds a
mapper's loss.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src.toyworld.attributes import LABEL_ATTRIBUTES, uniform_rates
from src.toyworld.judge.oracle import EYEBROWS_FOLLOW_HAIR, SIDES, Oracle, side_targets
from src.toyworld.judge.rule import PAIRED
from src.toyworld.pool import RenderPool, heldout_scenes
from src.toyworld.render import render_batch


def corrupt(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Invalid faces from valid ones: smooth noise, tile shuffles, two-face blends, upside-down faces."""
    n, c, h, w = images.shape
    kind = torch.randint(4, (n,), generator=generator)
    blobs = torch.randn(n, c, 4, 4, generator=generator)
    noise = F.interpolate(blobs, size=(h, w), mode="bilinear").clamp(-1, 1)
    tiles = images.unfold(2, h // 4, h // 4).unfold(3, w // 4, w // 4).reshape(n, c, 16, h // 4, w // 4)
    tiles = tiles[:, :, torch.randperm(16, generator=generator)].reshape(n, c, 4, 4, h // 4, w // 4)
    shuffled = tiles.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)
    blend = 0.5 * images + 0.5 * images.roll(1, 0).roll(h // 6, 3)
    flipped = images.flip(2)
    options = torch.stack([noise, shuffled, blend, flipped])  # (4, N, C, H, W)
    return options[kind, torch.arange(n)]


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild degradations a generator's output may show (blur, noise), so the oracle reads reconstructions."""
    n = images.shape[0]
    soft = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="bilinear")  # half-resolution detail
    images = torch.where(torch.rand(n, 1, 1, 1, generator=generator) < 0.2, soft, images)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, 1)
    mix = torch.rand(n, 1, 1, 1, generator=generator) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.4)
    images = images + mix * (blurred - images)
    sigma = 0.03 * torch.rand(n, 1, 1, 1, generator=generator)
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(-1, 1)


@torch.no_grad()
def evaluate_oracle(model: Oracle, n: int = 1000, seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """Held-out accuracy per attribute (uniform attributes, reserved seeds) and valid-head accuracy."""
    attrs, seeds = heldout_scenes(n, uniform_rates(), EYEBROWS_FOLLOW_HAIR, seed)
    images = render_batch(attrs, seeds).to(device)
    labels = torch.from_numpy(np.stack([a.encode() for a in attrs])).to(device)
    model.eval()
    pred = model.predict(images)
    metrics = {
        f"acc/{a}": (pred[a] == labels[:, i]).float().mean().item() for i, a in enumerate(LABEL_ATTRIBUTES)
    }
    metrics["acc/mean"] = float(np.mean([metrics[f"acc/{a}"] for a in LABEL_ATTRIBUTES]))
    metrics["acc/all_correct"] = (
        torch.stack([pred[a] == labels[:, i] for i, a in enumerate(LABEL_ATTRIBUTES)])
        .all(0)
        .float()
        .mean()
        .item()
    )
    g = torch.Generator().manual_seed(seed)
    bad = corrupt(images.cpu(), g).to(device)
    metrics["valid/real"] = (model.valid_prob(images) > 0.5).float().mean().item()
    metrics["valid/corrupt_rejected"] = (model.valid_prob(bad) <= 0.5).float().mean().item()
    return metrics


def _step(
    model: Oracle,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
    is_valid: torch.Tensor,
    device_type: str,
    bf16: bool,
    y_side: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    edits: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step: cross-entropy per attribute head on the first len(y) images (and per side head,
    on ``y_side`` (N, len(PAIRED), 2), default: every side shows the label), valid-face BCE on all."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        out = {k: v.float() for k, v in model(x, reference).items()}
    n = y.shape[0]
    loss = sum(F.cross_entropy(out[a][:n], y[:, i]) for i, a in enumerate(LABEL_ATTRIBUTES))
    if model.sided:
        y_side = side_targets(y) if y_side is None else y_side
        loss = loss + sum(
            F.cross_entropy(out[f"{a}_{s}"][:n], y_side[:, i, j])
            for i, a in enumerate(PAIRED)
            for j, s in enumerate(SIDES)
        )
    if edits is not None:
        loss = loss + _edit_loss(out, y, y_side, edits[:n])
    loss = loss + F.binary_cross_entropy_with_logits(out["valid"], is_valid)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss


def _edit_loss(
    out: dict[str, torch.Tensor], y: torch.Tensor, y_side: torch.Tensor | None, edits: torch.Tensor
) -> torch.Tensor:
    """The edit question the judge asks, as the rule answers it: on images meant to edit an attribute, BCE of the
    target's logit minus the source value's (``edits`` (N, 3): attribute index or -1, target, source value index)
    against 'the rule reads the target', on the attribute's head and on each side's head of a pair."""
    loss = out["valid"].new_zeros(())
    for j, a in enumerate(LABEL_ATTRIBUTES):
        rows = ((edits[:, 0] == j) & (edits[:, 1] != edits[:, 2])).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        k, s = edits[rows, 1:2], edits[rows, 2:3]
        heads = [(a, y[rows, j])]
        if a in PAIRED and y_side is not None and f"{a}_left" in out:
            heads += [(f"{a}_{side}", y_side[rows, PAIRED.index(a), m]) for m, side in enumerate(SIDES)]
        for name, label in heads:
            lo = out[name][rows]
            margin = (lo.gather(1, k) - lo.gather(1, s)).squeeze(1)
            loss = loss + F.binary_cross_entropy_with_logits(margin, (label == k[:, 0]).float())
    return loss


def train_oracle(
    num_steps: int = 1500,
    batch: int = 128,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    width: int = 16,
    lr: float = 3e-3,
    pool_size: int = 8192,
    refresh_per_step: int = 16,
    eval_size: int = 1000,
    bf16: bool = True,
) -> tuple[Oracle, dict[str, float]]:
    """Train an oracle on a refreshed pool of uniformly-sampled renders; returns (model in eval mode, held-out
    metrics). A quarter of each batch is corrupted into invalid faces for the valid head; bf16 autocast
    on CPU roughly doubles speed."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    pool = RenderPool(pool_size, uniform_rates(), EYEBROWS_FOLLOW_HAIR, seed=seed)
    model = Oracle(width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(1, num_steps), pct_start=0.15)
    n_bad = batch // 4
    model.train()
    for step in range(num_steps):
        pool.refresh(refresh_per_step)
        x, y = pool.sample(batch, g)
        x = augment(x, g)
        x = torch.cat([x, corrupt(x[:n_bad], g)]).to(device)
        y = y.to(device)
        is_valid = torch.cat([torch.ones(batch), torch.zeros(n_bad)]).to(device)
        loss = _step(model, opt, sched, x, y, is_valid, torch.device(device).type, bf16)
        if progress and (step % 100 == 0 or step == num_steps - 1):
            print(f"oracle step {step}/{num_steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
    model.eval()
    metrics = evaluate_oracle(model, eval_size, seed=seed, device=device)
    metrics["train_seconds"] = time.perf_counter() - t0
    metrics["steps"] = float(num_steps)
    if progress:
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return model, metrics


def stage_one(c: object, width: int, path: Path, progress: bool = True, reuse: bool = True) -> Oracle:
    """The build's stage-one oracle of ``width`` (``BuildConfig`` ``c``): loaded from ``path`` when it is there
    (and ``reuse``), else trained on renders and saved there with its held-out metrics."""
    if reuse and path.is_file():
        return Oracle.from_state(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    model, metrics = train_oracle(c.oracle_steps, c.oracle_batch, seed=c.seed, width=width, progress=progress,
                                  eval_size=max(c.report_size, 8), pool_size=c.pool_size)  # fmt: skip
    torch.save({"state_dict": model.state_dict(), "metrics": metrics}, path)
    return model


def region_stats(image: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean RGB (float, 0-255) of a uint8 HxWx3 image inside each non-empty mask: a CLIP-free cross-check."""
    img = np.asarray(image, dtype=np.float64)
    return {name: img[m].mean(0) for name, m in masks.items() if m.any()}


def finetune_oracle(
    model: Oracle,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_steps: int = 1200,
    batch: int = 128,
    seed: int = 0,
    lr: float = 1e-3,
    pool_size: int = 4096,
    progress: bool = True,
    side_labels: torch.Tensor | None = None,
    references: torch.Tensor | None = None,
    edits: torch.Tensor | None = None,
    augment_generated: bool = True,
) -> Oracle:
    """Fine-tune on generated images with region-rule labels (uint8 ``images`` (N, 3, H, W), ``labels`` (N, A),
    per side of the paired parts ``side_labels`` (N, len(PAIRED), 2), default: every side shows the label), half of
    each batch, beside clean renders (the other half, a quarter of them corrupted for the valid head). Generated
    images count as valid faces. A ``relative`` oracle reads each generated image against its ``references``
    (uint8, like ``images``: the reconstruction of the face it shows), renders against themselves. With
    ``augment_generated`` false only the renders are degraded (``augment``); the generated images are read as
    labelled, from their own pixels (they are mirrored, with their sides)."""
    if model.relative and references is None:
        raise ValueError("a relative oracle is fine-tuned on images with their references")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    pool = RenderPool(pool_size, uniform_rates(), EYEBROWS_FOLLOW_HAIR, seed=seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(1, num_steps), pct_start=0.1)
    half, n_bad = batch // 2, batch // 8
    side_labels = side_targets(labels) if side_labels is None else side_labels
    model.train()
    for step in range(num_steps):
        pool.refresh(8)
        xr, yr = pool.sample(half, g)
        i = torch.randint(images.shape[0], (half,), generator=g)
        xg, yg = images[i].float() / 127.5 - 1.0, labels[i]
        x = augment(torch.cat([xr, xg]), g) if augment_generated else torch.cat([augment(xr, g), xg])
        y_side = torch.cat([side_targets(yr), side_labels[i]])
        flip = torch.rand(x.shape[0], generator=g) < 0.5  # the rule is left-right symmetric: sides swap
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        y_side = torch.where(flip[:, None, None], y_side.flip(2), y_side)
        bad = corrupt(xr[:n_bad], g)
        ref = None
        if model.relative:
            ref = references[i].float() / 127.5 - 1.0
            ref = torch.cat([x[:half], torch.where(flip[half:, None, None, None], ref.flip(3), ref), bad])
        x = torch.cat([x, bad])
        y = torch.cat([yr, yg])
        is_valid = torch.cat([torch.ones(2 * half), torch.zeros(n_bad)])
        e = None if edits is None else torch.cat([torch.full((half, 3), -1), edits[i]])
        loss = _step(model, opt, sched, x, y, is_valid, "cpu", True, y_side, ref, e)
        if progress and (step % 100 == 0 or step == num_steps - 1):
            print(
                f"oracle calibration step {step}/{num_steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)"
            )
    return model.eval()
