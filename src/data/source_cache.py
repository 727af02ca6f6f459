"""Per-latent cache of the source side of a training step: CLIP's embedding of the source image and each loss
term's ``source_features`` (the identity net's), one row per latent of a split.

The generator (fixed noise), CLIP and the terms' nets are frozen, so these rows are fixed per latent: a step whose
batch is cached skips the source's CLIP call and its identity forward, and renders the source image only when a
term reads it (pixel L1, perceptual). A cache is keyed by a fingerprint of the split's latents, the generator's
and the nets' weights, the entries, the precision and the device type; a changed fingerprint is another file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from src.losses.base import CLIP_REQUIREMENTS, LossTerm

log = logging.getLogger("cfclip")

# the entry of CLIP's image embedding of the source; an ensemble's further CLIPs: clip@1, clip@2, ...; the others
# are named after loss terms
CLIP_ENTRY = "clip"
FORMAT = 1


@dataclass
class SourceCacheOptions:
    """``data.source_cache``: ``enabled`` auto (on wherever a loss term has a source side) | true | false;
    ``fill`` lazy (rows computed as latents are first seen) | eager (every row at fit start; DDP always);
    ``dir`` where the files go (null: a ``source_cache`` folder beside the latents file; random latents: memory)."""

    enabled: bool | str = "auto"
    fill: str = "lazy"
    dir: str | None = None

    def __post_init__(self) -> None:
        if self.enabled not in ("auto", True, False):
            raise ValueError(f"data.source_cache.enabled must be auto, true or false, got {self.enabled!r}")
        if self.fill not in ("lazy", "eager"):
            raise ValueError(f"data.source_cache.fill must be lazy or eager, got {self.fill!r}")


def has_source_features(term: nn.Module) -> bool:
    """Whether a loss term defines ``source_features`` (LossTerm's default returns None)."""
    return isinstance(term, LossTerm) and type(term).source_features is not LossTerm.source_features


def _update(h: Any, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def digest(tensors: Iterable[Tensor], *extra: object) -> str:
    """A hex fingerprint of tensors' values, shapes and dtypes, and of ``extra`` (their repr)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        _update(h, t)
    h.update(repr(extra).encode())
    return h.hexdigest()


def net_digest(net: nn.Module) -> str:
    """Fingerprint of a module's parameters and buffers and of its plain settings (pool size, crop, ...)."""
    state = net.state_dict()
    settings = [
        (where, k, repr(v))
        for where, m in net.named_modules()
        for k, v in sorted(vars(m).items())
        if not k.startswith("_")
        and k not in ("weight", "name", "training")
        and isinstance(v, int | float | str | tuple)
    ]
    return digest((state[k] for k in sorted(state)), sorted(state), settings, type(net).__name__)


class SourceCache:
    """The source side of one split's ``n`` latents: ``{entry: (n, F)}``, which rows are filled, and how many
    times this process (or, after ``all_reduce``, the whole DDP job) computed each row."""

    def __init__(self, n: int, key: str, path: str | os.PathLike | None = None):
        self.n, self.key = int(n), key
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, Tensor] = {}
        self.filled = torch.zeros(self.n, dtype=torch.bool)
        self.fills = torch.zeros(self.n, dtype=torch.int32)
        self.dirty = False
        if self.path is not None and self.path.is_file():
            self.load()
        self.opened = self.filled.clone()  # rows that came from the file (DDP merges only the new ones)

    def __len__(self) -> int:
        return int(self.filled.sum())

    def lookup(self, idx: Tensor) -> dict[str, Tensor] | None:
        """The rows (B, F) of the latents ``idx`` (B,) on the host, or None when one of them is not filled."""
        idx = idx.long()
        if not bool(self.filled[idx].all()):
            return None
        return {k: v.index_select(0, idx) for k, v in self.entries.items()}

    def store(self, idx: Tensor, values: dict[str, Tensor]) -> None:
        """Keep the rows (B, F) of the latents ``idx`` (B,) that are not filled yet (a host copy)."""
        idx = idx.long().cpu()
        new = ~self.filled[idx]
        if not bool(new.any()):
            return
        rows = idx[new]
        for k, v in values.items():
            v = v.detach().to("cpu")[new]  # (b, F)
            if k not in self.entries:
                self.entries[k] = torch.zeros(self.n, *v.shape[1:], dtype=v.dtype)
            self.entries[k][rows] = v
        self.filled[rows] = True
        self.fills[rows] += 1
        self.dirty = True

    def missing(self, rows: Tensor | None = None) -> Tensor:
        """The indices (of ``rows``, default all) whose source side is not cached yet."""
        rows = torch.arange(self.n) if rows is None else rows.long()
        return rows[~self.filled[rows]]

    # ---- files -------------------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the cache atomically (a temporary file, then a rename): an interrupted fill resumes from it."""
        if self.path is None or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": FORMAT,
            "key": self.key,
            "n": self.n,
            "filled": self.filled,
            "fills": self.fills,
            "entries": self.entries,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self.dirty = False

    def load(self) -> None:
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != self.key:
            log.info("source cache %s: another fingerprint, not used", self.path)
            return
        if state["n"] != self.n:
            return
        self.entries, self.filled, self.fills = state["entries"], state["filled"], state["fills"]

    # ---- DDP ---------------------------------------------------------------------------------------------
    def all_reduce(self, device: torch.device) -> None:
        """Merge the rows the DDP ranks filled since the cache was opened, so each rank reads the same cache. The
        ranks fill disjoint rows, so each new row is one rank's value (exact); ``fills`` counts the whole job's
        computations of a row (2 would mean a row was filled twice)."""
        import torch.distributed as dist

        new = self.filled & ~self.opened
        names = sorted(self.entries)
        count = torch.tensor([len(names)], device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        if int(count) != len(names):
            raise RuntimeError(
                "source cache: a DDP rank computed no rows (fewer latents than ranks?); use data.source_cache.enabled=false"
            )
        got = new.int().to(device)
        dist.all_reduce(got)
        fills = torch.where(new, self.fills, 0).to(device)
        dist.all_reduce(fills)
        for k in names:
            v = self.entries[k]
            mask = new.view(-1, *[1] * (v.ndim - 1))
            mine = torch.where(mask, v.float(), 0.0).to(device)
            dist.all_reduce(mine)
            merged = (mine / got.clamp_min(1).view_as(mask).to(mine.dtype)).to("cpu", v.dtype)
            self.entries[k] = torch.where(self.opened.view_as(mask), v, merged)
        now = got.cpu() > 0
        self.fills = torch.where(now, fills.cpu().int(), self.fills)
        self.filled = self.opened | now
        self.dirty = True


def precision_tag(precision: object) -> str:
    """'bf16' | '16' | '32' from a Lightning precision ('bf16-mixed', '32-true', 32) or the bench's."""
    p = str(precision)
    return "bf16" if "bf16" in p else ("16" if p.startswith("16") else "32")


def clip_entry(i: int) -> str:
    """The entry of the i-th CLIP of a run (0: the primary, ``clip``; an ensemble's others ``clip@i``)."""
    return CLIP_ENTRY if i == 0 else f"{CLIP_ENTRY}@{i}"


def is_clip_entry(name: str) -> bool:
    return name == CLIP_ENTRY or name.startswith(f"{CLIP_ENTRY}@")


def cache_entries(module: Any) -> dict[str, nn.Module]:
    """The entries a module's step can take from the cache, with the net behind each: each CLIP's embedding of the
    source (unless the source is augmented: its views change every step; an ensemble has one entry per CLIP, each
    in the key by its own fingerprint) and each term's source features."""
    requires = module.requires
    out: dict[str, nn.Module] = {}
    needs_clip = bool(CLIP_REQUIREMENTS & set(requires))
    if needs_clip and not module.augment_source:
        for i, clip in enumerate([module.clip, *getattr(module, "extra_clips", [])]):
            out[clip_entry(i)] = clip
    for name, term in module.loss.terms.items():
        if has_source_features(term):
            out[name] = term
    return out


def cache_key(module: Any, latents: Tensor, precision: object, device: torch.device | str) -> str:
    """The fingerprint of a split's cache: its latents, the generator, each entry's net, precision, device."""
    nets = cache_entries(module)
    parts = [digest([latents]), net_digest(module.generator)]
    parts += [f"{name}:{net_digest(net)}" for name, net in sorted(nets.items())]
    return digest([], parts, precision_tag(precision), torch.device(device).type, FORMAT)


def open_caches(
    module: Any,
    splits: dict[str, Tensor],
    options: SourceCacheOptions,
    dirs: dict[str, Path | None],
    precision: object,
    device: torch.device | str,
) -> dict[str, SourceCache]:
    """One cache per split (train, val) for ``module``'s step, loaded from its file when one matches; {} when off."""
    if options.enabled is False or not module.requires or not cache_entries(module):
        return {}
    caches = {}
    for split, latents in splits.items():
        key = cache_key(module, latents, precision, device)
        folder = Path(options.dir).expanduser() if options.dir else dirs.get(split)
        path = folder / f"{split}-{key[:16]}.pt" if folder is not None else None
        caches[split] = SourceCache(len(latents), key, path)
    return caches
