"""Prompts as data: target text, source text and a template set (a name of a file in ``templates/`` or a list)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent / "templates"


def load_templates(spec: str | Sequence[str]) -> list[str]:
    """Templates by set name (``imagenet`` = the official 79 ImageNet templates) or an explicit list."""
    if isinstance(spec, str):
        path = TEMPLATE_DIR / f"{spec}.txt"
        if not path.is_file():
            known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
            raise ValueError(
                f"unknown template set {spec!r}; known sets: {known} (or give a list of strings)"
            )
        templates = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        templates = [str(t) for t in spec]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"every template needs one '{{}}' placeholder; bad: {bad[:3]}")
    return templates


def check_text(text: str, what: str) -> str:
    """Reject empty or whitespace-only prompts with an actionable message."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"the {what} is empty: set it, e.g. prompt.target='elf ears'")
    return text.strip()


@dataclass
class Prompt:
    """An edit request: move images of ``source`` ("face") toward ``target`` ("elf ears").

    ``negatives``: texts the edit must not move toward ("face with green eyes" for green lipstick), extra
    negatives of the CLIP-NCE loss (other losses ignore them). ``auto_negatives`` ({parts, max_cos}) derives
    more by one rule for every prompt (:func:`part_negatives`), once the CLIP is known. ``tem_input``: what the
    text-conditioned mapper reads, ``"sentence"`` (the paper: the target's CLIP embedding) or ``"words"``
    (:func:`content_words`, each embedded alone: texts made of trained words lie in the trained span) or
    ``"factored"`` (the modifier words and the noun apart, for a mapper that multiplies their codes: a colour
    bound to a part)."""

    target: str
    source: str
    templates: list[str] = field(default_factory=lambda: load_templates("imagenet"))
    name: str = ""
    negatives: list[str] = field(default_factory=list)
    auto_negatives: dict | None = None
    tem_input: str = "sentence"

    def __post_init__(self) -> None:
        if self.tem_input not in TEM_INPUTS:
            raise ValueError(f"prompt.tem_input must be one of {TEM_INPUTS}, got {self.tem_input!r}")
        self.target = check_text(self.target, "target prompt")
        self.source = check_text(self.source, "source text")
        if isinstance(self.negatives, str):
            raise ValueError(f"prompt.negatives must be a list of texts, got the string {self.negatives!r}")
        self.negatives = [check_text(n, "negative prompt") for n in (self.negatives or [])]
        if isinstance(self.templates, str):
            self.templates = load_templates(self.templates)
        self.name = self.name or self.target.replace(" ", "_")

    def with_templates(self, text: str) -> list[str]:
        return [t.format(text) for t in self.templates]


TEM_INPUTS = ("sentence", "words", "factored")
# function words that every prompt shares or that name no content ("face with elf ears and green lipstick")
STOPWORDS = frozenset("a an the and with of in on at to for or".split())


def content_words(target: str, source: str) -> list[str]:
    """The words of ``target`` that say what the edit is: not a word of ``source``, nor a function word.
    "face with elf ears and green lipstick" (source "face") -> ["elf", "ears", "green", "lipstick"]."""
    drop = STOPWORDS | set(source.lower().split())
    words = [w for w in target.lower().split() if w not in drop]
    if not words:
        raise ValueError(
            f"the prompt {target!r} has no word beyond the source text {source!r} and function words"
        )
    return words


def tem_factors(prompt: Prompt | Sequence[Prompt]) -> int:
    """How many E-sized pieces the TEM input of these prompts has: 2 for ``factored`` (modifier, noun), else 1."""
    first = prompt if isinstance(prompt, Prompt) else prompt[0]
    return 2 if first.tem_input == "factored" else 1


def part_negatives(
    target: str, parts: Sequence[str], similarity: Callable[[str, str], float], max_cos: float = 0.95
) -> list[str]:
    """The same rule for every prompt: the target's last word (its noun) replaced by each part noun of the domain,
    kept as a negative unless the CLIP reads it as the target itself (similarity >= max_cos: the part the prompt
    names, or a pair the CLIP cannot tell apart). "face with green lipstick" -> "face with green eyes", "... green
    skin", ...: the colour on the wrong part, the shortcut a CLIP weak at binding colours to parts rewards."""
    words = target.split()
    if len(words) < 2:  # a bare noun has no modifier to move onto another part
        return []
    stem = " ".join(words[:-1])
    out = []
    for part in parts:
        text = f"{stem} {part}"
        if text != target and text not in out and similarity(target, text) < max_cos:
            out.append(text)
    return out


def short_name(text: str, source: str) -> str:
    """A prompt name from its text: "face with elf ears" (source "face") -> "elf_ears"."""
    words = text.split()
    lead = source.split() + ["with"]
    if words[: len(lead)] == lead and len(words) > len(lead):
        words = words[len(lead) :]
    return "_".join(words)


def prompt_set(
    targets: Sequence[str],
    source: str,
    templates: str | Sequence[str] = "imagenet",
    negatives: Sequence[str] = (),
    auto_negatives: dict | None = None,
    name: str = "multi",
    tem_input: str = "sentence",
) -> list[Prompt]:
    """Several prompts for one text-conditioned mapper (``prompt=multi``): one :class:`Prompt` per target text,
    sharing the source text, the templates and the negative rule; each named after its text."""
    if isinstance(targets, str) or not targets:
        raise ValueError(
            f"prompt.targets must be a non-empty list of texts, got {targets!r}: "
            "prompt.targets='[face with elf ears,face with green lipstick]'"
        )
    texts = [check_text(t, "target prompt") for t in targets]
    if len(set(texts)) != len(texts):
        raise ValueError(f"prompt.targets repeats a text: {texts}")
    loaded = load_templates(templates) if isinstance(templates, str) else list(templates)
    return [
        Prompt(t, source, loaded, short_name(t, source), list(negatives), auto_negatives, tem_input)
        for t in texts
    ]
