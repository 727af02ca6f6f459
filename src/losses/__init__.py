"""Loss terms (one file per family) and their weighted sum."""

from src.losses.base import LossSum, LossTerm, StepContext, TextFeatures
from src.losses.clip import CLIPNCELoss, DirectionalCLIPLoss, GlobalCLIPLoss, clip_nce
from src.losses.regularizers import (
    ConvEmbedder,
    IdentityLoss,
    LatentL2Loss,
    ManifoldLoss,
    PerceptualLoss,
    PixelL1Loss,
)

__all__ = [
    "CLIPNCELoss",
    "ConvEmbedder",
    "DirectionalCLIPLoss",
    "GlobalCLIPLoss",
    "IdentityLoss",
    "ManifoldLoss",
    "LatentL2Loss",
    "LossSum",
    "LossTerm",
    "PerceptualLoss",
    "PixelL1Loss",
    "StepContext",
    "TextFeatures",
    "clip_nce",
]
