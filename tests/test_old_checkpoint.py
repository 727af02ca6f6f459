"""A run checkpoint written before the toyfaces judge moved (2026-12-07: src.evaluation.ideal ->
src.toyworld.judge.rule, the oracle and its calibration -> src.toyworld.judge, the build -> src.toyworld.build)
still loads with ``src.eval`` and is judged exactly as before the move.

tests/data/toyfaces_run_2026-12-07.ckpt: 2 steps of ``python -m src.train domain=toyfaces prompt=elf_ears seed=0``
with the test suite's FAST overrides and a small mapper (model.tem=false model.mapper.n_layers=1
model.mapper.medium=false model.mapper.fine=false), stripped to its weights (fp16) and stored config (41 kB).
"""

from __future__ import annotations

import math

from src.eval import run_eval
from tests.conftest import ROOT, compose_train

OLD_CKPT = ROOT / "tests" / "data" / "toyfaces_run_2026-12-07.ckpt"
# what src.eval printed for it before the move (commit aea39b4, CPU, one thread)
BEFORE = {
    "region_fidelity_left": 0.13555555045604706,
    "region_fidelity_right": 0.14780622720718384,
    "collateral_psnr": 27.852680206298828,
    "psnr_to_ideal": 23.70505142211914,
    "clip_score": 0.39262640476226807,
    "faithful_rate": 0.0,
    "clip_fooled_rate": 0.0,
    "loss_edit": 0.9940586090087891,
    "loss_fair_ideal": 0.5886739492416382,
}


def test_a_checkpoint_from_before_the_move_is_judged_as_before(tmp_path):
    metrics = run_eval(compose_train([f"ckpt={OLD_CKPT}"], tmp_path, "eval"))
    assert metrics["target"] == "ears:pointed" and metrics["n"] == 2
    assert (
        metrics["ceiling"]["faithful_rate"] == 0.609375
    )  # the shipped report's ceiling, read by the evaluator
    for key, value in BEFORE.items():
        assert math.isclose(metrics[key], value, rel_tol=1e-4, abs_tol=1e-6), (key, metrics[key], value)
