"""Reading Hydra multirun job dirs for ``src.report``: settings, prompt, seed, status and eval metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import yaml

from src.utils.dicts import flatten

# config keys that never define a configuration (book-keeping, or the prompt/seed axes)
IGNORED = ("hydra", "paths", "logger", "callbacks", "experiment", "hparams_search", "debug", "seed", "prompt",
           "tags", "task_name", "ckpt_path", "eval_after_fit", "optimized_metric", "objective")  # fmt: skip
# settings that name a prompt's judge target rather than a configuration (prompt=custom's +domain.edits.<name>)
IGNORED_PREFIXES = ("domain.edits.",)
# the full method of the paper's ablation axes
REFERENCE = {"loss": "clip_nce", "aug": "perspective", "model": "cfclip", "identity": "on"}
# settings shown as a term switched on / off under a short name (weight 0 or no such term: off)
SWITCHES = {"domain.regularizers.identity.weight": "identity"}


def _nonzero(value: str) -> bool:
    try:
        return float(value) != 0
    except ValueError:
        return False


def _load(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh) if path.endswith(".json") else yaml.safe_load(fh)


def numeric_metrics(d: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of an eval.json as {"realism/valid_rate": ...} (nulls, strings and ``n`` left out)."""
    return {
        k: float(v)
        for k, v in flatten(d).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k.rsplit("/", 1)[-1] != "n"
    }


def lookup(cfg: Any, dotted: str) -> str:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return "-"
        cfg = cfg[part]
    return str(cfg)


def read_job(job_dir: str) -> dict[str, Any]:
    """One job: settings, prompt, seed, status (ok | failed | incomplete), metrics, error."""
    hydra_cfg = (_load(os.path.join(job_dir, ".hydra", "hydra.yaml")) or {}).get("hydra", {})
    cfg = _load(os.path.join(job_dir, ".hydra", "config.yaml")) or {}
    settings = {
        k: str(v) for k, v in (hydra_cfg.get("runtime", {}).get("choices") or {}).items() if "/" not in k
    }
    for item in _load(os.path.join(job_dir, ".hydra", "overrides.yaml")) or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        settings[key] = value
    job: dict[str, Any] = {
        "job": job_dir,
        # prompt=custom names its text by prompt.name; a listed prompt's name is its config's
        "prompt": (cfg.get("prompt") or {}).get("name") or settings.get("prompt"),
        "seed": settings.get("seed", cfg.get("seed")),
        "settings": {
            k: v
            for k, v in settings.items()
            if k.split(".")[0] not in IGNORED and not k.startswith(IGNORED_PREFIXES)
        },
        "cfg": cfg,
        "status": "ok",
        "metrics": {},
        "error": None,
    }
    result, err = (
        _load(os.path.join(job_dir, "eval", "eval.json")),
        _load(os.path.join(job_dir, "error.json")),
    )
    if result is not None:
        job["metrics"] = numeric_metrics(result)
        job["prompt"] = job["prompt"] or result.get("prompt")
    elif err is not None:
        first = (str(err.get("message", "")).strip().splitlines() or [""])[0]
        job["status"], job["error"] = "failed", f"{err.get('error', 'Error')}: {first}"
    else:
        job["status"] = "incomplete"
        job["error"] = "no eval/eval.json (still running, killed, or eval_after_fit=false)"
    return job


def find_jobs(roots: Iterable[str]) -> list[str]:
    jobs = []
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            if os.path.isfile(os.path.join(dirpath, ".hydra", "overrides.yaml")):
                jobs.append(dirpath)
                dirnames[:] = []
            dirnames.sort(key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d))
    return jobs


def gather(roots: Iterable[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """All jobs under ``roots`` (full method first) and the settings that vary between them."""
    jobs = [read_job(j) for j in find_jobs(roots)]
    keys = sorted({k for j in jobs for k in j["settings"]})
    for j in jobs:  # a key overridden in some jobs only: the others ran with their config's value
        for k in keys:
            j["settings"].setdefault(k, lookup(j["cfg"], k))
        for key, name in SWITCHES.items():
            if key in j["settings"]:
                j["settings"][name] = "on" if _nonzero(j["settings"].pop(key)) else "off"
    keys = sorted({SWITCHES.get(k, k) for k in keys})
    varying = [k for k in keys if len({j["settings"][k] for j in jobs}) > 1]
    for j in jobs:
        j["config"] = " ".join(f"{k}={j['settings'][k]}" for k in varying) or "all"
    is_reference = lambda j: all(j["settings"].get(a, v) == v for a, v in REFERENCE.items())  # noqa: E731
    return sorted(jobs, key=lambda j: not is_reference(j)), varying
