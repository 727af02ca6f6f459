"""Filling the per-latent source cache (src/data/source_cache.py): rows computed in batches (resumable), and the
Lightning module's hooks: open the caches of a datamodule's splits, fill them at fit start (``fill=eager``, and
always under DDP: each rank its rows, then merged), save new rows."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from src.data.source_cache import SourceCache, SourceCacheOptions, cache_entries, open_caches

log = logging.getLogger("cfclip")


def fill(
    cache: SourceCache,
    latents: Tensor,
    compute: Callable[[Tensor], dict[str, Tensor]],
    rows: Tensor,
    batch_size: int,
    device: torch.device,
    n_latent: int,
    progress: bool = False,
    save_every: int | None = 50,
) -> int:
    """Compute the source side of the ``rows`` not cached yet, ``batch_size`` at a time (``compute``: latents
    (b, L, D) on ``device`` -> entries); saves every ``save_every`` batches and at the end (resumable; None:
    never, as DDP ranks before their merge). Returns the number of rows filled."""
    todo = cache.missing(rows)
    batches = todo.split(max(1, batch_size)) if len(todo) else ()
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"source cache {cache.path.name if cache.path else ''}", unit="batch")
    for i, idx in enumerate(batches):
        w = latents[idx].float()
        if w.ndim == 2:  # W latents: one style vector for every layer (as LatentDataset)
            w = w[:, None].expand(-1, n_latent, -1)
        cache.store(idx, compute(w.to(device)))
        if save_every and (i + 1) % save_every == 0:
            cache.save()
    if save_every:
        cache.save()
    return len(todo)


# ---- the Lightning module's hooks (src/module.py) ---------------------------------------------------------
def caches_for(module: Any, datamodule: Any) -> dict[str, SourceCache]:
    """The caches of the train and val splits that a datamodule with ``source_cache`` options asks for."""
    options = getattr(datamodule, "source_cache", None)
    if not isinstance(options, SourceCacheOptions):
        return {}
    splits = {s: datamodule.splits[s] for s in ("train", "val") if s in datamodule.splits}
    dirs = {s: datamodule.cache_dir(s) for s in splits}
    trainer = module.trainer
    caches = open_caches(module, splits, options, dirs, trainer.precision, trainer.strategy.root_device)
    if caches:
        log.info(
            "source cache: %s (%s)",
            ", ".join(f"{s} {len(c)}/{c.n} cached" for s, c in caches.items()),
            ", ".join(sorted(cache_entries(module))),
        )
    return caches


def prefill(module: Any, datamodule: Any) -> None:
    """At fit start: fill every row now when ``fill=eager``, and always under DDP, where each rank computes the
    rows ``rank::world`` and the ranks then merge them (every rank reads the same cache; no row is filled twice)."""
    caches = module.source_caches
    if not caches:
        return
    trainer = module.trainer
    world, rank = trainer.world_size, trainer.global_rank
    if datamodule.source_cache.fill != "eager" and world == 1:
        return
    show = rank == 0 and trainer.progress_bar_callback is not None

    def compute(w: Tensor) -> dict[str, Tensor]:
        return module.source_side(module.render_source(w))

    for split, cache in caches.items():
        with trainer.precision_plugin.forward_context():
            fill(
                cache,
                datamodule.splits[split],
                compute,
                torch.arange(rank, cache.n, world),
                datamodule.batch_size,
                module.device,
                module.generator.n_latent,
                progress=show,
                save_every=None if world > 1 else 50,
            )
        if world > 1:
            cache.all_reduce(module.device)
    save_caches(module)


def save_caches(module: Any) -> None:
    """Write the caches with new rows (the global-zero rank only)."""
    if module.trainer.is_global_zero:
        for cache in module.source_caches.values():
            cache.save()
