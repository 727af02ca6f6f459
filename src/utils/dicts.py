"""Nested result dicts (eval.json) as flat ``{"realism/valid_rate": ...}`` maps for loggers and tables."""

from __future__ import annotations

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
