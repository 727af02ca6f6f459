"""Near-miss colours for the toy CLIP's data: a face part repainted in a colour the world never draws there
(magenta eyebrows, teal lips), captioned by that colour's name against a value the world has.

Why: the world draws each part in a few colours only, where real CLIP saw every hue named on the web. A CLIP trained
on the renders alone might take a near miss for the target (magenta brows for purple); `experiments/probes/
clip_hues.py` measured that the shipped CLIPs do not, and tuning on these images did not help the edits, so the
shipped CLIPs are trained without them (``train_clip``'s ``robust_recolour`` / ``robust_misplace``, 0; docs/guide.md).
The distractors of a part are derived by one rule from a colour vocabulary, not written per part.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from src.toyworld.attributes import SCHEMA, Attributes
from src.toyworld.captions import contrast_captions
from src.toyworld.render import COLOURS, render_batch

# colour words and the RGB a person would name so (the vocabulary real CLIP knows, in small)
COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "pink": (245, 135, 180), "magenta": (225, 25, 170), "orange": (245, 140, 25), "yellow": (245, 225, 40),
    "teal": (15, 140, 140), "cyan": (20, 215, 235), "navy": (20, 30, 110), "white": (240, 240, 240),
    "green": (30, 170, 60), "blue": (40, 80, 225), "purple": (140, 40, 200), "red": (215, 25, 35),
    "black": (15, 15, 15), "brown": (120, 65, 30), "gray": (150, 150, 155),
}  # fmt: skip
# the render palette of each colour attribute (eyebrows are drawn in the hair palette)
PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "eyebrow_color": COLOURS["hair"],
    "lip_color": COLOURS["lip_color"],
    "iris_color": COLOURS["iris_color"],
    "skin_tone": COLOURS["skin_tone"],
}
# a distractor this far (CIELAB) from every colour the part has in the world is another colour
MIN_DELTA_E = 25.0


def cielab(rgb: tuple[int, int, int]) -> torch.Tensor:
    """CIELAB (3,) of an RGB colour in 0-255 (the judge's colour space)."""
    from kornia.color import rgb_to_lab

    return rgb_to_lab(torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1) / 255).view(3)


@functools.cache
def distractors(attribute: str) -> tuple[str, ...]:
    """Colour words the world never draws on ``attribute``'s part: not one of its values' words, and at least
    ``MIN_DELTA_E`` from each of its palette colours (white skin is too close to pale skin to be another colour)."""
    own = {w for phrases in SCHEMA[attribute].phrases.values() for p in phrases for w in p.split()}
    labs = [cielab(c) for c in PALETTES[attribute].values()]
    return tuple(
        w
        for w, rgb in COLOUR_WORDS.items()
        if w not in own and min(float((cielab(rgb) - p).norm()) for p in labs) >= MIN_DELTA_E
    )


def nearest_colour_value(attribute: str, rgb: tuple[int, int, int]) -> str:
    """The value of ``attribute`` whose palette colour is nearest (CIELAB) to ``rgb``."""
    target, palette = cielab(rgb), PALETTES[attribute]
    return min(palette, key=lambda v: float((cielab(palette[v]) - target).norm()))


@functools.cache
def nearest_value(attribute: str, word: str) -> str:
    """The value of ``attribute`` nearest to colour word ``word`` (``nearest_colour_value``)."""
    return nearest_colour_value(attribute, COLOUR_WORDS[word])


def _rename(text: str, attribute: str, value: str, word: str) -> str:
    """``text`` with its phrase of ``attribute``'s ``value`` ("purple brows") renamed to colour ``word``
    ("magenta brows"), keeping the phrase's noun."""
    for p in sorted(SCHEMA[attribute].phrases[value], key=len, reverse=True):
        if p in text:
            return text.replace(p, f"{word} {p.split()[-1]}", 1)
    raise ValueError(f"{text!r} names no phrase of {attribute}={value}")


def paint(x: torch.Tensor, region: torch.Tensor, rgb: tuple[int, int, int]) -> torch.Tensor:
    """Image (3, H, W) in [-1, 1] with ``region`` (H, W) repainted in ``rgb``, its shading kept: the region's
    median colour shifted to ``rgb``, half the shift on the ring of anti-aliased pixels around it."""
    if not region.any():
        return x
    shift = torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1 - x[:, region].median(dim=1).values  # (3,)
    ring = F.max_pool2d(region[None, None].float(), 3, 1, 1)[0, 0]
    return (x + (region.float() + ring) / 2 * shift[:, None, None]).clamp(-1, 1)


def recolour_edits(
    attrs: list[Attributes], seeds: list[int], rng: np.random.Generator
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Plain-style faces (N, 3, H, W) in [-1, 1] with one colour part (brows, lips, irises or skin) repainted in a
    distractor colour (``paint``), with (caption, negative) pairs: the distractor's name against, half the time, one
    of the part's counterfactual values (what mappers aim for: magenta brows are not purple), else its nearest value
    in the world (teal lips are not green)."""
    names = list(PALETTES)
    picks = [names[rng.integers(len(names))] for _ in attrs]
    plain = [a.replace(style="plain") for a in attrs]
    x, masks = render_batch(plain, seeds, return_masks=True)
    pairs = []
    for i, (a, name) in enumerate(zip(plain, picks)):
        options = distractors(name)
        word = options[rng.integers(len(options))]
        x[i] = paint(
            x[i], torch.stack([masks[r][i] for r in SCHEMA[name].regions]).any(0), COLOUR_WORDS[word]
        )
        spec = SCHEMA[name]
        cf = spec.counterfactual
        neg = cf[rng.integers(len(cf))] if rng.random() < 0.5 else nearest_value(name, word)
        other = next(v for v in spec.values if v != neg)  # contrast_captions names name's value in both texts
        _, neg_text = contrast_captions(a.replace(**{name: other}), a.replace(**{name: neg}), name, rng)
        pairs.append((_rename(neg_text, name, neg, word), neg_text))
    return x, pairs


# regions a part's colour may be misplaced onto, with the attribute a caption would describe them by
ELSEWHERE = {"background": None, "clothes": None, "hair": "hair_color", "skin": "skin_tone"}


def _names(text: str, attribute: str | None) -> bool:
    """Whether ``text`` names a value of ``attribute`` (None: nothing names the region)."""
    return attribute is not None and any(p in text for ps in SCHEMA[attribute].phrases.values() for p in ps)


def misplace_edits(
    attrs: list[Attributes], seeds: list[int], rng: np.random.Generator
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Plain-style faces (N, 3, H, W) with a counterfactual colour painted next to its part instead of on it (a blue
    background, purple hair, green clothes), with (caption, negative) pairs: the part's true value against the
    counterfactual one. The colour is in the image, but not where the caption puts it: a CLIP that binds colours to
    parts pays no "blue skin" for a blue background (the edit blue skin's mapper made, docs/guide.md)."""
    names = list(PALETTES)
    plain = [a.replace(style="plain") for a in attrs]
    x, masks = render_batch(plain, seeds, return_masks=True)
    pairs = []
    for i, a in enumerate(plain):
        name = names[rng.integers(len(names))]
        spec = SCHEMA[name]
        value = spec.counterfactual[rng.integers(len(spec.counterfactual))]
        keep = getattr(a, name)
        if keep in spec.counterfactual:  # the caption must name a value the part has, not the painted one
            keep = spec.natural[rng.integers(len(spec.natural))]
            a = a.replace(**{name: keep})
            x[i] = render_batch([a], [seeds[i]])[0]
        where = [r for r in ELSEWHERE if r not in spec.regions and masks[r][i].any()]
        r = where[rng.integers(len(where))]
        x[i] = paint(x[i], masks[r][i], PALETTES[name][value])
        pair = contrast_captions(a, a.replace(**{name: value}), name, rng)
        while _names(pair[0], ELSEWHERE[r]):  # "black hair" is false once the hair is painted
            pair = contrast_captions(a, a.replace(**{name: value}), name, rng)
        pairs.append(pair)
    return x, pairs
