"""Timing and memory helpers for ``src.bench``: device sync, peak memory of one call, frozen nets made trainable."""

from __future__ import annotations

import contextlib
import gc
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _return_freed_memory() -> None:
    """glibc: serve allocations >= 16 KiB by mmap (returned to the OS on free) and trim the heap, so the
    resident set follows the live tensors instead of malloc's cached free chunks. Memory pass only (slower)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 16384)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    """Extra memory one call of ``fn`` needs at its peak, in MiB, and how it was measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda max_memory_allocated"
    _return_freed_memory()
    if _reset_hwm() and _rss_kb("VmRSS") is not None:
        before = _rss_kb("VmRSS")
        fn()
        return (_rss_kb("VmHWM") - before) / 1024, "VmHWM rise over VmRSS"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "ru_maxrss rise"


@contextlib.contextmanager
def requires_grad(modules: list[torch.nn.Module], on: bool) -> Iterator[None]:
    """Temporarily give frozen networks ``requires_grad`` (the official code never freezes them)."""
    params = [p for m in modules for p in m.parameters()] if on else []
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
