"""``python -m src.bench``: the tiny preset prints one JSON object with every key; ratios are positive.

No timing assertions: the numbers depend on the machine (and on its load).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.bench import PRESETS, parse_args

ROOT = Path(__file__).resolve().parents[1]

KEYS = {
    "preset",
    "world",
    "device",
    "torch",
    "threads",
    "batch",
    "views",
    "image_size",
    "clip_input",
    "templates",
    "loss_terms",
    "precision",
    "compile",
    "channels_last",
    "steps",
    "warmup",
    "step_ms",
    "core_ms",
    "overhead_ratio",
    "source_render_ms",
    "overhead_ratio_full",
    "official_ms",
    "speedup_vs_official",
    "official_frozen_grads",
    "step_ms_range",
    "core_ms_range",
    "official_ms_range",
    "cpu_ms",
    "cpu_overhead_ratio",
    "cpu_speedup_vs_official",
    "peak_mem_mb",
    "peak_mem_method",
    "host_syncs_per_step",
    "loadavg_1m",
}


def run_bench(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "src.bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got: {proc.stdout[-2000:]}"
    return json.loads(lines[0])


def test_tiny_preset_prints_json_with_all_keys() -> None:
    out = run_bench("preset=tiny", "steps=2", "warmup=1", "device=cpu", "threads=1")
    assert KEYS <= set(out), f"missing keys: {sorted(KEYS - set(out))}"
    assert out["preset"] == "tiny" and out["device"] == "cpu" and out["threads"] == 1
    assert out["batch"] == 2 and out["views"] == 8 and out["steps"] == 2
    for key in ("step_ms", "core_ms", "source_render_ms", "official_ms"):
        assert out[key] > 0, key
    for key in ("overhead_ratio", "overhead_ratio_full", "speedup_vs_official"):
        assert out[key] > 0, key
    for key in ("cpu_overhead_ratio", "cpu_speedup_vs_official"):
        assert out[key] > 0, key
    assert set(out["peak_mem_mb"]) == {"ours", "core", "official"}
    assert all(v >= 0 for v in out["peak_mem_mb"].values())
    assert out["host_syncs_per_step"] is None  # counted on CUDA only


def test_overrides_reach_the_config() -> None:
    """Non-bench keys are Hydra overrides of the train config (here: another loss, fewer views)."""
    out = run_bench("preset=tiny", "steps=1", "warmup=0", "views=2", "loss=directional", "threads=1")
    assert out["views"] == 2 and "directional" in out["loss_terms"]
    assert out["speedup_vs_official"] > 0


def test_parse_args_defaults_and_errors() -> None:
    opts, overrides = parse_args(["preset=ffhq1024", "device=cpu", "+aug.resize_to=224", "compile=false"])
    assert opts["steps"] == PRESETS["ffhq1024"]["steps"] and opts["warmup"] == PRESETS["ffhq1024"]["warmup"]
    assert opts["batch"] == 2 and opts["views"] == 8 and opts["compile"] is False
    assert overrides == ["+aug.resize_to=224"]
    with pytest.raises(SystemExit):
        parse_args(["preset=nope"])
    with pytest.raises(SystemExit):
        parse_args(["precision=fp8"])
    with pytest.raises(SystemExit):
        parse_args(["steps"])
