"""Calibrate the oracle on the images it judges: generated edits labelled by the region rule.

A person reads a part from the part itself: one pointed ear is not elf ears, a tint around the lips is not
green lipstick, a blurred but clearly blue lip is blue. The **region rule** says this with exact renders: for an
image of a known face (attributes + render seed), each attribute is compared with the renders of that face
under every value of the attribute; inside the region where those renders differ, each pixel votes for the
render it is closest to, each side of a paired part (ears, eyebrows, eyes) separately; the attribute reads a
value only when every side reads it. For the edit's target the rule is the judge's pixel rule
(``src.toyworld.judge.rule``): each side is closer to the ideal than to the source on at least half of its pixels
(region fidelity) and, with ``nearest`` (the default, as the judge's ``nearest_target``), its pixels vote in
CIELAB for the target's render more than for any other value's (``nearest_value``): a colour between the source
and the target, such as dark maroon lips for black lipstick, is not the target.

The calibration set holds what the oracle will judge: generator reconstructions, perturbed latents, latent
steps toward the ideal edit, mapper edits from short runs of every loss and augmentation, and hard negatives
composed from renders (one-sided parts, tints in and around the part, blur, colour casts), raw and through the
generator. The oracle is fine-tuned on its rule labels; its agreement with the rule is measured on held-out
faces and held-out mapper runs. Evaluation only: nothing here feeds a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
import torch.nn.functional as F

from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.judge.composed import value_renders
from src.toyworld.judge.rule import (
    PAIRED,
    changed_region,
    dilate,
    nearest_value,
    region_fidelity,
    side_votes,
    sides,
)

Target = tuple[str, str] | None  # (attribute, value) an image was meant to edit, or None


@cache  # cleared after each face by rule_labels
def _candidates(base: Attributes, seed: int, attribute: str) -> torch.Tensor:
    """Renders (K, 3, H, W) of the face under every value of ``attribute`` (cached: faces repeat)."""
    return value_renders([base], [seed], attribute)[0]


def _agreed(votes: list[int | None]) -> int | None:
    """The value every non-empty side votes for; None if the sides disagree or the region is empty."""
    reads = {v for v in votes if v is not None}
    return reads.pop() if len(reads) == 1 else None


def read_sides_by_rule(
    y: torch.Tensor,
    attrs: Attributes,
    seed: int,
    target: Target = None,
    min_fidelity: float = 0.5,
    nearest: bool = True,
) -> tuple[Attributes, dict[str, tuple[int, int]], bool | None]:
    """The attributes a person reads on image ``y`` (3, H, W) of the face (``attrs``, ``seed``), for each paired
    part what each side reads on its own (value indices, left and right), and whether every side of the target's
    region passes region fidelity alone (None without a target: the rule without the vote, for comparisons)."""
    read, per_side = attrs, {}
    passes, fidelity_ok = None, None
    if target is not None:
        attribute, value = target
        cands = _candidates(attrs, seed, attribute)
        values = SCHEMA[attribute].values
        t = values.index(value)
        pair = cands[[values.index(getattr(attrs, attribute)), t]]
        side_masks = sides(changed_region(pair[1:], pair[:1]), attribute in PAIRED)
        fid = region_fidelity(y[None], pair[1:], pair[:1], side_masks)
        passes = (torch.nan_to_num(fid, nan=1.0)[0] >= min_fidelity).tolist()
        fidelity_ok = all(passes)
        if nearest:
            near = nearest_value(y[None], cands[None], t, side_masks)[0].tolist()
            passes = [p and n for p, n in zip(passes, near)]
        if all(passes):
            read = attrs.replace(**{attribute: value})
    for attribute in LABEL_ATTRIBUTES:
        values = SCHEMA[attribute].values
        if target is not None and attribute == target[0]:
            t = values.index(target[1])
            votes = side_votes(y, _candidates(read, seed, attribute), attribute, exclude=t)
            if getattr(read, attribute) != target[1]:  # not the target: which other value, if any?
                k = _agreed(votes)
                if k is not None:
                    read = read.replace(**{attribute: values[k]})
            votes = [t if ok else v for ok, v in zip(passes, votes)]
        else:
            votes = side_votes(y, _candidates(read, seed, attribute), attribute)
            k = _agreed(votes)
            if k is not None:
                read = read.replace(**{attribute: values[k]})
        if attribute in PAIRED:
            now = values.index(getattr(read, attribute))
            left, right = (now if v is None else v for v in votes)
            per_side[attribute] = (left, right)
    return read, per_side, fidelity_ok


def rule_labels(
    images: torch.Tensor,
    attrs: Sequence[Attributes],
    seeds: Sequence[int],
    targets: Sequence[Target],
    nearest: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label vectors (N, len(LABEL_ATTRIBUTES)) read by the region rule, per side of the paired parts
    (N, len(PAIRED), 2), and (N,) whether region fidelity alone reads each image's target (False without one);
    images grouped by face, whose candidate renders are cached while its images are read."""
    out = torch.zeros(len(attrs), len(LABEL_ATTRIBUTES), dtype=torch.long)
    out_sides = torch.zeros(len(attrs), len(PAIRED), 2, dtype=torch.long)
    out_fidelity = torch.zeros(len(attrs), dtype=torch.bool)
    previous = None
    for i in sorted(range(len(attrs)), key=lambda j: (int(seeds[j]), j)):
        if int(seeds[i]) != previous:
            _candidates.cache_clear()
            previous = int(seeds[i])
        read, per_side, fidelity_ok = read_sides_by_rule(
            images[i].float(), attrs[i], int(seeds[i]), targets[i], nearest=nearest
        )
        out[i] = torch.from_numpy(read.encode())
        out_sides[i] = torch.tensor([per_side[a] for a in PAIRED])
        out_fidelity[i] = bool(fidelity_ok)
    _candidates.cache_clear()
    return out, out_sides, out_fidelity


def compose(source: torch.Tensor, ideal: torch.Tensor, attribute: str, g: torch.Generator) -> torch.Tensor:
    """Hard cases composed from exact renders (N, 3, H, W): per image one of: the ideal, one side of it, a partial
    blend inside the region, the target colour as a ring around the part, a global cast toward it, a blurred ideal,
    the ideal under a colour cast. Their labels come from the rule, never from the kind."""
    n = source.shape[0]
    region = changed_region(ideal, source)  # (N, 1, H, W)
    colour = (ideal * region).sum((2, 3), keepdim=True) / region.sum((2, 3), keepdim=True).clamp_min(1)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g)  # noqa: E731
    one_side = sides(region, attribute in PAIRED)[
        :, torch.randint(2 if attribute in PAIRED else 1, (1,), generator=g)
    ]
    blend = u(0.15, 0.85)
    ring = dilate(region, 3) & ~region
    cast = 0.3 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)
    soft = F.avg_pool2d(F.pad(ideal, (1, 1, 1, 1), mode="replicate"), 3, 1)
    options = torch.stack(
        [
            ideal,
            torch.where(one_side, ideal, source),
            torch.where(region, source + blend * (ideal - source), source),
            torch.where(ring, source + u(0.3, 0.9) * (colour - source), source),
            source + u(0.1, 0.45) * (colour - source),
            soft + u(0.0, 1.0) * (F.avg_pool2d(soft, 3, 1, 1, count_include_pad=False) - soft),
            ideal + cast,
        ]
    )  # (7, N, 3, H, W)
    kind = torch.randint(options.shape[0], (n,), generator=g)
    return options[kind, torch.arange(n)].clamp(-1, 1)


def agreement(
    pred: dict[str, torch.Tensor],
    labels: torch.Tensor,
    targets: Sequence[Target],
    reads: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Oracle vs rule on labelled images: per edit target, the share of images where 'the oracle reads the target'
    equals 'the rule reads it' (``target``), and per attribute the share of identical readings (``attribute``).
    ``reads`` (N,) bool: whether another rule reads each image's target (e.g. region fidelity alone), compared
    with instead of the labels' target column."""
    out: dict[str, dict[str, float]] = {"target": {}, "target_n": {}, "attribute": {}}
    for i, name in enumerate(LABEL_ATTRIBUTES):
        out["attribute"][name] = (pred[name] == labels[:, i]).float().mean().item()
    keys = sorted({t for t in targets if t is not None})
    for attribute, value in keys:
        idx = torch.tensor([t == (attribute, value) for t in targets])
        j, k = LABEL_ATTRIBUTES.index(attribute), SCHEMA[attribute].index(value)
        rule = labels[idx, j] == k if reads is None else reads[idx]
        same = (pred[attribute][idx] == k) == rule
        out["target"][f"{attribute}:{value}"] = same.float().mean().item()
        out["target_n"][f"{attribute}:{value}"] = int(idx.sum())
    return out
