"""Renderer of the toyfaces world: determinism, exact masks, colours per region, local counterfactuals."""

import numpy as np
import pytest
import torch

from src.toyworld.attributes import COUNTERFACTUAL_VALUES, Attributes, counterfactual
from src.toyworld.render import (
    COLOURS,
    REGIONS,
    attribute_mask,
    render,
    render_batch,
    render_counterfactual,
    sample_nuisance,
)

FACE_REGIONS = ("background", "skin", "hair", "ears", "eyes", "eyebrows", "lips")


def _dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_same_attributes_and_seed_give_identical_bytes():
    a = Attributes(ears="pointed", lip_color="green", style="neon")
    img1, m1 = render(a, 5)
    img2, m2 = render(a, 5)
    assert img1.dtype == np.uint8 and img1.shape == (64, 64, 3)
    assert img1.tobytes() == img2.tobytes()
    assert all((m1[r] == m2[r]).all() for r in REGIONS)


def test_different_seed_changes_nuisances_not_attributes():
    a = Attributes()
    assert sample_nuisance(np.random.default_rng(1)) != sample_nuisance(np.random.default_rng(2))
    img1, _ = render(a, 1)
    img2, _ = render(a, 2)
    assert np.abs(img1.astype(int) - img2.astype(int)).mean() > 5


def test_masks_partition_the_image_and_are_non_empty():
    for seed in range(5):
        _, masks = render(Attributes(), seed)
        stack = np.stack([masks[r] for r in REGIONS])
        assert stack.dtype == bool and stack.shape == (len(REGIONS), 64, 64)
        assert (stack.sum(0) == 1).all(), "masks must be disjoint and cover every pixel"
        for r in FACE_REGIONS:
            assert masks[r].sum() >= 4, f"region {r} nearly empty (seed {seed})"


@pytest.mark.parametrize(
    ("attribute", "value", "table"),
    [
        ("lip_color", "green", "lip_color"),
        ("lip_color", "pink", "lip_color"),
        ("iris_color", "red", "iris_color"),
        ("iris_color", "blue", "iris_color"),
        ("eyebrow_color", "purple", "hair"),
        ("skin_tone", "blue", "skin_tone"),
        ("skin_tone", "dark", "skin_tone"),
    ],
)
def test_region_mean_colour_matches_attribute(attribute, value, table):
    region = {"lip_color": "lips", "iris_color": "eyes", "eyebrow_color": "eyebrows", "skin_tone": "skin"}
    for seed in range(3):
        img, masks = render(Attributes().replace(**{attribute: value}), seed)
        inner = masks[region[attribute]] & ~_dilate(~masks[region[attribute]])  # away from edges
        m = inner if inner.sum() >= 3 else masks[region[attribute]]
        mean = img[m].astype(float).mean(0)
        expected = np.array(COLOURS[table][value], dtype=float)
        # lighting gradient (<= 15%) and the dark shading lines inside regions shift the mean a little
        assert np.abs(mean - expected).max() < 60, (attribute, value, mean, expected)


def test_red_iris_is_red():
    img, masks = render(Attributes(iris_color="red"), 3)
    r, g, b = img[masks["eyes"]].astype(float).mean(0)
    assert r > 150 and g < 90 and b < 90


def test_pointed_ears_are_larger_than_round():
    for seed in range(5):
        _, round_m = render(Attributes(ears="round"), seed)
        _, pointed_m = render(Attributes(ears="pointed"), seed)
        assert pointed_m["ears"].sum() > 1.5 * round_m["ears"].sum()
        # the tips rise above the round ear
        assert np.nonzero(pointed_m["ears"].any(1))[0].min() < np.nonzero(round_m["ears"].any(1))[0].min() - 4


@pytest.mark.parametrize(("attribute", "value"), [cv for cv in COUNTERFACTUAL_VALUES if cv[0] != "style"])
def test_counterfactual_changes_pixels_mostly_inside_region(attribute, value):
    outside_share = []
    for seed in range(4):
        base = Attributes(skin_tone="tan", lip_color="red", iris_color="brown", hair_color="brown")
        base = base.replace(eyebrow_color="brown")
        img, masks = render(base, seed)
        edit, edit_masks = render_counterfactual(base, seed, attribute, value)
        changed = np.abs(img.astype(int) - edit.astype(int)).max(-1) > 8
        region = _dilate(attribute_mask(masks, attribute) | attribute_mask(edit_masks, attribute))
        assert changed.sum() > 4, f"{attribute}={value} changed nothing"
        outside_share.append((changed & ~region).sum() / changed.sum())
    assert max(outside_share) < 0.02, outside_share


def test_style_neon_changes_the_whole_image():
    img, _ = render(Attributes(), 0)
    neon, _ = render(counterfactual(Attributes(), "style", "neon"), 0)
    changed = np.abs(img.astype(int) - neon.astype(int)).max(-1) > 8
    assert changed.mean() > 0.8


def test_render_batch_matches_render_and_range():
    attrs = [Attributes(), Attributes(ears="pointed", skin_tone="blue")]
    x, masks = render_batch(attrs, [0, 1], return_masks=True)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    single, single_masks = render(attrs[1], 1, as_tensor=True)
    assert torch.equal(x[1], single)
    assert (masks["ears"][1].numpy() == single_masks["ears"]).all()
    assert render_batch(attrs, [0, 1]).shape == (2, 3, 64, 64)


@pytest.mark.parametrize(("size", "supersample"), [(32, 2), (64, 1), (128, 4)])
def test_other_resolutions(size, supersample):
    img, masks = render(Attributes(ears="pointed"), 0, size=size, supersample=supersample)
    assert img.shape == (size, size, 3)
    assert all(masks[r].shape == (size, size) for r in REGIONS)
    assert masks["ears"].any() and masks["lips"].any()
