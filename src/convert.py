"""``python -m src.convert``: other people's files <-> this project's.

    python -m src.convert afhqdog.pkl afhqdog.pt                 # NVIDIA StyleGAN2-ADA pickle -> generator .pt
    python -m src.convert green_lipstick.pt run.ckpt [OVERRIDE]  # CF-CLIP / StyleCLIP mapper -> run checkpoint
    python -m src.convert --to official run.ckpt out.pt          # run checkpoint -> the authors' mapper format

The pickle is read by ``src.models.legacy.convert_network_pickle`` (a restricted unpickler: no code from the file
runs); the output holds ``g_ema`` (our Generator's state dict), ``latent_avg`` and ``generator_config`` (size,
style dim, mapping depth, channels read from the file) and loads with ``torch.load(weights_only=True)``. The authors'
mapper files go through ``src.official`` (``weights_only=True`` as well).
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

import torch

from src.models.legacy import convert_network_pickle
from src.models.stylegan2 import Generator
from src.models.weights import WeightsError, save_atomic
from src.official import describe, export_official, import_official
from src.utils.errors import user_error


def check_loads(ckpt: dict) -> None:
    """Strictly load the converted state dict into our Generator built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        g = Generator(**ckpt["generator_config"])
    try:
        g.load_state_dict(ckpt["g_ema"], strict=True, assign=True)
    except RuntimeError as err:
        raise WeightsError(f"converted weights do not fit our Generator: {str(err)[:500]}") from err


def convert(src: str | Path, dst: str | Path, key: str = "G_ema", overwrite: bool = False) -> dict:
    """Convert ``src`` (.pkl) into ``dst`` (.pt); returns the checkpoint dict written."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise WeightsError(f"{dst} exists; pass --overwrite to replace it")
    ckpt = convert_network_pickle(src, key=key)
    check_loads(ckpt)
    save_atomic(ckpt, dst)
    return ckpt


def is_network_pickle(path: str | Path) -> bool:
    """An NVIDIA ``.pkl`` (a plain pickle), not a ``torch.save`` zip archive such as the authors' mappers."""
    p = Path(path)
    return p.suffix == ".pkl" and not (p.is_file() and zipfile.is_zipfile(p))


def _shell(word: str) -> str:
    """``word`` as one shell word: bare when plain, else in double quotes (Hydra's single quotes stay readable)."""
    if re.fullmatch(r"[\w.=+/:,@-]+", word):
        return word
    return '"' + re.sub(r'(["\\$`])', r"\\\1", word) + '"'


def _user_error(err: Exception) -> bool:
    """A wrong input (file, option, override), reported as one line; anything else is a bug (traceback)."""
    from hydra.errors import HydraException

    return user_error(err) is not None or isinstance(err, (HydraException, FileExistsError))


def _run(args: argparse.Namespace) -> None:
    if args.to == "official":
        if args.overrides:
            raise ValueError(f"--to official takes a run checkpoint and an output only, not {args.overrides}")
        _, notes = export_official(args.input, args.output, overwrite=args.overwrite)
        print(f"wrote {args.output}: the authors' mapper format ({{'state_dict', 'opts'}})")
        for note in notes:
            print(f"note: {note}")
    elif is_network_pickle(args.input):
        if args.overrides:
            raise ValueError(f"config overrides apply to a mapper file only, not to {args.input}")
        ckpt = convert(args.input, args.output, key=args.key, overwrite=args.overwrite)
        cfg, source = ckpt["generator_config"], ckpt["source"]
        print(f"wrote {args.output}: generator_config={cfg}")
        if "conv_clamp" in source:
            print(
                f"note: the NVIDIA network clamps activations to +-{source['conv_clamp']:g}; ours does not clamp"
            )
    else:
        ckpt = import_official(args.input, args.output, args.overrides, overwrite=args.overwrite)
        print(f"wrote {args.output}: {describe(ckpt)}")
        print(f"edit:     python -m src.edit ckpt={args.output} image=<photo>   (or latents=<W+ .pt>)")
        print(f"evaluate: python -m src.eval ckpt={args.output}")
        tune = " ".join(_shell(o) for o in ckpt["source"]["finetune"])
        print(f"fine-tune: python -m src.train ckpt_path={args.output} {tune}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.convert",
        description="Convert an NVIDIA StyleGAN2-ADA .pkl into a generator .pt, an authors' CF-CLIP / StyleCLIP "
        "mapper .pt into a run checkpoint, or (--to official) a run checkpoint into the authors' mapper format. "
        "No code from any file runs.",
    )
    parser.add_argument(
        "input", help="afhqdog.pkl, an authors' mapper (green_lipstick.pt) or, with --to, a run .ckpt"
    )
    parser.add_argument(
        "output", help="file to write: generator .pt, run .ckpt or (--to official) mapper .pt"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="mapper files only: config overrides of the converted run, e.g. paths.weights_dir=/data/weights, "
        "domain=afhq_cat (default from stylegan_size), or domain=tiny domain.clip.model_config=tiny512 to try "
        "it without weights",
    )
    parser.add_argument(
        "--to", choices=["official"], help="write a run checkpoint's mapper in the authors' format"
    )
    parser.add_argument("--key", default="G_ema", help="network in an NVIDIA pickle (default: G_ema)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except Exception as err:
        if not _user_error(err):
            raise
        message = " ".join(str(err).split())  # one line
        print(f"cfclip: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
