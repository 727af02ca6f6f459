"""Prompts as data: target text, source text and a template set (a name of a file in ``templates/`` or a list)."""

from __future__ import annotations

from collections.abc import Sequence
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
    negatives of the CLIP-NCE loss (other losses ignore them)."""

    target: str
    source: str
    templates: list[str] = field(default_factory=lambda: load_templates("imagenet"))
    name: str = ""
    negatives: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
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
