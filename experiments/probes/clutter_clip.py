"""Probe: a shipped toy CLIP fine-tuned on renders with clutter strokes painted on (``train_clip``'s
``robust_clutter``), one-sided edits (``robust_half``) or parts repainted in near-miss colours (``robust_recolour``),
each captioned with what it shows against another value as the negative, then written as a full asset dir (the
base assets with the tuned file, manifest updated) for ``domain.asset_dir`` (docs/guide.md). ``--file
clip_resnet.pt`` tunes the second CLIP; ``--base`` stacks a tune onto another probe's asset dir.

With ``--from-clip`` it tunes another open_clip state dict instead (the second CLIP of ``clip_ensemble_train.py``,
``--arch``) and writes ``<out>/clip.pt`` in that file's format (for ``+guide=toyfaces_pair
domain.extra_clips.0.checkpoint=<out>/clip.pt``), not an asset dir.

Resumable, one thread. Usage:
  python experiments/probes/clutter_clip.py [--steps 800] [--clutter 0.5] [--half 0] [--out outputs/clutter]
      [--from-clip outputs/clip_ensemble/clip_resnet.pt --arch resnet]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import clip_ensemble_train as cet  # sibling probe (on sys.path as a script)
import torch


def write_assets(state: dict, out: Path, file: str = "clip.pt", base: str | None = None) -> Path:
    """The asset dir ``base`` (default: the shipped one) with ``state`` as ``file`` (the export's format) and the
    manifest's sha256 updated."""
    from src.toyworld import assets
    from src.toyworld.build.export import pack_clip

    dst = out / "assets"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(base or assets.ASSET_DIR, dst)
    torch.save(pack_clip(state), dst / file)
    man = json.loads((dst / "manifest.json").read_text())
    man["files"][file]["sha256"] = assets.sha256(dst / file)
    (dst / "manifest.json").write_text(json.dumps(man, indent=1))
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--clutter", type=float, default=0.5)
    p.add_argument("--half", type=float, default=0.0)
    p.add_argument("--occlude", type=float, default=0.0, help="share of plain images with one side cut off")
    p.add_argument("--recolour", type=float, default=0.0, help="share with a part in a near-miss colour")
    p.add_argument("--misplace", type=float, default=0.0, help="share with a part's colour painted beside it")
    p.add_argument("--file", default="clip.pt", help="the asset CLIP to tune: clip.pt or clip_resnet.pt")
    p.add_argument("--base", default=None, help="asset dir to start from and write onto (default: shipped)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/clutter")
    p.add_argument(
        "--from-clip", default=None, help="an open_clip state dict to tune (default: the shipped CLIP)"
    )
    p.add_argument("--arch", default="resnet", help="its architecture (clip_ensemble_train.ARCHS)")
    a = p.parse_args()
    torch.set_num_threads(1)
    from src.models.clip import clip_preprocess
    from src.toyworld import assets
    from src.toyworld.clip_training import train_clip

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.from_clip:
        source = torch.load(a.from_clip, map_location="cpu", weights_only=True)
        model, tokenizer = cet.new_model(a.arch)
        model.load_state_dict(source["state_dict"])
    else:
        model, tokenizer = assets.new_clip_model(0, a.file)
        model.load_state_dict(assets.load_clip(a.base, a.file).model.state_dict())
    model.requires_grad_(True)
    cfg = assets.clip_preprocess_cfg(model)
    pre = lambda x: clip_preprocess(x, cfg["size"], cfg["mean"], cfg["std"])  # noqa: E731
    t = time.perf_counter()
    metrics = train_clip(
        model, tokenizer, pre, 0, 128, a.lr, seed=a.seed + 1, robust_steps=a.steps, robust_perspective=0.5,
        robust_colour=0.08, robust_colour_grid=1, robust_clutter=a.clutter, robust_half=a.half, robust_occlude=a.occlude, robust_recolour=a.recolour, robust_misplace=a.misplace,
        resume_path=str(out / "clip.resume.pt"),
    )  # fmt: skip
    metrics["seconds"] = time.perf_counter() - t
    if a.from_clip:
        meta = {"from": a.from_clip, **metrics}
        torch.save(
            {"state_dict": model.state_dict(), "config": source.get("config"), "metrics": meta},
            out / "clip.pt",
        )
        zs = cet.zero_shot(cet.second_clip(str(out / "clip.pt"), a.arch))
    else:
        zs = cet.zero_shot(
            assets.load_clip(str(write_assets(model.state_dict(), out, a.file, a.base)), a.file)
        )
    (out / "clip.json").write_text(json.dumps({"metrics": metrics, "zero_shot": zs, **vars(a)}, indent=1))
    print(json.dumps({"zero_shot": zs, "seconds": metrics["seconds"]}))


if __name__ == "__main__":
    main()
