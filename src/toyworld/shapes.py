"""Face geometry of the toyfaces renderer: labelled polygons in head-local coordinates.

Units are head half-widths, u to the right, v downwards, origin at the head centre; render.py maps them to
pixels (position, scale, rotation). Polygons are listed in painter's order.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

HAIR_STYLES = ("short", "fringe", "bob", "long", "bun", "buzz")

Poly = tuple[str, np.ndarray]  # (draw label, points [K, 2])
SHOULDERS = np.array(
    [[-0.5, 1.6], [0.5, 1.6], [1.45, 1.95], [1.75, 2.3], [1.9, 3.2], [-1.9, 3.2], [-1.75, 2.3], [-1.45, 1.95]]
)


@dataclass(frozen=True)
class Nuisance:
    """Everything about a face that is not an attribute; drawn from the render seed (render.sample_nuisance).

    Defined here, beside the geometry that reads it, so render imports shapes and never the reverse.
    """

    bg_a: tuple[float, float, float]
    bg_b: tuple[float, float, float]
    bg_angle: float
    hair_style: str
    face_height: float  # vertical semi-axis of the head, in head half-widths
    jaw: float  # width of the chin relative to the cheeks
    cx: float  # head centre, fraction of the image
    cy: float
    scale: float
    rotation: float  # radians
    light_angle: float
    light_strength: float
    gaze: float  # horizontal iris offset
    mouth_width: float
    brow_tilt: float
    clothes: tuple[float, float, float]


def ellipse(
    cu: float, cv: float, ru: float, rv: float, n: int = 24, t0: float = 0.0, t1: float = 2 * math.pi
):
    """Points of an ellipse (or an arc of it, angles t0..t1, v downwards)."""
    cs = _unit_arc(n, t0, t1)
    return cs * np.array([ru, rv]) + np.array([cu, cv])


@functools.lru_cache(maxsize=256)
def _unit_arc(n: int, t0: float, t1: float) -> np.ndarray:
    """Cached (cos t, sin t) points: ellipses are drawn thousands of times per second."""
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-6)
    out = np.stack([np.cos(t), np.sin(t)], axis=1)
    out.flags.writeable = False
    return out


def mirror(pts: np.ndarray) -> np.ndarray:
    """Left-right mirror image (u -> -u)."""
    return pts * np.array([-1.0, 1.0])


def head(nz: Nuisance) -> np.ndarray:
    """Head outline: an ellipse whose lower half narrows toward the chin by the jaw factor."""
    pts = ellipse(0.0, 0.0, 1.0, nz.face_height, n=40)
    lower = np.clip(pts[:, 1] / nz.face_height, 0, 1)
    pts[:, 0] *= 1 - (1 - nz.jaw) * lower**2
    return pts


def hair_cap(nz: Nuisance, side: float, mid: float, grow: float = 1.0, flat: bool = False) -> np.ndarray:
    """Hair over the skull: outer arc down to v=side at the temples, back along a hairline to v=mid."""
    ru, rv = 1.0 + 0.08 * grow, nz.face_height + 0.17 * grow
    a = math.asin(max(-0.99, side / rv))
    outer = ellipse(0.0, 0.0, ru, rv, n=28, t0=math.pi - a, t1=2 * math.pi + a)
    u_end = abs(outer[-1, 0])
    u = np.linspace(u_end, -u_end, 15)
    shape = (1 - (np.abs(u) / u_end) ** (6 if flat else 2)) ** 0.5
    inner = np.stack([u, side + (mid - side) * shape], axis=1)
    return np.concatenate([outer, inner])


def back_hair(nz: Nuisance, bottom: float, width: float) -> np.ndarray:
    """Hair behind the head: the top of a big ellipse continued straight down to v=bottom."""
    rv = nz.face_height * 1.04 + 0.16
    top = ellipse(0.0, 0.0, width, rv, n=24, t0=math.pi, t1=2 * math.pi)
    return np.concatenate([top, [[width * 1.05, bottom], [-width * 1.05, bottom]]])


def ear(pointed: bool) -> list[Poly]:
    """Right ear (outline and inner shading): a round shell, or a leaf with a tall tip above the head side."""
    if not pointed:
        return [("ear", ellipse(1.0, -0.02, 0.25, 0.34)), ("ear_inner", ellipse(1.08, -0.02, 0.1, 0.2))]
    outer = np.array(
        [[0.88, 0.26], [1.05, 0.32], [1.22, 0.12], [1.3, -0.3], [1.52, -1.12], [1.1, -0.55], [0.88, -0.3]]
    )
    inner = np.array([[1.02, 0.12], [1.15, -0.08], [1.36, -0.8], [1.08, -0.38], [1.0, -0.12]])
    return [("ear", outer), ("ear_inner", inner)]


def eye(nz: Nuisance, side: int) -> list[Poly]:
    """Eye on `side` (+1 right, -1 left): lid rim, white, iris (the coloured part) and pupil."""
    cu, cv = 0.42 * side, -0.05
    iu = cu + nz.gaze
    return [
        ("lid", ellipse(cu, cv - 0.01, 0.34, 0.25, n=16, t0=math.pi, t1=2 * math.pi)),
        ("sclera", ellipse(cu, cv, 0.31, 0.2)),
        ("iris", ellipse(iu, cv + 0.01, 0.19, 0.19, n=20)),
        ("pupil", ellipse(iu, cv + 0.01, 0.065, 0.065, n=12)),
    ]


def brow(nz: Nuisance) -> np.ndarray:
    """Right eyebrow: a thick arched band, tapering outwards."""
    t = nz.brow_tilt
    return np.array(
        [[0.13, -0.36], [0.42, -0.43], [0.74, -0.36 + t], [0.74, -0.48 + t], [0.42, -0.6], [0.13, -0.54]]
    )


def mouth(nz: Nuisance) -> list[Poly]:
    """Lips (wide, both lips one polygon) and the dark line between them."""
    w, cv = nz.mouth_width, 0.6
    lips = np.array(
        [[-w, 0], [-0.2, -0.15], [0, -0.08], [0.2, -0.15], [w, 0], [0.26, 0.18], [0, 0.21], [-0.26, 0.18]]
    )
    line = np.array([[-0.85 * w, -0.02], [0.85 * w, -0.02], [0.85 * w, 0.025], [-0.85 * w, 0.025]])
    return [("lip", lips + [0, cv]), ("lip_line", line + [0, cv])]


def face_polygons(pointed_ears: bool, nz: Nuisance) -> list[Poly]:
    """All labelled polygons of a face, in painter's order."""
    style = nz.hair_style
    polys: list[Poly] = [("clothes", SHOULDERS)]
    if style == "bob":
        polys.append(("hair", back_hair(nz, 0.75, 1.16)))
    elif style == "long":
        polys.append(("hair", back_hair(nz, 3.0, 1.2)))
    polys.append(("skin_shade", np.array([[-0.4, 0.5], [0.4, 0.5], [0.44, 1.75], [0, 1.9], [-0.44, 1.75]])))
    for label, pts in ear(pointed_ears):
        polys += [(label, pts), (label, mirror(pts))]
    if style == "bun":
        polys.append(("hair", ellipse(0.0, -nz.face_height - 0.2, 0.36, 0.32)))
    polys.append(("skin", head(nz)))
    caps = {
        "short": dict(side=-0.5, mid=-0.85),
        "fringe": dict(side=-0.45, mid=-0.7, flat=True),
        "bob": dict(side=-0.35, mid=-0.8),
        "long": dict(side=-0.4, mid=-0.82),
        "bun": dict(side=-0.55, mid=-0.9),
        "buzz": dict(side=-0.6, mid=-0.95, grow=0.4),
    }
    polys.append(("hair", hair_cap(nz, **caps[style])))
    polys.append(("skin_shade", np.array([[0.0, 0.1], [0.09, 0.36], [-0.09, 0.36]])))
    polys += eye(nz, 1) + eye(nz, -1)
    polys += [("brow", brow(nz)), ("brow", mirror(brow(nz)))]
    polys += mouth(nz)
    return polys
