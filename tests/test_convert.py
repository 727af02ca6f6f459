"""NVIDIA StyleGAN2-ADA pickle -> rosinality checkpoint: a synthetic NVIDIA pickle built here (stand-in classes
under NVIDIA's module names, removed before converting), pixel-identical round trip, a reference forward in
NVIDIA's formulation, and malicious / truncated pickles refused with no side effect.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.convert import convert, main
from src.models.legacy import UnsafePickleError, convert_network_pickle
from src.models.stylegan2 import Generator
from src.models.weights import WeightsError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# 32 px, w_dim 64, 3 mapping layers, channels 32/32/32/16: every size must be read from the file.
SMALL = dict(size=32, style_dim=64, n_mlp=3, channel_multiplier=2, channel_max=32, channel_base=256)
NV_MODULES = (
    "training",
    "training.networks",
    "torch_utils",
    "torch_utils.persistence",
    "dnnlib",
    "dnnlib.util",
)


def random_generator(seed: int = 0) -> Generator:
    """Our generator with every parameter perturbed (noise strengths, biases non-zero)."""
    torch.manual_seed(seed)
    g = Generator(**SMALL).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return g


def fir() -> torch.Tensor:
    """NVIDIA's ``setup_filter([1, 3, 3, 1])``: normalised 4x4 outer product."""
    k = torch.tensor([1.0, 3, 3, 1])
    k = k[:, None] * k[None]
    return k / k.sum()


def to_nvidia(g: Generator) -> dict[str, torch.Tensor]:
    """Inverse mapping, written from NVIDIA's networks.py layout: our state dict -> ``G_ema.state_dict()``."""
    sd = {k: v.clone() for k, v in g.state_dict().items()}
    n_mlp = len([k for k in sd if k.startswith("style.") and k.endswith(".weight")])
    nv = {f"mapping.fc{i}.{p}": sd[f"style.{i + 1}.{p}"] for i in range(n_mlp) for p in ("weight", "bias")}
    nv["mapping.w_avg"] = torch.randn(g.style_dim)
    res_list = [2**i for i in range(2, g.log_size + 1)]
    nv["synthesis.b4.const"] = sd["input.input"][0]

    def layer(nv_name: str, ours: str, noise_idx: int) -> None:
        nv[f"{nv_name}.weight"] = sd[f"{ours}.conv.weight"][0]
        nv[f"{nv_name}.affine.weight"] = sd[f"{ours}.conv.modulation.weight"]
        nv[f"{nv_name}.affine.bias"] = sd[f"{ours}.conv.modulation.bias"]
        nv[f"{nv_name}.bias"] = sd[f"{ours}.activate.bias"]
        nv[f"{nv_name}.noise_strength"] = sd[f"{ours}.noise.weight"][0]  # shape []
        nv[f"{nv_name}.noise_const"] = sd[f"noises.noise_{noise_idx}"][0, 0]  # (res, res)
        nv[f"{nv_name}.resample_filter"] = fir()

    def torgb(res: int, ours: str) -> None:
        nv[f"synthesis.b{res}.torgb.weight"] = sd[f"{ours}.conv.weight"][0]  # (3, C, 1, 1)
        nv[f"synthesis.b{res}.torgb.affine.weight"] = sd[f"{ours}.conv.modulation.weight"]
        nv[f"synthesis.b{res}.torgb.affine.bias"] = sd[f"{ours}.conv.modulation.bias"]
        nv[f"synthesis.b{res}.torgb.bias"] = sd[f"{ours}.bias"].reshape(3)
        nv[f"synthesis.b{res}.resample_filter"] = fir()

    layer("synthesis.b4.conv1", "conv1", 0)
    torgb(4, "to_rgb1")
    for k, res in enumerate(res_list[1:]):
        layer(f"synthesis.b{res}.conv0", f"convs.{2 * k}", 2 * k + 1)
        layer(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
        torgb(res, f"to_rgbs.{k}")
    return nv


# --- a reference forward in NVIDIA's formulation (networks.py, conv2d_resample.py, upfirdn2d.py) ---------


def nv_upfirdn(
    x: torch.Tensor, f: torch.Tensor, up: int, pad: int | tuple[int, int], gain: float
) -> torch.Tensor:
    """``_upfirdn2d_ref``: zero-insert, pad (same on both axes), convolve with the flipped 2-D filter x gain."""
    b, c, h, w = x.shape
    x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    p0, p1 = (pad, pad) if isinstance(pad, int) else pad
    x = F.pad(x, [p0, p1, p0, p1])
    f = (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, f, groups=c)


def nv_modconv(x, weight, styles, demodulate: bool, up: int, f: torch.Tensor) -> torch.Tensor:
    """``modulated_conv2d`` fused path (fp32, eval); up=2 goes through conv2d_resample's transposed conv."""
    b = x.shape[0]
    o, i, kh, kw = weight.shape
    w = weight[None] * styles.reshape(b, 1, -1, 1, 1)  # (B, O, I, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(b, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    if up == 1:
        x = F.conv2d(x, w.reshape(-1, i, kh, kw), padding=kw // 2, groups=b)  # flip_weight=True: correlation
    else:
        # padding 1 -> px0 = 1 + (4+2-1)//2 - (3-1) = 1, px1 = 1 + (4-2)//2 - (3-2) = 1; weight not flipped.
        w = w.transpose(1, 2).reshape(b * i, o, kh, kw)
        x = F.conv_transpose2d(x, w, stride=2, groups=b)
        x = nv_upfirdn(x, f, up=1, pad=1, gain=up**2)
    return x.reshape(b, -1, *x.shape[2:])


def nv_fc(x, nv, name, lr=1.0, act=False):
    """``FullyConnectedLayer``: weight_gain lr/sqrt(in), bias_gain lr, lrelu with gain sqrt(2)."""
    w = nv[f"{name}.weight"]
    x = x @ (w * (lr / math.sqrt(w.shape[1]))).t() + nv[f"{name}.bias"] * lr
    return F.leaky_relu(x, 0.2) * math.sqrt(2) if act else x


def nv_layer(x, w, nv, name, up, clamp=256.0):
    """``SynthesisLayer`` in noise_mode='const': modconv, + noise_const * strength, bias, lrelu x sqrt(2), clamp."""
    styles = nv_fc(w, nv, f"{name}.affine")
    x = nv_modconv(x, nv[f"{name}.weight"], styles, True, up, nv[f"{name}.resample_filter"])
    x = x + nv[f"{name}.noise_const"] * nv[f"{name}.noise_strength"]
    x = F.leaky_relu(x + nv[f"{name}.bias"].reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)
    return x.clamp(-clamp, clamp)


def nv_torgb(x, w, nv, name, clamp=256.0):
    """``ToRGBLayer``: styles = affine(w) * 1/sqrt(C), no demodulation, bias, clamp."""
    weight = nv[f"{name}.weight"]
    styles = nv_fc(w, nv, f"{name}.affine") / math.sqrt(weight.shape[1])
    x = nv_modconv(x, weight, styles, False, 1, None)
    return (x + nv[f"{name}.bias"].reshape(1, -1, 1, 1)).clamp(-clamp, clamp)


def nv_synthesis(nv: dict, ws: torch.Tensor) -> torch.Tensor:
    """``SynthesisNetwork`` (skip architecture): block b takes ws[idx:idx+3], torgb shares the next conv's w."""
    res_list = sorted({int(k.split(".")[1][1:]) for k in nv if k.startswith("synthesis.b")})
    x = nv["synthesis.b4.const"][None].repeat(ws.shape[0], 1, 1, 1)
    x = nv_layer(x, ws[:, 0], nv, "synthesis.b4.conv1", 1)
    img = nv_torgb(x, ws[:, 1], nv, "synthesis.b4.torgb")
    idx = 1
    for res in res_list[1:]:
        x = nv_layer(x, ws[:, idx], nv, f"synthesis.b{res}.conv0", 2)
        x = nv_layer(x, ws[:, idx + 1], nv, f"synthesis.b{res}.conv1", 1)
        # upsample2d: padding [(4+2-1)//2, (4-2)//2] = [2, 1], gain up*up
        img = nv_upfirdn(img, nv[f"synthesis.b{res}.resample_filter"], 2, (2, 1), 4)
        img = img + nv_torgb(x, ws[:, idx + 2], nv, f"synthesis.b{res}.torgb")
        idx += 2
    return img


def nv_mapping(nv: dict, z: torch.Tensor) -> torch.Tensor:
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # normalize_2nd_moment
    n = len([k for k in nv if k.startswith("mapping.fc") and k.endswith(".weight")])
    for i in range(n):
        x = nv_fc(x, nv, f"mapping.fc{i}", lr=0.01, act=True)
    return x


# --- a synthetic NVIDIA pickle ----------------------------------------------------------------------------


@contextlib.contextmanager
def nvidia_stand_ins(persistent: bool, module_src: str = ""):
    """Register stand-in ``training.networks`` / ``torch_utils.persistence`` / ``dnnlib.util`` modules."""
    mods = {name: types.ModuleType(name) for name in NV_MODULES}

    def _reconstruct_persistent_obj(meta):  # never called here: the converter must not import it
        raise AssertionError("the converter imported NVIDIA code")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib.util"].EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})

    def reduce_persistent(self, protocol):
        meta = dict(type="class", version=6, module_src=module_src, class_name=type(self).__name__)
        return _reconstruct_persistent_obj, (dict(meta, state=self.__getstate__()),)

    body = {"__module__": "training.networks"}
    if persistent:
        body["__reduce_ex__"] = reduce_persistent
    for name in ["Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer"]:
        setattr(mods["training.networks"], name, type(name, (nn.Module,), dict(body)))
    for name in ["ToRGBLayer", "FullyConnectedLayer"]:
        setattr(mods["training.networks"], name, type(name, (nn.Module,), dict(body)))
    saved = {name: sys.modules.get(name) for name in NV_MODULES}
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def build_nvidia_tree(mods: dict, nv: dict[str, torch.Tensor], size: int, w_dim: int) -> nn.Module:
    """Nested stand-in modules holding ``nv`` at NVIDIA's attribute paths, with NVIDIA-like attributes."""
    net = mods["training.networks"]
    easy = mods["dnnlib.util"].EasyDict
    root = net.Generator()
    root.z_dim, root.w_dim, root.c_dim, root.img_resolution, root.img_channels = w_dim, w_dim, 0, size, 3
    root._init_kwargs = easy(synthesis_kwargs=easy(conv_clamp=256, architecture="skip"))
    kinds = {"mapping": net.MappingNetwork, "synthesis": net.SynthesisNetwork, "torgb": net.ToRGBLayer}
    for key, value in nv.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if part not in mod._modules:
                cls = kinds.get(part) or (
                    net.SynthesisBlock
                    if part.startswith("b") and part[1:].isdigit()
                    else net.FullyConnectedLayer
                    if part.startswith("fc") or part == "affine"
                    else net.SynthesisLayer
                )
                child = cls()
                if cls is net.FullyConnectedLayer:
                    child.activation = "lrelu" if part.startswith("fc") else "linear"
                    child.bias_gain = 0.01 if part.startswith("fc") else 1
                    child.weight_gain = np.float64(
                        child.bias_gain / np.sqrt(w_dim)
                    )  # numpy scalar, as NVIDIA
                if cls is net.SynthesisLayer:
                    child.conv_clamp, child.up = 256, 2 if part == "conv0" else 1
                if cls is net.SynthesisBlock:
                    child.architecture, child.resolution = "skip", int(part[1:])
                mod.add_module(part, child)
            mod = mod._modules[part]
        if leaf in ("w_avg", "noise_const", "resample_filter"):
            mod.register_buffer(leaf, value)
        else:
            mod.register_parameter(leaf, nn.Parameter(value))
    return root


def write_nvidia_pickle(path: Path, g: Generator, persistent: bool, module_src: str = "") -> dict:
    """Pickle a dict like NVIDIA's snapshots ({'G', 'D', 'G_ema', 'augment_pipe', ...}); returns the nv dict."""
    nv = to_nvidia(g)
    with nvidia_stand_ins(persistent, module_src) as mods:
        g_ema = build_nvidia_tree(mods, nv, g.size, g.style_dim).eval().requires_grad_(False)
        data = {
            "G": g_ema,
            "D": None,
            "G_ema": g_ema,
            "augment_pipe": None,
            "training_set_kwargs": {"xflip": True},
        }
        path.write_bytes(pickle.dumps(data, protocol=4))
    assert not any(name in sys.modules for name in NV_MODULES)  # removed before converting
    return nv


@pytest.fixture(scope="module")
def small_g() -> Generator:
    return random_generator()


@pytest.mark.parametrize("persistent", [False, True], ids=["plain-classes", "persistence-objects"])
def test_pickle_round_trip_is_pixel_identical(tmp_path, small_g, persistent):
    marker = tmp_path / "module_src_ran"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"  # would run if exec'd
    pkl, out = tmp_path / "net.pkl", tmp_path / "net.pt"
    nv = write_nvidia_pickle(pkl, small_g, persistent, module_src=src)
    assert main([str(pkl), str(out)]) == 0
    assert not marker.exists() and "training.networks" not in sys.modules

    ckpt = torch.load(out, weights_only=True)
    cfg = ckpt["generator_config"]
    assert cfg == {k: SMALL[k] for k in cfg} and set(cfg) == set(SMALL)  # size, w_dim, depth, channels read
    assert ckpt["source"]["conv_clamp"] == 256.0
    torch.testing.assert_close(ckpt["latent_avg"], nv["mapping.w_avg"], rtol=0, atol=0)
    g2 = Generator(**cfg).eval()
    g2.load_state_dict(ckpt["g_ema"], strict=True)

    torch.manual_seed(1)
    z = torch.randn(2, SMALL["style_dim"])
    ws = torch.randn(2, small_g.n_latent, SMALL["style_dim"])
    with torch.no_grad():
        assert torch.equal(g2.mapping(z), small_g.mapping(z))
        assert torch.equal(g2.synthesis(ws), small_g.synthesis(ws))
    if persistent:  # the factory takes the stored config as is
        from src.models.factory import create_generator

        g3 = create_generator(**cfg, checkpoint=str(out))
        assert torch.equal(g3.latent_avg[0], nv["mapping.w_avg"])
        assert all(torch.equal(v, g2.state_dict()[k]) for k, v in g3.state_dict().items())


def test_conversion_matches_nvidia_formulation(small_g):
    """Our generator on converted weights == a forward written the way NVIDIA's code computes it."""
    from src.models.legacy import nvidia_to_rosinality

    nv = to_nvidia(small_g)
    state, _, cfg = nvidia_to_rosinality(nv)
    g = Generator(**cfg).eval()
    g.load_state_dict(state, strict=True)
    torch.manual_seed(2)
    z = torch.randn(3, cfg["style_dim"])
    ws = torch.randn(3, g.n_latent, cfg["style_dim"])
    with torch.no_grad():
        torch.testing.assert_close(g.mapping(z), nv_mapping(nv, z), rtol=1e-5, atol=1e-5)
        ours, theirs = g.synthesis(ws), nv_synthesis(nv, ws)
    assert theirs.abs().max() > 0.1  # a real image, not all zeros
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_generator_config_is_read_from_a_full_size_layout():
    from src.models.legacy import describe_generator_state, rosinality_config

    with torch.device("meta"):  # shapes only: no memory, no init cost
        ffhq, afhq = Generator(1024).state_dict(), Generator(512, n_mlp=2).state_dict()
    assert rosinality_config(ffhq) == dict(
        size=1024, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512, channel_base=16384
    )
    assert rosinality_config(afhq)["size"] == 512 and rosinality_config(afhq)["n_mlp"] == 2
    assert describe_generator_state({"x": torch.zeros(1)}) == "not a StyleGAN2 generator"


class Evil:
    """A pickle payload: unpickling it calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def evil_payloads(marker: Path) -> dict[str, object]:
    blob = Evil(open, str(marker), "w")
    legacy_bytes = __import__("io").BytesIO()
    torch.save(Evil(os.system, f"touch {marker}"), legacy_bytes, _use_new_zipfile_serialization=False)
    return {
        "os.system": Evil(os.system, f"touch {marker}"),
        "builtins.eval": Evil(eval, f"open({str(marker)!r}, 'w').write('x')"),
        "builtins.open": blob,
        "nested in G_ema": {"G_ema": {"state": [1, 2, Evil(exec, f"open({str(marker)!r}, 'w')")]}},
        "inside a storage": Evil(torch.storage._load_from_bytes, legacy_bytes.getvalue()),
    }


@pytest.mark.parametrize(
    "kind", ["os.system", "builtins.eval", "builtins.open", "nested in G_ema", "inside a storage"]
)
def test_malicious_pickle_refused_without_side_effect(tmp_path, kind):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps(evil_payloads(marker)[kind], protocol=4))
    with pytest.raises(WeightsError) as err:
        convert_network_pickle(pkl)
    assert not marker.exists()
    msg = str(err.value)
    assert str(pkl) in msg
    assert isinstance(err.value, UnsafePickleError) and "refused global" in msg
    expected = {"os.system": "system", "builtins.open": "io.open", "nested in G_ema": "exec"}.get(kind, kind)
    expected = "system" if kind == "inside a storage" else expected
    assert expected in msg


def test_cli_refuses_malicious_pickle_and_writes_nothing(tmp_path):
    marker, pkl, out = tmp_path / "pwned", tmp_path / "evil.pkl", tmp_path / "out.pt"
    pkl.write_bytes(pickle.dumps(Evil(os.system, f"touch {marker}")))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "src.convert", str(pkl), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode != 0
    assert "refused global" in proc.stderr and "system" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and not out.exists() and list(tmp_path.iterdir()) == [pkl]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_truncated_and_wrong_files_give_clear_errors(tmp_path, small_g):
    pkl = tmp_path / "net.pkl"
    write_nvidia_pickle(pkl, small_g, persistent=True)
    with pytest.raises(WeightsError, match="python -m src.convert"):  # loading a .pkl as a checkpoint
        load_checkpoint(pkl)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        convert(cut, tmp_path / "cut.pt")
    assert not (tmp_path / "cut.pt").exists()
    with pytest.raises(WeightsError, match="afhqdog.pkl"):  # missing: the registry message
        convert(tmp_path / "afhqdog.pkl", tmp_path / "x.pt")
    zipped = tmp_path / "zipped.pkl"
    torch.save({"g_ema": {}}, zipped)
    with pytest.raises(WeightsError, match="torch.save checkpoint"):
        convert(zipped, tmp_path / "y.pt")
    with pytest.raises(WeightsError, match="no NVIDIA network under 'G_ema'"):
        plain = tmp_path / "plain.pkl"
        plain.write_bytes(pickle.dumps({"G": [1, 2]}))
        convert(plain, tmp_path / "z.pt")
