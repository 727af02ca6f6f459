"""The README's commands run as written, shrunk to a few steps on the tiny or toyfaces domain, and every
``python -m src...`` line of its bash blocks is listed here (run, or the reason it is not), so the README cannot
drift from the code. The sweep it shows must train a different thing in every cell."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import FAST, ROOT, compose_train

README = ROOT / "README.md"
TRAIN_RUN = "outputs/train/<time>/checkpoints/last.ckpt"
MULTI_RUN = "<multi run>/checkpoints/last.ckpt"
SWEEP = "python -m src.train -m domain=tiny aug=perspective,affine,crop,none model=cfclip,no_tem trainer.max_steps=5"

# run by the tests below (placeholders filled with the runs made here)
RUN = {
    "python -m src.train loss=clip_nce aug=perspective prompt=elf_ears",
    "python -m src.train domain=tiny trainer.max_steps=20",
    f"python -m src.eval ckpt={TRAIN_RUN}",
    f"python -m src.edit ckpt={TRAIN_RUN}",
    SWEEP,
    "python -m src.report multirun/<time>",
    "python -m src.train experiment=toyfaces_multi",
    f'python -m src.edit ckpt={MULTI_RUN} text="face with blue lipstick"',
    f"python -m src.eval ckpt={MULTI_RUN} 'prompts=[face with elf ears and green lipstick]'",
    "python -m src.probe prompt=green_lipstick domain.perspective_distortion=0.5",
}
NOT_RUN = {
    "python -m src.train -m experiment=ablation_loss": "27 jobs of 400 steps; tests/test_experiments.py composes it",
    "python -m src.train trainer=gpu": "needs a GPU (tests/test_gpu.py)",
    "python -m src.train trainer=ddp trainer.devices=4": "needs 4 GPUs (tests/test_ddp.py runs DDP on CPU)",
    "python -m src.train -m hydra/launcher=slurm trainer=gpu loss=clip_nce,global": "needs a SLURM cluster",
    "python -m src.train experiment=paper_ffhq_elf_ears": "needs the real FFHQ weights",
    "python -m src.convert afhqdog.pkl weights/afhqdog.pt": "needs NVIDIA's pickle (tests/test_convert.py)",
    "python -m src.bench preset=toyfaces": "a benchmark of minutes (tests/test_bench.py)",
    "python -m src.convert green_lipstick.pt weights/green_lipstick.ckpt": "needs the authors' file "
    "(tests/test_convert_official.py)",
    "python -m src.edit ckpt=weights/green_lipstick.ckpt image=me.jpg": "needs the authors' file and a photo",
    "python -m src.eval ckpt=weights/green_lipstick.ckpt": "needs the authors' file and FFHQ weights",
}
TOY = [o for o in FAST if not o.startswith("domain=")] + ["aug.num_views=2"]  # a few steps on toyfaces


def readme_commands(text: str | None = None) -> list[str]:
    """Every ``python -m src.`` line of the README's bash blocks, its trailing comment dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text() if text is None else text, re.S)
    lines = [re.split(r"\s{2,}#", line)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("python -m src.")]


def args_of(command: str) -> list[str]:
    """The overrides of a README command, split as bash splits them."""
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    return [w for w in words[3:] if w != "-m"]


def test_every_readme_command_is_listed_here():
    found = readme_commands()
    assert found, "no python -m src. command in the README's bash blocks"
    listed = RUN | set(NOT_RUN)
    assert not set(found) - listed, f"README commands not run or excused here: {sorted(set(found) - listed)}"
    assert not listed - set(found), f"listed here but gone from the README: {sorted(listed - set(found))}"


def test_the_command_parser_reads_bash_blocks_only():
    text = "```bash\npython -m src.train a=1   # note\nmake x\n```\n`python -m src.eval`\n```bash\npython -m src.b\n```"
    assert readme_commands(text) == ["python -m src.train a=1", "python -m src.b"]
    assert args_of('python -m src.edit ckpt=x text="face with blue lipstick"') == [
        "ckpt=x",
        "text=face with blue lipstick",
    ]


# ---- the sweep: every cell trains something different --------------------------------------------------------
def sweep_jobs(command: str) -> list[list[str]]:
    """The jobs of a Hydra multirun command: the cartesian product of its comma-separated overrides."""
    axes = [[f"{a.split('=')[0]}={v}" for v in a.split("=", 1)[1].split(",")] for a in args_of(command)]
    return [list(job) for job in itertools.product(*axes)]


def what_trains(overrides: list[str]) -> str:
    """What a job trains: its loss terms and model, and its views only when a term reads them (a term whose
    ``requires`` has no ``view_features`` ignores ``aug``)."""
    cfg = compose_train(overrides)
    terms = {name: instantiate(node) for name, node in cfg.loss.terms.items() if node is not None}
    views = any("view_features" in t.requires for t in terms.values())
    parts = [cfg.loss.terms, cfg.model] + ([cfg.aug] if views else [])
    return json.dumps([str(p) for p in parts])


def repeated_cells(command: str) -> int:
    keys = [what_trains(job) for job in sweep_jobs(command)]
    return len(keys) - len(set(keys))


def test_the_readme_sweep_trains_a_different_thing_in_every_cell():
    assert len(sweep_jobs(SWEEP)) == 8
    assert repeated_cells(SWEEP) == 0
    # the check is not vacuous: crossing aug with the losses that ignore the views repeats 6 of 12 jobs
    old = (
        "python -m src.train -m domain=tiny loss=clip_nce,directional,global aug=perspective,affine,crop,none"
    )
    assert repeated_cells(old) == 6


# ---- the short commands, run ---------------------------------------------------------------------------------
def train_cmd(command: str, shrink: list[str], out: Path) -> Path:
    from src.train import train

    train(compose_train(args_of(command) + shrink, out))
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), command
    return ckpt


def tool_cfg(config_name: str, overrides: list[str], out: Path):
    return compose_train(overrides, out, config_name)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return train_cmd(
        "python -m src.train domain=tiny trainer.max_steps=20", FAST, tmp_path_factory.mktemp("tiny")
    )


@pytest.fixture(scope="module")
def multi_ckpt(tmp_path_factory):
    return train_cmd("python -m src.train experiment=toyfaces_multi", TOY, tmp_path_factory.mktemp("multi"))


def test_train_the_user_command_on_toyfaces(tmp_path):
    train_cmd("python -m src.train loss=clip_nce aug=perspective prompt=elf_ears", TOY, tmp_path)


def test_eval_and_edit_a_run(tiny_ckpt, tmp_path):
    from src.edit import run_edit
    from src.eval import run_eval

    metrics = run_eval(
        tool_cfg(
            "eval",
            args_of(f"python -m src.eval ckpt={TRAIN_RUN}".replace(TRAIN_RUN, str(tiny_ckpt))),
            tmp_path / "eval",
        )
    )
    assert metrics["ckpt"] == str(tiny_ckpt)
    # no image= and no latents=: the run's domain test latents (FAST keeps 2)
    r = run_edit(tool_cfg("edit", [f"ckpt={tiny_ckpt}"], tmp_path / "edit"))
    assert r["columns"] == ["source", "elf_ears"] and r["n"] == 2
    assert (tmp_path / "edit" / "edit_grid.png").is_file()


def test_edit_any_text_with_a_multi_run(multi_ckpt, tmp_path):
    from src.edit import run_edit

    edit = f'python -m src.edit ckpt={MULTI_RUN} text="face with blue lipstick"'.replace(
        MULTI_RUN, str(multi_ckpt)
    )
    r = run_edit(tool_cfg("edit", args_of(edit) + ["num=2"], tmp_path / "edit"))
    assert r["n"] == 2 and r["columns"] == ["source", "multi:face with blue lipstick"]


@pytest.mark.slow  # ~2 min on 2 shared cores: six seen prompts and the composed one judged, its ceiling inverted
def test_eval_a_composed_text_with_a_multi_run(multi_ckpt, tmp_path, monkeypatch):
    from src.eval import run_eval

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the composed ceiling's cache
    ev = f"python -m src.eval ckpt={MULTI_RUN} 'prompts=[face with elf ears and green lipstick]'"
    m = run_eval(
        tool_cfg("eval", args_of(ev.replace(MULTI_RUN, str(multi_ckpt))) + ["num_test=2"], tmp_path / "e")
    )
    (composed,) = [r for r in m["prompts"].values() if not r["seen"]]
    assert composed["target"] == "ears:pointed + lip_color:green" and "ceiling" in composed


def test_probe_command(tmp_path):
    from src.probe import run_probe

    cmd = "python -m src.probe prompt=green_lipstick domain.perspective_distortion=0.5"
    out = run_probe(compose_train(args_of(cmd) + ["probe.n=2", "probe.tints=[0.2]"], tmp_path, "probe"))
    assert out["target"] == "lip_color:green" and "ideal" in out["losses"]


@pytest.mark.slow  # ~45 s on 2 shared cores (8 jobs); the cells' difference is checked fast above
def test_sweep_and_report_commands(tmp_path):
    """The README's sweep as typed on the command line (a few steps per job), then its report: 8 configurations,
    no two with the same numbers."""
    shrink = [o for o in FAST if not o.startswith(("domain=", "eval_after_fit"))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    words = (
        shlex.split(SWEEP)[1:]
        + shrink
        + [f"hydra.sweep.dir={tmp_path}/multirun", f"paths.log_dir={tmp_path}"]
    )
    res = subprocess.run(
        [sys.executable, *words], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    from src.report import main as report

    assert (
        report(
            args_of(
                "python -m src.report multirun/<time>".replace("multirun/<time>", str(tmp_path / "multirun"))
            )
        )
        == 0
    )
    import csv

    rows = list(csv.DictReader(open(tmp_path / "multirun" / "report" / "results.csv")))
    rows = [r for r in rows if r["prompt"] != "all"]
    assert len(rows) == 8, [r["configuration"] for r in rows]
    numbers = {tuple(v for k, v in sorted(r.items()) if k.endswith("_mean")) for r in rows}
    assert len(numbers) == 8, "two cells of the README's sweep show the same numbers"
