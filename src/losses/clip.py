"""CLIP-guided loss terms: global (StyleCLIP), directional (StyleGAN-NADA) and CLIP-NCE (CF-CLIP, Eq. 2-4), and
the CLIP features of a step they read (``add_clip_features``: one CLIP, or each CLIP of an ensemble)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from src.losses.base import LossTerm, StepContext, normalize


class GlobalCLIPLoss(LossTerm):
    """1 - cos(E_I(x_hat), E_T(target)); with ``use_templates`` the target is the template mean.

    ``temperature`` > 0 (not in StyleCLIP): instead a cross-entropy of the edit's cosines to the target against the
    source text and each negative of the prompt (template means) at that temperature, so reaching the target pays
    only as long as a negative (the target colour on another part, "blue eyebrows") or the source still competes.
    """

    requires = frozenset({"images", "edit_features"})

    def __init__(self, weight: float = 1.0, use_templates: bool = False, temperature: float = 0.0):
        super().__init__(weight)
        if temperature < 0:
            raise ValueError(f"GlobalCLIPLoss.temperature must be >= 0 (0: plain cosine), got {temperature}")
        self.use_templates = use_templates
        self.temperature = float(temperature)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        t = ctx.text
        text = normalize(t.target_templates.mean(0)) if self.use_templates else t.target
        edit = ctx.need("edit_features")  # (B, E)
        if not self.temperature:
            return (1 - edit @ text).mean()
        T = t.source_templates.shape[0]
        rivals = [t.source_templates.mean(0, keepdim=True)]  # (1, E)
        if t.negative_templates is not None and len(t.negative_templates):
            rivals.append(t.negative_templates.view(-1, T, edit.shape[-1]).mean(1))  # (N, E)
        texts = normalize(torch.cat([text[None], *rivals]))  # (1 + 1 + N, E), the target first
        logits = edit @ texts.T / self.temperature  # (B, 1 + 1 + N)
        return (torch.logsumexp(logits, -1) - logits[:, 0]).mean()


class DirectionalCLIPLoss(LossTerm):
    """1 - cos(E_I(x_hat) - E_I(x), E_T(target) - E_T(source)): the edit must move along the text direction.

    ``use_views`` measures the image direction on the augmented views instead of the plain edited image.
    """

    requires = frozenset({"images", "edit_features"})

    def __init__(self, weight: float = 1.0, use_templates: bool = True, use_views: bool = False):
        super().__init__(weight)
        self.use_templates = use_templates
        self.use_views = use_views
        if use_views:
            self.requires = frozenset({"images", "view_features"})

    def forward(self, ctx: StepContext) -> torch.Tensor:
        t = ctx.text
        if self.use_templates:
            text_dir = normalize(t.target_templates.mean(0) - t.source_templates.mean(0))
        else:
            text_dir = normalize(t.target - t.source)
        if self.use_views:
            img_dir = normalize(ctx.need("view_features") - ctx.need("src_view_features"))  # (B, K, E)
        else:
            img_dir = normalize(ctx.need("edit_features") - ctx.need("src_features"))  # (B, E)
        return (1 - img_dir @ text_dir).mean()


class CLIPNCELoss(LossTerm):
    """CF-CLIP's contrastive loss on K augmented views (tau 0.1, official weight 0.3).

    query q_k = n(E_I(aug_k(x_hat)) - E_I(x)); positives p1 = n(mean_t T(target) - mean_t T(source)) and
    p2 = n(mean_t T(target) - E_I(x)); negatives n_t = n(T_t(source) - E_I(x)) for every template t, plus
    n(T_t(negative) - E_I(x)) for every negative text of the prompt (``prompt.negatives``; not in the paper).
    ``form="official"``: one cross-entropy per positive over [positive, negatives] (what the authors' code
    does, confirmed by them). ``form="paper"``: both positives share one denominator, as the paper's equation.
    ``negatives_from="first_image"`` reproduces the official bug of using only the batch's first source image.
    ``saturate_at`` (not in the paper; 0: off): a view whose positive already holds this probability among
    [positive, negatives] earns nothing more, so the term stops paying once the edit reads as the target instead of
    rewarding ever further moves along the text direction (a super-stimulus such as a streak the CLIP over-reads).
    """

    requires = frozenset({"images", "view_features"})

    def __init__(
        self,
        weight: float = 0.3,
        temperature: float = 0.1,
        form: str = "official",
        negatives_from: str = "each_image",
        saturate_at: float = 0.0,
    ):
        super().__init__(weight)
        if not 0.0 <= saturate_at < 1.0:
            raise ValueError(f"clip_nce saturate_at is a probability in [0, 1), got {saturate_at}")
        self.saturate_at = saturate_at
        if form not in ("official", "paper"):
            raise ValueError(f"clip_nce form must be 'official' or 'paper', got {form!r}")
        if negatives_from not in ("each_image", "first_image"):
            raise ValueError(f"negatives_from must be 'each_image' or 'first_image', got {negatives_from!r}")
        self.temperature = temperature
        self.form = form
        self.negatives_from = negatives_from

    def forward(self, ctx: StepContext) -> torch.Tensor:
        t = ctx.text
        src = ctx.need("src_features")  # (B, E)
        query = normalize(ctx.need("view_features") - ctx.need("src_view_features"))  # (B, K, E)
        tgt_mean = t.target_templates.mean(0)  # (E,), not re-normalised (as the official code)
        pos1 = normalize(tgt_mean - t.source_templates.mean(0)).expand_as(src)  # (B, E)
        pos2 = normalize(tgt_mean - src)  # (B, E)
        neg_src = src[:1].expand_as(src) if self.negatives_from == "first_image" else src
        negs = normalize(t.source_templates[None] - neg_src[:, None])  # (B, T, E)
        if t.negative_templates is not None and len(t.negative_templates):
            extra = normalize(t.negative_templates[None] - neg_src[:, None])  # (B, N*T, E)
            negs = torch.cat([negs, extra], dim=1)
        floor = -math.log(self.saturate_at) if self.saturate_at > 0 else None
        return clip_nce(query, torch.stack([pos1, pos2], dim=1), negs, self.temperature, self.form, floor)


def clip_nce(
    query: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    form: str = "official",
    floor: float | None = None,
) -> torch.Tensor:
    """InfoNCE of queries (B, K, E) against positives (B, P, E) and negatives (B, N, E), all unit vectors.
    ``floor``: each (query, positive) term is clamped from below (a saturating loss: no gradient beyond it)."""
    pos = torch.einsum("bke,bpe->bkp", query, positives) / temperature  # (B, K, P)
    neg = torch.einsum("bke,bne->bkn", query, negatives) / temperature  # (B, K, N)
    if form == "official":
        # one row per (query, positive): logits [pos_p, negatives], label 0
        logits = torch.cat([pos.unsqueeze(-1), neg.unsqueeze(2).expand(-1, -1, pos.shape[-1], -1)], dim=-1)
        terms = torch.logsumexp(logits, dim=-1) - logits[..., 0]  # (B, K, P): cross-entropy, label 0
    else:  # paper: -log(exp(pos_p) / (sum_p exp(pos_p) + sum_n exp(neg_n))), averaged over p
        terms = torch.logsumexp(torch.cat([pos, neg], dim=-1), dim=-1, keepdim=True) - pos  # (B, K, P)
    return (terms if floor is None else terms.clamp_min(floor)).mean()


def add_clip_features(
    ctx: StepContext,
    clip: nn.Module,
    augment: nn.Module,
    requires: frozenset[str],
    augment_source: bool = False,
    extra_clips: Sequence[nn.Module] = (),
) -> StepContext:
    """Fill ctx's CLIP features of x / x_hat / the K views of x_hat that ``requires`` names, each once:
    one batched augmentation and one CLIP call for the edit and all its views (also used by the probe). The
    source's features already in ctx (from the source cache) are kept, unless the source is augmented.
    ``extra_clips``: the further CLIPs of an ensemble; each fills its own context of ``ctx.guides`` (same order)
    from the same views, through its own preprocessing."""
    need_edit, need_views = "edit_features" in requires, "view_features" in requires
    if not (need_edit or need_views):
        return ctx
    views = src_views = None
    if need_views:
        if augment_source:
            views, src_views = augment(ctx.x_hat, ctx.x)  # (B, K, 3, H, W) each, same transforms
        else:
            views = augment(ctx.x_hat)
    for c, sub in [(clip, ctx), *zip(extra_clips, ctx.guides, strict=True)]:
        encode_step(sub, c, ctx.x_hat, lambda: ctx.x, views, src_views, need_edit)
    return ctx


def encode_step(
    ctx: StepContext,
    clip: nn.Module,
    x_hat: torch.Tensor,
    source: Callable[[], torch.Tensor],
    views: torch.Tensor | None,
    src_views: torch.Tensor | None,
    need_edit: bool,
) -> None:
    """One CLIP's features of a step into ctx: the source (no grad; kept when cached and not augmented), the edit
    x_hat (B, 3, H, W) and its views (B, K, 3, H, W), joined at CLIP's input size in one call."""
    B = x_hat.shape[0]
    src_feats = ctx.src_features  # (B, E) when the source cache served it
    if src_feats is None or src_views is not None:
        with torch.no_grad():
            src_in = source() if src_views is None else torch.cat([source(), src_views.flatten(0, 1)])
            src_feats = clip.encode_image(src_in)
            ctx.src_features = src_feats[:B]  # (B, E)
    inputs = ([x_hat] if need_edit else []) + ([views.flatten(0, 1)] if views is not None else [])
    feats = clip.encode_image(inputs)  # one CLIP call, joined at CLIP's input size: (B [+ B*K], E)
    if need_edit:
        ctx.edit_features, feats = feats[:B], feats[B:]
    if views is not None:
        K = views.shape[1]
        ctx.view_features = feats.view(B, K, -1)
        ctx.src_view_features = (
            src_feats[B:].view(B, K, -1)
            if src_views is not None
            else ctx.src_features[:, None].expand(-1, K, -1)
        )
