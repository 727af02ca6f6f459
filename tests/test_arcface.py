"""Identity backbones and generator checkpoints: IR-SE50 key layout against a list written from TreB1eN's
model_irse.py rules, strict loading round trips, facenet-pytorch InceptionResnetV1 from a local file, and the
clear errors for missing, truncated or mismatched files.
"""

from __future__ import annotations

import pytest
import torch

from src.losses.regularizers import IdentityLoss
from src.models.arcface import Backbone, facenet_backbone, load_arcface
from src.models.weights import WeightsError


def expected_ir_se50_layout() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of ``Backbone(112, 50, 'ir_se', affine=True).state_dict()``, from the reference's rules."""
    keys: list[tuple[str, tuple[int, ...]]] = []

    def bn(prefix: str, c: int) -> None:
        keys.extend(
            [
                (f"{prefix}.weight", (c,)),
                (f"{prefix}.bias", (c,)),
                (f"{prefix}.running_mean", (c,)),
                (f"{prefix}.running_var", (c,)),
                (f"{prefix}.num_batches_tracked", ()),
            ]
        )

    keys.append(("input_layer.0.weight", (64, 3, 3, 3)))
    bn("input_layer.1", 64)
    keys.append(("input_layer.2.weight", (64,)))  # PReLU
    # get_blocks(50): units (in, depth, stride); 3 + 4 + 14 + 3 = 24
    units = []
    for cin, depth, n in [(64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)]:
        units += [(cin, depth)] + [(depth, depth)] * (n - 1)
    assert len(units) == 24
    for i, (cin, depth) in enumerate(units):
        p = f"body.{i}"
        if cin != depth:  # conv + BN shortcut; else MaxPool2d(1, stride) has no tensors
            keys.append((f"{p}.shortcut_layer.0.weight", (depth, cin, 1, 1)))
            bn(f"{p}.shortcut_layer.1", depth)
        bn(f"{p}.res_layer.0", cin)
        keys.append((f"{p}.res_layer.1.weight", (depth, cin, 3, 3)))
        keys.append((f"{p}.res_layer.2.weight", (depth,)))
        keys.append((f"{p}.res_layer.3.weight", (depth, depth, 3, 3)))
        bn(f"{p}.res_layer.4", depth)
        keys.append((f"{p}.res_layer.5.fc1.weight", (depth // 16, depth, 1, 1)))
        keys.append((f"{p}.res_layer.5.fc2.weight", (depth, depth // 16, 1, 1)))
    bn("output_layer.0", 512)
    keys.extend([("output_layer.3.weight", (512, 512 * 7 * 7)), ("output_layer.3.bias", (512,))])
    bn("output_layer.4", 512)
    return keys


@pytest.fixture(scope="module")
def ir_se50() -> Backbone:
    torch.manual_seed(0)
    return Backbone(112, 50, "ir_se", 0.6, True).eval()


@pytest.fixture(scope="module")
def ir_se50_file(ir_se50, tmp_path_factory):
    """A ``model_ir_se50.pth``-layout file with random weights and non-trivial BN statistics."""
    torch.manual_seed(1)
    state = {
        k: v + 0.05 * torch.rand_like(v) if "running" in k else v for k, v in ir_se50.state_dict().items()
    }
    path = tmp_path_factory.mktemp("weights") / "model_ir_se50.pth"
    torch.save(state, path)
    return path, state


def test_ir_se50_key_layout(ir_se50):
    expected = expected_ir_se50_layout()
    actual = [(k, tuple(v.shape)) for k, v in ir_se50.state_dict().items()]
    assert sorted(actual) == sorted(expected)
    # 7 input tensors + 24 units x 15 + 3 conv shortcuts x 6 + 12 output = 397 (of which 235 parameters)
    assert len(actual) == 397
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert len([k for k, _ in expected if not k.endswith(stats)]) == len(list(ir_se50.parameters())) == 235
    total = sum(int(torch.tensor(s).prod()) for k, s in expected if not k.endswith(stats))
    assert sum(p.numel() for p in ir_se50.parameters()) == total == 43_797_696  # the ~43.8M of IR-SE50


def test_arcface_round_trip_and_identity_loss(ir_se50_file):
    path, state = ir_se50_file
    model = load_arcface(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    emb = IdentityLoss(backbone=model).embed(x)  # pooled to 256, cropped, pooled to 112
    assert emb.shape == (1, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))
    with pytest.raises(ValueError, match="112"):
        model(torch.zeros(1, 3, 128, 128))


def test_arcface_missing_truncated_and_wrong_files(tmp_path, ir_se50_file, monkeypatch):
    monkeypatch.delenv("CFCLIP_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(WeightsError) as err:
        load_arcface(tmp_path / "nowhere" / "model_ir_se50.pth", weights_dir=tmp_path / "w")
    msg = str(err.value)
    assert "model_ir_se50.pth" in msg and str(tmp_path / "w") in msg and "IR-SE50" in msg

    cut = tmp_path / "model_ir_se50.pth"
    cut.write_bytes(ir_se50_file[0].read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="truncated"):
        load_arcface(cut)

    wrong = tmp_path / "wrong.pth"
    state = dict(ir_se50_file[1])
    state.pop("output_layer.3.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, wrong)
    with pytest.raises(WeightsError, match=r"1 missing keys \['output_layer.3.bias'\].*extra.weight"):
        load_arcface(wrong)


def test_facenet_from_local_vggface2_file(tmp_path):
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631)  # the vggface2 file has logits
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(net.state_dict(), path)
    model = facenet_backbone(weights_dir=tmp_path)
    assert not any(p.requires_grad for p in model.parameters())
    out = model(torch.rand(1, 3, 160, 160) * 2 - 1)
    assert out.shape == (1, 512)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1))


def test_generator_checkpoint_for_another_size_is_refused(tmp_path):
    from src.models.factory import create_generator
    from src.models.stylegan2 import Generator

    small = dict(style_dim=32, n_mlp=2, channel_max=16)
    path = tmp_path / "g64.pt"
    torch.save({"g_ema": Generator(64, **small).state_dict(), "latent_avg": torch.zeros(32)}, path)
    with pytest.raises(WeightsError) as err:
        create_generator(128, **small, checkpoint=str(path))  # a "512 file into a 1024 config" in miniature
    msg = str(err.value)
    assert "g64.pt" in msg and "size=128" in msg


def test_generator_mismatch_names_the_checkpoint_size(tmp_path):
    from src.models.factory import create_generator
    from src.models.legacy import describe_generator_state
    from src.models.stylegan2 import Generator

    state = Generator(64, style_dim=32, n_mlp=2, channel_max=16).state_dict()
    assert describe_generator_state(state).startswith("size=64, style_dim=32, n_mlp=2")
    torch.save({"g_ema": state}, tmp_path / "g64.pt")
    with pytest.raises(WeightsError, match=r"size=128.*size=64|size=64.*size=128"):
        create_generator(128, style_dim=32, n_mlp=2, channel_max=16, checkpoint=str(tmp_path / "g64.pt"))
