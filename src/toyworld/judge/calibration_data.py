"""The oracle's calibration set as data, and how the oracle reads it: the labelled images (``CalibrationSet``), the
reconstructions each image is read beside, the edit codes of the oracle's edit loss, and the held-out agreement.

The set is made by ``src.toyworld.judge.calibration_set`` (its sources and the calibrate stage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.judge.calibration import Target, agreement
from src.toyworld.training import decode


@dataclass
class CalibrationSet:
    """uint8 images (N, 3, H, W), rule labels (N, A) and per side of the paired parts (N, len(PAIRED), 2), the
    target each image was meant to edit, its source kind, the face it shows (index into the split's latents) and
    whether region fidelity alone reads its target (N,; the rule without the colour vote, for comparison)."""

    images: torch.Tensor
    labels: torch.Tensor
    side_labels: torch.Tensor
    faces: torch.Tensor
    targets: list[Target] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    fidelity_ok: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def float_images(self) -> torch.Tensor:
        return self.images.float() / 127.5 - 1.0

    def state(self) -> dict:
        return {"images": self.images, "labels": self.labels, "side_labels": self.side_labels,
                "faces": self.faces, "targets": self.targets, "kinds": self.kinds,
                "fidelity_ok": self.fidelity_ok}  # fmt: skip


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def references(gen: torch.nn.Module, w: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """uint8 reconstructions (N, 3, H, W) of the faces images show (``faces``: indices into latents ``w``): what
    the oracle reads each image against, as the judge reads an edit against the reconstruction it edits."""
    unique, inverse = faces.unique(return_inverse=True)
    return to_uint8(decode(gen, w[unique]))[inverse]


def edit_codes(targets: Sequence[Target], attrs: Sequence[Attributes]) -> torch.Tensor:
    """Per image (N, 3): the index of the attribute it was meant to edit (-1: none), the target value's index and
    the source face's value index (``attrs``: the face each image shows), for the oracle's edit loss."""
    out = torch.full((len(targets), 3), -1, dtype=torch.long)
    for i, (t, a) in enumerate(zip(targets, attrs)):
        if t is not None:
            values = SCHEMA[t[0]].values
            out[i] = torch.tensor(
                [LABEL_ATTRIBUTES.index(t[0]), values.index(t[1]), values.index(getattr(a, t[0]))]
            )
    return out


def read_edits(
    oracle: torch.nn.Module, images: torch.Tensor, refs: torch.Tensor, targets: Sequence[Target]
) -> dict[str, torch.Tensor]:
    """The oracle's readings of images beside their faces' reconstructions ``refs``, each edit's target read as the
    judge reads it (``Oracle.predict(..., targets=...)``); one pass per target group."""
    pred = {a: torch.empty(len(images), dtype=torch.long) for a in LABEL_ATTRIBUTES}
    for t in set(targets):
        i = torch.tensor([u == t for u in targets])
        for a, p in oracle.predict(images[i], refs[i], targets=[t] if t else ()).items():
            pred[a][i] = p
    return pred


def heldout_metrics(oracle: torch.nn.Module, held: CalibrationSet, refs: torch.Tensor) -> dict:
    """The oracle's agreement with the rule on the held-out set (``refs``: its faces' reconstructions in [-1, 1]):
    each target read as the judge reads it (``agreement``), per source kind, as the oracle's top value alone
    (``agreement_absolute``) and against region fidelity alone (``agreement_fidelity``: the rule without the colour
    vote; the same as ``agreement`` when the labels were made without it, calib_nearest=false)."""
    x = held.float_images()
    pred = read_edits(oracle, x, refs, held.targets)
    by_kind = {}
    for kind in sorted(set(held.kinds)):
        i = torch.tensor([k == kind for k in held.kinds])
        sub = agreement(
            {a: p[i] for a, p in pred.items()}, held.labels[i], [t for t, m in zip(held.targets, i) if m]
        )
        by_kind[kind] = sub["target"]
    return {
        "agreement": agreement(pred, held.labels, held.targets),
        "agreement_absolute": agreement(oracle.predict(x, refs), held.labels, held.targets),
        "agreement_by_kind": by_kind,
        "agreement_fidelity": agreement(pred, held.labels, held.targets, held.fidelity_ok),
    }
