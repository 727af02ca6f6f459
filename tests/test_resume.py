"""Kill and resume: a resumed run ends exactly where the uninterrupted one does (weights, loss curve, data order,
RNG); SIGTERM / SIGINT save a checkpoint before exiting; a new run never writes into an earlier run's dir.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import src.builders as builders
from src.train import train
from src.utils.errors import OutputDirError, claim_output_dir
from tests.conftest import FAST, ROOT, compose_train

# 8 latents in batches of 2: 4 steps per epoch, so 10 steps cross two epoch boundaries; a checkpoint every 2
# steps, validation (random augmentation) every 2 steps, so resuming must not let validation shift the RNG.
STEPS = 10
RESUME = [*FAST, f"trainer.max_steps={STEPS}", "data.num_train=8", "aug.num_views=2", "aug=perspective"]


def mapper_weights(ckpt_path: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> train/loss from a run's metrics.csv (the last row wins if a step was logged twice)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")}


def assert_same_run(ref_dir: Path, run_dir: Path, ckpt: Path | None = None, from_step: int = 0) -> None:
    ref_w = mapper_weights(ref_dir / "checkpoints" / "last.ckpt")
    w = mapper_weights(ckpt or run_dir / "checkpoints" / "last.ckpt")
    assert ref_w.keys() == w.keys()
    worst = max((ref_w[k] - w[k]).abs().max().item() for k in ref_w)
    assert worst <= 1e-6, f"final weights differ from the uninterrupted run by {worst:.2e}"
    ref, got = train_losses(ref_dir), train_losses(run_dir)
    steps = [s for s in got if s >= from_step]
    assert steps and max(steps) == STEPS - 1, f"the resumed run logged steps {sorted(got)}"
    for s in steps:
        assert got[s] == pytest.approx(ref[s], abs=1e-6), f"train/loss differs at step {s}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (in process) every resumed run is compared with."""
    out = tmp_path_factory.mktemp("reference")
    train(compose_train(RESUME, out))
    return out


def global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


# ---- in process: resume at an epoch boundary and mid-epoch -----------------------------------------------
@pytest.mark.parametrize("at", [4, 6])  # 4: right at the end of epoch 0; 6: in the middle of epoch 1
def test_resume_is_exact(reference, tmp_path, at):
    ckpt = reference / "checkpoints" / f"step_{at:06d}.ckpt"
    train(compose_train([*RESUME, f"ckpt_path={ckpt}"], tmp_path))
    assert_same_run(reference, tmp_path)
    assert sorted(train_losses(tmp_path)) == list(range(at, STEPS))


def test_resume_without_rng_and_data_state_would_differ(reference, tmp_path):
    # the control: with the exact_resume callback off the same resume drifts (so the test above is not vacuous)
    ckpt = reference / "checkpoints" / "step_000006.ckpt"
    train(compose_train([*RESUME, f"ckpt_path={ckpt}", "callbacks.exact_resume=null"], tmp_path))
    ref_w, w = (
        mapper_weights(reference / "checkpoints" / "last.ckpt"),
        mapper_weights(tmp_path / "checkpoints" / "last.ckpt"),
    )
    assert max((ref_w[k] - w[k]).abs().max().item() for k in ref_w) > 1e-4


# ---- in process: SIGTERM and SIGINT save last.ckpt, exit 143 / 130, and resume exactly ----------------------
class SendSignal(pl.Callback):
    """Sends ``signum`` to this process at the end of training step ``at`` (as `kill` or Ctrl-C would)."""

    def __init__(self, signum: int, at: int):
        self.signum, self.at = signum, at

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_resumes_in_place(
    reference, tmp_path, monkeypatch, capsys, signum, code
):
    real = builders.instantiate_dict

    def with_sender(node):
        out = real(node)
        return (
            out + [SendSignal(signum, at=5)]
            if any(type(c).__name__ == "SignalCheckpoint" for c in out)
            else out
        )

    monkeypatch.setattr(builders, "instantiate_dict", with_sender)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exc:
        train(compose_train(RESUME, tmp_path))
    assert exc.value.code == code
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers, (
        "handlers restored"
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert global_step(last) == 5, "the checkpoint must hold the step during which the signal arrived"
    err = capsys.readouterr().err
    assert (
        f"{signal.Signals(signum).name}: stopped after step 5; saved {last}; resume with ckpt_path={last}"
        in err
    )
    # resume in the same run dir, as `hydra.run.dir=<that dir> ckpt_path=last` does
    monkeypatch.setattr(builders, "instantiate_dict", real)
    train(compose_train([*RESUME, "ckpt_path=last"], tmp_path))
    assert_same_run(reference, tmp_path)
    assert sorted(train_losses(tmp_path)) == list(range(STEPS)), (
        "metrics.csv lost the steps before the resume"
    )


# ---- the command line: two runs at once; SIGKILL one, SIGTERM the other; resume the killed one by path --------
def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "src.train", *args]


def cli_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def run_dirs_by_pid(root: Path) -> dict[int, Path]:
    """Run dir of each process (the run marker holds the pid of the run that claimed the dir)."""
    out = {}
    for marker in root.glob("*/.cfclip_run"):
        text = marker.read_text().split()
        if text:  # the pid is written just after the marker is created
            out[int(text[0])] = marker.parent
    return out


# three CLI processes, two of them at once: ~45 s on 2 cores (70-95 s when other jobs share them)
def test_two_runs_at_once_then_sigkill_sigterm_and_resume(reference, tmp_path):
    # max_steps=1000: both are stopped long before the end
    args = [*RESUME, "trainer.max_steps=1000", f"paths.log_dir={tmp_path}/outputs"]
    popen = {
        "cwd": ROOT,
        "env": cli_env(),
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.PIPE,
        "text": True,
    }
    killed, termed = (subprocess.Popen(cli(args), **popen) for _ in range(2))
    root = tmp_path / "outputs" / "train"
    signals = {killed.pid: signal.SIGKILL, termed.pid: signal.SIGTERM}
    try:
        deadline = time.time() + 300
        # each run gets its signal as soon as it has written step 4 (the two run at unequal speeds)
        while signals:
            dirs = run_dirs_by_pid(root)
            for pid in list(signals):
                if pid in dirs and (dirs[pid] / "checkpoints" / "step_000004.ckpt").exists():
                    os.kill(pid, signals.pop(pid))
            for p in (killed, termed):
                assert p.pid not in signals or p.poll() is None, p.stderr.read()[-3000:]
            assert time.time() < deadline, "the runs did not reach step 4"
            time.sleep(0.02)
    finally:
        for p in (killed, termed):
            if p.pid in signals:
                p.kill()
    err = termed.communicate(timeout=120)[1]
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL

    # two commands started together got two run dirs
    assert len(list(root.iterdir())) == 2 and set(dirs) == {killed.pid, termed.pid}

    # SIGTERM: the step finishes, last.ckpt is saved, exit status 143 and one line saying how to resume
    last = dirs[termed.pid] / "checkpoints" / "last.ckpt"
    assert termed.returncode == 143, err[-3000:]
    assert (
        f"cfclip: SIGTERM: stopped after step {global_step(last)}; saved {last}; resume with ckpt_path={last}"
        in err
    )
    assert "Traceback" not in err

    # SIGKILL: nothing could be saved at the kill, the last periodic last.ckpt is whole and resumes exactly
    killed_last = dirs[killed.pid] / "checkpoints" / "last.ckpt"
    killed_at = global_step(killed_last)
    assert 2 <= killed_at < STEPS, killed_at  # last.ckpt is written just after the step file
    resumed = tmp_path / "resumed"
    res = subprocess.run(
        cli([*RESUME, f"hydra.run.dir={resumed}", f"ckpt_path={killed_last}"]),
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_run(reference, resumed, from_step=killed_at)


# ---- a run dir is never shared ----------------------------------------------------------------------------
def test_a_run_dir_is_never_shared(tmp_path):
    run = tmp_path / "run"
    claim_output_dir(str(run))
    claim_output_dir(str(run))  # the same process again (a run that failed before writing anything): fine
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(OutputDirError, match="already holds another run.*ckpt_path=last"):
        claim_output_dir(str(run))
    claim_output_dir(str(run), resuming=True)  # resuming in place is what ckpt_path=last does
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".cfclip_run").write_text(f"{other.pid}\n")  # a live process holds the dir
        with pytest.raises(
            OutputDirError, match=f"another run \\(pid {other.pid}\\) is using the run directory"
        ):
            claim_output_dir(str(run), resuming=True)
    finally:
        other.kill()
        other.wait()
    claim_output_dir(str(run), resuming=True)  # its owner ended: the dir can be taken over
