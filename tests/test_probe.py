"""The loss probe (python -m src.probe): candidates, scores, JSON, errors."""

from __future__ import annotations

import json

import pytest
import torch

from src.probe import candidates, run_probe
from tests.conftest import compose_train


def test_candidates_repaint_only_the_target_part():
    x, cands = candidates("lip_color", "green", n=4, seed=0, tints=[0.2])
    assert set(cands) == {"no edit", "ideal", "half-way ideal", "tint 0.2", "iris_color=green"}
    changed = (cands["ideal"] - x).abs().amax(1) > 0.05  # (n, H, W)
    frac = changed.float().mean().item()
    assert 0 < frac < 0.1, f"the ideal green-lips edit should repaint a small part, got {frac:.3f}"
    green = cands["tint 0.2"] - x  # the tint moves every pixel toward green
    assert green[:, 1].mean() > green[:, 0].mean() and green[:, 1].mean() > green[:, 2].mean()
    torch.testing.assert_close(cands["half-way ideal"], 0.5 * (x + cands["ideal"]))
    # the wrong part: green irises, lips untouched (they differ from the ideal where the ideal repaints)
    wrong = (cands["iris_color=green"] - x).abs().amax(1) > 0.05
    assert wrong.any() and not (wrong & changed).any()
    # purple exists on eyebrows only: no wrong-part candidate
    assert not any("=" in k for k in candidates("eyebrow_color", "purple", n=2, seed=0, tints=[])[1])


def test_probe_json_without_augmentation_prefers_the_ideal_edit(tmp_path):
    """With the world's two CLIPs and one unaugmented view, the toyfaces recipe scores the ideal green lips below a
    whole-image green tint and green eyes (CLIP-NCE of each CLIP with the negatives the domain's rule derives, plus
    identity, pixel L1, the round trip, latent L2 and the target term, 0 for image candidates)."""
    cfg = compose_train(
        ["prompt=green_lipstick", "aug=none", "probe.n=8", "probe.tints=[0.2]"], tmp_path, "probe"
    )
    out = run_probe(cfg)
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert out["target"] == "lip_color:green" and out["n"] == 8
    losses = out["losses"]
    assert set(losses) == {"no edit", "ideal", "half-way ideal", "tint 0.2", "iris_color=green"}
    # the toyfaces recipe: CLIP-NCE and the target term of each CLIP (and their means) + identity + pixel L1 + round
    # trip + latent L2
    assert set(losses["ideal"]) == {
        "total", "clip_nce", "clip_nce@0", "clip_nce@1", "target_clip", "target_clip@0", "target_clip@1",
        "identity", "pixel_l1", "manifold", "latent_l2",
    }  # fmt: skip
    ideal = losses["ideal"]
    assert abs(ideal["clip_nce"] - (ideal["clip_nce@0"] + ideal["clip_nce@1"]) / 2) < 1e-5
    assert losses["no edit"]["pixel_l1"] == 0.0 and losses["no edit"]["identity"] < 1e-5
    assert losses["ideal"]["total"] < min(losses["tint 0.2"]["total"], losses["iris_color=green"]["total"])
    assert out["ideal_beats_shortcuts"] and out["best"] == "ideal"
    # the judge's pixel rules: the ideal passes on every face, no edit and the wrong part never do
    judge = out["judge"]
    assert judge["ideal"]["rule_faithful_rate"] == 1.0 and judge["ideal"]["region_fidelity_min"] == 1.0
    assert (
        judge["no edit"]["rule_faithful_rate"] == 0.0
        and judge["iris_color=green"]["rule_faithful_rate"] == 0.0
    )
    assert judge["tint 0.2"]["collateral_psnr"] < 28.0 and out["best_is_faithful"]


def test_probe_needs_a_prompt_with_ground_truth(tmp_path):
    cfg = compose_train(["domain=tiny", "probe.n=2"], tmp_path, "probe")
    with pytest.raises(ValueError, match="domain.edits"):
        run_probe(cfg)
