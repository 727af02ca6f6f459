"""The bad-input matrix: every wrong input ends the run with a non-zero status and one actionable line.

Most rows go through ``run_task(train, cfg)`` in process: the exact path of ``python -m src.train`` below Hydra
(status 2, ``cfclip: error: ...`` on stderr, no traceback). Rows that only Hydra or the command line can show (an
unknown key or group option, an unwritable run dir) run the command itself; composition fails before torch is
imported, so they take about a second each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.models.factory import create_generator
from src.models.weights import WeightsError
from src.train import train
from src.utils.errors import OutputDirError, claim_output_dir, run_task
from tests.conftest import ROOT

# the tiny domain's generator (conf/domain/tiny.yaml): 32 px, style dim 64, 8 style layers
TINY_G = {"size": 32, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 64}


def fails_with(cfg, capsys, *fragments: str) -> str:
    """Run like the CLI does below Hydra; assert status 2 and a one-line message holding every fragment."""
    with pytest.raises(SystemExit) as exc:
        run_task(train, cfg, output_dir=cfg.paths.output_dir)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cfclip: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in the message:\n{err}"
    return err


def cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args, "domain=tiny", "logger=csv"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---- weight files ------------------------------------------------------------------------------------------
def tiny_generator_file(path: Path, **changes) -> Path:
    g = create_generator(**{**TINY_G, **changes})
    torch.save({"g_ema": g.state_dict()}, path)
    return path


def test_missing_weight_file(fast_cfg, tmp_path, capsys):
    missing = tmp_path / "weights" / "my_generator.pt"
    with pytest.raises(WeightsError, match="file not found: .*my_generator.pt. Place the file there"):
        create_generator(**TINY_G, checkpoint=str(missing))
    fails_with(
        fast_cfg(f"domain.generator.checkpoint={missing}"),
        capsys,
        f"StyleGAN2 generator: file not found: {missing}",
        "Place the file there or point the config at it",
    )


def test_truncated_weight_file(fast_cfg, tmp_path, capsys):
    whole = tiny_generator_file(tmp_path / "g.pt").read_bytes()
    cut = tmp_path / "truncated.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    fails_with(
        fast_cfg(f"domain.generator.checkpoint={cut}"),
        capsys,
        f"StyleGAN2 generator: cannot read {cut}",
        "truncated, corrupt",
    )
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(WeightsError, match=f"StyleGAN2 generator: .*{garbage}"):
        create_generator(**TINY_G, checkpoint=str(garbage))


@pytest.mark.parametrize(("change", "held"), [({"size": 64}, "size=64"), ({"style_dim": 32}, "style_dim=32")])
def test_generator_of_another_resolution_or_style_dim(tmp_path, change, held):
    other = tiny_generator_file(tmp_path / "other.pt", **change)
    with pytest.raises(WeightsError) as exc:
        create_generator(**TINY_G, checkpoint=str(other))
    msg = str(exc.value)
    assert "does not fit the configured generator (size=32, style_dim=64" in msg
    assert held in msg and "Set domain.generator to the checkpoint's settings" in msg


# ---- latents and prompts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("latents", "expected"),
    [
        (
            torch.randn(4, 5, 64),
            ["latents of shape (4, 5, 64) do not fit the generator", "expected [N, 8, 64]"],
        ),
        (torch.randn(4, 8, 512), ["(4, 8, 512)", "inverted for another generator"]),
        (torch.randint(0, 5, (4, 64)), ["latents have dtype torch.int64, expected a floating-point tensor"]),
        (torch.full((4, 64), float("nan")), ["latents contain NaN or Inf values"]),
    ],
    ids=["layers", "style_dim", "dtype", "nan"],
)
def test_latent_file_of_wrong_shape_or_dtype(fast_cfg, tmp_path, capsys, latents, expected):
    path = tmp_path / "train_faces.pt"
    torch.save(latents, path)
    fails_with(fast_cfg("data.source=file", f"data.train_path={path}"), capsys, str(path), *expected)


@pytest.mark.parametrize("text", ["''", "'   '"])
def test_empty_prompt(fast_cfg, capsys, text):
    fails_with(
        fast_cfg("prompt=custom", f"prompt.target={text}"),
        capsys,
        "the target prompt is empty",
        "prompt.target=",
    )


def test_prompt_longer_than_clip_context_is_an_error(fast_cfg, capsys):
    # documented choice: an error naming the length and the limit, never a silent truncation
    long = " ".join(["purple"] * 90)
    fails_with(
        fast_cfg("prompt=custom", f"prompt.target='{long}'"),
        capsys,
        "tokens long (with start/end tokens); the limit is 77. Shorten the prompt.",
    )


def test_bad_negative_prompts_are_errors(fast_cfg, capsys):
    base = ("prompt=custom", "prompt.target=beard")
    fails_with(fast_cfg(*base, "prompt.negatives=['  ']"), capsys, "the negative prompt is empty")
    long = " ".join(["green"] * 90)
    fails_with(
        fast_cfg(*base, f"prompt.negatives=['{long}']"), capsys, "the limit is 77. Shorten the prompt."
    )
    fails_with(fast_cfg(*base, "prompt.negatives=green"), capsys, "must be a list of texts")


# ---- configuration (Hydra's own messages) ------------------------------------------------------------------
def test_unknown_config_key_and_group_option(tmp_path):
    res = cli(["trainer.max_stepz=3"], tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert (
        "Could not override 'trainer.max_stepz'" in res.stderr
        and "Key 'max_stepz' is not in struct" in res.stderr
    )
    res = cli(["loss=clip_ncee"], tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "Could not find 'loss/clip_ncee'" in res.stderr and "Available options in 'loss'" in res.stderr
    assert "clip_nce" in res.stderr


# ---- the run directory ---------------------------------------------------------------------------------------
def test_unwritable_output_dir_from_the_command_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    res = cli([f"paths.log_dir={blocker}"], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith(f"cfclip: error: cannot create the run directory {blocker}/train/")
    assert f"{blocker} is a file, not a folder" in res.stderr and "paths.log_dir=<folder>" in res.stderr
    res = cli(["-m", f"hydra.sweep.dir={blocker}/sweep", "loss=clip_nce,global"], tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"cannot create the run directory {blocker}/sweep: {blocker} is a file" in res.stderr


def test_unwritable_output_dir_in_process(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    with pytest.raises(
        OutputDirError, match="a_file is a file, not a folder. Point the runs at a writable folder"
    ):
        claim_output_dir(str(blocker / "run"))
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode)
    )
    with pytest.raises(OutputDirError, match="locked is not writable. Point the runs at a writable folder"):
        claim_output_dir(str(locked / "run"))


# ---- resuming from a checkpoint that does not fit ----------------------------------------------------------
@pytest.fixture(scope="module")
def no_tem_run(tmp_path_factory) -> Path:
    from tests.conftest import FAST, compose_train

    out = tmp_path_factory.mktemp("no_tem_run")
    train(compose_train([*FAST, "model.tem=false", "aug=none"], out))
    return out / "checkpoints" / "last.ckpt"


def test_resume_from_an_incompatible_run_checkpoint(fast_cfg, no_tem_run, capsys):
    fails_with(
        fast_cfg("model.tem=true", "aug=none", f"ckpt_path={no_tem_run}"),
        capsys,
        f"ckpt_path={no_tem_run}: the run checkpoint does not fit this model config",
        "Use the same model/domain settings as the run that wrote it",
        "The checkpoint's run had: model.mapper.use_tem: False -> True; model.tem: False -> True",
    )


def test_resume_from_a_bad_checkpoint_file(fast_cfg, no_tem_run, tmp_path, capsys):
    cut = tmp_path / "cut.ckpt"
    data = no_tem_run.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    fails_with(
        fast_cfg("model.tem=false", f"ckpt_path={cut}"), capsys, f"cannot read {cut}", "truncated, corrupt"
    )
    weights_only = tmp_path / "mapper.pt"
    torch.save({"w": torch.zeros(2)}, weights_only)
    fails_with(
        fast_cfg("model.tem=false", f"ckpt_path={weights_only}"),
        capsys,
        "is not a training checkpoint written by `python -m src.train`",
        "Give a run's checkpoints/last.ckpt",
    )
    fails_with(
        fast_cfg(f"ckpt_path={tmp_path / 'nowhere.ckpt'}"),
        capsys,
        f"no checkpoint at {tmp_path / 'nowhere.ckpt'}",
        "Give the path of a run's checkpoints/last.ckpt",
    )
    fails_with(
        fast_cfg("ckpt_path=last"), capsys, "ckpt_path=last: no checkpoint at", "checkpoints/last.ckpt"
    )
