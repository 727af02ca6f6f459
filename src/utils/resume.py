"""Exact resume: RNG states (torch / CUDA / numpy / python) in every checkpoint and a (seed, pass)-determined,
skippable shuffle, so ``ckpt_path=...`` continues exactly like the uninterrupted run (``ExactResume``, a
Lightning callback listed in ``conf/callbacks/default.yaml``; the other training guards: ``src.utils.guards``).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import RandomSampler, Sampler


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


__all__ = ["ExactResume", "ResumableRandomSampler", "rng_state", "set_rng_state"]
