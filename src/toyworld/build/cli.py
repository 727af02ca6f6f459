"""The build's command line: ``python -m src.toyworld.build [--smoke] [--stages ...] [--from-assets] [--set K=V]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from src.toyworld import assets
from src.toyworld.build import export
from src.toyworld.build import stages as stage_module
from src.toyworld.build.config import BuildConfig, apply_settings
from src.toyworld.build.stages import EXTRA_STAGES, STAGES, Builder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m src.toyworld.build",
        description=stage_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--smoke", action="store_true", help="every stage for a few steps (seconds)")
    p.add_argument(
        "--work", default=None, help="build dir for resumable fp32 checkpoints (default: build/toyfaces)"
    )
    p.add_argument("--out", default=None, help="asset dir (default: the shipped src/toyworld/assets)")
    p.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES + EXTRA_STAGES}"
    )
    p.add_argument("--force", action="store_true", help="re-run stages that are done")
    p.add_argument(
        "--from-assets",
        action="store_true",
        help="first unpack the shipped assets (--out) into the build dir as finished stages (fp16 -> fp32)",
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override BuildConfig fields")
    args = p.parse_args(argv)
    cfg = BuildConfig.smoke() if args.smoke else BuildConfig()
    try:
        apply_settings(cfg, args.set)
    except ValueError as e:
        p.error(str(e))
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = set(stages) - set(STAGES + EXTRA_STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; known: {STAGES + EXTRA_STAGES}")
    if args.smoke and args.out is None:
        p.error("--smoke needs --out (a smoke build must not overwrite the shipped assets)")
    work = Path(args.work or ("build/toyfaces-smoke" if args.smoke else "build/toyfaces"))
    out = Path(args.out) if args.out else assets.ASSET_DIR
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.from_assets:
        wrote = export.unpack_to_work(work, out)
        print(f"[from-assets] {work}: wrote {wrote or 'nothing (all present)'}", flush=True)
    Builder(cfg, work, out).run(stages, force=args.force)
    return 0
