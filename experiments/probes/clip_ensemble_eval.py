"""Probe: a toyfaces run's test edits as each toy CLIP reads them (docs/guide.md, the CLIP ensemble): the judge's
faithful rate and collateral once, then ``clip_fooled_rate`` by the shipped toy CLIP and by the second CLIP of
experiments/probes/clip_ensemble_train.py, whichever CLIPs guided the run. Evaluation only, one thread.

Usage: python experiments/probes/clip_ensemble_eval.py <run>/checkpoints/last.ckpt [--second PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json

import torch
from hydra.utils import instantiate

KEYS = (
    "faithful_rate",
    "collateral_psnr",
    "psnr_to_ideal",
    "region_fidelity_left",
    "region_fidelity_right",
    "nearest_target_rate",
    "edit_accuracy",
)


def second_clip(path: str, arch: str = "resnet"):
    """The second toy CLIP (clip_ensemble_train.py's architecture and weights) as a FrozenCLIP."""
    from clip_ensemble_train import model_config

    from src.models.factory import create_clip

    return create_clip(f"toyfaces-clip-{arch}", model_config=model_config(arch), checkpoint=path)


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt")
    p.add_argument("--second", default="outputs/clip_ensemble/clip_resnet.pt")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    from src.eval import load_run
    from src.evaluation.generic import edit_test_set
    from src.evaluation.guide import fooling_metrics
    from src.toyworld import assets
    from src.toyworld.attributes import SCHEMA

    module, cfg, dm = load_run(a.ckpt)
    module.eval()
    dm.setup("test")
    latents = dm.splits["test"]
    x, x_hat = edit_test_set(module, latents, 64, None)
    evaluator = instantiate(cfg.domain.evaluator)
    metrics = evaluator(x, x_hat, cfg.prompt.name)
    out = {k: metrics.get(k) for k in KEYS if k in metrics}
    attribute, value = evaluator.last["target"]
    label = SCHEMA[attribute].index(value)
    for name, clip in (("shipped", assets.load_clip()), ("second", second_clip(a.second))):
        reads = fooling_metrics(clip, x, x_hat, evaluator.last["rule"], label, attribute)
        out.update({f"{k}[{name}]": v for k, v in reads.items()})
    out.update(
        n=int(x.shape[0]), ckpt=a.ckpt, guide=len(module.extra_clips) + 1, clip_weights=module.clip_weights
    )
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
