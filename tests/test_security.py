"""No file can run code on load; secrets never reach a logged config; a run writes only inside its run dir."""

from __future__ import annotations

import ast
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from src.models.weights import WeightsError, load_checkpoint
from src.train import train
from tests.conftest import ROOT

SRC = ROOT / "src"
# the only modules allowed to unpickle by hand: each with a restricted Unpickler (an allow-list in find_class)
RESTRICTED_UNPICKLERS = {"src/models/legacy.py", "src/models/torchscript.py"}


def _name(node: ast.AST) -> str:
    """'torch.load' for torch.load, 'pickle.Unpickler' for pickle.Unpickler, '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_load_is_safe():
    problems = []
    for path in source_files():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                name = _name(node.func)
                if name == "torch.load" or name.endswith(".torch.load"):
                    flag = _kw(node, "weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        problems.append(f"{where}: torch.load without weights_only=True")
                elif name in {
                    "pickle.load",
                    "pickle.loads",
                    "dill.load",
                    "dill.loads",
                    "joblib.load",
                    "cloudpickle.load",
                }:
                    problems.append(f"{where}: {name} can run code from the file; use a restricted Unpickler")
                elif name == "torch.jit.load":
                    problems.append(f"{where}: torch.jit.load runs the archive's code")
                elif name in {"np.load", "numpy.load"} and isinstance(
                    _kw(node, "allow_pickle"), ast.Constant
                ):
                    if _kw(node, "allow_pickle").value:
                        problems.append(f"{where}: numpy.load(allow_pickle=True)")
                elif name == "yaml.load" and "Safe" not in ast.unparse(
                    _kw(node, "Loader") or ast.Constant("")
                ):
                    problems.append(f"{where}: yaml.load without SafeLoader (use yaml.safe_load)")
                elif name.endswith(".fit") and _kw(node, "ckpt_path") is not None:
                    flag = _kw(node, "weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        problems.append(f"{where}: Trainer.fit(ckpt_path=...) without weights_only=True")
            elif isinstance(node, ast.ClassDef) and any(_name(b).endswith("Unpickler") for b in node.bases):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if rel not in RESTRICTED_UNPICKLERS:
                    problems.append(f"{where}: an Unpickler outside {sorted(RESTRICTED_UNPICKLERS)}")
                elif "find_class" not in methods:
                    problems.append(f"{where}: {node.name} does not restrict find_class")
    assert not problems, "\n".join(problems)


def test_the_grep_catches_an_unsafe_load(tmp_path, monkeypatch):
    # the check above is not vacuous: an unsafe file in src/ is reported
    fake = tmp_path / "src"
    fake.mkdir()
    (fake / "bad.py").write_text("import torch, pickle\nx = torch.load('a.pt')\ny = pickle.loads(b'')\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError) as exc:
        test_every_load_is_safe()
    assert "src/bad.py:2: torch.load without weights_only=True" in str(exc.value)
    assert "src/bad.py:3: pickle.loads can run code" in str(exc.value)


class Payload:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_code_is_refused_and_nothing_runs(tmp_path, fast_cfg, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "x": Payload(marker)}, evil)
    with pytest.raises(WeightsError, match="refused to load .*could run code"):
        load_checkpoint(evil)
    from src.utils.errors import run_task

    cfg = fast_cfg(f"ckpt_path={evil}")
    with pytest.raises(SystemExit):
        run_task(train, cfg, output_dir=cfg.paths.output_dir)
    assert "refused to load" in capsys.readouterr().err
    legacy = tmp_path / "evil.pkl"
    legacy.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    from src.models.legacy import UnsafePickleError, read_network_pickle

    with pytest.raises(UnsafePickleError, match="refused global 'posix.system'|refused global 'os.system'"):
        read_network_pickle(legacy)
    assert not marker.exists(), "code from the file ran"


# ---- secrets -------------------------------------------------------------------------------------------------
def test_secrets_never_reach_the_logged_config(fast_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-0123456789")
    from pytorch_lightning.loggers import CSVLogger

    received = []
    real = CSVLogger.log_hyperparams
    monkeypatch.setattr(
        CSVLogger,
        "log_hyperparams",
        lambda self, params, *a, **k: received.append(params) or real(self, params, *a, **k),
    )
    cfg = fast_cfg(
        "+logger.wandb.api_key=literal-key-456789",  # a key typed into the config (no _target_: not instantiated)
        "+secrets.token=${oc.env:WANDB_API_KEY}",  # an env interpolation under a secret-looking key
        "+notes=run by ${oc.env:WANDB_API_KEY}",  # ...and under an innocent one
        "trainer.max_steps=1",
    )
    train(cfg)
    (params,) = received
    text = repr(params) + (tmp_path / "csv" / "hparams.yaml").read_text()
    assert "wandb-secret-0123456789" not in text and "literal-key-456789" not in text
    assert params["logger"]["wandb"]["api_key"] == "***" and params["secrets"] == "***"
    assert params["notes"] == "***"
    assert params["loss"]["terms"]["clip_nce"]["weight"] == 0.3, "ordinary values are logged as they are"


# ---- where a run writes ---------------------------------------------------------------------------------------
def test_a_run_writes_only_inside_its_run_dir(fast_cfg, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run = tmp_path / "run"
    cfg = fast_cfg("eval_after_fit=true", "trainer.max_steps=2")
    for key in ("paths.output_dir", "paths.log_dir", "hydra.runtime.output_dir"):
        parent, leaf = key.rsplit(".", 1)
        cfg_node = cfg
        for part in parent.split("."):
            cfg_node = cfg_node[part]
        cfg_node[leaf] = str(run)
    top_before = sorted(os.listdir(ROOT))
    others_before = sorted(p.name for p in tmp_path.iterdir())
    train(cfg)
    assert os.listdir(cwd) == [], f"the run wrote into the working dir: {os.listdir(cwd)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others_before, "run"]), (
        "wrote next to its run dir"
    )
    assert sorted(os.listdir(ROOT)) == top_before, "the run created files at the top of the repository"
    written = {p.relative_to(run).parts[0] for p in run.rglob("*") if p.is_file()}
    assert {"checkpoints", "csv", "grids", "eval"} <= written
