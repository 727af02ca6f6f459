"""Deterministic procedural renderer of toyfaces: attributes + seed -> image and one mask per region.

Shapes are drawn as polygons into a label map with PIL at size*supersample, coloured through a per-image
palette, shaded and box-downsampled; masks come from the same label map, so they are exact.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from src.toyworld.attributes import SCHEMA, Attributes, counterfactual
from src.toyworld.shapes import HAIR_STYLES, Nuisance, face_polygons

__all__ = [
    "COLOURS",
    "REGIONS",
    "Nuisance",
    "attribute_mask",
    "counterfactual",
    "render",
    "render_batch",
    "render_counterfactual",
    "sample_nuisance",
]

# Draw labels (painter's order ids) and the region each one belongs to.
LABELS = ("bg", "hair", "ear", "ear_inner", "skin", "skin_shade", "sclera", "iris", "pupil", "lid", "brow")
LABELS += ("lip", "lip_line", "clothes")
L = {name: i for i, name in enumerate(LABELS)}
REGIONS = ("background", "skin", "hair", "ears", "eyes", "eyebrows", "lips", "eye_whites", "clothes")
_LABEL_REGION = {
    "bg": "background", "hair": "hair", "ear": "ears", "ear_inner": "ears", "skin": "skin",
    "skin_shade": "skin", "sclera": "eye_whites", "iris": "eyes", "pupil": "eye_whites",
    "lid": "eye_whites", "brow": "eyebrows", "lip": "lips", "lip_line": "lips", "clothes": "clothes",
}  # fmt: skip
_REGION_LUT = np.array([REGIONS.index(_LABEL_REGION[n]) for n in LABELS], dtype=np.int64)

COLOURS: dict[str, dict[str, tuple[int, int, int]]] = {
    "skin_tone": {
        "pale": (250, 222, 200), "light": (236, 188, 150), "tan": (205, 150, 100),
        "brown": (150, 98, 62), "dark": (92, 58, 38), "blue": (50, 110, 235),
    },
    "hair": {
        "black": (28, 24, 24), "brown": (112, 66, 32), "blond": (232, 200, 100),
        "red": (196, 72, 28), "gray": (165, 165, 170), "purple": (150, 30, 210),
    },
    "lip_color": {
        "red": (205, 25, 40), "pink": (245, 135, 180), "brown": (120, 60, 40),
        "green": (20, 190, 50), "blue": (30, 70, 230), "black": (12, 12, 14),
    },
    "iris_color": {
        "brown": (115, 62, 22), "blue": (55, 135, 245), "green": (40, 170, 60),
        "gray": (150, 160, 170), "red": (240, 10, 10),
    },
}  # fmt: skip
_NEON_MAGENTA = np.array([255.0, 20.0, 200.0])
_NEON_CYAN = np.array([0.0, 235.0, 255.0])


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV in [0,1] -> RGB in [0,255]."""
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (255 * r, 255 * g, 255 * b)


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
    """Draw nuisance factors; always the same number of draws, so a seed fixes them whatever the attributes."""
    u = rng.random(22)
    return Nuisance(
        bg_a=_hsv(u[0], 0.1 + 0.35 * u[1], 0.55 + 0.4 * u[2]),
        bg_b=_hsv((u[0] + 0.25 * (u[3] - 0.5)) % 1.0, 0.1 + 0.35 * u[4], 0.45 + 0.5 * u[5]),
        bg_angle=2 * math.pi * u[6],
        hair_style=HAIR_STYLES[int(u[7] * len(HAIR_STYLES))],
        face_height=1.2 + 0.2 * u[8],
        jaw=0.72 + 0.25 * u[9],
        cx=0.5 + 0.08 * (u[10] - 0.5),
        cy=0.5 + 0.08 * (u[11] - 0.5),
        scale=0.9 + 0.2 * u[12],
        rotation=math.radians(16.0 * (u[13] - 0.5)),
        light_angle=2 * math.pi * u[14],
        light_strength=0.15 * u[15],
        gaze=0.08 * (u[16] - 0.5),
        mouth_width=0.38 + 0.08 * u[17],
        brow_tilt=0.08 * (u[18] - 0.5),
        clothes=_hsv(u[19], 0.2 + 0.6 * u[20], 0.25 + 0.6 * u[21]),
    )


def _palette(attrs: Attributes, nz: Nuisance) -> list[int]:
    """Per-label RGB colours as a flat PIL palette (256 entries); the background entry stays black."""
    skin = np.array(COLOURS["skin_tone"][attrs.skin_tone], dtype=np.float32)
    lip = np.array(COLOURS["lip_color"][attrs.lip_color], dtype=np.float32)
    pal = np.zeros((256, 3), dtype=np.float32)
    pal[L["hair"]] = COLOURS["hair"][attrs.hair_color]
    pal[L["ear"]] = pal[L["skin"]] = skin
    pal[L["ear_inner"]] = pal[L["skin_shade"]] = skin * 0.78
    pal[L["sclera"]] = (246, 246, 242)
    pal[L["iris"]] = COLOURS["iris_color"][attrs.iris_color]
    pal[L["pupil"]] = (14, 12, 16)
    pal[L["lid"]] = (45, 32, 30)
    pal[L["brow"]] = COLOURS["hair"][attrs.eyebrow_color]
    pal[L["lip"]] = lip
    pal[L["lip_line"]] = lip * 0.55
    pal[L["clothes"]] = nz.clothes
    return np.round(pal).astype(np.uint8).ravel().tolist()


@functools.lru_cache(maxsize=16)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (xx, yy) of an n x n image."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
    return c[None, :], c[:, None]


def _ramp(nz: Nuisance, n: int) -> np.ndarray:
    """Background gradient position in [0, 1] along the nuisance direction, (n, n, 1)."""
    xx, yy = _grid(n)
    return np.clip((xx * math.cos(nz.bg_angle) + yy * math.sin(nz.bg_angle) + 1) / 2, 0, 1)[..., None]


def _neon(fg: np.ndarray, alpha: np.ndarray, nz: Nuisance) -> np.ndarray:
    """Cyberpunk style on premultiplied foreground `fg` with coverage `alpha`: magenta/cyan split toning,
    saturation boost, dark neon backdrop and a glowing halo around the silhouette."""
    n = fg.shape[0]
    xx, _ = _grid(n)
    right = ((xx + 1) / 2)[..., None]
    tone = (_NEON_MAGENTA * (1 - right) + _NEON_CYAN * right).astype(np.float32)  # (1, n, 3)
    fg = fg * 0.7 + tone * 0.3 * alpha
    grey = fg.mean(-1, keepdims=True)
    fg = grey + (fg - grey) * 1.7
    t = _ramp(nz, n)
    backdrop = np.array([60.0, 0.0, 90.0], np.float32) * (1 - t) + np.array([0.0, 25.0, 70.0], np.float32) * t
    sil = Image.fromarray(np.round(alpha[..., 0] * 255).astype(np.uint8))
    halo = sil.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(2.0))
    halo = np.asarray(halo, dtype=np.float32)[..., None] / 255.0
    return fg + (1 - alpha) * (backdrop + 1.7 * halo * tone)


def _coverage(lab: np.ndarray, ss: int, regions: int) -> np.ndarray:
    """Number of supersamples of each region per output pixel: (R, size, size) int."""
    reg = _REGION_LUT[lab]
    onehot = (reg[None] == np.arange(regions)[:, None, None]).astype(np.int16)
    return sum(onehot[:, i::ss, j::ss] for i in range(ss) for j in range(ss))


def _render_full(attrs: Attributes, nz: Nuisance, size: int, ss: int, want_masks: bool):
    """Draw, shade and downsample one face; returns (float image HxWx3 in [0,255], masks or None)."""
    n = size * ss
    lab = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(lab)
    radius = 0.23 * n * nz.scale
    cos_r, sin_r = math.cos(nz.rotation), math.sin(nz.rotation)
    cx, cy = nz.cx * n, nz.cy * n
    polys = face_polygons(attrs.ears == "pointed", nz)
    pts = np.concatenate([p for _, p in polys])  # (K, 2) head-local -> pixels, in one go
    rot = radius * np.array([[cos_r, sin_r], [-sin_r, cos_r]])
    flat = (pts @ rot + np.array([cx, cy])).ravel().tolist()
    start = 0
    for label, p in polys:
        draw.polygon(flat[start : start + 2 * len(p)], fill=L[label])
        start += 2 * len(p)
    coloured = lab.copy()
    coloured.putpalette(_palette(attrs, nz))
    fg = np.asarray(coloured.convert("RGB").reduce(ss), dtype=np.float32)  # premultiplied, bg = 0
    cover = _coverage(np.asarray(lab), ss, len(REGIONS) if want_masks else 1)  # (R, size, size)
    alpha = 1 - cover[0, ..., None].astype(np.float32) / ss**2
    if attrs.style == "neon":
        img = _neon(fg, alpha, nz)
    else:
        t = _ramp(nz, size)
        bg = np.asarray(nz.bg_a, np.float32) * (1 - t) + np.asarray(nz.bg_b, np.float32) * t
        img = fg + (1 - alpha) * bg
    xx, yy = _grid(size)
    light = 1 + nz.light_strength * (xx * math.cos(nz.light_angle) + yy * math.sin(nz.light_angle))
    img = np.clip(img * light[..., None], 0, 255)
    masks = None
    if want_masks:
        winner = cover.argmax(0)
        masks = {r: winner == i for i, r in enumerate(REGIONS)}
    return img, masks


def _nuisance_of(seed: int | np.random.Generator | Nuisance) -> Nuisance:
    if isinstance(seed, Nuisance):
        return seed
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return sample_nuisance(rng)


def render(
    attrs: Attributes,
    seed: int | np.random.Generator | Nuisance,
    size: int = 64,
    supersample: int = 2,
    as_tensor: bool = False,
) -> tuple[np.ndarray | torch.Tensor, dict[str, np.ndarray]]:
    """Render one face: (uint8 HxWx3 image, or with as_tensor a float (3,H,W) tensor in [-1,1]; dict of
    bool HxW masks, one per REGIONS entry, disjoint and covering the image).

    The same (attrs, seed) always gives identical bytes; nuisances depend on the seed only.
    """
    img, masks = _render_full(attrs, _nuisance_of(seed), size, supersample, want_masks=True)
    img = np.round(img).astype(np.uint8)
    if as_tensor:  # quantised like render_batch, so both give identical values
        return torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1.0, masks
    return img, masks


def render_batch(
    attrs: Sequence[Attributes],
    seeds: Sequence[int],
    size: int = 64,
    supersample: int = 2,
    return_masks: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render many faces -> float tensor (N,3,H,W) in [-1,1] (uint8-quantised, like saved renders);
    with return_masks also a dict region -> bool tensor (N,H,W)."""
    if len(attrs) != len(seeds):
        raise ValueError(f"{len(attrs)} attribute sets but {len(seeds)} seeds")
    out = np.empty((len(attrs), size, size, 3), dtype=np.uint8)
    all_masks: dict[str, list[np.ndarray]] = {r: [] for r in REGIONS}
    for i, (a, s) in enumerate(zip(attrs, seeds)):
        img, masks = _render_full(a, _nuisance_of(int(s)), size, supersample, want_masks=return_masks)
        out[i] = np.round(img)
        for r in REGIONS if return_masks else ():
            all_masks[r].append(masks[r])
    images = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if not return_masks:
        return images
    return images, {r: torch.from_numpy(np.stack(m)) for r, m in all_masks.items()}


def render_counterfactual(
    attrs: Attributes, seed: int, attribute: str, value: str, size: int = 64, supersample: int = 2
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ideal edit: the same face (same seed, same nuisances) with only `attribute` set to `value`."""
    return render(counterfactual(attrs, attribute, value), seed, size, supersample)


def attribute_mask(masks: dict[str, np.ndarray], attribute: str) -> np.ndarray:
    """Union of the region masks an attribute lives in (all True for global attributes such as style).

    For shape edits (ears) also take the union with the masks of the ideal edit: pointed tips lie outside
    the round ear.
    """
    regions = SCHEMA[attribute].regions
    if "all" in regions:
        return np.ones_like(next(iter(masks.values())), dtype=bool)
    return np.logical_or.reduce([masks[r] for r in regions])
