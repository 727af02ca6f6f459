"""Evaluate a trained mapper on the domain's test latents: metrics JSON + a source | edited grid.

Generic metrics use the training CLIP (diagnostic only: a loss can game it). A domain with ground truth
(toyfaces) adds its evaluator (`domain.evaluator`): edit accuracy, preservation, leakage, realism.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from src.evaluation.grids import labelled_grid
from src.module import CFCLIPModule


@torch.no_grad()
def edit_test_set(
    module: CFCLIPModule, latents: torch.Tensor, batch_size: int = 64
) -> tuple[torch.Tensor, ...]:
    """Source and edited images of every test latent (N, 3, H, W), computed in batches."""
    module.eval()
    xs, xhs = [], []
    n_latent = module.generator.n_latent
    for w in latents.split(batch_size):
        w = w.to(module.device, torch.float32)
        if w.ndim == 2:
            w = w[:, None].expand(-1, n_latent, -1)
        x, x_hat = module.render_pair(w)
        xs.append(x.cpu())
        xhs.append(x_hat.cpu())
    return torch.cat(xs), torch.cat(xhs)


@torch.no_grad()
def clip_metrics(
    module: CFCLIPModule, x: torch.Tensor, x_hat: torch.Tensor, batch_size: int = 64
) -> dict[str, float]:
    """CLIP score (cos to the target text) and directional similarity, with the training CLIP."""
    enc = lambda t: torch.cat([module.clip.encode_image(b.to(module.device)) for b in t.split(batch_size)])  # noqa: E731
    f, fh = enc(x), enc(x_hat)
    text = module.text_features
    t_dir = F.normalize(text.target_templates.mean(0) - text.source_templates.mean(0), dim=-1)
    return {
        "clip_score": (fh @ text.target).mean().item(),
        "clip_score_source": (f @ text.target).mean().item(),
        "clip_directional": (F.normalize(fh - f, dim=-1) @ t_dir).mean().item(),
    }


def evaluate(
    module: CFCLIPModule,
    cfg: Any,
    latents: torch.Tensor,
    out_dir: str | None,
    grid_images: int = 8,
    batch_size: int = 64,
) -> dict[str, Any]:
    """All metrics of ``module`` on ``latents``; writes ``eval.json`` and ``eval_grid.png`` into ``out_dir``."""
    x, x_hat = edit_test_set(module, latents, batch_size)
    metrics: dict[str, Any] = {
        "prompt": cfg.prompt.name,
        "target_text": module.prompt.target,
        "n": x.shape[0],
    }
    metrics.update(clip_metrics(module, x, x_hat, batch_size))
    metrics["pixel_l1_change"] = (x_hat - x).abs().mean().item()
    evaluator_cfg = cfg.domain.get("evaluator") if hasattr(cfg.domain, "get") else None
    evaluator = instantiate(evaluator_cfg) if evaluator_cfg else None
    if evaluator is not None:
        metrics.update(evaluator(x, x_hat, cfg.prompt.name))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "eval.json"), "w") as fh:
            json.dump(metrics, fh, indent=2)
        k = min(grid_images, x.shape[0])
        path = os.path.join(out_dir, "eval_grid.png")
        last = getattr(evaluator, "last", None) or {}
        rows = {"source": x[:k], "edit": x_hat[:k]}
        if "ideal" in last:  # a domain with ground truth: the ideal edit under each face, verdicts under that
            rows["ideal"] = last["ideal"][:k]
        title = f"{cfg.prompt.name}: {module.prompt.target}"
        if metrics.get("faithful_rate") is not None:
            ceiling = (metrics.get("ceiling") or {}).get("faithful_rate")
            title += f"  |  faithful {metrics['faithful_rate']:.2f}" + (
                f" (ceiling {ceiling:.2f})" if ceiling is not None else ""
            )
            title += " on {} faces; bar: green = faithful".format(metrics["n"])
        faithful = last.get("faithful")
        labelled_grid(rows, title, verdicts=None if faithful is None else faithful[:k]).save(path)
        metrics["grid"] = path
    return metrics
