"""Loss probe: does a loss + augmentation config rank the ideal edit above the shortcuts a mapper may take?

``python -m src.probe prompt=green_lipstick aug.transform.distortion=0.25`` renders toyfaces faces,
the ideal counterfactual of the prompt (the same face with only the target attribute changed), a half-way edit,
whole-image tints toward the colour the ideal edit paints and the colour on the wrong part (green eyes for green
lipstick: the colour-part binding a weak CLIP lacks), then scores each with the configured CLIP loss
terms exactly as a training step would (same augmentation, same cached text features). No training, ~1 min.
A loss that scores a tint below the ideal will train a tint: the probe tells before a sweep does. Each candidate
is also judged with the toyfaces judge's pixel rules (region fidelity per side, collateral PSNR; docs/judge.md), so
``best_is_faithful`` says whether the loss's favourite is an edit the judge would pass.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.builders import build_augment, build_guide
from src.evaluation.toyfaces import ToyfacesEvaluator
from src.losses.base import StepContext
from src.models.clip_ensemble import as_ensemble
from src.module import add_clip_features
from src.text_bank import encode_prompt
from src.toyworld.attributes import SCHEMA, counterfactual, sample_attributes
from src.toyworld.judge.rule import FaithfulThresholds, ideal_edit_scores, nanmean
from src.toyworld.render import render_batch
from src.utils.errors import run_task
from src.utils.loggers import quiet_library_logs

log = logging.getLogger("cfclip")


def edit_target(cfg: DictConfig) -> tuple[str, str]:
    """(attribute, value) the oracle checks for the configured prompt (the evaluator's own lookup and error)."""
    attribute, value = ToyfacesEvaluator(cfg.domain.get("edits") or {}).target(cfg.prompt.name)
    return str(attribute), str(value)


def candidates(
    attribute: str, value: str, n: int, seed: int, tints: list[float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Source renders (n, 3, H, W) and the candidate edits: ideal, half-way, tints of the ideal's colour, and
    ``"<attribute>=<value>"``: the target value on every other attribute that has it (the wrong part)."""
    rng = np.random.default_rng(seed)
    attrs = [sample_attributes(rng) for _ in range(n)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]
    x = render_batch(attrs, seeds)
    ideal = render_batch([counterfactual(a, attribute, value) for a in attrs], seeds)
    out = {"no edit": x.clone(), "ideal": ideal, "half-way ideal": 0.5 * (x + ideal)}
    changed = (ideal - x).abs().amax(1, keepdim=True) > 0.05  # (n, 1, H, W) pixels the ideal edit repaints
    if changed.any():
        colour = (ideal * changed).sum((0, 2, 3)) / changed.sum()  # (3,) mean colour painted by the ideal
        for a in tints:
            out[f"tint {a:g}"] = (1 - a) * x + a * colour.view(1, 3, 1, 1)
    for other, spec in SCHEMA.items():
        if other != attribute and value in spec.values:
            out[f"{other}={value}"] = render_batch([a.replace(**{other: value}) for a in attrs], seeds)
    return x, out


@torch.no_grad()
def probe(cfg: DictConfig) -> dict[str, Any]:
    """Score every candidate edit with the configured loss; returns the JSON the command prints."""
    attribute, value = edit_target(cfg)
    guide = build_guide(cfg)
    # an ensemble's terms: each CLIP's with its own text, weighted as in training
    ensemble = as_ensemble(guide)
    clip, extras = ensemble.members[0], list(ensemble.members)[1:]
    prompt = instantiate(cfg.prompt)
    loss = instantiate(cfg.loss)
    augment = build_augment(cfg, guide)
    text = encode_prompt(clip, prompt)
    extra_texts = [encode_prompt(c, prompt) for c in extras]
    p = cfg.probe
    x, cands = candidates(attribute, value, int(p.n), int(p.seed), list(p.tints))
    w = x.new_zeros(x.shape[0], 1, 1)  # image candidates have no latents: latent terms read 0
    results: dict[str, dict[str, float]] = {}
    judged: dict[str, dict[str, float | None]] = {}
    thresholds = instantiate(cfg.domain.evaluator).thresholds  # the evaluator's own (no oracle is loaded)
    for name, x_hat in cands.items():
        judged[name] = judge_candidate(x_hat, x, cands["ideal"], attribute, thresholds)
        torch.manual_seed(int(p.aug_seed))  # the same views for every candidate
        ctx = StepContext(w=w, w_hat=w, text=text, x=x, x_hat=x_hat)
        if extras:
            ctx.clip_weights = ensemble.weights
            ctx.guides = [StepContext(w=w, w_hat=w, text=t) for t in extra_texts]
        ctx = add_clip_features(ctx, clip, augment, loss.requires, cfg.model.augment_source, extras)
        total, parts = loss(ctx)
        results[name] = {"total": float(total), **{k: float(v) for k, v in parts.items()}}
        log.info("%-16s %s", name, " ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
    best = min(results, key=lambda k: results[k]["total"])
    shortcuts = {k: v["total"] for k, v in results.items() if k not in ("ideal", "half-way ideal")}
    return {
        "prompt": prompt.name,
        "target": f"{attribute}:{value}",
        "n": int(p.n),
        "aug": OmegaConf.to_container(cfg.aug, resolve=True),
        "losses": results,
        "judge": judged,
        "best": best,
        "ideal_beats_shortcuts": all(results["ideal"]["total"] < v for v in shortcuts.values()),
        # the loss's favourite passes the judge's pixel rule (region fidelity on every side + collateral)
        "best_is_faithful": (judged[best]["rule_faithful_rate"] or 0.0) >= 0.5,
    }


def judge_candidate(
    x_hat: torch.Tensor, x: torch.Tensor, ideal: torch.Tensor, attribute: str, thresholds: FaithfulThresholds
) -> dict[str, float | None]:
    """The toyfaces judge's pixel metrics of a candidate (the same as src.eval's, the source render standing in
    for the reconstruction): worst-side region fidelity, collateral PSNR, and the share passing both rules."""
    s = ideal_edit_scores(x_hat, x, ideal, x, attribute, thresholds)
    return {
        "region_fidelity_min": nanmean(s["region_fidelity_min"]),
        "collateral_psnr": nanmean(s["collateral_psnr"].clamp_max(99.0)),
        "rule_faithful_rate": (s["region_ok"] & s["collateral_ok"]).float().mean().item(),
    }


def run_probe(cfg: DictConfig) -> dict[str, Any]:
    out = probe(cfg)
    path = Path(cfg.paths.output_dir) / "probe.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


@hydra.main(version_base="1.3", config_path="../../conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    quiet_library_logs()
    run_task(run_probe, cfg, output_dir=cfg.paths.output_dir)


if __name__ == "__main__":
    main()
