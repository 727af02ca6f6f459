"""Bad authors' mapper files and runs the format cannot hold: one ``cfclip: error:`` line naming the file and what
is wrong, exit status 2, and nothing written (``python -m src.convert``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.convert import main
from tests.official_fakes import fake_official

ROOT = Path(__file__).resolve().parents[1]
NO_WEIGHTS = ["domain=tiny", "domain.clip.model_config=tiny512"]


def _drop(key: str):
    def edit(f: dict) -> None:
        del f["state_dict"][key]

    return edit


def _opt(**values):
    def edit(f: dict) -> None:
        f["opts"].update(values)

    return edit


def _tensor(key: str, shape: tuple[int, ...]):
    def edit(f: dict) -> None:
        f["state_dict"][key] = torch.ones(shape)

    return edit


def _drop_decoder(f: dict) -> None:
    f["state_dict"] = {k: v for k, v in f["state_dict"].items() if not k.startswith("decoder.")}


def _single_mapper(f: dict) -> None:
    sd = f["state_dict"]
    for k in [k for k in sd if k.startswith("mapper.")]:
        del sd[k]
    for j in range(1, 5):
        sd[f"mapper.mapping.mapping.{j}.weight"] = torch.randn(512, 512)
        sd[f"mapper.mapping.mapping.{j}.bias"] = torch.randn(512)


def _extra_text_mappers(f: dict) -> None:  # 18 text nets (a 1024 file's) in a 512 file
    sd = f["state_dict"]
    for c in (16, 17):
        for j in range(1, 5):
            sd[f"text_mapper.mapper_{c}.mapping.{j}.weight"] = torch.randn(512, 512)
            sd[f"text_mapper.mapper_{c}.mapping.{j}.bias"] = torch.randn(512)


# name: (kind of the base file, how it is broken, what the error must say)
BAD = {
    "missing key": (
        "styleclip",
        _drop("mapper.fine_mapping.mapping.3.bias"),
        "missing keys mapper.fine_mapping",
    ),
    "missing decoder key": (
        "styleclip",
        _drop("decoder.convs.2.conv.weight"),
        "missing keys decoder.convs.2",
    ),
    "no decoder": ("styleclip", _drop_decoder, "no decoder.* keys"),
    "not a decoder": ("styleclip", _drop("decoder.input.input"), "not a StyleGAN2 generator"),
    "size vs decoder": (
        "styleclip",
        _opt(stylegan_size=1024),
        "opts.stylegan_size is 1024 (18 style layers)",
    ),
    "size vs text mapper": (
        "cfclip",
        _extra_text_mappers,
        "the text mapper has 18 nets, stylegan_size 512 needs 16",
    ),
    "mapper shape": (
        "styleclip",
        _tensor("mapper.course_mapping.mapping.2.weight", (512, 256)),
        "shape mismatch",
    ),
    "decoder shape": (
        "styleclip",
        _tensor("decoder.to_rgbs.1.conv.weight", (1, 3, 8, 1, 1)),
        "shape mismatch",
    ),
    "flag vs keys": ("styleclip", _opt(no_fine_mapper=True), "unexpected keys mapper.fine_mapping"),
    "unknown mapper_type": ("styleclip", _opt(mapper_type="TransformerMapper"), "unknown opts.mapper_type"),
    "SingleMapper type": ("styleclip", _opt(mapper_type="SingleMapper"), "'SingleMapper'"),
    "single-mapper keys": ("styleclip", _single_mapper, "a single-mapper file"),
    "no description": ("styleclip", _opt(description=""), "opts.description"),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    out = {}
    for kind in ("styleclip", "cfclip"):
        out[kind] = root / f"{kind}.pt"
        torch.save(fake_official(kind, 512, seed=1), out[kind])
    return out


def check_refused(capsys, tmp_path: Path, args: list[str], phrase: str, names: str) -> str:
    """main(args) exits 2 with one cfclip: error: line holding ``names`` and ``phrase``, and writes nothing."""
    before = sorted(tmp_path.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cfclip: error: "), err
    assert names in err and phrase in err, err
    assert sorted(tmp_path.iterdir()) == before  # nothing written, no temporary file left
    return err


@pytest.mark.parametrize("name", list(BAD))
def test_bad_mapper_file(bases, tmp_path, capsys, name):
    kind, edit, phrase = BAD[name]
    file = torch.load(bases[kind], weights_only=True)
    edit(file)
    bad = tmp_path / "mapper.pt"
    torch.save(file, bad)
    check_refused(capsys, tmp_path, [str(bad), str(tmp_path / "run.ckpt"), *NO_WEIGHTS], phrase, str(bad))


def test_not_a_mapper_and_truncated_files(bases, tmp_path, capsys):
    generator = tmp_path / "stylegan2.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}}, generator)
    check_refused(
        capsys, tmp_path, [str(generator), str(tmp_path / "r.ckpt")], "not an authors' mapper", str(generator)
    )
    cut = tmp_path / "cut.pt"
    cut.write_bytes(bases["styleclip"].read_bytes()[:200_000])
    check_refused(capsys, tmp_path, [str(cut), str(tmp_path / "r.ckpt")], "truncated", str(cut))


def test_existing_output_and_bad_overrides(bases, tmp_path, capsys):
    out = tmp_path / "run.ckpt"
    out.write_bytes(b"mine")
    check_refused(capsys, tmp_path, [str(bases["styleclip"]), str(out)], "--overwrite", str(out))
    assert out.read_bytes() == b"mine"
    args = [str(bases["styleclip"]), str(tmp_path / "r.ckpt")]
    check_refused(capsys, tmp_path, [*args, "model.step_size=0.2"], "come from the file", "model.step_size")
    src = str(bases["cfclip"])
    check_refused(capsys, tmp_path, [src, str(tmp_path / "r.ckpt"), "domain=tiny"], "gives 64-d", "tiny512")


@pytest.fixture(scope="module")
def converted(bases, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "run.ckpt"
    assert main([str(bases["cfclip"]), str(out), *NO_WEIGHTS]) == 0
    return out


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"model.mapper.pixelnorm_axis": "feature"}, "pixelnorm_axis=feature"),
        ({"model.step_size": 0.2}, "model.step_size=0.2"),
        ({"prompt.tem_input": "words"}, "prompt.tem_input=words"),
        ({"prompts": [{"name": "a", "target": "a"}, {"name": "b", "target": "b"}]}, "2 texts"),
    ],
    ids=["feature-axis", "step", "tem-input", "multi-prompt"],
)
def test_export_refuses_what_the_format_cannot_hold(converted, tmp_path, capsys, change, phrase):
    ckpt = torch.load(converted, weights_only=True)
    for key, value in change.items():
        if key == "prompts":
            ckpt["prompts"] = value
            continue
        node, *path, leaf = key.split(".")
        d = ckpt["hyper_parameters"][node]
        for part in path:
            d = d[part]
        d[leaf] = value
    run = tmp_path / "ours.ckpt"
    torch.save(ckpt, run)
    check_refused(
        capsys, tmp_path, ["--to", "official", str(run), str(tmp_path / "theirs.pt")], phrase, str(run)
    )


def test_cli_exit_status(bases, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(bases["styleclip"].read_bytes()[:5000])
    proc = subprocess.run(
        [sys.executable, "-m", "src.convert", str(cut), str(tmp_path / "run.ckpt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("cfclip: error: ") and str(cut) in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pt"]
