"""RealEvaluator: every metric with random-weight stand-ins, "skipped: file X missing" entries without files,
and the LPIPS backbone loaded from a torchvision file into lpips' slices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.evaluation.real import RealEvaluator
from src.losses import ConvEmbedder
from src.models.factory import create_clip
from src.models.perceptual import LPIPS_BACKBONES, lpips_model


class TinyFeatures(nn.Module):
    """A stand-in FID/KID feature extractor: (B, 3, H, W) in [0, 1] -> (B, 16)."""

    num_features = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No weights anywhere: an empty weights dir, env dir, user cache and torch hub dir."""
    for var, sub in [
        ("CFCLIP_WEIGHTS_DIR", "env"),
        ("XDG_CACHE_HOME", "cache"),
        ("TORCH_HOME", "torch"),
        ("HOME", "home"),
    ]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def pairs(n: int = 6, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(n, 3, size, size) * 2 - 1
    return x, (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)


def test_all_metrics_with_random_weight_stand_ins(isolated):
    import lpips

    ev = RealEvaluator(
        "elf ears",
        "face",
        templates="simple",
        weights_dir=str(isolated / "weights"),
        clip_model=create_clip("cfclip-tiny", model_config="tiny"),
        identity_backbone=ConvEmbedder(dim=32),
        lpips=lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False),
        fid_feature=TinyFeatures(),
        kid_subset_size=4,
        batch_size=4,
        device="cpu",
    )
    x, x_hat = pairs()
    out = ev(x, x_hat, "elf_ears")
    for key in [
        "eval_clip_score",
        "eval_clip_score_source",
        "eval_clip_directional",
        "identity_similarity",
        "lpips",
        "fid",
        "kid",
        "kid_std",
    ]:
        assert isinstance(out[key], float), (key, out[key])
    assert -1 <= out["eval_clip_score"] <= 1 and out["identity_similarity"] < 1 and out["lpips"] > 0
    same = ev(x, x.clone(), "elf_ears")
    assert same["identity_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert abs(same["fid"]) < 1e-2 and same["fid"] < out["fid"]


def test_missing_files_give_skipped_entries(isolated):
    ev = RealEvaluator("tiger stripes", "cat", weights_dir=str(isolated / "weights"), device="cpu")
    x, x_hat = pairs(3)
    out = ev(x, x_hat, "tiger_stripes")
    assert out["eval_clip_score"].startswith("skipped: file ViT-L-14.pt missing")
    assert str(isolated / "weights") in out["eval_clip_score"]
    assert out["identity_similarity"].startswith("skipped: file model_ir_se50.pth missing")
    assert out["lpips"].startswith(f"skipped: file {LPIPS_BACKBONES['vgg']} missing")
    assert out["fid"].startswith("skipped:") and out["kid"] == out["fid"]
    assert "weights-inception-2015-12-05-6726825d.pth" in out["fid"] or "torch-fidelity" in out["fid"].lower()
    no_id = RealEvaluator("x", "cat", weights_dir=str(isolated), identity=False, fid=False, device="cpu")
    assert "identity_similarity" not in no_id(x, x_hat, "x") and "fid" not in no_id(x, x_hat, "x")


def test_lpips_backbone_from_a_torchvision_file(isolated):
    from torchvision.models import alexnet

    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    weights = isolated / "weights"
    weights.mkdir()
    torch.save(features, weights / LPIPS_BACKBONES["alex"])
    model = lpips_model("alex", weights_dir=str(weights))
    loaded = model.net.state_dict()
    assert loaded and all(
        torch.equal(v, features["features." + k.split(".", 1)[1]]) for k, v in loaded.items()
    )
    torch.save({"classifier.1.weight": torch.zeros(1)}, weights / "wrong.pth")
    with pytest.raises(Exception, match="has no 'features"):
        lpips_model("alex", backbone_file="wrong.pth", weights_dir=str(weights))
