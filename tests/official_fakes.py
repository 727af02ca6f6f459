"""Fake authors' mapper files (CF-CLIP / StyleCLIP) written from their key layout, and their inference written
from its formula, independently of src/models/official_format.py (a renaming bug there shows here).

Layout: ``{'state_dict': StyleCLIPMapper.state_dict(), 'opts': vars(opts)}``; ``mapper.course_mapping`` (sic) /
``medium_mapping`` / ``fine_mapping`` each ``mapping.1..4`` (``mapping.0`` is a PixelNorm), CF-CLIP adds
``mapper.fc`` (1024 -> 512) and ``text_mapper.mapper_{c}``; ``decoder.*`` is the rosinality Generator. Values are
seeded random, biases large enough that a dropped one moves w_hat by ~0.1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from src.models.stylegan2 import Generator

LR_MUL = 0.01
# their Generator(size, 512, 8) with tiny channel widths (the layout allows any), so 1024 px renders in ~1 s
DECODER = dict(style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=4)
LEVELS = (("course_mapping", 0, 4), ("medium_mapping", 4, 8), ("fine_mapping", 8, None))


def n_latent(size: int) -> int:
    return 2 * int(math.log2(size)) - 2


def fake_decoder(size: int, seed: int) -> dict[str, torch.Tensor]:
    """A rosinality generator's state dict with every bias and noise strength non-zero, images about [-2, 2]."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = Generator(size, **DECODER)
        with torch.no_grad():
            for name, p in g.named_parameters():
                if name.endswith("bias") or name.endswith("noise.weight"):
                    p.add_(torch.randn_like(p) * 0.1)
    return {k: v.clone() for k, v in g.state_dict().items()}


def fake_official(
    kind: str,
    size: int,
    seed: int = 0,
    w_space: bool = False,
    off: tuple[str, ...] = (),
    description: str = "face with green lipstick",
) -> dict:
    """An authors' checkpoint: ``kind`` 'cfclip' or 'styleclip'; ``off`` names levels switched off
    ('coarse', 'medium', 'fine': opts.no_*_mapper)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def linear(prefix: str, in_dim: int) -> None:
        state[f"{prefix}.weight"] = (
            torch.randn(512, in_dim, generator=gen) / LR_MUL
        )  # their init: randn / lr_mul
        state[f"{prefix}.bias"] = torch.randn(512, generator=gen) * 20  # x lr_mul at run time: ~0.2

    if kind == "cfclip":
        linear("mapper.fc", 1024)
    for (their, _, _), level in zip(LEVELS, ("coarse", "medium", "fine"), strict=True):
        if level not in off:
            for j in range(1, 5):
                linear(f"mapper.{their}.mapping.{j}", 512)
    if kind == "cfclip":
        for c in range(n_latent(size)):
            for j in range(1, 5):
                linear(f"text_mapper.mapper_{c}.mapping.{j}", 512)
    state.update({f"decoder.{k}": v for k, v in fake_decoder(size, seed + 100).items()})
    opts = {
        "exp_dir": "results/x",
        "mapper_type": "LevelsMapper",
        "no_coarse_mapper": "coarse" in off,
        "no_medium_mapper": "medium" in off,
        "no_fine_mapper": "fine" in off,
        "latents_train_path": "train_faces.pt",
        "batch_size": 2,
        "learning_rate": 0.5,
        "stylegan_size": size,
        "checkpoint_path": None,
        "description": description,
    }
    if kind == "cfclip":  # CF-CLIP's options; StyleCLIP's have neither
        opts.update(w_space=w_space, source_text="face", nce_lambda=0.3)
    return {"state_dict": state, "opts": opts}


# ---- their inference, from the formula -------------------------------------------------------------------
def _pixelnorm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # dim 1, as their PixelNorm


def _equal_linear(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    out = x @ (w * (LR_MUL / math.sqrt(w.shape[1]))).t() + b * LR_MUL
    return F.leaky_relu(out, 0.2) * math.sqrt(2)


def _mapper(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    x = _pixelnorm(x)
    for j in range(1, 5):
        x = _equal_linear(x, sd, f"{prefix}.mapping.{j}")
    return x


@torch.no_grad()
def reference_w_hat(file: dict, w: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """w (B, L, 512), or W (B, 512) with opts.w_space; t (512,) raw CLIP text features -> w_hat (B, L, 512)."""
    sd, opts = file["state_dict"], file["opts"]
    L = n_latent(opts["stylegan_size"])
    if opts.get("w_space"):
        w = w.unsqueeze(1).repeat(1, L, 1)
    x = w
    if "mapper.fc.weight" in sd:  # CF-CLIP: t repeated to 18 layers at every size, net c reads row c
        t18 = t.float().reshape(1, 1, -1).repeat(w.shape[0], 18, 1)
        t_w = torch.cat([_mapper(t18[:, [c], :], sd, f"text_mapper.mapper_{c}") for c in range(L)], dim=1)
        x = _equal_linear(torch.cat([w, t_w], dim=-1), sd, "mapper.fc")
    parts = []
    for their, lo, hi in LEVELS:
        xs = x[:, lo:hi]
        on = f"mapper.{their}.mapping.1.weight" in sd
        parts.append(_mapper(xs, sd, f"mapper.{their}") if on else torch.zeros_like(xs))
    return w + 0.1 * torch.cat(parts, dim=1)


@torch.no_grad()
def reference_render(file: dict, w_hat: torch.Tensor) -> torch.Tensor:
    """decoder([w_hat], input_is_latent=True, randomize_noise=False) with the file's decoder weights."""
    g = Generator(file["opts"]["stylegan_size"], **DECODER).eval()
    g.load_state_dict(
        {k[8:]: v for k, v in file["state_dict"].items() if k.startswith("decoder.")}, strict=True
    )
    return g([w_hat], input_is_latent=True, randomize_noise=False)[0]
