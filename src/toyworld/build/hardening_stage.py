"""The build's ``harden`` stage (the guiding CLIP trained against shortcuts mined through the generator) and the
report's held-out robustness figure (``clip_fooled_heldout``: shortcuts of test latents, held-out texts and seeds)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from src.toyworld.assets import build_clip, guiding_clip
from src.toyworld.attributes import Attributes, uniform_rates
from src.toyworld.build.hardening import harden_clip
from src.toyworld.build.report import FOOLED_TARGET, _scenes, zero_shot_accuracy
from src.toyworld.judge.shortcuts import measure_fooling
from src.toyworld.render import render_batch


def _split(lat: dict[str, torch.Tensor], split: str) -> dict[str, torch.Tensor]:
    return {"latents": lat[split].float(), "labels": lat[f"{split}_labels"], "seeds": lat[f"{split}_seeds"]}


def harden_stage(builder: Any, c: Any) -> None:
    """Fine-tune the clip stage's CLIP against attacks on the training latents -> ``clip_hardened.pt``."""
    work = builder.work
    (work / "clip_hardened.pt").unlink(missing_ok=True)  # a forced re-run starts from the clip stage's CLIP
    clip = guiding_clip(work, c.seed)
    if c.harden_steps <= 0:
        builder.log("[harden] harden_steps=0: the guiding CLIP is the clip stage's")
        torch.save({"state_dict": clip.model.state_dict(), "metrics": {}}, work / "clip_hardened.pt")
        return
    gen, inv = builder.load_autoencoder()
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    metrics = harden_clip(
        clip,
        gen,
        inv,
        _split(lat, "train"),  # mined on training latents only: the report's figure holds out the test ones
        c.harden_steps,
        lr=c.harden_lr,
        seed=c.seed,
        groups=c.harden_groups,
        group_size=c.harden_group_size,
        attack_steps=c.harden_attack_steps,
        attack_age=c.harden_attack_age,
        render_batch_size=c.harden_batch,
        mined_batch=3 * c.harden_batch // 4,
        recon_size=c.harden_recon,
        direction_weight=c.harden_direction,
        direction_margin=c.harden_margin,
        direction_align=c.harden_align,
        real_per_value=c.harden_real,
        pool_size=c.pool_size,
        resume_path=str(work / "harden.resume.pt"),
        progress=builder.progress,
    )
    torch.save({"state_dict": clip.model.state_dict(), "metrics": metrics}, work / "clip_hardened.pt")


def robustness_report(builder: Any, c: Any, zero_shot: bool = True) -> dict[str, Any]:
    """Held-out fooled rates of the guiding CLIP per value: attacks of the default recipe's loss and views on the
    first ``robust_faces`` test latents, with the held-out texts ("face with ...") and seeds no stage mined; and the
    CLIP's zero-shot accuracy on held-out renders (the report's ``clip_zero_shot_acc``, as the report stage has it;
    ``zero_shot=False`` where the caller measured it already). With a ``clip_resnet`` stage, the same figures of the
    second CLIP under ``clip_resnet`` (the recipe's guide is the two CLIPs' mean)."""
    gen, _ = builder.load_autoencoder()
    test = _split(torch.load(builder.work / "latents.pt", map_location="cpu", weights_only=True), "test")
    out = _robustness(builder, c, gen, test, guiding_clip(builder.work, c.seed), "clip", zero_shot)
    second = builder.work / "clip_resnet.pt"
    if second.is_file():
        resnet = build_clip(second, c.seed, "clip_resnet.pt")
        out["clip_resnet"] = _robustness(builder, c, gen, test, resnet, "clip_resnet", True)
    return out


def _robustness(
    builder: Any, c: Any, gen: Any, test: dict[str, torch.Tensor], clip: Any, name: str, zero_shot: bool
) -> dict[str, Any]:
    k = min(c.robust_faces, test["latents"].shape[0])
    attrs = [Attributes.decode(v.numpy()) for v in test["labels"][:k]]
    per_value = measure_fooling(
        gen, clip, test["latents"][:k], attrs, test["seeds"][:k].tolist(), c.robust_attack_steps,
        seed=c.seed + 1000, log=builder.log,
    )  # fmt: skip
    worst = max(v["fooled"] for v in per_value.values())
    builder.log(
        f"[robustness] {name}: held-out fooled rate, worst value {worst:.3f} (target <= {FOOLED_TARGET})"
    )
    out: dict[str, Any] = {}
    if zero_shot:  # a new guiding CLIP has its own zero-shot accuracy
        zs_attrs, zs_seeds = _scenes(c.report_size, c.seed + 8, uniform_rates())
        zs = zero_shot_accuracy(clip, render_batch(zs_attrs, zs_seeds), zs_attrs)
        builder.log(f"[robustness] {name} zero-shot {zs}")
        out = {"clip_zero_shot_acc": float(np.mean(list(zs.values()))), "clip_zero_shot_per_attribute": zs}
    return {
        **out,
        "clip_fooled_heldout": per_value,
        "clip_fooled_heldout_max": worst,
        "clip_fooled_heldout_setup": {
            "faces": k, "attack_steps": c.robust_attack_steps, "attack": "clip_nce + perspective x8 + pixel L1 1.5",
            "texts": "face with <phrase> (never mined)", "target_max": FOOLED_TARGET,
        },
    }  # fmt: skip
