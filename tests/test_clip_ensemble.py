"""A CLIP ensemble as the guide (src.models.clip_ensemble.CLIPEnsemble): one CLIP behaves as before; an
ensemble's CLIP terms are the weighted sum of each CLIP's, with its own text features; the source cache keeps one entry per CLIP; a
two-CLIP config on the tiny domain trains."""

from __future__ import annotations

import pytest
import torch

from src.builders import build
from src.data.source_cache import cache_entries, cache_key
from tests.test_source_cache import check_cached_equals_uncached

OTHER_CLIP = (  # a second tiny CLIP: other weights (seed 1) and a coarser patch grid, so its features differ
    "+domain.extra_clips=[{_target_: src.models.factory.create_clip, model_name: cfclip-tiny-p16, seed: 1,"
    " model_config: {embed_dim: 64, vision_cfg: {image_size: 32, layers: 2, width: 64, head_width: 32,"
    " patch_size: 16, mlp_ratio: 2.0}, text_cfg: {context_length: 77, vocab_size: 49408, width: 64, heads: 2,"
    " layers: 2}}}]"
)


def step(module, w: torch.Tensor, ids: torch.Tensor | None = None):
    """One seeded step's loss, parts and mapper gradient (views drawn alike)."""
    module.train()
    module.mapper.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    batch = {"w": w} if ids is None else {"w": w, "prompt": ids}
    total, parts, _ = module.step_loss(batch, training=True)
    total.backward()
    grad = torch.cat([p.grad.flatten() for p in module.mapper.parameters() if p.grad is not None])
    return total.detach(), {k: v.detach() for k, v in parts.items()}, grad


def latents(module, n: int = 2) -> torch.Tensor:
    g = module.generator
    return torch.randn(n, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(0)) * 0.3


@pytest.fixture
def built(fast_cfg):
    def make(*overrides: str):
        cfg = fast_cfg(*overrides)
        torch.manual_seed(0)
        module, dm = build(cfg)
        return module, dm, cfg

    return make


SAME_CLIP = "+domain.extra_clips=[${domain.clip}]"  # the domain's own CLIP config again: the same weights
SEED1_CLIP = "+domain.extra_clips=[{_target_: src.models.factory.create_clip, model_name: cfclip-tiny, model_config: tiny, seed: 1}]"
TERM = {"clip_nce": "clip_nce", "directional": "directional", "global": "global_clip"}


@pytest.mark.parametrize("loss", ["clip_nce", "directional", "global"])
def test_one_clip_and_degenerate_ensembles_give_the_same_loss(built, loss):
    """One CLIP config has no guides; [C, C] averaged and [C, D] weighted [1, 0] give C's loss and gradient."""
    module, _, _ = built(f"loss={loss}")
    assert not module.extra_clips and module.clip_weights == (1.0,)
    w = latents(module)
    ref_total, ref_parts, ref_grad = step(module, w)
    for overrides in ([SAME_CLIP], [SEED1_CLIP, "+domain.clip_weights=[1.0,0.0]"]):
        ensemble, _, _ = built(f"loss={loss}", *overrides)
        assert len(ensemble.extra_clips) == 1
        total, parts, grad = step(ensemble, w)
        torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6 * ref_grad.abs().max().item())
        torch.testing.assert_close(parts[f"{TERM[loss]}@0"], ref_parts[TERM[loss]])
        assert f"{TERM[loss]}@1" in parts


def test_two_clips_sum_each_clips_term_with_its_own_text(built):
    module, _, _ = built(OTHER_CLIP)
    assert len(module.extra_clips) == 1 and module.clip_weights == (0.5, 0.5)
    own, other = module.texts.features(0), module.extra_texts[0].features(0)
    assert not torch.allclose(own.target, other.target)  # each CLIP encodes the prompt itself
    total, parts, grad = step(module, latents(module))
    assert torch.isfinite(total) and grad.abs().max() > 0
    a, b = parts["clip_nce@0"], parts["clip_nce@1"]
    assert not torch.allclose(a, b)
    torch.testing.assert_close(parts["clip_nce"], 0.5 * a + 0.5 * b)
    others = sum(
        module.loss.terms[k].weight * v for k, v in parts.items() if k != "clip_nce" and "@" not in k
    )
    torch.testing.assert_close(total, module.loss.terms["clip_nce"].weight * parts["clip_nce"] + others)


def test_weights_sum_as_given(built):
    module, _, _ = built(OTHER_CLIP, "+domain.clip_weights=[1.0,2.0]")
    assert module.clip_weights == (1.0, 2.0)
    _, parts, _ = step(module, latents(module))
    torch.testing.assert_close(parts["clip_nce"], parts["clip_nce@0"] + 2 * parts["clip_nce@1"])


def test_source_cache_has_one_entry_per_clip(built):
    module, _, _ = built(OTHER_CLIP)
    entries = cache_entries(module)
    assert entries["clip"] is module.clip and entries["clip@1"] is module.extra_clips[0]
    single, _, _ = built()
    w = torch.zeros(3, 4)
    assert cache_key(module, w, "32", "cpu") != cache_key(single, w, "32", "cpu")
    check_cached_equals_uncached(module, renders_when_warm=1)  # the edit only: no source render when warm


def test_multi_prompt_ensemble_selects_each_prompts_text(built):
    module, _, _ = built(
        OTHER_CLIP, "prompt=multi", "prompt.targets=[face with red lipstick,face with blue eyes]"
    )
    w = latents(module, 4)
    total, parts, _ = step(module, w, torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(total) and "clip_nce@1" in parts


def test_two_clip_config_trains_a_few_steps(fast_cfg, tmp_path):
    cfg = fast_cfg(OTHER_CLIP, "trainer.max_steps=3")
    from src.train import train

    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_clip_nce@1" in header and "train/loss_clip_nce@0" in header
