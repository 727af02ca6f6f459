"""Frozen open_clip wrapper: cached text features and differentiable in-graph image preprocessing.

The losses see CLIP through two calls: ``encode_text`` (prompts -> cached unit features, encoded once per run)
and ``encode_image`` (generator output in [-1, 1], any size -> features, differentiable w.r.t. the image).
Preprocessing mirrors open_clip's eval transform (resize shorter side, center crop, normalise) in torch ops,
with mean/std/size read from the model. Weights come from an open_clip tag in the local cache, a local file,
or (tests, ``tiny`` domain) a config built with random init under a seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip import factory as _oc_factory
from torch import Tensor, nn

from src.models.frozen import freeze
from src.utils.dicts import plain

# A 2-layer ViT + 2-layer text transformer CLIP for tests and the `tiny` domain: 3.4M parameters, 3.2M of
# them the 49408 x 64 token embedding; builds in ~0.3 s on CPU.
TINY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 8,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_REGISTERED: set[str] = set()  # names this module added to open_clip's registry


def register_model_config(name: str, config: Mapping) -> None:
    """Register an open_clip architecture config under ``name`` (idempotent; never shadows a built-in)."""
    config = plain(config)
    if not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(
            f"CLIP model config {name!r} needs embed_dim, vision_cfg and text_cfg; got {list(config)}"
        )
    registry = _oc_factory._MODEL_CONFIGS  # looked up at call time: open_clip rebinds it on add_model_config
    if name in registry and name not in _REGISTERED and registry[name] != config:
        raise ValueError(
            f"{name!r} is a built-in open_clip model; register the custom config under another name"
        )
    registry[name] = copy.deepcopy(config)
    _REGISTERED.add(name)


def load_open_clip(model_name: str, pretrained: str) -> nn.Module:
    """Build ``model_name`` with weights from an open_clip tag (local cache only when offline) or a local file.

    The one place that resolves CLIP weights; a later weights module can replace it.
    """
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:  # not a known tag: a local checkpoint file
        path = Path(pretrained).expanduser()
        if not path.is_file():
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise FileNotFoundError(
                f"CLIP weights file not found: {path}. Place an open_clip/OpenAI checkpoint for {model_name!r} "
                f"at that path (or point `pretrained` at it), or use one of the open_clip tags {tags} "
                "that is already in the local cache."
            )
        return open_clip.create_model(model_name, pretrained=str(path))
    # OpenAI-trained tags use QuickGELU; open_clip only warns when the config lacks it, we build it right.
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    try:
        return open_clip.create_model(model_name, pretrained=pretrained, force_quick_gelu=quick_gelu)
    except RuntimeError as err:
        if "Failed to download" not in str(err):
            raise
        from huggingface_hub.constants import HF_HUB_CACHE

        raise FileNotFoundError(
            f"CLIP weights {model_name!r} / {pretrained!r} are not in the local cache ({HF_HUB_CACHE}) and cannot "
            f"be downloaded. Run open_clip.create_model({model_name!r}, pretrained={pretrained!r}) once with "
            "network access, or download the checkpoint and pass its file path as `pretrained`."
        ) from err


def clip_preprocess(
    x: Tensor,
    size: int,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
) -> Tensor:
    """open_clip's eval transform as differentiable torch ops: (B, 3, H, W) in [-1, 1] -> (B, 3, size, size).

    Resize sizes and crop offsets follow torchvision's Resize(int)/CenterCrop exactly; ``antialias=True`` gives
    PIL's bicubic/bilinear kernels (a = -0.5, support scaled when downsampling) in both directions. No clamp
    after resizing (PIL clamps its uint8 output) so gradients reach every pixel, including out-of-range ones.
    """
    assert x.ndim == 4 and x.shape[1] == 3, f"expected (B, 3, H, W), got {tuple(x.shape)}"
    x = (x + 1) / 2  # [-1, 1] -> [0, 1]
    h, w = x.shape[-2:]
    if resize_mode == "squash":
        new_h, new_w = size, size
    elif resize_mode == "shortest":
        short, long = (h, w) if h <= w else (w, h)
        new_short, new_long = size, int(size * long / short)  # torchvision's rounding (truncation)
        new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    else:
        raise ValueError(f"resize_mode must be 'shortest' or 'squash', got {resize_mode!r}")
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode=interpolation, align_corners=False, antialias=True)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))  # torchvision CenterCrop
    x = x[..., top : top + size, left : left + size]  # (B, 3, size, size)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


class FrozenCLIP(nn.Module):
    """Frozen CLIP: cached text features, differentiable in-graph image preprocessing from [-1, 1]."""

    def __init__(self, model: nn.Module, tokenizer: Any, resize_mode: str = "bicubic"):
        super().__init__()
        if resize_mode not in ("bicubic", "bilinear"):
            raise ValueError(f"resize_mode must be 'bicubic' or 'bilinear', got {resize_mode!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.resize_mode = resize_mode  # interpolation of the in-graph resize (open_clip: bicubic)
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}))
        size = cfg.get("size", model.visual.image_size)
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if sizes[0] != sizes[1]:
            raise NotImplementedError(f"non-square CLIP input {sizes} is not supported")
        self.image_size: int = int(sizes[0])
        self.image_mean: tuple = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.image_std: tuple = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.image_resize_mode: str = cfg.get("resize_mode", "shortest")  # open_clip: shortest | squash
        self.context_length: int = int(model.context_length)
        self.embed_dim: int = int(getattr(model.visual, "output_dim", 0) or self._probe_embed_dim())
        self._text_cache: dict[tuple[str, bool], Tensor] = {}  # (text, normalize) -> (E,) float32
        # mean/std as device buffers: building them from Python floats every call would be a host-to-device
        # copy, i.e. a host sync on CUDA, twice per training step (not saved in state dicts)
        self.register_buffer("_mean", torch.tensor(self.image_mean), persistent=False)
        self.register_buffer("_std", torch.tensor(self.image_std), persistent=False)
        freeze(self)

    @classmethod
    def create(
        cls,
        model_name: str,
        pretrained: str | None = None,
        model_config: Mapping | None = None,
        checkpoint: str | None = None,
        seed: int = 0,
        resize_mode: str = "bicubic",
    ) -> FrozenCLIP:
        """Build from an open_clip name + tag/file, or from a custom config with seeded random init."""
        if model_config is not None:
            register_model_config(model_name, model_config)
        if pretrained is not None:
            model = load_open_clip(model_name, pretrained)
        elif model_config is not None:
            with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the global CPU RNG
                torch.manual_seed(seed)
                model = open_clip.create_model(model_name, pretrained=None)
        else:
            raise ValueError(f"CLIP {model_name!r}: give `pretrained` (tag or file) or a `model_config`")
        if checkpoint is not None:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"CLIP checkpoint not found: {path}. Place the state dict file there."
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(
                state.get("state_dict"), dict
            ):  # {"state_dict": ..., ...}
                state = state["state_dict"]
            model.load_state_dict(state)
        tokenizer = open_clip.get_tokenizer(model_name)
        return cls(model, tokenizer, resize_mode=resize_mode)

    @torch.no_grad()
    def _probe_embed_dim(self) -> int:
        """Embedding width for towers that do not expose ``output_dim`` (one text forward at build time)."""
        return self.model.encode_text(self.tokenizer(["a"], context_length=self.context_length)).shape[-1]

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Always eval: a frozen network keeps dropout/norm statistics fixed whatever the parent does."""
        return super().train(False)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FrozenCLIP:
        """Keep the text cache on the module's device through .to()/.cuda()/.cpu() (dtype stays float32)."""
        super()._apply(fn, recurse)
        device = self.device
        self._text_cache = {k: v.to(device) for k, v in self._text_cache.items()}
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def token_count(self, text: str) -> int:
        """Tokens ``text`` takes including start/end tokens (open_clip's SimpleTokenizer; others approximated)."""
        if hasattr(self.tokenizer, "encode") and hasattr(self.tokenizer, "sot_token_id"):
            return len(self.tokenizer.encode(text)) + 2
        long = self.tokenizer([text], context_length=4 * self.context_length)[0]
        pad = getattr(getattr(self.tokenizer, "tokenizer", None), "pad_token_id", 0) or 0
        return int((long != pad).sum())

    def _check_prompt(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"CLIP prompt is empty or not a string: {text!r}")
        n = self.token_count(text)
        if n > self.context_length:  # documented choice: error instead of silent truncation
            raise ValueError(
                f"CLIP prompt {text!r} is {n} tokens long (with start/end tokens); the limit is "
                f"{self.context_length}. Shorten the prompt."
            )

    @torch.no_grad()
    def encode_text(self, texts: list[str] | str, normalize: bool = True) -> Tensor:
        """(N, E) float32 features of the prompts; each (text, normalize) is encoded once and cached."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("encode_text needs at least one prompt")
        missing = list(dict.fromkeys(t for t in texts if (t, normalize) not in self._text_cache))
        for t in missing:
            self._check_prompt(t)
        if missing:  # one call for all uncached prompts
            tokens = self.tokenizer(missing, context_length=self.context_length).to(self.device)
            feats = self.model.encode_text(tokens, normalize=normalize).float()  # (M, E)
            for t, f in zip(missing, feats):
                self._text_cache[(t, normalize)] = f.clone()
        return torch.stack([self._text_cache[(t, normalize)] for t in texts])  # (N, E)

    def preprocess(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, S, S) CLIP input (S = image_size), differentiable."""
        return clip_preprocess(
            x, self.image_size, self._mean, self._std, self.resize_mode, self.image_resize_mode
        )

    def encode_image(self, x: Tensor | Sequence[Tensor], normalize: bool = True) -> Tensor:
        """(B, 3, H, W) in [-1, 1], any H, W -> (B, E) float32 features; gradients flow to ``x``.

        A list of batches (each any size) is preprocessed batch by batch and encoded in one model call, so
        they are concatenated at CLIP's input size, not at the generator's: (sum B_i, E).
        """
        pre = self.preprocess(x) if isinstance(x, Tensor) else torch.cat([self.preprocess(t) for t in x])
        feats = self.model.encode_image(pre.to(self.dtype), normalize=False).float()  # (B, E)
        return F.normalize(feats, dim=-1) if normalize else feats

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, embed_dim={self.embed_dim}, context_length={self.context_length}, "
            f"resize={self.resize_mode}, cached_texts={len(self._text_cache)}"
        )
