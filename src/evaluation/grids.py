"""Image grids of edits: sources over edits for the training-time callback, and enlarged, labelled grids
(source | edit | ideal, with per-face verdicts) for the evaluation's PNG."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid


def pair_grid(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Two rows, sources over edits: (3, 2H + pad, B W + pad) in [0, 1]."""
    both = torch.cat([x, x_hat]).clamp(-1, 1).add(1).div(2)
    return make_grid(both.float().cpu(), nrow=x.shape[0], padding=2, pad_value=1.0)


def labelled_grid(
    rows: dict[str, torch.Tensor],
    title: str = "",
    scale: int = 4,
    verdicts: torch.Tensor | None = None,
) -> Image.Image:
    """Rows of images (each (B, 3, H, W) in [-1, 1]) enlarged ``scale``x (nearest neighbour, so pixels stay
    pixels), each row named on the left, ``title`` on top and, with ``verdicts`` (B,) bool, a green (pass) or red
    (fail) bar under each column: the picture a person checks a metric against."""
    names = list(rows)
    b, _, h, w = rows[names[0]].shape
    cell_h, cell_w, pad, left, top = h * scale, w * scale, 4, 64, 22
    bar = 8 if verdicts is not None else 0
    width = left + b * (cell_w + pad)
    height = top + len(names) * (cell_h + pad) + bar + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill="black")
    for r, name in enumerate(names):
        y0 = top + r * (cell_h + pad)
        draw.text((4, y0 + cell_h // 2 - 5), name, fill="black")
        imgs = rows[name].detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().byte()
        for c in range(b):
            tile = Image.fromarray(imgs[c].permute(1, 2, 0).numpy()).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (left + c * (cell_w + pad), y0))
    if verdicts is not None:
        y0 = top + len(names) * (cell_h + pad)
        for c, ok in enumerate(verdicts.tolist()):
            x0 = left + c * (cell_w + pad)
            draw.rectangle(
                (x0, y0, x0 + cell_w - 1, y0 + bar - 1), fill=(40, 170, 60) if ok else (210, 40, 40)
            )
    return canvas
