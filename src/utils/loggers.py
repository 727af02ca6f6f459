"""Logger factories: W&B that never blocks (offline automatically without an API key), grouped by sweep."""

from __future__ import annotations

import logging
import netrc
import os
import warnings
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("cfclip")

SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "credential")


def wandb_has_credentials() -> bool:
    """True when W&B could log online: WANDB_API_KEY set, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth)


# How the W&B runs table summarises metrics (Lightning already puts every metric on trainer/global_step).
# Exact names: W&B resolves overlapping globs (Lightning defines "*") in no fixed order.
WANDB_METRICS: dict[str, dict[str, Any]] = {
    "val/loss": {"step_metric": "trainer/global_step", "summary": "min,last"},
    "train/grad_norm": {"step_metric": "trainer/global_step", "summary": "max,last"},
    "eval/*": {"step_metric": "trainer/global_step", "summary": "last"},
    "oracle/*": {"step_metric": "trainer/global_step", "summary": "max,last"},
}


def hydra_run_context() -> dict[str, Any]:
    """The Hydra job around this run: experiment, sweep id (the multirun dir under ``multirun/``), job number,
    the command-line overrides and the config group choices (loss, aug, model, prompt, ...). Empty outside a
    Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    choices = {k: v for k, v in hc.runtime.choices.items() if "/" not in k and k not in ("hydra", "paths")}
    ctx: dict[str, Any] = {
        "experiment": choices.get("experiment"),
        "hparams_search": choices.get("hparams_search"),
        "overrides": " ".join(hc.overrides.task),
        "choices": {k: v for k, v in choices.items() if v is not None},  # group by run_context.choices.loss
    }
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = os.path.abspath(hc.sweep.dir)
        root = os.path.join(os.path.abspath(hc.runtime.cwd), "multirun")
        rel = os.path.relpath(sweep_dir, root)
        ctx["sweep"] = os.path.basename(sweep_dir) if rel.startswith("..") else rel
        ctx["job_num"] = hc.job.num
    return {k: v for k, v in ctx.items() if v not in (None, "")}


def auto_group(ctx: dict[str, Any]) -> str | None:
    """W&B group: $WANDB_RUN_GROUP (a study of several sweeps sets it), else ``<experiment>/<sweep id>`` in a
    multirun, else the experiment name, else None."""
    if os.environ.get("WANDB_RUN_GROUP"):
        return os.environ["WANDB_RUN_GROUP"]
    if "sweep" in ctx:
        return f"{ctx['experiment']}/{ctx['sweep']}" if ctx.get("experiment") else ctx["sweep"]
    return ctx.get("experiment")


def define_wandb_metrics(run: Any, metrics: Mapping[str, Mapping[str, Any]] = WANDB_METRICS) -> None:
    """Step axis and summaries so the runs table compares runs on eval metrics and best val loss."""
    run.define_metric("trainer/global_step")
    for name, kwargs in metrics.items():
        run.define_metric(name, **kwargs)


def finish_wandb() -> None:
    """End the active W&B run of this process (local sweeps run every job in one process)."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def _wandb_logger_class():
    from pytorch_lightning.loggers import WandbLogger

    class CFCLIPWandbLogger(WandbLogger):
        """WandbLogger that defines metric summaries on its run and falls back to offline if init fails."""

        @property
        def experiment(self):  # type: ignore[override]
            new = self._experiment is None
            try:
                run = super().experiment
            except Exception as err:  # network, auth, a bad entity: log locally instead of stopping the job
                if self._offline:
                    raise
                log.warning("wandb.init failed (%s); logging offline instead (wandb sync later)", err)
                os.environ["WANDB_MODE"] = "offline"
                self._offline, self._wandb_init["mode"] = True, "offline"
                run = super().experiment
            if new and callable(getattr(run, "define_metric", None)):
                define_wandb_metrics(run)
            return run

    return CFCLIPWandbLogger


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = "auto",
    job_type: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    log_model: bool = False,
    init_timeout: float = 60.0,
    **kwargs: Any,
):
    """A WandbLogger that never blocks and groups runs by sweep and experiment.

    ``offline=None``: offline unless credentials exist or WANDB_MODE says otherwise (no prompt, no network).
    ``group="auto"`` (or None): see ``auto_group`` (the sweep, the experiment).
    The run's config gets ``run_context`` (experiment, sweep, job number, overrides, group choices) and tags
    ``experiment:<name>`` / ``sweep:<id>`` so the W&B table filters and groups by them.
    """
    mode = os.environ.get("WANDB_MODE")
    if offline is None:  # WANDB_MODE=disabled stays disabled (wandb.init returns a no-op run)
        offline = mode in ("offline", "dryrun") or (
            mode not in ("online", "disabled") and not wandb_has_credentials()
        )
    os.environ.setdefault("WANDB_SILENT", "true")
    if offline:
        os.environ["WANDB_MODE"] = "offline"
    os.makedirs(save_dir, exist_ok=True)
    finish_wandb()  # the previous job of a local sweep: never log into it
    ctx = hydra_run_context()
    if group in (None, "auto"):
        group = auto_group(ctx)
    tags = list(tags or [])
    tags += [f"{k}:{ctx[k]}"[:64] for k in ("experiment", "sweep") if k in ctx]
    config = {"run_context": ctx, **dict(kwargs.pop("config", None) or {})}
    import wandb

    settings = kwargs.pop("settings", None) or wandb.Settings(init_timeout=init_timeout)
    return _wandb_logger_class()(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        job_type=job_type,
        tags=list(dict.fromkeys(tags)),
        offline=offline,
        log_model=log_model,
        config=config,
        settings=settings,
        **kwargs,
    )


def scrub_secrets(cfg: Any) -> Any:
    """A copy of a plain config with every value under a secret-looking key replaced by '***'."""
    if isinstance(cfg, Mapping):
        return {
            k: (
                "***"
                if any(w in str(k).lower() for w in SECRET_WORDS) and v is not None
                else scrub_secrets(v)
            )
            for k, v in cfg.items()
        }
    if isinstance(cfg, list | tuple):
        return type(cfg)(scrub_secrets(v) for v in cfg)
    return cfg


class _DropLibraryInfo(logging.Filter):
    """Drop INFO records that libraries send to the root logger (open_clip logs every model build there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "open_clip" not in record.pathname:
            return True
        return record.levelno > logging.INFO and "No pretrained weights loaded" not in record.getMessage()


def quiet_library_logs() -> None:
    """Keep run logs readable: library chatter below WARNING is dropped, ours stays."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropLibraryInfo())
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*No pretrained weights loaded.*")
