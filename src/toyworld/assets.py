"""The shipped toyfaces assets: export (fp16 + manifest with sha256) and verified loading.

Every load checks the file's sha256 against ``manifest.json`` and uses ``torch.load(weights_only=True)``.
The toy CLIP's token embedding is stored for the tokens its captions use only (the rest are zero rows): the
full 49408-row table would be most of the asset size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from src.models.factory import clip_model_config, create_clip, create_generator
from src.models.weights import WeightsError, load_checkpoint, save_atomic
from src.toyworld.identity import IdentityNet
from src.toyworld.models import GENERATOR_CHANNEL_BASE, GENERATOR_KWARGS, GaussianLatentSampler, Inverter

ASSET_DIR = Path(__file__).parent / "assets"
CLIP_NAME = "toyfaces-clip"
CLIP_CONFIG = "toyfaces"
# the world's CLIPs: asset file -> (open_clip model name, architecture in src/models/clip_configs). clip.pt is the
# primary (a ViT); clip_resnet.pt a second one of another architecture (the clip_resnet build stage, docs/guide.md)
CLIPS = {"clip.pt": (CLIP_NAME, CLIP_CONFIG), "clip_resnet.pt": ("toyfaces-clip-resnet", "toyfaces_resnet")}
REBUILD = "Rebuild the assets with `python -m src.toyworld.build` (about an hour on 2 cores)."


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(asset_dir: Path | str = ASSET_DIR) -> dict[str, Any]:
    path = Path(asset_dir) / "manifest.json"
    if not path.is_file():
        raise WeightsError(f"toyfaces assets: {path} is missing. {REBUILD}")
    return json.loads(path.read_text())


def asset_path(name: str, asset_dir: Path | str = ASSET_DIR, verify: bool = True) -> Path:
    """Path of an asset file, checked against the manifest's sha256."""
    path = Path(asset_dir) / name
    entry = manifest(asset_dir)["files"].get(name)
    if entry is None:
        raise WeightsError(
            f"toyfaces assets: {name} is not listed in {Path(asset_dir) / 'manifest.json'}. {REBUILD}"
        )
    if not path.is_file():
        raise WeightsError(f"toyfaces assets: {path} is missing. {REBUILD}")
    if verify and sha256(path) != entry["sha256"]:
        raise WeightsError(
            f"toyfaces assets: {path} does not match its sha256 in the manifest (corrupt or "
            f"modified file). Restore it with `git checkout -- {path}` or: {REBUILD}"
        )
    return path


def load(name: str, asset_dir: Path | str = ASSET_DIR) -> Any:
    return load_checkpoint(asset_path(name, asset_dir), what=f"toyfaces asset {name}")


# ---- the networks ---------------------------------------------------------------------------------------
def new_clip_model(seed: int = 0, file: str = "clip.pt") -> tuple[torch.nn.Module, Any]:
    """A trainable open_clip model of the architecture of the world's CLIP ``file`` + its tokenizer (for the build)."""
    import open_clip

    from src.models.clip import register_model_config

    name, config = _clip_spec(file)
    register_model_config(name, clip_model_config(config))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
    return model, open_clip.get_tokenizer(name)


def _clip_spec(file: str) -> tuple[str, str]:
    if file not in CLIPS:
        raise ValueError(f"unknown toyfaces CLIP {file!r}; the world's CLIPs: {sorted(CLIPS)}")
    return CLIPS[file]


def latest_clip(work: Path) -> Path:
    """The newest CLIP of a build dir: the harden stage's, else the clip_tune stage's, else the clip stage's."""
    for name in ("clip_hardened.pt", "clip_tuned.pt"):
        if (work / name).is_file():
            return work / name
    return work / "clip.pt"


def guiding_clip(work: Path, seed: int = 0) -> torch.nn.Module:
    """The build's guiding CLIP as a FrozenCLIP: the harden stage's, else the clip_tune stage's, else the clip stage's."""
    return build_clip(latest_clip(work), seed)


def build_clip(path: Path, seed: int = 0, file: str = "clip.pt") -> torch.nn.Module:
    """A CLIP stage's fp32 checkpoint ``path`` (the architecture of the world's CLIP ``file``) as a FrozenCLIP."""
    from src.models.clip import FrozenCLIP

    model, tokenizer = new_clip_model(seed, file)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    return FrozenCLIP(model, tokenizer)


def clip_preprocess_cfg(model: torch.nn.Module) -> dict[str, Any]:
    import open_clip

    cfg = dict(getattr(model.visual, "preprocess_cfg", {}))
    size = cfg.get("size", model.visual.image_size)
    return {
        "size": size if isinstance(size, int) else size[0],
        "mean": cfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
        "std": cfg.get("std", open_clip.OPENAI_DATASET_STD),
    }


def load_clip(asset_dir: str | None = None, file: str = "clip.pt") -> torch.nn.Module:
    """A frozen toy CLIP (``file``: one of ``CLIPS``) through the same FrozenCLIP wrapper as real CLIP models."""
    name, config = _clip_spec(file)
    clip = create_clip(name, model_config=config, seed=0)
    state = load(file, asset_dir or ASSET_DIR)
    rows, ids = state.pop("token_embedding.rows"), state.pop("token_embedding.ids")
    full = torch.zeros_like(clip.model.token_embedding.weight)
    full[ids.long()] = rows.float()
    state["token_embedding.weight"] = full
    clip.model.load_state_dict({k: v.float() for k, v in state.items()})
    return clip


def load_generator(asset_dir: str | None = None) -> torch.nn.Module:
    """The toy StyleGAN2 (rosinality-format checkpoint, strict load through the common factory)."""
    return create_generator(
        **GENERATOR_KWARGS,
        channel_base=GENERATOR_CHANNEL_BASE,
        checkpoint=str(asset_path("generator.pt", asset_dir or ASSET_DIR)),
    )


def load_inverter(asset_dir: str | None = None) -> torch.nn.Module:
    inv = Inverter(_n_latent(GENERATOR_KWARGS["size"]), GENERATOR_KWARGS["style_dim"])
    inv.load_state_dict({k: v.float() for k, v in load("inverter.pt", asset_dir or ASSET_DIR).items()})
    return inv.eval().requires_grad_(False)


def load_identity(asset_dir: str | None = None) -> torch.nn.Module:
    """The toy identity net (the ArcFace analogue of the identity loss; never the oracle), frozen."""
    state = load("identity.pt", asset_dir or ASSET_DIR)
    net = IdentityNet(width=int(state.pop("width")), dim=int(state.pop("dim")))
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False)


def load_latents(split: str, asset_dir: str | None = None) -> dict[str, torch.Tensor]:
    """{'latents': (N, L, D) float32, 'labels': (N, A) render attributes, 'seeds': (N,) render seeds}."""
    data = load("latents.pt", asset_dir or ASSET_DIR)
    if split not in ("train", "test"):
        raise ValueError(f"toyfaces latent split must be 'train' or 'test', got {split!r}")
    return {
        "latents": data[split].float(),
        "labels": data[f"{split}_labels"],
        "seeds": data[f"{split}_seeds"],
    }


def load_sampler(asset_dir: str | None = None) -> torch.nn.Module:
    state = {k: v.float() for k, v in load("sampler.pt", asset_dir or ASSET_DIR).items()}
    sampler = GaussianLatentSampler(
        _n_latent(GENERATOR_KWARGS["size"]), GENERATOR_KWARGS["style_dim"], rank=state["factor"].shape[1]
    )
    sampler.load_state_dict(state)
    return sampler


def load_report(asset_dir: str | None = None) -> dict[str, Any]:
    return json.loads(asset_path("report.json", asset_dir or ASSET_DIR).read_text())


def latent_file(split: str, asset_dir: str | None = None) -> str:
    """Write the split's latents as a plain [N, L, D] tensor file (for ``data.source=file``) and return it."""
    directory = Path(asset_dir or ASSET_DIR)
    cache = (
        Path.home()
        / ".cache"
        / "cfclip"
        / "toyfaces"
        / manifest(directory)["files"]["latents.pt"]["sha256"][:16]
    )
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{split}_latents.pt"
    if not path.is_file():
        save_atomic(load_latents(split, str(directory))["latents"].contiguous(), path)
    return str(path)


def _n_latent(size: int) -> int:
    return 2 * (size.bit_length() - 1) - 2


# ---- export -------------------------------------------------------------------------------------------
