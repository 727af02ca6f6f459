"""Evaluate a trained mapper on the domain's test latents: metrics JSON + a source | edited grid.

Generic metrics use the training CLIP (diagnostic only: a loss can game it). A domain with ground truth
(toyfaces) adds its evaluator (`domain.evaluator`): edit accuracy, preservation, leakage, realism.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from src.data.prompts import short_name
from src.evaluation.grids import labelled_grid
from src.module import CFCLIPModule

log = logging.getLogger("cfclip")


@torch.no_grad()
def edit_test_set(
    module: CFCLIPModule, latents: torch.Tensor, batch_size: int = 64, text: str | None = None
) -> tuple[torch.Tensor, ...]:
    """Source and edited images (toward ``text``, default the run's prompt) of every test latent (N, 3, H, W)."""
    module.eval()
    xs, xhs = [], []
    n_latent = module.generator.n_latent
    for w in latents.split(batch_size):
        w = w.to(module.device, torch.float32)
        if w.ndim == 2:
            w = w[:, None].expand(-1, n_latent, -1)
        x, x_hat = module.render_pair(w) if text is None else module.render_pair(w, text)
        xs.append(x.cpu())
        xhs.append(x_hat.cpu())
    return torch.cat(xs), torch.cat(xhs)


@torch.no_grad()
def clip_metrics(
    module: CFCLIPModule, x: torch.Tensor, x_hat: torch.Tensor, batch_size: int = 64, text: str | None = None
) -> dict[str, float]:
    """CLIP score (cos to the target text) and directional similarity, with the training CLIP."""
    enc = lambda t: torch.cat([module.clip.encode_image(b.to(module.device)) for b in t.split(batch_size)])  # noqa: E731
    f, fh = enc(x), enc(x_hat)
    feats = module.text_features if text is None else module.texts.lookup(module.clip, text)[0]
    t_dir = F.normalize(feats.target_templates.mean(0) - feats.source_templates.mean(0), dim=-1)
    return {
        "clip_score": (fh @ feats.target).mean().item(),
        "clip_score_source": (f @ feats.target).mean().item(),
        "clip_directional": (F.normalize(fh - f, dim=-1) @ t_dir).mean().item(),
    }


def evaluation_prompts(module: CFCLIPModule, extra: Sequence[str] | None) -> list[tuple[str, str, bool]]:
    """(name, text, seen in training) of the run's prompts, then of ``extra`` texts not among them."""
    out = [(p.name, p.target, True) for p in module.prompts]
    source = module.prompt.source
    for text in extra or []:
        text = str(text).strip()
        if module.texts.index(text) is None and text not in [t for _, t, _ in out]:
            out.append((short_name(text, source), module.check_text(text), False))
    return out


def evaluate(
    module: CFCLIPModule,
    cfg: Any,
    latents: torch.Tensor,
    out_dir: str | None,
    grid_images: int = 8,
    batch_size: int = 64,
    prompts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All metrics of ``module`` on ``latents``; writes ``eval.json`` and ``eval_grid.png`` into ``out_dir``.

    A one-prompt run without ``prompts``: its prompt's metrics. Otherwise every prompt of the run and every
    text of ``prompts`` (a multi-prompt mapper edits any text), each into ``out_dir/<name>/`` with its distance
    from the trained texts (``TextBank.novelty``); the summary holds them under ``prompts`` and their means over
    the seen (trained) and unseen texts."""
    named = evaluation_prompts(module, prompts)
    if len(named) == 1:
        return evaluate_prompt(module, cfg, latents, out_dir, grid_images, batch_size, cfg.prompt.name, None)
    results = {}
    for name, text, seen in named:
        sub = os.path.join(out_dir, name) if out_dir else None
        results[name] = evaluate_prompt(module, cfg, latents, sub, grid_images, batch_size, name, text)
        results[name]["seen"] = seen
        results[name].update(module.texts.novelty(module.clip, text))  # how far the TEM extrapolates
        log.info("%s %r: %s", "seen" if seen else "unseen", text, headline(results[name]))
    metrics: dict[str, Any] = {"prompt": cfg.prompt.name, "n": latents.shape[0], "prompts": results}
    for group, want in (("seen", True), ("unseen", False)):
        rows = [r for r in results.values() if r["seen"] is want]
        keys = sorted(
            {k for r in rows for k, v in r.items() if isinstance(v, int | float) and k != "n"} - {"seen"}
        )
        means = {k: float(np.mean([r[k] for r in rows if isinstance(r.get(k), int | float)])) for k in keys}
        if rows:
            metrics[group] = {**means, "prompts": len(rows)}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "eval.json"), "w") as fh:
            json.dump(metrics, fh, indent=2)
    return metrics


def headline(m: dict[str, Any]) -> str:
    keys = (
        "faithful_rate",
        "collateral_psnr",
        "edit_accuracy",
        "clip_fooled_rate",
        "ideal_beats_edit",
        "clip_score",
    )
    return ", ".join(f"{k} {m[k]:.3f}" for k in keys if isinstance(m.get(k), int | float))


def evaluate_prompt(
    module: CFCLIPModule,
    cfg: Any,
    latents: torch.Tensor,
    out_dir: str | None,
    grid_images: int,
    batch_size: int,
    name: str,
    text: str | None,
) -> dict[str, Any]:
    """The metrics of one text (None: the run's own prompt) into ``out_dir`` (eval.json, eval_grid.png)."""
    x, x_hat = edit_test_set(module, latents, batch_size, text)
    target = module.prompt.target if text is None else text
    metrics: dict[str, Any] = {"prompt": name, "target_text": target, "n": x.shape[0]}
    metrics.update(clip_metrics(module, x, x_hat, batch_size, text))
    metrics["pixel_l1_change"] = (x_hat - x).abs().mean().item()
    evaluator_cfg = cfg.domain.get("evaluator") if hasattr(cfg.domain, "get") else None
    evaluator = instantiate(evaluator_cfg) if evaluator_cfg else None
    if evaluator is not None:
        # the text too: a prompt with no ground truth configured (prompt=custom) is judged by the values it names
        metrics.update(evaluator(x, x_hat, name, target))
        if hasattr(evaluator, "guide_metrics"):  # is the guide fooled (src.evaluation.guide)?
            metrics.update(evaluator.guide_metrics(module, latents, x, x_hat, text))
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
        title = f"{name}: {target}"
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
