"""Ideal-edit metrics and the region rule on hand-made edits with known verdicts (renders, exact masks)."""

from __future__ import annotations

import pytest
import torch

from src.evaluation.toyfaces import judge
from src.toyworld.attributes import SCHEMA, Attributes, sample_attributes
from src.toyworld.judge.calibration import compose, read_sides_by_rule, rule_labels
from src.toyworld.judge.composed import value_renders
from src.toyworld.judge.rule import (
    FaithfulThresholds,
    changed_region,
    ideal_edit_scores,
    psnr_db,
    region_fidelity,
    sides,
)
from src.toyworld.render import render_batch


@pytest.fixture(scope="module")
def faces() -> tuple[list[Attributes], list[int]]:
    import numpy as np

    rng = np.random.default_rng(3)
    return [sample_attributes(rng) for _ in range(6)], [1000 + i for i in range(6)]


def edits(faces: tuple, attribute: str, value: str) -> dict[str, torch.Tensor]:
    attrs, seeds = faces
    source = render_batch(attrs, seeds)
    ideal = render_batch([a.replace(**{attribute: value}) for a in attrs], seeds)
    region = changed_region(ideal, source)
    one_side = torch.where(sides(region, True)[:, :1], ideal, source)
    colour = (ideal * region).sum((0, 2, 3), keepdim=True) / region.sum()
    return {
        "source": source,
        "ideal": ideal,
        "no-op": source.clone(),
        "one side": one_side,
        "global tint": source + 0.35 * (colour - source),
    }


def test_psnr_masks_and_identity() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[:, :, :4] = 0.2  # error only in the top half
    top = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    top[:, :, :4] = True
    assert torch.allclose(psnr_db(a, b, top), torch.full((2,), 10 * torch.log10(torch.tensor(4 / 0.04))))
    assert (psnr_db(a, b, ~top) > 90).all()  # untouched half: identical
    assert torch.isnan(psnr_db(a, b, torch.zeros_like(top))).all()  # empty mask


def test_sides_split_a_pair_at_its_centroid() -> None:
    region = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    region[0, 0, 3, 1] = region[0, 0, 3, 6] = True
    s = sides(region, paired=True)
    assert s.shape == (1, 2, 8, 8) and s[0, 0, 3, 1] and s[0, 1, 3, 6] and s.sum() == 2
    assert sides(region, paired=False).shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    "case, region_ok, collateral_ok",
    [("ideal", True, True), ("one side", False, True), ("global tint", False, False), ("no-op", False, True)],
)
def test_verdicts_on_hand_made_ear_edits(
    faces: tuple, case: str, region_ok: bool, collateral_ok: bool
) -> None:
    e = edits(faces, "ears", "pointed")
    s = ideal_edit_scores(e[case], e["source"], e["ideal"], e["source"], "ears", FaithfulThresholds())
    assert s["region_fidelity"].shape == (6, 2)
    assert bool(s["region_ok"].all()) == region_ok and not (region_ok is False and s["region_ok"].any())
    assert bool(s["collateral_ok"].all()) == collateral_ok
    if case == "ideal":
        assert (s["region_fidelity_min"] == 1).all() and (s["psnr_to_ideal"] > 90).all()
    if case == "one side":  # one side perfect, the other untouched
        fid = s["region_fidelity"].sort(1).values
        assert (fid[:, 0] < 0.2).all() and (fid[:, 1] > 0.95).all()


def test_nearest_target_fails_colours_between_the_source_and_the_target(faces: tuple) -> None:
    """Pink or red lips blended 60% toward black are nearer black than the source (region fidelity passes), but
    they look dark red, not black: the CIELAB vote among every lip colour fails them. The ideal passes it; a
    no-op and one-sided eyebrows fail it."""
    attrs, seeds = faces
    e = edits(faces, "lip_color", "black")
    cands = value_renders(attrs, seeds, "lip_color")
    assert cands.shape == (6, len(SCHEMA["lip_color"].values), *e["ideal"].shape[1:])
    black = SCHEMA["lip_color"].index("black")
    blend = e["source"] + 0.6 * (e["ideal"] - e["source"])

    def score(y: torch.Tensor) -> dict[str, torch.Tensor]:
        return ideal_edit_scores(
            y, e["source"], e["ideal"], e["source"], "lip_color", candidates=cands, target=black
        )

    s = score(blend)
    reddish = torch.tensor([a.lip_color in ("red", "pink") for a in attrs])
    assert reddish.sum() >= 2 and s["region_ok"].all()  # the pixel rule alone passes them all
    assert not s["nearest_ok"][reddish].any()
    assert score(e["ideal"])["nearest_ok"].all() and not score(e["no-op"])["nearest_ok"].any()
    e = edits(faces, "eyebrow_color", "purple")
    cands = value_renders(attrs, seeds, "eyebrow_color")
    s = ideal_edit_scores(
        e["one side"], e["source"], e["ideal"], e["source"], "eyebrow_color", candidates=cands, target=5
    )
    assert not s["nearest_ok"].any()


def test_judge_needs_the_value_renders_unless_the_vote_is_off(faces: tuple) -> None:
    """The faithful verdict includes the vote; without the renders it refuses, and nearest_target=False is the
    pixel rule alone (the judge before the vote)."""
    from src.toyworld.judge.oracle import (
        Oracle,  # an untrained oracle: only the pixel-rule parts are checked here
    )

    attrs, seeds = faces
    e = edits(faces, "lip_color", "black")
    blend = e["source"] + 0.6 * (e["ideal"] - e["source"])
    oracle = Oracle()
    p_src = {a: torch.zeros(6, dtype=torch.long) for a in SCHEMA}
    readings = p_src, {**p_src, "lip_color": torch.full((6,), SCHEMA["lip_color"].index("black"))}
    with pytest.raises(ValueError, match="candidates"):
        judge(oracle, e["source"], blend, e["ideal"], e["source"], "lip_color", "black", readings=readings)
    off = FaithfulThresholds(nearest_target=False)
    out, _ = judge(oracle, e["source"], blend, e["ideal"], e["source"], "lip_color", "black", off, readings)
    assert "nearest_target_rate" not in out
    cands = value_renders(attrs, seeds, "lip_color")
    on, _ = judge(oracle, e["source"], blend, e["ideal"], e["source"], "lip_color", "black", readings=readings,
                  candidates=cands)  # fmt: skip
    assert on["nearest_target_rate"] < 1 and on["faithful_rate"] <= on["nearest_target_rate"]
    assert on["region_pass_rate"] == out["region_pass_rate"] == 1


def test_global_edit_has_no_collateral_region(faces: tuple) -> None:
    e = edits(faces, "style", "neon")
    s = ideal_edit_scores(e["ideal"], e["source"], e["ideal"], e["source"], "style")
    assert s["region_ok"].all() and s["collateral_ok"].all()  # undefined collateral never fails an edit


def test_region_fidelity_is_nan_on_an_empty_side() -> None:
    x = torch.zeros(1, 3, 4, 4)
    fid = region_fidelity(x, x + 1, x - 1, torch.zeros(1, 2, 4, 4, dtype=torch.bool))
    assert torch.isnan(fid).all()


@pytest.mark.parametrize(
    "attribute, value",
    [("ears", "pointed"), ("eyebrow_color", "purple"), ("lip_color", "blue"), ("iris_color", "red")],
)
def test_rule_reads_like_a_person(faces: tuple, attribute: str, value: str) -> None:
    """The ideal and a 90% blend read as the target (and a 60% blend, by region fidelity without the colour vote,
    which can find it nearer another value); a no-op, a 30% global tint and (for pairs) one side do not; and the
    other attributes keep their values."""
    attrs, seeds = faces
    e = edits(faces, attribute, value)
    for f in (0.6, 0.9):
        e[f"blend {f}"] = e["source"] + f * (e["ideal"] - e["source"])
    expect = {"ideal": True, "blend 0.9": True, "blend 0.6": True, "no-op": False, "global tint": False}
    if attribute != "lip_color":  # lips are one part: "one side" is the whole lip
        expect["one side"] = False
    for case, want in expect.items():
        for y, a, s in zip(e[case], attrs, seeds):
            read = read_sides_by_rule(y, a, s, (attribute, value), nearest=case != "blend 0.6")[0]
            assert (getattr(read, attribute) == value) == want, (case, a, s)
            if case in ("ideal", "no-op"):
                assert read.replace(**{attribute: getattr(a, attribute)}) == a, case


def test_rule_labels_group_faces_and_composites_are_labelled(faces: tuple) -> None:
    attrs, seeds = faces
    e = edits(faces, "ears", "pointed")
    x = compose(e["source"], e["ideal"], "ears", torch.Generator().manual_seed(0))
    labels, side_labels, fidelity_ok = rule_labels(
        torch.cat([x, e["source"]]), attrs * 2, seeds * 2, [("ears", "pointed")] * 12
    )
    assert labels.shape == (12, 7) and side_labels.shape == (12, 3, 2) and fidelity_ok.shape == (12,)
    assert not fidelity_ok[6:].any()  # a no-op is nowhere nearer the ideal
    assert (
        labels[6:] == torch.stack([torch.from_numpy(a.encode()) for a in attrs])
    ).all()  # renders read as is


@pytest.mark.parametrize(
    "case, faithful", [("ideal", 1.0), ("one side", 0.0), ("global tint", 0.0), ("no-op", 0.0)]
)
def test_evaluator_verdicts_with_the_shipped_oracle(case: str, faithful: float) -> None:
    """The whole judge (shipped oracle + rule) on the test faces' own renders: only the ideal edit is faithful."""
    from src.evaluation.toyfaces import ToyfacesEvaluator

    ev = ToyfacesEvaluator({"elf_ears": ["ears", "pointed"]})
    e = edits(ev.scenes(6), "ears", "pointed")
    out = ev(e["source"], e[case], "elf_ears")
    assert out["faithful_rate"] == faithful, out
    assert out["region_fidelity_left"] is not None and out["region_fidelity_right"] is not None
    assert (
        out["faithful_thresholds"]["min_region_fidelity"] == 0.5
        and out["faithful_thresholds"]["nearest_target"]
    )
    assert out["nearest_target_rate"] == (1.0 if case == "ideal" else 0.0)
    assert ev.last["faithful"].shape == (6,) and ev.last["ideal"].shape == e["ideal"].shape
    # renders keep every other part by the rule as by the oracle; a tint of the whole face may not
    if case != "global tint":
        assert out["others_kept_rule_rate"] == 1.0 and out["oracle_rule_agreement_kept"] == 1.0
    assert out["faithful_rule_kept_rate"] <= out["faithful_rate"]


def test_rule_labels_need_the_colour_vote(faces: tuple) -> None:
    """The calibration labels follow the judge: lips blended 60% toward black pass region fidelity but read as
    black only without the vote (``nearest=False``); the ideal reads black either way. ``agreement`` compares the
    oracle with either rule."""
    from src.toyworld.attributes import LABEL_ATTRIBUTES
    from src.toyworld.judge.calibration import agreement

    attrs, seeds = faces
    e = edits(faces, "lip_color", "black")
    blend = e["source"] + 0.6 * (e["ideal"] - e["source"])
    reddish = torch.tensor([a.lip_color in ("red", "pink") for a in attrs] + [False] * 6)  # blends only
    x, targets = torch.cat([blend, e["ideal"]]), [("lip_color", "black")] * 12
    j, black = LABEL_ATTRIBUTES.index("lip_color"), SCHEMA["lip_color"].index("black")
    labels, _, fidelity_ok = rule_labels(x, attrs * 2, seeds * 2, targets)
    old, _, old_fidelity = rule_labels(x, attrs * 2, seeds * 2, targets, nearest=False)
    assert (fidelity_ok == old_fidelity).all() and fidelity_ok.all()
    assert (old[:, j] == black).all() and (labels[6:, j] == black).all()
    assert reddish.sum() >= 2 and not (labels[:, j] == black)[reddish].any()
    says_black = {a: labels[:, i] for i, a in enumerate(LABEL_ATTRIBUTES)}
    says_black["lip_color"] = torch.full((12,), black)
    vote, fid = agreement(says_black, labels, targets), agreement(says_black, labels, targets, fidelity_ok)
    assert fid["target"]["lip_color:black"] == 1.0
    assert vote["target"]["lip_color:black"] == pytest.approx(1 - reddish.float().mean().item())


def test_rule_reads_each_side_of_a_pair(faces: tuple) -> None:
    """One pointed ear: that side reads pointed, the other round, and the pair reads round (not the edit)."""
    attrs, seeds = faces
    e = edits(faces, "ears", "pointed")
    for case, want in (("one side", (1, 0)), ("ideal", (1, 1)), ("no-op", (0, 0))):
        for y, a, s in zip(e[case], attrs, seeds):
            read, per_side, fidelity_ok = read_sides_by_rule(y, a, s, ("ears", "pointed"))
            assert fidelity_ok == (want == (1, 1))
            assert per_side["ears"] == want, (case, per_side)
            assert read.ears == ("pointed" if want == (1, 1) else "round")
            assert per_side["eyebrow_color"][0] == per_side["eyebrow_color"][1]  # untouched pairs agree


def test_kept_by_rule_sees_a_bleed_into_another_part(faces: tuple) -> None:
    """Purple brows: the ideal keeps every other part; the same edit with the irises repainted too (a bleed the
    oracle may miss) fails the iris attribute only, and only on faces whose irises really changed."""
    from src.toyworld.judge.composed import kept_by_rule

    attrs, seeds = faces
    change = {"eyebrow_color": "purple"}
    ideal = render_batch([a.replace(**change) for a in attrs], seeds)
    kept = kept_by_rule(ideal, attrs, seeds, change)
    assert "eyebrow_color" not in kept and all(bool(v.all()) for v in kept.values())
    bleed = render_batch([a.replace(**change, iris_color="green") for a in attrs], seeds)
    kept = kept_by_rule(bleed, attrs, seeds, change)
    assert kept["iris_color"].tolist() == [a.iris_color == "green" for a in attrs]
    assert all(bool(v.all()) for a, v in kept.items() if a != "iris_color")
