"""Print the shipped toyfaces build report as one JSON object: ``python -m src.toyworld.report``."""

from __future__ import annotations

import argparse
import json
import sys

from src.evaluation.toyfaces_report import TARGETS
from src.models.weights import WeightsError
from src.toyworld.assets import ASSET_DIR, load_report, manifest
from src.toyworld.hardening_stage import FOOLED_TARGET


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--asset-dir", default=str(ASSET_DIR), help="asset directory (default: the shipped one)")
    args = p.parse_args(argv)
    try:
        report = load_report(args.asset_dir)
        man = manifest(args.asset_dir)
    except WeightsError as err:
        print(f"cfclip: error: {err}", file=sys.stderr)
        return 2
    report["meets_targets"] = {k: report.get(k) is not None and report[k] >= v for k, v in TARGETS.items()}
    # the guide's held-out fooled rate, worst value: at most its target
    fooled = report.get("clip_fooled_heldout_max")
    report["meets_targets"]["clip_fooled_heldout_max"] = fooled is not None and fooled <= FOOLED_TARGET
    report["assets_bytes"] = sum(f["bytes"] for f in man["files"].values())
    report["build_command"] = man.get("build_command")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
