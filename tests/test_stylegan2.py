"""Tests of the plain-PyTorch StyleGAN2 generator: rosinality checkpoint layout, latent API, resampling op."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from src.models.stylegan2 import Generator
from src.models.stylegan2_blocks import ModulatedConv2d
from src.models.upfirdn import Upsample, make_kernel, upfirdn2d

TINY = dict(size=32, style_dim=64, n_mlp=2, channel_max=64)  # L = 8 style layers, 7 noise maps


def tiny_generator(seed: int = 0, noise_strength: float = 0.3) -> Generator:
    """A tiny generator with non-zero noise weights, so that noise actually changes the image."""
    torch.manual_seed(seed)
    g = Generator(**TINY).eval()
    for name, p in g.named_parameters():
        if name.endswith("noise.weight"):
            p.data.fill_(noise_strength)
    return g


# --- checkpoint layout, written out from rosinality's model.py rules (not from our module) ---------------


def rosinality_layout(size: int, style_dim: int, n_mlp: int, cm: int) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of rosinality's ``Generator(size, style_dim, n_mlp, cm).state_dict()``, in order."""
    channels = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * cm,
        128: 128 * cm,
        256: 64 * cm,
        512: 32 * cm,
        1024: 16 * cm,
    }
    d, log_size = style_dim, int(math.log2(size))
    keys: list[tuple[str, tuple[int, ...]]] = []
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm
        keys += [(f"style.{i}.weight", (d, d)), (f"style.{i}.bias", (d,))]

    def modconv(prefix: str, cin: int, cout: int, k: int, up: bool) -> None:
        keys.append((f"{prefix}.weight", (1, cout, cin, k, k)))
        if up:
            keys.append((f"{prefix}.blur.kernel", (4, 4)))
        keys.extend([(f"{prefix}.modulation.weight", (cin, d)), (f"{prefix}.modulation.bias", (cin,))])

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        modconv(f"{prefix}.conv", cin, cout, 3, up)
        keys.extend([(f"{prefix}.noise.weight", (1,)), (f"{prefix}.activate.bias", (cout,))])

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        keys.append((f"{prefix}.bias", (1, 3, 1, 1)))
        if up:
            keys.append((f"{prefix}.upsample.kernel", (4, 4)))
        modconv(f"{prefix}.conv", cin, 3, 1, False)

    keys.append(("input.input", (1, channels[4], 4, 4)))
    styled("conv1", channels[4], channels[4], False)
    to_rgb("to_rgb1", channels[4], False)
    cin = channels[4]
    for j, i in enumerate(range(3, log_size + 1)):
        cout = channels[2**i]
        styled(f"convs.{2 * j}", cin, cout, True)
        styled(f"convs.{2 * j + 1}", cout, cout, False)
        cin = cout
    for j, i in enumerate(range(3, log_size + 1)):
        to_rgb(f"to_rgbs.{j}", channels[2**i], True)
    for n in range((log_size - 2) * 2 + 1):
        r = 2 ** ((n + 5) // 2)
        keys.append((f"noises.noise_{n}", (1, 1, r, r)))
    return keys


def is_buffer(key: str) -> bool:
    return key.endswith(".kernel") or key.startswith("noises.")


@pytest.mark.parametrize(
    "size, n_tensors, n_buffers, n_params",
    [(1024, 171, 33, 30_370_060), (512, 153, 29, 30_276_583)],
)
def test_state_dict_matches_rosinality(size: int, n_tensors: int, n_buffers: int, n_params: int) -> None:
    expected = rosinality_layout(size, 512, 8, 2)
    g = Generator(size, style_dim=512, n_mlp=8, channel_multiplier=2)
    got = [(k, tuple(v.shape)) for k, v in g.state_dict().items()]
    assert got == expected
    assert len(expected) == n_tensors
    assert sum(is_buffer(k) for k, _ in expected) == n_buffers
    assert sum(math.prod(s) for k, s in expected if not is_buffer(k)) == n_params
    assert sum(p.numel() for p in g.parameters()) == n_params
    assert {k for k, _ in g.named_buffers()} == {k for k, _ in expected if is_buffer(k)}
    assert (g.n_latent, g.num_layers, g.log_size) == (
        2 * g.log_size - 2,
        2 * g.log_size - 3,
        int(math.log2(size)),
    )


def test_channel_table_and_kernels() -> None:
    g = Generator(64, style_dim=32, n_mlp=1, channel_multiplier=1)
    assert g.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256}
    assert Generator(**TINY).channels == {4: 64, 8: 64, 16: 64, 32: 64}
    k = make_kernel([1, 3, 3, 1])
    sd = g.state_dict()
    torch.testing.assert_close(sd["convs.0.conv.blur.kernel"], k * 4, rtol=0, atol=0)
    torch.testing.assert_close(sd["to_rgbs.0.upsample.kernel"], k * 4, rtol=0, atol=0)
    assert k.sum().item() == pytest.approx(1.0)


@pytest.mark.slow
def test_forward_1024_batch1() -> None:
    g = Generator(1024).eval()
    with torch.no_grad():
        img = g.synthesis(torch.randn(1, 512))
    assert img.shape == (1, 3, 1024, 1024) and torch.isfinite(img).all()


# --- checkpoint round trip --------------------------------------------------------------------------------


def test_save_load_strict_bit_identical(tmp_path) -> None:
    g = tiny_generator(seed=0)
    path = tmp_path / "g_ema.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.mean_latent(64)[0]}, path)
    ckpt = torch.load(path, weights_only=True)
    g2 = tiny_generator(seed=1)  # different weights and noise buffers until loaded
    w = torch.randn(2, TINY["style_dim"])
    with torch.no_grad():
        assert not torch.equal(g.synthesis(w), g2.synthesis(w))
        g2.load_state_dict(ckpt["g_ema"], strict=True)
        assert torch.equal(g.synthesis(w), g2.synthesis(w))


# --- latent API ------------------------------------------------------------------------------------------


@torch.no_grad()
def test_w_equals_repeated_wplus_and_forward_equals_synthesis() -> None:
    g = tiny_generator()
    w = torch.randn(3, TINY["style_dim"])
    img = g.synthesis(w)
    assert img.shape == (3, 3, TINY["size"], TINY["size"]) and torch.isfinite(img).all()
    wplus = w.unsqueeze(1).repeat(1, g.n_latent, 1)
    assert torch.equal(g.synthesis(wplus), img)
    img_fwd, latent = g([w], input_is_latent=True, randomize_noise=False, return_latents=True)
    assert torch.equal(img_fwd, img)
    assert torch.equal(latent, wplus)
    assert g([wplus], input_is_latent=True, randomize_noise=False)[1] is None
    torch.testing.assert_close(
        g([wplus], input_is_latent=True, randomize_noise=False)[0], img, rtol=0, atol=0
    )
    z = torch.randn(3, TINY["style_dim"])
    assert torch.equal(g([z], randomize_noise=False)[0], g.synthesis(g.mapping(z)))


@torch.no_grad()
def test_truncation_zero_gives_truncation_latent_image() -> None:
    g = tiny_generator()
    mean = g.mean_latent(256)
    assert mean.shape == (1, TINY["style_dim"])
    img, _ = g(
        [torch.randn(2, TINY["style_dim"])], truncation=0.0, truncation_latent=mean, randomize_noise=False
    )
    assert torch.equal(img, g.synthesis(mean.expand(2, -1)))
    with pytest.raises(ValueError, match="truncation_latent"):
        g([torch.randn(2, TINY["style_dim"])], truncation=0.5)


@torch.no_grad()
def test_mean_latent_is_mean_of_mapping() -> None:
    g = tiny_generator()
    torch.manual_seed(5)
    mean = g.mean_latent(32)
    torch.manual_seed(5)
    torch.testing.assert_close(mean, g.mapping(torch.randn(32, TINY["style_dim"])).mean(0, keepdim=True))


@torch.no_grad()
def test_style_mixing_layout() -> None:
    g = tiny_generator()
    w1, w2 = torch.randn(2, 2, TINY["style_dim"])
    img, latent = g(
        [w1, w2], input_is_latent=True, inject_index=3, return_latents=True, randomize_noise=False
    )
    assert torch.equal(latent[:, :3], w1.unsqueeze(1).expand(-1, 3, -1))
    assert torch.equal(latent[:, 3:], w2.unsqueeze(1).expand(-1, g.n_latent - 3, -1))
    torch.testing.assert_close(img, g.synthesis(latent))


@torch.no_grad()
def test_noise_modes() -> None:
    g = tiny_generator()
    w = torch.randn(2, TINY["style_dim"])
    assert torch.equal(g.synthesis(w), g.synthesis(w))  # fixed buffers
    a, _ = g([w], input_is_latent=True)  # randomize_noise=True is rosinality's default
    b, _ = g([w], input_is_latent=True)
    assert (a - b).abs().max() > 1e-3
    noise = g.make_noise()
    assert [n.shape for n in noise] == [getattr(g.noises, f"noise_{i}").shape for i in range(g.num_layers)]
    assert torch.equal(g.synthesis(w, noise=noise), g.synthesis(w, noise=noise))
    assert not torch.equal(g.synthesis(w, noise=noise), g.synthesis(w))


def test_gradient_reaches_latent_size64() -> None:
    torch.manual_seed(0)
    g = Generator(64, style_dim=64, n_mlp=2, channel_max=32)
    g.requires_grad_(False)
    w = torch.randn(2, g.n_latent, 64, requires_grad=True)
    img = g.synthesis(w)
    assert img.shape == (2, 3, 64, 64)
    img.square().mean().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    assert (w.grad.abs().sum(-1) > 0).all()  # every style layer influences the image


@torch.no_grad()
def test_shape_errors_are_clear() -> None:
    g = tiny_generator()
    d, n = TINY["style_dim"], g.n_latent
    with pytest.raises(ValueError, match=rf"W\+ of shape \(B, {n}, {d}\), got \(2, {n - 1}, {d}\)"):
        g.synthesis(torch.randn(2, n - 1, d))
    with pytest.raises(ValueError, match=rf"W of shape \(B, {d}\).*got \(2, {d + 1}\)"):
        g.synthesis(torch.randn(2, d + 1))
    with pytest.raises(ValueError, match=rf"expected {g.num_layers} noise maps, got 2"):
        g.synthesis(torch.randn(2, d), noise=g.make_noise()[:2])
    with pytest.raises(ValueError, match=rf"z of shape \(B, {d}\)"):
        g([torch.randn(2, d + 1)])
    with pytest.raises(ValueError, match="power of two"):
        Generator(48)


# --- modulated conv: grouped and input-modulation paths vs a per-sample loop ------------------------------


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_paths_agree(upsample: bool, demodulate: bool) -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, 16, demodulate=demodulate, upsample=upsample)
    x, style = torch.randn(3, 6, 7, 7), torch.randn(3, 16)
    ref = []
    for b in range(3):  # one ordinary conv per sample with its own modulated weight
        weight = conv.scale * conv.weight[0] * conv.modulation(style[b : b + 1]).view(1, 6, 1, 1)
        if demodulate:
            weight = weight / weight.square().sum([1, 2, 3], keepdim=True).add(1e-8).sqrt()
        if upsample:
            ref.append(conv.blur(F.conv_transpose2d(x[b : b + 1], weight.transpose(0, 1), stride=2)))
        else:
            ref.append(F.conv2d(x[b : b + 1], weight, padding=1))
    ref = torch.cat(ref)
    assert ref.shape == ((3, 5, 14, 14) if upsample else (3, 5, 7, 7))
    for fused in (False, True):
        conv.fused = fused
        torch.testing.assert_close(conv(x, style), ref, rtol=1e-5, atol=1e-5)


# --- upfirdn2d vs a naive loop ----------------------------------------------------------------------------


def upfirdn2d_loop(
    x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]
) -> torch.Tensor:
    """Definition by loops: zero-insert, pad (negative crops), true 2-D convolution, subsample."""
    b, c, h, w = x.shape
    up_x = torch.zeros(b, c, h * up, w * up, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            up_x[:, :, i * up, j * up] = x[:, :, i, j]
    p0, p1 = pad
    n = h * up + p0 + p1
    padded = torch.zeros(b, c, n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            si, sj = i - p0, j - p0
            if 0 <= si < h * up and 0 <= sj < w * up:
                padded[:, :, i, j] = up_x[:, :, si, sj]
    kh = k.shape[0]
    full = n - kh + 1
    out = torch.zeros(b, c, full, full, dtype=torch.float64)
    for i in range(full):
        for j in range(full):
            for u in range(kh):
                for v in range(kh):
                    out[:, :, i, j] += padded[:, :, i + u, j + v] * k[kh - 1 - u, kh - 1 - v]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up, down, pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (1, 1)), (2, 1, (-1, 0))])
def test_upfirdn2d_matches_loop(up: int, down: int, pad: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    k = torch.rand(4, 4, dtype=torch.float64)  # asymmetric: checks the kernel flip
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    side = (5 * up + sum(pad) - 4) // down + 1
    assert out.shape == (2, 3, side, side)
    torch.testing.assert_close(out, upfirdn2d_loop(x, k, up, down, pad))


def test_upsample_keeps_constant_gain() -> None:
    up = Upsample([1, 3, 3, 1])
    out = up(torch.full((1, 2, 6, 6), 0.7))
    assert out.shape == (1, 2, 12, 12)
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], torch.full((1, 2, 8, 8), 0.7))
