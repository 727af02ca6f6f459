"""Adversarial training of the toy CLIP through the generator (the build's ``harden`` stage).

A mapper trained against the first toy CLIP drew a light streak by the ear that the CLIP read as "elf ears" on 98%
of faces: a super-stimulus of a small ViT, found through the generator. Real CLIP does not fail so for the paper's
edits, so the world fixes its CLIP (TeCoA / FARE for real CLIP, here with the attack inside the loop):
- a bank of **attacks** (``src.toyworld.judge.shortcuts``) on training latents, every counterfactual value, mined texts
  and every loss and view of the paper's ablation in equal measure, each advanced a few steps per CLIP step and
  restarted after ``attack_age`` steps, so the CLIP meets both fresh and long-optimised shortcuts;
- each attacked image is **labelled by the world's rule** (never the oracle) and captioned with what it shows,
  its target value's opposite as the hard negative (a streak by the ear: "round ears", not "elf ears");
- the generator's reconstructions of renders (counterfactual values common), labelled by the rule, so the CLIP
  knows what real edits look like through the generator, and the renders it was trained on, so it keeps them.
The loss is the CLIP's contrastive loss over all three, plus zero-shot cross-entropy of each image's attributes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.data.prompts import load_templates
from src.toyworld.attributes import SCHEMA, Attributes, uniform_rates
from src.toyworld.build.hardening_losses import direction_loss, zero_shot_loss
from src.toyworld.captions import _compose, caption, hard_negative_captions
from src.toyworld.clip_training import contrastive_loss
from src.toyworld.judge.shortcuts import (
    ATTACKS,
    Attack,
    AttackSpec,
    clip_reads,
    counterfactual_values,
    fooled,
    make_views,
    rule_reads,
    text_features,
    texts_for,
)
from src.toyworld.pool import RenderPool, sample_scenes
from src.toyworld.render import render_batch
from src.toyworld.training import Progress, Resumable


def described(read: Attributes, attribute: str, rng: np.random.Generator) -> tuple[str, str]:
    """(caption of what the image shows naming ``attribute``, the same caption with that attribute's other side:
    the target for an image that missed it, a natural value for one that reached it)."""
    names = [attribute] + [n for n in ("ears", "lip_color", "iris_color", "eyebrow_color") if n != attribute][
        :1
    ]
    if attribute == "style":
        names = ["skin_tone"]
    spec = SCHEMA[attribute]
    now = getattr(read, attribute)
    other_values = [
        v for v in spec.values if v != now and (now in spec.counterfactual) != (v in spec.counterfactual)
    ]
    other = read.replace(**{attribute: other_values[int(rng.integers(len(other_values)))]})
    style = attribute == "style"
    return _compose(read, names, rng, mention_style=style), _compose(other, names, rng, mention_style=style)


class Bank:
    """``groups`` attacks of ``size`` training latents each; one advances per CLIP step (round robin)."""

    def __init__(
        self,
        gen,
        latents: dict,
        groups: int,
        size: int,
        age: int,
        num_views: int,
        seed: int,
        prior=None,
        values=None,
    ):
        self.gen, self.latents, self.size, self.age, self.num_views = gen, latents, size, age, num_views
        self.rng = np.random.default_rng([seed, 909])
        self.prior, self.values = prior, list(values or counterfactual_values())
        self.turn = 0  # round robin over (value, attack config), so each is mined in equal measure
        self.groups = [self.new() for _ in range(groups)]
        for i, g in enumerate(self.groups):  # the first generation restarts staggered, so ages stay mixed
            g["age"] = max(1, age * (i + 1) // groups)
        self.next = 0

    def new(self) -> dict:
        attribute, value = self.values[self.turn % len(self.values)]
        loss, views = ATTACKS[(self.turn // len(self.values)) % len(ATTACKS)]
        self.turn += 1
        texts = texts_for(attribute, value)
        spec = AttackSpec(loss, views, attribute, value, texts[int(self.rng.integers(len(texts)))])
        spec.num_views = self.num_views
        idx = torch.from_numpy(self.rng.choice(len(self.latents["latents"]), self.size, replace=False))
        w = self.latents["latents"][idx]
        with torch.no_grad():
            x = self.gen.synthesis(w)
        views = make_views(views, self.num_views)
        return {
            "attack": Attack(spec, w, prior=self.prior),
            "idx": idx,
            "x": x,
            "views": views,
            "age": self.age,
        }

    def advance(
        self, clip: nn.Module, steps: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[Attributes], list[int], AttackSpec]:
        """Advance one group ``steps`` attack steps -> its images, their sources, faces, seeds and spec."""
        i = self.next
        self.next = (self.next + 1) % len(self.groups)
        g = self.groups[i]
        if g["attack"].t >= g["age"]:
            g = self.groups[i] = self.new()
        feats = text_features(clip, g["attack"].spec.text, load_templates("toyfaces"))
        for _ in range(steps):
            g["attack"].step(self.gen, clip, feats, g["views"], g["x"])
        labels, seeds = self.latents["labels"][g["idx"]], self.latents["seeds"][g["idx"]]
        attrs = [Attributes.decode(row.numpy()) for row in labels]
        return g["attack"].images(self.gen), g["x"], attrs, seeds.tolist(), g["attack"].spec


def reconstructions(gen, inv, n: int, seed: int, chunk: int = 128) -> tuple[torch.Tensor, list[Attributes]]:
    """The generator's reconstructions of n training renders (counterfactual values common) and what the rule reads
    on each (the inverter alone: a reconstruction may lose a thin part, and its caption then says so)."""
    rng = np.random.default_rng([seed, 911])
    attrs, seeds = sample_scenes(n, rng, uniform_rates())
    images, reads = [], []
    for i in range(0, n, chunk):
        a, s = attrs[i : i + chunk], seeds[i : i + chunk]
        with torch.no_grad():
            y = gen.synthesis(inv(render_batch(a, s)))
        images.append(y.clamp(-1, 1).half())
        reads += rule_reads(y, a, s, None)
    return torch.cat(images), reads


def real_pairs(gen, inv, n: int, seed: int) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """Per counterfactual value, real edits through the generator: reconstructions of n natural training renders and
    of the same faces with the value, kept where the rule reads the value on the latter ((k, 3, H, W) each)."""
    rng = np.random.default_rng([seed, 913])
    out = {}
    for attribute, value in counterfactual_values():
        attrs, seeds = sample_scenes(n, rng, 0.0)  # natural faces, training seeds
        with torch.no_grad():
            src = gen.synthesis(inv(render_batch(attrs, seeds)))
            cf = gen.synthesis(inv(render_batch([a.replace(**{attribute: value}) for a in attrs], seeds)))
        ok = [getattr(r, attribute) == value for r in rule_reads(cf, attrs, seeds, (attribute, value))]
        keep = torch.tensor(ok)
        out[(attribute, value)] = (src[keep].clamp(-1, 1).half(), cf[keep].clamp(-1, 1).half())
    return out


def harden_clip(
    clip: nn.Module,
    gen: nn.Module,
    inv: nn.Module,
    latents: dict,
    steps: int,
    lr: float = 1e-4,
    seed: int = 0,
    groups: int = 12,
    group_size: int = 16,
    attack_steps: int = 2,
    attack_age: int = 40,
    num_views: int = 4,
    render_batch_size: int = 64,
    recon_size: int = 1024,
    replay: int = 768,
    mined_batch: int = 48,
    zero_shot_weight: float = 1.0,
    direction_weight: float = 0.0,
    direction_margin: float = 0.1,
    direction_align: float = 0.0,
    real_per_value: int = 128,
    pool_size: int = 4096,
    resume_path: str | None = None,
    progress: bool = True,
    prior=None,
    values=None,
) -> dict[str, float]:
    """Fine-tune ``clip`` (a FrozenCLIP whose model is unfrozen here) against attacks through the frozen ``gen``
    on the training ``latents`` ({'latents', 'labels', 'seeds'}); returns what the last steps measured. ``prior``:
    an image prior the attacks also pay (``attack_loss``); ``values``: the (attribute, value)s mined (null: all)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 907])
    model, tokenizer = clip.model, clip.tokenizer
    model.requires_grad_(True)
    opt = torch.optim.AdamW(
        [p for p in model.parameters()], lr=lr, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-6
    )
    ckpt = Resumable(resume_path, {"clip": model, "opt": opt})
    start = ckpt.restore()
    rates = uniform_rates()
    rates["style"] = 0.3
    pool = RenderPool(pool_size, rates, eyebrows_follow_hair=0.5, seed=seed + 5)
    recon, recon_reads = reconstructions(gen, inv, recon_size, seed)
    pairs = real_pairs(gen, inv, real_per_value, seed) if direction_weight > 0 else {}
    bank = Bank(gen, latents, groups, group_size, attack_age, num_views, seed, prior, values)
    mined: list[dict] = []  # replay: image, its source, what the rule reads on it, the attacked value
    show = Progress("harden", steps, progress)
    recent: list[float] = []  # the fooled rate of the last attacks, before the CLIP learns from them
    for step in range(start, steps):
        y, x_src, attrs, seeds, spec = bank.advance(clip, attack_steps)
        target = (spec.attribute, spec.value)
        reads = rule_reads(y, attrs, seeds, target)
        mined += [
            {"image": img.half(), "source": x.clamp(-1, 1).half(), "read": r, "attribute": spec.attribute,
             "value": spec.value, "reached": getattr(r, spec.attribute) == spec.value}
            for img, x, r in zip(y.clamp(-1, 1), x_src, reads)
        ]  # fmt: skip
        mined = mined[-replay:]
        # the batch: renders | reconstructions | mined shortcuts, each captioned with what it shows
        pool.refresh(render_batch_size // 8)
        idx = torch.randint(len(pool), (render_batch_size,))
        r_attrs = [pool.attrs[i] for i in idx.tolist()]
        r_idx = rng.choice(len(recon), min(len(recon), render_batch_size // 2), replace=False)
        m_idx = rng.choice(len(mined), min(mined_batch, len(mined)), replace=False)
        images = torch.cat(
            [
                pool.images[idx].float() / 127.5 - 1.0,
                recon[torch.from_numpy(r_idx)].float(),
                torch.stack([mined[i]["image"] for i in m_idx]).float(),
            ]
        )
        all_reads = r_attrs + [recon_reads[i] for i in r_idx] + [mined[i]["read"] for i in m_idx]
        texts = [caption(a, rng) for a in all_reads[: len(all_reads) - len(m_idx)]]
        extra = [t for a in r_attrs[: render_batch_size // 2] for t in hard_negative_captions(a, rng)]
        for i in m_idx:
            pos, neg = described(mined[i]["read"], mined[i]["attribute"], rng)
            texts.append(pos)
            extra.append(neg)
        images = images + 0.02 * torch.randn_like(images)
        img = F.normalize(model.encode_image(clip.preprocess(images)).float(), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(texts + extra)).float(), dim=-1)
        loss_c = contrastive_loss(img, txt, model.logit_scale.exp().clamp(max=100), len(texts))
        loss_z = zero_shot_loss(model, tokenizer, img, all_reads, rng)
        loss = loss_c + zero_shot_weight * loss_z
        loss_d = torch.zeros(())
        if direction_weight > 0:
            items = [mined[i] for i in m_idx]
            loss_d = direction_loss(
                model, tokenizer, clip.preprocess, items, pairs, rng, direction_margin, direction_align
            )
            loss = loss + direction_weight * loss_d
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clip._text_cache.clear()  # the text features changed with the weights
        rule_t = torch.tensor([getattr(r, spec.attribute) == spec.value for r in reads])
        clip_t = clip_reads(clip, y, spec.attribute) == SCHEMA[spec.attribute].index(spec.value)
        recent = (recent + [fooled(clip_t, rule_t).float().mean().item()])[-len(bank.values) * 4 :]
        ckpt.maybe_save(step + 1)
        show(
            step,
            loss=loss_c.item(),
            zs=loss_z.item(),
            dir=loss_d.item(),
            fooled=float(np.mean(recent)),
            reach=rule_t.float().mean().item(),
            age=bank.groups[bank.next - 1]["attack"].t,
        )
    ckpt.maybe_save(steps, force=True)
    model.requires_grad_(False)
    return {"harden_steps": float(steps)}
