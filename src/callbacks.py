"""Callbacks: a source | edited image grid of fixed validation latents, saved as PNG and sent to every logger."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid, save_image


def pair_grid(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Two rows, sources over edits: (3, 2H + pad, B W + pad) in [0, 1]."""
    both = torch.cat([x, x_hat]).clamp(-1, 1).add(1).div(2)
    return make_grid(both.float().cpu(), nrow=x.shape[0], padding=2, pad_value=1.0)


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
