"""Ideal-edit metrics: an edit judged against the world's own ideal edit (same face, only the target changed).

Pure tensor functions on images in [-1, 1] (N, 3, H, W), so the toyfaces evaluator, the build report's ceilings,
the oracle's calibration labels and the tests all use one definition:
- region: where the ideal render differs from the source render; parts that come in pairs (ears, eyebrows,
  eyes) are split into a left and a right side at the region's centroid, so one ear is not a pair.
- region fidelity (per side): share of the side's pixels where the edit is closer to the ideal than to the source.
- collateral PSNR: edit vs the unedited reconstruction outside the (dilated) region; NaN for global edits.
- PSNR to the ideal render.
- nearest target (per side): the value the side's pixels are nearest to in CIELAB, among the renders of the face
  under every value of the attribute, is the target. Region fidelity alone passes colours between the source and
  the target (dark navy lips for "black lipstick"); this vote does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from src.utils.stats import psnr_db

PAIRED = ("ears", "eyebrow_color", "iris_color")  # attributes drawn on both sides of the face
CHANGE_THRESHOLD = 0.1  # a pixel belongs to the region when a channel changes by more than this (~13/255)


@dataclass(frozen=True)
class FaithfulThresholds:
    """What makes an edit faithful (domain.evaluator.faithful): every side of the region closer to the ideal on
    at least ``min_region_fidelity`` of its pixels and, with ``nearest_target``, nearest the target among all the
    attribute's values (CIELAB vote); the rest of the image within ``min_collateral_psnr`` dB of the unedited
    reconstruction (the generator's own reconstruction error of a render is ~29 dB)."""

    min_region_fidelity: float = 0.5
    min_collateral_psnr: float = 28.0
    dilate: int = 2
    nearest_target: bool = True


def changed_region(
    ideal: torch.Tensor, source: torch.Tensor, threshold: float = CHANGE_THRESHOLD
) -> torch.Tensor:
    """Pixels the ideal edit repaints: (N, 1, H, W) bool."""
    return (ideal.float() - source.float()).abs().amax(1, keepdim=True) > threshold


def values_region(renders: torch.Tensor, threshold: float = CHANGE_THRESHOLD) -> torch.Tensor:
    """Pixels where a face's renders under every value of an attribute (K, 3, H, W) differ: the attribute's
    region, (H, W) bool."""
    return (renders.amax(0) - renders.amin(0)).amax(0) > threshold


def sides(region: torch.Tensor, paired: bool) -> torch.Tensor:
    """Split a region (N, 1, H, W) into sides (N, S, H, W): left/right of its x-centroid when ``paired``."""
    if not paired:
        return region.bool()
    n, _, h, w = region.shape
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    count = region.float().sum((1, 2, 3)).clamp_min(1)
    cx = (region.float() * xs).sum((1, 2, 3)) / count  # (N,)
    left = xs < cx.view(n, 1, 1, 1)
    return torch.cat([region & left, region & ~left], dim=1)


def region_fidelity(
    edit: torch.Tensor, ideal: torch.Tensor, source: torch.Tensor, side_masks: torch.Tensor
) -> torch.Tensor:
    """Share (N, S) of each side's pixels where the edit is closer to the ideal than to the source; NaN for an
    empty side (nothing to change there)."""
    to_ideal = (edit.float() - ideal.float()).pow(2).sum(1, keepdim=True)
    to_source = (edit.float() - source.float()).pow(2).sum(1, keepdim=True)
    closer = (to_ideal < to_source).float()  # (N, 1, H, W)
    m = side_masks.float()
    count = m.sum((2, 3))
    share = (closer * m).sum((2, 3)) / count.clamp_min(1)
    return torch.where(count > 0, share, torch.full_like(share, float("nan")))


def lab(x: torch.Tensor) -> torch.Tensor:
    """CIELAB (B, 3, H, W) of images in [-1, 1]: distances there follow how far apart colours look."""
    from kornia.color import rgb_to_lab

    return rgb_to_lab(((x.float() + 1) / 2).clamp(0, 1))


def scaled_lab(x: torch.Tensor) -> torch.Tensor:
    """CIELAB of images in [-1, 1], scaled to about [-1, 1] per channel (network inputs: L in [0, 100], a and b in
    about [-100, 100])."""
    c = lab(x)
    return torch.cat([c[:, :1] / 50 - 1, c[:, 1:] / 100], 1)


def cie76(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared CIELAB distance (..., 3, H, W) x (..., 3, H, W) -> (..., H, W), broadcasting."""
    return (a - b).pow(2).sum(-3)


def nearest_value(
    edit: torch.Tensor,
    candidates: torch.Tensor,
    target: int | torch.Tensor,
    side_masks: torch.Tensor,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cie76,
) -> torch.Tensor:
    """Whether (N, S) the plurality of each side's pixels is nearest, in CIELAB, to the render of value ``target`` among
    ``candidates`` (N, K, 3, H, W): the face rendered under every value of the attribute. True on an empty side.
    ``target``: one index for every face, or (N, 1) indices, one per face.
    ``distance``: of CIELAB images (N, 1, 3, H, W) and (N, K, 3, H, W) -> (N, K, H, W) (default: ``cie76``)."""
    n, k = candidates.shape[:2]
    cands = lab(candidates.flatten(0, 1)).view(n, k, *edit.shape[1:])
    d = distance(lab(edit)[:, None], cands)  # (N, K, H, W)
    nearest = F.one_hot(d.argmin(1), k).float()  # (N, H, W, K)
    counts = torch.einsum("nhwk,nshw->nsk", nearest, side_masks.float())  # (N, S, K) votes per side
    return (counts.argmax(-1) == target) | (side_masks.sum((2, 3)) == 0)


def side_votes(
    y: torch.Tensor,
    cands: torch.Tensor,
    attribute: str,
    exclude: int | None = None,
    space: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[int | None]:
    """Per side of the attribute's region, the index of the value its pixels vote for (None: an empty side).
    ``space``: a colour transform of (B, 3, H, W) images in which pixels measure their distances (default RGB)."""
    region = values_region(cands)  # (H, W)
    if space is not None:
        y, cands = space(y[None])[0], space(cands)
    d = (y[None] - cands).pow(2).sum(1)  # (K, H, W)
    if exclude is not None:
        d[exclude] = float("inf")
    nearest = d.argmin(0)
    return [
        int(torch.bincount(nearest[side], minlength=cands.shape[0]).argmax()) if side.any() else None
        for side in sides(region[None, None], attribute in PAIRED)[0]
    ]


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary dilation of (N, 1, H, W) by a (2p+1)^2 square."""
    if pixels <= 0:
        return mask.bool()
    return F.max_pool2d(mask.float(), 2 * pixels + 1, 1, pixels) > 0


def ideal_edit_scores(
    edit: torch.Tensor,
    recon: torch.Tensor,
    ideal: torch.Tensor,
    source: torch.Tensor,
    attribute: str,
    thresholds: FaithfulThresholds = FaithfulThresholds(),
    region: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    target: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-face scores of edits (N, 3, H, W) of reconstructions ``recon`` against the ideal render ``ideal``
    of the source render ``source``: region fidelity per side (N, S), its minimum (N,), collateral PSNR (N,;
    NaN when the region covers the image), PSNR to the ideal (N,), and the pixel-rule verdicts (N,) bool.
    ``region`` (N, 1, H, W): judge this part of a composed edit only (default: all the ideal repaints).
    ``candidates`` (N, K, 3, H, W), ``target``: the faces under every value and the target's index; with them and
    ``thresholds.nearest_target``, ``nearest_ok`` (N,): every side votes for the target (``nearest_value``)."""
    region = changed_region(ideal, source) if region is None else region.bool()
    side_masks = sides(region, attribute in PAIRED)
    fidelity = region_fidelity(edit, ideal, source, side_masks)
    outside = ~dilate(region, thresholds.dilate)
    collateral = psnr_db(edit, recon, outside)
    fid_min = torch.nan_to_num(fidelity, nan=1.0).amin(1)  # an empty side has nothing to get wrong
    region_ok = fid_min >= thresholds.min_region_fidelity
    collateral_ok = torch.nan_to_num(collateral, nan=float("inf")) >= thresholds.min_collateral_psnr
    out = {
        "region_fidelity": fidelity,
        "region_fidelity_min": fid_min,
        "collateral_psnr": collateral,
        "psnr_to_ideal": psnr_db(edit, ideal),
        "region_ok": region_ok,
        "collateral_ok": collateral_ok,
    }
    if thresholds.nearest_target and candidates is not None:
        out["nearest_ok"] = nearest_value(edit, candidates, target, side_masks).all(1)
    return out


def nanmean(t: torch.Tensor) -> float | None:
    """Mean over finite entries (None when there are none)."""
    t = t.float()
    finite = torch.isfinite(t)
    return t[finite].mean().item() if bool(finite.any()) else None


def summarize(
    scores: dict[str, torch.Tensor], faithful: torch.Tensor, attribute: str
) -> dict[str, float | None]:
    """Means of the per-face scores: the numbers a table shows (sides named left/right for paired parts)."""
    fid = scores["region_fidelity"]
    names = ("left", "right") if attribute in PAIRED else ("region",)
    out: dict[str, float | None] = {"faithful_rate": faithful.float().mean().item()}
    for i, name in enumerate(names):
        out[f"region_fidelity_{name}"] = nanmean(fid[:, i])
    out["region_fidelity_min"] = nanmean(scores["region_fidelity_min"])
    out["region_pass_rate"] = scores["region_ok"].float().mean().item()
    if "nearest_ok" in scores:
        out["nearest_target_rate"] = scores["nearest_ok"].float().mean().item()
    out["collateral_psnr"] = nanmean(scores["collateral_psnr"])
    out["collateral_pass_rate"] = scores["collateral_ok"].float().mean().item()
    out["psnr_to_ideal"] = nanmean(scores["psnr_to_ideal"])
    return out
