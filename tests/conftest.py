"""Shared fixtures: the train config composed once (Hydra compose API) and shrunk for speed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny models gain nothing from intra-op threads, and two OpenMP teams on 2 shared cores spin-wait badly.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# Overrides that make any training config a seconds-long CPU job.
FAST = [
    "domain=tiny",
    "logger=csv",
    "trainer=cpu",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "data.num_train=8",
    "data.num_val=2",
    "data.num_test=2",
    "data.batch_size=2",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.image_grid.every_n_steps=2",
    "callbacks.image_grid.num_images=2",
    "eval_after_fit=false",
]


def compose_train(
    overrides: list[str], tmp_path: Path | None = None, config_name: str = "train"
) -> DictConfig:
    """Compose conf/<config_name>.yaml with overrides, filling the hydra-only paths so it can run outside
    @hydra.main."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    if tmp_path is not None:
        OmegaConf.set_readonly(cfg.hydra, False)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.paths.log_dir = str(tmp_path)
            cfg.hydra.runtime.output_dir = str(tmp_path)
    return cfg


@pytest.fixture
def fast_cfg(tmp_path: Path):
    """A factory: fast_cfg("loss=global", ...) -> a composed, shrunk config writing under tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_train(FAST + list(overrides), tmp_path)

    return make
