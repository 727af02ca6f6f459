"""Experiment and hparams_search configs compose; the ablation sweeps and study scripts cover the paper's runs."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, compose_train
from tests.test_sweeps import TINY, run_cli

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
PROMPTS = ["elf_ears", "purple_eyebrows", "green_lipstick"]
ABLATIONS = {
    "ablation_loss": ("loss", ["clip_nce", "directional", "global"]),
    "ablation_aug": ("aug", ["perspective", "affine", "crop", "none"]),
    "ablation_tem": ("model", ["cfclip", "no_tem"]),
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = compose_train([f"experiment={name}"])
    choices = cfg.hydra.runtime.choices
    if name.startswith(("toyfaces", "ablation")):
        assert choices.domain == "toyfaces"
    if name.startswith("toyfaces_") and name != "toyfaces_prompts" and not name.startswith("toyfaces_multi"):
        prompt = name.removeprefix("toyfaces_")
        assert choices.prompt == prompt and prompt in cfg.domain.edits  # the oracle can judge it
        # the default recipe, not a copy of its numbers
        default = compose_train(["domain=toyfaces", f"prompt={prompt}"])
        for key in ("loss", "aug", "model", "optimizer", "trainer", "data"):
            assert cfg[key] == default[key], key


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_sweeps_vary_one_axis_around_the_full_method(name):
    cfg = compose_train([f"experiment={name}"])
    params = dict(cfg.hydra.sweeper.params)
    axis, options = ABLATIONS[name]
    assert params == {axis: ",".join(options), "prompt": ",".join(PROMPTS), "seed": "0,1,2"}
    for other, full in {"loss": "clip_nce", "aug": "perspective", "model": "cfclip"}.items():
        if other != axis:
            assert cfg.hydra.runtime.choices[other] == full
    assert cfg.model.tem is True or axis == "model"


def script_sweeps(script: Path) -> list[list[str]]:
    """The overrides of each `run_sweep NAME DIR overrides...` line of a study script (shell variables of
    the prompt/seed axes expanded to their defaults)."""
    text = script.read_text()
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}", text, re.M))
    axes = [f"seed={defaults.get('SEEDS', '')}", f"prompt={defaults.get('PROMPTS', '')}"]
    sweeps = []
    for line in re.findall(r"^run_sweep (.*)$", text, re.M):
        args = shlex.split(line.split("#")[0])[2:]
        sweeps.append([a for a in args if not a.startswith("$")] + (axes if '"${axes[@]}"' in line else []))
    return sweeps


def expand(overrides: list[str]) -> list[dict[str, str]]:
    """The jobs of a sweep: the experiment's sweeper params, replaced by command-line sweeps of the same key."""
    exp = next(o.split("=", 1)[1] for o in overrides if o.startswith("experiment="))
    params = dict(compose_train([f"experiment={exp}"]).hydra.sweeper.params)
    params.update(o.split("=", 1) for o in overrides if not o.startswith("experiment="))
    keys = list(params)
    values = itertools.product(*(str(params[k]).split(",") for k in keys))
    return [{"experiment": exp, **dict(zip(keys, vals))} for vals in values]


def test_toyfaces_multi_is_the_recipe_on_six_prompts_with_judged_held_out_texts():
    from src.toyworld.attributes import values_in_text

    cfg = compose_train(["experiment=toyfaces_multi"])
    default = compose_train(["domain=toyfaces"])
    for key in ("loss", "aug", "model", "optimizer", "data"):
        assert cfg[key] == default[key], key
    assert cfg.trainer.max_steps == 2 * default.trainer.max_steps  # the budget: <= 2x one run
    trained = {v for t in cfg.prompt.targets for v in values_in_text(t)}
    assert len(cfg.prompt.targets) == len(trained) == 6
    held_out = [values_in_text(t) for t in cfg.eval_prompts]
    assert sum(len(v) == 1 and v[0] not in trained for v in held_out) >= 2  # values never trained
    assert sum(len(v) == 2 and set(v) <= trained for v in held_out) >= 2  # composed of trained values


def test_ablation_script_runs_8_configurations_x_3_prompts_x_3_seeds():
    jobs = [
        job for sweep in script_sweeps(ROOT / "experiments" / "ablation_toyfaces.sh") for job in expand(sweep)
    ]
    assert len(jobs) == 72
    axes = ("loss", "aug", "model")
    keys = ("experiment", *axes, "domain.regularizers.identity.weight")
    picked = {tuple(f"{k}={j[k]}" for k in keys if k in j) for j in jobs}
    configs = {
        tuple(compose_train(list(p)).hydra.runtime.choices[k] for k in axes)
        + (float(compose_train(list(p)).domain.regularizers.identity.weight),)
        for p in picked
    }
    assert len(configs) == 8 and ("clip_nce", "perspective", "cfclip", 0.2) in configs
    assert ("clip_nce", "perspective", "cfclip", 0.0) in configs
    assert {(j["prompt"], j["seed"]) for j in jobs} == {(p, s) for p in PROMPTS for s in "012"}
    assert len(configs) == len(picked)  # no configuration run twice


def test_study_scripts_explain_themselves_and_refuse_a_bad_mode():
    for script in sorted((ROOT / "experiments").glob("*.sh")):
        if script.name.startswith("_"):
            continue
        res = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and "bash experiments/" in res.stdout, script.name
        res = subprocess.run(["bash", str(script), "nowhere"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 2 and "usage" in res.stderr


def test_optuna_search_config():
    cfg = compose_train(["hparams_search=toyfaces_optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "eval/edit_accuracy_at_preservation" and cfg.eval_after_fit
    assert 0 < cfg.objective.min_preservation <= 1
    for key in sweeper.params:  # every searched key exists in the composed config
        node = cfg
        for part in key.split("."):
            node = node[part]
    assert (
        compose_train(["hparams_search=toyfaces_optuna", "optimized_metric=val/loss"]).optimized_metric
        == "val/loss"
    )


@pytest.mark.slow
def test_optuna_sweep_runs_on_tiny(tmp_path):
    tiny = [a for a in TINY if not a.startswith("aug.")]  # aug.num_views is searched
    args = ["hparams_search=toyfaces_optuna", "domain=tiny", "optimized_metric=val/loss",
            "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=2", *tiny]  # fmt: skip
    res = run_cli(["-m", *args], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == set(compose_train(args).hydra.sweeper.params)
    assert best["best_value"] > 0


@pytest.mark.slow
def test_ablation_script_end_to_end_on_tiny(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "SEEDS": "0",
           "PROMPTS": "elf_ears", "SWEEP_ROOT": str(tmp_path / "sweeps"), "OUT": str(tmp_path / "report"),
           "PYTHON": sys.executable, "JOBS": "2"}  # fmt: skip
    tiny = [a for a in TINY if not a.startswith(("aug.", "eval_after_fit"))]  # aug=none has one view
    res = subprocess.run(["bash", "experiments/ablation_toyfaces.sh", "local", *tiny, "eval_after_fit=true"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    md = (tmp_path / "report" / "results.md").read_text()
    assert "Jobs: 8 (8 ok)" in md and "Configuration axes: aug, identity, loss, model" in md


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs(tmp_path):
    # trainer=ddp_cpu is ddp_spawn: the ranks fork from the job, so -m sweeps of DDP runs work (docs/multi_gpu.md)
    tiny = [a for a in TINY if not a.startswith("eval_after_fit")]
    res = run_cli(["-m", "trainer=ddp_cpu", "loss=clip_nce,global", *tiny], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted((tmp_path / "multirun").glob("[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]  # no rank started a sweep of its own
    assert all((j / "eval" / "eval.json").is_file() and not (j / "error.json").exists() for j in jobs)


def test_toyfaces_multi_wide_trains_every_word_of_its_held_out_texts_but_not_their_values():
    from src.toyworld.attributes import values_in_text

    cfg = compose_train(["experiment=toyfaces_multi_wide"])
    assert list(cfg.eval_prompts) == list(compose_train(["experiment=toyfaces_multi"]).eval_prompts)
    trained = {v for t in cfg.prompt.targets for v in values_in_text(t)}
    words = {w for t in cfg.prompt.targets for w in t.split()}
    held_out = [t for t in cfg.eval_prompts if len(values_in_text(t)) == 1]
    assert len(held_out) >= 2
    for text in held_out:
        assert values_in_text(text)[0] not in trained, text
        assert set(text.split()) <= words, text  # composed of trained words only
