"""Determinism on CPU: the same seed gives bit-identical losses for 20 steps; the seed and Lightning's
deterministic flag come from the config (``seed``, ``trainer.deterministic``)."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from src.train import train
from tests.conftest import FAST, compose_train

# random augmentation views and a shuffled epoch of 8 latents: every random stream of a step is exercised
RUN = [
    *FAST,
    "trainer.max_steps=20",
    "aug=perspective",
    "aug.num_views=2",
    "data.num_train=8",
    "trainer.val_check_interval=10",
    "callbacks.model_checkpoint.every_n_train_steps=10",
    "callbacks.image_grid.every_n_steps=0",
]


def losses(run_dir) -> dict[int, dict[str, float]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return {
            int(r["step"]): {k: float(v) for k, v in r.items() if k.startswith("train/loss") and v}
            for r in csv.DictReader(fh)
            if r.get("train/loss")
        }


@pytest.fixture
def restore_determinism_flag():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_same_seed_same_losses_for_20_steps(tmp_path, restore_determinism_flag):
    overrides = [*RUN, "seed=123", "trainer.deterministic=true"]
    train(compose_train(overrides, tmp_path / "a"))
    assert os.environ.get("PL_GLOBAL_SEED") == "123", "seed_everything must get the config's seed"
    assert torch.are_deterministic_algorithms_enabled(), "trainer.deterministic=true must reach torch"
    torch.manual_seed(999)  # whatever ran before must not matter: the run seeds everything itself
    train(compose_train(overrides, tmp_path / "b"))
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == list(range(20))
    assert a == b, "same seed, different losses"
    wa = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_another_seed_gives_other_losses(tmp_path):
    train(compose_train([*RUN, "trainer.max_steps=3", "seed=1"], tmp_path / "a"))
    train(compose_train([*RUN, "trainer.max_steps=3", "seed=2"], tmp_path / "b"))
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert a[0]["train/loss"] != b[0]["train/loss"]
