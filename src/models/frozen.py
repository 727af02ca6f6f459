"""Freezing helper: frozen networks never train, never get gradients and stay in eval mode."""

from __future__ import annotations

from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad_(False) + eval(), and mark the module so the training module keeps it in eval mode."""
    module.requires_grad_(False)
    module.eval()
    module._cfclip_frozen = True  # read by CFCLIPModule.train()
    return module


def is_frozen(module: nn.Module) -> bool:
    return getattr(module, "_cfclip_frozen", False)
