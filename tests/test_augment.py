"""MultiView: shapes, one batched kornia call, per-view parameters, shared warps across inputs, fill, seeds."""

from __future__ import annotations

import itertools

import pytest
import torch

from src.augment import MultiView, affine, crop, none, perspective

FACTORIES = {"perspective": perspective, "affine": affine, "crop": crop}
B, K, C, H, W = 2, 4, 3, 24, 24


def _image(b: int = B, seed: int = 0) -> torch.Tensor:
    """A smooth, non-symmetric test image batch in [-1, 1]: (b, C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, C, 6, 6, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", [*FACTORIES, "none"])
def test_output_shape(name: str) -> None:
    mv = MultiView(FACTORIES[name]() if name != "none" else none(), num_views=K)
    x = _image()
    views = mv(x)
    assert views.shape == (B, K, C, H, W)
    views, src = mv(x, x[:, :1])  # extra input with another channel count
    assert views.shape == (B, K, C, H, W) and src.shape == (B, K, 1, H, W)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_one_kornia_call_per_forward(name: str) -> None:
    """All B*K views of all inputs: one parameter draw and one warp, never a loop over views."""
    t = FACTORIES[name]()
    calls = {"params": [], "forward": []}
    fwd, fp = t.forward, t.forward_parameters

    def count_forward(x, params=None, **kw):
        calls["forward"].append(tuple(x.shape))
        return fwd(x, params=params, **kw)

    def count_params(shape):
        calls["params"].append(tuple(shape))
        return fp(shape)

    t.forward, t.forward_parameters = count_forward, count_params
    MultiView(t, K)(_image(), _image(seed=1), _image(seed=2)[:, :1])
    assert calls["params"] == [(B * K, 2 * C + 1, H, W)]
    assert calls["forward"] == [(B * K, 2 * C + 1, H, W)]


@pytest.mark.parametrize("name", list(FACTORIES))
def test_parameters_differ_per_view_and_sample(name: str) -> None:
    """The same image twice in the batch: all B*K views are pairwise different (per-sample parameters)."""
    torch.manual_seed(0)
    x = _image(b=1).expand(B, -1, -1, -1)
    views = MultiView(FACTORIES[name](), K)(x).reshape(B * K, -1)  # (B*K, C*H*W)
    for i, j in itertools.combinations(range(B * K), 2):
        assert (views[i] - views[j]).abs().max() > 1e-3, f"views {i} and {j} are identical"


@pytest.mark.parametrize("name", list(FACTORIES))
def test_extra_inputs_share_the_warp(name: str) -> None:
    mv = MultiView(FACTORIES[name](), K)
    x = _image()
    a, b = mv(x, x.clone())
    assert torch.equal(a, b)
    # Same geometry with different content: warps are linear, so warp(x + c) - warp(x) = c * warp(ones).
    c = 0.37
    a, b, ones = mv(x, x + c, torch.ones_like(x))
    torch.testing.assert_close(b - a, c * ones, atol=1e-5, rtol=0)
    assert ones.min() < 0.99 or name == "crop"  # the warps did move the border in (crop stays inside)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_gradient_reaches_input(name: str) -> None:
    x = _image().requires_grad_(True)
    src = _image(seed=3).requires_grad_(True)
    views, src_views = MultiView(FACTORIES[name](), K)(x, src)
    (views.square().sum() + src_views.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert src.grad is not None and src.grad.abs().sum() > 0


def test_none_gives_identical_copies() -> None:
    x = _image()
    views, src = MultiView(none(), K)(x, -x)
    assert torch.equal(views, x[:, None].expand(B, K, C, H, W))
    assert torch.equal(src, -views)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_same_seed_same_views(name: str) -> None:
    x = _image()
    torch.manual_seed(123)
    a = MultiView(FACTORIES[name](), K)(x)
    torch.manual_seed(123)
    b = MultiView(FACTORIES[name](), K)(x)
    torch.manual_seed(124)
    c = MultiView(FACTORIES[name](), K)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_zero_distortion_is_identity() -> None:
    x = _image()
    views = MultiView(perspective(distortion=0.0), K)(x)
    torch.testing.assert_close(views, x[:, None].expand_as(views), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fill", [0.0, 0.5, -1.0])
@pytest.mark.parametrize("name", ["perspective", "affine"])
def test_border_fill_value(name: str, fill: float) -> None:
    """Pixels warped in from outside take ``fill`` (in the image's own [-1, 1] space; 0 = mid grey)."""
    torch.manual_seed(0)
    t = perspective(distortion=0.9, fill=fill) if name == "perspective" else affine(degrees=45, fill=fill)
    x = torch.full((B, C, H, W), 0.9)
    views, far = MultiView(t, K)(x, torch.full((B, 1, H, W), 5.0))
    # out = w * value + (1 - w) * fill with coverage w, so two constant inputs give w.
    cover = (far[:, :, 0] - views[:, :, 0]) / (5.0 - 0.9)  # (B, K, H, W)
    outside = cover < 1e-4
    assert outside.any() and (cover > 1 - 1e-4).any()
    got = views.permute(0, 1, 3, 4, 2)[outside]  # (N, C) pixels fully outside the source image
    torch.testing.assert_close(got, torch.full_like(got, fill))


def test_moving_multiview_keeps_kornia_drawing_on_the_host():
    """Moving the module (to a GPU, a dtype) leaves kornia's draws on the CPU in the default dtype: the same
    views for the same seed, and no device-to-host copies of draws (two host syncs per step on an H200)."""
    mv = MultiView(perspective(0.5), num_views=4)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    torch.manual_seed(0)
    before = mv(x)
    mv = mv.to(torch.float64)  # kornia alone would now draw in float64 (on CUDA, on the GPU)
    assert mv.transform.device == torch.device("cpu") and mv.transform.dtype == torch.get_default_dtype()
    torch.manual_seed(0)
    torch.testing.assert_close(mv(x), before)


def test_flip_mirrors_a_share_of_views_and_the_extra_inputs_with_them() -> None:
    x = _image()
    torch.manual_seed(0)
    views, src = MultiView(none(), 64, flip=0.5)(x, -x)
    mirrored = (views == x[:, None].flip(-1)).flatten(2).all(-1)  # (B, K)
    kept = (views == x[:, None]).flatten(2).all(-1)
    assert (mirrored ^ kept).all()  # each view is the image or its mirror
    assert 0.25 < mirrored.float().mean() < 0.75
    assert torch.equal(src, -views)  # the source view is mirrored with its edit
    assert torch.equal(MultiView(none(), 4, flip=0.0)(x), x[:, None].expand(B, 4, C, H, W))
    with pytest.raises(ValueError, match="probability"):
        MultiView(none(), 4, flip=1.5)
