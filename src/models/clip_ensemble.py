"""Several frozen CLIPs guiding one run, and how a run's ``domain.clip`` (one, a list, or with
``domain.extra_clips``) becomes its guide. Light: no open_clip import (the members are built elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from src.models.frozen import freeze


class CLIPEnsemble(nn.Module):
    """Several frozen CLIPs guiding one run (StyleGAN-NADA sums several CLIP models): each CLIP loss term is
    ``sum_i weights[i] * term(CLIP i)``, every CLIP with its own text features, input size and normalisation.

    ``weights`` default to 1/N each (the mean), so the CLIP terms keep the scale the recipe's other terms were tuned
    against with one CLIP; give weights (e.g. [1, 1]) for a plain or weighted sum. The first member is the primary
    CLIP: the TEM reads its text embedding, and evaluation and editing use it.
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("a CLIP ensemble needs at least one CLIP (domain.clip is an empty list)")
        weights = [1.0 / len(members)] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members):
            raise ValueError(f"CLIP ensemble: {len(members)} CLIPs but {len(weights)} weights")
        self.members = nn.ModuleList(members)
        self.weights: tuple[float, ...] = tuple(weights)
        freeze(self)

    def __len__(self) -> int:
        return len(self.members)

    def train(self, mode: bool = True) -> CLIPEnsemble:
        return super().train(False)

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def as_ensemble(clip: nn.Module | Sequence[nn.Module]) -> CLIPEnsemble:
    """A run's ``domain.clip`` as an ensemble: one CLIP (weight 1), a list of CLIPs (the mean) or an ensemble."""
    if isinstance(clip, CLIPEnsemble):
        return clip
    if isinstance(clip, nn.Module) and not isinstance(clip, nn.ModuleList):
        return CLIPEnsemble([clip], [1.0])
    return CLIPEnsemble(list(clip))


def guide_from_config(
    clip: Any, extra: Sequence[nn.Module] | None = None, weights: Sequence[float] | None = None
) -> nn.Module:
    """A run's guide from its instantiated ``domain.clip`` (one CLIP, a list of CLIPs or an ensemble) and the
    optional ``domain.extra_clips`` (appended, so a config group can add CLIPs to a domain's own) and
    ``domain.clip_weights`` (null: the mean): one CLIP stays a plain CLIP."""
    if isinstance(clip, CLIPEnsemble):
        if weights is None and not extra:
            return clip
        members = list(clip.members)
    else:
        members = [clip] if isinstance(clip, nn.Module) else list(clip)
    members += list(extra or [])
    if len(members) == 1 and weights is None:
        return members[0]
    return CLIPEnsemble(members, weights)


def primary_clip(clip: nn.Module | Sequence[nn.Module]) -> nn.Module:
    """The CLIP whose text embedding the TEM reads (the first of an ensemble or list)."""
    return as_ensemble(clip).members[0]
