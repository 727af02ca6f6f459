"""The registry of checkpoints users place by hand: each file's name, format, origin and (where known) size and hash.

``src.models.weights`` looks files up and loads them; this module only says what each known file is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownWeights:
    """One checkpoint users place by hand: what it is, its format, where it comes from, how to check it."""

    name: str
    filename: str
    format: str
    description: str
    source: str
    size: int | None = None  # bytes, where known
    sha256: str | None = None  # full digest or a leading prefix (torchvision names carry 8 hex digits)


_E4E = (
    "the StyleCLIP README (mapper section: e4e-inverted CelebA-HQ latents), or invert your own images with "
    "encoder4editing"
)
REGISTRY: dict[str, KnownWeights] = {
    w.name: w
    for w in [
        KnownWeights(
            "stylegan2-ffhq",
            "stylegan2-ffhq-config-f.pt",
            "rosinality StyleGAN2 checkpoint (dict with g_ema, latent_avg)",
            "StyleGAN2 FFHQ 1024x1024 generator (config-f)",
            "the rosinality/stylegan2-pytorch README (NVIDIA's FFHQ config-f, converted), the file StyleCLIP "
            "and e4e link to",
        ),
        KnownWeights(
            "afhqdog",
            "afhqdog.pkl",
            "NVIDIA StyleGAN2-ADA network pickle (convert with `python -m src.convert afhqdog.pkl afhqdog.pt`)",
            "StyleGAN2-ADA AFHQ dog 512x512 generator",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl",
        ),
        KnownWeights(
            "afhqcat",
            "afhqcat.pkl",
            "NVIDIA StyleGAN2-ADA network pickle (convert with `python -m src.convert afhqcat.pkl afhqcat.pt`)",
            "StyleGAN2-ADA AFHQ cat 512x512 generator",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqcat.pkl",
        ),
        KnownWeights(
            "clip-vit-b-32",
            "ViT-B-32.pt",
            "OpenAI CLIP TorchScript archive",
            "CLIP ViT-B/32 (OpenAI)",
            "https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        ),
        KnownWeights(
            "ir_se50",
            "model_ir_se50.pth",
            "state dict of the IR-SE50 ArcFace Backbone (src.models.arcface)",
            "ArcFace IR-SE50 face-recognition net for the identity loss",
            "the pixel2style2pixel / encoder4editing / StyleCLIP READMEs ('IR-SE50 Model', pretrained by "
            "TreB1eN/InsightFace_Pytorch)",
        ),
        KnownWeights(
            "facenet-vggface2",
            "20180402-114759-vggface2.pt",
            "facenet-pytorch InceptionResnetV1 state dict",
            "FaceNet InceptionResnetV1 trained on VGGFace2 (alternative identity backbone)",
            "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        ),
        KnownWeights(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "torchvision vgg19 state dict",
            "VGG-19 (ImageNet) for the perceptual loss",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            sha256="dcbb9e9d",
        ),
        KnownWeights(
            "vgg16",
            "vgg16-397923af.pth",
            "torchvision vgg16 state dict",
            "VGG-16 (ImageNet), the LPIPS backbone",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256="397923af",
        ),
        KnownWeights(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "torchvision alexnet state dict",
            "AlexNet (ImageNet), the small LPIPS backbone (inversion default)",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256="7be5be79",
        ),
        KnownWeights(
            "fid-inception",
            "weights-inception-2015-12-05-6726825d.pth",
            "torch-fidelity Inception v3 state dict",
            "FID/KID Inception v3 (torchmetrics / torch-fidelity's inception-v3-compat)",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            sha256="6726825d",
        ),
        KnownWeights(
            "clip-vit-l-14",
            "ViT-L-14.pt",
            "OpenAI CLIP TorchScript/state-dict file",
            "CLIP ViT-L/14, the default evaluation CLIP of real domains (kept apart from the training CLIP)",
            "https://openaipublic.azureedge.net/clip/models/"
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
            sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        ),
        KnownWeights(
            "e4e-train-faces",
            "train_faces.pt",
            "tensor [N, 18, 512] of W+ latents",
            "e4e-inverted CelebA-HQ training latents",
            _E4E,
        ),
        KnownWeights(
            "e4e-test-faces",
            "test_faces.pt",
            "tensor [N, 18, 512] of W+ latents",
            "e4e-inverted CelebA-HQ test latents",
            _E4E,
        ),
    ]
}
_BY_FILENAME = {w.filename: w for w in REGISTRY.values()}


def known_weights(name_or_file: str) -> KnownWeights | None:
    """The registry entry for a registry name or a known file name (any directory part ignored)."""
    return REGISTRY.get(name_or_file) or _BY_FILENAME.get(Path(name_or_file).name)
