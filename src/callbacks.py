"""Callbacks: a source | edited image grid of fixed validation latents (PNG + every logger), and the ground-truth
metrics curve on domains with an oracle. The metrics and the grid come from ``src.evaluation`` (never the
reverse)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torchvision.utils import save_image

from src.evaluation.generic import edit_test_set
from src.evaluation.grids import pair_grid
from src.utils.dicts import flatten

log = logging.getLogger("cfclip")


class ImageGridCallback(pl.Callback):
    """Every ``every_n_steps`` (and at the end of training) render the first ``num_images`` val latents."""

    def __init__(self, every_n_steps: int = 500, num_images: int = 8, dirname: str = "grids"):
        self.every_n_steps, self.num_images, self.dirname = every_n_steps, num_images, dirname
        self.last_path: str | None = None

    def _latents(self, trainer: pl.Trainer) -> torch.Tensor | None:
        dm = trainer.datamodule
        if dm is None or "val" not in getattr(dm, "splits", {}):
            return None
        val = dm.splits["val"][: self.num_images]
        n_latent = dm.generator.n_latent
        return val if val.ndim == 3 else val[:, None].expand(-1, n_latent, -1)

    def log_grid(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        w = self._latents(trainer)
        if w is None:
            return
        was_training = module.training
        module.eval()
        x, x_hat = module.render_pair(w.to(module.device, torch.float32))
        module.train(was_training)
        grid = pair_grid(x, x_hat)
        step = trainer.global_step
        os.makedirs(self.dirname, exist_ok=True)
        self.last_path = os.path.join(self.dirname, f"step_{step:06d}.png")
        save_image(grid, self.last_path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(
                    key="val/grid", images=[grid], step=step, caption=["top: source, bottom: edited"]
                )
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                logger.experiment.add_image("val/grid", grid, step)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self.log_grid(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.log_grid(trainer, module)


class OracleCurveCallback(pl.Callback):
    """Every ``every_n_steps``: the domain evaluator's metrics (toyfaces: the oracle) on the first
    ``num_latents`` test latents, logged as ``oracle/*`` and saved to ``path`` (JSON list). A multi-prompt run
    deals the latents out to its prompts in turn (prompt j gets latents j, j + P, ...) and logs their mean and
    ``oracle/<name>/faithful_rate``: the same cost as one prompt, each prompt on ``num_latents / P`` faces.

    Shows what the CLIP loss cannot: the loss may keep falling while the oracle's edit accuracy falls too (the
    mapper drifting to edits only CLIP likes). Diagnostic only: picking a checkpoint on it tunes on the test set.
    A domain without an evaluator (``evaluator: null``) turns it off.
    """

    KEYS = (
        "faithful_rate",
        "collateral_psnr",
        "edit_accuracy",
        "preservation",
        "leakage",
        "realism/valid_rate",
    )

    def __init__(
        self, evaluator: Any | None, every_n_steps: int = 100, num_latents: int = 32, path: str | None = None
    ):
        self.evaluator, self.every_n_steps, self.num_latents, self.path = (
            evaluator,
            every_n_steps,
            num_latents,
            path,
        )
        self.history: list[dict[str, float]] = []

    def _latents(self, trainer: pl.Trainer) -> torch.Tensor | None:
        dm = trainer.datamodule
        splits = getattr(dm, "splits", {}) if dm is not None else {}
        return splits["test"][: self.num_latents] if "test" in splits else None

    def measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        latents = self._latents(trainer)
        if self.evaluator is None or latents is None or not trainer.is_global_zero:
            return
        was_training = module.training
        # a diagnostic must not change the run: the oracle draws random numbers, so fork the RNG streams
        cuda = [module.device.index or 0] if module.device.type == "cuda" else []
        prompts = getattr(module, "prompts", None) or [module.prompt]
        per_name: dict[str, dict[str, float]] = {}
        with torch.random.fork_rng(devices=cuda):
            for j, p in enumerate(prompts):  # a multi-prompt mapper: each prompt, then their mean
                text = p.target if len(prompts) > 1 else None
                # the latents are dealt out to the prompts in turn, so the curve costs the same for any number
                own = latents[j :: len(prompts)]
                if len(own) == 0:
                    continue
                x, x_hat = edit_test_set(module, own, text=text)
                # with its text: a prompt with no ground truth configured is judged by the values the text names
                flat = flatten(self.evaluator(x, x_hat, p.name, p.target))
                per_name[p.name] = {
                    k: float(flat[k]) for k in self.KEYS if isinstance(flat.get(k), int | float)
                }
        per = list(per_name.values())
        module.train(was_training)
        metrics = {
            f"oracle/{k}": float(np.mean([m[k] for m in per if k in m]))
            for k in self.KEYS
            if any(k in m for m in per)
        }
        if len(prompts) > 1:
            metrics.update(
                {
                    f"oracle/{name}/faithful_rate": m["faithful_rate"]
                    for name, m in per_name.items()
                    if "faithful_rate" in m
                }
            )
        step = trainer.global_step
        self.history.append({"step": step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        log.info(
            "step %d oracle (%d test latents): %s",
            step,
            len(latents),
            ", ".join(f"{k[7:]} {v:.3f}" for k, v in metrics.items()),
        )
        if self.path:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "w") as fh:
                json.dump(self.history, fh, indent=1)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self.measure(trainer, module)
