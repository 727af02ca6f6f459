"""NVIDIA StyleGAN2-ADA network pickles -> our rosinality-format checkpoint, without running code from the file.

A ``.pkl`` from stylegan2-ada-pytorch pickles NVIDIA's classes (``torch_utils.persistence`` objects whose
reconstruction would ``exec`` source code stored in the file, ``training.networks.*``, ``dnnlib.EasyDict``).
``RestrictedUnpickler`` never imports or calls any of them: NVIDIA globals become inert ``Record`` objects
that only keep their state, tensors are rebuilt by an allow-list of torch/numpy functions (storages through
``torch.load(weights_only=True)``), and every other global (``os.system``, ``builtins.eval``...) is refused.
The NVIDIA -> rosinality key mapping of the state dict read here: ``src.models.stylegan2_keys``.
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

# the key conversion moved to src.models.stylegan2_keys; its names stay importable from here (tests, callers)
from src.models.stylegan2_keys import (  # noqa: F401
    describe_generator_state,
    nvidia_to_rosinality,
    rosinality_config,
)
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


def _find_attr(obj: Record, name: str) -> Any:
    """First value of attribute ``name`` in a Record tree (e.g. ``conv_clamp``), or None."""
    if name in obj.state:
        return obj.state[name]
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, Record) and (value := _find_attr(child, name)) is not None:
            return value
    return None


def convert_network_pickle(path: str | Path, key: str = "G_ema") -> dict[str, Any]:
    """Read an NVIDIA ``.pkl`` safely -> ``{"g_ema", "latent_avg", "generator_config", "source"}``.

    ``generator_config`` holds our Generator's arguments; ``source`` notes NVIDIA settings our generator does
    not reproduce (``conv_clamp``: NVIDIA clamps activations to +-256, ours never clamps).
    """
    data = read_network_pickle(path)
    net = data.get(key) if isinstance(data, dict) else data
    if not isinstance(net, Record):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise WeightsError(f"{path}: no NVIDIA network under '{key}' (found {found})")
    architecture = _find_attr(net, "architecture")
    if architecture not in (None, "skip"):
        raise WeightsError(f"{path}: synthesis architecture '{architecture}' is not supported (only 'skip')")
    state, latent_avg, config = nvidia_to_rosinality(record_state_dict(net))
    source: dict[str, Any] = {"format": "nvidia-stylegan2-ada-pkl", "file": Path(path).name, "key": key}
    clamp = _find_attr(net, "conv_clamp")
    if isinstance(clamp, (int, float)):
        source["conv_clamp"] = float(clamp)
    mapping = (net.state.get("_modules") or {}).get("mapping")
    mapping_lr = _find_attr(mapping, "bias_gain") if isinstance(mapping, Record) else None
    if isinstance(mapping_lr, (int, float)) and not math.isclose(float(mapping_lr), 0.01, rel_tol=1e-6):
        raise WeightsError(f"{path}: mapping lr_multiplier {mapping_lr} differs from StyleGAN2's 0.01")
    return {"g_ema": state, "latent_avg": latent_avg, "generator_config": config, "source": source}
