"""A 2-process CPU (gloo) DDP run equals one process on the same global batch."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from src.builders import build


def fit_mapper(cfg) -> dict[str, torch.Tensor]:
    pl.seed_everything(cfg.seed, workers=True)
    module, dm = build(cfg)
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    return {k: v.detach().clone() for k, v in module.mapper.state_dict().items()}


@pytest.mark.parametrize("prompt", ["one", "multi"])
def test_two_process_gloo_matches_single_process(fast_cfg, prompt):
    # 4 latents, global batch 4: every step sees the same 4 samples whatever the sampler's order, and with
    # no random augmentation the averaged DDP gradient equals the single-process one.
    # SGD keeps the update linear in the gradient (Adam would amplify float noise in near-zero gradients).
    common = [
        "aug=none",
        "loss=clip_nce",
        "data.num_train=4",
        "trainer.max_steps=3",
        "optimizer._target_=torch.optim.SGD",
        "~optimizer.betas",
        "optimizer.lr=50.0",
    ]
    if prompt == "multi":  # each sample its own prompt: the same on the DDP ranks as in one process
        common += ["prompt=multi", "prompt.targets=[elf ears,green lipstick,blue eyes]"]
    single = fit_mapper(fast_cfg(*common, "data.batch_size=4"))
    ddp = fit_mapper(
        fast_cfg(
            *common,
            "trainer=ddp_cpu",
            "trainer.max_steps=3",
            "trainer.val_check_interval=3",
            "data.batch_size=2",
        )
    )
    init = fit_mapper(fast_cfg(*common, "data.batch_size=4", "trainer.max_steps=0"))
    moved = max((single[k] - init[k]).abs().max().item() for k in single)
    assert moved > 1e-4, "the single-process run did not train: the comparison would be vacuous"
    worst = max(
        ((single[k] - ddp[k]).abs().max() / (single[k] - init[k]).abs().max().clamp_min(1e-12)).item()
        for k in single
    )
    print(f"DDP vs single: worst difference relative to the update: {worst:.2e}")
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=1e-5, rtol=1e-4), (
            f"{k} differs between DDP and 1 process"
        )


@pytest.mark.parametrize("trainer", ["ddp", "ddp_cpu"])
def test_ddp_configs_compose(fast_cfg, trainer):
    cfg = fast_cfg(f"trainer={trainer}")
    assert cfg.trainer.devices >= 2 and "ddp" in cfg.trainer.strategy
