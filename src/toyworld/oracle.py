"""The toyfaces oracle: an attribute reader independent of CLIP, used only to evaluate edits.

A small multi-head CNN (one softmax head per attribute over natural + counterfactual values, plus a
"valid face" logit trained on renders vs corrupted images), trained on renders generated on the fly.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.evaluation.ideal import PAIRED
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, uniform_rates
from src.toyworld.pool import RenderPool, heldout_scenes
from src.toyworld.render import render_batch

ORACLE_SIZE = 64  # input resolution; other sizes are resized
# image halves; the region rule's sides of a paired part (src.evaluation.ideal.sides)
SIDES = ("left", "right")
EYEBROWS_FOLLOW_HAIR = 0.5  # decorrelate eyebrows from hair so the oracle looks at the eyebrows


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class Oracle(nn.Module):
    """Multi-head CNN on images in [-1, 1] (N, 3, H, W); heads named by LABEL_ATTRIBUTES, plus 'valid'.

    Parts that come in pairs (``PAIRED``: ears, eyebrows, eyes) are also read per side, from the left and the right
    half of the feature map (``side_heads``); with ``sided`` the reading of such an attribute needs both sides, as
    a person's does: one pointed ear, or a streak beside it, is not elf ears (``both_sides``)."""

    def __init__(self, width: int = 16, sided: bool = True) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),  # 32x32
            _block(w, w, 1),
            _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),  # 16x16
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1),  # 8x8
        )  # fmt: skip
        feat = 8 * w  # average and max pooled
        self.heads = nn.ModuleDict({n: nn.Linear(feat, len(SCHEMA[n].values)) for n in LABEL_ATTRIBUTES})
        self.valid_head = nn.Linear(feat, 1)
        # False: an oracle saved before side heads existed (its paired heads read the pair)
        self.sided = sided
        if sided:
            self.side_heads = nn.ModuleDict(
                {f"{n}_{s}": nn.Linear(feat, len(SCHEMA[n].values)) for n in PAIRED for s in SIDES}
            )

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Oracle:
        """An oracle in eval mode from its state dict (any float dtype); one saved before side heads existed reads
        pairs whole."""
        model = cls(state["body.0.weight"].shape[0], sided=any(k.startswith("side_heads.") for k in state))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return model.eval()

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1] == 3, f"expected (N,3,H,W), got {tuple(images.shape)}"
        if images.shape[-1] != ORACLE_SIZE or images.shape[-2] != ORACLE_SIZE:
            images = F.interpolate(images, size=(ORACLE_SIZE, ORACLE_SIZE), mode="bilinear", antialias=True)
        return self.body(images)  # (N, 4w, 8, 8)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, 8*width), e.g. for KID between edited and real renders."""
        return _pool(self._maps(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute (N, n_values), per side of a paired one ('<attr>_left', '<attr>_right', when
        ``sided``) and 'valid' (N,)."""
        h = self._maps(images)
        f = _pool(h)
        out = {n: head(f) for n, head in self.heads.items()}
        out["valid"] = self.valid_head(f).squeeze(1)
        if self.sided:
            half = h.shape[-1] // 2
            halves = {"left": _pool(h[..., :half]), "right": _pool(h[..., half:])}
            out.update({f"{n}_{s}": self.side_heads[f"{n}_{s}"](halves[s]) for n in PAIRED for s in SIDES})
        return out

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch: int = 512) -> dict[str, torch.Tensor]:
        """``forward`` over many images, in batches."""
        outs = [self(images[i : i + batch]) for i in range(0, len(images), batch)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def read(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Value index per attribute from ``logits``; a paired attribute read from both sides (``both_sides``)
        when the oracle is ``sided``."""
        pred = {n: logits[n].argmax(1) for n in LABEL_ATTRIBUTES}
        if self.sided:
            pred.update({n: both_sides(logits[f"{n}_left"], logits[f"{n}_right"], n) for n in PAIRED})
        return pred

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 512) -> dict[str, torch.Tensor]:
        """Predicted value index per attribute (LongTensor (N,), index into SCHEMA[attr].values)."""
        return self.read(self.logits(images, batch))

    @torch.no_grad()
    def valid_prob(self, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Probability (N,) that each image is a well-formed face."""
        return torch.sigmoid(self.logits(images, batch)["valid"])


def _pool(h: torch.Tensor) -> torch.Tensor:
    """Average and max pooled features (N, 2C) of a feature map (N, C, H, W)."""
    return torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)


def both_sides(left: torch.Tensor, right: torch.Tensor, attribute: str) -> torch.Tensor:
    """The value (N,) a pair of parts reads from its sides' logits (N, K): the value both sides read; when they
    differ, the natural value both find likeliest (a counterfactual value on one side only is not the edit, as in
    the region rule)."""
    agree = left.argmax(1) == right.argmax(1)
    p = torch.minimum(left.softmax(1), right.softmax(1))[:, : len(SCHEMA[attribute].natural)]
    return torch.where(agree, left.argmax(1), p.argmax(1))


def side_targets(labels: torch.Tensor) -> torch.Tensor:
    """Per-side labels (N, len(PAIRED), 2) of images whose every side shows its attribute label (renders)."""
    idx = [LABEL_ATTRIBUTES.index(n) for n in PAIRED]
    return labels[:, idx, None].expand(-1, -1, len(SIDES))


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
) -> torch.Tensor:
    """One optimisation step: cross-entropy per attribute head on the first len(y) images (and per side head,
    on ``y_side`` (N, len(PAIRED), 2), default: every side shows the label), valid-face BCE on all."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        out = {k: v.float() for k, v in model(x).items()}
    n = y.shape[0]
    loss = sum(F.cross_entropy(out[a][:n], y[:, i]) for i, a in enumerate(LABEL_ATTRIBUTES))
    if model.sided:
        y_side = side_targets(y) if y_side is None else y_side
        loss = loss + sum(
            F.cross_entropy(out[f"{a}_{s}"][:n], y_side[:, i, j])
            for i, a in enumerate(PAIRED)
            for j, s in enumerate(SIDES)
        )
    loss = loss + F.binary_cross_entropy_with_logits(out["valid"], is_valid)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
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
) -> Oracle:
    """Fine-tune on generated images with region-rule labels (uint8 ``images`` (N, 3, H, W), ``labels`` (N, A),
    per side of the paired parts ``side_labels`` (N, len(PAIRED), 2), default: every side shows the label), half of
    each batch, beside clean renders (the other half, a quarter of them corrupted for the valid head). Generated
    images count as valid faces."""
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
        x = augment(torch.cat([xr, xg]), g)
        y_side = torch.cat([side_targets(yr), side_labels[i]])
        flip = torch.rand(x.shape[0], generator=g) < 0.5  # the rule is left-right symmetric: sides swap
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        y_side = torch.where(flip[:, None, None], y_side.flip(2), y_side)
        x = torch.cat([x, corrupt(xr[:n_bad], g)])
        y = torch.cat([yr, yg])
        is_valid = torch.cat([torch.ones(2 * half), torch.zeros(n_bad)])
        loss = _step(model, opt, sched, x, y, is_valid, "cpu", True, y_side)
        if progress and (step % 100 == 0 or step == num_steps - 1):
            print(
                f"oracle calibration step {step}/{num_steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)"
            )
    return model.eval()
