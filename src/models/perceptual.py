"""LPIPS from local files: the ``lpips`` package's linear heads with a torchvision backbone file (never downloads).

It lives with the models (not the evaluation) because three layers use it: the perceptual loss
(``src.losses.regularizers``), the LPIPS metric (``src.evaluation.real``) and the inversion (``src.edit``);
here each imports it from below, so no import cycle between losses and evaluation.
"""

from __future__ import annotations

from torch import nn

from src.models.weights import WeightsError, find_weights, load_state_dict

LPIPS_BACKBONES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def lpips_model(
    net: str = "vgg", backbone_file: str | None = None, weights_dir: str | None = None
) -> nn.Module:
    """lpips.LPIPS with its shipped linear heads and the torchvision backbone from a local file (never downloads).

    torchvision's ``features.{i}`` keys map onto lpips' ``slice{k}.{i}``; every backbone weight must be present.
    """
    import lpips

    path = find_weights(backbone_file or LPIPS_BACKBONES[net], weights_dir=weights_dir)
    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    state = load_state_dict(path, what=f"LPIPS {net} backbone")
    mapped = {}
    for key in model.net.state_dict():
        source = "features." + key.split(".", 1)[1]  # slice3.12.weight -> features.12.weight
        if source not in state:
            raise WeightsError(
                f"LPIPS {net} backbone: {path} has no '{source}': is it torchvision's {net} file?"
            )
        mapped[key] = state[source]
    model.net.load_state_dict(mapped, strict=True)
    return model.eval().requires_grad_(False)
