"""Training of the toy CLIP: contrastive loss over renders x generated captions, with hard-negative captions, and a
robust phase on warped, colour-cast views (the method's own views). A plain seeded loop, as the autoencoder's."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.toyworld.attributes import SCHEMA, Attributes, uniform_rates
from src.toyworld.captions import caption, hard_negative_captions
from src.toyworld.pool import RenderPool
from src.toyworld.training import Progress, Resumable, cosine_lr


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, n_pos: int) -> torch.Tensor:
    """Symmetric InfoNCE; texts beyond the first ``n_pos`` are extra (hard) negatives for the images."""
    logits = scale * img @ txt.T  # (B, B + extra)
    labels = torch.arange(n_pos)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :n_pos].T, labels)) / 2


def robust_views(
    x: torch.Tensor, g: torch.Generator, warp: nn.Module | None, colour: float, colour_grid: int = 1
) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1]: the first half warped by ``warp`` (None: none), all colour-cast by
    per-channel gains 1 +- ``colour`` drawn on a ``colour_grid`` x ``colour_grid`` grid and smoothly
    upsampled (1: one cast per image; 4: smooth local tints, e.g. of the skin only)."""
    if warp is not None:
        h = x.shape[0] // 2
        with torch.random.fork_rng():  # kornia draws from the global RNG: seed it from ours
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
            x = torch.cat([warp(x[:h]), x[h:]])
    if colour > 0:
        k = colour_grid
        gain = 1 + colour * (2 * torch.rand(x.shape[0], 3, k, k, generator=g) - 1)
        if k > 1:
            gain = F.interpolate(gain, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = ((x + 1) * gain - 1).clamp(-1, 1)
    return x


def train_clip(
    model: nn.Module,
    tokenizer: Callable,
    preprocess: Callable,
    steps: int,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    hard_negatives: int = 1,
    robust_steps: int = 0,
    robust_perspective: float = 0.5,
    robust_colour: float = 0.08,
    robust_colour_grid: int = 1,
    bf16: bool = True,
    pool_size: int = 8192,
    resume_path: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Contrastive training of an open_clip model on renders x generated captions (counterfactual values
    common: the toy CLIP "knows" them), with colour-swapping hard-negative captions.

    ``robust_steps`` more steps (lr 20% -> 5%) then train on views the captions do not describe: half of each
    batch warped by a random perspective (up to ``robust_perspective``, the method's own views) and every
    image under a random colour cast (per-channel gain 1 +- ``robust_colour`` on a ``robust_colour_grid``
    grid, see ``robust_views``). Real CLIP saw such variation
    on the web; without it the toy CLIP reads a faint whole-face tint as "green lipstick".
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 31])
    rates = uniform_rates()
    rates["style"] = 0.3
    pool = RenderPool(
        pool_size,
        rates,
        eyebrows_follow_hair=0.5,
        seed=seed + 1,
    )
    g = torch.Generator().manual_seed(seed)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in n or "logit_scale" in n else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    total = steps + robust_steps

    def lr_scale(s: int) -> float:
        if s < steps:
            return cosine_lr(s, steps, max(1, steps // 20))
        t = (s - steps) / max(1, robust_steps)
        return 0.05 + 0.15 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_scale)
    ckpt = Resumable(resume_path, {"clip": model, "opt": opt, "sched": sched})
    start = ckpt.restore()
    show = Progress("clip", total, progress)
    warp = None
    if robust_steps and robust_perspective > 0:
        from src.augment import perspective

        warp = perspective(robust_perspective, fill=0.0)
    model.train()

    for step in range(start, total):
        pool.refresh(batch // 4)
        idx = torch.randint(len(pool), (batch,), generator=g)
        x = pool.images[idx].float() / 127.5 - 1.0
        if step >= steps:
            x = robust_views(x, g, warp, robust_colour, robust_colour_grid)
        x = x + 0.02 * torch.randn(x.shape, generator=g)  # mild noise
        attrs: list[Attributes] = [pool.attrs[i] for i in idx.tolist()]
        texts = [caption(a, rng) for a in attrs]
        for a in attrs[: batch * hard_negatives // 2]:
            texts += hard_negative_captions(a, rng, n=1)
        tokens = tokenizer(texts)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            img = F.normalize(model.encode_image(preprocess(x)).float(), dim=-1)
            txt = F.normalize(model.encode_text(tokens).float(), dim=-1)
        loss = contrastive_loss(img, txt, model.logit_scale.exp().clamp(max=100), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ckpt.maybe_save(step + 1)
        show(step, loss=loss.item(), scale=model.logit_scale.exp().item())
    ckpt.maybe_save(total, force=True)
    model.eval()
    return {
        "clip_steps": float(steps),
        "clip_robust_steps": float(robust_steps),
        "clip_attributes": float(len(SCHEMA)),
    }
