"""All file IO for model weights lives here: where each known checkpoint is found, and safe loading.

Files are looked up locally only (explicit path, ``weights_dir``, ``$CFCLIP_WEIGHTS_DIR``, the user cache
``~/.cache/cfclip``); nothing is ever downloaded. Every load uses ``torch.load(weights_only=True)``: no
checkpoint can run code. NVIDIA ``.pkl`` networks go through ``src.models.legacy`` instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ENV_WEIGHTS_DIR = "CFCLIP_WEIGHTS_DIR"


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable or does not fit the model; the message says how to fix it."""


@dataclass(frozen=True)
class KnownWeights:
    """One checkpoint users place by hand: what it is, its format, where it comes from, how to check it."""

    name: str
    filename: str
    format: str
    description: str
    source: str
    size: int | None = None  # bytes, where known
    sha256: str | None = None  # full digest or a leading prefix (torchvision names carry 8 hex digits)


_E4E = (
    "the StyleCLIP README (mapper section: e4e-inverted CelebA-HQ latents), or invert your own images with "
    "encoder4editing"
)
REGISTRY: dict[str, KnownWeights] = {
    w.name: w
    for w in [
        KnownWeights(
            "stylegan2-ffhq",
            "stylegan2-ffhq-config-f.pt",
            "rosinality StyleGAN2 checkpoint (dict with g_ema, latent_avg)",
            "StyleGAN2 FFHQ 1024x1024 generator (config-f)",
            "the rosinality/stylegan2-pytorch README (NVIDIA's FFHQ config-f, converted), the file StyleCLIP "
            "and e4e link to",
        ),
        KnownWeights(
            "afhqdog",
            "afhqdog.pkl",
            "NVIDIA StyleGAN2-ADA network pickle (convert with `python -m src.convert afhqdog.pkl afhqdog.pt`)",
            "StyleGAN2-ADA AFHQ dog 512x512 generator",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl",
        ),
        KnownWeights(
            "afhqcat",
            "afhqcat.pkl",
            "NVIDIA StyleGAN2-ADA network pickle (convert with `python -m src.convert afhqcat.pkl afhqcat.pt`)",
            "StyleGAN2-ADA AFHQ cat 512x512 generator",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqcat.pkl",
        ),
        KnownWeights(
            "clip-vit-b-32",
            "ViT-B-32.pt",
            "OpenAI CLIP TorchScript archive",
            "CLIP ViT-B/32 (OpenAI)",
            "https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        ),
        KnownWeights(
            "ir_se50",
            "model_ir_se50.pth",
            "state dict of the IR-SE50 ArcFace Backbone (src.models.arcface)",
            "ArcFace IR-SE50 face-recognition net for the identity loss",
            "the pixel2style2pixel / encoder4editing / StyleCLIP READMEs ('IR-SE50 Model', pretrained by "
            "TreB1eN/InsightFace_Pytorch)",
        ),
        KnownWeights(
            "facenet-vggface2",
            "20180402-114759-vggface2.pt",
            "facenet-pytorch InceptionResnetV1 state dict",
            "FaceNet InceptionResnetV1 trained on VGGFace2 (alternative identity backbone)",
            "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        ),
        KnownWeights(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "torchvision vgg19 state dict",
            "VGG-19 (ImageNet) for the perceptual loss",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            sha256="dcbb9e9d",
        ),
        KnownWeights(
            "vgg16",
            "vgg16-397923af.pth",
            "torchvision vgg16 state dict",
            "VGG-16 (ImageNet), the LPIPS backbone",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256="397923af",
        ),
        KnownWeights(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "torchvision alexnet state dict",
            "AlexNet (ImageNet), the small LPIPS backbone (inversion default)",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256="7be5be79",
        ),
        KnownWeights(
            "fid-inception",
            "weights-inception-2015-12-05-6726825d.pth",
            "torch-fidelity Inception v3 state dict",
            "FID/KID Inception v3 (torchmetrics / torch-fidelity's inception-v3-compat)",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            sha256="6726825d",
        ),
        KnownWeights(
            "clip-vit-l-14",
            "ViT-L-14.pt",
            "OpenAI CLIP TorchScript/state-dict file",
            "CLIP ViT-L/14, the default evaluation CLIP of real domains (kept apart from the training CLIP)",
            "https://openaipublic.azureedge.net/clip/models/"
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
            sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        ),
        KnownWeights(
            "e4e-train-faces",
            "train_faces.pt",
            "tensor [N, 18, 512] of W+ latents",
            "e4e-inverted CelebA-HQ training latents",
            _E4E,
        ),
        KnownWeights(
            "e4e-test-faces",
            "test_faces.pt",
            "tensor [N, 18, 512] of W+ latents",
            "e4e-inverted CelebA-HQ test latents",
            _E4E,
        ),
    ]
}
_BY_FILENAME = {w.filename: w for w in REGISTRY.values()}


def known_weights(name_or_file: str) -> KnownWeights | None:
    """The registry entry for a registry name or a known file name (any directory part ignored)."""
    return REGISTRY.get(name_or_file) or _BY_FILENAME.get(Path(name_or_file).name)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cfclip`` (default ``~/.cache/cfclip``): the last place ``find_weights`` looks."""
    return Path(os.path.expanduser(os.environ.get("XDG_CACHE_HOME") or "~/.cache")) / "cfclip"


def _expand(path: str | os.PathLike) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path))))


def search_locations(
    filename: str, explicit: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
) -> list[tuple[str, Path | None]]:
    """(label, candidate path) in search order; None where that place is not set."""
    places: list[tuple[str, Path | None]] = []
    if explicit is not None:
        p = _expand(explicit)
        places.append(("explicit path", p / filename if p.is_dir() else p))
    places.append(("weights_dir", _expand(weights_dir) / filename if weights_dir else None))
    env = os.environ.get(ENV_WEIGHTS_DIR)
    places.append((f"${ENV_WEIGHTS_DIR}", _expand(env) / filename if env else None))
    places.append(("user cache", user_cache_dir() / filename))
    return places


def find_weights(
    name_or_path: str | os.PathLike,
    explicit: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> Path:
    """Local path of a checkpoint: explicit path, then ``weights_dir``, ``$CFCLIP_WEIGHTS_DIR``, user cache.

    ``name_or_path`` is a registry name (``"ir_se50"``), a file name or a path (its own location is tried
    first, as an explicit path). Never downloads; a WeightsError says what is missing and where to put it.
    """
    text = str(name_or_path)
    entry = known_weights(text)
    filename = entry.filename if text in REGISTRY else Path(text).name
    places = search_locations(filename, explicit, weights_dir)
    if text not in REGISTRY and Path(text).name != text:  # a path with a directory part: try it first
        places.insert(1 if explicit is not None else 0, ("given path", _expand(text)))
    for _, p in places:
        if p is not None and p.is_file():
            return p
    raise WeightsError(missing_message(filename, places, entry))


def missing_message(filename: str, places: list[tuple[str, Path | None]], entry: KnownWeights | None) -> str:
    """One paragraph: which file, every place searched, where to put it and where it comes from."""
    what = f" ({entry.description}; format: {entry.format})" if entry else ""
    searched = "; ".join(f"{label}: {p}" if p is not None else f"{label}: not set" for label, p in places)
    target = next(p for _, p in places if p is not None)  # the first place searched (the cache is always set)
    origin = f" Get it from {entry.source}." if entry else ""
    return (
        f"Missing weights file '{filename}'{what}. Searched, in order: {searched}. "
        f"Place the file at {target} (or in the folder named by ${ENV_WEIGHTS_DIR}, or in "
        f"{user_cache_dir()}), or point the config at it.{origin} Nothing is downloaded automatically."
    )


def verify_weights(path: str | os.PathLike, name: str | None = None, check_hash: bool = False) -> Path:
    """Check a file against the registry's expected size (and sha256, which reads the whole file) where known."""
    p = _expand(path)
    entry = known_weights(name or p.name)
    if entry is None:
        return p
    if entry.size is not None and p.stat().st_size != entry.size:
        raise WeightsError(
            f"{entry.filename}: {p} has {p.stat().st_size} bytes, expected {entry.size}: the file is "
            f"truncated or a different version. Get it again from {entry.source}."
        )
    if check_hash and entry.sha256:
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if not digest.hexdigest().startswith(entry.sha256):
            raise WeightsError(
                f"{entry.filename}: {p} has sha256 {digest.hexdigest()}, expected {entry.sha256}...: "
                f"corrupt or a different file. Get it again from {entry.source}."
            )
    return p


def resolve_path(path: str | os.PathLike, what: str) -> Path:
    """Expand ``~`` and env vars; a missing known file is searched like ``find_weights``, else a WeightsError."""
    p = _expand(path)
    if p.is_file():
        return p
    if known_weights(p.name) is not None:
        return find_weights(p.name, explicit=p)
    raise WeightsError(f"{what}: file not found: {p}. Place the file there or point the config at it.")


def _load_failure(p: Path, what: str, err: Exception) -> WeightsError:
    """A readable reason why torch.load refused or failed on ``p``."""
    text = str(err)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    corrupt = any(m in text for m in ("invalid load key", "could not find MARK", "pickle data was truncated"))
    if refused or ("Weights only load failed" in text and not corrupt):
        hint = (
            " It looks like an NVIDIA network pickle: run `python -m src.convert`."
            if p.suffix == ".pkl"
            else ""
        )
        name = f" ({refused.group(1)})" if refused else ""
        return WeightsError(
            f"{what}: refused to load {p}: it contains Python objects other than tensors{name}, and loading "
            f"it could run code from the file (weights_only=True refuses it).{hint} Use a plain state-dict "
            "checkpoint from a source you trust."
        )
    if not zipfile.is_zipfile(p) and p.suffix == ".pkl":
        hint = " If it is an NVIDIA network pickle, convert it with `python -m src.convert`."
    else:
        hint = ""
    return WeightsError(
        f"{what}: cannot read {p} ({type(err).__name__}: {text.splitlines()[0][:200] if text else ''}). "
        f"The file is truncated, corrupt, or not a plain tensor checkpoint; download or rebuild it.{hint}"
    )


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", map_location: str = "cpu") -> Any:
    """torch.load with weights_only=True and an error that names the file when it is truncated or corrupt."""
    p = resolve_path(path, what)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, wrong format...
        raise _load_failure(p, what, err) from err


def load_state_dict(path: str | os.PathLike, what: str = "weights", key: str | None = None) -> dict:
    """A state dict from a file; ``key`` picks a sub-dict (e.g. ``g_ema``), else common wrappers are unwrapped."""
    obj = load_checkpoint(path, what)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
            raise WeightsError(f"{what}: {path} has no '{key}' entry (found {keys}).")
        obj = obj[key]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{what}: {path} holds a {type(obj).__name__}, expected a state dict.")
    return obj


def save_atomic(obj: object, out: Path) -> None:
    """torch.save to a temporary file next to ``out``, then rename: ``out`` is complete or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
