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


class TrainingDiverged(RuntimeError):
    """The loss or gradients stayed non-finite for ``callbacks.nan_guard.patience`` steps in a row."""


class OutputDirError(OSError):
    """The run directory cannot be created or written, or already holds another run."""


# Exceptions that mean "the input is wrong": shown as a message, not a traceback (HYDRA_FULL_ERROR=1 shows it).
# Also src.models.weights.WeightsError (added in user_error: importing it here would import torch).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    KeyError,
    TrainingDiverged,
    OutputDirError,
)


def user_error(err: BaseException) -> BaseException | None:
    """The user-facing error behind ``err`` (unwrapping Hydra's instantiation wrapper), or None for a bug."""
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, (*USER_ERRORS, WeightsError)):
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


# ---- the run directory -------------------------------------------------------------------------------------
RUN_MARKER = ".cfclip_run"


def _dir_problem(path: str) -> str | None:
    """Why ``path`` cannot be created / written as a directory, or None if it can."""
    p = os.path.abspath(os.path.expanduser(path))
    probe = p
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def output_dir_message(path: str, reason: str) -> str:
    return (
        f"cannot create the run directory {path}: {reason}. Point the runs at a writable folder with "
        "paths.log_dir=<folder> (or hydra.run.dir=<folder> for one run, hydra.sweep.dir=<folder> for sweeps)."
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holds_results(path: str) -> bool:
    ckpts = os.path.join(path, "checkpoints")
    return (os.path.isdir(ckpts) and bool(os.listdir(ckpts))) or os.path.isfile(
        os.path.join(path, "csv", "metrics.csv")
    )


def claim_output_dir(path: str, resuming: bool = False) -> None:
    """Create the run dir, check it is writable, and claim it for this process.

    A dir holding an earlier run's results is refused unless this run resumes it (``ckpt_path=...``); a dir
    claimed by another live process is always refused. The claim is atomic (a marker file made by ``os.link``),
    so two runs never share a dir, even when both start in the same microsecond.
    """
    problem = _dir_problem(path)
    if problem:
        raise OutputDirError(output_dir_message(path, problem))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OutputDirError(output_dir_message(path, err.strerror or str(err))) from err
    if _holds_results(path) and not resuming:
        raise OutputDirError(
            f"the run directory {path} already holds another run; a new run never writes into it. Resume that "
            "run with ckpt_path=last (same hydra.run.dir), or start a new one in another dir (drop hydra.run.dir)."
        )
    marker = os.path.join(path, RUN_MARKER)
    tmp = f"{marker}.{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        while True:
            try:
                os.link(tmp, marker)  # atomic: fails if another process claimed the dir first
                return
            except FileExistsError:
                try:
                    with open(marker) as fh:
                        owner = int(fh.read().split()[0])
                except (OSError, ValueError, IndexError):
                    owner = -1
                if owner != os.getpid() and (owner == -1 or _alive(owner)):
                    raise OutputDirError(
                        f"another run (pid {owner}) is using the run directory {path}; wait for it to end or "
                        "start this one in another dir."
                    ) from None
                os.unlink(marker)  # our own earlier claim, or a process that has ended: take the dir over
    except OSError as err:
        if isinstance(err, OutputDirError):
            raise
        raise OutputDirError(output_dir_message(path, err.strerror or str(err))) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


try:  # a Hydra callback: checks the run / sweep dir before Hydra itself creates it (and fails with a traceback)
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


class OutputDirCheck(_HydraCallback):
    """``hydra.callbacks.output_dir_check``: an unwritable run dir is one line and exit status 2, no traceback."""

    def _check(self, config: DictConfig, key: str) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return
        try:
            HydraConfig.instance().set_config(config)
            path = str(OmegaConf.select(config, key))
        except Exception:  # an unresolvable dir: let Hydra report it
            return
        problem = _dir_problem(path)
        if problem:
            print(f"cfclip: error: {output_dir_message(path, problem)}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
