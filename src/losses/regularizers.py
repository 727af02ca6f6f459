"""Terms that keep the edit close to the source: latent L2, pixel L1, identity (ArcFace-style) and perceptual."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.losses.base import LossTerm, StepContext, normalize
from src.models.frozen import freeze
from src.models.perceptual import lpips_model
from src.models.weights import load_state_dict


class LatentL2Loss(LossTerm):
    """MSE between edited and source latents (official weight 0.8)."""

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return F.mse_loss(ctx.w_hat, ctx.w)


class PixelL1Loss(LossTerm):
    """Mean |x_hat - x|^power over pixels (not in the paper): L1 (power 1) prefers a few strongly changed pixels to
    a diffuse tint, and power < 1 more so, so the edit keeps what the prompt does not name. It needs no mask: the
    same rule for every prompt. ``eps`` keeps the gradient finite at 0 when power < 1."""

    requires = frozenset({"images"})

    def __init__(self, weight: float = 1.0, power: float = 1.0, eps: float = 1e-2):
        super().__init__(weight)
        if not 0 < power <= 2:
            raise ValueError(f"PixelL1Loss.power must be in (0, 2], got {power}")
        self.power, self.eps = float(power), float(eps)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        d = (ctx.need("x_hat") - ctx.need("x")).abs()
        if self.power == 1.0:
            return d.mean()
        return ((d + self.eps).pow(self.power) - self.eps**self.power).mean()


class IdentityLoss(LossTerm):
    """1 - cos of face-recognition features of x and x_hat (official weight 0.2 with IR-SE50).

    The backbone is injected (any frozen module mapping (B, 3, out, out) in [-1, 1] to (B, F)); the official
    crop is kept: resize to ``pool_size``, crop ``crop`` = (top, bottom, left, right) there, resize to ``out_size``.
    """

    requires = frozenset({"images"})

    def __init__(
        self,
        backbone: nn.Module,
        weight: float = 0.2,
        pool_size: int = 256,
        crop: Sequence[int] = (35, 223, 32, 220),
        out_size: int = 112,
    ):
        super().__init__(weight)
        self.backbone = freeze(backbone)
        self.pool_size, self.crop, self.out_size = pool_size, tuple(crop), out_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, self.pool_size)
        top, bottom, left, right = self.crop
        x = F.adaptive_avg_pool2d(x[:, :, top:bottom, left:right], self.out_size)
        return normalize(self.backbone(x).flatten(1))

    def source_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)  # (B, F): fixed per latent, so the source cache can serve it

    def forward(self, ctx: StepContext) -> torch.Tensor:
        src = ctx.source_side(self)  # (B, F), no grad: cached per latent or embedded from x
        return (1 - (self.embed(ctx.need("x_hat")) * src).sum(-1)).mean()


class ManifoldLoss(LossTerm):
    """Mean |x_hat - G(E(x_hat))|: how far the edit lies from what an encoder trained on real images (the e4e
    analogue) and the generator make of it (not in the paper). A real part change survives the round trip; a
    shortcut the encoder has never seen (a streak by the ear) does not, so this prices off-manifold edits. Both
    nets are frozen; the gradient flows through them to x_hat."""

    requires = frozenset({"images"})

    def __init__(self, encoder: nn.Module, generator: nn.Module, weight: float = 1.0):
        super().__init__(weight)
        self.encoder, self.generator = freeze(encoder), freeze(generator)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        x_hat = ctx.need("x_hat")  # (B, 3, H, W)
        w = self.encoder(x_hat)  # (B, L, D)
        back = self.generator.synthesis(w)  # (B, 3, H, W)
        return (x_hat - back).abs().mean()


class ConvEmbedder(nn.Module):
    """A small random-weight conv embedder: a stand-in identity backbone for tests and the tiny domain."""

    def __init__(self, dim: int = 64, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(512, dim),
        )
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# VGG-19 `features` index after relu5_2 (torchvision layout), the layer the official AFHQ script uses.
VGG19_RELU5_2 = 32


class PerceptualLoss(LossTerm):
    """L1 between VGG-19 relu5_2 activations of x and x_hat (official 0.02 on AFHQ), or LPIPS.

    ``net="vgg19"`` loads torchvision's ``vgg19`` state dict from ``weights_path``; ``net="lpips"`` uses the
    ``lpips`` package (its linear layers ship with it) with a local backbone file. ``weights_path=None`` builds
    random weights, for tests only (a warning says so).
    """

    requires = frozenset({"images"})

    def __init__(
        self,
        weight: float = 0.02,
        net: str = "vgg19",
        weights_path: str | None = None,
        input_norm: str = "torchvision",
    ):
        super().__init__(weight)
        if net not in ("vgg19", "lpips"):
            raise ValueError(f"perceptual net must be 'vgg19' or 'lpips', got {net!r}")
        if weights_path is None:
            warnings.warn(
                f"PerceptualLoss({net}) has no weights_path: using random weights (tests only)", stacklevel=2
            )
        self.net_name = net
        self.input_norm = input_norm
        if net == "vgg19":
            from torchvision.models import vgg19

            vgg = vgg19(weights=None)
            if weights_path is not None:
                vgg.load_state_dict(load_state_dict(weights_path, what="VGG-19 (torchvision vgg19)"))
            self.net = freeze(vgg.features[:VGG19_RELU5_2])
            mean = (0.485, 0.456, 0.406) if input_norm == "torchvision" else (103.939, 116.779, 123.68)
            std = (0.229, 0.224, 0.225) if input_norm == "torchvision" else (1.0, 1.0, 1.0)
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        elif weights_path is not None:  # torchvision's vgg16 file mapped onto lpips' slices, strictly
            self.net = freeze(lpips_model("vgg", backbone_file=weights_path))
        else:
            import lpips

            self.net = freeze(lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + 1) / 2
        if self.input_norm == "caffe":  # BGR, x255, mean-subtracted (the official vgg19_conv.pth)
            x = x.flip(1) * 255
        return self.net((x - self.mean) / self.std)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        x, x_hat = ctx.need("x"), ctx.need("x_hat")
        if self.net_name == "lpips":
            return self.net(x_hat, x).mean()
        with torch.no_grad():
            target = self.features(x)
        return F.l1_loss(self.features(x_hat), target)
