"""Packing the build into the shipped assets: fp16 files with a manifest (sha256 of each), and back to a build dir.

``export`` writes what ``src.toyworld.assets`` loads; ``unpack_to_work`` turns shipped assets into finished build
stages (``python -m src.toyworld.build --from-assets``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from src.data.prompts import load_templates
from src.models.weights import save_atomic
from src.toyworld.assets import (
    ASSET_DIR,
    CLIP_NAME,
    latest_clip,
    load,
    load_clip,
    load_identity,
    load_report,
    manifest,
    sha256,
)
from src.toyworld.attributes import SCHEMA
from src.toyworld.captions import NEON_TEMPLATES, NEUTRAL_CAPTIONS, TEMPLATES
from src.toyworld.judge.oracle import load_oracle
from src.toyworld.models import build_generator


def _fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def used_token_ids() -> torch.Tensor:
    """Token ids of every caption, template and prompt the toy CLIP can meet (its vocabulary)."""
    import open_clip

    words: set[str] = set(NEUTRAL_CAPTIONS)
    for spec in SCHEMA.values():
        for phrases in spec.phrases.values():
            words.update(phrases)
    texts = list(words) + [t.format("x") for t in TEMPLATES + NEON_TEMPLATES]
    texts += [t.format("face with cyberpunk style") for t in load_templates("toyfaces")]
    texts += ["a", "an", "the", "with", "and", ",", ".", "x", "face", "person", "cyberpunk", "neon"]
    tokens = open_clip.get_tokenizer(CLIP_NAME)(texts)
    return torch.unique(tokens)


def pack_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A trained toy CLIP's state dict in the asset format: fp16, the token embedding kept for the vocabulary's rows
    only (``token_embedding.rows`` / ``.ids``; ``load_clip`` restores the full table)."""
    state = dict(state)
    ids = used_token_ids()
    emb = state.pop("token_embedding.weight")
    clip = _fp16(state)
    clip["token_embedding.rows"], clip["token_embedding.ids"] = emb[ids].half(), ids.int()
    return clip


def export(work: Path, out: Path, cfg: Any, build_command: str) -> None:
    """fp16 assets + report + manifest (sha256 of each file, the build config and command)."""
    out.mkdir(parents=True, exist_ok=True)
    ae = torch.load(work / "autoencoder.pt", map_location="cpu", weights_only=True)
    gen = build_generator(cfg.seed)
    gen.load_state_dict(ae["generator"])
    lat = torch.load(work / "latents.pt", map_location="cpu", weights_only=True)
    latent_avg = lat.get("latent_avg", lat["train"].mean((0, 1)))  # kept as shipped when unpacked from assets
    torch.save({"g_ema": _fp16(gen.state_dict()), "latent_avg": latent_avg.half()}, out / "generator.pt")
    torch.save(_fp16(ae["inverter"]), out / "inverter.pt")
    calibrated = work / "oracle_calibrated.pt"  # the calibrate stage's oracle, when the build has one
    oracle = torch.load(
        calibrated if calibrated.is_file() else work / "oracle.pt", map_location="cpu", weights_only=True
    )
    state = _fp16(oracle["state_dict"])
    if "body.0.weight" in state:  # an ensemble's members carry their own widths in their weights
        state["width"] = torch.tensor(oracle["state_dict"]["body.0.weight"].shape[0])
    torch.save(state, out / "oracle.pt")
    identity = torch.load(work / "identity.pt", map_location="cpu", weights_only=True)
    state = _fp16(identity["state_dict"])
    state["width"] = torch.tensor(identity["state_dict"]["body.0.weight"].shape[0])
    state["dim"] = torch.tensor(identity["state_dict"]["head.weight"].shape[0])
    torch.save(state, out / "identity.pt")
    clip = pack_clip(torch.load(latest_clip(work), map_location="cpu", weights_only=True)["state_dict"])
    torch.save(clip, out / "clip.pt")
    if (work / "clip_resnet.pt").is_file():  # the second CLIP (the clip_resnet stage)
        state = torch.load(work / "clip_resnet.pt", map_location="cpu", weights_only=True)["state_dict"]
        torch.save(pack_clip(state), out / "clip_resnet.pt")
    torch.save(
        {
            k: (_fp16({k: v})[k] if k in ("train", "test") else v)
            for k, v in lat.items()
            if k not in ("sampler", "latent_avg")
        },
        out / "latents.pt",
    )
    torch.save(_fp16(lat["sampler"]), out / "sampler.pt")
    if (work / "report.json").is_file():  # a provisional export (before calibrate/report) has no report yet
        report = json.loads((work / "report.json").read_text())
        # the identity net's held-out verification: its own stage measures it, the shipped report carries it
        report["identity_verification"] = identity["metrics"]
        if (work / "timings.json").is_file():  # the report stage wrote its times before its own had finished
            report["build_seconds"] = json.loads((work / "timings.json").read_text())
        (out / "report.json").write_text(json.dumps(report, indent=2))
    elif (out / "report.json").is_file():
        (out / "report.json").unlink()  # never ship the report of other weights
    (out / "build_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    write_manifest(out, build_command)


def write_manifest(out: Path, build_command: str) -> None:
    """manifest.json: sha256 and size of every asset file, the build command and the torch version."""
    files = sorted(p for p in out.iterdir() if p.is_file() and p.name != "manifest.json")
    man = {
        "build_command": build_command,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "files": {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(man, indent=2))


def unpack_to_work(work: Path, asset_dir: Path | str = ASSET_DIR) -> list[str]:
    """Write the build's fp32 stage outputs from shipped assets (fp16 -> fp32 is exact), so that later stages can
    be rebuilt without re-running the earlier ones (``build --from-assets``). Existing files are kept."""
    work.mkdir(parents=True, exist_ok=True)
    wrote = []
    shipped = manifest(asset_dir)["files"]

    def put(name: str, make: Any) -> None:
        if not (work / name).is_file():
            save_atomic(make(), work / name)
            wrote.append(name)

    f32 = lambda s: {k: v.float() if v.is_floating_point() else v for k, v in s.items()}  # noqa: E731
    put("oracle.pt", lambda: {"state_dict": f32(load_oracle(str(asset_dir)).state_dict())})
    put("clip.pt", lambda: {"state_dict": load_clip(str(asset_dir)).model.state_dict()})
    if "clip_resnet.pt" in shipped:
        put(
            "clip_resnet.pt",
            lambda: {
                "state_dict": load_clip(str(asset_dir), "clip_resnet.pt").model.state_dict(),
                "metrics": {},
            },
        )
    built = Path(asset_dir) / "build_config.json"
    built = json.loads(built.read_text()) if built.is_file() else {}
    for stage_file, knob in (("clip_tuned.pt", "clip_tune_steps"), ("clip_hardened.pt", "harden_steps")):
        if built.get(knob, 0) > 0:  # the shipped CLIP is that stage's: mark it done, so it is not tuned twice
            put(
                stage_file,
                lambda: {"state_dict": load_clip(str(asset_dir)).model.state_dict(), "metrics": {}},
            )

    def identity() -> dict[str, Any]:
        report = load_report(str(asset_dir)) if "report.json" in shipped else {}
        return {
            "state_dict": load_identity(str(asset_dir)).state_dict(),
            "metrics": report.get("identity_verification", {}),
        }

    if "identity.pt" in shipped:
        put("identity.pt", identity)
    gen = load("generator.pt", asset_dir)
    put(
        "autoencoder.pt",
        lambda: {"generator": f32(gen["g_ema"]), "inverter": f32(load("inverter.pt", asset_dir))},
    )

    def latents() -> dict[str, Any]:
        lat = load("latents.pt", asset_dir)
        lat = {k: v.float() if k in ("train", "test") else v for k, v in lat.items()}
        lat["sampler"] = f32(load("sampler.pt", asset_dir))
        # the mean of the fp32 latents, as the generator shipped it (a mean of fp16 latents differs in its last bits)
        lat["latent_avg"] = gen["latent_avg"].float()
        return lat

    put("latents.pt", latents)
    if not (work / "timings.json").is_file() and "report.json" in shipped:
        # the unpacked stages keep the times they took when they were built
        times = {
            k: v for k, v in load_report(str(asset_dir)).get("build_seconds", {}).items() if k != "export"
        }
        (work / "timings.json").write_text(json.dumps(times, indent=2))
        wrote.append("timings.json")
    return wrote
