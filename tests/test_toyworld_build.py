"""The toyfaces build in smoke mode (every stage, seconds), its assets, and the whole method on them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from src.models.weights import WeightsError
from src.toyworld import assets
from src.toyworld.build.cli import main as build_main
from src.toyworld.build.export import write_manifest
from src.toyworld.judge.oracle import load_oracle
from src.toyworld.judge.shortcuts import counterfactual_values
from tests.conftest import ROOT

ASSET_FILES = {
    "generator.pt",
    "inverter.pt",
    "oracle.pt",
    "clip.pt",
    "clip_resnet.pt",
    "latents.pt",
    "sampler.pt",
    "identity.pt",
    "report.json",
    "build_config.json",
}
REPORT_KEYS = {
    "clip_zero_shot_acc",
    "recon_psnr_db",
    "recon_oracle_agreement",
    "counterfactual_recon_agreement",
    "oracle_clean_acc",
    "random_valid_rate",
    "reachability",
    "recon_psnr_db_encoder",
    "oracle_rule_agreement",  # the calibrated oracle vs the region rule, per counterfactual value
    "oracle_rule_agreement_min",
    "oracle_rule_agreement_fidelity",  # ... vs region fidelity alone (the rule without the colour vote)
    "oracle_rule_agreement_labels",  # which rule labelled the calibration set ("vote": the judge's)
    "ceilings",  # the ideal-edit metrics of the world's inversion of each ideal edit
    "identity_verification",  # the identity net's same/different-face accuracy on held-out faces
    "clip_fooled_heldout",  # the guiding CLIP's fooled rate per value on held-out shortcuts (harden stage)
    "clip_fooled_heldout_max",
}


@pytest.fixture(scope="session")
def smoke_assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toyfaces")
    out = root / "assets"
    assert build_main(["--smoke", "--work", str(root / "work"), "--out", str(out)]) == 0
    return out


def test_smoke_build_writes_every_asset_with_a_manifest(smoke_assets):
    man = assets.manifest(smoke_assets)
    assert set(man["files"]) == ASSET_FILES
    assert "python -m src.toyworld.build" in man["build_command"]
    for name, entry in man["files"].items():
        assert assets.sha256(smoke_assets / name) == entry["sha256"]
        if name.endswith(".pt"):
            torch.load(smoke_assets / name, weights_only=True)  # no pickled code anywhere
    report = json.loads((smoke_assets / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["oracle_rule_agreement_labels"] == "vote"
    # the dense stage's lip reader ships in the oracle; the report keeps the pooled heads' agreement beside it
    assert any(k.startswith("dense.heads.lip_color.") for k in torch.load(smoke_assets / "oracle.pt"))
    assert set(report["oracle_rule_agreement_pooled"]) == set(report["oracle_rule_agreement"])
    assert report["oracle_dense"]["attributes"] == ["lip_color"]
    # every stage's time, the report's own included (the report stage writes them before it has finished)
    assert {"oracle", "calibrate", "report"} <= set(report["build_seconds"])
    # the harden stage's CLIP ships; the report holds its held-out fooled rate for every counterfactual value
    assert "harden" in report["build_seconds"]
    assert set(report["clip_fooled_heldout"]) == {f"{a}:{v}" for a, v in counterfactual_values()}
    assert all(0.0 <= r["fooled"] <= r["clip_reads"] for r in report["clip_fooled_heldout"].values())


def test_assets_load_through_the_common_model_code(smoke_assets):
    gen = assets.load_generator(str(smoke_assets))
    clip = assets.load_clip(str(smoke_assets))
    inv = assets.load_inverter(str(smoke_assets))
    lat = assets.load_latents("test", str(smoke_assets))
    w = lat["latents"][:2]
    assert w.shape[1:] == (gen.n_latent, gen.style_dim)
    x = gen.synthesis(w)
    assert x.shape == (2, 3, 64, 64) and inv(x).shape == w.shape
    assert clip.encode_image(x).shape == (2, clip.embed_dim)
    oracle = load_oracle(str(smoke_assets))  # the smoke build's calib_ensemble="8": two members
    assert len(oracle.members) == 2 and oracle.predict(x)["ears"].shape == (2,)
    assert assets.load_sampler(str(smoke_assets)).sample(3).shape == (3, gen.n_latent, gen.style_dim)
    ident = assets.load_identity(str(smoke_assets))
    assert ident(x).shape == (2, ident.dim) and not any(p.requires_grad for p in ident.parameters())


def test_a_modified_asset_is_refused_with_the_fix(smoke_assets, tmp_path):
    bad = tmp_path / "assets"
    shutil.copytree(smoke_assets, bad)
    with open(bad / "oracle.pt", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(WeightsError, match="sha256.*python -m src.toyworld.build"):
        load_oracle(str(bad))
    (bad / "manifest.json").unlink()
    with pytest.raises(WeightsError, match="manifest.json is missing"):
        assets.load_generator(str(bad))


def test_report_command_prints_json(smoke_assets):
    res = subprocess.run(
        [sys.executable, "-m", "src.toyworld.build.report", "--asset-dir", str(smoke_assets)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert REPORT_KEYS <= set(report) and set(report["meets_targets"]) and report["assets_bytes"] > 0


def test_train_and_eval_on_toyfaces(fast_cfg, smoke_assets, tmp_path):
    from src.train import train

    cfg = fast_cfg(
        "domain=toyfaces",
        f"domain.asset_dir={smoke_assets}",
        "prompt=elf_ears",
        "aug.num_views=2",
        "eval_after_fit=true",
        "data.num_test=4",
    )
    assert cfg.prompt.target == "face with elf ears"  # the domain's own phrasing
    metrics = train(cfg)
    for key in (
        "eval/edit_accuracy",
        "eval/preservation",
        "eval/leakage",
        "eval/realism/valid_rate",
        "eval/clip_score",
        "eval/unedited_accuracy",
    ):
        assert key in metrics, key
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["target"] == "ears:pointed" and 0 <= result["edit_accuracy"] <= 1
    assert set(result["preservation_per_attribute"]) == {
        "eyebrow_color",
        "lip_color",
        "iris_color",
        "skin_tone",
        "style",
        "hair_color",
    }
    # the CLI evaluates the run checkpoint with the same code
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.eval",
            f"ckpt={tmp_path}/checkpoints/last.ckpt",
            f"hydra.run.dir={tmp_path}/evalrun",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    printed, end = json.JSONDecoder().raw_decode(res.stdout[res.stdout.index("{") :])
    assert printed["edit_accuracy"] == pytest.approx(result["edit_accuracy"])
    assert printed["faithful_rate"] == pytest.approx(result["faithful_rate"])
    assert printed["ceiling"]["faithful_rate"] is not None  # the smoke build's report holds the ceilings
    # is the guide fooled? the CLIP's reading against the rule, and the run's loss on a fair ideal edit
    assert 0.0 <= printed["clip_fooled_rate"] <= printed["clip_reads_target_rate"] <= 1.0
    assert 0.0 <= printed["ideal_beats_edit"] <= 1.0 and printed["ideal_beats_edit_faces"] >= 1
    for edit in ("loss_edit", "loss_fair_ideal"):  # term by term, weighted: they add up to the loss
        terms = [v for k, v in printed.items() if k.startswith(edit + "/") and "@" not in k]
        assert len(terms) >= 2 and sum(terms) == pytest.approx(printed[edit], rel=1e-4)
    tail = res.stdout[res.stdout.index("{") + end :]
    assert (
        "(this run | ceiling)" in tail and "faithful_rate" in tail
    )  # each metric printed beside its ceiling
    assert "grid (source | edit | ideal)" in tail
    grid = Image.open(tmp_path / "evalrun" / "eval_grid.png")
    assert grid.height >= 3 * 4 * 64  # three rows (source, edit, ideal), enlarged at least 4x

    # the run's checkpoint is a calibration source of the oracle: its edits, labelled by the region rule
    from src.eval import load_run
    from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
    from src.toyworld.judge.calibration_set import make_calibration_set

    lat = assets.load_latents("train", str(smoke_assets))
    cs = make_calibration_set(
        assets.load_generator(str(smoke_assets)),
        assets.load_inverter(str(smoke_assets)),
        lat["latents"],
        [Attributes.decode(v.numpy()) for v in lat["labels"]],
        lat["seeds"].tolist(),
        runs=[[tmp_path / "checkpoints" / "last.ckpt"]],
        load_run=load_run,
        faces_per_source=2,
        log=lambda _: None,
    )
    kinds = (
        "reconstruction",
        "perturbed latent",
        "latent step",
        "composed",
        "composed, generated",
        "mapper edit",
    )
    assert set(cs.kinds) == set(kinds) and len(cs) == 2 * (2 + 3 * 8 + 1)
    assert cs.images.dtype == torch.uint8 and cs.labels.shape == (len(cs), 7)
    assert cs.side_labels.shape == (len(cs), 3, 2) and cs.faces.shape == (len(cs),)
    # ears, eyebrow_color, iris_color: where both sides agree, the pair reads it
    pairs = cs.labels[:, [0, 1, 3]]
    agree = cs.side_labels[..., 0] == cs.side_labels[..., 1]
    assert agree.any() and (cs.side_labels[..., 0][agree] == pairs[agree]).all()
    assert {t for t, k in zip(cs.targets, cs.kinds) if k == "mapper edit"} == {("ears", "pointed")}
    assert {t for t, k in zip(cs.targets, cs.kinds) if k == "reconstruction"} == {None}
    # what the oracle reads each image against, and the edit question it learns (calibration_set.calibrate)
    from src.toyworld.judge.calibration_set import edit_codes, read_edits, references
    from src.toyworld.judge.oracle import Oracle

    faces = [Attributes.decode(lat["labels"][i].numpy()) for i in cs.faces]
    codes = edit_codes(cs.targets, faces)
    none = torch.tensor([t is None for t in cs.targets])
    assert (codes[none] == -1).all() and (codes[~none] >= 0).all()
    i = cs.kinds.index("mapper edit")
    # pointed ears, from the face's own
    assert codes[i].tolist() == [0, 1, SCHEMA["ears"].index(faces[i].ears)]
    ref = references(assets.load_generator(str(smoke_assets)), lat["latents"], cs.faces)
    assert ref.shape == cs.images.shape and ref.dtype == torch.uint8
    j = cs.kinds.index("reconstruction")
    assert (ref[j].int() - cs.images[j].int()).abs().max() <= 1  # a reconstruction is its own reference
    pred = read_edits(
        Oracle().with_reference().eval(), cs.float_images(), ref.float() / 127.5 - 1, cs.targets
    )
    assert set(pred) == set(LABEL_ATTRIBUTES) and pred["ears"].shape == (len(cs),)


def test_from_assets_rebuilds_only_the_later_stages(smoke_assets, tmp_path):
    """--from-assets unpacks shipped assets as finished stages; re-exporting them changes no generator byte."""
    work, out = tmp_path / "work", tmp_path / "assets"
    shutil.copytree(smoke_assets, out)
    assert (
        build_main(
            ["--smoke", "--from-assets", "--work", str(work), "--out", str(out), "--stages", "report,export"]
        )
        == 0
    )
    assert {"oracle.pt", "clip.pt", "autoencoder.pt", "identity.pt", "latents.pt"} <= {
        p.name for p in work.iterdir()
    }
    for name in (
        "generator.pt",
        "inverter.pt",
        "latents.pt",
        "sampler.pt",
        "oracle.pt",
        "clip.pt",
        "clip_resnet.pt",
        "identity.pt",
    ):
        assert assets.sha256(out / name) == assets.sha256(smoke_assets / name), name
    # re-calibrating an unpacked ensemble fine-tunes its members again; it does not add more
    assert (
        build_main(["--smoke", "--work", str(work), "--out", str(out), "--stages", "calibrate", "--force"])
        == 0
    )
    state = torch.load(work / "oracle_calibrated.pt", weights_only=True)["state_dict"]
    assert {k.split(".")[1] for k in state if k.startswith("members.")} == {"0", "1"}


def test_tune_rates_parse_and_bad_keys_fail_early():
    from src.toyworld.attributes import counterfactual_rates
    from src.toyworld.build.config import parse_rates

    rates = parse_rates("ears:pointed=0.25, eyebrow_color:purple=0.1")
    assert rates == {"ears:pointed": 0.25, "eyebrow_color:purple": 0.1} and parse_rates("") == {}
    assert counterfactual_rates(rates)[("ears", "pointed")] == 0.25
    with pytest.raises(ValueError, match="attribute:value=probability"):
        parse_rates("ears:pointed")
    from src.toyworld.training import train_autoencoder

    with pytest.raises(KeyError, match="unknown counterfactual key"):
        train_autoencoder(1, 2, tune_steps=1, tune_rates={"ears:square": 0.5}, pool_size=4, progress=False)


def test_build_settings_parse_as_their_field_types():
    from src.toyworld.build.config import BuildConfig, apply_settings

    cfg = apply_settings(BuildConfig(), ["calib_relative=false", "oracle_width=32", "clip_lr=0.5"])
    assert cfg.calib_relative is False and cfg.oracle_width == 32 and cfg.clip_lr == 0.5
    assert apply_settings(BuildConfig(), ["calib_relative=true"]).calib_relative is True
    for bad, match in (("nope=1", "unknown build setting"), ("calib_relative=maybe", "true or false"),
                       ("oracle_width=wide", "is a int")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            apply_settings(BuildConfig(), [bad])


def test_autoencoder_lr_phases_main_tune_then_polish_to_zero():
    from src.toyworld.training import autoencoder_lr

    lrs = [autoencoder_lr(s, 100, 20, 50) for s in range(170)]
    assert lrs[4] == 1.0 and abs(lrs[99] - 0.05) < 1e-3  # warm-up 5 steps, cosine down to 5%
    assert set(lrs[100:120]) == {0.25}  # tuning: flat
    polish = lrs[120:]
    assert polish[0] == 0.25 and all(a > b for a, b in zip(polish, polish[1:])) and polish[-1] < 1e-3


def test_refine_brings_latents_closer_to_the_render_without_touching_the_generator():
    from src.toyworld.models import build_generator
    from src.toyworld.training import psnr_db, refine

    gen = build_generator(0).eval()  # trainable weights on purpose: refine must not give them gradients
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w_true = gen.mapping(torch.randn(4, gen.style_dim, generator=g))[:, None].repeat(1, gen.n_latent, 1)
        x = gen.synthesis(w_true)  # (4, 3, 64, 64): renders the generator can reproduce exactly
        w0 = w_true + 0.5 * w_true.std() * torch.randn(w_true.shape, generator=g)
    lines: list[str] = []
    w = refine(gen, x, w0, steps=20, chunk=3, log=lines.append)
    assert w.shape == w0.shape and refine(gen, x, w0, steps=0) is w0
    with torch.no_grad():
        before, after = psnr_db(gen.synthesis(w0), x).mean(), psnr_db(gen.synthesis(w), x).mean()
    assert after > before + 1.0, (before, after)
    assert all(p.grad is None for p in gen.parameters())
    assert len(lines) == 2 and lines[-1].startswith("[refine] 4/4: PSNR")


def test_refine_resumes_from_its_chunk_cache(tmp_path):
    from src.toyworld.models import build_generator
    from src.toyworld.training import refine

    gen = build_generator(0).eval().requires_grad_(False)
    x = torch.zeros(3, 3, 64, 64)
    w0 = torch.randn(3, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(1))
    cache = tmp_path / "latents.test.resume.pt"
    key = {"n": 3, "steps": 2, "lr": 0.03, "chunk": 2}
    torch.save({"key": key, "chunks": [torch.full((2, gen.n_latent, gen.style_dim), 7.0)]}, cache)
    lines: list[str] = []
    w = refine(gen, x, w0, steps=2, chunk=2, log=lines.append, cache=str(cache))
    assert (w[:2] == 7.0).all() and not (w[2] == 7.0).any()  # chunk 1 from the cache, chunk 2 computed
    assert "1 chunks done" in lines[0] and not cache.exists()  # deleted once complete
    torch.save({"key": {**key, "steps": 3}, "chunks": [torch.zeros(2, 1)]}, cache)  # another config: ignored
    assert refine(gen, x, w0, steps=2, chunk=2, cache=str(cache)).shape == w0.shape


def test_robust_clip_views_warp_half_the_batch_and_cast_colours_reproducibly():
    from src.augment import perspective
    from src.toyworld.clip_training import robust_views

    # in [-0.8, 0.8]: a gain up to 1.1 never clips, and x + 1 stays far from 0 for the gain ratios below
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    a = robust_views(x, torch.Generator().manual_seed(0), perspective(0.5), 0.1)
    b = robust_views(x, torch.Generator().manual_seed(0), perspective(0.5), 0.1)
    assert torch.equal(a, b) and a.shape == x.shape and a.abs().max() <= 1
    # colour only: every pixel of an image scaled by the same per-channel gain within 1 +- 0.1
    c = robust_views(x, torch.Generator().manual_seed(0), None, 0.1)
    gain = (c + 1) / (x + 1)
    spread = gain.flatten(2).amax(-1) - gain.flatten(2).amin(-1)
    assert spread.max() < 1e-4 and ((gain - 1).abs() <= 0.1 + 1e-5).all() and not torch.allclose(c, x)
    # local casts (4 x 4 grid): the gain varies across an image, still within 1 +- 0.1
    e = robust_views(x, torch.Generator().manual_seed(0), None, 0.1, colour_grid=4)
    local = (e + 1) / (x + 1)
    assert (local.flatten(2).amax(-1) - local.flatten(2).amin(-1)).min() > 1e-3
    assert ((local - 1).abs() <= 0.1 + 1e-5).all()
    # warp only: the second half of the batch is untouched, the first half moved
    d = robust_views(x, torch.Generator().manual_seed(0), perspective(0.5), 0.0)
    assert torch.equal(d[3:], x[3:]) and not torch.allclose(d[:3], x[:3])


def test_clip_tune_stage_fine_tunes_the_clip_stage_clip_and_the_export_ships_it(smoke_assets):
    work = smoke_assets.parent / "work"
    tuned = torch.load(work / "clip_tuned.pt", weights_only=True)
    assert tuned["metrics"]["clip_robust_clutter"] > 0 and tuned["metrics"]["clip_robust_half"] > 0
    first = torch.load(work / "clip.pt", weights_only=True)["state_dict"]
    key = "visual.conv1.weight"
    assert not torch.equal(tuned["state_dict"][key], first[key])  # it trained
    assert assets.latest_clip(work).name == "clip_hardened.pt"  # the harden stage starts from the tuned one
    shipped = torch.load(smoke_assets / "clip.pt", weights_only=True)
    latest = torch.load(assets.latest_clip(work), weights_only=True)["state_dict"]
    assert torch.equal(shipped[key], latest[key].half())


def test_clip_resnet_stage_trains_a_second_clip_with_one_side_cut_off_and_the_export_ships_it(smoke_assets):
    work = smoke_assets.parent / "work"
    trained = torch.load(work / "clip_resnet.pt", weights_only=True)
    assert trained["metrics"]["clip_occlude"] > 0 and trained["metrics"]["clip_robust_occlude"] > 0
    resnet = assets.load_clip(str(smoke_assets), "clip_resnet.pt")
    assert (
        type(resnet.model.visual).__name__ == "ModifiedResNet"
    )  # another architecture than the primary's ViT
    key = "visual.conv1.weight"
    assert torch.equal(resnet.model.state_dict()[key], trained["state_dict"][key].half().float())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert resnet.encode_image(x).shape == assets.load_clip(str(smoke_assets)).encode_image(x).shape
    with pytest.raises(ValueError, match="clip_resnet.pt"):
        assets.load_clip(str(smoke_assets), "clip_vit.pt")
    # the report measures it as it measures the primary: held-out fooled rates and zero-shot accuracy
    second = json.loads((smoke_assets / "report.json").read_text())["clip_resnet"]
    assert 0 <= second["clip_fooled_heldout_max"] <= 1 and 0 <= second["clip_zero_shot_acc"] <= 1


def test_half_edits_change_one_side_of_the_part_only():
    import numpy as np

    from src.toyworld.attributes import Attributes
    from src.toyworld.clip_training import half_edits
    from src.toyworld.render import render_batch

    a = [Attributes(ears="round")] * 4
    x, pairs = half_edits(a, [11, 12, 13, 14], np.random.default_rng(0))
    plain = render_batch(a, [11, 12, 13, 14])
    moved = (x - plain).abs().amax(1) > 0.05  # (N, H, W)
    w = x.shape[-1]
    for i in range(4):
        cols = moved[i].any(0).nonzero().flatten()
        assert len(cols) and (cols.max() < w // 2 + 4 or cols.min() > w // 2 - 4), pairs[i]  # one side only
        assert pairs[i][0] != pairs[i][1]


def test_occlude_side_greys_out_one_side_and_keeps_the_other():
    from src.toyworld.clip_training import occlude_side

    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = occlude_side(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, occlude_side(x, torch.Generator().manual_seed(0)))
    hidden = (y == 0).all(1).all(1)  # (N, W): columns greyed out
    left, right = hidden[:, 0], hidden[:, -1]
    assert (left ^ right).all() and 0.2 < left.float().mean() < 0.8  # one side per image, both sides occur
    assert hidden.float().sum(1).min() >= 0.25 * 32 - 1 and hidden.float().sum(1).max() <= 0.35 * 32 + 1
    assert torch.equal(y[~hidden[:, None, None, :].expand_as(y)], x[~hidden[:, None, None, :].expand_as(x)])


def test_clutter_paints_soft_strokes_reproducibly_and_leaves_most_pixels():
    from src.toyworld.clip_training import clutter

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    a = clutter(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, clutter(x, torch.Generator().manual_seed(0))) and a.shape == x.shape
    assert a.abs().max() <= 1
    changed = ((a - x).abs().amax(1) > 1e-3).float().flatten(1).mean(1)  # share of pixels a stroke touched
    assert (changed > 0).all() and changed.mean() < 0.5  # every image gets a stroke; strokes stay thin


def test_calibration_sets_are_reused_only_for_the_same_runs_and_settings(smoke_assets, capsys):
    from src.toyworld.build.config import BuildConfig
    from src.toyworld.build.stages import Builder

    work = smoke_assets.parent / "work"
    builder = Builder(BuildConfig.smoke(), work, smoke_assets.parent / "recalibrated")
    builder.run(("calibrate",), force=True)
    assert (
        "calibration sets from" in capsys.readouterr().out
    )  # same runs, same settings: the labelled sets are reused
    sets = torch.load(work / "calibration.pt", weights_only=True)
    sets["key"] = sets["key"] + ["a run that is gone"]
    torch.save(sets, work / "calibration.pt")
    builder.run(("calibrate",), force=True)
    out = capsys.readouterr().out
    assert "calibration sets from" not in out and "labelling" in out  # other runs: made and labelled again


def test_calibration_run_plan_fits_each_value_on_other_pairs_than_its_heldout_run(tmp_path):
    """scripts/calibration_runs.sh (DRY_RUN): every value gets 1 + EXTRA fitting runs on distinct (loss, aug) pairs,
    none of them the pair of its held-out run, and the default recipe's own runs are held out."""
    import collections

    env = {**os.environ, "DRY_RUN": "1", "EXTRA": "3"}
    out = subprocess.run(
        ["bash", "scripts/calibration_runs.sh", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    fit, held = collections.defaultdict(list), collections.defaultdict(list)
    for line in out:
        _, path, target, *rest = line.split()
        pair = tuple(r for r in rest if r.startswith(("loss=", "aug=")))
        (fit if "/fit/" in path else held)[target].append(pair)
    assert len(out) == 42 and len(fit) == 8
    for target, pairs in fit.items():
        assert len(pairs) == 4 and len(set(pairs)) == 4, target
        assert not set(pairs) & {p for p in held[target] if p}, target
    assert held["ears:pointed"].count(()) == 1 and held["lip_color:blue"].count(()) == 1  # recipe runs
    env["RECIPE"] = "1"  # plus one default-recipe fitting run per value, on its own seed
    plan = subprocess.run(["bash", "scripts/calibration_runs.sh", str(tmp_path)], env=env, capture_output=True,
                          text=True, check=True).stdout.splitlines()  # fmt: skip
    recipe = [line.split() for line in plan if "/fit/recipe_" in line]
    assert len(plan) == 50 and sorted(r[2] for r in recipe) == sorted(fit)
    assert all(r[4] == "steps=400" and r[5:] == [] for r in recipe) and len({r[3] for r in recipe}) == 8
    env["RECIPE"] = "2"
    bad = subprocess.run(
        ["bash", "scripts/calibration_runs.sh", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "RECIPE must be 0 or 1" in bad.stderr


def test_rejudge_keeps_the_previous_verdicts_resumes_and_shards(tmp_path):
    """scripts/rejudge.sh, with a stand-in for python: every finished job is judged once, into <job>/eval, its old
    eval.json kept as eval_<TAG>.json; a second pass skips them; SHARD=k/n splits the jobs."""
    stub = tmp_path / "python"
    stub.write_text(
        '#!/bin/bash\nfor a; do case $a in hydra.run.dir=*) echo new > "${a#*=}/eval.json";; esac; done\n'
    )
    stub.chmod(0o755)
    jobs = [tmp_path / "sweep" / str(i) for i in range(3)]
    for job in jobs:
        (job / "checkpoints").mkdir(parents=True)
        (job / "checkpoints" / "last.ckpt").write_text("")
        (job / "eval").mkdir()
        (job / "eval" / "eval.json").write_text("old")

    def run(shard: str) -> str:
        env = {**os.environ, "TAG": "v0", "SHARD": shard, "PYTHON": str(stub)}
        cmd = ["bash", "scripts/rejudge.sh", str(tmp_path / "sweep")]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout

    assert run("1/2").count("[rejudge]") == 1  # the middle job only
    assert (jobs[1] / "eval" / "eval.json").read_text().strip() == "new"
    assert (jobs[0] / "eval" / "eval.json").read_text() == "old"
    assert run("0/1").count("[rejudge]") == 2  # the other two; the judged one is skipped
    for job in jobs:
        assert (job / "eval" / "eval_v0.json").read_text() == "old"
        assert (job / "eval" / "eval.json").read_text().strip() == "new"
    assert run("0/1").count("[rejudge]") == 0


def test_a_new_stage_one_oracle_drops_the_ensemble_members_of_the_old_one(tmp_path):
    """calib_ensemble's extra stage-one oracles (<work>/oracle_w<width>.pt) are retrained after the oracle stage."""
    from src.toyworld.build.config import BuildConfig
    from src.toyworld.build.stages import Builder

    work = tmp_path / "work"
    work.mkdir()
    (work / "oracle_w8.pt").write_bytes(b"stale")
    Builder(BuildConfig.smoke(), work, tmp_path / "out", progress=False).run(("oracle",), force=True)
    assert (work / "oracle.pt").is_file() and not (work / "oracle_w8.pt").exists()


def test_ceilings_stage_refreshes_only_the_reports_ceilings(smoke_assets, tmp_path):
    """--from-assets --stages ceilings,export recomputes the ceilings with the current judge (the nearest-target
    vote included) into the shipped report; the weights and the rest of the report stay as they were."""
    work, out = tmp_path / "work", tmp_path / "assets"
    shutil.copytree(smoke_assets, out)
    before = json.loads((out / "report.json").read_text())
    for c in before["ceilings"].values():
        c.pop("nearest_target_rate", None)  # as a report made before the vote
    (out / "report.json").write_text(json.dumps(before))
    write_manifest(out, "test")
    args = ["--smoke", "--from-assets", "--work", str(work), "--out", str(out), "--stages", "ceilings,export"]
    assert build_main(args) == 0
    after = json.loads((out / "report.json").read_text())
    assert set(after["ceilings"]) == set(before["ceilings"])
    assert all("nearest_target_rate" in c for c in after["ceilings"].values())
    assert after["oracle_clean_acc"] == before["oracle_clean_acc"] and "ceilings" in after["build_seconds"]
    for name in ("generator.pt", "oracle.pt", "latents.pt"):
        assert assets.sha256(out / name) == assets.sha256(smoke_assets / name), name
    with pytest.raises(SystemExit):
        build_main(["--smoke", "--work", str(work), "--out", str(out), "--stages", "ceiling"])
