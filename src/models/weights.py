"""All file IO for model weights lives here: safe loading with clear, actionable errors.

Every load uses ``torch.load(weights_only=True)``: no checkpoint can run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable or does not fit the model; the message says how to fix it."""


def resolve_path(path: str | os.PathLike, what: str) -> Path:
    """Expand ``~`` and env vars; raise a WeightsError naming the file and what it is when missing."""
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    if not p.is_file():
        raise WeightsError(f"{what}: file not found: {p}. Place the file there or point the config at it.")
    return p


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", map_location: str = "cpu") -> Any:
    """torch.load with weights_only=True and an error that names the file when it is truncated or corrupt."""
    p = resolve_path(path, what)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, wrong format...
        raise WeightsError(
            f"{what}: cannot read {p} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "The file is truncated, corrupt, or not a plain tensor checkpoint; "
            "download or rebuild it."
        ) from err


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
