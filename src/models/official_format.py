"""The authors' mapper checkpoints (CF-CLIP, StyleCLIP) <-> this project's mapper: a renaming, no value changes.

Both repositories save ``{'state_dict': StyleCLIPMapper.state_dict(), 'opts': vars(opts)}``. Its children are
``mapper`` (LevelsMapper: ``course_mapping`` (sic) / ``medium_mapping`` / ``fine_mapping``, each PixelNorm then
``mapping.1`` ... ``mapping.4`` EqualLinears; CF-CLIP adds the fusion ``fc`` = EqualLinear(1024, 512)), ``decoder``
(a rosinality Generator, the whole one) and, in CF-CLIP only, ``text_mapper`` (``mapper_0`` ... ``mapper_{L-1}``).
Their PixelNorm normalises over dim 1, the layer axis: ``pixelnorm_axis=layer`` here. Their edit is
``w + 0.1 * mapper(...)``. Key names and shapes below are facts of that format.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from src.models.legacy import rosinality_config
from src.models.mapper import MEDIUM_END
from src.models.stylegan2 import Generator
from src.models.weights import WeightsError

DIM = 512  # their Mapper, fusion and text mapper widths are hard-coded to 512 (CLIP ViT-B/32, StyleGAN2 W)
N_LINEAR = 4  # EqualLinears per Mapper (mapping.1 ... mapping.4; mapping.0 is the PixelNorm)
STEP = 0.1  # their inference: w_hat = w + 0.1 * mapper(...)
THEIR_GROUP = {"coarse": "course_mapping", "medium": "medium_mapping", "fine": "fine_mapping"}
KIND_NAMES = {"cfclip": "CF-CLIP", "styleclip": "StyleCLIP"}
MAPPER_TYPES = ("LevelsMapper", "SingleMapper")  # the values their options know


class FormatError(WeightsError):
    """A file that is not (or not a supported) authors' mapper checkpoint; the message names the file."""


@dataclass
class OfficialMapper:
    """An authors' mapper file, read and checked: our mapper's state dict, the decoder's, and their options."""

    kind: str  # "cfclip" (TEM + fusion) | "styleclip" (no text input)
    description: str  # the target text (opts.description)
    size: int  # opts.stylegan_size (= the decoder's resolution)
    w_space: bool  # their latents were W (B, 512), repeated to every layer
    groups: dict[str, bool]  # coarse / medium / fine mapper present
    mapper_state: dict[
        str, torch.Tensor
    ]  # CFCLIPMapper keys (tem.nets.c.j.*, fusion.proj.*, mapper.nets.g.j.*)
    decoder_state: dict[str, torch.Tensor]  # rosinality Generator keys
    generator_config: dict[str, int]  # our Generator's arguments for the decoder
    opts: dict[str, Any]  # their options, plain data

    @property
    def use_tem(self) -> bool:
        return self.kind == "cfclip"

    @property
    def source_text(self) -> str | None:
        text = self.opts.get("source_text")
        return text if isinstance(text, str) and text.strip() else None


def n_latent_of(size: int) -> int:
    """Style layers of a StyleGAN2 generator of this resolution: 18 at 1024, 16 at 512."""
    return 2 * int(math.log2(size)) - 2


def key_pairs(kind: str, n_latent: int, groups: dict[str, bool]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(our key, their key, shape) for every mapper tensor of a file of this kind, size and groups."""
    pairs = []
    for j in range(1, N_LINEAR + 1):
        for name, on in groups.items():
            if on:
                pairs.append(
                    (
                        f"mapper.nets.{name}.{j}.weight",
                        f"mapper.{THEIR_GROUP[name]}.mapping.{j}.weight",
                        (DIM, DIM),
                    )
                )
                pairs.append(
                    (f"mapper.nets.{name}.{j}.bias", f"mapper.{THEIR_GROUP[name]}.mapping.{j}.bias", (DIM,))
                )
        if kind == "cfclip":
            for c in range(n_latent):
                pairs.append(
                    (f"tem.nets.{c}.{j}.weight", f"text_mapper.mapper_{c}.mapping.{j}.weight", (DIM, DIM))
                )
                pairs.append((f"tem.nets.{c}.{j}.bias", f"text_mapper.mapper_{c}.mapping.{j}.bias", (DIM,)))
    if kind == "cfclip":
        pairs += [
            ("fusion.proj.weight", "mapper.fc.weight", (DIM, 2 * DIM)),
            ("fusion.proj.bias", "mapper.fc.bias", (DIM,)),
        ]
    return pairs


def _listing(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def key_problems(
    expected: dict[str, tuple[int, ...]], found: dict[str, torch.Tensor], prefix: str = ""
) -> list[str]:
    """'missing keys ...', 'unexpected keys ...', 'shape mismatch ...' between a layout and a state dict."""
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    shapes = [
        f"{k} {tuple(v.shape)} (expected {expected[k]})"
        for k, v in found.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    return [
        *([f"missing keys {prefix}{_listing(missing)}"] if missing else []),
        *([f"unexpected keys {prefix}{_listing(extra)}"] if extra else []),
        *([f"shape mismatch {prefix}{_listing(shapes, 2)}"] if shapes else []),
    ]


def _flag(opts: dict, name: str, where: str) -> bool:
    value = opts.get(name, False)
    if not isinstance(value, bool):
        raise FormatError(f"{where}: opts.{name} is {value!r}, expected true or false")
    return value


def detect_kind(state: dict[str, Any], where: str) -> str:
    """'cfclip' or 'styleclip' from the keys; a single-mapper or unknown file gets an error naming what it holds."""
    mapper = [k for k in state if k.startswith("mapper.")]
    if any(k.startswith("mapper.mapping.") for k in mapper):
        raise FormatError(
            f"{where}: a single-mapper file (keys mapper.mapping.mapping.*: one mapping net for all layers, "
            "mapper_type SingleMapper); only LevelsMapper files (coarse / medium / fine mappers) are supported"
        )
    if "mapper.fc.weight" in state or any(k.startswith("text_mapper.") for k in state):
        return "cfclip"
    if any(re.match(r"mapper\.(course|medium|fine)_mapping\.", k) for k in mapper):
        return "styleclip"
    tops = sorted({k.split(".")[0] for k in state})
    raise FormatError(
        f"{where}: no CF-CLIP or StyleCLIP mapper in it (keys start with {tops[:6]}; expected mapper.*, "
        "decoder.* and, for CF-CLIP, text_mapper.*)"
    )


def _check_decoder(decoder: dict[str, torch.Tensor], size: int, where: str) -> dict[str, int]:
    """The decoder's Generator config; its keys and shapes must be exactly a rosinality generator's at ``size``."""
    if not decoder:
        raise FormatError(f"{where}: no decoder.* keys (the StyleGAN2 generator the mapper was trained with)")
    try:
        cfg = rosinality_config(decoder)
    except WeightsError as err:
        raise FormatError(
            f"{where}: the decoder.* weights do not read as a StyleGAN2 generator: {err}"
        ) from None
    if cfg["size"] != size:
        raise FormatError(
            f"{where}: opts.stylegan_size is {size} ({n_latent_of(size)} style layers) but the decoder is a "
            f"{cfg['size']} px generator ({n_latent_of(cfg['size'])} style layers)"
        )
    if cfg["style_dim"] != DIM:
        raise FormatError(
            f"{where}: the decoder's style dim is {cfg['style_dim']}; the authors' mappers are {DIM} wide"
        )
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Generator(**cfg).state_dict().items()}
    problems = key_problems(expected, decoder, "decoder.")
    if problems:
        raise FormatError(
            f"{where}: the decoder is not a StyleGAN2 generator at {size} px: " + "; ".join(problems)
        )
    return cfg


def parse_official(obj: Any, where: str) -> OfficialMapper:
    """Check an authors' checkpoint (``torch.load(weights_only=True)`` output) and rename it into ours."""
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("state_dict"), dict)
        or not isinstance(obj.get("opts"), dict)
    ):
        found = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(
            f"{where}: not an authors' mapper checkpoint (expected a dict with 'state_dict' and 'opts', found {found})"
        )
    state, opts = obj["state_dict"], obj["opts"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise FormatError(
            f"{where}: state_dict entries that are not tensors: {_listing(sorted(map(str, bad)))}"
        )
    mapper_type = opts.get("mapper_type", "LevelsMapper")
    if mapper_type == "SingleMapper":
        raise FormatError(
            f"{where}: opts.mapper_type is 'SingleMapper' (one mapping net for all layers); only 'LevelsMapper' "
            "files are supported"
        )
    if mapper_type != "LevelsMapper":
        raise FormatError(
            f"{where}: unknown opts.mapper_type {mapper_type!r} (their options know {list(MAPPER_TYPES)})"
        )
    kind = detect_kind(state, where)
    description = opts.get("description")
    if not isinstance(description, str) or not description.strip():
        raise FormatError(f"{where}: opts.description (the target text) is missing or empty")
    size = opts.get("stylegan_size", 1024)
    if not isinstance(size, int) or isinstance(size, bool) or size < 4 or size & (size - 1):
        raise FormatError(
            f"{where}: opts.stylegan_size is {size!r}, expected a power of two such as 1024 or 512"
        )
    n_latent = n_latent_of(size)
    if n_latent <= MEDIUM_END:
        raise FormatError(
            f"{where}: opts.stylegan_size {size} gives {n_latent} style layers, too few for the LevelsMapper's "
            f"coarse / medium / fine cut at layers 4 and {MEDIUM_END}"
        )
    groups = {name: not _flag(opts, f"no_{name}_mapper", where) for name in THEIR_GROUP}
    if not any(groups.values()):
        raise FormatError(
            f"{where}: opts sets no_coarse_mapper, no_medium_mapper and no_fine_mapper: no mapper is left"
        )
    decoder = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
    generator_config = _check_decoder(decoder, size, where)

    pairs = key_pairs(kind, n_latent, groups)
    theirs = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    problems = key_problems({t: shape for _, t, shape in pairs}, theirs)
    n_text = len({k.split(".")[1] for k in theirs if k.startswith("text_mapper.")})
    if problems and kind == "cfclip" and n_text != n_latent:
        problems.append(f"the text mapper has {n_text} nets, stylegan_size {size} needs {n_latent}")
    if problems:
        flags = ", ".join(f"no_{g}_mapper={not on}" for g, on in groups.items())
        raise FormatError(
            f"{where}: the {KIND_NAMES[kind]} mapper does not match its options ({flags}, stylegan_size {size}): "
            + "; ".join(problems)
        )
    mapper_state = {ours: theirs[t].float() for ours, t, _ in pairs}
    if not all(torch.isfinite(v).all() for v in mapper_state.values()):
        raise FormatError(f"{where}: the mapper holds NaN or Inf values")
    plain = {k: v for k, v in opts.items() if v is None or isinstance(v, (str, int, float, bool))}
    return OfficialMapper(
        kind=kind,
        description=description.strip(),
        size=size,
        w_space=_flag(opts, "w_space", where),
        groups=groups,
        mapper_state=mapper_state,
        decoder_state={k: v.float() for k, v in decoder.items()},
        generator_config=generator_config,
        opts=plain,
    )


def to_official(
    mapper_state: dict[str, torch.Tensor],
    decoder_state: dict[str, torch.Tensor],
    use_tem: bool,
    groups: dict[str, bool],
    n_latent: int,
    where: str,
) -> dict[str, torch.Tensor]:
    """Our mapper + generator state dicts -> their ``StyleCLIPMapper.state_dict()`` (every key, strict)."""
    kind = "cfclip" if use_tem else "styleclip"
    pairs = key_pairs(kind, n_latent, groups)
    problems = key_problems({ours: shape for ours, _, shape in pairs}, mapper_state)
    if problems:
        raise FormatError(
            f"{where}: this mapper cannot be written in the {KIND_NAMES[kind]} format ({DIM}-wide nets, "
            f"{N_LINEAR} layers each, {n_latent} text nets): " + "; ".join(problems)
        )
    out = {t: mapper_state[ours].detach().cpu().float().clone() for ours, t, _ in pairs}
    out.update({f"decoder.{k}": v.detach().cpu().float().clone() for k, v in decoder_state.items()})
    return out


def official_opts(
    description: str, size: int, w_space: bool, groups: dict[str, bool], source_text: str | None
) -> dict[str, Any]:
    """The options their inference reads from a checkpoint (it overrides some with its own command line)."""
    opts: dict[str, Any] = {
        "description": description,
        "stylegan_size": size,
        "mapper_type": "LevelsMapper",
        "w_space": w_space,
        "work_in_stylespace": False,  # CF-CLIP's inference reads it though its options never define it
        "checkpoint_path": None,
    }
    opts.update({f"no_{g}_mapper": not on for g, on in groups.items()})
    if source_text:
        opts["source_text"] = source_text
    return opts
