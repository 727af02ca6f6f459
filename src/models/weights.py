"""All file IO for model weights lives here: where each known checkpoint is found, and safe loading.

Files are looked up locally only (explicit path, ``weights_dir``, ``$CFCLIP_WEIGHTS_DIR``, the user cache
``~/.cache/cfclip``); nothing is ever downloaded. Every load uses ``torch.load(weights_only=True)``: no
checkpoint can run code. NVIDIA ``.pkl`` networks go through ``src.models.legacy`` instead. What each known file
is (name, format, origin, size, hash): ``src.models.weights_registry``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

# the registry's names stay importable from here, their old home (tests and callers use them)
from src.models.weights_registry import _BY_FILENAME, REGISTRY, KnownWeights, known_weights  # noqa: F401

ENV_WEIGHTS_DIR = "CFCLIP_WEIGHTS_DIR"


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable or does not fit the model; the message says how to fix it."""


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cfclip`` (default ``~/.cache/cfclip``): the last place ``find_weights`` looks."""
    return Path(os.path.expanduser(os.environ.get("XDG_CACHE_HOME") or "~/.cache")) / "cfclip"


def _expand(path: str | os.PathLike) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path))))


def search_locations(
    filename: str, explicit: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
) -> list[tuple[str, Path | None]]:
    """(label, candidate path) in search order; None where that place is not set."""
    places: list[tuple[str, Path | None]] = []
    if explicit is not None:
        p = _expand(explicit)
        places.append(("explicit path", p / filename if p.is_dir() else p))
    places.append(("weights_dir", _expand(weights_dir) / filename if weights_dir else None))
    env = os.environ.get(ENV_WEIGHTS_DIR)
    places.append((f"${ENV_WEIGHTS_DIR}", _expand(env) / filename if env else None))
    places.append(("user cache", user_cache_dir() / filename))
    return places


def find_weights(
    name_or_path: str | os.PathLike,
    explicit: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> Path:
    """Local path of a checkpoint: explicit path, then ``weights_dir``, ``$CFCLIP_WEIGHTS_DIR``, user cache.

    ``name_or_path`` is a registry name (``"ir_se50"``), a file name or a path (its own location is tried
    first, as an explicit path). Never downloads; a WeightsError says what is missing and where to put it.
    """
    text = str(name_or_path)
    entry = known_weights(text)
    filename = entry.filename if text in REGISTRY else Path(text).name
    places = search_locations(filename, explicit, weights_dir)
    if text not in REGISTRY and Path(text).name != text:  # a path with a directory part: try it first
        places.insert(1 if explicit is not None else 0, ("given path", _expand(text)))
    for _, p in places:
        if p is not None and p.is_file():
            return p
    raise WeightsError(missing_message(filename, places, entry))


def missing_message(filename: str, places: list[tuple[str, Path | None]], entry: KnownWeights | None) -> str:
    """One paragraph: which file, every place searched, where to put it and where it comes from."""
    what = f" ({entry.description}; format: {entry.format})" if entry else ""
    searched = "; ".join(f"{label}: {p}" if p is not None else f"{label}: not set" for label, p in places)
    target = next(p for _, p in places if p is not None)  # the first place searched (the cache is always set)
    origin = f" Get it from {entry.source}." if entry else ""
    return (
        f"Missing weights file '{filename}'{what}. Searched, in order: {searched}. "
        f"Place the file at {target} (or in the folder named by ${ENV_WEIGHTS_DIR}, or in "
        f"{user_cache_dir()}), or point the config at it.{origin} Nothing is downloaded automatically."
    )


def verify_weights(path: str | os.PathLike, name: str | None = None, check_hash: bool = False) -> Path:
    """Check a file against the registry's expected size (and sha256, which reads the whole file) where known."""
    p = _expand(path)
    entry = known_weights(name or p.name)
    if entry is None:
        return p
    if entry.size is not None and p.stat().st_size != entry.size:
        raise WeightsError(
            f"{entry.filename}: {p} has {p.stat().st_size} bytes, expected {entry.size}: the file is "
            f"truncated or a different version. Get it again from {entry.source}."
        )
    if check_hash and entry.sha256:
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if not digest.hexdigest().startswith(entry.sha256):
            raise WeightsError(
                f"{entry.filename}: {p} has sha256 {digest.hexdigest()}, expected {entry.sha256}...: "
                f"corrupt or a different file. Get it again from {entry.source}."
            )
    return p


def resolve_path(path: str | os.PathLike, what: str) -> Path:
    """Expand ``~`` and env vars; a missing known file is searched like ``find_weights``, else a WeightsError."""
    p = _expand(path)
    if p.is_file():
        return p
    if known_weights(p.name) is not None:
        return find_weights(p.name, explicit=p)
    raise WeightsError(f"{what}: file not found: {p}. Place the file there or point the config at it.")


def _load_failure(p: Path, what: str, err: Exception) -> WeightsError:
    """A readable reason why torch.load refused or failed on ``p``."""
    text = str(err)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    corrupt = any(m in text for m in ("invalid load key", "could not find MARK", "pickle data was truncated"))
    if refused or ("Weights only load failed" in text and not corrupt):
        hint = (
            " It looks like an NVIDIA network pickle: run `python -m src.convert`."
            if p.suffix == ".pkl"
            else ""
        )
        name = f" ({refused.group(1)})" if refused else ""
        return WeightsError(
            f"{what}: refused to load {p}: it contains Python objects other than tensors{name}, and loading "
            f"it could run code from the file (weights_only=True refuses it).{hint} Use a plain state-dict "
            "checkpoint from a source you trust."
        )
    if not zipfile.is_zipfile(p) and p.suffix == ".pkl":
        hint = " If it is an NVIDIA network pickle, convert it with `python -m src.convert`."
    else:
        hint = ""
    return WeightsError(
        f"{what}: cannot read {p} ({type(err).__name__}: {text.splitlines()[0][:200] if text else ''}). "
        f"The file is truncated, corrupt, or not a plain tensor checkpoint; download or rebuild it.{hint}"
    )


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", map_location: str = "cpu") -> Any:
    """torch.load with weights_only=True and an error that names the file when it is truncated or corrupt."""
    p = resolve_path(path, what)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, wrong format...
        raise _load_failure(p, what, err) from err


def load_state_dict(path: str | os.PathLike, what: str = "weights", key: str | None = None) -> dict:
    """A state dict from a file; ``key`` picks a sub-dict (e.g. ``g_ema``), else common wrappers are unwrapped."""
    obj = load_checkpoint(path, what)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
            raise WeightsError(f"{what}: {path} has no '{key}' entry (found {keys}).")
        obj = obj[key]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{what}: {path} holds a {type(obj).__name__}, expected a state dict.")
    return obj


def save_atomic(obj: object, out: Path) -> None:
    """torch.save to a temporary file next to ``out``, then rename: ``out`` is complete or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
