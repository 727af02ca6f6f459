"""Shortcut edits through the generator: what a mapper finds when it optimises the guiding CLIP, and how often the
CLIP is fooled by it.

An attack moves W+ latents by a free offset (B, L, D), optimised under one of the losses and views the paper's
ablation compares (CLIP-NCE with perspective / affine / crop / no views, directional, global), plus the toyfaces
recipe's pixel L1. A per-image offset with Adam is a stronger optimiser than a mapper, so what it finds bounds
what a mapper can find. The world's region rule (``src.toyworld.judge.calibration``) says what each attacked image
really shows; the CLIP is **fooled** where its zero-shot reading says the target and the rule does not.
Used by the build (mining, ``src.toyworld.build.hardening``) and its report (held-out latents, phrasings and seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.augment import MultiView, affine, crop, perspective
from src.data.prompts import Prompt, load_templates
from src.losses.base import StepContext, TextFeatures
from src.losses.clip import CLIPNCELoss, DirectionalCLIPLoss, GlobalCLIPLoss
from src.module import add_clip_features
from src.text_bank import encode_prompt
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.captions import TEMPLATES, zero_shot_prompts
from src.toyworld.judge.calibration import rule_labels

# the paper's ablation grid, each mined in equal measure: (loss, views)
ATTACKS: tuple[tuple[str, str], ...] = (
    ("clip_nce", "perspective"),
    ("clip_nce", "affine"),
    ("clip_nce", "crop"),
    ("clip_nce", "none"),
    ("directional", "none"),
    ("global", "none"),
)
SOURCE_TEXT = "face"
# texts the build mines with ("<template> <phrase>"); the held-out texts use "face with {}", the domain's own
# phrasing of its prompts (conf/domain/toyfaces.yaml), which the build never mines
MINED_TEMPLATES: tuple[str, ...] = (
    "a photo of a face with {}",
    "a person with {}",
    "a portrait of a person with {}",
)
HELDOUT_TEMPLATE = "face with {}"


def counterfactual_values() -> list[tuple[str, str]]:
    """Every (attribute, value) an edit can target: the world's counterfactual values."""
    return [(a, v) for a in LABEL_ATTRIBUTES for v in SCHEMA[a].counterfactual]


def texts_for(attribute: str, value: str, held_out: bool = False) -> list[str]:
    """Target texts for a value: every phrase of it in the mined templates, or in the held-out one."""
    templates = (HELDOUT_TEMPLATE,) if held_out else MINED_TEMPLATES
    return [t.format(p) for t in templates for p in SCHEMA[attribute].phrases[value]]


def make_views(kind: str, num_views: int, distortion: float = 0.5) -> MultiView:
    transform = {
        "perspective": lambda: perspective(distortion),
        "affine": lambda: affine(),
        "crop": lambda: crop(),
        "none": lambda: None,
    }[kind]()
    return MultiView(transform, num_views=num_views if transform is not None else 1)


def make_term(kind: str) -> nn.Module:
    if kind == "clip_nce":
        return CLIPNCELoss(weight=0.3)
    if kind == "directional":
        return DirectionalCLIPLoss(weight=1.0)
    if kind == "global":
        return GlobalCLIPLoss(weight=1.0)
    raise ValueError(f"unknown attack loss {kind!r}; known: clip_nce, directional, global")


def text_features(clip: nn.Module, text: str, templates: Sequence[str]) -> TextFeatures:
    """The loss's text features of one target text, with the current CLIP (no negatives: the attacker's choice)."""
    return encode_prompt(clip, Prompt(text, SOURCE_TEXT, list(templates)))


@dataclass
class AttackSpec:
    """One attack: its loss and views, the target value and text, and the recipe's pixel L1 weight."""

    loss: str
    views: str
    attribute: str
    value: str
    text: str
    pixel_l1: float = 1.5
    num_views: int = 4
    # one offset shared by every latent of the attack (the mapper's threat: a shortcut it can draw on every face,
    # such as the first CLIP's streak), or one per latent (a stronger, per-image attack)
    universal: bool = True


def attack_loss(
    clip: nn.Module, spec: AttackSpec, feats: TextFeatures, views: MultiView, w, w_hat, x, x_hat, prior=None
) -> torch.Tensor:
    """The attacked loss of edited latents (the run's loss: CLIP term through its views + pixel L1, plus
    ``prior(x_hat)``, a weighted image prior such as the encoder round trip, where the run has one)."""
    term = make_term(spec.loss)
    ctx = add_clip_features(
        StepContext(w=w, w_hat=w_hat, text=feats, x=x, x_hat=x_hat), clip, views, term.requires
    )
    loss = term.weight * term(ctx) + spec.pixel_l1 * (x_hat - x).abs().mean()
    return loss if prior is None else loss + prior(x_hat)


class Attack:
    """Adam on a W+ offset, shared by the latents or one per latent (``spec.universal``), resumable step by step
    (the build advances many of them in turn)."""

    def __init__(self, spec: AttackSpec, w: torch.Tensor, lr: float = 0.03, prior=None):
        self.spec, self.w, self.lr, self.prior = spec, w, lr, prior  # w: (B, L, D); prior: see attack_loss
        self.delta = torch.zeros_like(w[:1] if spec.universal else w)  # (1 or B, L, D)
        self.m, self.v, self.t = torch.zeros_like(self.delta), torch.zeros_like(self.delta), 0

    def step(
        self, gen: nn.Module, clip: nn.Module, feats: TextFeatures, views: MultiView, x: torch.Tensor
    ) -> None:
        delta = self.delta.clone().requires_grad_(True)
        w_hat = self.w + delta
        loss = attack_loss(clip, self.spec, feats, views, self.w, w_hat, x, gen.synthesis(w_hat), self.prior)
        (grad,) = torch.autograd.grad(loss, delta)
        self.t += 1
        self.m.mul_(0.9).add_(grad, alpha=0.1)
        self.v.mul_(0.999).addcmul_(grad, grad, value=0.001)
        m_hat, v_hat = self.m / (1 - 0.9**self.t), self.v / (1 - 0.999**self.t)
        self.delta -= self.lr * m_hat / (v_hat.sqrt() + 1e-8)

    @torch.no_grad()
    def images(self, gen: nn.Module) -> torch.Tensor:
        return gen.synthesis(self.w + self.delta)


def run_attack(
    gen: nn.Module,
    clip: nn.Module,
    spec: AttackSpec,
    w: torch.Tensor,
    steps: int,
    lr: float = 0.03,
    seed: int = 0,
) -> torch.Tensor:
    """``steps`` attack steps from the latents w (B, L, D) -> the attacked images (B, 3, H, W)."""
    feats = text_features(clip, spec.text, load_templates("toyfaces"))
    views = make_views(spec.views, spec.num_views)
    with torch.no_grad():
        x = gen.synthesis(w)
    attack = Attack(spec, w, lr)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(steps):
            attack.step(gen, clip, feats, views, x)
    return attack.images(gen)


# ---- what the images show, and what the CLIP reads ---------------------------------------------------------
def rule_reads(
    images: torch.Tensor,
    attrs: Sequence[Attributes],
    seeds: Sequence[int],
    target: tuple[str, str] | None,
) -> list[Attributes]:
    """What the world's rule reads on each image (3, H, W) of its face (ground truth; never the oracle)."""
    labels = rule_labels(images, attrs, seeds, [target] * len(attrs))[0]
    return [Attributes.decode(row.numpy()) for row in labels]


def class_embeddings(clip: nn.Module, attribute: str, templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    """Prompt-ensembled zero-shot class embeddings (K, E) of an attribute's values (the build report's method)."""
    return torch.stack(
        [F.normalize(clip.encode_text(p).mean(0), dim=-1) for p in zero_shot_prompts(attribute, templates)]
    )


@torch.no_grad()
def clip_reads(clip: nn.Module, images: torch.Tensor, attribute: str) -> torch.Tensor:
    """The CLIP's zero-shot value index of ``attribute`` on each image (N,). A ``CLIPEnsemble`` reads as it guides:
    by its members' scores (cosine to each value's class embedding) summed with its weights."""
    members, weights = getattr(clip, "members", [clip]), getattr(clip, "weights", (1.0,))
    scores = 0.0
    for member, weight in zip(members, weights):
        if weight:
            feats = torch.cat([member.encode_image(x) for x in images.split(256)])
            scores = scores + weight * (feats @ class_embeddings(member, attribute).T)
    return scores.argmax(1)


def fooled(clip_target: torch.Tensor, rule_target: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the CLIP reads the target where the rule does not (a shortcut that fools the guide)."""
    return clip_target.bool() & ~rule_target.bool()


def fooled_rate(clip_target: torch.Tensor, rule_target: torch.Tensor) -> float:
    """Share of edits the CLIP reads as the target while the world's rule says the part did not change to it."""
    return float(fooled(clip_target, rule_target).float().mean()) if len(clip_target) else float("nan")


def measure_fooling(
    gen: nn.Module,
    clip: nn.Module,
    latents: torch.Tensor,
    attrs: Sequence[Attributes],
    seeds: Sequence[int],
    steps: int,
    values: Sequence[tuple[str, str]] | None = None,
    attacks: Sequence[tuple[str, str]] = (("clip_nce", "perspective"),),
    held_out: bool = True,
    num_views: int = 8,
    universal: bool = True,
    seed: int = 0,
    log=None,
) -> dict[str, dict[str, float]]:
    """Per value: attack the latents with each attack config and every held-out text (one text per chunk, in
    turn), then the CLIP's reading, the rule's, and the fooled rate. The report's robustness figure."""
    out: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng([seed, 606])
    for attribute, value in values or counterfactual_values():
        texts = texts_for(attribute, value, held_out)
        k = SCHEMA[attribute].index(value)
        clip_t, rule_t = [], []
        for i, (loss, view) in enumerate(attacks):
            text = texts[int(rng.integers(len(texts)))]
            spec = AttackSpec(loss, view, attribute, value, text, num_views=num_views, universal=universal)
            y = run_attack(gen, clip, spec, latents, steps, seed=seed + i)
            clip_t.append(clip_reads(clip, y, attribute) == k)
            reads = rule_reads(y, attrs, seeds, (attribute, value))
            rule_t.append(torch.tensor([getattr(r, attribute) == value for r in reads]))
        c, r = torch.cat(clip_t), torch.cat(rule_t)
        key = f"{attribute}:{value}"
        out[key] = {
            "fooled": fooled_rate(c, r),
            "clip_reads": float(c.float().mean()),
            "rule_reads": float(r.float().mean()),
        }
        if log is not None:
            log(f"[fooling] {key}: {out[key]}")
    return out
