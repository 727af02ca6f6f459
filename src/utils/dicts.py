"""Nested dicts: result dicts (eval.json) as flat ``{"realism/valid_rate": ...}`` maps for loggers and tables, and
config nodes (OmegaConf, as Hydra passes them) as plain dicts / lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested dict under its slash-joined path: {"realism": {"valid_rate": 1}} ->
    {"realism/valid_rate": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def plain(obj: Any) -> Any:
    """Deep-convert mappings / sequences (e.g. an OmegaConf DictConfig from Hydra) to dicts / lists."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return [plain(v) for v in obj]
    return obj
