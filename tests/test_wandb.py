"""W&B offline: a 2-job sweep writes one offline run per job whose records hold the logged metrics."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from src.utils import loggers
from tests.test_sweeps import run_cli

wandb = pytest.importorskip("wandb")


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (LevelDB-style log: 32 KiB blocks of CRC | length | type chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full / first | middle / last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
        elif kind not in (2, 3):
            break


def read_run(job: Path) -> dict:
    (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
    out = {"history": {}, "summary": {}, "metrics": {}, "runs": [], "config": {}}
    for r in wandb_records(run_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["runs"].append(r.run)
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "history":
            for item in r.history.item:
                out["history"].setdefault(item.key or "/".join(item.nested_key), []).append(item.value_json)
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): i.value_json for i in r.summary.update})
        elif kind == "metric":
            out["metrics"][r.metric.name or r.metric.glob_name] = r.metric
    return out


def test_offline_sweep_runs_hold_losses_lr_grad_norm_images_and_eval_summary(tmp_path):
    env_key = os.environ.pop("WANDB_API_KEY", None)
    try:
        res = run_cli(
            [
                "-m",
                "loss=clip_nce,global",
                "domain=tiny",
                "logger=wandb",
                "logger.wandb.group=auto",
                "trainer.max_steps=4",
                "trainer.val_check_interval=2",
                "trainer.log_every_n_steps=1",
                "data.num_train=4",
                "data.num_val=2",
                "data.num_test=2",
                "aug.num_views=2",
                "callbacks.image_grid.num_images=2",
                "callbacks.image_grid.every_n_steps=2",
            ],
            tmp_path,
        )
    finally:
        if env_key is not None:
            os.environ["WANDB_API_KEY"] = env_key
    assert res.returncode == 0, res.stderr[-3000:]
    ids = set()
    for job, term in (
        (tmp_path / "multirun" / "0", "clip_nce"),
        (tmp_path / "multirun" / "1", "global_clip"),
    ):
        run = read_run(job)  # exactly one offline run per job: the second job did not reuse the first run
        ids.add(run["runs"][0].run_id)
        assert run["runs"][0].run_group == "multirun"  # the sweep dir's name
        assert run["config"]["run_context"]["job_num"] == int(job.name)
        assert "loss=" in run["config"]["run_context"]["overrides"]
        assert run["config"]["run_context"]["choices"]["loss"] == (
            "clip_nce" if term == "clip_nce" else "global"
        )
        hist = run["history"]
        for key in (f"train/loss_{term}", "train/loss_latent_l2", "train/loss", "train/grad_norm", "lr-Adam"):
            assert key in hist, key
        assert len(hist["train/loss"]) == 4 and len(hist["val/loss"]) == 2
        assert hist["val/grid/_type"][0] == '"images/separated"'  # wandb.Image grids, steps 2 and 4 + end
        assert len(list(job.glob("wandb/offline-run-*/files/media/images/val/grid_*.png"))) >= 2
        summary = run["summary"]
        assert {"eval/clip_score", "eval/clip_directional", "eval/pixel_l1_change"} <= set(summary)
        assert set(json.loads(summary["val/loss"])) == {"min", "last"}
        assert list(run["metrics"]["eval/*"].summary.ListFields())  # define_metric("eval/*", summary=last)
    assert len(ids) == 2


def test_offline_without_credentials_and_no_network(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert not loggers.wandb_has_credentials()
    lg = loggers.wandb_logger(project="p", save_dir=str(tmp_path), tags=["a"])
    assert lg._offline and os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE")
    assert not loggers.wandb_logger(project="p", save_dir=str(tmp_path))._offline
    monkeypatch.setenv("WANDB_MODE", "disabled")  # stays disabled, not turned into offline logging
    assert not loggers.wandb_logger(project="p", save_dir=str(tmp_path))._offline
    assert os.environ["WANDB_MODE"] == "disabled"


def test_a_failing_online_init_falls_back_to_offline(monkeypatch, tmp_path):
    calls = []

    class FakeRun:
        def define_metric(self, name, **kwargs):
            calls.append(name)

    def fake_init(**kwargs):
        calls.append(kwargs.get("mode"))
        if kwargs.get("mode") != "offline":
            raise wandb.errors.CommError("network unreachable")
        return FakeRun()

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setattr(wandb, "run", None)
    lg = loggers.wandb_logger(project="p", save_dir=str(tmp_path), offline=False)
    assert isinstance(lg.experiment, FakeRun)
    assert calls[:2] == [None, "offline"] and "eval/*" in calls and "val/loss" in calls
    assert os.environ["WANDB_MODE"] in ("offline", "dryrun")  # Lightning spells offline "dryrun"


@pytest.mark.parametrize(
    "ctx, env, group",
    [
        (
            {"sweep": "2026-01-01_00-00-00-000000", "experiment": "ablation_loss"},
            None,
            "ablation_loss/2026-01-01_00-00-00-000000",
        ),
        ({"sweep": "s1"}, None, "s1"),
        ({"experiment": "toyfaces_elf_ears"}, None, "toyfaces_elf_ears"),
        ({}, None, None),
        ({"sweep": "s1"}, "ablation_toyfaces/t", "ablation_toyfaces/t"),
    ],
)
def test_auto_group(monkeypatch, ctx, env, group):
    if env:
        monkeypatch.setenv("WANDB_RUN_GROUP", env)
    else:
        monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    assert loggers.auto_group(ctx) == group
