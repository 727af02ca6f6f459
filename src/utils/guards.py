"""Training guards: exact resume (RNG + data order), NaN/Inf containment, a checkpoint on SIGTERM / SIGINT.

All three are Lightning callbacks listed in ``conf/callbacks/default.yaml``:

- :class:`ExactResume` makes ``ckpt_path=...`` continue exactly like the uninterrupted run: Lightning restores
  weights, optimizer, schedulers and step counters but neither the RNG streams (augmentation draws) nor the
  position inside a shuffled epoch. The callback stores the torch / CUDA / numpy / python RNG states after every
  training step in the checkpoint and re-applies them before the next step (so validation and image grids never
  shift the training stream), and shuffles with a permutation that depends only on ``(seed, pass)`` and can skip
  the batches an interrupted epoch had already used.
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
import random
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import RandomSampler, Sampler

from src.utils.errors import TrainingDiverged

log = logging.getLogger("cfclip")


# ---- RNG state (checkpoint-safe: tensors and plain Python values only, loadable with weights_only=True) ------
def rng_state() -> dict[str, Any]:
    """The torch CPU, CUDA (if initialised), numpy and python RNG states, as plain tensors and numbers."""
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": gauss_next,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


# ---- resumable shuffling -------------------------------------------------------------------------------------
class ResumableRandomSampler(Sampler[int]):
    """Shuffles ``n`` indices with a permutation that depends only on ``(seed, pass)``; can skip a pass's start.

    Each ``iter()`` is one pass (an epoch) and uses the next pass number; ``resume(pass, skip)`` makes the next
    pass number ``pass`` and drops its first ``skip`` indices (the samples an interrupted epoch already used).
    The global RNG is never touched, so data order and augmentation draws are independent streams.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = int(n), int(seed)
        self.next_pass, self.current_pass, self._skip = 0, 0, 0

    def resume(self, next_pass: int, skip: int = 0) -> None:
        self.next_pass, self._skip = int(next_pass), int(skip)

    def permutation(self, pass_index: int) -> list[int]:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + pass_index) % (2**63))
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        self.current_pass, self.next_pass = self.next_pass, self.next_pass + 1
        start, self._skip = self._skip, 0
        yield from self.permutation(self.current_pass)[start:]

    def __len__(self) -> int:
        return self.n


def _loaders(obj: Any) -> list[Any]:
    """The DataLoaders inside whatever ``trainer.train_dataloader`` is (a loader, a list or a dict of them)."""
    if obj is None:
        return []
    if isinstance(obj, dict):
        return [dl for v in obj.values() for dl in _loaders(v)]
    if isinstance(obj, list | tuple):
        return [dl for v in obj for dl in _loaders(v)]
    return [obj]


class ExactResume(pl.Callback):
    """Exact resume: RNG states after each training step + a (seed, pass)-determined, skippable shuffle.

    ``seed``: the data-order seed (the config passes the run's ``seed``); ``None`` draws one, stored in the
    checkpoint. Only a plain shuffling ``RandomSampler`` (single process) is replaced; distributed samplers keep
    their own epoch-seeded order (a mid-epoch DDP resume restarts that epoch's order).
    """

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._rng: dict[str, Any] | None = None  # RNG right after the last finished training step
        self._pass = 0  # the sampler pass (epoch) of the last finished step
        self._batches_done = 0  # batches of that pass already trained on
        self._pass_done = False
        self._pending: dict[str, Any] | None = None
        self._samplers: list[
            tuple[ResumableRandomSampler, int]
        ] = []  # (sampler, batch size) per train loader

    # -- checkpoint state --
    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rng": self._rng,
            "pass": self._pass,
            "batches_done": self._batches_done,
            "pass_done": self._pass_done,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    # -- hooks --
    def _install(self, trainer: pl.Trainer) -> None:
        self._samplers = []
        for dl in _loaders(trainer.train_dataloader):
            batch_sampler = getattr(dl, "batch_sampler", None)
            inner = getattr(batch_sampler, "sampler", None)
            if isinstance(inner, ResumableRandomSampler):
                self._samplers.append((inner, int(batch_sampler.batch_size)))
            elif type(inner) is RandomSampler and not inner.replacement and inner._num_samples is None:
                sampler = ResumableRandomSampler(len(inner.data_source), self.seed)
                sampler.resume(self._pass + (1 if self._pass_done else 0))
                batch_sampler.sampler = sampler  # read lazily when the epoch's iterator starts
                self._samplers.append((sampler, int(batch_sampler.batch_size)))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self.seed = pending["seed"] if pending.get("seed") is not None else self.seed
            self._rng = pending.get("rng")
            self._pass, self._batches_done = int(pending["pass"]), int(pending["batches_done"])
            self._pass_done = bool(pending["pass_done"])
        if self.seed is None:
            self.seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self._install(trainer)
        if pending is not None:
            for sampler, batch_size in self._samplers:
                if self._pass_done:
                    sampler.resume(self._pass + 1)
                else:
                    sampler.resume(self._pass, self._batches_done * batch_size)
            # our sampler resumes the epoch, so Lightning's "dataloader is not resumable" warning does not apply
            warnings.filterwarnings(
                "ignore", message=r".*resuming from a checkpoint that ended before the epoch.*"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)  # keeps our samplers; replaces the one of a dataloader reloaded for this epoch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._rng is not None:  # undo whatever ran between two steps (validation, grids, a restart)
            set_rng_state(self._rng)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._rng = rng_state()
        self._pass = self._samplers[0][0].current_pass if self._samplers else trainer.current_epoch
        self._batches_done = batch_idx + 1
        self._pass_done = self._batches_done >= trainer.num_training_batches


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


__all__ = [
    "ExactResume",
    "NaNGuard",
    "ResumableRandomSampler",
    "SignalCheckpoint",
    "find_callback",
    "rng_state",
    "set_rng_state",
]
