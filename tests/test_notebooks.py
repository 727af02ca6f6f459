"""Notebooks: committed without outputs; executed end to end by `make test-full` (slow)."""

from __future__ import annotations

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_stripped():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "results.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: run nbstripout"
            assert not cell.get("metadata"), f"{path.name}: cell metadata left (run nbstripout)"


def execute(name: str, monkeypatch, **env: str) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    for key, value in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **env}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
            out.append(str(o.get("data", {}).get("text/markdown", "")))
    return "\n".join(out)


@pytest.fixture(scope="module")
def toyfaces_assets(tmp_path_factory) -> str:
    """The shipped toyfaces assets if built, else a smoke build (about 30 s)."""
    shipped = ROOT / "src" / "toyworld" / "assets"
    if (shipped / "manifest.json").is_file():
        return str(shipped)
    from src.toyworld.build.cli import main as build_main

    root = tmp_path_factory.mktemp("toyfaces")
    assert build_main(["--smoke", "--work", str(root / "work"), "--out", str(root / "assets")]) == 0
    return str(root / "assets")


@pytest.mark.slow
def test_quickstart_on_toyfaces(monkeypatch, tmp_path, toyfaces_assets):
    nb = execute("quickstart.ipynb", monkeypatch, CFCLIP_NB_ASSET_DIR=toyfaces_assets, CFCLIP_NB_STEPS="10",
                 CFCLIP_NB_OUT=str(tmp_path / "run"))  # fmt: skip
    text = text_of(nb)
    assert "domain=toyfaces" in text and "edit_accuracy" in text and "preservation" in text
    assert (tmp_path / "run" / "eval" / "eval_grid.png").is_file()
    assert sum(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", [])) >= 3


@pytest.mark.slow
def test_quickstart_falls_back_to_tiny(monkeypatch, tmp_path):
    nb = execute("quickstart.ipynb", monkeypatch, CFCLIP_NB_DOMAIN="tiny", CFCLIP_NB_STEPS="4",
                 CFCLIP_NB_OUT=str(tmp_path / "run"))  # fmt: skip
    assert "domain=tiny" in text_of(nb) and "clip_score" in text_of(nb)


@pytest.mark.slow
def test_results_notebook_plots_a_report(monkeypatch, tmp_path):
    from src.report import report
    from tests.test_report import ACC, make_job

    num = 0
    for (loss, prompt), accs in ACC.items():
        for seed, acc in enumerate(accs):
            result = None if acc is None else {"edit_accuracy": acc, "preservation": 0.9 - acc / 10}
            err = {"error": "RuntimeError", "message": "nan"} if acc is None else None
            make_job(
                tmp_path / "sweep", num, [f"loss={loss}", f"prompt={prompt}", f"seed={seed}"], result, err
            )
            num += 1
    report([str(tmp_path / "sweep")], str(tmp_path / "results" / "ablation_demo"))
    nb = execute("results.ipynb", monkeypatch, CFCLIP_RESULTS_DIR=str(tmp_path / "results"))
    text = text_of(nb)
    assert "1 studies" in text and "ablation_demo" in text and "CLIP-NCE beats the global" in text
    assert sum(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", [])) >= 4


@pytest.mark.slow
def test_results_notebook_on_the_committed_results(monkeypatch):
    monkeypatch.delenv("CFCLIP_RESULTS_DIR", raising=False)
    text = text_of(execute("results.ipynb", monkeypatch))
    committed = list((ROOT / "experiments" / "results").glob("*/results.csv"))
    assert f"{len(committed)} studies" in text
    if not committed:
        assert "No committed results yet" in text
