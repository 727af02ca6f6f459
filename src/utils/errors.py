"""Clear errors for users: known mistakes print one actionable line and exit non-zero (no traceback)."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from src.models.weights import WeightsError

log = logging.getLogger("cfclip")

# Exceptions that mean "the input is wrong": shown as a message, not a traceback (HYDRA_FULL_ERROR=1 shows it).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    WeightsError,
    KeyError,
)


def user_error(err: BaseException) -> BaseException | None:
    """The user-facing error behind ``err`` (unwrapping Hydra's instantiation wrapper), or None for a bug."""
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, USER_ERRORS):
            return err
        err, seen = err.__cause__, seen + 1
    return None


def _full_key(err: BaseException) -> str:
    for line in str(err).splitlines():
        if line.startswith("full_key:"):
            return line.split(":", 1)[1].strip()
    return "?"


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def run_task(fn: Callable[[DictConfig], Any], cfg: DictConfig, output_dir: str | None = None) -> Any:
    """Run ``fn(cfg)``. Single run: user errors exit with code 2 and a message. Multirun: any failure is
    written to ``<job dir>/error.json`` and the sweep goes on with the next job."""
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        return fn(cfg)
    except Exception as err:
        if _is_multirun():
            log.error("job failed: %s: %s", type(err).__name__, err)
            if output_dir:
                with open(os.path.join(output_dir, "error.json"), "w") as fh:
                    json.dump(
                        {
                            "error": type(err).__name__,
                            "message": str(err),
                            "traceback": traceback.format_exc(),
                        },
                        fh,
                        indent=2,
                    )
            if full:
                raise
            return None
        cause = user_error(err)
        if full or cause is None:
            raise
        where = f" (in {err.__cause__ and 'config ' + _full_key(err)})" if cause is not err else ""
        print(f"cfclip: error: {cause}{where}", file=sys.stderr)
        print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
        sys.exit(2)
