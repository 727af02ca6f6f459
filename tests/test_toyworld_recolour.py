"""Near-miss colours for the toy CLIP (src/toyworld/recolour.py): distractors by rule, painted on the part only,
captioned by what they show against a value the world has."""

import numpy as np
import torch

from src.toyworld.attributes import SCHEMA, Attributes
from src.toyworld.recolour import COLOUR_WORDS, PALETTES, distractors, nearest_value, paint, recolour_edits
from src.toyworld.render import render_batch


def test_distractors_are_colours_the_part_never_has_and_the_confusions_map_to_world_values():
    for name in PALETTES:
        words = distractors(name)
        own = {w for ps in SCHEMA[name].phrases.values() for p in ps for w in p.split()}
        assert words and not own & set(words) and set(words) <= set(COLOUR_WORDS)
    assert "magenta" in distractors("eyebrow_color") and "purple" not in distractors("eyebrow_color")
    assert "white" not in distractors("skin_tone")  # too close to pale skin to be another colour
    assert nearest_value("eyebrow_color", "magenta") == "purple"  # the confusion the mapper found
    assert nearest_value("lip_color", "navy") == "blue"


def test_paint_moves_the_region_to_the_colour_and_leaves_the_rest():
    x, masks = render_batch([Attributes(eyebrow_color="black")], [5], return_masks=True)
    region = masks["eyebrows"][0]
    y = paint(x[0], region, COLOUR_WORDS["magenta"])
    target = torch.tensor(COLOUR_WORDS["magenta"], dtype=torch.float32) / 127.5 - 1
    assert (y[:, region].median(1).values - target).abs().max() < 0.02
    ring = torch.nn.functional.max_pool2d(region[None, None].float(), 3, 1, 1)[0, 0] > 0
    assert torch.equal(y[:, ~ring], x[0][:, ~ring])
    assert torch.equal(paint(x[0], torch.zeros_like(region), (0, 0, 0)), x[0])


def test_recolour_edits_caption_the_distractor_against_a_world_value_reproducibly():
    attrs = [Attributes(style="neon" if i % 2 else "plain") for i in range(12)]
    seeds = list(range(40, 52))
    x, pairs = recolour_edits(attrs, seeds, np.random.default_rng(0))
    x2, pairs2 = recolour_edits(attrs, seeds, np.random.default_rng(0))
    assert torch.equal(x, x2) and pairs == pairs2 and x.shape == (12, 3, 64, 64)
    plain = render_batch([a.replace(style="plain") for a in attrs], seeds)
    changed = ((x - plain).abs().amax(1) > 0.05).float().flatten(1).mean(1)
    assert (changed > 0).all() and (changed < 0.6).all()  # one part of each face, never the whole image
    for pos, neg in pairs:
        a, b = set(pos.split()), set(neg.split())
        assert len(a - b) == 1 and (a - b) <= set(COLOUR_WORDS)  # the caption but for the part's colour
        assert 1 <= len(b - a) <= 2  # ("bright blue skin" -> "navy skin")


def test_misplace_edits_paint_a_counterfactual_colour_beside_its_part_and_caption_the_part_as_it_is():
    from src.toyworld.recolour import misplace_edits

    attrs = [Attributes(skin_tone="blue" if i == 0 else "light") for i in range(8)]
    seeds = list(range(60, 68))
    x, pairs = misplace_edits(attrs, seeds, np.random.default_rng(1))
    assert x.shape == (8, 3, 64, 64) and x.abs().max() <= 1
    assert all(pos != neg for pos, neg in pairs)
    counterfactual = {p for n in PALETTES for v in SCHEMA[n].counterfactual for p in SCHEMA[n].phrases[v]}
    assert not any(c in pos for pos, _ in pairs for c in counterfactual)  # the caption names the true value
    assert all(
        any(c in neg for c in counterfactual) for _, neg in pairs
    )  # against the painted colour's value
