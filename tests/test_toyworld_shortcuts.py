"""Shortcut mining and the fooled rate: the world's rule labels what an attacked image shows, never the CLIP."""

from __future__ import annotations

import numpy as np
import torch

from src.evaluation.guide import fooling_metrics
from src.toyworld.attributes import SCHEMA, Attributes
from src.toyworld.build.hardening import described
from src.toyworld.judge.shortcuts import (
    ATTACKS,
    HELDOUT_TEMPLATE,
    clip_reads,
    counterfactual_values,
    fooled,
    fooled_rate,
    rule_reads,
    texts_for,
)
from src.toyworld.render import attribute_mask, render

FACE, SEED = Attributes(ears="round", skin_tone="light"), 12345


def _streak(face: Attributes, seed: int) -> torch.Tensor:
    """The source with what the first mapper drew: a light streak from the right ear's tip region outwards."""
    img, masks = render(face, seed, as_tensor=True)
    tip = torch.from_numpy(
        attribute_mask(render(face.replace(ears="pointed"), seed)[1], "ears") & ~attribute_mask(masks, "ears")
    )
    right = torch.zeros_like(tip)
    right[:, img.shape[-1] // 2 :] = True
    out = img.clone()
    out[:, tip & right] = 0.5 * out[:, tip & right] + 0.5  # a faint light streak, one side only
    return out


def test_mining_labels_a_streak_as_not_the_target_and_a_real_edit_as_the_target():
    ideal = render(FACE.replace(ears="pointed"), SEED, as_tensor=True)[0]
    streak = _streak(FACE, SEED)
    assert (streak - render(FACE, SEED, as_tensor=True)[0]).abs().sum() > 0  # the streak is drawn
    reads = rule_reads(torch.stack([streak, ideal]), [FACE, FACE], [SEED, SEED], ("ears", "pointed"))
    assert reads[0].ears == "round"  # one faint tip is not elf ears
    assert reads[1].ears == "pointed"
    # captioned with what it shows; the attacked value is the hard negative, and the other way round
    rng = np.random.default_rng(0)
    for read, shown, other in ((reads[0], "round", "pointed"), (reads[1], "pointed", "round")):
        pos, neg = described(read, "ears", rng)
        assert any(p in pos for p in SCHEMA["ears"].phrases[shown])
        assert any(p in neg for p in SCHEMA["ears"].phrases[other])
        assert not any(p in pos for p in SCHEMA["ears"].phrases[other])


def test_fooled_rate_counts_clip_reads_without_the_rule():
    clip = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    rule = torch.tensor([0, 1, 0, 1], dtype=torch.bool)
    assert fooled(clip, rule).tolist() == [True, False, False, False]
    assert fooled_rate(clip, rule) == 0.25
    assert fooled_rate(clip, clip) == 0.0  # the CLIP agrees with the rule: never fooled
    assert np.isnan(fooled_rate(clip[:0], rule[:0]))


class _BrightIsPointed(torch.nn.Module):
    """A stand-in CLIP that reads 'pointed ears' on any image brighter than mid grey, 'round' otherwise."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode_image(self, x):
        bright = (x.mean((1, 2, 3)) > 0).float()
        return torch.stack([1 - bright, bright], 1)

    def encode_text(self, texts):
        pointed = [any(p in t for p in SCHEMA["ears"].phrases["pointed"]) for t in texts]
        return torch.tensor([[0.0, 1.0] if p else [1.0, 0.0] for p in pointed])


def test_fooling_metrics_on_hand_made_edits():
    dark, bright = -0.5 * torch.ones(1, 3, 8, 8), 0.5 * torch.ones(1, 3, 8, 8)
    x = torch.cat([dark] * 4)  # sources: read round
    x_hat = torch.cat([bright, bright, bright, dark])  # the CLIP reads pointed on three edits
    rule = torch.tensor([False, True, False, False])  # the rule passes one of them
    m = fooling_metrics(_BrightIsPointed(), x, x_hat, rule, SCHEMA["ears"].index("pointed"), "ears")
    assert m["clip_reads_target_rate"] == 0.75
    assert m["clip_reads_target_source_rate"] == 0.0
    assert m["clip_fooled_rate"] == 0.5  # two of four: read pointed, not pointed by the rule


class _DarkIsPointed(_BrightIsPointed):
    def encode_image(self, x):
        return super().encode_image(x).flip(1)


def test_a_guide_ensemble_reads_by_its_weighted_members():
    from src.models.clip_ensemble import CLIPEnsemble

    dark, bright = -0.5 * torch.ones(1, 3, 8, 8), 0.5 * torch.ones(1, 3, 8, 8)
    x, x_hat, rule = torch.cat([dark] * 2), torch.cat([bright, dark]), torch.tensor([False, False])
    pointed = SCHEMA["ears"].index("pointed")
    for weights, reads in (([1.0, 0.0], 0.5), ([0.0, 1.0], 0.5), ([0.3, 0.7], 0.5)):
        guide = CLIPEnsemble([_BrightIsPointed(), _DarkIsPointed()], weights)
        m = fooling_metrics(guide, x, x_hat, rule, pointed, "ears")
        assert m["clip_fooled_rate"] == reads
        # the bright edit is read pointed by the first member alone, the dark one by the second alone
        first = clip_reads(guide, x_hat, "ears")[0] == pointed
        assert bool(first) == (weights[0] > weights[1])
    assert (
        clip_reads(CLIPEnsemble([_BrightIsPointed(), _DarkIsPointed()], [0.0, 1.0]), x, "ears")
        .eq(pointed)
        .all()
    )


def test_mined_and_heldout_texts_are_disjoint_and_every_value_and_attack_is_covered():
    values = counterfactual_values()
    assert ("ears", "pointed") in values and ("lip_color", "green") in values and len(values) == 8
    for attribute, value in values:
        mined, held = set(texts_for(attribute, value)), set(texts_for(attribute, value, held_out=True))
        assert mined and held and not mined & held
    # the domain's own prompt texts are held out
    assert HELDOUT_TEMPLATE.format("elf ears") in texts_for("ears", "pointed", held_out=True)
    assert {loss for loss, _ in ATTACKS} == {"clip_nce", "directional", "global"}
    assert {views for _, views in ATTACKS} == {"perspective", "affine", "crop", "none"}


def test_an_attack_pays_its_image_prior_and_the_prior_steers_it():
    """attack_loss adds prior(x_hat) to the run's loss (the harden probe's round trip), and an Attack with a
    prior that charges every change moves its latents less than the same attack without it."""
    from src.models.factory import create_clip, create_generator
    from src.toyworld.judge.shortcuts import Attack, AttackSpec, attack_loss, make_views, text_features

    torch.manual_seed(0)
    clip = create_clip("cfclip-tiny", model_config="tiny")
    gen = create_generator(
        size=16, style_dim=32, n_mlp=1, channel_multiplier=1, channel_max=32
    ).requires_grad_(False)
    w = torch.randn(2, gen.n_latent, 32)
    x = gen.synthesis(w)
    spec = AttackSpec("clip_nce", "none", "ears", "pointed", "a photo of a face with elf ears")
    feats, views = text_features(clip, spec.text, ["{}"]), make_views("none", 1)
    w_hat = w + 0.1
    x_hat = gen.synthesis(w_hat)
    base = attack_loss(clip, spec, feats, views, w, w_hat, x, x_hat)
    priced = attack_loss(
        clip, spec, feats, views, w, w_hat, x, x_hat, prior=lambda y: 100 * (y - x).abs().mean()
    )
    assert torch.allclose(priced - base, 100 * (x_hat - x).abs().mean())
    moved = []
    for prior in (None, lambda y: 1e3 * (y - x).abs().mean()):
        attack = Attack(spec, w, prior=prior)
        for _ in range(3):
            attack.step(gen, clip, feats, views, x)
        moved.append((attack.images(gen) - x).abs().mean().item())
    assert moved[1] < moved[0]
