"""NaN / Inf: a non-finite loss or gradient skips the optimizer step with a warning naming the term; ``patience``
such steps in a row stop the run with a clear message that points at the last good checkpoint.

A NaN is injected by adding a LossTerm to the module's LossSum (through ``src.builders.build``), so the real
training loop, callbacks and checkpointing run.
"""

from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch

import src.builders as builders
from src.losses.base import LossTerm, StepContext
from src.train import train
from src.utils.errors import TrainingDiverged, run_task


class Boom(LossTerm):
    """NaN (through the graph: ``kind="loss"``) or a finite value with a NaN gradient (``kind="grad"``) on the
    training calls listed in ``bad`` (0-based; ``bad=None``: every call from ``start`` on). Finite otherwise."""

    def __init__(self, kind: str = "loss", bad: tuple[int, ...] | None = (), start: int = 0):
        super().__init__(weight=1.0)
        self.kind, self.bad, self.start, self.calls = kind, bad, start, 0

    def forward(self, ctx: StepContext) -> torch.Tensor:
        if not self.training:  # validation is not guarded: keep it finite
            return ctx.w_hat.new_zeros(())
        i, self.calls = self.calls, self.calls + 1
        hit = i >= self.start if self.bad is None else i in self.bad
        if not hit:
            return (ctx.w_hat - ctx.w).pow(2).mean() * 0.0
        if self.kind == "loss":
            return ctx.w_hat.mean() * float("nan")
        # sqrt at 0: the value is 0 (finite), the gradient is inf * 0 = NaN
        return torch.sqrt((ctx.w_hat - ctx.w_hat.detach()).pow(2).sum())


class Snapshots(pl.Callback):
    """Mapper weights and Adam's step count after every training step, by global step."""

    def __init__(self):
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.adam_steps: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.weights[trainer.global_step] = {
            k: v.detach().clone() for k, v in module.mapper.state_dict().items()
        }
        state = trainer.optimizers[0].state
        self.adam_steps[trainer.global_step] = max(float(s["step"]) for s in state.values()) if state else 0.0


@pytest.fixture
def inject(monkeypatch):
    """inject(term) -> a Snapshots callback; the next train() adds ``term`` as loss term 'boom'."""

    def add(term: LossTerm) -> Snapshots:
        real_build, real_dict = builders.build, builders.instantiate_dict
        snaps = Snapshots()

        def build(cfg):
            module, dm = real_build(cfg)
            module.loss.terms["boom"] = term
            return module, dm

        def instantiate_dict(node):
            out = real_dict(node)
            return out + [snaps] if any(type(c).__name__ == "NaNGuard" for c in out) else out

        monkeypatch.setattr(builders, "build", build)
        monkeypatch.setattr(builders, "instantiate_dict", instantiate_dict)
        return snaps

    return add


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_term_skips_the_step_and_names_the_term(fast_cfg, inject, caplog):
    snaps = inject(Boom("loss", bad=(2, 3)))
    caplog.set_level(logging.WARNING, logger="cfclip")
    metrics = train(fast_cfg("trainer.max_steps=6", "aug=none"))
    warnings = [r.getMessage() for r in caplog.records if "skipped the optimizer step" in r.getMessage()]
    assert warnings == [
        "step 2: non-finite loss term boom=nan; skipped the optimizer step (1 in a row; training stops after 10: "
        "callbacks.nan_guard.patience)",
        "step 3: non-finite loss term boom=nan; skipped the optimizer step (2 in a row; training stops after 10: "
        "callbacks.nan_guard.patience)",
    ]
    w = snaps.weights
    assert same(w[2], w[3]) and same(w[3], w[4]), "a skipped step changed the weights"
    assert not same(w[1], w[2]) and not same(w[4], w[5]), "the good steps around them must train"
    assert snaps.adam_steps[4] == snaps.adam_steps[2] == 2 and snaps.adam_steps[6] == 4, (
        "Adam stepped on a NaN"
    )
    assert all(torch.isfinite(v).all() for v in w[6].values())
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_nan_gradient_with_a_finite_loss_is_skipped_too(fast_cfg, inject, caplog):
    snaps = inject(Boom("grad", bad=(1,)))
    caplog.set_level(logging.WARNING, logger="cfclip")
    train(fast_cfg("trainer.max_steps=3", "aug=none"))
    (msg,) = [r.getMessage() for r in caplog.records if "skipped the optimizer step" in r.getMessage()]
    assert msg.startswith("step 1: non-finite gradient in mapper.")
    assert "although every loss term is finite (" in msg and "boom=0" in msg
    assert same(snaps.weights[1], snaps.weights[2]) and not same(snaps.weights[2], snaps.weights[3])


def test_patience_nan_steps_in_a_row_abort_and_keep_the_last_good_checkpoint(
    fast_cfg, inject, tmp_path, capsys
):
    snaps = inject(Boom("loss", bad=None, start=2))
    cfg = fast_cfg("trainer.max_steps=20", "aug=none", "callbacks.nan_guard.patience=3")
    with pytest.raises(SystemExit) as exc:  # the CLI's error path: status 2 and one message, no traceback
        run_task(train, cfg, output_dir=str(tmp_path))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    good = tmp_path / "checkpoints" / "step_000002.ckpt"
    assert (
        "cfclip: error: training diverged: 3 optimizer steps in a row (steps 2-4) had a non-finite loss or "
        in err
    )
    assert "the last one: non-finite loss term boom=nan" in err
    assert (
        f"The last good checkpoint (written before step 2) is {good}; resume from it with ckpt_path={good}"
        in err
    )
    assert "Lower optimizer.lr" in err and "callbacks.nan_guard.patience=N" in err
    assert "Traceback" not in err
    assert max(snaps.weights) == 4, "it must stop at the 3rd bad step (steps 2, 3, 4)"
    kept = torch.load(good, map_location="cpu", weights_only=True)["state_dict"]
    mapper = {k[len("mapper.") :]: v for k, v in kept.items()}
    assert same(mapper, snaps.weights[2]) and same(snaps.weights[2], snaps.weights[4]), (
        "weights moved on a NaN"
    )
    assert issubclass(TrainingDiverged, RuntimeError)


def test_the_guard_checks_once_per_step(fast_cfg, monkeypatch):
    # the documented cost: loss and gradient norm are checked together, one isfinite -> bool host sync per step
    from src.utils import guards

    calls = []
    real = guards.all_finite
    monkeypatch.setattr(guards, "all_finite", lambda values: calls.append(len(values)) or real(values))
    train(fast_cfg("trainer.max_steps=3", "aug=none"))
    assert calls == [2, 2, 2]
