"""Fill the per-latent source cache of a training config ahead of training, with a progress bar:
``python -m src.data.fill_source_cache experiment=toyfaces`` (the same overrides as ``python -m src.train``).

Resumable (rows already in the file are skipped; the file is saved every 50 batches). It renders each latent of the
train and val splits once and keeps CLIP's embedding and the terms' source features beside the latents, on the
device and in the precision the run will use (``trainer.accelerator``, ``trainer.precision``).
"""

from __future__ import annotations

import contextlib
import logging

import hydra
from omegaconf import DictConfig

from src.data.cache_fill import fill
from src.data.source_cache import open_caches, precision_tag
from src.utils.errors import run_task
from src.utils.loggers import quiet_library_logs

log = logging.getLogger("cfclip")


def fill_caches(cfg: DictConfig, progress: bool = True) -> dict[str, int]:
    """Fill the train and val caches of ``cfg``'s run; returns the rows computed per split."""
    import torch

    from src.builders import build

    module, dm = build(cfg)
    dm.setup("fit")
    if dm.source_cache.enabled is False:
        raise ValueError("data.source_cache.enabled=false: nothing to fill")
    dirs = {s: dm.cache_dir(s) for s in ("train", "val")}
    if dm.source_cache.dir is None and None in dirs.values():
        raise ValueError(
            "these latents are random (no file to keep the cache beside): give data.source_cache.dir=<folder>"
        )
    gpu = str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    module = module.to(device).eval()
    precision = cfg.trainer.get("precision", "32-true")
    tag = precision_tag(precision)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if tag == "bf16" else torch.float16)
        if tag != "32"
        else contextlib.nullcontext()
    )
    splits = {s: dm.splits[s] for s in ("train", "val")}
    caches = open_caches(module, splits, dm.source_cache, dirs, precision, device)
    if not caches:
        raise ValueError(
            "this loss has no source side to cache (no CLIP term on the unaugmented source, no identity)"
        )
    done = {}
    for split, cache in caches.items():
        with autocast:
            done[split] = fill(
                cache,
                splits[split],
                lambda w: module.source_side(module.render_source(w)),
                torch.arange(cache.n),
                dm.batch_size,
                device,
                module.generator.n_latent,
                progress=progress,
            )
        log.info(
            "source cache %s: %d rows computed, %d/%d cached: %s",
            split,
            done[split],
            len(cache),
            cache.n,
            cache.path,
        )
    return done


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    quiet_library_logs()
    run_task(fill_caches, cfg)


if __name__ == "__main__":
    main()
