"""Cached CLIP text features of a run's prompts: one entry per prompt (a multi-prompt mapper has several), and
any other text on demand (what a multi-prompt mapper is asked at inference)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.data.prompts import Prompt, content_words, part_negatives
from src.losses.base import TextFeatures

log = logging.getLogger("cfclip")
FIELDS = ("target", "source", "target_templates", "source_templates", "negative_templates")


@torch.no_grad()
def derived_negatives(clip: nn.Module, prompt: Prompt) -> list[str]:
    """prompt.negatives plus those its auto_negatives rule derives with this CLIP (template-averaged cosines)."""
    rule = prompt.auto_negatives
    if not rule:
        return list(prompt.negatives)
    cache: dict[str, torch.Tensor] = {}

    def embed(text: str) -> torch.Tensor:
        if text not in cache:
            cache[text] = F.normalize(clip.encode_text(prompt.with_templates(text)).float().mean(0), dim=0)
        return cache[text]

    sim = lambda a, b: float(embed(a) @ embed(b))  # noqa: E731
    derived = part_negatives(prompt.target, list(rule["parts"]), sim, float(rule.get("max_cos", 0.95)))
    log.info("negatives derived for %r: %s", prompt.target, derived or "none")
    return list(dict.fromkeys([*prompt.negatives, *derived]))


@torch.no_grad()
def encode_prompt(clip: nn.Module, prompt: Prompt) -> TextFeatures:
    """The prompt's normalised text features: plain target/source and every template of each (and of every
    negative, given or derived: (0, E) without negatives)."""
    target_templates = clip.encode_text(prompt.with_templates(prompt.target))
    negatives = [t for text in derived_negatives(clip, prompt) for t in prompt.with_templates(text)]
    return TextFeatures(
        target=clip.encode_text([prompt.target])[0],
        source=clip.encode_text([prompt.source])[0],
        target_templates=target_templates,
        source_templates=clip.encode_text(prompt.with_templates(prompt.source)),
        negative_templates=clip.encode_text(negatives) if negatives else target_templates[:0],
    )


@torch.no_grad()
def tem_embedding(clip: nn.Module, prompt: Prompt) -> torch.Tensor:
    """The TEM's input (E,). ``sentence``: the target's raw CLIP embedding. ``words``: the mean of the unit
    embeddings of its content words, each encoded alone, minus the source's unit embedding (what all prompts
    share): additive in the words, so "blue lipstick" is "blue eyes" + "red lipstick" - "red eyes".
    ``factored`` (2E,): the same for the modifier words (all but the last content word; zeros if none), then for
    the noun (the last one, as in :func:`part_negatives`)."""
    if prompt.tem_input == "sentence":
        return clip.encode_text([prompt.target], normalize=False)[0].float()
    source = F.normalize(clip.encode_text([prompt.source]).float(), dim=-1)[0]  # (E,)

    def mean_minus_source(words: list[str]) -> torch.Tensor:
        if not words:
            return torch.zeros_like(source)
        return F.normalize(clip.encode_text(words).float(), dim=-1).mean(0) - source

    words = content_words(prompt.target, prompt.source)
    if prompt.tem_input == "words":
        return mean_minus_source(words)
    return torch.cat([mean_minus_source(words[:-1]), mean_minus_source(words[-1:])])


@torch.no_grad()
def encode_with_embedding(clip: nn.Module, prompt: Prompt) -> tuple[TextFeatures, torch.Tensor]:
    """The prompt's text features and the TEM's input (E,)."""
    return encode_prompt(clip, prompt), tem_embedding(clip, prompt)


def check_generalises(trained: Sequence[str], text: str, label: str, accepted: Sequence[str] = ()) -> str:
    """``text`` if a mapper trained on the texts ``trained`` may edit toward it: any text when it learnt several,
    only its own (or one of ``accepted``, e.g. its prompt name) when it learnt one; a clear error otherwise."""
    if len(trained) == 1 and text not in (*trained, *accepted):
        raise ValueError(
            f"{label} was trained for the one prompt {trained[0]!r}, not for {text!r}: one-prompt mappers do not "
            "generalise to other texts. Train one mapper on many prompts (experiment=toyfaces_multi, or "
            "prompt=multi prompt.targets=[...]) and edit any text with its checkpoint."
        )
    return text


class TextBank(nn.Module):
    """Text features of P prompts, encoded once (non-persistent buffers: they follow .to(), are never saved).

    ``features(i)``: prompt i's TextFeatures (what the loss terms read); ``embeddings`` (P, E): the raw target
    embeddings the TEM reads. ``lookup(clip, text)`` gives the same for any other text, derived with the first
    prompt's source, templates and negative rule, and cached."""

    def __init__(self, clip: nn.Module, prompts: Sequence[Prompt]):
        super().__init__()
        self.prompts = list(prompts)
        if not self.prompts:
            raise ValueError("a run needs at least one prompt (prompt.targets is empty)")
        names = [p.name for p in self.prompts]
        if len(set(names)) != len(names):
            raise ValueError(f"prompt names must be unique, got {names}")
        raw = []
        for i, p in enumerate(self.prompts):
            feats, emb = encode_with_embedding(clip, p)
            for key, value in vars(feats).items():
                self.register_buffer(f"p{i}_{key}", value.float().clone(), persistent=False)
            raw.append(emb)
        self.register_buffer("embeddings", torch.stack(raw), persistent=False)  # (P, E) TEM inputs
        self._other: dict[str, tuple[TextFeatures, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.prompts]

    @property
    def targets(self) -> list[str]:
        return [p.target for p in self.prompts]

    def features(self, i: int) -> TextFeatures:
        return TextFeatures(*(getattr(self, f"p{i}_{key}") for key in FIELDS))

    def index(self, text: str) -> int | None:
        """The index of a prompt given by its name or its target text (None if the run has no such prompt)."""
        for i, p in enumerate(self.prompts):
            if text in (p.name, p.target):
                return i
        return None

    @torch.no_grad()
    def lookup(self, clip: nn.Module, text: str) -> tuple[TextFeatures, torch.Tensor]:
        """(TextFeatures, raw embedding (E,)) of any text: a run prompt's cached ones, else encoded once."""
        i = self.index(text)
        if i is not None:
            return self.features(i), self.embeddings[i]
        if text not in self._other:
            # the first prompt's source, templates, negative rule and TEM input; no given negatives
            prompt = dataclasses.replace(self.prompts[0], target=text, name="", negatives=[])
            self._other[text] = encode_with_embedding(clip, prompt)
        feats, emb = self._other[text]
        device = self.embeddings.device
        return feats.to(device), emb.to(device)

    @torch.no_grad()
    def novelty(self, clip: nn.Module, text: str) -> dict[str, float | str]:
        """How new a text is to the TEM, whose PixelNorm sees only the embedding's direction: the norm of its unit
        embedding outside the span of the trained ones (0: a trained text or a mix of them; 1: orthogonal to all)
        and the nearest trained text with its cosine."""
        e = F.normalize(self.lookup(clip, text)[1], dim=-1).cpu()  # (E,)
        a = F.normalize(self.embeddings, dim=-1).cpu()  # (P, E)
        coef = torch.linalg.lstsq(a.T, e[:, None]).solution  # (P, 1)
        residual = (e - (a.T @ coef)[:, 0]).norm().item()
        cos = a @ e
        i = int(cos.argmax())
        return {
            "text_residual": residual,
            "nearest_trained_cos": cos[i].item(),
            "nearest_trained": self.targets[i],
        }
