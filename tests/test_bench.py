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

from src.bench_options import PRESETS, parse_args

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
    "prompts",
    "clip_input",
    "views_size",
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
    "host_sync_sites",
    "loadavg_1m",
    "cache",
    "cache_entries",
    "graph",
    "step_uncached_ms",
    "cache_speedup",
    "cpu_cache_speedup",
    "step_uncached_ms_range",
    "ms_per_sample",
    "projected_50k_steps_h",
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
    assert out["host_syncs_per_step"] is None and out["host_sync_sites"] is None  # counted on CUDA only
    # the default is the steady state: a warm source cache, beside the same step without it
    assert out["cache"] == "warm" and out["cache_entries"] == ["clip", "identity"]
    assert out["step_uncached_ms"] > 0 and out["cache_speedup"] > 0 and out["cpu_cache_speedup"] > 0
    assert out["projected_50k_steps_h"] == pytest.approx(out["step_ms"] * 50_000 / 3.6e6, rel=1e-2)


def test_cache_modes_graph_fallback_and_no_official() -> None:
    """cache=off measures no second step; cache=cold runs; graph=true on the CPU is the eager step, said so."""
    from src.bench import Bench

    def bench(*args: str) -> dict:
        opts, overrides = parse_args(["preset=tiny", "steps=1", "warmup=0", "device=cpu", *args])
        return Bench(opts, overrides).run()

    off = bench("cache=off", "official=false")
    assert off["cache"] == "off" and off["step_uncached_ms"] == off["step_ms"] and off["cache_speedup"] == 1
    assert off["official_ms"] is None and off["speedup_vs_official"] is None
    assert set(off["peak_mem_mb"]) == {"ours", "core"}
    cold = bench("cache=cold", "graph=true", "official=false")
    assert cold["cache"] == "cold" and cold["step_uncached_ms"] > 0 and "eager" in cold["graph"]
    with pytest.raises(SystemExit):
        parse_args(["cache=hot"])


def test_overrides_reach_the_config() -> None:
    """Non-bench keys are Hydra overrides of the train config (here: another loss, fewer views)."""
    out = run_bench("preset=tiny", "steps=1", "warmup=0", "views=2", "loss=directional", "threads=1")
    assert out["views"] == 2 and "directional" in out["loss_terms"]
    assert out["speedup_vs_official"] > 0


def test_multi_prompt_step_is_benchmarked() -> None:
    """prompt=multi: the step is step_loss's, one loss per prompt group of the batch."""
    out = run_bench(
        "preset=tiny",
        "steps=1",
        "warmup=0",
        "threads=1",
        "batch=3",
        "prompt=multi",
        "prompt.targets=[a b,c d,e f]",
    )
    assert out["prompts"] == 3 and out["step_ms"] > 0


def test_parse_args_defaults_and_errors() -> None:
    opts, overrides = parse_args(["preset=ffhq1024", "device=cpu", "aug.resize_to=null", "compile=false"])
    assert opts["steps"] == PRESETS["ffhq1024"]["steps"] and opts["warmup"] == PRESETS["ffhq1024"]["warmup"]
    assert opts["batch"] == 2 and opts["views"] == 8 and opts["compile"] is False
    assert overrides == ["aug.resize_to=null"]
    with pytest.raises(SystemExit):
        parse_args(["preset=nope"])
    with pytest.raises(SystemExit):
        parse_args(["precision=fp8"])
    with pytest.raises(SystemExit):
        parse_args(["steps"])


def test_sync_sites_are_named_from_their_package() -> None:
    """host_sync_sites name files from the sys.path entry they come from: ``kornia/...``, ``src/...``."""
    import kornia

    import src.module
    from src.bench_syncs import _short

    assert _short(kornia.__file__) == os.path.join("kornia", "__init__.py")
    assert _short(src.module.__file__) == os.path.join("src", "module.py")


@pytest.mark.gpu
def test_cuda_step_has_no_host_syncs() -> None:
    """On a GPU our step (compute_context + loss + backward + optimizer step) never waits for the device."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = run_bench("preset=tiny", "steps=3", "warmup=2", "device=cuda")
    assert out["device"].startswith("cuda") and out["speedup_vs_official"] > 0
    assert out["host_syncs_per_step"] == 0, out["host_sync_sites"]


# ---- the speed edits of the lean step keep the results ------------------------------------------------------


def test_fast_perspective_warp_equals_kornia() -> None:
    """warp_homography (one matmul grid) = kornia's warp_perspective, zero padding and constant fill."""
    import kornia.augmentation as KA
    import torch
    from kornia.geometry.transform import warp_perspective

    from src.augment import perspective, warp_homography

    torch.manual_seed(0)
    x = torch.rand(6, 3, 40, 40) * 2 - 1
    ref_t = KA.RandomPerspective(0.5, p=1.0)
    params = ref_t.forward_parameters(x.shape)
    torch.testing.assert_close(perspective(0.5)(x, params=params), ref_t(x, params=params), atol=1e-4, rtol=0)
    m = ref_t.compute_transformation(x, params, ref_t.flags)
    for fill in (0.5, -1.0):
        ref = warp_perspective(
            x, m, (40, 40), align_corners=False, padding_mode="fill", fill_value=torch.tensor([fill])
        )
        torch.testing.assert_close(warp_homography(x, m, fill=fill), ref, atol=1e-4, rtol=0)


def test_multiview_resize_to_makes_views_at_clip_size() -> None:
    import torch

    from src.augment import MultiView, perspective

    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    views = MultiView(perspective(), 4, resize_to=32)(x)
    assert views.shape == (2, 4, 3, 32, 32)
    views.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert MultiView(None, 2, resize_to=128)(x).shape == (2, 2, 3, 64, 64)  # never upsamples


def test_styled_conv_epilogue_equals_reference_order() -> None:
    """conv -> * demod -> + noise -> + bias -> lrelu * sqrt(2), as rosinality, in value and gradient."""
    import torch

    from src.models.stylegan2_blocks import StyledConv

    torch.manual_seed(0)
    for upsample in (False, True):
        layer = StyledConv(6, 5, 3, 16, upsample=upsample)
        layer.noise.weight.data.fill_(0.3)
        layer.activate.bias.data.normal_()
        x, style = torch.randn(2, 6, 8, 8, requires_grad=True), torch.randn(2, 16)
        noise = torch.randn(1, 1, 16 if upsample else 8, 16 if upsample else 8)
        got = layer(x, style, noise=noise)
        (g_got,) = torch.autograd.grad(got.square().sum(), x)
        ref = layer.activate(layer.noise(layer.conv(x, style), noise=noise))
        (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g_got, g_ref, atol=1e-4, rtol=1e-4)


def test_generator_nhwc_equals_nchw() -> None:
    import torch

    from src.models.stylegan2 import Generator

    torch.manual_seed(0)
    g = Generator(32, 64, 2, channel_max=64).eval()
    w = torch.randn(2, 64)
    g.channels_last = False
    a = g.synthesis(w)
    g.channels_last = True
    torch.testing.assert_close(g.synthesis(w), a, atol=1e-4, rtol=1e-4)


def test_clip_encodes_a_list_of_batches_in_one_call() -> None:
    import torch

    from src.models.factory import create_clip

    clip = create_clip("cfclip-tiny", model_config="tiny")
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 48, 48) * 2 - 1
    torch.testing.assert_close(
        clip.encode_image([a, b]), torch.cat([clip.encode_image(a), clip.encode_image(b)]), atol=1e-5, rtol=0
    )
