"""Training guards: exact resume (RNG + data order), NaN/Inf containment, a checkpoint on SIGTERM / SIGINT.

All three are Lightning callbacks listed in ``conf/callbacks/default.yaml``:

- :class:`~src.utils.resume.ExactResume` (in ``src.utils.resume``) makes ``ckpt_path=...`` continue exactly like
  the uninterrupted run: Lightning restores weights, optimizer, schedulers and step counters but neither the RNG
  streams (augmentation draws) nor the position inside a shuffled epoch. The callback stores the torch / CUDA /
  numpy / python RNG states after every training step in the checkpoint and re-applies them before the next step
  (so validation and image grids never shift the training stream), and shuffles with a permutation that depends
  only on ``(seed, pass)`` and can skip the batches an interrupted epoch had already used.
- :class:`NaNGuard` skips the optimizer step when the loss or a gradient is not finite, names the loss term, and
  aborts after ``patience`` such steps in a row (:class:`~src.utils.errors.TrainingDiverged`). Cost: one
  ``isfinite`` host sync per optimizer step (loss and gradient norm checked together).
- :class:`SignalCheckpoint` turns SIGTERM (cluster pre-emption, ``kill``) and SIGINT (Ctrl-C) into: finish the
  current step, save ``checkpoints/last.ckpt``, exit with status 128 + signal. A second Ctrl-C aborts at once.

Order matters: list ``exact_resume`` before ``signal_checkpoint`` (both before Lightning's ModelCheckpoint, which
Lightning always runs last) so every checkpoint sees the RNG snapshot of the step it saves.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytorch_lightning as pl
import torch

from src.utils.errors import TrainingDiverged
from src.utils.resume import ExactResume  # noqa: F401  (the third guard; configs before the split name it here)

log = logging.getLogger("cfclip")


# ---- NaN / Inf ---------------------------------------------------------------------------------------------
def all_finite(values: list[torch.Tensor]) -> bool:
    """Whether every scalar in ``values`` is finite: one host sync for all of them."""
    return bool(torch.isfinite(torch.stack(values)).all())


def _fmt(value: torch.Tensor) -> str:
    v = value.detach().float()
    return (
        f"{v.item():.4g}" if v.numel() == 1 else f"non-finite in {(~torch.isfinite(v)).sum().item()} entries"
    )


class NaNGuard(pl.Callback):
    """Skip the optimizer step when the loss or a gradient is NaN/Inf; abort after ``patience`` in a row.

    Reads the loss the module stores in ``last_loss`` / ``last_loss_parts`` (detached). One ``isfinite`` host sync
    per optimizer step: the loss and the global gradient norm are checked together; only a bad step pays for
    finding the culprit. A skipped step leaves weights and optimizer state unchanged (gradients are dropped),
    so checkpoints written during a streak hold the last good weights.
    """

    def __init__(self, patience: int = 10):
        if patience < 1:
            raise ValueError(f"callbacks.nan_guard.patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.streak = 0
        self.skipped_total = 0
        self._first_bad_step: int | None = None
        self._good_ckpt: str | None = None

    @staticmethod
    def _params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
        return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = self._params(optimizer)
        loss = getattr(pl_module, "last_loss", None)
        checks = []
        if params:
            checks.append(torch.nn.utils.get_total_norm([p.grad for p in params]).float().reshape(()))
        if loss is not None:
            checks.append(loss.detach().float().reshape(()).to(checks[0].device if checks else loss.device))
        if not checks:
            return
        bad = not all_finite(checks)  # the one host sync of the guard
        if trainer.world_size > 1:  # every rank must take the same decision
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.streak, self._first_bad_step = 0, None
            return
        step = trainer.global_step
        if self.streak == 0:
            self._first_bad_step = step
            self._good_ckpt = self._last_checkpoint(trainer)
        self.streak += 1
        self.skipped_total += 1
        reason = self._describe(pl_module, params)
        for p in params:  # dropping the gradients makes the optimizer skip every parameter: no update at all
            p.grad = None
        if self.streak >= self.patience:
            raise TrainingDiverged(self._abort_message(step, reason))
        if trainer.is_global_zero:
            log.warning(
                "step %d: %s; skipped the optimizer step (%d in a row; training stops after %d: "
                "callbacks.nan_guard.patience)",
                step,
                reason,
                self.streak,
                self.patience,
            )

    def _describe(self, pl_module: pl.LightningModule, params: list[torch.nn.Parameter]) -> str:
        parts = getattr(pl_module, "last_loss_parts", None) or {}
        bad_terms = {k: v for k, v in parts.items() if not bool(torch.isfinite(v).all())}
        if bad_terms:
            names = ", ".join(f"{k}={_fmt(v)}" for k, v in bad_terms.items())
            return f"non-finite loss term {names}"
        loss = getattr(pl_module, "last_loss", None)
        if loss is not None and not bool(torch.isfinite(loss).all()):
            return f"non-finite total loss {_fmt(loss)}"
        names = {id(p): n for n, p in pl_module.named_parameters()}
        bad = [names.get(id(p), "?") for p in params if not bool(torch.isfinite(p.grad).all())]
        finite = ", ".join(f"{k}={_fmt(v)}" for k, v in parts.items())
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        return (
            f"non-finite gradient in {', '.join(bad[:3])}{more} although every loss term is finite ({finite}): "
            "a term's backward is unstable"
        )

    @staticmethod
    def _last_checkpoint(trainer: pl.Trainer) -> str | None:
        cb = trainer.checkpoint_callback
        for path in (getattr(cb, "best_model_path", ""), getattr(cb, "last_model_path", "")):
            if path and os.path.isfile(path):
                return path
        return None

    def _abort_message(self, step: int, reason: str) -> str:
        first = self._first_bad_step
        ckpt = (
            f"The last good checkpoint (written before step {first}) is {self._good_ckpt}; resume from it with "
            f"ckpt_path={self._good_ckpt} after the fix."
            if self._good_ckpt
            else "No checkpoint was written before the first bad step."
        )
        return (
            f"training diverged: {self.streak} optimizer steps in a row (steps {first}-{step}) had a non-finite "
            f"loss or gradient, the last one: {reason}. Their updates were skipped, so the weights are those of "
            f"step {first}. {ckpt} Lower optimizer.lr, check the inputs and loss weights, or allow more skipped "
            "steps with callbacks.nan_guard.patience=N."
        )


# ---- signals -----------------------------------------------------------------------------------------------
class SignalCheckpoint(pl.Callback):
    """SIGTERM / SIGINT while fitting: finish the step, save ``last.ckpt``, exit with status 128 + signal.

    Lightning (2.6) already catches SIGTERM: it sets ``trainer.received_sigterm`` and raises ``SIGTERMException``
    (a ``SystemExit`` with status 0) after the current step, without saving anything. This callback routes SIGINT
    (Ctrl-C) to the same path, saves the checkpoint when that exception goes by, and ``src.train`` turns it into a
    message and exit status 143 (SIGTERM) or 130 (SIGINT). A second Ctrl-C raises KeyboardInterrupt at once.
    """

    def __init__(self, filename: str = "last"):
        self.filename = filename
        self.signum: int | None = None
        self.saved_path: str | None = None
        self._installed = False

    def _handler(self, previous_term: Any):
        def handle(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self.signum is not None:
                raise KeyboardInterrupt  # second Ctrl-C: stop now, no checkpoint
            self.signum = self.signum or signum
            if signum == signal.SIGINT:
                log.warning(
                    "Ctrl-C: finishing the current step, then saving a checkpoint (Ctrl-C again to abort)"
                )
            if callable(previous_term):  # Lightning's SIGTERM handler: sets trainer.received_sigterm
                previous_term(signal.SIGTERM, frame)

        return handle

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        # Lightning registered its SIGTERM handler before the fit started and restores every handler at teardown.
        previous_term = signal.getsignal(signal.SIGTERM)
        handler = self._handler(previous_term)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        self._installed = True

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException):
            return
        self.signum = self.signum or signal.SIGTERM
        cb = trainer.checkpoint_callback
        dirpath = getattr(cb, "dirpath", None) or os.path.join(trainer.default_root_dir, "checkpoints")
        path = os.path.join(dirpath, f"{self.filename}.ckpt")
        if cb is not None and self.filename == getattr(cb, "CHECKPOINT_NAME_LAST", "last"):
            cb.last_model_path = path
        trainer.save_checkpoint(path)
        self.saved_path = path
        if trainer.is_global_zero:
            log.warning(
                "%s: saved %s at step %d", signal.Signals(self.signum).name, path, trainer.global_step
            )

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGTERM)


def find_callback(callbacks: list[Any], kind: type) -> Any:
    """The first callback of a type, or None."""
    return next((c for c in callbacks if isinstance(c, kind)), None)


__all__ = ["ExactResume", "NaNGuard", "SignalCheckpoint", "find_callback"]
