"""src.models.real and src.models.torchscript: CLIP from an OpenAI-format TorchScript archive read without running
it, open_clip's local caches, and the real generators' file search (first file found, clear message naming every
accepted file)."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import open_clip
import pytest
import torch
from torch import nn

from src.models.clip import register_model_config
from src.models.factory import clip_model_config
from src.models.real import clip_cache_candidates, find_clip_weights, real_clip, real_generator
from src.models.torchscript import read_torchscript_state_dict
from src.models.weights import WeightsError

NAME = "cfclip-test-openai-tiny"  # the tiny CLIP architecture registered under its own name


class Holder(nn.Module):
    """A container whose scripted archive stores the tensors under the same dotted names (as OpenAI's does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_openai_archive(model: nn.Module, path: Path) -> None:
    """A TorchScript archive of ``model``'s weights in fp16 (like OpenAI's ViT-B-32.pt), plus an extra tensor
    attribute that is not a weight (like OpenAI's ``attn_mask``)."""
    root = Holder()
    for key, value in model.state_dict().items():
        *parents, leaf = key.split(".")
        m = root
        for p in parents:
            if not hasattr(m, p):
                m.add_module(p, Holder())
            m = getattr(m, p)
        m.register_buffer(leaf, value.detach().half() if value.is_floating_point() else value.clone())
    root.register_buffer("input_resolution", torch.tensor(32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated; archives still load
        torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def openai_tiny(tmp_path_factory):
    register_model_config(NAME, clip_model_config("tiny"))
    torch.manual_seed(0)
    model = open_clip.create_model(NAME, force_quick_gelu=True).eval()
    path = tmp_path_factory.mktemp("clip") / "ViT-B-32.pt"
    write_openai_archive(model, path)
    return model, path


def test_openai_torchscript_clip_loads_without_running_it(openai_tiny):
    model, path = openai_tiny
    state = read_torchscript_state_dict(path)
    assert set(model.state_dict()) <= set(state) and "input_resolution" in state
    clip = real_clip(NAME, pretrained=None, file=str(path), quick_gelu=True)
    ref = model.half().float()  # the archive holds fp16 weights
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        want = nn.functional.normalize(ref.encode_image(clip.preprocess(x)), dim=-1)
    torch.testing.assert_close(clip.encode_image(x), want, rtol=1e-5, atol=1e-5)
    assert clip.encode_text(["a photo of a face"]).shape == (1, 64)
    assert clip.model.visual.preprocess_cfg["mean"] == pytest.approx(open_clip.OPENAI_DATASET_MEAN)


def test_archive_with_a_code_global_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "ViT-B-32.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
        zf.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(WeightsError, match="refused global '(posix|os).system'"):
        read_torchscript_state_dict(path)
    with pytest.raises(WeightsError, match="refused global"):
        real_clip(NAME, pretrained=None, file=str(path))
    assert not marker.exists()


def test_truncated_archive_and_wrong_architecture(tmp_path, openai_tiny):
    _, path = openai_tiny
    cut = tmp_path / "ViT-B-32.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated|not a TorchScript"):
        real_clip(NAME, pretrained=None, file=str(cut))
    other = dict(clip_model_config("tiny"), embed_dim=32)  # another architecture
    register_model_config(NAME + "-other", other)
    with pytest.raises(WeightsError, match="does not fit"):
        real_clip(NAME + "-other", pretrained=None, file=str(path))


def test_missing_clip_names_the_file_and_the_open_clip_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CFCLIP_WEIGHTS_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(
        "src.models.real.clip_cache_candidates", lambda *a: [tmp_path / "home/.cache/clip/ViT-B-32.pt"]
    )
    with pytest.raises(WeightsError) as err:
        real_clip("ViT-B-32", "openai", file="ViT-B-32.pt", weights_dir=str(tmp_path / "weights"))
    msg = str(err.value)
    assert "ViT-B-32.pt" in msg and str(tmp_path / "weights") in msg and ".cache/clip" in msg


def test_open_clip_url_cache_is_searched_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cached = tmp_path / ".cache" / "clip" / "ViT-B-32.pt"
    assert cached in clip_cache_candidates("ViT-B-32", "openai")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    monkeypatch.setenv("CFCLIP_WEIGHTS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert find_clip_weights("ViT-B-32", "openai", "ViT-B-32.pt", str(tmp_path / "w")) == cached


def test_real_generator_takes_the_first_file_found(tmp_path, monkeypatch):
    from src.models.stylegan2 import Generator

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CFCLIP_WEIGHTS_DIR", raising=False)
    kw = dict(size=8, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16)
    with pytest.raises(WeightsError) as err:
        real_generator(["afhqdog.pt", "afhqdog.pkl"], weights_dir=str(tmp_path), **kw)
    msg = str(err.value)
    assert "afhqdog.pt" in msg and "afhqdog.pkl" in msg and "src.convert" in msg
    torch.manual_seed(0)
    g = Generator(**kw)
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.ones(16)}, tmp_path / "afhqdog.pt")
    (tmp_path / "afhqdog.pkl").write_bytes(b"not read: the .pt comes first")
    g2 = real_generator(["afhqdog.pt", "afhqdog.pkl"], weights_dir=str(tmp_path), **kw)
    assert all(torch.equal(v, g2.state_dict()[k]) for k, v in g.state_dict().items())
    assert torch.equal(g2.latent_avg, torch.ones(1, 16))


def test_torchscript_reader_ignores_non_archives(tmp_path):
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(1)}, buf)
    path = tmp_path / "plain.pt"
    path.write_bytes(buf.getvalue())
    with pytest.raises(WeightsError, match="not a TorchScript archive"):
        read_torchscript_state_dict(path)
