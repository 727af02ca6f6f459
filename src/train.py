"""Train a CF-CLIP mapper: ``python -m src.train loss=clip_nce aug=perspective prompt=elf_ears``.

Compose config -> build generator, CLIP, mapper, loss, augmentation, data -> Lightning fit -> evaluate.
Sweeps: ``python -m src.train -m loss=clip_nce,directional,global aug=perspective,affine,crop,none``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.evaluation.toyfaces import ceiling_table
from src.models.weights import load_checkpoint
from src.utils.dicts import flatten
from src.utils.errors import claim_output_dir, run_task
from src.utils.guards import SignalCheckpoint, find_callback
from src.utils.loggers import finish_wandb, quiet_library_logs, scrub_secrets

if TYPE_CHECKING:
    import pytorch_lightning as pl

# torch, Lightning and the model code are imported inside the functions: a typo in an override, --help or an
# unwritable run dir is reported in a fraction of a second instead of after importing them.

log = logging.getLogger("cfclip")


def auto_tags(cfg: DictConfig) -> list[str]:
    """loss / aug / tem / prompt / domain tags so W&B filters runs by ablation axis."""
    tags = list(cfg.get("tags") or [])
    try:
        choices = HydraConfig.get().runtime.choices
        tags += [
            f"loss:{choices.get('loss')}",
            f"aug:{choices.get('aug')}",
            f"domain:{choices.get('domain')}",
        ]
    except ValueError:
        pass
    tags += [f"tem:{'on' if cfg.model.tem else 'off'}", f"prompt:{cfg.prompt.name}"]
    return tags


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``last`` -> this run dir's checkpoints/last.ckpt; else the path as given (checked to exist)."""
    if ckpt_path in (None, ""):
        return None
    path = (
        os.path.join(output_dir, "checkpoints", "last.ckpt")
        if ckpt_path == "last"
        else os.path.expanduser(str(ckpt_path))
    )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no checkpoint at {path}. Give the path of a run's "
            "checkpoints/last.ckpt (or another .ckpt) to resume from."
        )
    return path


# config sections that decide the shape of the trainable weights (a resume across them cannot work)
_MODEL_SECTIONS = ("model", "domain.generator", "domain.clip")


def _select(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def config_diff(old: dict | None, new: dict, sections: tuple[str, ...] = _MODEL_SECTIONS) -> list[str]:
    """``key: old -> new`` for the leaves of ``sections`` that differ between two plain configs."""
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{key}.{k}")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")

    for section in sections:
        walk(_select(old or {}, section), _select(new, section), section)
    return out


def check_resume_checkpoint(path: str, cfg: DictConfig, module: Any) -> int:
    """Before Lightning restores ``path``: it must load safely, be a run checkpoint, and fit this model config.

    Returns the checkpoint's global step."""
    from src.builders import plain_config

    ckpt = load_checkpoint(path, what=f"ckpt_path={path}")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) or "loops" not in ckpt:
        raise ValueError(
            f"ckpt_path={path} is not a training checkpoint written by `python -m src.train` (it has no "
            "state_dict and loop state). Give a run's checkpoints/last.ckpt."
        )
    try:
        module.load_state_dict(ckpt["state_dict"])
    except ValueError as err:
        diff = config_diff(ckpt.get("hyper_parameters"), plain_config(cfg))
        hint = f" The checkpoint's run had: {'; '.join(diff[:6])} (old -> this run)." if diff else ""
        raise ValueError(f"ckpt_path={path}: {err}{hint}") from None
    return int(ckpt.get("global_step", 0))


def _csv_value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def keep_csv_history(loggers: list, resume_step: int) -> None:
    """Resuming in the same run dir: keep the rows of metrics.csv logged before the checkpoint.

    Lightning's CSV writer deletes an existing metrics.csv when it starts; the rows before ``resume_step`` are
    handed to the new writer instead, so the file keeps the whole loss curve (later rows are logged again).
    """
    from pytorch_lightning.loggers import CSVLogger

    for lg in loggers:
        if not isinstance(lg, CSVLogger):
            continue
        path = os.path.join(lg.log_dir, "metrics.csv")
        if not os.path.isfile(path):
            continue
        with open(path, newline="") as fh:
            rows = [
                {k: _csv_value(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(fh)
            ]
        old = [r for r in rows if isinstance(r.get("step"), int) and r["step"] < resume_step]
        lg.experiment.metrics[:0] = old  # creating the writer removed the file; the rows are written again


def interrupted(trainer: pl.Trainer, callbacks: list) -> SystemExit:
    """SIGTERM / SIGINT stopped the fit: one message, exit status 128 + signal."""
    sig = find_callback(callbacks, SignalCheckpoint)
    code = sig.exit_code if sig is not None else 128 + int(signal.SIGTERM)
    name = signal.Signals(code - 128).name
    saved = getattr(sig, "saved_path", None)
    if trainer.is_global_zero:
        where = (
            f"saved {saved}; resume with ckpt_path={saved}"
            if saved
            else "no checkpoint was saved (callbacks.signal_checkpoint is off)"
        )
        print(f"cfclip: {name}: stopped after step {trainer.global_step}; {where}", file=sys.stderr)
    return SystemExit(code)


# environment variables whose values must never reach a logged config, whatever key they end up under
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def hide_env_secrets(obj: Any, secrets: set[str] | None = None) -> Any:
    """Replace every value that equals (or contains) a secret-looking environment variable (WANDB_API_KEY, ...)
    by '***': ``scrub_secrets`` catches secret-looking keys, this catches e.g. ``notes: ${oc.env:WANDB_API_KEY}``."""
    if secrets is None:
        secrets = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 6}
    if isinstance(obj, dict):
        return {k: hide_env_secrets(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(hide_env_secrets(v, secrets) for v in obj)
    if isinstance(obj, str) and any(s in obj for s in secrets):
        return "***"
    return obj


def final_eval(cfg: DictConfig, module: Any, datamodule: Any, loggers: list) -> dict[str, float]:
    """Run the same evaluation as ``python -m src.eval`` on the test latents and log it as run summary."""
    from src.evaluation.generic import evaluate

    datamodule.setup("test")
    out_dir = os.path.join(cfg.paths.output_dir, "eval")
    result = evaluate(module, cfg, datamodule.splits["test"], out_dir, prompts=cfg.get("eval_prompts"))
    flat = {f"eval/{k}": float(v) for k, v in flatten(result).items() if isinstance(v, int | float)}
    acc, pres = flat.get("eval/edit_accuracy"), flat.get("eval/preservation")
    if acc is not None and pres is not None:  # one number for sweeps: accuracy, penalised below the bar
        obj = cfg.get("objective") or {}
        shortfall = max(0.0, float(obj.get("min_preservation", 0.9)) - pres)
        flat["eval/edit_accuracy_at_preservation"] = acc - float(obj.get("penalty", 10.0)) * shortfall
    for lg in loggers:
        lg.log_metrics(flat)
        if hasattr(lg, "experiment") and hasattr(lg.experiment, "summary"):
            lg.experiment.summary.update(flat)
    log.info(
        "evaluation (%d test latents): %s",
        result.get("n", 0),
        json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, default=str),
    )

    if ceiling_table(result):
        log.info("%s", ceiling_table(result))
    return flat


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the mapper; returns the final metrics (floats) of the run."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from src.builders import build, instantiate_dict, plain_config

    start = time.time()
    output_dir = cfg.paths.output_dir
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    claim_output_dir(output_dir, resuming=ckpt_path is not None)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    module, datamodule = build(cfg)
    resume_step = check_resume_checkpoint(ckpt_path, cfg, module) if ckpt_path is not None else 0
    loggers = instantiate_dict(cfg.get("logger"))
    if ckpt_path is not None:
        keep_csv_history(loggers, resume_step)
    callbacks = instantiate_dict(cfg.get("callbacks"))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    for lg in loggers:
        lg.log_hyperparams(hide_env_secrets(scrub_secrets(plain_config(cfg))))
        if hasattr(lg, "experiment") and hasattr(lg.experiment, "tags"):
            try:
                lg.experiment.tags = tuple(dict.fromkeys([*(lg.experiment.tags or ()), *auto_tags(cfg)]))
            except Exception:  # offline runs may refuse tag edits; tags are also in the config
                pass
    n_train = sum(p.numel() for p in module.mapper.parameters())
    log.info(
        "mapper: %.2fM trainable parameters; generator %dpx, %d style layers; CLIP dim %d",
        n_train / 1e6,
        module.generator.size,
        module.generator.n_latent,
        module.clip.embed_dim,
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        raise interrupted(trainer, callbacks) from None
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1
    }
    metrics["time_s"] = time.time() - start
    if cfg.get("eval_after_fit") and trainer.is_global_zero:
        metrics.update(final_eval(cfg, module, datamodule, loggers))
    if trainer.is_global_zero:
        ckpt_cb = trainer.checkpoint_callback
        grid = next((c.last_path for c in callbacks if hasattr(c, "last_path")), None)
        log.info(
            "done in %.1fs; metrics: %s",
            metrics["time_s"],
            {k: round(v, 4) for k, v in sorted(metrics.items()) if "/prompts/" not in k},  # per prompt: above
        )
        if ckpt_cb is not None and getattr(ckpt_cb, "last_model_path", ""):
            log.info("checkpoint: %s", ckpt_cb.last_model_path)
        if grid:
            log.info("image grid (top: source, bottom: edited): %s", grid)
        eval_dir = os.path.join(cfg.paths.output_dir, "eval")
        eval_grid = os.path.join(eval_dir, "eval_grid.png")
        if cfg.get("eval_after_fit") and os.path.isfile(eval_grid):
            log.info("evaluation grid (source | edit | ideal, enlarged): %s", eval_grid)
        elif cfg.get("eval_after_fit") and os.path.isdir(eval_dir):
            log.info(
                "evaluation grids (source | edit | ideal, one per prompt): %s/<prompt>/eval_grid.png",
                eval_dir,
            )

    finish_wandb()  # close this run's W&B run now (sweeps and notebooks call train() repeatedly)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_library_logs()
    metrics = run_task(train, cfg, output_dir=cfg.paths.output_dir)
    if not metrics:
        return None
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
