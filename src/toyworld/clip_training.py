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
from src.toyworld.captions import caption, clutter_captions, contrast_captions, hard_negative_captions
from src.toyworld.pool import RenderPool
from src.toyworld.recolour import misplace_edits, recolour_edits
from src.toyworld.render import render_batch
from src.toyworld.training import Progress, Resumable, cosine_lr

PAIRED = ("ears", "eyebrow_color", "iris_color")  # parts drawn on both sides of the face


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


def clutter(x: torch.Tensor, g: torch.Generator, max_strokes: int = 3) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] with 1..``max_strokes`` soft strokes painted on each: tapered segments
    (short ones are blobs) of random angle, width, opacity and blur. Half are smears: they start at a random
    pixel, in its colour (skin drawn out of the head, hair into the background); the rest lie anywhere, in a
    random colour. Real CLIP saw lines and blotches that are not ears on the web; a toy CLIP that never did
    reads a light wedge drawn out of the head as a pointed ear (docs/guide.md)."""
    b, _, h, w = x.shape
    u = lambda *s: torch.rand(b, max_strokes, *s, generator=g)  # noqa: E731
    on = (torch.arange(max_strokes) < torch.randint(1, max_strokes + 1, (b, 1), generator=g)).float()
    yi, xi = torch.randint(h, (b, max_strokes), generator=g), torch.randint(w, (b, max_strokes), generator=g)
    smear = u(1) < 0.5
    own = x[torch.arange(b)[:, None], :, yi, xi]  # (B, S, 3)
    colour = torch.where(smear, own, 2 * u(3) - 1) + 0.1 * torch.randn(b, max_strokes, 3, generator=g)
    p0 = torch.where(smear, torch.stack([xi, yi], -1) + 0.5, u(2) * torch.tensor([w, h]))  # (B, S, 2)
    angle = u() * 2 * math.pi
    d = (u() * 0.6 * h)[..., None] * torch.stack([angle.cos(), angle.sin()], -1)  # (B, S, 2)
    width, taper = (0.015 + 0.055 * u()) * h, u()
    soft, opacity = 0.3 + 1.2 * u(), (0.25 + 0.75 * u()) * on
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    rel = torch.stack([xx, yy], -1)[None, None] - p0[:, :, None, None]  # (B, S, H, W, 2)
    dd = d[:, :, None, None]
    t = ((rel * dd).sum(-1) / (dd.pow(2).sum(-1) + 1e-6)).clamp(0, 1)  # (B, S, H, W): place along the stroke
    dist = (rel - t[..., None] * dd).norm(dim=-1)
    radius = width[..., None, None] / 2 * (1 - taper[..., None, None] * t)
    alpha = opacity[..., None, None] * torch.sigmoid((radius - dist) / soft[..., None, None])
    for s in range(max_strokes):
        a = alpha[:, s, None]
        x = x * (1 - a) + colour[:, s, :, None, None].clamp(-1, 1) * a
    return x


def occlude_side(x: torch.Tensor, g: torch.Generator, low: float = 0.25, high: float = 0.35) -> torch.Tensor:
    """Images (B, 3, H, W) with the left or right ``low``-``high`` of the width greyed out (fill 0, the views'
    border): a crop that cuts one side off, as real CLIP's random crops do. The caption stays true (the hidden
    ear has the visible one's value), so the CLIP must read either side: without these both toy CLIPs read
    pointed ears from the image's right ear alone (``experiments/probes/clip_sides.py``)."""
    b, _, _, w = x.shape
    cut = ((low + (high - low) * torch.rand(b, generator=g)) * w).round()[:, None]  # (B, 1) columns
    cols = torch.arange(w, dtype=torch.float32)[None]  # (1, W)
    right = torch.rand(b, 1, generator=g) < 0.5
    hide = torch.where(right, cols >= w - cut, cols < cut)  # (B, W)
    return x.masked_fill(hide[:, None, None, :], 0.0)


def half_edits(
    attrs: list[Attributes], seeds: list[int], rng: np.random.Generator
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Faces (N, 3, H, W) with a counterfactual value on ONE side of a paired part (one pointed ear, one purple
    eyebrow, one red eye) and the natural value on the other, with (caption, negative) pairs: the natural
    value against the counterfactual one. The world's rule reads such a face as not edited (both sides must
    change); without these the toy CLIP reads one pointed ear as elf ears."""
    natural, edited, names = [], [], []
    for a in attrs:
        name = PAIRED[rng.integers(len(PAIRED))]
        spec = SCHEMA[name]
        keep = getattr(a, name)
        keep = keep if keep in spec.natural else spec.natural[rng.integers(len(spec.natural))]
        natural.append(a.replace(**{name: keep}))
        edited.append(a.replace(**{name: spec.counterfactual[rng.integers(len(spec.counterfactual))]}))
        names.append(name)
    xn, mn = render_batch(natural, seeds, return_masks=True)
    xe, me = render_batch(edited, seeds, return_masks=True)
    region = torch.stack(
        [torch.stack([mn[r][i] | me[r][i] for r in SCHEMA[n].regions]).any(0) for i, n in enumerate(names)]
    )  # (N, H, W): the part on either render
    xs = torch.arange(region.shape[-1]).float() + 0.5
    cx = (region * xs).sum((1, 2)) / region.sum((1, 2)).clamp(min=1)  # the part's x-centroid
    side = (xs[None] < cx[:, None]) ^ torch.from_numpy(rng.random(len(attrs)) < 0.5)[:, None]  # (N, W)
    near = F.max_pool2d(region[:, None].float(), 3, 1, 1)[:, 0] > 0  # one pixel more: anti-aliased edges
    take = (near & side[:, None, :])[:, None]
    pairs = [contrast_captions(n_, e_, n, rng) for n_, e_, n in zip(natural, edited, names)]
    return torch.where(take, xe, xn), pairs


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
    robust_clutter: float = 0.0,
    robust_half: float = 0.0,
    robust_occlude: float = 0.0,
    robust_recolour: float = 0.0,
    robust_misplace: float = 0.0,
    occlude: float = 0.0,
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
    on the web; without it the toy CLIP reads a faint whole-face tint as "green lipstick". A share
    ``robust_clutter`` of those images gets strokes painted on (``clutter``), captioned by ``clutter_captions``:
    a part's true value against another value as the hard negative; a share ``robust_half`` are ``half_edits``
    (one pointed ear is not elf ears); a share ``robust_occlude`` of the plain images has one side cut off
    (``occlude_side``); a share ``robust_recolour`` has one colour part repainted in a colour the world never
    draws there (``recolour_edits``: magenta brows are not purple), a share ``robust_misplace`` a counterfactual
    colour next to its part (``misplace_edits``: a blue background is not blue skin). ``occlude`` does the same as
    ``robust_occlude`` from the first step on (the robust phase uses ``robust_occlude``): a CLIP that learns with one
    side hidden reads each side, where one trained on whole faces reads one ear.
    """
    edit_kinds = (
        (robust_recolour, recolour_edits),
        (robust_misplace, misplace_edits),
        (robust_half, half_edits),
    )
    if robust_clutter + sum(k for k, _ in edit_kinds) + max(robust_occlude, occlude) > 1:
        raise ValueError(
            "robust_clutter, _half, _recolour, _misplace and _occlude are shares of one batch: at most 1 in all"
        )
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
        attrs: list[Attributes] = [pool.attrs[i] for i in idx.tolist()]
        counts = [int(round(batch * share)) if step >= steps else 0 for share, _ in edit_kinds]
        n_clutter = int(round(batch * robust_clutter)) if step >= steps else 0
        n_occ = int(round(batch * (robust_occlude if step >= steps else occlude)))
        cut = batch - sum(counts)  # [plain | clutter | recoloured | misplaced | half edits]
        plain = cut - n_clutter
        seeds = [pool.seeds[i] for i in idx.tolist()]
        edit_pairs: list[tuple[str, str]] = []
        at, parts = cut, [x[:cut]]
        for n, (_, make) in zip(counts, edit_kinds):
            if n:
                xe, kind_pairs = make(attrs[at : at + n], seeds[at : at + n], rng)
                parts.append(xe)
                edit_pairs += kind_pairs
                at += n
        x = torch.cat(parts)
        if step >= steps:
            x = robust_views(x, g, warp, robust_colour, robust_colour_grid)
        if n_occ:  # the last n_occ plain images lose one side
            x = torch.cat([x[: plain - n_occ], occlude_side(x[plain - n_occ : plain], g), x[plain:]])
        if step >= steps:
            x = torch.cat([x[:plain], clutter(x[plain:cut], g), x[cut:]])
        x = x + 0.02 * torch.randn(x.shape, generator=g)  # mild noise
        texts = [caption(a, rng) for a in attrs[:plain]]
        pairs = [clutter_captions(a, rng)[:2] for a in attrs[plain:cut]] + edit_pairs
        texts += [p for p, _ in pairs]
        for a in attrs[: batch * hard_negatives // 2]:
            texts += hard_negative_captions(a, rng, n=1)
        texts += [n for _, n in pairs]
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
        "clip_robust_clutter": float(robust_clutter),
        "clip_robust_half": float(robust_half),
        "clip_robust_occlude": float(robust_occlude),
        "clip_robust_recolour": float(robust_recolour),
        "clip_robust_misplace": float(robust_misplace),
        "clip_occlude": float(occlude),
        "clip_attributes": float(len(SCHEMA)),
    }
