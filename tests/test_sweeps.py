"""Hydra multirun through the command line, as users type it (tiny domain, a few steps per job)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

TINY = [
    "domain=tiny",
    "logger=csv",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "data.num_train=4",
    "data.num_val=2",
    "aug.num_views=2",
    "callbacks.image_grid.num_images=2",
    "eval_after_fit=false",
]


def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "src.train",
            *args,
            f"paths.log_dir={tmp_path}/outputs",
            f"hydra.sweep.dir={tmp_path}/multirun",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_two_job_multirun(tmp_path):
    res = run_cli(["-m", "loss=clip_nce,global", *TINY], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted((tmp_path / "multirun").glob("[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert (job / "csv" / "metrics.csv").is_file()
        assert not (job / "error.json").exists()


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # job 0 has an empty prompt (a user error), job 1 is fine: the sweep finishes and job 0 records its error
    res = run_cli(["-m", "prompt=custom", "prompt.target=' ',red eyes", *TINY], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "empty" in (tmp_path / "multirun" / "0" / "error.json").read_text()
    assert (tmp_path / "multirun" / "1" / "checkpoints" / "last.ckpt").is_file()


def test_single_run_user_error_is_one_clear_line(tmp_path):
    res = run_cli(["prompt=custom", "prompt.target=' '", *TINY], tmp_path)
    assert res.returncode == 2
    assert "target prompt is empty" in res.stderr and "Traceback" not in res.stderr
