"""Train a CF-CLIP mapper: ``python -m src.train loss=clip_nce aug=perspective prompt=elf_ears``.

Compose config -> build generator, CLIP, mapper, loss, augmentation, data -> Lightning fit -> evaluate.
Sweeps: ``python -m src.train -m loss=clip_nce,directional,global aug=perspective,affine,crop,none``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.builders import build, instantiate_dict, plain_config
from src.evaluation import evaluate
from src.utils.errors import run_task
from src.utils.loggers import quiet_library_logs, scrub_secrets

log = logging.getLogger("cfclip")


def auto_tags(cfg: DictConfig) -> list[str]:
    """loss / aug / tem / prompt / domain tags so W&B filters runs by ablation axis."""
    tags = list(cfg.get("tags") or [])
    try:
        choices = HydraConfig.get().runtime.choices
        tags += [
            f"loss:{choices.get('loss')}",
            f"aug:{choices.get('aug')}",
            f"domain:{choices.get('domain')}",
        ]
    except ValueError:
        pass
    tags += [f"tem:{'on' if cfg.model.tem else 'off'}", f"prompt:{cfg.prompt.name}"]
    return tags


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``last`` -> this run dir's checkpoints/last.ckpt; else the path as given (checked to exist)."""
    if ckpt_path in (None, ""):
        return None
    path = os.path.join(output_dir, "checkpoints", "last.ckpt") if ckpt_path == "last" else str(ckpt_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no checkpoint at {path}. Give the path of a run's "
            "checkpoints/last.ckpt (or another .ckpt) to resume from."
        )
    return path


def final_eval(cfg: DictConfig, module: Any, datamodule: Any, loggers: list) -> dict[str, float]:
    """Run the same evaluation as ``python -m src.eval`` on the test latents and log it as run summary."""
    datamodule.setup("test")
    result = evaluate(module, cfg, datamodule.splits["test"], os.path.join(cfg.paths.output_dir, "eval"))
    flat = {f"eval/{k}": float(v) for k, v in flatten(result).items() if isinstance(v, int | float)}
    for lg in loggers:
        lg.log_metrics(flat)
        if hasattr(lg, "experiment") and hasattr(lg.experiment, "summary"):
            lg.experiment.summary.update(flat)
    log.info("evaluation (%d test latents): %s", result.get("n", 0),
             json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, default=str))
    return flat


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the mapper; returns the final metrics (floats) of the run."""
    start = time.time()
    output_dir = cfg.paths.output_dir
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    module, datamodule = build(cfg)
    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    for lg in loggers:
        lg.log_hyperparams(scrub_secrets(plain_config(cfg)))
        if hasattr(lg, "experiment") and hasattr(lg.experiment, "tags"):
            try:
                lg.experiment.tags = tuple(auto_tags(cfg))
            except Exception:  # offline runs may refuse tag edits; tags are also in the config
                pass
    n_train = sum(p.numel() for p in module.mapper.parameters())
    log.info(
        "mapper: %.2fM trainable parameters; generator %dpx, %d style layers; CLIP dim %d",
        n_train / 1e6,
        module.generator.size,
        module.generator.n_latent,
        module.clip.embed_dim,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.get("ckpt_path"), output_dir))
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1
    }
    metrics["time_s"] = time.time() - start
    if cfg.get("eval_after_fit") and trainer.is_global_zero:
        metrics.update(final_eval(cfg, module, datamodule, loggers))
    if trainer.is_global_zero:
        ckpt_cb = trainer.checkpoint_callback
        grid = next((c.last_path for c in callbacks if hasattr(c, "last_path")), None)
        log.info(
            "done in %.1fs; metrics: %s",
            metrics["time_s"],
            {k: round(v, 4) for k, v in sorted(metrics.items())},
        )
        if ckpt_cb is not None and getattr(ckpt_cb, "last_model_path", ""):
            log.info("checkpoint: %s", ckpt_cb.last_model_path)
        if grid:
            log.info("image grid (top: source, bottom: edited): %s", grid)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_library_logs()
    metrics = run_task(train, cfg, output_dir=cfg.paths.output_dir)
    if not metrics:
        return None
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
