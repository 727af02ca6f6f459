"""TEM, fusion, LevelsMapper: shapes, switches, the PixelNorm quirk and the residual edit."""

from __future__ import annotations

import pytest
import torch

from src.models.mapper import CFCLIPMapper, LevelsMapper, apply_edit
from src.models.tem import TextEmbeddingMapper


@pytest.mark.parametrize("n_latent", [18, 16, 10, 8])
def test_mapper_shapes_follow_the_generator(n_latent):
    m = CFCLIPMapper(n_latent=n_latent, latent_dim=16, text_dim=12)
    w, t = torch.randn(3, n_latent, 16), torch.randn(3, 12)
    assert m(w, t).shape == (3, n_latent, 16)
    assert len(m.tem.nets) == n_latent


def test_no_tem_variant_ignores_text_and_has_no_text_parameters():
    m = CFCLIPMapper(n_latent=10, latent_dim=16, text_dim=12, use_tem=False)
    assert not hasattr(m, "tem") and not hasattr(m, "fusion")
    w = torch.randn(2, 10, 16)
    assert torch.equal(m(w), m(w, torch.randn(2, 12)))


def test_tem_mapper_requires_text_and_checks_shapes():
    m = CFCLIPMapper(n_latent=10, latent_dim=16, text_dim=12)
    with pytest.raises(ValueError, match="needs the target text"):
        m(torch.randn(2, 10, 16))
    with pytest.raises(ValueError, match=r"\(B, 10, 16\)"):
        m(torch.randn(2, 9, 16), torch.randn(2, 12))


def test_disabled_levels_output_zero():
    lm = LevelsMapper(n_latent=18, latent_dim=8, coarse=False, medium=True, fine=False)
    out = lm(torch.randn(2, 18, 8))
    assert out[:, :4].abs().sum() == 0 and out[:, 8:].abs().sum() == 0
    assert out[:, 4:8].abs().sum() > 0


def test_pixelnorm_layer_quirk_sees_only_signs():
    torch.manual_seed(0)
    quirk = TextEmbeddingMapper(n_latent=2, text_dim=6, latent_dim=4, pixelnorm_axis="layer")
    fixed = TextEmbeddingMapper(n_latent=2, text_dim=6, latent_dim=4, pixelnorm_axis="feature")
    fixed.load_state_dict(quirk.state_dict())
    t = torch.randn(1, 6)
    scaled = t * torch.rand(1, 6) * 5 + 0.01 * t.sign()  # same signs, different magnitudes
    assert torch.allclose(quirk(t), quirk(scaled), atol=1e-5)  # the official TEM can't tell them apart
    assert not torch.allclose(fixed(t), fixed(scaled), atol=1e-3)


@pytest.mark.parametrize("axis", ["feature", "layer"])
def test_batched_tem_equals_each_net_run_alone(axis):
    """The TEM's one batched matmul per layer = its L nets run one by one (outputs and weight gradients)."""
    torch.manual_seed(0)
    tem = TextEmbeddingMapper(n_latent=5, text_dim=6, latent_dim=4, pixelnorm_axis=axis)
    for p in tem.parameters():  # non-zero biases, so a bias mix-up cannot pass
        torch.nn.init.normal_(p, std=50.0)
    t = torch.randn(3, 6)
    batched = tem(t)
    alone = torch.cat([net(t.unsqueeze(1)) for net in tem.nets], dim=1)  # (B, L, D)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(alone)
    grads = torch.autograd.grad((batched * g).sum(), list(tem.parameters()))
    expected = torch.autograd.grad((alone * g).sum(), list(tem.parameters()))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_edit_is_residual():
    w, d = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    assert torch.allclose(apply_edit(w, d, 0.1), w + 0.1 * d)


def test_official_parameter_counts_at_1024():
    # OFFICIAL_CODE_FACTS: TEM ~18.9M, LevelsMapper ~3.15M, fusion ~0.52M at 1024 with ViT-B/32 (E = 512)
    m = CFCLIPMapper(n_latent=18, latent_dim=512, text_dim=512)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(m.tem) == 18 * 4 * (512 * 512 + 512)
    assert count(m.mapper) == 3 * 4 * (512 * 512 + 512)
    assert count(m.fusion) == 1024 * 512 + 512
