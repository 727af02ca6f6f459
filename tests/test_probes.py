"""Every probe under experiments/probes/ imports against today's code (import only: no probe runs, so this is fast)
and is cited from the doc that uses its result, so a probe whose API or doc went away fails here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "experiments" / "probes"
# sibling modules the probes import (no result of their own to cite, no command line)
LIBRARIES = {"delta_common", "colour_distance"}
DOCS = [*sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "history").glob("*.md"))]


def probe_files() -> list[Path]:
    return sorted(PROBES.glob("*.py"))


def test_there_are_probes_to_check():
    assert len(probe_files()) >= 5, f"{PROBES} lost its probes"


@pytest.mark.parametrize("path", probe_files(), ids=lambda p: p.stem)
def test_probe_imports_without_running(path, monkeypatch):
    monkeypatch.syspath_prepend(str(PROBES))  # the probes import their siblings by bare name
    monkeypatch.setattr(sys, "argv", [str(path)])  # a probe that reads argv at import time would fail here
    spec = importlib.util.spec_from_file_location(f"probe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if path.stem not in LIBRARIES:
        assert callable(getattr(module, "main", None)), f"{path.name}: no main() (work runs at import time?)"


@pytest.mark.parametrize("path", [p for p in probe_files() if p.stem not in LIBRARIES], ids=lambda p: p.stem)
def test_probe_is_cited_by_a_doc(path):
    citing = [d.relative_to(ROOT) for d in DOCS if f"probes/{path.name}" in d.read_text()]
    current = [d for d in citing if d.parent.name == "docs"]
    assert current, (
        f"experiments/probes/{path.name} is cited by no current doc (docs/*.md): cite it or remove it"
    )
