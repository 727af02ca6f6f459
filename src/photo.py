"""Photos into the generator: letterbox for the grid, FFHQ alignment, and inversion into W+.

Inversion is the toyfaces world's encoder (+ W+ refinement) or the StyleGAN2 projector (``src.invert``) with
LPIPS; ``src.edit`` runs these before applying the mappers.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from src.align import align_face, center_crop, detect_landmarks
from src.invert import invert
from src.models.perceptual import LPIPS_BACKBONES, lpips_model
from src.models.weights import WeightsError
from src.toyworld.assets import load_inverter
from src.toyworld.training import refine

log = logging.getLogger("cfclip")


def letterbox(img: Image.Image, size: int) -> Image.Image:
    """``img`` scaled to fit a white ``size`` square (the grid's source column)."""
    img = img.convert("RGB")
    scale = size / max(img.size)
    resized = img.resize(
        (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))), Image.LANCZOS
    )
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(resized, ((size - resized.size[0]) // 2, (size - resized.size[1]) // 2))
    return canvas


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def align_photo(
    img: Image.Image, size: int, detector: str, landmarks: Any = None, device: str = "cpu"
) -> Image.Image:
    """The generator-sized input of the inversion: FFHQ-aligned from landmarks (given or detected) or centre crop."""
    if landmarks is not None:
        return align_face(
            img,
            np.asarray(
                OmegaConf.to_container(landmarks) if isinstance(landmarks, ListConfig) else landmarks,
                dtype=np.float64,
            ),
            size,
        )
    if detector == "none":
        return center_crop(img, size)
    if detector != "mtcnn":
        raise ValueError(f"detector must be auto, mtcnn or none, got {detector!r}")
    return align_face(img, detect_landmarks(img, device=device), size)


def make_lpips(cfg: DictConfig, weights_dir: str | None) -> torch.nn.Module | None:
    """LPIPS for the inversion: the local torchvision backbone when present, else a random one (warned)."""
    if float(cfg.lpips_weight) <= 0:
        return None
    import lpips

    net = str(cfg.lpips_net)
    try:
        return lpips_model(net, cfg.get("lpips_file"), weights_dir)
    except WeightsError as err:
        log.warning(
            "LPIPS backbone %s not found (%s): inverting with a random-weight %s backbone; place the file "
            "to get the usual reconstruction quality",
            cfg.get("lpips_file") or LPIPS_BACKBONES[net],
            str(err).split(". ")[0],
            net,
        )
        return (
            lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval().requires_grad_(False)
        )


def invert_images(
    cfg: DictConfig, module: Any, run_cfg: DictConfig, aligned: torch.Tensor, weights_dir: str | None
) -> tuple[torch.Tensor, list[torch.Tensor] | None, torch.Tensor]:
    """(W+ (N, L, D), noise maps or None, re-rendered images) of aligned images (N, 3, S, S) in [-1, 1]."""
    gen = module.generator
    method = str(cfg.method)
    if method == "auto":
        method = "encoder" if run_cfg.domain.get("name") == "toyfaces" else "optimize"
    if method == "encoder":
        if run_cfg.domain.get("name") != "toyfaces":
            raise ValueError("invert.method=encoder needs an encoder: only the toyfaces domain ships one")

        inverter = load_inverter(run_cfg.domain.get("asset_dir")).to(aligned.device)
        x = (
            torch.nn.functional.interpolate(aligned, size=64, mode="area")
            if aligned.shape[-1] != 64
            else aligned
        )
        with torch.no_grad():
            w = inverter(x)
        steps = int(cfg.get("refine_steps") or 0)
        if steps > 0:  # the world's own inversion: encoder, then W+ optimisation (as its latent datasets)
            w = refine(gen, aligned, w, steps, lr=float(cfg.get("refine_lr") or 0.03))
        with torch.no_grad():
            return w, None, gen.synthesis(w)
    if method != "optimize":
        raise ValueError(f"invert.method must be auto, optimize or encoder, got {method!r}")

    result = invert(
        gen,
        aligned,
        steps=int(cfg.steps),
        lr=float(cfg.lr),
        lpips=make_lpips(cfg, weights_dir),
        lpips_weight=float(cfg.lpips_weight),
        l2_weight=float(cfg.l2_weight),
        optimize_noise=bool(cfg.optimize_noise),
        noise_weight=float(cfg.noise_weight),
        lpips_size=int(cfg.lpips_size),
        seed=int(cfg.seed),
        progress=bool(cfg.progress),
    )
    log.info(
        "inversion: loss %.4f -> %.4f in %d steps", result.losses[0], result.losses[-1], len(result.losses)
    )
    return result.w, result.noises, result.image
