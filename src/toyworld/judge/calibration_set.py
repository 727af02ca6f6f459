"""The oracle's calibration set: generated images of known faces, labelled by the region rule.

Sources (``kind``): reconstructions, perturbed latents, latent steps toward the inverted ideal edit on random
layer subsets, hard negatives composed from renders (raw and through the inverter + generator), and mapper edits
from the checkpoints of short training runs (any loss, any augmentation). See ``src.toyworld.judge.calibration``; the
set's data class and the oracle's reading of it: ``src.toyworld.judge.calibration_data``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from src.toyworld.attributes import COUNTERFACTUAL_VALUES, Attributes
from src.toyworld.judge.calibration import Target, agreement, compose, rule_labels

# the set and its reading moved to src.toyworld.judge.calibration_data; their names stay importable from here
from src.toyworld.judge.calibration_data import (  # noqa: F401
    CalibrationSet,
    edit_codes,
    heldout_metrics,
    read_edits,
    references,
    to_uint8,
)
from src.toyworld.judge.oracle import Oracle, OracleEnsemble
from src.toyworld.judge.oracle_training import evaluate_oracle, finetune_oracle, stage_one
from src.toyworld.render import render_batch
from src.toyworld.training import decode, invert


def run_checkpoints(root: Path | str | None) -> list[list[Path]]:
    """Step checkpoints of every run under ``root`` (``<run>/checkpoints/step_*.ckpt``), one list per run."""
    if not root or not Path(root).is_dir():
        return []
    runs = sorted(p.parent.parent for p in Path(root).glob("*/checkpoints/last.ckpt"))
    return [sorted((r / "checkpoints").glob("step_*.ckpt")) for r in runs]


@torch.no_grad()
def mapper_edits(
    load_run: Callable[[str], tuple[Any, Any, Any]],
    gen: torch.nn.Module,
    w: torch.Tensor,
    runs: Sequence[Sequence[Path]],
    faces: int,
    g: torch.Generator,
    log: Callable[[str], None],
    scale: tuple[float, float] = (1.0, 1.0),
) -> list[tuple[torch.Tensor, torch.Tensor, Target]]:
    """Edits by every step checkpoint of every run, each on its own ``faces`` random latents of ``w``, the mapper's
    latent step scaled by a random factor in ``scale`` (e.g. edit strengths around the ones the run reached):
    (images, face indices, the run's target) per checkpoint. ``load_run`` rebuilds a run's module from its
    checkpoint (``src.eval.load_run``, given by the build: the judge does not import the framework's runner)."""
    out = []
    for ckpts in runs:
        module, cfg, _ = load_run(str(ckpts[-1]))
        module.eval()
        target = tuple(cfg.domain.edits[cfg.prompt.name])
        for ckpt in ckpts:
            module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
            idx = torch.randperm(w.shape[0], generator=g)[:faces]
            f = scale[0] + (scale[1] - scale[0]) * torch.rand(len(idx), 1, 1, generator=g)
            w_hat = torch.cat([w[i] + f[j : j + 128] * (module.edit(w[i]) - w[i]) for j, i in _chunks(idx)])
            out.append((decode(gen, w_hat), idx, target))
        log(f"[calibrate] mapper run {ckpts[-1].parent.parent.name}: {target}, {len(ckpts)} checkpoints")
    return out


def _chunks(idx: torch.Tensor, size: int = 128) -> list[tuple[int, torch.Tensor]]:
    return [(j, idx[j : j + size]) for j in range(0, len(idx), size)]


@torch.no_grad()
def make_calibration_set(
    gen: torch.nn.Module,
    inv: torch.nn.Module,
    w: torch.Tensor,
    attrs: Sequence[Attributes],
    seeds: Sequence[int],
    runs: Sequence[Sequence[Path]] = (),
    faces_per_source: int = 120,
    seed: int = 0,
    log: Callable[[str], None] = print,
    edit_scale: tuple[float, float] = (1.0, 1.0),
    nearest: bool = True,
    load_run: Callable[[str], tuple[Any, Any, Any]] | None = None,
) -> CalibrationSet:
    """Images of the faces (latents ``w`` (N, L, D) of renders ``attrs``/``seeds``) from every source, each source
    on its own ``faces_per_source`` random faces (many faces: the oracle must not learn faces), rule-labelled
    (``nearest``: the rule's target also needs the colour vote, ``src.toyworld.judge.calibration.read_sides_by_rule``)."""
    g = torch.Generator().manual_seed(seed)
    n = w.shape[0]
    images: list[torch.Tensor] = []
    targets: list[Target] = []
    kinds: list[str] = []
    idx_all: list[torch.Tensor] = []

    def add(x: torch.Tensor, idx: torch.Tensor, target: Target, kind: str) -> None:
        images.append(x)
        idx_all.append(idx)
        targets.extend([target] * x.shape[0])
        kinds.extend([kind] * x.shape[0])

    k = min(n, faces_per_source)
    faces = lambda: torch.randperm(n, generator=g)[:k]  # noqa: E731
    idx = faces()
    add(decode(gen, w[idx]), idx, None, "reconstruction")
    idx = faces()
    noise = torch.randn(w[idx].shape, generator=g) * w.std() * (0.1 + 0.4 * torch.rand(k, 1, 1, generator=g))
    add(decode(gen, w[idx] + noise), idx, None, "perturbed latent")
    for attribute, value in COUNTERFACTUAL_VALUES:
        for kind in ("latent step", "composed", "composed, generated"):
            idx = faces()
            a = [attrs[i] for i in idx.tolist()]
            s = [int(seeds[i]) for i in idx.tolist()]
            source = render_batch(a, s)
            ideal = render_batch([x.replace(**{attribute: value}) for x in a], s)
            if kind == "latent step":
                alpha = 0.2 + 1.1 * torch.rand(k, 1, 1, generator=g)
                layers = (torch.rand(k, w.shape[1], 1, generator=g) < 0.7).float()
                x = decode(gen, w[idx] + alpha * layers * (invert(inv, ideal) - w[idx]))
            else:
                x = compose(source, ideal, attribute, g)
                x = decode(gen, invert(inv, x)) if kind == "composed, generated" else x
            add(x, idx, (attribute, value), kind)
    log(f"[calibrate] {sum(x.shape[0] for x in images)} images from renders and latents")
    if runs and load_run is None:
        raise ValueError(
            "make_calibration_set: mapper runs need load_run (src.eval.load_run) to rebuild them"
        )
    for x, idx, target in mapper_edits(load_run, gen, w, runs, k, g, log, edit_scale) if runs else ():
        add(x, idx, target, "mapper edit")
    x = torch.cat(images)
    idx = torch.cat(idx_all)
    a = [attrs[i] for i in idx.tolist()]
    s = [int(seeds[i]) for i in idx.tolist()]
    log(f"[calibrate] labelling {x.shape[0]} images of {len(set(idx.tolist()))} faces by the region rule")
    labels, side_labels, fidelity_ok = rule_labels(x, a, s, targets, nearest)
    return CalibrationSet(to_uint8(x), labels, side_labels, idx, targets, kinds, fidelity_ok)


def calibrate(builder: Any, c: Any, load_run: Callable[[str], tuple[Any, Any, Any]] | None = None) -> dict:
    """The build's ``calibrate`` stage: the stage-one oracle (with ``c.calib_relative``: given a view of each image's
    difference from the reconstruction of its face, ``Oracle.with_reference``, and the edit loss) fine-tuned on a
    calibration set made from the train latents (and the mapper runs under ``<work>/<c.calibration_runs>/fit``);
    agreement with the rule measured on held-out faces (test latents) and held-out runs (``.../heldout``). With
    ``c.calib_ensemble``, oracles of more widths are fine-tuned the same way and read as one (``OracleEnsemble``).
    Writes ``oracle_calibrated.pt``."""
    work, log = builder.work, builder.log
    gen, inv = builder.load_autoencoder()
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    cache = work / "calibration.pt"  # the labelled sets, reused while the runs and settings are the same
    runs = {part: run_checkpoints(work / c.calibration_runs / part) for part in ("fit", "heldout")}
    key = [
        "sides",
        "vote" if c.calib_nearest else "fidelity",
        c.seed,
        c.calib_faces,
        c.calib_heldout_faces,
    ] + [str(p.relative_to(work)) for part in runs.values() for r in part for p in r]  # any work dir's name
    sets = torch.load(cache, map_location="cpu", weights_only=True) if cache.is_file() else {}
    if sets.get("key") == key:
        fit, held = CalibrationSet(**sets["fit"]), CalibrationSet(**sets["heldout"])
        log(f"[calibrate] calibration sets from {cache}")
    else:
        made = {}
        for split, part, faces in (
            ("train", "fit", c.calib_faces),
            ("test", "heldout", c.calib_heldout_faces),
        ):
            attrs = [Attributes.decode(v.numpy()) for v in lat[f"{split}_labels"]]
            log(f"[calibrate] {part}: {len(runs[part])} mapper runs, {faces} faces per source")
            made[part] = make_calibration_set(
                gen, inv, lat[split].float(), attrs, lat[f"{split}_seeds"].tolist(), runs[part], faces,
                seed=c.seed + (31 if part == "fit" else 32), log=log,
                edit_scale=(0.4, 2.5) if part == "fit" else (1.0, 1.0),  # held out: the runs' own edits
                nearest=c.calib_nearest, load_run=load_run,
            )  # fmt: skip
        fit, held = made["fit"], made["heldout"]
        torch.save({"fit": fit.state(), "heldout": held.state(), "key": key}, cache)
    first = Oracle.from_state(
        torch.load(work / "oracle.pt", map_location="cpu", weights_only=True)["state_dict"]
    )
    members = [first]
    if isinstance(first, OracleEnsemble):  # unpacked from ensemble assets (--from-assets): its members
        members = list(first.members)
    else:
        for width in [int(w) for w in c.calib_ensemble.split(",") if w.strip()]:
            log(f"[calibrate] ensemble member: stage-one oracle of width {width}")
            members.append(stage_one(c, width, work / f"oracle_w{width}.pt", builder.progress))
    if c.calib_relative:
        members = [m.with_lab() if c.calib_lab else m.with_reference() for m in members]
    # one member, not mirrored: the oracle itself (c.calib_mirror: each image also read mirrored)
    oracle = (
        members[0] if len(members) == 1 and not c.calib_mirror else OracleEnsemble(members, c.calib_mirror)
    )
    # each image is read beside the reconstruction of its face, as the judge reads an edit
    ref_fit = references(gen, lat["train"].float(), fit.faces) if c.calib_relative else None
    ref_held = references(gen, lat["test"].float(), held.faces).float() / 127.5 - 1.0
    x_held = held.float_images()
    pred = read_edits(oracle, x_held, ref_held, held.targets)
    before = agreement(pred, held.labels, held.targets)
    before_fidelity = agreement(pred, held.labels, held.targets, held.fidelity_ok)
    log(f"[calibrate] stage-one oracle vs rule on held-out edits: {before['target']}")
    edits = None  # the edit loss's (attribute, target, source value) codes, for the relative oracle only
    if c.calib_relative:
        edits = edit_codes(
            fit.targets, [Attributes.decode(lat["train_labels"][i].numpy()) for i in fit.faces]
        )
    for member in members:  # each fine-tuned as it would be alone
        finetune_oracle(member, fit.images, fit.labels, c.calib_steps, c.oracle_batch, seed=c.seed + 33,
                        pool_size=min(c.pool_size, 4096), progress=builder.progress, side_labels=fit.side_labels,
                        references=ref_fit, edits=edits, augment_generated=c.calib_augment)  # fmt: skip
    oracle.eval()
    after = heldout_metrics(oracle, held, ref_held)
    log(f"[calibrate] calibrated oracle vs rule on held-out edits: {after['agreement']['target']}")
    metrics = {
        "agreement_before": before,
        **after,
        "agreement_fidelity_before": before_fidelity,
        "labels_nearest": c.calib_nearest,
        "clean": evaluate_oracle(oracle, max(c.report_size, 8), seed=c.seed + 7),
        "fit_size": len(fit),
        "heldout_size": len(held),
    }
    torch.save({"state_dict": oracle.state_dict(), "metrics": metrics}, work / "oracle_calibrated.pt")
    return metrics
