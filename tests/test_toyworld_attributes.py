"""Attribute schema, sampling, label encoding and captions of the toyfaces world."""

import numpy as np
import pytest

from src.toyworld.attributes import (
    COUNTERFACTUAL_VALUES,
    EDIT_ATTRIBUTES,
    LABEL_ATTRIBUTES,
    SCHEMA,
    Attributes,
    counterfactual,
    counterfactual_rates,
    sample_attributes,
)
from src.toyworld.captions import (
    NEUTRAL_CAPTIONS,
    caption,
    clutter_captions,
    hard_negative,
    hard_negative_captions,
    zero_shot_captions,
    zero_shot_prompts,
)


def test_schema_matches_the_spec_table():
    assert SCHEMA["ears"].natural == ("round",) and SCHEMA["ears"].counterfactual == ("pointed",)
    assert SCHEMA["eyebrow_color"].natural == ("black", "brown", "blond", "red", "gray")
    assert SCHEMA["eyebrow_color"].counterfactual == ("purple",)
    assert SCHEMA["lip_color"].natural == ("red", "pink", "brown")
    assert SCHEMA["lip_color"].counterfactual == ("green", "blue", "black")
    assert SCHEMA["iris_color"].natural == ("brown", "blue", "green", "gray")
    assert SCHEMA["iris_color"].counterfactual == ("red",)
    assert len(SCHEMA["skin_tone"].natural) == 5 and SCHEMA["skin_tone"].counterfactual == ("blue",)
    assert SCHEMA["style"].values == ("plain", "neon")
    assert set(EDIT_ATTRIBUTES) == {"ears", "eyebrow_color", "lip_color", "iris_color", "skin_tone", "style"}
    assert "elf ears" in SCHEMA["ears"].phrases["pointed"]
    assert "green lipstick" in SCHEMA["lip_color"].phrases["green"]


def test_encode_decode_roundtrip_and_validation():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = sample_attributes(rng, 0.2)
        labels = a.encode()
        assert labels.shape == (len(LABEL_ATTRIBUTES),) and labels.dtype == np.int64
        assert Attributes.decode(labels) == a
    with pytest.raises(ValueError):
        Attributes(lip_color="purple")
    with pytest.raises(ValueError):
        counterfactual(Attributes(), "ears", "square")


def test_sampling_rates():
    rng = np.random.default_rng(0)
    natural = [sample_attributes(rng, 0.0) for _ in range(300)]
    assert all(a.is_natural() and a.eyebrow_color == a.hair_color for a in natural)
    rates = counterfactual_rates({"lip_color": 0.2, "ears:pointed": 0.5})
    assert rates[("lip_color", "green")] == 0.2 and rates[("iris_color", "red")] == 0.0
    samples = [sample_attributes(rng, {"lip_color": 0.2, "ears": 0.5}) for _ in range(2000)]
    lips_cf = np.mean([a.lip_color in ("green", "blue", "black") for a in samples])
    pointed = np.mean([a.ears == "pointed" for a in samples])
    assert abs(lips_cf - 0.6) < 0.05 and abs(pointed - 0.5) < 0.05
    assert all(a.iris_color != "red" for a in samples)
    with pytest.raises(KeyError):
        counterfactual_rates({"nose": 0.1})
    with pytest.raises(ValueError):
        counterfactual_rates({"lip_color": 0.5})  # 3 values x 0.5 > 1


def test_counterfactual_changes_one_attribute():
    a = Attributes(hair_color="red", eyebrow_color="red")
    b = counterfactual(a, "eyebrow_color", "purple")
    assert b.eyebrow_color == "purple" and b.hair_color == "red"
    assert [n for n in LABEL_ATTRIBUTES if getattr(a, n) != getattr(b, n)] == ["eyebrow_color"]


def test_captions_name_counterfactual_values():
    rng = np.random.default_rng(0)
    a = Attributes(ears="pointed", lip_color="green")
    texts = [caption(a, rng, p_counterfactual=1.0) for _ in range(50)]
    ear_words = SCHEMA["ears"].phrases["pointed"]
    lip_words = SCHEMA["lip_color"].phrases["green"]
    assert all(any(w in t for w in ear_words) and any(w in t for w in lip_words) for t in texts)
    assert len(set(texts)) > 10, "captions should vary"
    assert any("elf ears" in t for t in texts) and any("pointed ears" in t for t in texts)
    assert NEUTRAL_CAPTIONS == ("a photo of a face", "a face", "a portrait")


def test_captions_never_name_a_wrong_value():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = sample_attributes(rng, 0.1)
        t = caption(a, rng)
        for name in ("lip_color", "iris_color"):
            for v in SCHEMA[name].values:
                for p in SCHEMA[name].phrases[v]:
                    if p in t:
                        assert v == getattr(a, name), (t, a)


def test_zero_shot_prompts_aligned_with_values():
    for name in EDIT_ATTRIBUTES:
        caps = zero_shot_captions(name)
        assert len(caps) == len(SCHEMA[name].values) and len(set(caps)) == len(caps)
        prompts = zero_shot_prompts(name, templates=("a face with {}", "a photo of a face with {}"))
        assert len(prompts) == len(SCHEMA[name].values) and all(len(p) >= 2 for p in prompts)
    assert "a face with purple eyebrows" in zero_shot_captions("eyebrow_color")
    assert "a face with green lips" in zero_shot_captions("lip_color")


def test_hard_negatives_are_false_and_swap_colours():
    rng = np.random.default_rng(0)
    a = Attributes(lip_color="green", iris_color="brown", skin_tone="pale", hair_color="black")
    a = a.replace(eyebrow_color="black")
    swaps = ear_flips = 0
    for _ in range(100):
        text, wrong = hard_negative(a, rng)
        changed = [n for n in LABEL_ATTRIBUTES if getattr(wrong, n) != getattr(a, n)]
        assert changed, text
        assert all(any(p in text for p in SCHEMA[n].phrases[getattr(wrong, n)]) for n in changed), text
        swaps += wrong.lip_color == "brown" and wrong.iris_color == "green"
        ear_flips += changed == ["ears"]
    assert swaps > 5, "green lips + brown eyes should often become brown lips + green eyes"
    assert 15 < ear_flips < 50, "about 30% of hard negatives name the other ear shape"
    for cf_attr, cf_value in COUNTERFACTUAL_VALUES:
        assert len(hard_negative_captions(a.replace(**{cf_attr: cf_value}), rng, n=3)) == 3


NEON_WORDS = ("cyberpunk", "neon")  # the neon templates name the style without its phrase


def test_clutter_captions_pair_a_true_value_with_another_value_of_the_same_part():
    rng = np.random.default_rng(0)
    named, to_natural = set(), 0
    for _ in range(300):
        a = sample_attributes(rng, 0.3)
        pos, neg, false = clutter_captions(a, rng)
        (n,) = [n for n in LABEL_ATTRIBUTES if getattr(false, n) != getattr(a, n)]  # one part changed
        v = getattr(false, n)
        words = SCHEMA[n].phrases[v] + NEON_WORDS * (v == "neon")
        said = [any(w in text for w in words) for text in (pos, neg)]
        assert said == [False, True], (a, pos, neg)  # the negative names it, the caption does not
        counterfactual = v in SCHEMA[n].counterfactual
        assert counterfactual != (getattr(a, n) in SCHEMA[n].counterfactual)  # natural <-> counterfactual
        named.add(n)
        to_natural += not counterfactual
    assert named == set(EDIT_ATTRIBUTES)  # every edit attribute is taught, the style included
    assert to_natural > 10  # a counterfactual part with clutter on it keeps its value too
