"""Weight files: the registry, the local search order, the missing-file message, and safe loading (weights_only
refuses pickled code; truncated files name themselves).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from src.models.weights import (
    ENV_WEIGHTS_DIR,
    REGISTRY,
    WeightsError,
    find_weights,
    known_weights,
    load_checkpoint,
    load_state_dict,
    resolve_path,
    user_cache_dir,
    verify_weights,
)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Four empty search places: explicit dir, weights_dir, $CFCLIP_WEIGHTS_DIR, user cache."""
    dirs = {name: tmp_path / name for name in ("explicit", "weights_dir", "env")}
    dirs["cache"] = tmp_path / "xdg" / "cfclip"
    for d in dirs.values():
        d.mkdir(parents=True)
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(dirs["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return dirs


def put(d: Path, name: str) -> Path:
    (d / name).write_bytes(b"x")
    return d / name


def test_registry_lists_the_paper_files():
    files = {w.filename for w in REGISTRY.values()}
    assert files >= {
        "stylegan2-ffhq-config-f.pt",
        "afhqdog.pkl",
        "afhqcat.pkl",
        "ViT-B-32.pt",
        "model_ir_se50.pth",
        "20180402-114759-vggface2.pt",
        "vgg19-dcbb9e9d.pth",
        "vgg16-397923af.pth",
        "train_faces.pt",
        "test_faces.pt",
    }
    for w in REGISTRY.values():
        assert w.description and w.format and w.source
        assert w.sha256 is None or (len(w.sha256) >= 8 and int(w.sha256, 16) >= 0)
    assert known_weights("ir_se50") is known_weights("/any/dir/model_ir_se50.pth")
    assert REGISTRY["vgg19"].sha256 == "dcbb9e9d"  # torchvision file names carry their sha256 prefix


def test_search_order(places):
    name = "model_ir_se50.pth"
    explicit = places["explicit"] / name
    for place in ("cache", "env", "weights_dir", "explicit"):  # fill from the last place to the first
        put(places[place], name)
        found = find_weights("ir_se50", explicit=explicit, weights_dir=places["weights_dir"])
        assert found == places[place] / name
    # an explicit directory works like an explicit file; a missing explicit path falls through
    assert find_weights("ir_se50", explicit=places["explicit"]) == explicit
    os.remove(explicit)
    assert (
        find_weights(name, explicit=explicit, weights_dir=places["weights_dir"])
        == places["weights_dir"] / name
    )
    assert find_weights(name) == places["env"] / name  # no weights_dir: env next
    assert user_cache_dir() == places["cache"]


def test_default_user_cache_is_home_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / ".cache" / "cfclip"


def test_missing_file_message_names_everything(places, monkeypatch):
    monkeypatch.delenv(ENV_WEIGHTS_DIR)
    with pytest.raises(WeightsError) as err:
        find_weights("stylegan2-ffhq", explicit="/nowhere/g.pt", weights_dir=places["weights_dir"])
    msg = str(err.value)
    assert "\n" not in msg  # one paragraph
    for part in (
        "stylegan2-ffhq-config-f.pt",
        "/nowhere/g.pt",
        str(places["weights_dir"] / "stylegan2-ffhq-config-f.pt"),
        f"${ENV_WEIGHTS_DIR}: not set",
        str(user_cache_dir() / "stylegan2-ffhq-config-f.pt"),
        "rosinality",  # where it comes from
        "Place the file at",
        "Nothing is downloaded",
    ):
        assert part in msg, part
    # resolve_path (used by every loader) gives the same message for known files, a short one otherwise
    with pytest.raises(WeightsError, match="Searched, in order"):
        resolve_path(places["weights_dir"] / "afhqdog.pkl", "AFHQ dog")
    with pytest.raises(WeightsError, match="file not found"):
        resolve_path(places["weights_dir"] / "mine.pt", "my file")


class Custom:
    """A plain custom class: refused by weights_only too."""


class Payload:
    """A custom class in a checkpoint: unpickling it would call ``open(marker, 'w')``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_weights_only_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.pt"
    torch.save({"g_ema": {"w": torch.zeros(2)}, "extra": Payload(str(marker))}, path)
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path, what="generator")
    msg = str(err.value)
    assert "refused to load" in msg and str(path) in msg and "io.open" in msg
    assert not marker.exists()

    torch.save({"obj": Custom()}, path)
    with pytest.raises(WeightsError, match="Python objects other than tensors"):
        load_state_dict(path)


def test_truncated_and_wrong_content(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.randn(1000)}, path)
    assert load_state_dict(path)["w"].shape == (1000,)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:500])
    with pytest.raises(WeightsError, match=r"cut.pt.*truncated"):
        load_checkpoint(cut)
    with pytest.raises(WeightsError, match="no 'g_ema' entry"):
        load_state_dict(path, key="g_ema")
    torch.save(torch.zeros(3), path)
    with pytest.raises(WeightsError, match="expected a state dict"):
        load_state_dict(path)


def test_verify_weights_checks_known_size_and_hash(tmp_path, monkeypatch):
    from src.models import weights

    path = put(tmp_path, "vgg19-dcbb9e9d.pth")
    with pytest.raises(WeightsError, match="sha256"):
        verify_weights(path, check_hash=True)
    entry = weights.REGISTRY["vgg19"]
    monkeypatch.setitem(weights.REGISTRY, "vgg19", type(entry)(**{**entry.__dict__, "size": 5}))
    monkeypatch.setitem(weights._BY_FILENAME, entry.filename, weights.REGISTRY["vgg19"])
    with pytest.raises(WeightsError, match="1 bytes, expected 5"):
        verify_weights(path)
    assert verify_weights(put(tmp_path, "other.pt")) == tmp_path / "other.pt"  # unknown files pass
