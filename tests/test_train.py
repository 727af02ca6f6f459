"""Few-step training runs on the tiny domain: every loss x aug x TEM combination, checkpoints, frozen nets."""

from __future__ import annotations

import csv
import glob
import math
import os

import pytest
import torch

from src.builders import build
from src.train import train

LOSSES = ["clip_nce", "directional", "global"]
AUGS = ["perspective", "affine", "crop", "none"]


@pytest.mark.parametrize("tem", [True, False])
@pytest.mark.parametrize("aug", AUGS)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_combination_trains(fast_cfg, loss, aug, tem, tmp_path):
    cfg = fast_cfg(f"loss={loss}", f"aug={aug}", f"model.tem={tem}", "aug.num_views=2")
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    terms = {k[len("train/loss_") :] for k in metrics if k.startswith("train/loss_")}
    configured = {**cfg.loss.terms, **cfg.domain.regularizers}
    assert terms == {
        k for k, v in configured.items() if v is not None
    }  # a null term (target_clip here) is off
    assert os.path.isfile(tmp_path / "checkpoints" / "last.ckpt")


def test_csv_log_has_every_term_and_grid_is_written(fast_cfg, tmp_path):
    train(fast_cfg("loss=clip_nce", "aug=perspective", "aug.num_views=2"))
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    columns = set(rows[0])
    for name in (
        "train/loss",
        "train/loss_clip_nce",
        "train/loss_latent_l2",
        "train/loss_identity",
        "val/loss",
        "train/grad_norm",
    ):
        assert name in columns, f"{name} missing from the CSV log"
    assert glob.glob(str(tmp_path / "grids" / "step_*.png"))


def test_frozen_networks_are_bit_identical_and_only_the_mapper_gets_gradients(fast_cfg):
    cfg = fast_cfg("loss=clip_nce", "aug=perspective", "aug.num_views=2")
    module, dm = build(cfg)
    frozen_before = {k: v.clone() for k, v in module.state_dict().items() if not k.startswith("mapper.")}
    mapper_before = {k: v.clone() for k, v in module.mapper.state_dict().items()}
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.train()
    total, _ = module.loss(module.compute_context(batch["w"]))
    total.backward()
    for name, p in module.named_parameters():
        if name.startswith("mapper."):
            assert p.requires_grad
        else:
            assert not p.requires_grad and p.grad is None, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.mapper.parameters())
    assert not module.generator.training and not module.clip.training  # train() keeps frozen nets in eval
    # a real training run leaves every frozen tensor bit-identical and changes the mapper
    from hydra.utils import instantiate

    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    for k, v in module.state_dict().items():
        if k in frozen_before:
            assert torch.equal(v, frozen_before[k]), f"frozen tensor {k} changed"
    assert any(not torch.equal(v, mapper_before[k]) for k, v in module.mapper.state_dict().items())


def test_checkpoint_round_trip_weights_only(fast_cfg, tmp_path):
    cfg = fast_cfg("loss=directional", "aug=none")
    train(cfg)
    path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith("mapper.") for k in ckpt["state_dict"]), (
        "frozen networks leaked into the checkpoint"
    )
    assert isinstance(ckpt["hyper_parameters"], dict) and ckpt["hyper_parameters"]["loss"]["terms"]
    fresh, dm = build(cfg)
    fresh.load_state_dict(ckpt["state_dict"])
    trained_mapper = {k[len("mapper.") :]: v for k, v in ckpt["state_dict"].items()}
    for k, v in fresh.mapper.state_dict().items():
        assert torch.equal(v, trained_mapper[k])
    dm.setup("fit")
    w = dm.splits["val"][:2, None].expand(-1, fresh.generator.n_latent, -1)
    x, x_hat = fresh.render_pair(w)
    assert x.shape == x_hat.shape and not torch.equal(x, x_hat)


def test_incompatible_checkpoint_is_a_clear_error(fast_cfg, tmp_path):
    cfg = fast_cfg("model.tem=false", "aug=none")
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    module, _ = build(fast_cfg("model.tem=true", "aug=none"))
    with pytest.raises(ValueError, match="does not fit this model config"):
        module.load_state_dict(ckpt["state_dict"])


def test_negative_prompts_reach_the_loss_and_stay_out_of_checkpoints(fast_cfg, tmp_path):
    cfg = fast_cfg("prompt=custom", "prompt.target=beard", "prompt.negatives=['moustache','glasses']")
    module, _ = build(cfg)
    text = module.text_features
    assert text.negative_templates.shape == (2 * len(text.target_templates), text.target.shape[-1])
    assert torch.allclose(text.negative_templates.norm(dim=-1), torch.ones(()))  # normalised like the rest
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(k.startswith("mapper.") for k in ckpt["state_dict"])
    plain, _ = build(fast_cfg("prompt=custom", "prompt.target=beard"))
    assert plain.text_features.negative_templates.shape[0] == 0
