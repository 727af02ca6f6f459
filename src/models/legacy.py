"""NVIDIA StyleGAN2-ADA network pickles -> our rosinality-format checkpoint, without running code from the file.

A ``.pkl`` from stylegan2-ada-pytorch pickles NVIDIA's classes (``torch_utils.persistence`` objects whose
reconstruction would ``exec`` source code stored in the file, ``training.networks.*``, ``dnnlib.EasyDict``).
``RestrictedUnpickler`` never imports or calls any of them: NVIDIA globals become inert ``Record`` objects
that only keep their state, tensors are rebuilt by an allow-list of torch/numpy functions (storages through
``torch.load(weights_only=True)``), and every other global (``os.system``, ``builtins.eval``...) is refused.
"""

from __future__ import annotations

import _codecs
import io
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.models.weights import WeightsError, resolve_path


class UnsafePickleError(WeightsError):
    """The pickle asks for a global outside the allow-list; nothing from it was executed."""


class Record:
    """Inert stand-in for an NVIDIA object: remembers its class name and pickled state, runs nothing."""

    nv_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:
        obj = super().__new__(cls)
        obj.args, obj.state = args, {}  # NEWOBJ skips __init__; BUILD then calls __setstate__
        return obj

    def __init__(self, *args: Any, **kwargs: Any):  # a REDUCE call only records its arguments
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"_state": state}

    def __repr__(self) -> str:
        return f"Record({self.nv_class})"


class EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` (a plain dict; attribute access is not needed)."""


_RECORD_TYPES: dict[str, type[Record]] = {}
NVIDIA_PACKAGES = ("training", "torch_utils", "dnnlib", "metrics")  # their globals become Records


def record_class(qualname: str) -> type[Record]:
    """One Record subclass per NVIDIA class name (so ``NEWOBJ`` + ``BUILD`` work on it)."""
    if qualname not in _RECORD_TYPES:
        _RECORD_TYPES[qualname] = type(qualname.rsplit(".", 1)[-1], (Record,), {"nv_class": qualname})
    return _RECORD_TYPES[qualname]


def _reconstruct_persistent_obj(meta: Any) -> Record:
    """``torch_utils.persistence`` objects: keep ``class_name`` and ``state``; ``module_src`` is never run."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError(f"unexpected persistent-object metadata {type(meta).__name__}")
    obj = record_class(f"persistent.{meta.get('class_name')}")()
    obj.__setstate__(meta.get("state") or {})
    return obj


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Record:
    """``copyreg._reconstructor`` (protocol 0/1), only for Records."""
    if not (isinstance(cls, type) and issubclass(cls, Record)) or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor on {cls!r}: only NVIDIA stand-ins are allowed")
    return cls()


def _load_storage(data: bytes) -> Any:
    """``torch.storage._load_from_bytes``: each storage is a legacy torch.save blob, read with weights_only."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("torch.storage._load_from_bytes without bytes")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused a global inside the storage blob
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        name = f"'{found.group(1)}'" if found else "an object"
        raise UnsafePickleError(
            f"refused global {name} inside a tensor storage; nothing was executed"
        ) from None


def _check_storage(storage: Any) -> None:
    if not isinstance(storage, torch.TypedStorage):
        raise UnsafePickleError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor(_v2)`` without requires_grad or backward hooks."""
    _check_storage(storage)
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    """Parameters become plain tensors (hooks and extra state dropped)."""
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"parameter rebuilt from a {type(data).__name__}")
    return data.detach()


def _rebuild_from_type(func: Any, new_type: Any, args: tuple, state: Any = None) -> torch.Tensor:
    """``torch._tensor._rebuild_from_type_v2``: ``func`` passed the allow-list already; type and state dropped."""
    return _rebuild_parameter(func(*args))


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; other codecs are refused."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r}")
    return _codecs.encode(text, "latin1")


_NP_CORE = getattr(np, "_core", None) or np.core
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    **{("builtins", t.__name__): t for t in (set, frozenset, dict, list, tuple, bytearray, complex)},
    ("_codecs", "encode"): _latin1,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (module, name): getattr(_NP_CORE.multiarray, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    },
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals are ``SAFE_GLOBALS``, torch dtypes and inert NVIDIA Records."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.split(".")[0] in NVIDIA_PACKAGES and re.fullmatch(r"[A-Za-z_]\w*", name):
            return record_class(f"{module}.{name}")
        raise UnsafePickleError(
            f"refused global '{module}.{name}': it is neither a tensor-rebuilding function nor an NVIDIA "
            "network class, and calling it could run code. Nothing from the file was executed."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            "the pickle uses persistent ids (a torch.save file?); it is not an NVIDIA .pkl"
        )


def read_network_pickle(path: str | Path) -> Any:
    """Unpickle an NVIDIA ``.pkl`` with ``RestrictedUnpickler``; clear WeightsErrors for every failure."""
    p = resolve_path(path, "NVIDIA network pickle")
    if zipfile.is_zipfile(p):
        raise WeightsError(f"{p} is a torch.save checkpoint, not an NVIDIA network pickle: load it directly.")
    try:
        with open(p, "rb") as f:
            return RestrictedUnpickler(f).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"NVIDIA network pickle {p}: {err}") from None
    except WeightsError:
        raise
    except Exception as err:  # EOFError / UnpicklingError on a truncated file, errors inside storages...
        text = str(err).splitlines()[0][:200] if str(err) else ""
        raise WeightsError(
            f"NVIDIA network pickle {p}: cannot read it ({type(err).__name__}: {text}). The file is truncated "
            "or corrupt, or a storage in it holds more than tensors; download it again."
        ) from None


def record_state_dict(obj: Record, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a Record tree like ``nn.Module.state_dict()``: ``mapping.fc0.weight``, ``synthesis.b4.const``."""
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (obj.state.get(group) or {}).items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise WeightsError(f"{prefix}{name} in the pickle is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value.float()
    for name, child in (obj.state.get("_modules") or {}).items():
        if isinstance(child, Record):
            out.update(record_state_dict(child, f"{prefix}{name}."))
    return out


def _channels_config(channels: dict[int, int]) -> dict[str, int]:
    """channel_multiplier / channel_max / channel_base of our Generator that reproduce NVIDIA's table."""
    cmax = max(channels.values())
    candidates = [16384] + sorted({c * res // 2 for res, c in channels.items() if c < cmax})
    for base in candidates:
        if all(min(cmax, base * 2 // res) == c for res, c in channels.items()):
            return {"channel_multiplier": 2, "channel_max": cmax, "channel_base": base}
    raise WeightsError(
        f"the generator's channel table {channels} has no StyleGAN2 (channel_base, channel_max) form"
    )


def nvidia_to_rosinality(nv: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    """NVIDIA ``G_ema.state_dict()`` names -> ours. Returns (g_ema state dict, latent_avg (D,), generator config).

    Sizes come from the tensors: resolution from the ``synthesis.b{res}`` blocks, style dim and mapping depth
    from the ``mapping.fc{i}`` layers, channels from the conv weights. Conventions (checked in tests against a
    forward written in NVIDIA's formulation): weights and biases carry over unscaled (both sides apply the
    equalised-lr gains at run time; NVIDIA's ToRGB style gain 1/sqrt(C) is our ModulatedConv2d scale; affine
    biases are stored with their init-1 offset on both sides); the upsampling conv weight needs no flip or
    transpose (NVIDIA's up=2 path runs conv_transpose2d on the stored weight, as ours does); NVIDIA's FIR
    filter is stored normalised and gains up**2 = 4 when used, our Blur/Upsample kernels store it x4.
    """
    if any(k.startswith("mapping.embed.") for k in nv):
        raise WeightsError(
            "conditional (class-label) generators are not supported: the pickle has mapping.embed"
        )
    n_mlp = len([k for k in nv if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    blocks = sorted({int(m.group(1)) for k in nv if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    if not n_mlp or not blocks or "synthesis.b4.const" not in nv:
        raise WeightsError("the network is not a StyleGAN2 generator (no mapping.fc* / synthesis.b4.const)")
    size = blocks[-1]
    if blocks != [2**i for i in range(2, int(math.log2(size)) + 1)]:
        raise WeightsError(f"synthesis blocks {blocks} are not 4, 8, ..., {size}")
    style_dim = nv[f"mapping.fc{n_mlp - 1}.weight"].shape[0]
    if nv["mapping.fc0.weight"].shape[1] != style_dim:
        raise WeightsError(f"z_dim {nv['mapping.fc0.weight'].shape[1]} != w_dim {style_dim}: not supported")
    if nv[f"synthesis.b{size}.torgb.weight"].shape[0] != 3:
        raise WeightsError("only RGB generators are supported")

    ros: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        ros[f"style.{i + 1}.weight"] = nv[f"mapping.fc{i}.weight"]
        ros[f"style.{i + 1}.bias"] = nv[f"mapping.fc{i}.bias"]
    ros["input.input"] = nv["synthesis.b4.const"][None]  # (C, 4, 4) -> (1, C, 4, 4)
    layers = [("conv1", "synthesis.b4.conv1")]
    for k, res in enumerate(blocks[1:]):
        layers += [
            (f"convs.{2 * k}", f"synthesis.b{res}.conv0"),
            (f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1"),
        ]
    for idx, (ours, theirs) in enumerate(layers):
        ros[f"{ours}.conv.weight"] = nv[f"{theirs}.weight"][None]  # (Cout, Cin, 3, 3) -> (1, Cout, Cin, 3, 3)
        ros[f"{ours}.conv.modulation.weight"] = nv[f"{theirs}.affine.weight"]
        ros[f"{ours}.conv.modulation.bias"] = nv[f"{theirs}.affine.bias"]  # bias init 1 on both sides
        ros[f"{ours}.activate.bias"] = nv[f"{theirs}.bias"]
        res = blocks[(idx + 1) // 2]
        strength = nv.get(f"{theirs}.noise_strength", torch.zeros([]))
        ros[f"{ours}.noise.weight"] = strength.reshape(1)
        ros[f"noises.noise_{idx}"] = nv.get(f"{theirs}.noise_const", torch.zeros(res, res))[None, None]
    for ours, res in [("to_rgb1", 4)] + [(f"to_rgbs.{k}", r) for k, r in enumerate(blocks[1:])]:
        ros[f"{ours}.conv.weight"] = nv[f"synthesis.b{res}.torgb.weight"][None]  # (1, 3, C, 1, 1)
        ros[f"{ours}.conv.modulation.weight"] = nv[f"synthesis.b{res}.torgb.affine.weight"]
        ros[f"{ours}.conv.modulation.bias"] = nv[f"synthesis.b{res}.torgb.affine.bias"]
        ros[f"{ours}.bias"] = nv[f"synthesis.b{res}.torgb.bias"].view(1, 3, 1, 1)
    for k, res in enumerate(blocks[1:]):
        fir = nv.get(f"synthesis.b{res}.resample_filter")
        if fir is None or fir.shape != (4, 4):
            raise WeightsError(f"synthesis.b{res}.resample_filter must be a 4x4 FIR filter")
        ros[f"convs.{2 * k}.conv.blur.kernel"] = fir * 4  # upsample gain 2**2, stored in our kernel
        ros[f"to_rgbs.{k}.upsample.kernel"] = fir * 4

    latent_avg = nv.get("mapping.w_avg", torch.zeros(style_dim))
    return {k: v.contiguous() for k, v in ros.items()}, latent_avg.clone(), rosinality_config(ros)


def rosinality_config(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The Generator arguments a rosinality ``g_ema`` state dict fits: size, style_dim, n_mlp, channel table."""
    try:
        n_mlp = len([k for k in state if re.fullmatch(r"style\.\d+\.weight", k)])
        n_up = len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
        channels = {4: state["input.input"].shape[1]}
        channels.update({2 ** (k + 3): state[f"convs.{2 * k + 1}.conv.weight"].shape[1] for k in range(n_up)})
        style_dim = state["conv1.conv.modulation.weight"].shape[1]
    except (KeyError, IndexError, AttributeError) as err:
        raise WeightsError(f"not a StyleGAN2 generator state dict (no {err})") from None
    return {"size": 2 ** (n_up + 2), "style_dim": style_dim, "n_mlp": n_mlp, **_channels_config(channels)}


def describe_generator_state(state: dict[str, torch.Tensor]) -> str:
    """'size=512, style_dim=512, n_mlp=8, ...' of a state dict, for mismatch messages."""
    try:
        return ", ".join(f"{k}={v}" for k, v in rosinality_config(state).items())
    except WeightsError:
        return "not a StyleGAN2 generator"
