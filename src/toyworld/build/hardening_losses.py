"""The harden stage's two extra losses on the toy CLIP (``src.toyworld.build.hardening``): the direction ranking (a
shortcut must not move the image embedding further along the text direction than real edits do) and the zero-shot
cross-entropy of every edit attribute."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from src.toyworld.attributes import EDIT_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.captions import TEMPLATES, zero_shot_prompts
from src.toyworld.judge.shortcuts import texts_for


def direction_loss(
    model, tokenizer, preprocess, items: list[dict], pairs: dict, rng, margin: float = 0.1, align: float = 0.0
):
    """The run's loss rewards moves along the text direction E_T(target) - E_T(source). Rank each shortcut's move
    E_I(edit) - E_I(source) below every real edit's move of the same value (real pairs, and mined images that reached
    the value) by ``margin`` in cosine to that direction: a super-stimulus must not out-move real ears. ``align``:
    also pull every real edit's move toward the text direction (weight of 1 - cosine), so the loss pays for real
    edits as much as it could for a shortcut."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for it in items:
        groups.setdefault((it["attribute"], it["value"]), []).append(it)
    keys = [k for k in groups if len(pairs.get(k, ((),))[0]) or any(it["reached"] for it in groups[k])]
    if not keys:
        return torch.zeros(())
    edits, sources, texts, owner, real = [], [], [], [], []
    for j, key in enumerate(keys):
        for it in groups[key]:
            (
                edits.append(it["image"]),
                sources.append(it["source"]),
                owner.append(j),
                real.append(it["reached"]),
            )
        src, cf = pairs.get(key, (torch.zeros(0), torch.zeros(0)))
        pick = rng.choice(len(src), min(8, len(src)), replace=False) if len(src) else []
        for i in pick:
            edits.append(cf[i]), sources.append(src[i]), owner.append(j), real.append(True)
        options = texts_for(*key)
        texts.append(options[int(rng.integers(len(options)))])
    n = len(edits)
    x = torch.stack(edits + sources).float()
    feats = F.normalize(model.encode_image(preprocess(x)).float(), dim=-1)
    moves = F.normalize(feats[:n] - feats[n:], dim=-1)  # (n, E)
    neutral = [
        t.rsplit(" with ", 1)[0] for t in texts
    ]  # "a photo of a face with elf ears" -> "a photo of a face"
    t = F.normalize(model.encode_text(tokenizer(texts + neutral)).float(), dim=-1)
    t_dir = F.normalize(t[: len(texts)] - t[len(texts) :], dim=-1)  # (V, E)
    d = (moves * t_dir[torch.tensor(owner)]).sum(-1)  # (n,) cosine of each move to its value's direction
    owner_t, real_t = torch.tensor(owner), torch.tensor(real)
    losses = []
    for j in range(len(keys)):
        adv, good = d[(owner_t == j) & ~real_t], d[(owner_t == j) & real_t]
        if len(adv) and len(good):
            losses.append(F.relu(margin + adv[:, None] - good[None, :]).mean())
        if align > 0 and len(good):
            losses.append(align * (1 - good).mean())
    return torch.stack(losses).mean() if losses else d.sum() * 0


def zero_shot_loss(model, tokenizer, img: torch.Tensor, reads: list[Attributes], rng) -> torch.Tensor:
    """Cross-entropy of each image's zero-shot reading of every edit attribute (one random template per step)."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    prompts = {a: zero_shot_prompts(a, (template,)) for a in EDIT_ATTRIBUTES}
    flat = [p for a in EDIT_ATTRIBUTES for value in prompts[a] for p in value]
    txt = F.normalize(model.encode_text(tokenizer(flat)).float(), dim=-1)
    loss, start = 0.0, 0
    for a in EDIT_ATTRIBUTES:
        sizes = [len(v) for v in prompts[a]]
        classes = torch.stack(
            [F.normalize(t.mean(0), dim=-1) for t in txt[start : start + sum(sizes)].split(sizes)]
        )
        start += sum(sizes)
        target = torch.tensor([SCHEMA[a].index(getattr(r, a)) for r in reads])
        loss = loss + F.cross_entropy(model.logit_scale.exp().clamp(max=100) * img @ classes.T, target)
    return loss / len(EDIT_ATTRIBUTES)
