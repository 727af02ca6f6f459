"""The real-weight domains (ffhq, afhq_dog, afhq_cat): they compose with the paper's settings, a missing file
stops the CLI at once with one clear line, and with stand-in files in the real formats (small sizes) the
ffhq domain trains and evaluates and the afhq generator is converted from an NVIDIA pickle on the fly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from tests.conftest import FAST, ROOT, compose_train

DOMAINS = {
    "ffhq": dict(size=1024, source="face", files=["stylegan2-ffhq-config-f.pt"], reg="identity", weight=0.2),
    "afhq_dog": dict(
        size=512, source="dog", files=["afhqdog.pt", "afhqdog.pkl"], reg="perceptual", weight=0.02
    ),
    "afhq_cat": dict(
        size=512, source="cat", files=["afhqcat.pt", "afhqcat.pkl"], reg="perceptual", weight=0.02
    ),
}


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_domain_composes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CFCLIP_WEIGHTS_DIR", str(tmp_path / "w"))
    want = DOMAINS[name]
    cfg = compose_train([f"domain={name}"], tmp_path)
    d = cfg.domain
    assert d.name == name and d.source_text == want["source"] and d.templates == "imagenet"
    assert d.generator.size == want["size"] and list(d.generator.files) == want["files"]
    assert d.generator.weights_dir == str(tmp_path / "w")  # paths.weights_dir follows CFCLIP_WEIGHTS_DIR
    assert d.clip.model_name == "ViT-B-32" and d.clip.file == "ViT-B-32.pt"
    assert list(d.regularizers) == [want["reg"]] and d.regularizers[want["reg"]].weight == want["weight"]
    assert cfg.prompt.source == want["source"] and cfg.data.source == d.latents.source
    if name == "ffhq":
        assert cfg.data.train_path == str(tmp_path / "w" / "train_faces.pt")
        assert d.regularizers.identity.crop == [35, 223, 32, 220]
    else:
        assert d.latents.source == "random" and d.latents.truncation == 0.7
        assert d.regularizers.perceptual.net == "vgg19"
    assert d.evaluator._target_ == "src.evaluation.real.RealEvaluator" and d.evaluator.identity == (
        name == "ffhq"
    )


def test_missing_generator_stops_the_cli_with_one_line(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "CFCLIP_WEIGHTS_DIR": str(tmp_path / "weights"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    start = time.time()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.train",
            "domain=ffhq",
            "trainer.max_steps=1",
            f"paths.log_dir={tmp_path}/out",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if line.startswith("cfclip: error:")]
    assert len(err) == 1 and "stylegan2-ffhq-config-f.pt" in err[0]
    assert f"Place the file at {tmp_path / 'weights' / 'stylegan2-ffhq-config-f.pt'}" in err[0]
    assert time.time() - start < 120  # seconds of imports; nothing is built before the file is found


def small_ffhq_files(weights) -> list[str]:
    """Stand-ins in the real formats, small: a rosinality .pt, an OpenAI TorchScript CLIP, e4e latent files."""
    import open_clip

    from src.models.clip import register_model_config
    from src.models.factory import clip_model_config
    from src.models.stylegan2 import Generator
    from tests.test_real import write_openai_archive

    weights.mkdir(parents=True, exist_ok=True)
    gkw = dict(size=32, style_dim=64, n_mlp=2, channel_multiplier=1, channel_max=64)
    torch.manual_seed(0)
    g = Generator(**gkw)
    torch.save(
        {"g_ema": g.state_dict(), "latent_avg": torch.zeros(64)}, weights / "stylegan2-ffhq-config-f.pt"
    )
    register_model_config("cfclip-test-vit", clip_model_config("tiny"))
    write_openai_archive(
        open_clip.create_model("cfclip-test-vit", force_quick_gelu=True), weights / "ViT-B-32.pt"
    )
    torch.save(torch.randn(8, g.n_latent, 64) * 0.1, weights / "train_faces.pt")
    torch.save(torch.randn(4, g.n_latent, 64) * 0.1, weights / "test_faces.pt")
    return [f"domain.generator.{k}={v}" for k, v in gkw.items() if k != "channel_max"] + [
        "+domain.generator.channel_max=64",
        "domain.clip.model_name=cfclip-test-vit",
        "domain.clip.pretrained=null",
        "+domain.clip.quick_gelu=true",
        f"paths.weights_dir={weights}",
    ]


def test_ffhq_domain_trains_and_evaluates_from_files(tmp_path, monkeypatch):
    from src.train import train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    overrides = small_ffhq_files(tmp_path / "weights")
    fast = [o for o in FAST if not o.startswith(("domain=", "eval_after_fit"))]
    cfg = compose_train(["domain=ffhq", *fast, *overrides, "eval_after_fit=true"], tmp_path)
    with open_dict(cfg):  # IR-SE50 is covered by test_arcface; a small embedder keeps this test fast
        cfg.domain.regularizers.identity.backbone = {"_target_": "src.losses.ConvEmbedder", "dim": 32}
    metrics = train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "train/loss_identity" in metrics and torch.isfinite(torch.tensor(metrics["train/loss_identity"]))
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["eval_clip_score"].startswith("skipped: file ViT-L-14.pt missing")
    assert report["identity_similarity"].startswith("skipped: file model_ir_se50.pth missing")
    assert report["lpips"].startswith("skipped:") and report["fid"].startswith("skipped:")
    assert isinstance(report["clip_score"], float)  # the training CLIP's diagnostics still run


def test_afhq_generator_from_an_nvidia_pickle_and_random_latents(tmp_path, monkeypatch):
    from tests.test_convert import SMALL, random_generator, write_nvidia_pickle

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "weights"
    weights.mkdir()
    g = random_generator()
    write_nvidia_pickle(weights / "afhqdog.pkl", g, persistent=True)
    sizes = [
        f"domain.generator.{k}={v}" for k, v in SMALL.items() if k not in ("channel_max", "channel_base")
    ]
    cfg = compose_train(
        [
            "domain=afhq_dog",
            *sizes,
            "+domain.generator.channel_max=32",
            "+domain.generator.channel_base=256",
            f"paths.weights_dir={weights}",
            "data.num_train=6",
            "data.num_test=3",
        ],
        tmp_path,
    )
    gen = instantiate(cfg.domain.generator)  # no afhqdog.pt: the .pkl is converted on the fly
    w = torch.randn(2, g.n_latent, SMALL["style_dim"])
    with torch.no_grad():
        assert torch.equal(gen.synthesis(w), g.synthesis(w))
    dm = instantiate(cfg.data)
    dm.attach_generator(gen)
    dm.setup("fit")
    train, test = dm.splits["train"], dm.splits["test"]
    assert train.shape == (6, SMALL["style_dim"]) and test.shape == (3, SMALL["style_dim"])
    assert not any(torch.allclose(a, b) for a in train for b in test)  # disjoint seeds
