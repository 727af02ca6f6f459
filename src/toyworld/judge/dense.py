"""The oracle's dense colour reader: counts pixels as the region rule does, where pooled features miss near ties.

The calibrated oracle pools an 8x8 feature map; on a colour between two values (dark maroon or navy lips for black
lipstick) it misses the rule's CIELAB vote (docs/history/judge.md "What is left on the lips"). The dense reader is a small
full-resolution CNN per attribute that sees the image, its difference from the reconstruction and CIELAB, and
predicts per pixel what the rule computes from the face's renders under every value: the attribute's region, the
value whose render is nearest in CIELAB (the vote) and, for every pair of values, which render is nearer in RGB
(region fidelity). An edit's target is then read from the predicted maps as the rule reads it from the true ones.
Trained by the build's ``dense`` stage (``src.toyworld.judge.dense_calibration``). Evaluation only: nothing here feeds a
loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.toyworld.attributes import SCHEMA
from src.toyworld.judge.rule import PAIRED, cie76, lab, scaled_lab, sides, values_region


def pairs(k: int) -> list[tuple[int, int]]:
    """Value pairs (a, b), a < b: map j of a reader says 'nearer value a than value b' for pairs(k)[j]."""
    return list(itertools.combinations(range(k), 2))


def dense_labels(
    x: torch.Tensor,
    cands: torch.Tensor,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cie76,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the rule computes per pixel of images ``x`` (N, 3, H, W) of one face, from its renders ``cands``
    (K, 3, H, W) under every value: the region (N, H, W) bool, the CIELAB-nearest value (N, H, W) long and, per
    value pair, whether the pixel is nearer (RGB) the first (N, P, H, W) bool. ``distance``: the vote's, as in
    ``src.toyworld.judge.rule.nearest_value`` (default CIE76, the judge's)."""
    n = x.shape[0]
    region = values_region(cands).expand(n, -1, -1)
    nearest = distance(lab(x)[:, None], lab(cands)[None].expand(n, -1, -1, -1, -1)).argmin(1)
    d = (x[:, None] - cands[None]).pow(2).sum(2)  # (N, K, H, W)
    first = torch.stack([d[:, a] < d[:, b] for a, b in pairs(cands.shape[0])], 1)
    return region, nearest, first


def read_maps(
    region: torch.Tensor,
    nearest: torch.Tensor,
    first: torch.Tensor,
    target: int,
    source: torch.Tensor,
    paired: bool,
) -> torch.Tensor:
    """Whether (N,) bool the rule reads value ``target`` over each image's ``source`` value (N,) from per-pixel
    maps (``dense_labels``' shapes): on every side of the region at least half the pixels are nearer the target's
    render than the source's, and the plurality votes in CIELAB for the target. An empty side passes, as in the
    rule; an image whose source already is the target is not read here (False)."""
    k = _values(first.shape[1])
    index = {p: j for j, p in enumerate(pairs(k))}
    j = [index.get((min(target, s), max(target, s)), 0) for s in source.tolist()]
    source, j = source.to(first.device), torch.tensor(j, dtype=torch.long, device=first.device)
    near_t = (
        first[torch.arange(len(j), device=first.device), j] ^ (target > source)[:, None, None]
    )  # (N, H, W)
    masks = sides(region[:, None], paired).float()  # (N, S, H, W)
    count = masks.sum((2, 3))
    fidelity = (near_t[:, None].float() * masks).sum((2, 3)) >= 0.5 * count
    votes = torch.einsum("nhwk,nshw->nsk", F.one_hot(nearest, k).float(), masks)  # (N, S, K)
    ok = (fidelity & (votes.argmax(-1) == target)) | (count == 0)
    return ok.all(1) & (source != target)


def _values(p: int) -> int:
    """The number of values K of an attribute with p = K (K - 1) / 2 value pairs."""
    return int(round((1 + (1 + 8 * p) ** 0.5) / 2))


class DenseHead(nn.Module):
    """Per-pixel maps of one attribute with ``k`` values at full resolution: the region logit, the CIELAB-nearest
    value's logits (k) and per value pair the 'nearer the first' logit; dilated convolutions see about 35 px."""

    def __init__(self, k: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 9  # the image, its difference from the reference, its scaled CIELAB
        for d in (1, 1, 2, 4, 8, 1):
            layers += [nn.Conv2d(cin, width, 3, padding=d, dilation=d), nn.ReLU(True)]
            cin = width
        self.k = k
        self.body = nn.Sequential(*layers, nn.Conv2d(width, 1 + k + len(pairs(k)), 1))

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([x, x - ref, scaled_lab(x)], 1))  # (N, 1 + K + P, H, W)

    def maps(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Region (N, H, W), nearest value (N, H, W) and pair maps (N, P, H, W) from ``forward``'s logits."""
        return out[:, 0] > 0, out[:, 1 : 1 + self.k].argmax(1), out[:, 1 + self.k :] > 0


class DenseReader(nn.Module):
    """Dense heads for some attributes (``heads``: ModuleDict by attribute name), each image also read mirrored
    and averaged (the rule is left-right symmetric). Attached to an oracle as ``oracle.dense``."""

    def __init__(self, attributes: Sequence[str], width: int = 32) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({a: DenseHead(len(SCHEMA[a].values), width) for a in attributes})

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> DenseReader:
        names = sorted({k.split(".")[1] for k in state if k.startswith("heads.")})
        width = state[f"heads.{names[0]}.body.0.weight"].shape[0]
        reader = cls(names, width)
        reader.load_state_dict({k: v.float() for k, v in state.items()})
        return reader.eval()

    @torch.no_grad()
    def reads_target(
        self,
        images: torch.Tensor,
        reference: torch.Tensor,
        attribute: str,
        value: str,
        source: torch.Tensor,
        size: int = 64,
        batch: int = 256,
    ) -> torch.Tensor:
        """Whether edits ``images`` (N, 3, H, W) in [-1, 1] read ``value`` beside the faces they edit
        (``reference``), whose ``attribute`` reads ``source`` (N,); read as the region rule reads it, at ``size``
        px (the renders' size the reader was trained at)."""
        head, t = self.heads[attribute], SCHEMA[attribute].index(value)
        size = (size, size)
        if images.shape[-2:] != size:
            images, reference = (F.interpolate(v, size=size, mode="bilinear", antialias=True)
                                 for v in (images, reference))  # fmt: skip
        out = []
        for i in range(0, len(images), batch):
            x, r = images[i : i + batch], reference[i : i + batch]
            logits = 0.5 * (head(x, r) + head(x.flip(3), r.flip(3)).flip(3))
            out.append(read_maps(*head.maps(logits), t, source[i : i + batch], attribute in PAIRED))
        return torch.cat(out).to(source.device)
