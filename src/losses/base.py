"""One signature for every loss term, and the sum that returns ``(total, parts)``.

The training module computes the expensive quantities of a step once (images, CLIP features of the source,
the edit and its K augmented views, cached text features) into a :class:`StepContext`; every term reads what
it needs from it. Terms declare what they need in ``requires`` so nothing unused is computed. A term whose
source side is a fixed function of the source image (the identity net's features of x) says so with
``source_features``: the module can then serve it per latent from a cache (src/data/source_cache.py), and
the source image is rendered only when some term reads ``ctx.x`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# Names of the lazily computed StepContext fields a term may require.
REQUIREMENTS = frozenset({"images", "edit_features", "view_features"})
CLIP_REQUIREMENTS = frozenset({"edit_features", "view_features"})  # those CLIP computes


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
    """What one training step computed, shared by all loss terms. Shapes: B batch, K views, E CLIP dim.

    ``x`` is the source image whenever a term reads it: a step served by the source cache leaves it to
    ``render_source``, called (once) on the first read of ``ctx.x``, so only terms that need the image pay for it.
    """

    w: torch.Tensor  # (B, L, D) source latents
    w_hat: torch.Tensor  # (B, L, D) edited latents
    text: TextFeatures
    x: torch.Tensor | None = None  # (B, 3, H, W) source images in [-1, 1] (no grad)
    x_hat: torch.Tensor | None = None  # (B, 3, H, W) edited images
    src_features: torch.Tensor | None = None  # (B, E) normalised CLIP features of x (no grad)
    edit_features: torch.Tensor | None = None  # (B, E) of x_hat
    view_features: torch.Tensor | None = None  # (B, K, E) of the K augmented views of x_hat
    src_view_features: torch.Tensor | None = None  # (B, K, E) of x under the same views, or src_features
    # per-term source-side features {term name: (B, F)} (no grad): LossTerm.source_features of x, or cached
    source: dict[str, torch.Tensor] = field(default_factory=dict)
    # () -> x (B, 3, H, W), no grad: renders the source image when a term first reads ctx.x (cached steps)
    render_source: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    # a CLIP ensemble (src.models.clip_ensemble.CLIPEnsemble): the step as each further CLIP sees it (its text and features;
    # CLIP terms only) and every CLIP's weight, this context's first; empty for one CLIP
    guides: list[StepContext] = field(default_factory=list)
    clip_weights: tuple[float, ...] = (1.0,)

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if name == "x" and value is None:
            render = object.__getattribute__(self, "render_source")
            if render is not None:  # the first read renders it; later reads get the same tensor
                value = render()
                object.__setattr__(self, "x", value)
                object.__setattr__(self, "render_source", None)
        return value

    def select(
        self, rows: torch.Tensor, text: TextFeatures, guide_texts: list[TextFeatures] | None = None
    ) -> StepContext:
        """The samples ``rows`` (index tensor) of this step with another prompt's text (multi-prompt batches);
        ``guide_texts``: that prompt's text as each further CLIP of an ensemble encodes it."""
        state = vars(self)  # the stored fields: selecting does not render a lazy x
        texts = guide_texts if guide_texts is not None else [g.text for g in state["guides"]]
        guides = [g.select(rows, t) for g, t in zip(state["guides"], texts, strict=True)]

        def pick(v):
            if isinstance(v, torch.Tensor):
                return v.index_select(0, rows)
            if isinstance(v, dict):
                return {k: t.index_select(0, rows) for k, t in v.items()}
            return v

        picked = {k: pick(v) for k, v in state.items() if k not in ("render_source", "guides")}
        if state["x"] is None and state["render_source"] is not None:  # rendered once, shared by the groups
            picked["render_source"] = lambda: self.x.index_select(0, rows)
        return StepContext(**{**picked, "text": text, "guides": guides})

    def need(self, name: str) -> torch.Tensor:
        """A field, with a clear error when the module did not compute it (a term forgot ``requires``)."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"StepContext.{name} was not computed: add it to the term's `requires`")
        return value

    def source_side(self, term: LossTerm) -> torch.Tensor:
        """``term``'s source-side features (B, F): from the cache when the step had them, else computed from x
        once per step (no grad)."""
        value = self.source.get(term.name)
        if value is None:
            with torch.no_grad():
                value = term.source_features(self.need("x"))
            if value is None:
                raise RuntimeError(f"loss term {term.name!r} has no source_features to read")
            self.source[term.name] = value
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

    def source_features(self, x: torch.Tensor) -> torch.Tensor | None:
        """This term's features of the source image x (B, 3, H, W) -> (B, F), a fixed function of the latent
        (frozen nets, no randomness), read in ``forward`` through ``ctx.source_side(self)``; None: it has none.
        Terms that define them can be served from the per-latent source cache without rendering x."""
        return None


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
        """(total, parts). With a CLIP ensemble (``ctx.guides``) a CLIP term is ``sum_i clip_weights[i] * term(CLIP
        i)``; its value under each CLIP is logged too, as ``<term>@<i>`` (not summed again into the total)."""
        parts, per_clip = {}, {}
        for name, term in self.terms.items():
            if ctx.guides and uses_clip(term):
                values = [term(c) for c in (ctx, *ctx.guides)]
                parts[name] = sum(w * v for w, v in zip(ctx.clip_weights, values, strict=True))
                per_clip.update({f"{name}@{i}": v for i, v in enumerate(values)})
            else:
                parts[name] = term(ctx)
        total = sum(self.terms[name].weight * value for name, value in parts.items())
        return total, {**parts, **per_clip}


def uses_clip(term: LossTerm) -> bool:
    """Whether a term reads CLIP features (so an ensemble evaluates it under every CLIP)."""
    return bool(set(term.requires) & CLIP_REQUIREMENTS)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2 normalisation over the last axis."""
    return F.normalize(x, dim=-1)
