"""Training-step benchmark: ``python -m src.bench preset=tiny|toyfaces|ffhq1024 [key=value ...]``.

Prints ONE JSON object comparing, on the same models and the same batch, in one interleaved run:

* ``step_ms``: our real training step, ``CFCLIPModule.step_loss`` + backward + optimizer step (what
  ``training_step`` does, without Lightning's logging; ``prompt=multi``: each prompt's samples with its own
  text), built by ``src.builders.build`` from the configs, with the per-latent source cache ``cache=warm``
  (the steady state: every latent seen before), ``cold`` (an empty cache each step: the first epoch) or
  ``off``; ``step_uncached_ms`` is the same step without the cache, ``cache_speedup`` their ratio;
* ``core_ms``: the irreducible core, the edited side only: generator forward+backward on the edited latents and
  CLIP on the K views (forward+backward; the edited image is resized to CLIP's input once and repeated K
  times), nothing else. ``source_render_ms`` is the no-grad render of the source image, which an uncached
  step needs; ``overhead_ratio_full`` counts it as core too;
* ``official_ms``: the same models doing the official code's per-step work (src/bench_official.py: texts
  re-encoded every step, the source encoded K times, K augmentation calls, frozen weights' gradients).

Ratios: ``overhead_ratio = step / core`` (target <= 1.10) and ``speedup_vs_official = official / step``
(target >= 3 at ffhq1024). The variants run round-robin (order rotated every round) so a noisy, shared
machine slows them alike; times are medians over ``steps`` rounds after ``warmup`` rounds. Peak memory is
measured afterwards, one step per variant: CUDA ``max_memory_allocated``; CPU the rise of the resident-set
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``; ``ru_maxrss`` where that is missing).

Bench options (every other ``key=value`` is passed to the train config as a Hydra override, e.g.
``loss=directional aug=affine``): ``preset``, ``steps``, ``warmup``, ``device`` (cpu|cuda), ``batch``,
``views``, ``precision`` (32|bf16: autocast for every variant), ``compile`` (torch.compile of the generator
synthesis and the CLIP image tower), ``channels_last`` (generator activations in NHWC; default: the
generator's own, NHWC on CPU only), ``threads`` (default: torch's), ``frozen_grads`` (the official pattern
computes the frozen weight gradients; default true), ``regularizers`` (keep the domain's identity/perceptual
terms; default: tiny yes, others no), ``tf32`` (CUDA: TF32 matmuls; convolutions use TF32 by torch's
default anyway; default false, as training), ``seed``, ``cache`` (warm|cold|off, default warm), ``official``
(measure the official pattern; default true), ``graph`` (our step through ``src.step_graph.GraphedStep``:
CUDA graphs via torch.compile reduce-overhead on CUDA, the eager step elsewhere; default false).

Presets. ``tiny``: ``domain=tiny``. ``toyfaces``: the shipped toyfaces world when its assets exist, else its
architecture with random weights (64 px generator, style 128, 2 MLP layers, channel_multiplier 1, channels
<= 128, channel_base 4096; the ``toyfaces`` ViT CLIP). ``ffhq1024``: random-weight 1024 px config-f
generator + open_clip's ``ViT-B-32`` architecture with random weights (no download), the 79 ImageNet
templates, batch 2, K 8; on CPU one step takes many seconds, so steps/warmup default to 3/1 (CUDA: 20/5).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from src.bench_official import OfficialStep
from src.bench_options import compose_config, parse_args
from src.bench_syncs import count_host_syncs
from src.data.source_cache import SourceCache, cache_entries
from src.step_graph import GraphedStep
from src.utils.loggers import quiet_library_logs
from src.utils.measure import peak_memory_mb, sync


# ---- the benchmark ---------------------------------------------------------------------------------------
class Bench:
    """Builds the module once and exposes the four measured variants as zero-argument callables."""

    def __init__(self, opts: dict[str, Any], overrides: list[str]):
        from src.builders import build

        self.opts = opts
        self.device = torch.device(opts["device"])
        cfg, self.world = compose_config(opts, overrides)
        self.cfg = cfg
        torch.manual_seed(opts["seed"])
        module, _ = build(cfg)
        self.module = module.to(self.device)
        self.module.train()
        self.generator, self.clip = self.module.generator, self.module.clip
        if opts["channels_last"] is not None:  # default: the generator's own (NHWC on CPU only)
            self.generator.channels_last = opts["channels_last"]
        self.nhwc = getattr(self.generator, "channels_last", False)
        if self.nhwc is None:
            self.nhwc = self.device.type == "cpu"
        if opts["compile"]:
            # compiled functions as instance attributes: module structure and state-dict keys stay as they are
            self.generator.synthesis = torch.compile(self.generator.synthesis)
            visual = self.clip.model.visual
            visual.forward = torch.compile(visual.forward)
        self.optimizer = self.module.configure_optimizers()
        if isinstance(self.optimizer, dict):
            self.optimizer = self.optimizer["optimizer"]
        self.K = opts["views"]
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if opts["precision"] == "bf16"
            else contextlib.nullcontext
        )
        # one fixed batch of latents, as the data module makes them (truncated W toward the mean, as W+)
        g = self.generator
        gen = torch.Generator().manual_seed(opts["seed"])
        with torch.no_grad():
            z = torch.randn(opts["batch"], g.style_dim, generator=gen).to(self.device)
            mean = g.mapping(torch.randn(1024, g.style_dim, generator=gen).to(self.device)).mean(
                0, keepdim=True
            )
            w = mean + 0.7 * (g.mapping(z) - mean)
        self.w = w[:, None].expand(-1, g.n_latent, -1).contiguous()  # (B, L, D)
        with torch.no_grad(), self.autocast():
            self.w_hat = self.module.edit(self.w).float()  # (B, L, D) edited latents for the core
        self.probe = torch.randn(opts["batch"] * self.K, self.clip.embed_dim, device=self.device)
        self.official_step = OfficialStep(
            self.module, self.optimizer, self.w, self.K, self.autocast, opts["frozen_grads"]
        )
        # the batch's latent indices (host), and its source cache: filled now for cache=warm
        self.batch = {"w": self.w, "idx": torch.arange(opts["batch"])}
        self.entries = sorted(cache_entries(self.module)) if self.module.requires else []
        self.cache_mode = opts["cache"] if self.entries else "off"
        self.cache = SourceCache(opts["batch"], "bench")
        if self.cache_mode == "warm":
            with torch.no_grad(), self.autocast():
                x = self.module.render_source(self.w)
                self.cache.store(self.batch["idx"], self.module.source_side(x))
        self.graphed = None
        if opts["graph"]:
            self.graphed = GraphedStep(self.module, self.optimizer, autocast=self.autocast)

    # -- ours: exactly training_step's computation + backward + optimizer step --
    def _step(self, caches: dict[str, SourceCache]) -> None:
        self.module.source_caches = caches
        try:
            if self.graphed is not None:
                self.graphed(self.batch)
                return
            with self.autocast():
                self.optimizer.zero_grad(set_to_none=True)
                total, _parts, _per_prompt = self.module.step_loss(self.batch, training=True)
            total.backward()
            self.optimizer.step()
        finally:
            self.module.source_caches = {}

    def ours(self) -> None:
        if self.cache_mode == "off":
            return self._step({})
        cache = self.cache if self.cache_mode == "warm" else SourceCache(self.opts["batch"], "bench")
        return self._step({"train": cache})

    def ours_uncached(self) -> None:
        self._step({})

    # -- the irreducible core --
    def core(self) -> None:
        clip = self.clip
        w_hat = self.w_hat.detach().requires_grad_(True)  # the edit's latents: gradient flows back to them
        with self.autocast():
            x_hat = self.generator.synthesis(w_hat)  # (B, 3, H, W)
            views = clip.preprocess(x_hat).repeat_interleave(self.K, dim=0)  # (B*K, 3, S, S)
            feats = F.normalize(clip.model.encode_image(views.to(clip.dtype)).float(), dim=-1)
        (feats * self.probe).sum().backward()

    def source_render(self) -> None:
        with torch.no_grad(), self.autocast():
            self.generator.synthesis(self.w)

    # -- the official code's per-step work on the same models (src/bench_official.py) --
    def official(self) -> None:
        self.official_step()

    # -- the run --
    def variants(self) -> dict[str, Callable[[], None]]:
        out = {"ours": self.ours}
        if self.cache_mode != "off":
            out["ours_uncached"] = self.ours_uncached
        out.update(core=self.core, source_render=self.source_render)
        if self.opts["official"]:
            out["official"] = self.official
        return out

    def run(self) -> dict[str, Any]:
        opts, device = self.opts, self.device
        variants = self.variants()
        names = list(variants)
        times: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(opts["warmup"] + opts["steps"]):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no variant always goes first
            for name in order:
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                variants[name]()
                sync(device)
                dt, dc = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
                if r >= opts["warmup"]:
                    times[name].append(dt)
                    cpu[name].append(dc)
        med = {n: statistics.median(v) for n, v in times.items()}
        cpu_med = {n: statistics.median(v) for n, v in cpu.items()}
        memory, how = {}, ""
        for name in ("ours", "core", "official"):
            if name in variants:
                memory[name], how = peak_memory_mb(variants[name], device)
        syncs, sync_sites = (
            count_host_syncs(self.ours, skip=(__file__,)) if device.type == "cuda" else (None, None)
        )
        step, core, src, official = med["ours"], med["core"], med["source_render"], med.get("official")
        uncached = med.get("ours_uncached", step if self.cache_mode == "off" else None)
        cpu_uncached = cpu_med.get("ours_uncached", cpu_med["ours"])

        def ratio(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(a / b, 4)

        return {
            "preset": opts["preset"],
            "world": self.world,
            "device": str(device) if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": opts["batch"],
            "views": self.K,
            "image_size": int(self.generator.size),
            "clip_input": int(self.clip.image_size),
            # the size the K views are warped at (aug.resize_to: clip, the default: CLIP's input; null: the image's)
            "views_size": min(
                getattr(self.module.augment, "size", None) or 1 << 30, int(self.generator.size)
            ),
            "templates": len(self.official_step.templates_source),
            "loss_terms": list(self.module.loss.terms),
            "prompts": len(self.module.texts),  # prompt=multi: one group per prompt in every step
            "precision": opts["precision"] + ("+tf32" if opts["tf32"] else ""),
            "compile": opts["compile"],
            "channels_last": bool(self.nhwc),
            "steps": opts["steps"],
            "warmup": opts["warmup"],
            "cache": self.cache_mode,
            "cache_entries": self.entries,
            "graph": self.graphed.note if self.graphed is not None else None,
            "step_ms": round(step, 3),
            "step_uncached_ms": None if uncached is None else round(uncached, 3),
            "cache_speedup": ratio(uncached, step),
            "core_ms": round(core, 3),
            "overhead_ratio": round(step / core, 4),
            "source_render_ms": round(src, 3),
            "overhead_ratio_full": round(step / (core + src), 4),
            "ms_per_sample": round(step / opts["batch"], 3),
            "projected_50k_steps_h": round(step * 50_000 / 3.6e6, 3),
            "official_ms": None if official is None else round(official, 3),
            "speedup_vs_official": ratio(official, step),
            "official_frozen_grads": opts["frozen_grads"],
            **{f"{key}_ms_range": _range(times.get(name)) for key, name in RANGES},
            # process CPU time (all threads): on a shared, oversubscribed CPU it excludes time spent waiting for
            # a core, so its ratios are steadier than wall-clock ones (CUDA: host time only, not meaningful)
            "cpu_ms": {k: round(v, 3) for k, v in cpu_med.items()},
            "cpu_overhead_ratio": round(cpu_med["ours"] / cpu_med["core"], 4),
            "cpu_cache_speedup": ratio(cpu_uncached, cpu_med["ours"]),
            "cpu_speedup_vs_official": ratio(cpu_med.get("official"), cpu_med["ours"]),
            "peak_mem_mb": {k: round(v, 1) for k, v in memory.items()},
            "peak_mem_method": how,
            "host_syncs_per_step": syncs,
            "host_sync_sites": sync_sites,
            "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }


RANGES = (("step", "ours"), ("step_uncached", "ours_uncached"), ("core", "core"), ("official", "official"))


def _range(values: list[float] | None) -> list[float] | None:
    return None if not values else [round(min(values), 3), round(max(values), 3)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    opts, overrides = parse_args(sys.argv[1:] if argv is None else argv, __doc__ or "")
    if opts["threads"] is not None:
        torch.set_num_threads(opts["threads"])
    if opts["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: device=cuda but CUDA is not available")
    if opts["tf32"]:  # training keeps torch's default (no TF32 matmuls); this shows what TF32 would give
        torch.set_float32_matmul_precision("high")
    quiet_library_logs()
    result = Bench(opts, overrides).run()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
