"""One signature for every loss term, and the sum that returns ``(total, parts)``.

The training module computes the expensive quantities of a step once (images, CLIP features of the source,
the edit and its K augmented views, cached text features) into a :class:`StepContext`; every term reads what
it needs from it. Terms declare what they need in ``requires`` so nothing unused is computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Names of the lazily computed StepContext fields a term may require.
REQUIREMENTS = frozenset({"images", "edit_features", "view_features"})


@dataclass
class TextFeatures:
    """L2-normalised CLIP text features of one prompt, encoded once per run."""

    target: torch.Tensor  # (E,) target text as given ("elf ears")
    source: torch.Tensor  # (E,) source text ("face")
    target_templates: torch.Tensor  # (T, E) target text in every template ("a photo of a {}.")
    source_templates: torch.Tensor  # (T, E)
    negative_templates: torch.Tensor | None = None  # (N*T, E) the prompt's negatives in every template

    def to(self, device: torch.device | str) -> TextFeatures:
        return TextFeatures(*(None if t is None else t.to(device) for t in vars(self).values()))


@dataclass
class StepContext:
    """What one training step computed, shared by all loss terms. Shapes: B batch, K views, E CLIP dim."""

    w: torch.Tensor  # (B, L, D) source latents
    w_hat: torch.Tensor  # (B, L, D) edited latents
    text: TextFeatures
    x: torch.Tensor | None = None  # (B, 3, H, W) source images in [-1, 1] (no grad)
    x_hat: torch.Tensor | None = None  # (B, 3, H, W) edited images
    src_features: torch.Tensor | None = None  # (B, E) normalised CLIP features of x (no grad)
    edit_features: torch.Tensor | None = None  # (B, E) of x_hat
    view_features: torch.Tensor | None = None  # (B, K, E) of the K augmented views of x_hat
    src_view_features: torch.Tensor | None = None  # (B, K, E) of x under the same views, or src_features

    def select(self, rows: torch.Tensor, text: TextFeatures) -> StepContext:
        """The samples ``rows`` (index tensor) of this step with another prompt's text (multi-prompt batches)."""
        picked = {
            k: v.index_select(0, rows) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()
        }
        return StepContext(**{**picked, "text": text})

    def need(self, name: str) -> torch.Tensor:
        """A field, with a clear error when the module did not compute it (a term forgot ``requires``)."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"StepContext.{name} was not computed: add it to the term's `requires`")
        return value


class LossTerm(nn.Module):
    """Base of every loss term: ``weight * forward(ctx)`` enters the total; the unweighted value is logged."""

    requires: frozenset[str] = frozenset()

    def __init__(self, weight: float = 1.0, name: str | None = None):
        super().__init__()
        self.weight = float(weight)
        self.name = name or type(self).__name__

    def forward(self, ctx: StepContext) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LossSum(nn.Module):
    """Weighted sum of named terms. ``terms`` come from the loss config, ``regularizers`` from the domain.

    A term set to ``None`` (e.g. ``loss.terms.latent_l2=null``) or with weight 0 is dropped.
    """

    def __init__(
        self, terms: Mapping[str, LossTerm | None], regularizers: Mapping[str, LossTerm | None] | None = None
    ):
        super().__init__()
        merged = {**dict(terms), **dict(regularizers or {})}
        kept = {}
        for name, term in merged.items():
            if term is None:
                continue
            if not isinstance(term, LossTerm):
                raise TypeError(f"loss term {name!r} is a {type(term).__name__}, expected a LossTerm")
            if term.weight == 0:
                continue
            term.name = name
            kept[name] = term
        if not kept:
            raise ValueError(
                "the loss has no active term: check the `loss` and `domain.regularizers` configs"
            )
        self.terms = nn.ModuleDict(kept)

    @property
    def requires(self) -> frozenset[str]:
        out = frozenset().union(*(t.requires for t in self.terms.values()))
        unknown = out - REQUIREMENTS
        if unknown:
            raise ValueError(f"unknown loss requirements {sorted(unknown)}; known: {sorted(REQUIREMENTS)}")
        return out

    def forward(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: term(ctx) for name, term in self.terms.items()}
        total = sum(self.terms[name].weight * value for name, value in parts.items())
        return total, parts


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2 normalisation over the last axis."""
    return F.normalize(x, dim=-1)
