"""Evaluate a run checkpoint: ``python -m src.eval ckpt=outputs/train/<time>/checkpoints/last.ckpt``.

Rebuilds the run's models from the config stored in the checkpoint, edits the domain's test latents and prints
the metrics as JSON (saved with a source | edited grid in the eval run dir). ``prompts='[text,...]'`` evaluates
other texts too: any text with a multi-prompt checkpoint (prompt=multi), judged on toyfaces by the values the
text names (composed prompts judge each named value; src.toyworld.judge.composed). Without ``prompts`` it
judges what the run's final evaluation judged (its ``eval_prompts``), so a re-judged run matches its training.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from src.builders import build
from src.evaluation.generic import evaluate
from src.evaluation.toyfaces import ceiling_table
from src.models.weights import load_checkpoint
from src.utils.errors import run_task
from src.utils.loggers import quiet_library_logs

log = logging.getLogger("cfclip")


# evaluators that moved to src.evaluation: run checkpoints written before the move name the old paths
MOVED_TARGETS = {
    "src.toyworld.metrics.ToyfacesEvaluator": "src.evaluation.toyfaces.ToyfacesEvaluator",
    "src.real_metrics.RealEvaluator": "src.evaluation.real.RealEvaluator",
}


def _renamed(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: MOVED_TARGETS.get(v, v) if k == "_target_" else _renamed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(v) for v in node]
    return node


def load_run(ckpt_path: str) -> tuple[Any, DictConfig, Any]:
    """(module with the trained mapper, the run's config, its datamodule) from a run checkpoint."""
    ckpt = load_checkpoint(ckpt_path, what="run checkpoint")
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hparams or "domain" not in hparams:
        raise ValueError(f"{ckpt_path} is not a cfclip run checkpoint (no stored run config)")
    run_cfg = OmegaConf.create(_renamed(dict(hparams)))
    if isinstance(
        ckpt.get("g_ema"), dict
    ):  # a converted authors' mapper holds its generator: read it from here
        run_cfg.domain.generator.checkpoint = str(ckpt_path)
    module, datamodule = build(run_cfg)
    module.load_state_dict(ckpt["state_dict"])
    return module, run_cfg, datamodule


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    module, run_cfg, dm = load_run(cfg.ckpt)
    if cfg.get("num_test") is not None:
        dm.num_test = int(cfg.num_test)
    dm.setup("test")
    latents = dm.splits["test"]
    device = "cuda" if cfg.get("device") == "cuda" and torch.cuda.is_available() else "cpu"
    module.to(device)
    # default: the texts the run's own final evaluation judged (experiment=toyfaces_multi's eval_prompts)
    prompts = cfg.get("prompts")
    if prompts is None:
        prompts = run_cfg.get("eval_prompts")
    metrics = evaluate(
        module, run_cfg, latents, cfg.paths.output_dir, cfg.grid_images, cfg.batch_size, prompts=prompts
    )
    metrics["ckpt"] = str(cfg.ckpt)
    print(json.dumps(metrics, indent=2))
    table = ceiling_table(metrics)
    if table:
        print(table)
    if metrics.get("grid"):
        print(f"grid (source | edit | ideal): {metrics['grid']}")
    for name, m in (metrics.get("prompts") or {}).items():
        print(f"grid of {name} (source | edit | ideal): {m.get('grid')}")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    quiet_library_logs()
    run_task(run_eval, cfg, output_dir=cfg.paths.output_dir)


if __name__ == "__main__":
    main()
