"""The whole training step in CUDA graphs: ``torch.compile(mode="reduce-overhead")`` of the loss (mapper, generator,
views, CLIP, loss terms) and its backward, and of the optimizer step.

At the paper's batch of 2 a GPU step is bound by kernel launches (docs/performance.md); replaying captured graphs
launches them from the device. The source cache's lookup (host indices) runs eagerly before the compiled part,
so the graphs see only device tensors. Without CUDA the step runs eagerly and ``note`` says why (a clean
fallback: the same results as ``CFCLIPModule.step_loss`` + backward + optimizer step).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

log = logging.getLogger("cfclip")


class GraphedStep:
    """``step(batch) -> loss``: one training step of ``module`` with ``optimizer``, compiled on CUDA.

    ``autocast``: a context for the forward (the step's precision; backward runs outside it, as in eager
    training). ``backend``/``mode`` are torch.compile's; ``force=True`` compiles on any device (tests trace the
    step on the CPU with ``backend="eager"``: the same graph breaks and results as on a GPU, no CUDA graphs).
    """

    def __init__(
        self,
        module: Any,
        optimizer: torch.optim.Optimizer,
        mode: str | None = "reduce-overhead",
        backend: str = "inductor",
        force: bool = False,
        autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ):
        self.module, self.optimizer, self.autocast = module, optimizer, autocast
        device = module.device
        self.compiled = device.type == "cuda" or force
        self.note = (
            f"torch.compile(mode={mode!r}, backend={backend!r})"
            if self.compiled
            else f"eager: CUDA graphs need a CUDA device, the module is on {device.type}"
        )
        if not self.compiled:
            log.info("graphed step: %s", self.note)
            self._loss, self._opt_step = self._loss_eager, optimizer.step
            return
        if device.type == "cuda":  # Adam & co. keep their step counters on the device inside graphs
            for group in optimizer.param_groups:
                if "capturable" in group:
                    group["capturable"] = True
        options = {"mode": mode} if backend == "inductor" else {}
        self._loss = torch.compile(self._loss_eager, backend=backend, **options)

        def opt_step() -> None:
            optimizer.step()

        self._opt_step = torch.compile(opt_step, backend=backend, **options)

    def _loss_eager(self, w: torch.Tensor, ids: torch.Tensor | None, source: Any) -> torch.Tensor:
        """The step's loss from the latents (B, L, D), prompt ids and the cached source side (device tensors)."""
        return self.module.latent_loss(w, ids, source)[0]

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One step: loss, backward, optimizer step; returns the loss (detached)."""
        m = self.module
        ids = m.prompt_ids(batch, training=True)
        with self.autocast():  # eager: reads the host indices, fills a cold cache
            source = m.cached_source(batch, "train")
        if self.compiled and m.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be overwritten
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            total = self._loss(batch["w"], ids, source)
        total.backward()
        self._opt_step()
        return total.detach().clone()  # a graph's output is overwritten by its next replay
