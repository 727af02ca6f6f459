"""Logger factories: W&B that never blocks (offline automatically without an API key)."""

from __future__ import annotations

import logging
import netrc
import os
import warnings
from collections.abc import Mapping
from typing import Any

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


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    log_model: bool = False,
    **kwargs: Any,
):
    """A WandbLogger; ``offline=None`` means offline unless credentials exist or WANDB_MODE says otherwise."""
    from pytorch_lightning.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE")
    if offline is None:
        offline = mode in ("offline", "dryrun", "disabled") or (
            mode != "online" and not wandb_has_credentials()
        )
    os.environ.setdefault("WANDB_SILENT", "true")
    if offline:
        os.environ["WANDB_MODE"] = "offline"
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        job_type=job_type,
        tags=list(tags or []),
        offline=offline,
        log_model=log_model,
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
