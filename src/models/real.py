"""Constructors for the real-weight domains (ffhq, afhq_dog, afhq_cat): find every file first, then build.

Each function resolves its files with ``find_weights`` before building anything, so a missing file fails in
milliseconds with the registry's message (which file, every place searched, where to put it, where it comes
from) instead of after a 1024px generator or a ViT has been initialised.

CLIP weights: an OpenAI ``ViT-B-32.pt`` TorchScript archive is read by ``read_torchscript_state_dict``
(``src.models.torchscript``), a restricted unpickler that rebuilds tensors only (``torch.jit.load`` would compile
and could run the archive's code); open_clip / safetensors files load through open_clip with ``weights_only``.
The open_clip caches (``~/.cache/clip`` for OpenAI URLs, the Hugging Face hub cache) are read locally, never
downloaded from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.models.factory import create_generator
from src.models.torchscript import is_torchscript_archive, read_torchscript_state_dict
from src.models.weights import WeightsError, find_weights, known_weights


# ---- StyleGAN2 --------------------------------------------------------------------------------------------
def find_first(
    files: str | Sequence[str], weights_dir: str | os.PathLike | None = None, explicit: str | None = None
) -> Path:
    """The first of ``files`` found (explicit path first); else the first file's WeightsError, naming the others."""
    names = [files] if isinstance(files, str) else list(files)
    if not names:
        raise ValueError("find_first needs at least one file name")
    if explicit:
        return find_weights(explicit, weights_dir=weights_dir)
    errors: dict[str, WeightsError] = {}
    for name in names:
        try:
            return find_weights(name, weights_dir=weights_dir)
        except WeightsError as err:
            errors[name] = err
    # the message of the first file the registry knows (it says where the file comes from)
    main = next((n for n in names if known_weights(n) is not None), names[0])
    if len(names) > 1:
        raise WeightsError(
            f"{errors[main]} Any of these files is accepted, in this order: {', '.join(names)}."
        )
    raise errors[main]


def real_generator(
    files: str | Sequence[str],
    weights_dir: str | None = None,
    checkpoint: str | None = None,
    size: int = 1024,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    channel_max: int = 512,
    channel_base: int = 16384,
) -> nn.Module:
    """StyleGAN2 from the first of ``files`` found (rosinality ``.pt``, converted ``.pt``, or NVIDIA ``.pkl``
    converted on the fly), loaded strictly into a generator of the given settings. ``checkpoint`` overrides."""
    path = find_first(files, weights_dir, checkpoint)
    return create_generator(
        size,
        style_dim,
        n_mlp,
        channel_multiplier,
        channel_max=channel_max,
        channel_base=channel_base,
        checkpoint=str(path),
    )


# ---- CLIP ---------------------------------------------------------------------------------------------------
def load_matching(model: nn.Module, state: dict[str, torch.Tensor], path: Any, what: str) -> list[str]:
    """Copy ``state`` into every parameter/buffer of ``model`` (all must be present with the same shape);
    returns the file's extra keys (ignored)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or wrong:
        raise WeightsError(
            f"{what}: {path} does not fit the model ({len(missing)} missing keys {missing[:4]}, "
            f"{len(wrong)} shape mismatches {wrong[:3]}). Is it the checkpoint of this model name?"
        )
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()}, strict=True)
    return [k for k in state if k not in own]


def clip_cache_candidates(model_name: str, pretrained: str | None) -> list[Path]:
    """Where open_clip would have cached the tag's weights: ``~/.cache/clip/<file>`` (OpenAI URL downloads) and
    the Hugging Face hub cache (looked up locally with ``try_to_load_from_cache``; no network)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    found: list[Path] = []
    if not cfg:
        return found
    if cfg.get("file"):
        found.append(Path(cfg["file"]).expanduser())
    if cfg.get("url"):
        found.append(Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"]))
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(cfg["hf_hub"])  # open_clip's 'org/model/' or 'org/model/file'
        for name in [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]:
            try:
                hit = try_to_load_from_cache(repo, name)
            except Exception:  # malformed repo id or cache: treat as not cached
                hit = None
            if isinstance(hit, str):
                found.append(Path(hit))
    return found


def find_clip_weights(
    model_name: str, pretrained: str | None, file: str | None, weights_dir: str | None
) -> Path:
    """``file`` via find_weights, else open_clip's local caches; a WeightsError lists every place searched."""
    err: WeightsError | None = None
    if file:
        try:
            return find_weights(file, weights_dir=weights_dir)
        except WeightsError as e:
            err = e
    caches = clip_cache_candidates(model_name, pretrained)
    for p in caches:
        if p.is_file():
            return p
    where = ", ".join(str(p) for p in caches) or "none for this tag"
    base = str(err) if err else f"CLIP {model_name!r} / {pretrained!r}: no weights file configured."
    raise WeightsError(f"{base} Also looked in open_clip's local caches ({where}).")


def real_clip(
    model_name: str = "ViT-B-32",
    pretrained: str | None = "openai",
    file: str | None = "ViT-B-32.pt",
    weights_dir: str | None = None,
    quick_gelu: bool | None = None,
    resize_mode: str = "bicubic",
) -> nn.Module:
    """A FrozenCLIP of the open_clip architecture ``model_name`` with weights from a local file (OpenAI
    TorchScript ``.pt``, open_clip ``.bin``/``.pt``/``.safetensors``) or open_clip's local cache of the tag.

    ``quick_gelu`` defaults to what the tag was trained with (True for OpenAI's weights).
    """
    import open_clip

    from src.models.clip import FrozenCLIP

    path = find_clip_weights(model_name, pretrained, file, weights_dir)
    tag_cfg = (open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}) or {}
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if is_torchscript_archive(path):
        state = read_torchscript_state_dict(path)
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
        load_matching(model, state, path, f"CLIP {model_name}")
    else:
        try:
            model = open_clip.create_model(model_name, pretrained=str(path), force_quick_gelu=quick_gelu)
        except Exception as err:
            raise WeightsError(
                f"CLIP {model_name}: cannot load {path} ({type(err).__name__}: {str(err).splitlines()[0][:300]}): "
                "the file is truncated or corrupt, or not a checkpoint of this model name."
            ) from err
    pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    for key in ("mean", "std", "interpolation", "resize_mode"):
        if key in tag_cfg:
            pp[key] = tag_cfg[key]
    model.visual.preprocess_cfg = pp
    return FrozenCLIP(model.float().eval(), open_clip.get_tokenizer(model_name), resize_mode=resize_mode)
