"""GPU checks (``pytest -m gpu``; skipped without CUDA; run by scripts/gpu_check.sh): Lightning training with
trainer=gpu in bf16-mixed, the run checkpoint edited on the GPU, and the full-size generator in bf16."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import FAST, compose_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_tiny_domain_trains_two_steps_on_gpu_in_bf16(tmp_path):
    from src.train import train

    cfg = compose_train(
        [o for o in FAST if o != "trainer=cpu"] + ["trainer=gpu", "eval_after_fit=true"], tmp_path
    )
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "eval" / "eval.json").is_file()


def test_run_checkpoint_edits_on_gpu(tmp_path):
    from src.edit import apply_edits, load_editors
    from src.train import train

    train(compose_train([o for o in FAST if o != "trainer=cpu"] + ["trainer=gpu"], tmp_path))
    module, _, editors = load_editors([str(tmp_path / "checkpoints" / "last.ckpt")], torch.device("cuda"))
    w = torch.randn(2, module.generator.n_latent, module.generator.style_dim, device="cuda") * 0.1
    w_hat = apply_edits(editors, module.clip, w, [], 1.0)["elf_ears"]
    assert w_hat.device.type == "cuda"
    torch.testing.assert_close(w_hat, module.edit(w))


def test_full_size_generator_bf16_matches_fp32():
    from src.models.factory import create_generator

    g = create_generator(1024, seed=0).cuda().eval()  # the FFHQ config-f layout, random weights
    w = g.mapping(torch.randn(1, 512, device="cuda", generator=torch.Generator("cuda").manual_seed(0)))
    with torch.no_grad():
        ref = g.synthesis(w)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = g.synthesis(w)
    assert ref.shape == (1, 3, 1024, 1024) and torch.isfinite(low).all()
    cos = torch.nn.functional.cosine_similarity(low.float().flatten(), ref.flatten(), dim=0)
    assert cos > 0.98, cos
