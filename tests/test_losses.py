"""Loss terms against hand-computed values on small vectors, and their invariances."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from src.losses import (
    CLIPNCELoss,
    DirectionalCLIPLoss,
    GlobalCLIPLoss,
    LatentL2Loss,
    LossSum,
    StepContext,
    TextFeatures,
    clip_nce,
)


def unit(*v: float) -> torch.Tensor:
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=-1)


def text_features(target, source, t_templates=None, s_templates=None) -> TextFeatures:
    return TextFeatures(
        target=target,
        source=source,
        target_templates=target[None] if t_templates is None else t_templates,
        source_templates=source[None] if s_templates is None else s_templates,
    )


def ctx_with(**kw) -> StepContext:
    w = kw.pop("w", torch.zeros(1, 2, 3))
    return StepContext(w=w, w_hat=kw.pop("w_hat", w.clone()), **kw)


def test_global_clip_is_one_minus_cosine():
    edit = unit(1, 1, 0)[None]
    text = text_features(unit(1, 0, 0), unit(0, 0, 1))
    loss = GlobalCLIPLoss()(ctx_with(text=text, edit_features=edit))
    assert loss.item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


def test_global_clip_with_temperature_is_a_cross_entropy_against_source_and_negatives():
    """Target (1,0,0,0), source (0,1,0,0), one negative in two templates: (0,0,1,0) and (0,0,0,1) (mean: their
    bisector). The hand-computed cross-entropy; ~0 once the edit reads as the target; large on the negative."""
    t2 = torch.stack([unit(1, 0, 0, 0), unit(1, 0, 0, 0)])
    s2 = torch.stack([unit(0, 1, 0, 0), unit(0, 1, 0, 0)])
    neg = torch.stack([unit(0, 0, 1, 0), unit(0, 0, 0, 1)])
    text = dataclasses.replace(text_features(t2[0], s2[0], t2, s2), negative_templates=neg)
    term = GlobalCLIPLoss(use_templates=True, temperature=0.1)
    edit = unit(1, 1, 1, 0)[None]
    cos = torch.tensor(
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(6)]
    )  # target, source, negative mean
    expected = torch.logsumexp(cos / 0.1, 0) - cos[0] / 0.1
    assert term(ctx_with(text=text, edit_features=edit)).item() == pytest.approx(expected.item(), rel=1e-5)
    assert term(ctx_with(text=text, edit_features=unit(1, 0, 0, 0)[None])).item() < 1e-3  # saturated
    assert term(ctx_with(text=text, edit_features=unit(0, 0, 1, 1)[None])).item() > 10
    with pytest.raises(ValueError, match="temperature"):
        GlobalCLIPLoss(temperature=-1)


def test_directional_zero_when_aligned_and_two_when_opposite():
    text = text_features(unit(1, 0, 0), unit(0, 1, 0))  # text direction (1, -1, 0)
    src = unit(0, 0, 1)[None]
    aligned = src + 0.3 * torch.tensor([[1.0, -1.0, 0.0]])
    opposite = src - 0.3 * torch.tensor([[1.0, -1.0, 0.0]])
    term = DirectionalCLIPLoss(use_templates=False)
    assert term(ctx_with(text=text, src_features=src, edit_features=aligned)).item() == pytest.approx(
        0, abs=1e-6
    )
    assert term(ctx_with(text=text, src_features=src, edit_features=opposite)).item() == pytest.approx(
        2, abs=1e-6
    )
    # invariant to the step length along the direction
    longer = src + 3.0 * torch.tensor([[1.0, -1.0, 0.0]])
    assert term(ctx_with(text=text, src_features=src, edit_features=longer)).item() == pytest.approx(
        0, abs=1e-6
    )


def test_clip_nce_official_matches_hand_computed_cross_entropy():
    # one query, known cosines: q.p1 = 1, q.p2 = 0, q.n = [0, -1]
    q = torch.tensor([[[1.0, 0.0]]])  # (B=1, K=1, E=2)
    pos = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    neg = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])  # (1, 2, 2)
    tau = 0.5
    got = clip_nce(q, pos, neg, tau, "official")
    ce1 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0) + math.exp(-1 / tau)))
    ce2 = -math.log(math.exp(0) / (math.exp(0) + math.exp(0) + math.exp(-1 / tau)))
    assert got.item() == pytest.approx((ce1 + ce2) / 2, rel=1e-6)


def test_clip_nce_paper_form_shares_the_denominator():
    q = torch.tensor([[[1.0, 0.0]]])
    pos = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    neg = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])
    tau = 0.5
    denom = math.exp(2) + math.exp(0) + math.exp(0) + math.exp(-2)
    expected = -(math.log(math.exp(2) / denom) + math.log(math.exp(0) / denom)) / 2
    assert clip_nce(q, pos, neg, tau, "paper").item() == pytest.approx(expected, rel=1e-6)


def test_clip_nce_term_builds_official_positives_and_negatives():
    torch.manual_seed(0)
    B, K, T, E = 2, 3, 4, 8
    src = F.normalize(torch.randn(B, E), dim=-1)
    views = F.normalize(torch.randn(B, K, E), dim=-1)
    tt, st = F.normalize(torch.randn(T, E), dim=-1), F.normalize(torch.randn(T, E), dim=-1)
    text = text_features(tt[0], st[0], tt, st)
    ctx = ctx_with(
        text=text, src_features=src, view_features=views, src_view_features=src[:, None].expand(-1, K, -1)
    )
    term = CLIPNCELoss(temperature=0.1)
    # reference: the official recipe written out per sample
    total = []
    for b in range(B):
        p1 = F.normalize(tt.mean(0) - st.mean(0), dim=-1)
        p2 = F.normalize(tt.mean(0) - src[b], dim=-1)
        negs = F.normalize(st - src[b], dim=-1)
        for k in range(K):
            q = F.normalize(views[b, k] - src[b], dim=-1)
            for p in (p1, p2):
                logits = torch.cat([(q @ p)[None], negs @ q]) / 0.1
                total.append(F.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long)))
    assert term(ctx).item() == pytest.approx(torch.stack(total).mean().item(), rel=1e-5)
    # the official bug uses the first image's negatives for every sample: a different value for B > 1
    assert CLIPNCELoss(negatives_from="first_image")(ctx).item() != pytest.approx(term(ctx).item(), rel=1e-4)


def test_clip_nce_prompt_negatives_join_the_source_negatives():
    """prompt.negatives: each negative text (in every template) is one more negative per query; an edit that
    moves toward a negative costs more than the same edit without it, and an empty set changes nothing."""
    torch.manual_seed(2)
    B, K, T, E = 2, 3, 4, 8
    src = F.normalize(torch.randn(B, E), dim=-1)
    tt, st, nt = (F.normalize(torch.randn(T, E), dim=-1) for _ in range(3))
    toward_negative = F.normalize(src[:, None] + 0.5 * nt.mean(0), dim=-1).expand(-1, K, -1)
    feats = dict(
        src_features=src, view_features=toward_negative, src_view_features=src[:, None].expand(-1, K, -1)
    )
    term = CLIPNCELoss(temperature=0.1)
    plain = term(ctx_with(text=text_features(tt[0], st[0], tt, st), **feats))
    empty = term(ctx_with(text=TextFeatures(tt[0], st[0], tt, st, nt[:0]), **feats))
    with_neg = term(ctx_with(text=TextFeatures(tt[0], st[0], tt, st, nt), **feats))
    assert empty.item() == pytest.approx(plain.item(), rel=1e-6)
    assert with_neg > plain
    # reference for one query: negatives = source templates then negative templates
    q = F.normalize(toward_negative[0, 0] - src[0], dim=-1)
    negs = torch.cat([F.normalize(st - src[0], dim=-1), F.normalize(nt - src[0], dim=-1)])
    p1 = F.normalize(tt.mean(0) - st.mean(0), dim=-1)
    logits = torch.cat([(q @ p1)[None], negs @ q]) / 0.1
    ref = F.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long))
    p2 = F.normalize(tt.mean(0) - src[0], dim=-1)
    logits2 = torch.cat([(q @ p2)[None], negs @ q]) / 0.1
    ref2 = F.cross_entropy(logits2[None], torch.zeros(1, dtype=torch.long))
    one = term(
        ctx_with(
            text=TextFeatures(tt[0], st[0], tt, st, nt),
            **{k: v[:1, :1] if v.ndim == 3 else v[:1] for k, v in feats.items()},
        )
    )
    assert one.item() == pytest.approx(((ref + ref2) / 2).item(), rel=1e-5)


def test_clip_nce_decreases_when_views_move_along_the_text_direction():
    torch.manual_seed(1)
    E, T = 8, 5
    src = F.normalize(torch.randn(1, E), dim=-1)
    tt, st = F.normalize(torch.randn(T, E), dim=-1), F.normalize(torch.randn(T, E), dim=-1)
    text = text_features(tt[0], st[0], tt, st)
    direction = F.normalize(tt.mean(0) - st.mean(0), dim=-1)
    good = (src + 0.5 * direction)[:, None]
    bad = (src - 0.5 * direction)[:, None]
    term = CLIPNCELoss()
    lg = term(ctx_with(text=text, src_features=src, view_features=good, src_view_features=src[:, None]))
    lb = term(ctx_with(text=text, src_features=src, view_features=bad, src_view_features=src[:, None]))
    assert lg < lb


def test_latent_l2_and_loss_sum_parts():
    w = torch.zeros(2, 3, 4)
    w_hat = torch.full((2, 3, 4), 0.5)
    ctx = StepContext(
        w=w, w_hat=w_hat, text=text_features(unit(1, 0), unit(0, 1)), edit_features=unit(1, 1)[None]
    )
    total, parts = LossSum({"latent_l2": LatentL2Loss(weight=0.8), "global": GlobalCLIPLoss(weight=2.0)})(ctx)
    assert parts["latent_l2"].item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(0.8 * 0.25 + 2.0 * (1 - 1 / math.sqrt(2)), rel=1e-6)


def test_loss_sum_drops_null_and_zero_weight_terms_and_rejects_empty():
    s = LossSum({"a": LatentL2Loss(weight=1.0), "b": None}, {"c": LatentL2Loss(weight=0.0)})
    assert list(s.terms) == ["a"]
    assert s.requires == frozenset()
    with pytest.raises(ValueError, match="no active term"):
        LossSum({"a": None})
    with pytest.raises(TypeError, match="expected a LossTerm"):
        LossSum({"a": torch.nn.Identity()})


def test_missing_context_field_is_a_clear_error():
    with pytest.raises(RuntimeError, match="requires"):
        GlobalCLIPLoss()(ctx_with(text=text_features(unit(1, 0), unit(0, 1))))


def test_part_negatives_rule_moves_the_modifier_onto_other_parts():
    """One rule for every prompt: the last word swapped for each part noun, minus what the CLIP reads as the
    target (the part the prompt itself names) - here a fake similarity that calls lips and lipstick the same."""
    from src.data.prompts import part_negatives

    same = {frozenset({"face with green lipstick", "face with green lips"})}
    sim = lambda a, b: 1.0 if a == b or frozenset({a, b}) in same else 0.5  # noqa: E731
    parts = ["ears", "eyes", "lips", "skin"]
    assert part_negatives("face with green lipstick", parts, sim) == [
        "face with green ears",
        "face with green eyes",
        "face with green skin",
    ]
    # a prompt nobody wrote down gets the same treatment; a bare noun has nothing to move
    assert part_negatives("face with striped ears", parts, sim) == [
        "face with striped eyes",
        "face with striped lips",
        "face with striped skin",
    ]
    assert part_negatives("beard", parts, sim) == []
    assert part_negatives("face with green lipstick", parts, sim, max_cos=0.4) == []


def test_toyfaces_prompts_derive_their_negatives_from_the_clip(tmp_path):
    """With the shipped toy CLIP the rule gives green lipstick the negative that was once written by hand."""
    from hydra.utils import instantiate

    from src.text_bank import derived_negatives
    from tests.conftest import compose_train

    cfg = compose_train(["prompt=green_lipstick"], tmp_path)
    negatives = derived_negatives(instantiate(cfg.domain.clip), instantiate(cfg.prompt))
    assert "face with green eyes" in negatives and "face with green lips" not in negatives
    custom = compose_train(["prompt=custom", "prompt.target=face with blue lipstick"], tmp_path)
    assert "face with blue eyes" in derived_negatives(
        instantiate(custom.domain.clip), instantiate(custom.prompt)
    )


def test_clip_nce_saturates_once_the_positive_is_likely_enough():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(2, 3, 8), dim=-1)
    pos, neg = F.normalize(torch.randn(2, 2, 8), dim=-1), F.normalize(torch.randn(2, 5, 8), dim=-1)
    plain = clip_nce(q, pos, neg, 0.1)
    assert clip_nce(q, pos, neg, 0.1, floor=None) == pytest.approx(plain.item())  # off: the paper's loss
    # a query on its positives already reads as the target: a saturated loss pays nothing for moving further
    same = pos[:, :1].expand(-1, 2, -1)  # (B, 2, E): both positives one direction
    near = same[:, :1].expand(-1, 3, -1).clone().requires_grad_(True)  # (B, K, E)
    loss = clip_nce(near, same, neg, 0.1, floor=-math.log(0.05))
    loss.backward()
    assert loss.item() == pytest.approx(-math.log(0.05)) and near.grad.abs().max() == 0
    with pytest.raises(ValueError, match="saturate_at"):
        CLIPNCELoss(saturate_at=1.0)


def test_manifold_loss_prices_a_painted_streak_above_a_real_face_and_trains_no_net():
    from src.losses import ManifoldLoss
    from src.toyworld import assets
    from src.toyworld.attributes import Attributes
    from src.toyworld.render import render_batch

    term = ManifoldLoss(assets.load_inverter(), assets.load_generator(), weight=1.0)
    attrs = [Attributes(ears="round"), Attributes(ears="pointed", hair_color="black")]
    with torch.no_grad():
        face = term.generator.synthesis(
            term.encoder(render_batch(attrs, [5, 6]))
        )  # on the generator's manifold
    streak = face.clone()
    streak[:, :, 4:8, 40:60] = torch.tensor([0.8, 0.6, 0.4])[:, None, None]  # a light bar above the right ear
    x_hat = torch.cat([face, streak]).requires_grad_(True)
    txt = text_features(unit(1, 0), unit(0, 1))
    loss_face = term(ctx_with(x_hat=x_hat[:2], text=txt))
    loss_streak = term(ctx_with(x_hat=x_hat[2:], text=txt))
    assert loss_streak > loss_face + 0.005, (loss_face, loss_streak)
    (loss_face + loss_streak).backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in term.parameters())
