"""Every knob of the toyfaces build (``BuildConfig``, saved beside the assets so a build can be repeated exactly), its
smoke-mode values, and the parsing of ``--set KEY=VALUE`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class BuildConfig:
    """Every knob of the build; saved next to the assets so a build can be repeated exactly."""

    seed: int = 0
    oracle_steps: int = 1500
    oracle_batch: int = 128
    oracle_width: int = (
        16  # channels of the oracle's first conv (it doubles per stage; docs/history/judge.md "v6")
    )
    pool_size: int = 8192  # pre-rendered images each training loop samples from (refreshed as it goes)
    clip_steps: int = 2000
    clip_batch: int = 128
    clip_lr: float = 1e-3
    clip_robust_steps: int = 600  # then this many steps on warped, colour-cast views (see train_clip)
    clip_robust_perspective: float = 0.5
    clip_robust_colour: float = 0.08
    clip_robust_colour_grid: int = 1  # 1: one colour cast per image; k: smooth local casts on a k x k grid
    # the clip_tune stage: the CLIP fine-tuned with clutter strokes and one-sided edits painted on a share of each batch
    # (train_clip's robust_clutter / robust_half; docs/guide.md); 0 steps: the clip stage's CLIP as it is
    clip_tune_steps: int = 0
    clip_tune_clutter: float = 0.35
    clip_tune_half: float = 0.2
    # the clip_resnet stage: a second CLIP (ResNet image tower) trained as the clip stage's; with clip_resnet_occlude
    # > 0 that share of each batch has one side cut off (occlude_side). Off: at 0.3 the CLIP read a pointed left ear
    # alone as 0.34 (0.00 without; the right alone 0.98), but elf ears did not gain (docs/guide.md)
    clip_resnet_occlude: float = 0.0
    # adversarial training of the CLIP through the generator (src.toyworld.build.hardening; 0: the CLIP as trained). Off:
    # at 170-380 steps it did not stop make train's streak (fooled 0.97-1.00, faithful 0.00; docs/guide.md), so the
    # shipped CLIP is the clip stage's; --set harden_steps=400 runs it
    harden_steps: int = 0
    harden_lr: float = 1e-4
    harden_groups: int = 8  # attacks advanced in turn, each of harden_group_size training latents
    harden_group_size: int = 16
    harden_attack_steps: int = 4  # attack steps per CLIP step
    harden_attack_age: int = 40  # attack steps before an attack restarts from the source latents
    harden_batch: int = (
        64  # renders per CLIP step, beside harden_batch / 2 reconstructions and 3/4 as many shortcuts
    )
    harden_recon: int = 1024  # generator reconstructions of renders, labelled by the rule
    # weight of the direction ranking (a shortcut's move along the text direction below every real edit's), and the
    # real edits per value it ranks against (reconstructions of natural faces and of the same faces with the value)
    harden_direction: float = 5.0
    harden_margin: float = 0.3
    # also pull each real edit's move toward the text direction (weight of 1 - cosine)
    harden_align: float = 1.0
    harden_real: int = 128
    # the report's held-out robustness: attacks on test latents with held-out texts (src.toyworld.judge.shortcuts)
    robust_faces: int = 16
    robust_attack_steps: int = 40
    ae_steps: int = 2200
    ae_batch: int = 32
    ae_lr: float = 2e-3
    ae_part_weight: float = 4.0  # extra pixel-loss weight on ears, irises, eyebrows and lips
    ae_tune_steps: int = 480  # then this many steps at 25% lr with the values of ae_tune_rates more common
    ae_tune_rates: str = "ears:pointed=0.25,eyebrow_color:purple=0.1"
    ae_polish_steps: int = 3000  # then this many on the tuning renders, lr annealed from 25% to 0
    # per-image W+ optimisation after the inverter, for the latent datasets and the report (0: encoder only)
    invert_refine_steps: int = 50
    invert_refine_lr: float = 0.03
    counterfactual_rate: float = 0.04  # per counterfactual value in the generator's training renders
    num_train_latents: int = 1000
    num_test_latents: int = 200
    report_size: int = 400  # held-out renders per report metric
    reach_faces: int = 16  # test faces per counterfactual value in the reachability check
    # Adam steps of the reachability latent optimisation (60 read pointed ears as 0.56, 300 as 0.88)
    reach_steps: int = 200
    sampler_rank: int = 64
    # oracle calibration on generated edits (src.toyworld.judge.calibration): mapper runs made by
    # scripts/calibration_runs.sh live in <work>/<calibration_runs>/{fit,heldout}/<run>/checkpoints
    calibration_runs: str = "calibration_runs"
    calib_faces: int = (
        160  # random train faces per source of the calibration set (per checkpoint for mapper runs)
    )
    calib_heldout_faces: int = 64  # random test faces per source of the held-out agreement set
    calib_steps: int = 3000
    # the relative oracle: reads each edit beside its reconstruction, trained with the edit loss (docs/history/judge.md "v5");
    # false: the v4 oracle (image only)
    calib_relative: bool = True
    # the relative oracle also sees the image and its difference in CIELAB, where the colour vote is taken
    calib_lab: bool = False
    # degrade the generated calibration images as the renders are (blur, noise); false: only mirrored, so each is
    # read with the pixels its label was made from
    calib_augment: bool = True
    # the calibrated oracle also reads each image mirrored, its sides swapped, and averages (OracleEnsemble mirror)
    calib_mirror: bool = False
    # the rule's target labels also need the nearest-target colour vote, as the judge's faithful rate does
    # (domain.evaluator.faithful.nearest_target); false: region fidelity alone (the labels before the vote)
    calib_nearest: bool = True
    # widths of more stage-one oracles (trained into <work>/oracle_w<width>.pt) calibrated beside oracle.pt and read
    # with it as one (OracleEnsemble; shipped: "32", docs/history/judge.md "v5 + v6"); empty: the one oracle
    calib_ensemble: str = "32"
    # attributes whose targets the oracle reads with a dense per-pixel colour reader (src.toyworld.judge.dense), fitted by
    # the dense stage; the lips' colour votes are near ties that pooled heads miss (docs/judge.md); empty: none
    calib_dense: str = "lip_color"
    calib_dense_steps: int = 4000
    calib_dense_width: int = 32
    ceiling_faces: int = 64  # test faces per counterfactual value for the ideal-edit ceilings
    # the identity net (src.toyworld.identity), the toy ArcFace of the identity loss
    identity_steps: int = 500
    identity_batch: int = 64

    @classmethod
    def smoke(cls) -> BuildConfig:
        return cls(
            oracle_steps=3,
            oracle_batch=16,
            clip_steps=3,
            clip_robust_steps=2,
            clip_tune_steps=2,
            clip_resnet_occlude=0.25,
            clip_batch=8,
            ae_steps=3,
            ae_tune_steps=2,
            ae_polish_steps=2,
            invert_refine_steps=2,
            ae_batch=4,
            num_train_latents=8,
            pool_size=64,
            num_test_latents=4,
            report_size=8,
            reach_faces=2,
            reach_steps=2,
            sampler_rank=4,
            calib_faces=3,
            calib_heldout_faces=2,
            calib_steps=2,
            calib_ensemble="8",
            calib_dense_steps=2,
            calib_dense_width=4,
            harden_steps=2,
            harden_groups=2,
            harden_group_size=2,
            harden_attack_steps=1,
            harden_attack_age=2,
            harden_batch=8,
            harden_recon=8,
            harden_real=4,
            robust_faces=2,
            robust_attack_steps=1,
            ceiling_faces=2,
            identity_steps=2,
            identity_batch=4,
        )


def parse_rates(text: str) -> dict[str, float]:
    """'ears:pointed=0.25,eyebrow_color:purple=0.1' -> {'ears:pointed': 0.25, ...} (empty text: {})."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"bad rate {item!r}: expected attribute:value=probability")
        out[key.strip()] = float(value)
    return out


def apply_settings(cfg: BuildConfig, items: list[str]) -> BuildConfig:
    """``KEY=VALUE`` overrides of BuildConfig fields, each parsed as its field's type (bools as true/false)."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    for kv in items:
        key, _, value = kv.partition("=")
        if key not in fields:
            raise ValueError(f"unknown build setting {key!r}")
        kind = type(getattr(cfg, key))
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"build setting {key} is true or false, got {value!r}")
            setattr(cfg, key, value.lower() in ("true", "1"))
        else:
            try:
                setattr(cfg, key, kind(value))
            except ValueError:
                raise ValueError(f"build setting {key} is a {kind.__name__}, got {value!r}") from None
    return cfg
