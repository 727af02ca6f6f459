"""Read an OpenAI-format CLIP TorchScript archive (``ViT-B-32.pt``) without running it: a restricted unpickler
that rebuilds tensors only, where ``torch.jit.load`` would compile the archive and could run its code.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any

import torch

from src.models.weights import WeightsError

_STORAGE_DTYPES = {
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class ScriptObject:
    """Inert stand-in for a ``__torch__.*`` module object: keeps its attributes, runs nothing."""

    type_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> ScriptObject:
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


_SCRIPT_TYPES: dict[str, type[ScriptObject]] = {}


def _script_class(qualname: str) -> type[ScriptObject]:
    if qualname not in _SCRIPT_TYPES:
        _SCRIPT_TYPES[qualname] = type(qualname.rsplit(".", 1)[-1], (ScriptObject,), {"type_name": qualname})
    return _SCRIPT_TYPES[qualname]


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise WeightsError(f"TorchScript archive: tensor rebuilt from a {type(storage).__name__}")
    if storage.numel() == 0 or 0 in tuple(size):
        return torch.empty(tuple(size), dtype=storage.dtype)
    return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()


def _same(value: Any, *_: Any) -> Any:
    return value


def _as_list(value: Any) -> list:
    return list(value)


_SAFE_SCRIPT_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.jit._pickle", "restore_type_tag"): _same,
    **{
        ("torch.jit._pickle", f"build_{kind}list"): _as_list
        for kind in ("int", "float", "bool", "tensor", "double")
    },
}


class _ScriptUnpickler(pickle.Unpickler):
    """Reads ``data.pkl`` of a TorchScript zip: ``__torch__`` classes become inert ScriptObjects, storages are
    raw bytes from ``data/<key>``; any other global is refused (nothing from the archive is executed)."""

    def __init__(self, fh: Any, archive: zipfile.ZipFile, prefix: str):
        super().__init__(fh)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_SCRIPT_GLOBALS:
            return _SAFE_SCRIPT_GLOBALS[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module == "__torch__" or module.startswith("__torch__.")) and re.fullmatch(r"[A-Za-z_]\w*", name):
            return _script_class(f"{module}.{name}")
        raise WeightsError(
            f"TorchScript archive: refused global '{module}.{name}' (only module objects and tensors are read; "
            "nothing from the file was executed)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == "storage"):
            raise WeightsError(f"TorchScript archive: unexpected persistent id {str(pid)[:80]}")
        kind, key = pid[1], str(pid[2])
        dtype = kind.dtype if isinstance(kind, _StorageType) else kind
        if not isinstance(dtype, torch.dtype) or not re.fullmatch(r"\w+", key):
            raise WeightsError(f"TorchScript archive: bad storage reference {str(pid)[:80]}")
        data = self.archive.read(f"{self.prefix}/data/{key}")
        if not data:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(data), dtype=dtype)


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def read_torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive (e.g. OpenAI's ``ViT-B-32.pt``), by dotted name.

    Includes parameters, buffers and plain tensor attributes; callers keep the keys their model has.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            data_pkl = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
            if not data_pkl or not any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                raise WeightsError(f"{path}: not a TorchScript archive (no <name>/data.pkl + constants.pkl)")
            prefix = data_pkl[0].split("/")[0]
            if f"{prefix}/byteorder" in names and zf.read(f"{prefix}/byteorder").strip() != b"little":
                raise WeightsError(f"{path}: big-endian TorchScript archives are not supported")
            with zf.open(data_pkl[0]) as fh:
                root = _ScriptUnpickler(fh, zf, prefix).load()
    except WeightsError as err:
        raise WeightsError(f"{path}: {err}") from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, RuntimeError) as err:
        raise WeightsError(
            f"{path}: cannot read the TorchScript archive ({type(err).__name__}: {str(err)[:200]}); the file is "
            "truncated or corrupt: download it again."
        ) from None
    out: dict[str, torch.Tensor] = {}

    def walk(obj: Any, prefix: str, depth: int = 0) -> None:
        if depth > 64:
            raise WeightsError(f"{path}: module tree too deep")
        for key, value in obj.state.items():
            if isinstance(value, torch.Tensor):
                out[prefix + str(key)] = value
            elif isinstance(value, ScriptObject):
                walk(value, f"{prefix}{key}.", depth + 1)

    if not isinstance(root, ScriptObject):
        raise WeightsError(f"{path}: the archive's root is a {type(root).__name__}, not a module")
    walk(root, "")
    return out
