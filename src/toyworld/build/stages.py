"""Build the toyfaces world from nothing but the renderer: ``python -m src.toyworld.build [--smoke]``.

Stages (each resumable; finished stages are skipped): oracle -> clip -> clip_tune (clutter and one-sided edits
painted on, captioned by what they show) -> clip_resnet (a second CLIP of another architecture) -> autoencoder
(toy StyleGAN2 + inverter) -> identity (the toy ArcFace of the identity loss) -> latents (natural renders inverted by
the inverter + a few steps of W+ optimisation; a random-latent sampler) -> harden (the CLIP trained against shortcut
edits mined through the generator, labelled by the region rule) -> calibrate (the oracle fine-tuned on
generated edits labelled by the region rule) -> dense (its dense colour reader of the lips, fitted to the rule's
per-pixel maps) -> report (targets, the oracle's agreement with the rule, the
ideal-edit ceilings) -> export (fp16 assets, manifest with sha256; the report also carries the identity net's
verification). ``--smoke`` runs every stage for a few steps in seconds (tests use it). ``--from-assets`` unpacks
the shipped assets into the build dir first, so later stages rebuild without the earlier ones.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.eval import load_run
from src.models.clip import clip_preprocess
from src.toyworld import assets
from src.toyworld.attributes import sample_attributes
from src.toyworld.build import export
from src.toyworld.build.config import BuildConfig, parse_rates
from src.toyworld.build.hardening_stage import harden_stage, robustness_report
from src.toyworld.build.report import build_report, report_ceilings
from src.toyworld.clip_training import train_clip
from src.toyworld.identity import train_identity
from src.toyworld.judge.calibration_set import calibrate
from src.toyworld.judge.dense_calibration import calibrate_dense
from src.toyworld.judge.oracle_training import stage_one
from src.toyworld.models import GaussianLatentSampler, Inverter, build_generator
from src.toyworld.pool import TEST_SEED_OFFSET
from src.toyworld.render import render_batch
from src.toyworld.training import invert, refine, train_autoencoder

STAGES = (
    "oracle", "clip", "clip_tune", "clip_resnet", "autoencoder", "identity", "latents", "harden", "calibrate", "dense",
    "report", "export",
)  # fmt: skip
# opt-in stages (never in the default run): ceilings = recompute the report's ideal-edit ceilings alone, after a
# change of the judge (--from-assets --stages ceilings,export: minutes, where the report stage takes about an hour)
# robustness = the report's held-out fooled rates of the guiding CLIP alone (after a new harden stage)
EXTRA_STAGES = ("ceilings", "robustness")
# the file each stage writes when it is done (the stages not listed write none, or only into the report / assets)
STAGE_FILES = {
    "oracle": "oracle.pt",
    "clip": "clip.pt",
    "clip_tune": "clip_tuned.pt",
    "clip_resnet": "clip_resnet.pt",
    "autoencoder": "autoencoder.pt",
    "identity": "identity.pt",
    "latents": "latents.pt",
    "harden": "clip_hardened.pt",
    "calibrate": "oracle_calibrated.pt",
    "dense": "dense.pt",
    "report": "report.json",
}


def scenes(n: int, seed: int, natural: bool, rate: float) -> tuple[list, list[int]]:
    """n (attributes, seed) pairs from the reserved held-out seed range (disjoint from every training pool)."""
    rng = np.random.default_rng([seed, 101])
    attrs = [sample_attributes(rng, 0.0 if natural else rate) for _ in range(n)]
    return attrs, [TEST_SEED_OFFSET + seed * 1_000_000 + i for i in range(n)]


class Builder:
    """Runs the stages into ``work`` (fp32 checkpoints, resumable) and exports fp16 assets into ``out``."""

    def __init__(self, cfg: BuildConfig, work: Path, out: Path, progress: bool = True):
        self.cfg, self.work, self.out, self.progress = cfg, work, out, progress
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)

    def path(self, name: str) -> Path:
        return self.work / name

    def log(self, msg: str) -> None:
        if self.progress:
            print(msg, flush=True)

    # ---- stages -----------------------------------------------------------------------------------------
    def stage_oracle(self) -> None:

        stage_one(self.cfg, self.cfg.oracle_width, self.path("oracle.pt"), self.progress, reuse=False)
        for stale in self.work.glob("oracle_w*.pt"):  # calib_ensemble's members are retrained with it
            stale.unlink()

    def train_clip_stage(
        self,
        stage: str,
        model: torch.nn.Module,
        tokenizer: Any,
        steps: int,
        robust_steps: int,
        seed: int,
        **extra: Any,
    ) -> None:
        """Train ``model`` with the build's CLIP settings, resumable from ``<stage>.resume.pt`` (which a forced run
        deletes), and save it as the stage's output file."""
        c = self.cfg
        cfg = assets.clip_preprocess_cfg(model)
        preprocess = lambda x: clip_preprocess(x, cfg["size"], cfg["mean"], cfg["std"])  # noqa: E731
        metrics = train_clip(
            model, tokenizer, preprocess, steps, c.clip_batch, c.clip_lr, seed=seed, robust_steps=robust_steps,
            robust_perspective=c.clip_robust_perspective, robust_colour=c.clip_robust_colour,
            robust_colour_grid=c.clip_robust_colour_grid, pool_size=c.pool_size,
            resume_path=str(self.path(f"{stage}.resume.pt")), progress=self.progress, **extra,
        )  # fmt: skip
        torch.save({"state_dict": model.state_dict(), "metrics": metrics}, self.path(STAGE_FILES[stage]))

    def stage_clip(self) -> None:
        c = self.cfg
        model, tokenizer = assets.new_clip_model(c.seed)
        self.train_clip_stage("clip", model, tokenizer, c.clip_steps, c.clip_robust_steps, c.seed)

    def stage_clip_tune(self) -> None:
        c = self.cfg
        model, tokenizer = assets.new_clip_model(c.seed)
        model.load_state_dict(
            torch.load(self.path("clip.pt"), map_location="cpu", weights_only=True)["state_dict"]
        )
        self.train_clip_stage(
            "clip_tune", model, tokenizer, 0, c.clip_tune_steps, c.seed + 1,
            robust_clutter=c.clip_tune_clutter, robust_half=c.clip_tune_half,
        )  # fmt: skip

    def stage_clip_resnet(self) -> None:
        """The second CLIP (a small ResNet image tower), trained as the clip stage's with one side of a share
        ``clip_resnet_occlude`` of every batch cut off (``occlude_side``; off by default)."""
        c = self.cfg
        model, tokenizer = assets.new_clip_model(c.seed, "clip_resnet.pt")
        self.train_clip_stage(
            "clip_resnet", model, tokenizer, c.clip_steps, c.clip_robust_steps, c.seed,
            occlude=c.clip_resnet_occlude, robust_occlude=c.clip_resnet_occlude,
        )  # fmt: skip

    def stage_autoencoder(self) -> None:
        c = self.cfg
        gen, inv, metrics = train_autoencoder(
            c.ae_steps,
            c.ae_batch,
            c.ae_lr,
            seed=c.seed,
            counterfactual_rate=c.counterfactual_rate,
            part_weight=c.ae_part_weight,
            tune_steps=c.ae_tune_steps,
            tune_rates=parse_rates(c.ae_tune_rates),
            polish_steps=c.ae_polish_steps,
            pool_size=c.pool_size,
            resume_path=str(self.path("autoencoder.resume.pt")),
            progress=self.progress,
        )
        torch.save(
            {"generator": gen.state_dict(), "inverter": inv.state_dict(), "metrics": metrics},
            self.path("autoencoder.pt"),
        )

    def load_autoencoder(self) -> tuple[torch.nn.Module, Inverter]:
        state = torch.load(self.path("autoencoder.pt"), map_location="cpu", weights_only=True)
        gen = build_generator(self.cfg.seed)
        gen.load_state_dict(state["generator"])
        inv = Inverter(gen.n_latent, gen.style_dim)
        inv.load_state_dict(state["inverter"])
        return gen.eval().requires_grad_(False), inv.eval().requires_grad_(False)  # frozen from here on

    def stage_identity(self) -> None:
        """The identity net, trained on its own renders and their reconstructions (never the oracle's)."""
        c = self.cfg
        gen, inv = self.load_autoencoder()
        net, metrics = train_identity(
            c.identity_steps,
            c.identity_batch,
            seed=c.seed,
            gen=gen,
            inv=inv,
            resume_path=str(self.path("identity.resume.pt")),
            progress=self.progress,
            eval_size=max(c.report_size, 8),
        )
        self.log(f"[identity] verification on held-out faces: {metrics}")
        torch.save({"state_dict": net.state_dict(), "metrics": metrics}, self.path("identity.pt"))

    def stage_latents(self) -> None:
        """Inverted natural renders (no counterfactual value) for mapper training and testing + a sampler."""
        c = self.cfg
        gen, inv = self.load_autoencoder()
        out = {}
        for split, n, seed in (
            ("train", c.num_train_latents, c.seed + 1),
            ("test", c.num_test_latents, c.seed + 2),
        ):
            attrs, seeds = scenes(n, seed, natural=True, rate=0.0)
            x = render_batch(attrs, seeds)
            w = invert(inv, x)
            cache = str(self.path(f"latents.{split}.resume.pt"))
            out[split] = refine(
                gen, x, w, c.invert_refine_steps, c.invert_refine_lr, log=self.log, cache=cache
            )
            out[f"{split}_labels"] = torch.from_numpy(np.stack([a.encode() for a in attrs]))
            out[f"{split}_seeds"] = torch.tensor(seeds, dtype=torch.int64)
            self.log(f"[latents] {split}: {tuple(out[split].shape)}")
        sampler = GaussianLatentSampler(gen.n_latent, gen.style_dim, rank=c.sampler_rank).fit(out["train"])
        out["sampler"] = sampler.state_dict()
        torch.save(out, self.path("latents.pt"))

    def stage_harden(self) -> None:

        harden_stage(self, self.cfg)

    def stage_calibrate(self) -> None:

        # the dense stage attaches its reader to this stage's oracle: a new one needs a new reader
        self.path("dense.pt").unlink(missing_ok=True)
        metrics = calibrate(self, self.cfg, load_run=load_run)
        self.log(f"[calibrate] held-out agreement with the region rule: {metrics['agreement']['target']}")

    def stage_dense(self) -> None:
        if not self.cfg.calib_dense.strip():
            self.log(
                "[dense] no attributes (calib_dense is empty); the oracle reads every target with its heads"
            )
            return
        calibrate_dense(self, self.cfg)

    def stage_report(self) -> None:
        report = build_report(self, self.cfg)
        report.update(robustness_report(self, self.cfg, zero_shot=False))  # build_report measured it
        report["build_seconds"] = {k: v for k, v in self.timings().items()}
        (self.path("report.json")).write_text(json.dumps(report, indent=2))
        self.log(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}, indent=2))

    def refresh_report(self, part: str) -> None:
        """Recompute one part of the report alone: the build's own report, else (--from-assets) the shipped one."""
        path = self.path("report.json")
        if path.is_file():
            report = json.loads(path.read_text())
        elif "report.json" in assets.manifest(self.out)["files"]:
            report = assets.load_report(str(self.out))
        else:
            raise FileNotFoundError(f"no report to refresh: run the report stage first ({path})")
        make = {"ceilings": report_ceilings, "robustness": robustness_report}[part]
        report.update(make(self, self.cfg))
        path.write_text(json.dumps(report, indent=2))

    def stage_ceilings(self) -> None:
        self.refresh_report("ceilings")

    def stage_robustness(self) -> None:
        self.refresh_report("robustness")

    def stage_export(self) -> None:
        export.export(
            self.work,
            self.out,
            self.cfg,
            build_command=" ".join(["python -m src.toyworld.build", *sys.argv[1:]]),
        )
        self.log(f"[export] assets written to {self.out}")

    # ---- driver -----------------------------------------------------------------------------------------
    def done(self, stage: str) -> bool:
        marker = STAGE_FILES.get(stage)
        if (stage == "dense" and not self.cfg.calib_dense.strip()) or (
            stage == "clip_tune" and self.cfg.clip_tune_steps <= 0
        ):
            return True
        return marker is not None and self.path(marker).is_file()

    def timings(self) -> dict[str, float]:
        f = self.path("timings.json")
        return json.loads(f.read_text()) if f.is_file() else {}

    def run(self, stages: tuple[str, ...] = STAGES, force: bool = False) -> None:
        for stage in stages:
            if self.done(stage) and not force:
                self.log(f"[{stage}] done already (in {self.work}); skipping")
                continue
            if force:
                for stale in self.work.glob(f"{stage}.*resume.pt"):  # also latents.<split>.resume.pt
                    stale.unlink()
            self.log(f"[{stage}] starting")
            t0 = time.perf_counter()
            getattr(self, f"stage_{stage}")()
            t = self.timings()
            t[stage] = round(time.perf_counter() - t0, 1)
            self.path("timings.json").write_text(json.dumps(t, indent=2))
            self.log(f"[{stage}] finished in {t[stage]:.0f}s")
