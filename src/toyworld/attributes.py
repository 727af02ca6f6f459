"""The toyfaces attribute schema as data, and sampling / label encoding of attribute sets.

Each attribute has natural values (common in the generator's training data) and counterfactual values
(the "elf ears" of this world), the mask region it lives in, and English phrases for captions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute: its values (natural first, then counterfactual), mask region and caption phrases."""

    name: str
    natural: tuple[str, ...]
    counterfactual: tuple[str, ...]
    regions: tuple[str, ...]  # mask names (render.REGIONS) the attribute colours; ("all",) = whole image
    phrases: Mapping[str, tuple[str, ...]]  # value -> synonyms; the first one is the canonical phrase

    @property
    def values(self) -> tuple[str, ...]:
        """All values, natural then counterfactual: index = class label."""
        return self.natural + self.counterfactual

    def index(self, value: str) -> int:
        """Class label of `value` (raises ValueError with the valid values if unknown)."""
        if value not in self.values:
            raise ValueError(f"{self.name}: unknown value {value!r}; valid: {self.values}")
        return self.values.index(value)


def _colour_phrases(values: tuple[str, ...], *nouns: str) -> dict[str, tuple[str, ...]]:
    """'{colour} {noun}' phrases for every colour value, with 'grey' as a synonym of 'gray'."""
    out: dict[str, tuple[str, ...]] = {}
    for v in values:
        words = (v, "grey") if v == "gray" else (v,)
        out[v] = tuple(f"{w} {n}" for n in nouns for w in words)
    return out


HAIR_COLOURS = ("black", "brown", "blond", "red", "gray")

SCHEMA: dict[str, AttributeSpec] = {
    s.name: s
    for s in (
        AttributeSpec(
            "ears",
            ("round",),
            ("pointed",),
            ("ears",),
            {
                "round": ("round ears", "normal ears", "human ears", "rounded ears"),
                "pointed": ("elf ears", "pointed ears", "pointy ears", "elven ears"),
            },
        ),
        AttributeSpec(
            "eyebrow_color",
            HAIR_COLOURS,
            ("purple",),
            ("eyebrows",),
            _colour_phrases((*HAIR_COLOURS, "purple"), "eyebrows", "brows"),
        ),
        AttributeSpec(
            "lip_color",
            ("red", "pink", "brown"),
            ("green", "blue", "black"),
            ("lips",),
            _colour_phrases(("red", "pink", "brown", "green", "blue", "black"), "lips", "lipstick"),
        ),
        AttributeSpec(
            "iris_color",
            ("brown", "blue", "green", "gray"),
            ("red",),
            ("eyes",),
            _colour_phrases(("brown", "blue", "green", "gray", "red"), "eyes", "irises"),
        ),
        AttributeSpec(
            "skin_tone",
            ("pale", "light", "tan", "brown", "dark"),
            ("blue",),
            ("skin", "ears"),  # ears are skin-coloured
            {
                "pale": ("pale skin", "very fair skin"),
                "light": ("light skin", "fair skin"),
                "tan": ("tan skin", "tanned skin", "olive skin"),
                "brown": ("brown skin",),
                "dark": ("dark skin", "dark brown skin"),
                "blue": ("blue skin", "bright blue skin"),
            },
        ),
        AttributeSpec(
            "style",
            ("plain",),
            ("neon",),
            ("all",),
            {
                "plain": ("natural colors", "plain style", "a natural look"),
                "neon": ("cyberpunk style", "neon style", "neon glow", "cyberpunk neon colors"),
            },
        ),
        # a nuisance factor, not an edit target; natural eyebrows follow it, captions may mention it
        AttributeSpec("hair_color", HAIR_COLOURS, (), ("hair",), _colour_phrases(HAIR_COLOURS, "hair")),
    )
}

EDIT_ATTRIBUTES: tuple[str, ...] = tuple(n for n, s in SCHEMA.items() if s.counterfactual)
LABEL_ATTRIBUTES: tuple[str, ...] = tuple(SCHEMA)  # order of encode() vectors and oracle heads
COUNTERFACTUAL_VALUES: tuple[tuple[str, str], ...] = tuple(
    (n, v) for n in EDIT_ATTRIBUTES for v in SCHEMA[n].counterfactual
)

# Nuisance factors: drawn from the render seed (see render.sample_nuisance), never edited.
NUISANCE_FACTORS: tuple[str, ...] = (
    "background colours and gradient direction",
    "hair style (short, bob, long, bun, fringe, buzz)",
    "face shape (height, jaw width)",
    "head position, scale and small rotation",
    "lighting gradient (direction, strength)",
)


@dataclass(frozen=True)
class Attributes:
    """The semantic content of one face; render nuisances come from the seed instead."""

    ears: str = "round"
    eyebrow_color: str = "black"
    lip_color: str = "red"
    iris_color: str = "brown"
    skin_tone: str = "light"
    style: str = "plain"
    hair_color: str = "black"

    def __post_init__(self) -> None:
        for name in LABEL_ATTRIBUTES:
            SCHEMA[name].index(getattr(self, name))

    def replace(self, **changes: str) -> Attributes:
        """Copy with some attributes changed (validated)."""
        return dataclasses.replace(self, **changes)

    def is_natural(self) -> bool:
        """True when no attribute holds a counterfactual value."""
        return all(getattr(self, n) in SCHEMA[n].natural for n in EDIT_ATTRIBUTES)

    def encode(self) -> np.ndarray:
        """Integer label vector (int64, order LABEL_ATTRIBUTES) for classifiers."""
        return np.array([SCHEMA[n].index(getattr(self, n)) for n in LABEL_ATTRIBUTES], dtype=np.int64)

    @classmethod
    def decode(cls, labels: np.ndarray | list[int]) -> Attributes:
        """Inverse of encode()."""
        labels = [int(x) for x in labels]
        if len(labels) != len(LABEL_ATTRIBUTES):
            raise ValueError(f"expected {len(LABEL_ATTRIBUTES)} labels, got {len(labels)}")
        return cls(**{n: SCHEMA[n].values[i] for n, i in zip(LABEL_ATTRIBUTES, labels)})


def counterfactual_rates(rate: float | Mapping[str, float]) -> dict[tuple[str, str], float]:
    """Probability of each counterfactual value; `rate` is one float for all, or a dict keyed by
    attribute name (for each of its values) or "attribute:value"; missing keys mean 0."""
    if not isinstance(rate, Mapping):
        return {k: float(rate) for k in COUNTERFACTUAL_VALUES}
    out = dict.fromkeys(COUNTERFACTUAL_VALUES, 0.0)
    for key, p in rate.items():
        attr, _, value = key.partition(":")
        if attr not in EDIT_ATTRIBUTES or (value and value not in SCHEMA[attr].counterfactual):
            raise KeyError(f"unknown counterfactual key {key!r}; valid: attribute names or 'attr:value'")
        for v in (value,) if value else SCHEMA[attr].counterfactual:
            out[(attr, v)] = float(p)
    for attr in EDIT_ATTRIBUTES:
        total = sum(out[(attr, v)] for v in SCHEMA[attr].counterfactual)
        if total > 1.0 + 1e-9:
            raise ValueError(f"{attr}: counterfactual probabilities sum to {total} > 1")
    return out


def uniform_rates() -> dict[str, float]:
    """Rates under which every value of every attribute is equally likely (for classifiers)."""
    return {n: 1.0 / len(SCHEMA[n].values) for n in EDIT_ATTRIBUTES}


def sample_attributes(
    rng: np.random.Generator,
    counterfactual_rate: float | Mapping[str, float] = 0.0,
    eyebrows_follow_hair: float = 1.0,
) -> Attributes:
    """Random attributes: each counterfactual value with its probability, else a uniform natural value.

    Natural eyebrows take the hair colour with probability `eyebrows_follow_hair` (1 in the generator's
    world; lower it to decorrelate the two for classifiers).
    """
    rates = counterfactual_rates(counterfactual_rate)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    values: dict[str, str] = {"hair_color": hair}
    for name in EDIT_ATTRIBUTES:
        spec = SCHEMA[name]
        u = rng.random()
        chosen = None
        for v in spec.counterfactual:
            u -= rates[(name, v)]
            if u < 0:
                chosen = v
                break
        natural_pick = spec.natural[rng.integers(len(spec.natural))]
        follow = rng.random() < eyebrows_follow_hair
        if chosen is None:
            chosen = hair if (name == "eyebrow_color" and follow) else natural_pick
        values[name] = chosen
    return Attributes(**values)


def counterfactual(attrs: Attributes, attribute: str, value: str) -> Attributes:
    """The same face with only `attribute` set to `value` (render it with the same seed: the ideal edit)."""
    if attribute not in SCHEMA:
        raise KeyError(f"unknown attribute {attribute!r}; valid: {tuple(SCHEMA)}")
    SCHEMA[attribute].index(value)
    return attrs.replace(**{attribute: value})


def values_in_text(text: str) -> list[tuple[str, str]]:
    """The (attribute, value) pairs a text names with this world's caption phrases (whole words, longest phrase
    first, in the order of the text): "face with elf ears and green lipstick" -> [("ears", "pointed"),
    ("lip_color", "green")]. The ground truth of any prompt, written or not (evaluation only)."""
    padded = " " + " ".join(re.findall(r"[a-z]+", text.lower())) + " "
    phrases = sorted(
        ((p, a, v) for a, s in SCHEMA.items() for v, ps in s.phrases.items() for p in ps),
        key=lambda item: -len(item[0]),
    )
    found: dict[str, tuple[int, str]] = {}
    for p, attribute, value in phrases:
        at = padded.find(f" {p} ")
        if at >= 0 and attribute not in found:
            found[attribute] = (at, value)
            padded = padded.replace(f" {p} ", " " + "#" * len(p) + " ")  # a shorter phrase cannot reuse it
    return [(a, v) for a, (_, v) in sorted(found.items(), key=lambda item: item[1][0])]
