"""English captions of toyfaces: varied training captions, neutral source texts, zero-shot prompt lists,
and hard negatives that swap colours between face parts (the binding errors a small CLIP makes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src.toyworld.attributes import SCHEMA, Attributes

NEUTRAL_CAPTIONS: tuple[str, ...] = ("a photo of a face", "a face", "a portrait")
TEMPLATES: tuple[str, ...] = (
    "a photo of a face with {}",
    "a portrait of a person with {}",
    "a cartoon face with {}",
    "a face with {}",
    "a drawing of a person with {}",
    "a person with {}",
)
NEON_TEMPLATES: tuple[str, ...] = (
    "a cyberpunk portrait of a person with {}",
    "a neon photo of a face with {}",
    "a cyberpunk face with {}",
)
ZERO_SHOT_TEMPLATE = "a face with {}"
# Attributes a caption may describe (style is handled by the template or a trailing phrase).
DESCRIBED: tuple[str, ...] = ("ears", "eyebrow_color", "lip_color", "iris_color", "skin_tone", "hair_color")
COLOUR_PARTS: tuple[str, ...] = ("eyebrow_color", "lip_color", "iris_color", "hair_color", "skin_tone")


def phrase(attribute: str, value: str, rng: np.random.Generator | None = None) -> str:
    """A phrase for one attribute value: the canonical one, or a random synonym when rng is given."""
    options = SCHEMA[attribute].phrases[value]
    return options[0] if rng is None else options[rng.integers(len(options))]


def join_phrases(parts: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _compose(attrs: Attributes, names: Sequence[str], rng: np.random.Generator, mention_style: bool) -> str:
    """Caption of the given attributes (in the given order), with a template and the style if asked."""
    parts = [phrase(n, getattr(attrs, n), rng) for n in names]
    if mention_style and attrs.style == "neon" and rng.random() < 0.6:
        return NEON_TEMPLATES[rng.integers(len(NEON_TEMPLATES))].format(join_phrases(parts))
    if mention_style:
        parts.append(phrase("style", attrs.style, rng))
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(join_phrases(parts))


def caption(
    attrs: Attributes,
    rng: np.random.Generator,
    max_parts: int = 3,
    p_counterfactual: float = 0.85,
    p_plain_style: float = 0.1,
    p_neon_style: float = 0.85,
) -> str:
    """A random caption: a random subset (1..max_parts) of attributes in random order, with synonyms.

    Counterfactual values are mentioned with probability p_counterfactual each (so a CLIP trained on these
    captions learns them); the style is mentioned with p_neon_style (neon) or p_plain_style (plain).
    """
    cf = [n for n in DESCRIBED if getattr(attrs, n) in SCHEMA[n].counterfactual]
    chosen = [n for n in cf if rng.random() < p_counterfactual]
    k = int(rng.integers(1, max_parts + 1))
    rest = [n for n in DESCRIBED if n not in chosen]
    rng.shuffle(rest)
    chosen += rest[: max(0, k - len(chosen))]
    rng.shuffle(chosen)
    p_style = p_neon_style if attrs.style == "neon" else p_plain_style
    return _compose(attrs, chosen, rng, mention_style=bool(rng.random() < p_style))


def captions(attrs: Sequence[Attributes], rng: np.random.Generator, **kwargs) -> list[str]:
    """One random caption per attribute set (see caption())."""
    return [caption(a, rng, **kwargs) for a in attrs]


def zero_shot_prompts(attribute: str, templates: Sequence[str] = (ZERO_SHOT_TEMPLATE,)) -> list[list[str]]:
    """Prompts per value of `attribute` (outer index = class label): every template x synonym, for
    prompt-ensembled zero-shot classification."""
    spec = SCHEMA[attribute]
    return [[t.format(p) for t in templates for p in spec.phrases[v]] for v in spec.values]


def zero_shot_captions(attribute: str, template: str = ZERO_SHOT_TEMPLATE) -> list[str]:
    """One caption per value of `attribute` (canonical phrase), e.g. 'a face with purple eyebrows'."""
    return [template.format(phrase(attribute, v)) for v in SCHEMA[attribute].values]


def _colour_word(attribute: str, value: str) -> str | None:
    """The colour word of a value, or None (skin tones like 'pale' are not colours)."""
    if attribute == "skin_tone":
        return value if value in ("brown", "blue") else None
    return value


def _swap(attrs: Attributes, a: str, b: str) -> dict[str, str]:
    """Changes that give part a the colour of part b and vice versa, where the colour is valid there."""
    ca, cb = _colour_word(a, getattr(attrs, a)), _colour_word(b, getattr(attrs, b))
    changes = {}
    if cb is not None and cb != getattr(attrs, a) and cb in SCHEMA[a].values:
        changes[a] = cb
    if ca is not None and ca != getattr(attrs, b) and ca in SCHEMA[b].values:
        changes[b] = ca
    return changes


def hard_negative(
    attrs: Attributes, rng: np.random.Generator, max_extra: int = 1, p_shape: float = 0.3
) -> tuple[str, Attributes]:
    """A false caption that moves a colour present on the face to another part ('green eyes' for a face
    with green lips), or (with p_shape) names the other ear shape; returns (caption, the attributes it
    describes). Falls back to a random wrong colour."""
    if rng.random() < p_shape:  # ear shape is a few pixels: without these negatives it stays at chance
        other = [v for v in SCHEMA["ears"].values if v != attrs.ears]
        false_attrs = attrs.replace(ears=other[rng.integers(len(other))])
        names = ["ears"] + [n for n in DESCRIBED if n != "ears" and rng.random() < 0.3][:max_extra]
        rng.shuffle(names)
        return _compose(false_attrs, names, rng, mention_style=False), false_attrs
    pairs = [(a, b) for a in COLOUR_PARTS for b in COLOUR_PARTS if a < b]
    order = rng.permutation(len(pairs))
    changes: dict[str, str] = {}
    for i in order:
        changes = _swap(attrs, *pairs[i])
        if changes:
            break
    if not changes:  # no colour can move: pick a random wrong value of a random colour part
        name = COLOUR_PARTS[rng.integers(len(COLOUR_PARTS))]
        wrong = [v for v in SCHEMA[name].values if v != getattr(attrs, name)]
        changes = {name: wrong[rng.integers(len(wrong))]}
    false_attrs = attrs.replace(**changes)
    names = list(changes)
    if len(names) == 1:  # also name the donor part with its true colour, as the binding test
        names += [n for n in COLOUR_PARTS if n not in names and rng.random() < 0.5][:1]
    extra = [n for n in DESCRIBED if n not in names]
    rng.shuffle(extra)
    names += extra[: int(rng.integers(0, max_extra + 1))]
    rng.shuffle(names)
    return _compose(false_attrs, names, rng, mention_style=False), false_attrs


def hard_negative_captions(attrs: Attributes, rng: np.random.Generator, n: int = 1) -> list[str]:
    """n hard-negative captions for one face (see hard_negative())."""
    return [hard_negative(attrs, rng)[0] for _ in range(n)]


def contrast_captions(
    attrs: Attributes, false_attrs: Attributes, name: str, rng: np.random.Generator
) -> tuple[str, str]:
    """(caption, negative): the same template and parts, naming ``name``'s value in ``attrs`` and in
    ``false_attrs`` (the style by its phrase), with at most one other part."""
    extra = [n for n in DESCRIBED if n != name and rng.random() < 0.25][:1]
    shown = [] if name == "style" else [name]
    shown += extra if shown or extra else [DESCRIBED[rng.integers(len(DESCRIBED))]]
    rng.shuffle(shown)
    style = name == "style"
    state = rng.bit_generator.state  # the same template and synonyms for the pair: only the value differs
    pos = _compose(attrs, shown, rng, mention_style=style)
    rng.bit_generator.state = state
    return pos, _compose(false_attrs, shown, rng, mention_style=style)


def clutter_captions(attrs: Attributes, rng: np.random.Generator) -> tuple[str, str, Attributes]:
    """(caption, negative, the attributes the negative describes) for a face with clutter painted on it: the
    caption names one edit attribute's true value, the negative another value of it (a counterfactual one for a
    natural value, a natural one for a counterfactual value), so a stroke by the ears stays "round ears", not
    "elf ears", and a stroke on elf ears does not make them round. The attribute is drawn uniformly among the
    edit attributes (style included)."""
    names = (*DESCRIBED[:-1], "style")
    name = names[rng.integers(len(names))]
    spec, value = SCHEMA[name], getattr(attrs, name)
    others = spec.natural if value in spec.counterfactual else spec.counterfactual
    false_attrs = attrs.replace(**{name: others[rng.integers(len(others))]})
    return (*contrast_captions(attrs, false_attrs, name, rng), false_attrs)
