"""`python -m src.report`: exact statistics on known numbers, failed jobs, and a real tiny ablation sweep."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.report import report
from src.utils.stats import T95, mean_ci, t95
from tests.conftest import ROOT
from tests.test_sweeps import run_cli

# edit accuracy per (loss, prompt) over seeds 0, 1, 2; global/red_eyes seed 2 fails
ACC = {
    ("clip_nce", "elf_ears"): [0.8, 0.9, 1.0],
    ("clip_nce", "red_eyes"): [0.6, 0.7, 0.8],
    ("global", "elf_ears"): [0.5, 0.5, 0.8],
    ("global", "red_eyes"): [0.4, 0.6, None],
}


def make_job(
    root: Path, num: int, overrides: list[str], result: dict | None, error: dict | None = None
) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if result is not None:
        (job / "eval").mkdir()
        (job / "eval" / "eval.json").write_text(json.dumps(result))
    if error is not None:
        (job / "error.json").write_text(json.dumps(error))


@pytest.fixture
def synthetic_sweep(tmp_path: Path) -> Path:
    root, num = tmp_path / "multirun", 0
    for (loss, prompt), accs in ACC.items():
        for seed, acc in enumerate(accs):
            overrides = [f"loss={loss}", f"prompt={prompt}", f"seed={seed}", "trainer.max_steps=10"]
            if acc is None:
                err = {"error": "RuntimeError", "message": "loss is nan\nmore", "traceback": "..."}
                make_job(root, num, overrides, None, err)
            else:
                result = {"prompt": prompt, "n": 64, "edit_accuracy": acc, "preservation": 0.9,
                          "realism": {"valid_rate": 1.0, "kid_to_ideal": None}}  # fmt: skip
                make_job(root, num, overrides, result)
            num += 1
    return root


def ci(values: list[float], t: float) -> float:
    m = sum(values) / len(values)
    return t * math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) / math.sqrt(len(values))


def test_mean_ci_is_student_t():
    m, h, n = mean_ci([0.8, 0.9, 1.0, float("nan"), None])
    assert (m, n) == (pytest.approx(0.9), 3) and h == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert math.isnan(mean_ci([0.5])[1]) and mean_ci([])[2] == 0
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 30, 31, 45, 200):
        assert t95(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3)
    assert len(T95) == 30


def test_report_numbers_failed_runs_and_claims(synthetic_sweep, tmp_path):
    out = tmp_path / "report"
    res = report([str(synthetic_sweep)], str(out))
    assert res["varying"] == ["loss"]  # trainer.max_steps is the same everywhere
    rows = {(r["config"], r["prompt"]): r for r in csv.DictReader(open(out / "results.csv"))}
    r = rows[("loss=clip_nce", "elf_ears")]
    assert float(r["edit_accuracy_mean"]) == pytest.approx(0.9)
    assert float(r["edit_accuracy_ci95"]) == pytest.approx(ci([0.8, 0.9, 1.0], 4.303))
    assert r["n"] == "3" and float(r["preservation_ci95"]) == pytest.approx(0.0)
    r = rows[("loss=global", "red_eyes")]  # the failed seed is left out
    assert r["n"] == "2" and float(r["edit_accuracy_mean"]) == pytest.approx(0.5)
    assert float(r["edit_accuracy_ci95"]) == pytest.approx(ci([0.4, 0.6], 12.706))
    # all prompts: average over prompts within each seed, then mean/CI over seeds
    r = rows[("loss=global", "all")]
    assert float(r["edit_accuracy_mean"]) == pytest.approx(0.6)
    assert float(r["edit_accuracy_ci95"]) == pytest.approx(ci([0.45, 0.55, 0.8], 4.303))
    assert "realism/kid_to_ideal_mean" not in r  # null everywhere: no column
    runs = list(csv.DictReader(open(out / "runs.csv")))
    failed = [x for x in runs if x["status"] == "failed"]
    assert len(runs) == 12 and len(failed) == 1
    assert failed[0]["error"] == "RuntimeError: loss is nan" and failed[0]["seed"] == "2"
    md = (out / "results.md").read_text()
    assert "12 jobs" not in md and "Jobs: 12 (11 ok, 1 failed)" in md
    assert "| loss=clip_nce | elf_ears | 3 | 0.900 ± 0.248 |" in md
    assert "RuntimeError: loss is nan" in md
    # paired over the 5 (prompt, seed) both losses finished
    (claim,) = res["claims"]
    diffs = [0.3, 0.4, 0.2, 0.2, 0.1]
    assert claim["n"] == 5 and claim["diff"] == pytest.approx(0.24)
    assert claim["ci95"] == pytest.approx(ci(diffs, 2.776)) and claim["verdict"] == "holds"
    assert "CLIP-NCE beats the global CLIP loss" in md
    # and within each prompt, paired over its seeds: an effect the pooled test can blur
    ((ears,), (eyes,)) = res["claims_by_prompt"]["elf_ears"], res["claims_by_prompt"]["red_eyes"]
    assert ears["n"] == 3 and ears["diff"] == pytest.approx(0.3) and ears["verdict"] == "holds"
    assert eyes["n"] == 2 and eyes["diff"] == pytest.approx(0.15) and eyes["verdict"] == "not significant"
    assert "### Per prompt" in md and "| elf_ears | 3 | 0.300 ± 0.248 |" in md
    assert {p.name for p in (out / "plots").iterdir()} == {
        "edit_accuracy.png",
        "preservation.png",
        "realism_valid_rate.png",
        "tradeoff.png",
    }


def test_custom_prompts_are_rows_named_by_prompt_name(tmp_path):
    """prompt=custom jobs are reported under their prompt.name, and their +domain.edits.<name> (the judge's
    target for the text) is not a configuration axis."""
    from src.report_jobs import gather

    root = tmp_path / "sweep"
    for num, (name, value) in enumerate([("blue_lipstick", "blue"), ("black_lipstick", "black")]):
        over = ["prompt=custom", f"prompt.name={name}", f"+domain.edits.{name}=[lip_color,{value}]", "seed=0"]
        make_job(root, num, over, {"prompt": name, "n": 8, "faithful_rate": 0.5})
        (root / str(num) / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"prompt": {"name": name}}))
    make_job(root, 2, ["prompt=elf_ears", "seed=0"], {"prompt": "elf_ears", "n": 8, "faithful_rate": 0.0})
    jobs, varying = gather([str(root)])
    assert sorted(j["prompt"] for j in jobs) == ["black_lipstick", "blue_lipstick", "elf_ears"]
    assert varying == [] and all(j["settings"] == {} for j in jobs), [j["settings"] for j in jobs]


def test_report_of_nothing_is_a_clear_error(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "src.report", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 2 and "no job dirs" in res.stderr


def test_report_of_a_real_tiny_ablation_sweep(tmp_path):
    # experiment=ablation_tem sweeps model=cfclip,no_tem from its hydra.sweeper.params; the CLI narrows
    # prompt and seed: 2 x 1 x 2 = 4 jobs. domain=tiny has no oracle: no edit_accuracy in eval.json.
    tiny = [
        "domain=tiny",
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "data.num_train=4",
        "data.num_val=2",
        "data.num_test=2",
        "aug.num_views=2",
        "callbacks.image_grid.num_images=2",
    ]
    res = run_cli(["-m", "experiment=ablation_tem", "prompt=elf_ears", "seed=0,1", *tiny], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = tmp_path / "multirun"
    models = [
        yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())[0] for j in sorted(sweep.glob("[0-9]"))
    ]
    assert models == ["model=cfclip", "model=cfclip", "model=no_tem", "model=no_tem"]
    out = tmp_path / "report"
    res = subprocess.run(
        [sys.executable, "-m", "src.report", str(sweep), "--out", str(out), "--claim-metric", "clip_score"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {(r["config"], r["prompt"]): r for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {(c, p) for c in ("model=cfclip", "model=no_tem") for p in ("elf_ears", "all")}
    assert all(r["n"] == "2" for r in rows.values())
    assert not any(k.startswith("edit_accuracy") for k in rows[("model=cfclip", "all")])
    md = (out / "results.md").read_text()
    assert "Jobs: 4 (4 ok)" in md and "| clip_score |" in md and "edit_accuracy" not in md
    assert "TEM (text-conditioned mapper) beats the plain mapper" in md  # the claim, on clip_score here
    assert (out / "plots" / "clip_score.png").is_file()
