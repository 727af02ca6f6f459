"""FrozenCLIP: preprocessing equals open_clip's, text cache, prompt checks, frozen weights, gradients, seeds.

Everything runs on the random-init tiny config; no weights are downloaded and no pretrained tag is tried.
"""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Normalize, Resize

from src.models.clip import TINY_CLIP_CONFIG, FrozenCLIP, clip_preprocess, register_model_config

skimage_data = pytest.importorskip("skimage.data")

NAME = "cfclip-test-tiny"


def _tiny(seed: int = 0) -> FrozenCLIP:
    return FrozenCLIP.create(NAME, model_config=TINY_CLIP_CONFIG, seed=seed)


@pytest.fixture(scope="module")
def clip() -> FrozenCLIP:
    """Shared read-only instance (tests that touch the cache or device build their own)."""
    return _tiny()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # (512, 512, 3) uint8 photo


def _to_model_input(arr: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) in [-1, 1], the generator's range."""
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(dtype) / 255 * 2 - 1


def _denorm(x: torch.Tensor, clip: FrozenCLIP) -> torch.Tensor:
    """Normalised CLIP input -> [0, 1] pixel values, to state tolerances in grey levels."""
    mean = torch.tensor(clip.image_mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(clip.image_std, dtype=x.dtype).view(-1, 1, 1)
    return x * std + mean


# ---------------------------------------------------------------- preprocessing


def test_properties_come_from_open_clip(clip: FrozenCLIP) -> None:
    assert clip.embed_dim == TINY_CLIP_CONFIG["embed_dim"]
    assert clip.image_size == TINY_CLIP_CONFIG["vision_cfg"]["image_size"]
    assert clip.context_length == TINY_CLIP_CONFIG["text_cfg"]["context_length"]
    assert clip.image_mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert clip.image_std == tuple(open_clip.OPENAI_DATASET_STD)


def test_preprocess_matches_open_clip_pil_transform(clip: FrozenCLIP, astronaut: np.ndarray) -> None:
    """In-graph preprocessing of a real photo vs open_clip's own eval transform (PIL, uint8).

    Measured on this photo (512 -> 32): mean |diff| 0.26/255, max 4.9/255 after clamping ours to [0, 1];
    11.2/255 unclamped. The whole gap is PIL's uint8 arithmetic: it resizes in two separable passes and
    rounds + clamps to uint8 after each, while we stay in float and do not clamp bicubic overshoot (so the
    generator keeps gradients at saturated pixels). The resize kernel itself is identical: see the next test,
    and emulating PIL's two rounded passes reproduces open_clip to within one grey level.
    """
    ref_tf = open_clip.image_transform(
        clip.image_size, is_train=False, mean=clip.image_mean, std=clip.image_std
    )
    ref = _denorm(ref_tf(Image.fromarray(astronaut)), clip)  # (3, 32, 32) in [0, 1]
    ours = _denorm(clip.preprocess(_to_model_input(astronaut))[0], clip)
    assert ours.shape == ref.shape == (3, clip.image_size, clip.image_size)
    diff = (ours.clamp(0, 1) - ref).abs() * 255  # grey levels
    assert diff.mean() < 0.5 and diff.max() < 6.0
    # Beyond that bound only where bicubic overshoots [0, 1] (PIL clamps those pixels).
    big = ((ours - ref).abs() * 255) > 6.0
    assert ((ours[big] < 0) | (ours[big] > 1)).all()


@pytest.mark.parametrize(
    "crop, size",
    [
        (None, 32),
        (None, 224),
        ((slice(None), slice(64, 448)), 224),
        ((slice(100, 400), slice(30, 500)), 64),
        ((slice(0, 90), slice(0, 150)), 224),
    ],  # square/non-square, down- and upsampling
    ids=["512-32", "512-224", "512x384-224", "300x470-64", "90x150-up224"],
)
def test_preprocess_kernel_equals_open_clip_without_uint8(astronaut: np.ndarray, crop, size: int) -> None:
    """open_clip's own Resize/CenterCrop/Normalize run on float ('F' mode) PIL images: equal to 1e-5.

    This isolates the resize kernel, output size and crop offsets from PIL's uint8 rounding.
    """
    arr = astronaut if crop is None else np.ascontiguousarray(astronaut[crop])
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    tf = open_clip.image_transform(size, is_train=False, mean=mean, std=std)
    geometric = [t for t in tf.transforms if isinstance(t, Resize | CenterCrop)]
    (normalize,) = [t for t in tf.transforms if isinstance(t, Normalize)]
    channels = []
    for c in range(3):
        im = Image.fromarray(arr[..., c].astype(np.float32) / 255, mode="F")
        for t in geometric:
            im = t(im)
        channels.append(torch.from_numpy(np.asarray(im, dtype=np.float64).copy()))
    ref = normalize(torch.stack(channels))
    ours = clip_preprocess(_to_model_input(arr, torch.float64), size, mean, std)[0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_encode_image_any_size_unit_norm_float32(clip: FrozenCLIP) -> None:
    x = torch.rand(3, 3, 40, 56) * 2 - 1
    feats = clip.encode_image(x)
    assert feats.shape == (3, clip.embed_dim) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    raw = clip.encode_image(x, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), feats)


# ---------------------------------------------------------------- text


def _count_text_calls(clip: FrozenCLIP) -> list[int]:
    """Wrap the text tower; the returned list collects the batch size of every call."""
    calls: list[int] = []
    inner = clip.model.encode_text

    def counted(tokens, normalize=False):
        calls.append(tokens.shape[0])
        return inner(tokens, normalize=normalize)

    clip.model.encode_text = counted
    return calls


def test_text_cache_encodes_each_prompt_once() -> None:
    clip = _tiny()
    calls = _count_text_calls(clip)
    a = clip.encode_text("a photo of a face")
    b = clip.encode_text("a photo of a face")
    assert calls == [1]
    assert a.shape == (1, clip.embed_dim) and a.dtype == torch.float32
    assert torch.equal(a, b)


def test_text_cache_mixed_batch() -> None:
    clip = _tiny()
    calls = _count_text_calls(clip)
    first = clip.encode_text(["dog", "cat"])
    both = clip.encode_text(["cat", "tiger stripes", "dog", "tiger stripes"])
    assert calls == [2, 1]  # one call, only the uncached (deduplicated) prompt
    assert both.shape == (4, clip.embed_dim)
    assert torch.equal(both[0], first[1]) and torch.equal(both[2], first[0]) and torch.equal(both[1], both[3])
    fresh = _tiny().encode_text("tiger stripes")  # batch composition does not change a prompt's features
    torch.testing.assert_close(both[1:2], fresh, atol=1e-5, rtol=0)


def test_text_normalisation_and_cache_key() -> None:
    clip = _tiny()
    calls = _count_text_calls(clip)
    unit = clip.encode_text(["elf ears", "green lipstick"])
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))
    raw = clip.encode_text(["elf ears", "green lipstick"], normalize=False)
    assert calls == [2, 2]  # (text, normalize) is the key
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), unit)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_raises(clip: FrozenCLIP, prompt: str) -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        clip.encode_text(["a face", prompt])


def test_overlong_prompt_raises_with_count_and_limit() -> None:
    clip = _tiny()
    prompt = "a photo of " + " ".join(["cyberpunk"] * 80)
    n = len(clip.tokenizer.encode(prompt)) + 2
    with pytest.raises(ValueError, match=rf"{n} tokens.*limit is {clip.context_length}") as err:
        clip.encode_text(["a face", prompt])
    assert "cyberpunk cyberpunk" in str(err.value)  # names the prompt
    assert clip._text_cache == {}  # nothing of the failed batch was encoded
    ok = "x " * (clip.context_length - 2)  # exactly at the limit is fine
    assert clip.token_count(ok) == clip.context_length
    clip.encode_text(ok)


def test_text_cache_follows_device() -> None:
    clip = _tiny()
    clip.encode_text(["dog", "cat"])
    clip.to("meta")  # exercises the same _apply path as .cuda()
    assert all(v.device.type == "meta" and v.dtype == torch.float32 for v in clip._text_cache.values())


# ---------------------------------------------------------------- frozen


def test_frozen_and_stays_eval(clip: FrozenCLIP) -> None:
    assert all(not p.requires_grad for p in clip.parameters())
    parent = torch.nn.Sequential(torch.nn.Linear(2, 2), clip)
    parent.train()
    assert parent[0].training
    assert not any(m.training for m in clip.modules())
    assert all(not p.requires_grad for p in clip.parameters())


def test_gradient_flows_to_image_and_weights_stay_bitwise(clip: FrozenCLIP) -> None:
    """Optimise a small 'generator' through CLIP: it moves, CLIP's parameters do not change by a bit."""
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    gen = torch.nn.Conv2d(3, 3, 3, padding=1)
    opt = torch.optim.Adam([*gen.parameters(), *clip.parameters()], lr=0.1)  # CLIP included on purpose
    x = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)
    target = clip.encode_text("green tongue")
    loss = (1 - clip.encode_image(torch.tanh(gen(x))) @ target.T).mean()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in gen.parameters())
    assert all(p.grad is None for p in clip.parameters())
    w0 = gen.weight.detach().clone()
    opt.step()
    assert not torch.equal(gen.weight, w0)
    after = clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- construction


def test_same_seed_same_weights() -> None:
    a, b, c = _tiny(seed=7).state_dict(), _tiny(seed=7).state_dict(), _tiny(seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_create_keeps_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _tiny(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_loads_local_state_dict(tmp_path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(_tiny(seed=3).model.state_dict(), path)
    loaded = FrozenCLIP.create(NAME, model_config=TINY_CLIP_CONFIG, seed=0, checkpoint=str(path)).state_dict()
    want = _tiny(seed=3).state_dict()
    assert all(torch.equal(loaded[k], want[k]) for k in want)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        FrozenCLIP.create(NAME, model_config=TINY_CLIP_CONFIG, checkpoint=str(tmp_path / "missing.pt"))


def test_missing_local_weights_file_names_it(tmp_path) -> None:
    missing = tmp_path / "ViT-B-32-openai.pt"
    with pytest.raises(FileNotFoundError, match="ViT-B-32-openai.pt") as err:
        FrozenCLIP.create("ViT-B-32", pretrained=str(missing))
    assert "Place" in str(err.value)


def test_register_model_config_idempotent_and_safe() -> None:
    register_model_config(NAME, TINY_CLIP_CONFIG)
    register_model_config(NAME, dict(TINY_CLIP_CONFIG))
    assert open_clip.get_model_config(NAME) == TINY_CLIP_CONFIG
    with pytest.raises(ValueError, match="built-in"):
        register_model_config("ViT-B-32", TINY_CLIP_CONFIG)
