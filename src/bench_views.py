"""Views at CLIP size against the official order: ``python -m src.bench_views preset=ffhq1024 [seeds=4]``.

Prints ONE JSON object. For each seed, the CLIP-NCE loss and its gradient w.r.t. the edited image and the edited
latents, with the K views warped at the generator's size and then resized by CLIP's preprocessing (the official
order, ``aug.resize_to=null``) against the views made at CLIP's input size (``aug.resize_to=clip``, the default),
drawn from the same seed (kornia draws perspective corners relative to the image size: the same views, scaled).
As a yardstick, the official order's own spread: the same comparison between two seeds (two view draws).
Options: ``preset``, ``batch``, ``views``, ``seed`` (the latents), ``seeds`` (view draws), ``threads``, and
Hydra overrides (``domain.generator.size=128`` on ``preset=tiny``: a 128 px generator, a 32 px CLIP).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from src.augment import MultiView
from src.bench_options import compose_config, parse_args
from src.builders import build
from src.losses import CLIPNCELoss
from src.losses.base import StepContext
from src.module import add_clip_features

NEEDS = frozenset({"images", "view_features"})


def nce_and_grad(
    module: Any, augment: MultiView, x: Tensor, x_hat: Tensor, seed: int
) -> tuple[Tensor, Tensor]:
    """The CLIP-NCE of edits ``x_hat`` (B, 3, H, W) from sources ``x`` under ``augment``'s views drawn from
    ``seed``: (loss, d loss / d x_hat), the loss as the module computes it (add_clip_features + the term)."""
    term = next(t for t in module.loss.terms.values() if isinstance(t, CLIPNCELoss))
    x_hat = x_hat.detach().requires_grad_(True)
    empty = x.new_zeros(0)
    ctx = StepContext(w=empty, w_hat=empty, text=module.text_features, x=x, x_hat=x_hat)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ctx = add_clip_features(ctx, module.clip, augment, NEEDS)
    loss = term(ctx)
    (grad,) = torch.autograd.grad(loss, x_hat)
    return loss.detach(), grad


def official_order(augment: MultiView) -> MultiView:
    """The same transform and number of views, warped at the input's size (``resize_to=None``)."""
    return MultiView(augment.transform, augment.num_views, resize_to=None)


def compare(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> dict[str, float]:
    """(loss, grad) pairs -> relative loss difference, gradient cosine and relative gradient difference."""
    (la, ga), (lb, gb) = a, b
    return {
        "loss_rel_diff": float((la - lb).abs() / la.abs()),
        "grad_cosine": float(F.cosine_similarity(ga.flatten(), gb.flatten(), dim=0)),
        "grad_rel_diff": float((ga - gb).norm() / ga.norm()),
        "grad_norm_ratio": float(gb.norm() / ga.norm()),
    }


def measure(opts: dict[str, Any], overrides: list[str], seeds: int) -> dict[str, Any]:
    """Build the preset's module, render one batch, and compare the two view orders seed by seed."""
    cfg, world = compose_config(opts, overrides)
    torch.manual_seed(opts["seed"])
    module, _ = build(cfg)
    g, clip, at_clip = module.generator, module.clip, module.augment
    official = official_order(at_clip)
    gen = torch.Generator().manual_seed(opts["seed"])
    with torch.no_grad():
        mean = g.mapping(torch.randn(1024, g.style_dim, generator=gen)).mean(0, keepdim=True)
        w = mean + 0.7 * (g.mapping(torch.randn(opts["batch"], g.style_dim, generator=gen)) - mean)
        w = w[:, None].expand(-1, g.n_latent, -1).contiguous()  # (B, L, D)
        x = g.synthesis(w)
        w_hat = module.edit(w)
    w_hat.requires_grad_(True)
    x_hat = g.synthesis(w_hat)  # (B, 3, H, W), its graph kept for the latent gradients

    def latent(res: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        (gw,) = torch.autograd.grad(x_hat, w_hat, res[1], retain_graph=True)
        return res[0], gw

    rows = []
    for s in range(seeds):
        ours, theirs = nce_and_grad(module, at_clip, x, x_hat, s), nce_and_grad(module, official, x, x_hat, s)
        other = nce_and_grad(module, official, x, x_hat, s + seeds)  # another view draw, official order
        rows.append(
            {
                "seed": s,
                "loss_official": float(theirs[0]),
                "loss_at_clip_size": float(ours[0]),
                "image": compare(theirs, ours),
                "latent": compare(latent(theirs), latent(ours)),
                "official_seed_to_seed": {
                    "image": compare(theirs, other),
                    "latent": compare(latent(theirs), latent(other)),
                },
            }
        )
    return {
        "preset": opts["preset"],
        "world": world,
        "image_size": int(g.size),
        "clip_input": int(clip.image_size),
        "views_size": at_clip.size,
        "batch": opts["batch"],
        "views": at_clip.num_views,
        "seeds": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    seeds = int(next((a.split("=", 1)[1] for a in argv if a.startswith("seeds=")), 4))
    opts, overrides = parse_args([a for a in argv if not a.startswith("seeds=")], __doc__ or "")
    if opts["threads"] is not None:
        torch.set_num_threads(opts["threads"])
    result = measure(opts, overrides, seeds)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
