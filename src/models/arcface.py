"""Identity backbones for ``IdentityLoss``: our IR-SE50 ArcFace (key-compatible with ``model_ir_se50.pth``, the
file pSp / e4e / StyleCLIP / CF-CLIP use) and facenet-pytorch's InceptionResnetV1 (VGGFace2 weights).

Both load a local file strictly and come back frozen: (B, 3, H, W) images in [-1, 1] -> (B, 512) unit vectors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.models.frozen import freeze
from src.models.weights import WeightsError, find_weights, load_state_dict

# (in_channel, depth, units) per stage; the first unit of a stage has stride 2 (TreB1eN's get_blocks).
IR_STAGES: dict[int, Sequence[tuple[int, int, int]]] = {
    50: [(64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)],
    100: [(64, 64, 3), (64, 128, 13), (128, 256, 30), (256, 512, 3)],
    152: [(64, 64, 3), (64, 128, 8), (128, 256, 36), (256, 512, 3)],
}


class SEModule(nn.Module):
    """Squeeze-and-excitation: channel gates from global average pooling (1x1 convs ``fc1``/``fc2``, no bias)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))  # (B, C, 1, 1)
        return x * gate


class BottleneckIR(nn.Module):
    """Improved residual unit: BN-conv-PReLU-conv-BN(-SE) plus an identity or 1x1-conv shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = True):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)  # parameter-free subsampling
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        self.res_layer = nn.Sequential(*layers, *([SEModule(depth, 16)] if se else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class Backbone(nn.Module):
    """ArcFace IR / IR-SE backbone (TreB1eN's InsightFace_Pytorch layout): (B, 3, 112, 112) -> (B, 512), L2-normed.

    Keys: ``input_layer.{0,1,2}``, ``body.{i}.shortcut_layer/res_layer.*``, ``output_layer.{0,3,4}``.
    """

    def __init__(
        self,
        input_size: int = 112,
        num_layers: int = 50,
        mode: str = "ir_se",
        drop_ratio: float = 0.6,
        affine: bool = True,
    ):
        super().__init__()
        if input_size not in (112, 224) or num_layers not in IR_STAGES or mode not in ("ir", "ir_se"):
            raise ValueError(f"unsupported Backbone({input_size}, {num_layers}, {mode!r})")
        self.input_size = input_size
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        units = []
        for in_channel, depth, n in IR_STAGES[num_layers]:
            units.append(BottleneckIR(in_channel, depth, 2, se=mode == "ir_se"))
            units += [BottleneckIR(depth, depth, 1, se=mode == "ir_se") for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        side = input_size // 16  # four stride-2 stages
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * side * side, 512),
            nn.BatchNorm1d(512, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(
                f"ArcFace expects (B, 3, {self.input_size}, {self.input_size}) images in [-1, 1], got {tuple(x.shape)}"
            )
        x = self.output_layer(self.body(self.input_layer(x)))  # (B, 512)
        return F.normalize(x, dim=1)


def _strict_load(model: nn.Module, state: dict, path: os.PathLike, what: str) -> None:
    """load_state_dict(strict=True) with a WeightsError that lists the first missing / unexpected keys."""
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    for key in own:  # BatchNorm counters absent from files saved before PyTorch 0.4.1
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{what}: {path} does not fit ({len(missing)} missing keys {missing[:4]}, {len(unexpected)} "
            f"unexpected {unexpected[:4]}, {len(wrong)} shape mismatches {wrong[:3]}). Is it the right file?"
        )
    model.load_state_dict(state, strict=True)


def load_arcface(
    path: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None, **backbone_kwargs
) -> Backbone:
    """IR-SE50 from ``model_ir_se50.pth`` (found via ``find_weights``), loaded strictly, frozen, in eval mode."""
    file = find_weights("ir_se50", explicit=path, weights_dir=weights_dir)
    model = Backbone(**backbone_kwargs)
    _strict_load(model, load_state_dict(file, what="ArcFace IR-SE50"), file, "ArcFace IR-SE50")
    return freeze(model)


class FaceNetEmbedder(nn.Module):
    """facenet-pytorch InceptionResnetV1 (classify=False): (B, 3, 160, 160) in [-1, 1] -> (B, 512), L2-normed.

    facenet-pytorch's own input standardisation, (x*255 - 127.5) / 128, is [-1, 1] up to 0.4%; it is applied exactly.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FaceNet expects (B, 3, H, W) images in [-1, 1], got {tuple(x.shape)}")
        return self.net(x * (127.5 / 128.0))  # [-1, 1] -> facenet's (pixel - 127.5) / 128


def facenet_backbone(
    path: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
) -> FaceNetEmbedder:
    """InceptionResnetV1 built without downloads (pretrained=None), loaded from the local vggface2 file, frozen."""
    from facenet_pytorch import InceptionResnetV1

    file = find_weights("facenet-vggface2", explicit=path, weights_dir=weights_dir)
    net = InceptionResnetV1(pretrained=None, classify=False)
    state = load_state_dict(file, what="FaceNet InceptionResnetV1 (vggface2)")
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # classifier head, unused
    _strict_load(net, state, file, "FaceNet InceptionResnetV1 (vggface2)")
    return freeze(FaceNetEmbedder(net))
