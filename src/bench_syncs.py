"""Where a step waits for the GPU: ``src.bench``'s ``host_syncs_per_step`` and ``host_sync_sites`` (CUDA only)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch


def count_host_syncs(step: Callable[[], None], skip: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """CUDA only: synchronising calls inside one of our steps (torch's sync debug mode, warn level), and
    where each happened (``file:line`` of the op, plus our innermost frame when the op is in a library)."""
    import traceback
    import warnings

    sites: list[str] = []

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        # torch's own "Synchronization debug mode is a prototype feature ..." notice is not a sync
        if "synchronizing cuda operation" not in str(message).lower():
            return
        where = f"{_short(filename)}:{lineno}"
        skipped = (__file__, *skip, filename, warnings.__file__)
        stack = [f for f in traceback.extract_stack()[:-1] if f.filename not in skipped]
        ours = [f for f in stack if _short(f.filename).startswith("src" + os.sep)]
        via = ours[-1:] or stack[-1:]  # our innermost frame, else whoever called into that file
        if via:
            where += f" (from {_short(via[0].filename)}:{via[0].lineno})"
        sites.append(where)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return len(sites), sites


def _short(path: str) -> str:
    """A path relative to the sys.path entry it is imported from (``src/module.py``, ``kornia/...``)."""
    roots = sorted((os.path.abspath(p or ".") for p in sys.path), key=len, reverse=True)
    for root in roots:
        if path.startswith(root + os.sep):
            return path[len(root) + 1 :]
    return path
