"""The shipped toyfaces assets: export (fp16 + manifest with sha256) and verified loading.

Every load checks the file's sha256 against ``manifest.json`` and uses ``torch.load(weights_only=True)``.
The toy CLIP's token embedding is stored for the tokens its captions use only (the rest are zero rows): the
full 49408-row table would be most of the asset size.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from src.models.weights import WeightsError, load_checkpoint, save_atomic

ASSET_DIR = Path(__file__).parent / "assets"
CLIP_NAME = "toyfaces-clip"
CLIP_CONFIG = "toyfaces"
REBUILD = "Rebuild the assets with `python -m src.toyworld.build` (about an hour on 2 cores)."


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(asset_dir: Path | str = ASSET_DIR) -> dict[str, Any]:
    path = Path(asset_dir) / "manifest.json"
    if not path.is_file():
        raise WeightsError(f"toyfaces assets: {path} is missing. {REBUILD}")
    return json.loads(path.read_text())


def asset_path(name: str, asset_dir: Path | str = ASSET_DIR, verify: bool = True) -> Path:
    """Path of an asset file, checked against the manifest's sha256."""
    path = Path(asset_dir) / name
    entry = manifest(asset_dir)["files"].get(name)
    if entry is None:
        raise WeightsError(
            f"toyfaces assets: {name} is not listed in {Path(asset_dir) / 'manifest.json'}. {REBUILD}"
        )
    if not path.is_file():
        raise WeightsError(f"toyfaces assets: {path} is missing. {REBUILD}")
    if verify and sha256(path) != entry["sha256"]:
        raise WeightsError(
            f"toyfaces assets: {path} does not match its sha256 in the manifest (corrupt or "
            f"modified file). Restore it with `git checkout -- {path}` or: {REBUILD}"
        )
    return path


def load(name: str, asset_dir: Path | str = ASSET_DIR) -> Any:
    return load_checkpoint(asset_path(name, asset_dir), what=f"toyfaces asset {name}")


# ---- the networks ---------------------------------------------------------------------------------------
def new_clip_model(seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """A trainable open_clip model of the toy architecture + its tokenizer (for the build)."""
    import open_clip

    from src.models.clip import register_model_config
    from src.models.factory import clip_model_config

    register_model_config(CLIP_NAME, clip_model_config(CLIP_CONFIG))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(CLIP_NAME, pretrained=None)
    return model, open_clip.get_tokenizer(CLIP_NAME)


def guiding_clip(work: Path, seed: int = 0) -> torch.nn.Module:
    """The build's guiding CLIP as a FrozenCLIP: the harden stage's, else the clip stage's."""
    from src.models.clip import FrozenCLIP

    path = work / "clip_hardened.pt"
    path = path if path.is_file() else work / "clip.pt"
    model, tokenizer = new_clip_model(seed)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    return FrozenCLIP(model, tokenizer)


def clip_preprocess_cfg(model: torch.nn.Module) -> dict[str, Any]:
    import open_clip

    cfg = dict(getattr(model.visual, "preprocess_cfg", {}))
    size = cfg.get("size", model.visual.image_size)
    return {
        "size": size if isinstance(size, int) else size[0],
        "mean": cfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
        "std": cfg.get("std", open_clip.OPENAI_DATASET_STD),
    }


def load_clip(asset_dir: str | None = None) -> torch.nn.Module:
    """The frozen toy CLIP through the same FrozenCLIP wrapper as real CLIP models."""
    from src.models.factory import create_clip

    clip = create_clip(CLIP_NAME, model_config=CLIP_CONFIG, seed=0)
    state = load("clip.pt", asset_dir or ASSET_DIR)
    rows, ids = state.pop("token_embedding.rows"), state.pop("token_embedding.ids")
    full = torch.zeros_like(clip.model.token_embedding.weight)
    full[ids.long()] = rows.float()
    state["token_embedding.weight"] = full
    clip.model.load_state_dict({k: v.float() for k, v in state.items()})
    return clip


def load_generator(asset_dir: str | None = None) -> torch.nn.Module:
    """The toy StyleGAN2 (rosinality-format checkpoint, strict load through the common factory)."""
    from src.models.factory import create_generator
    from src.toyworld.models import GENERATOR_CHANNEL_BASE, GENERATOR_KWARGS

    return create_generator(
        **GENERATOR_KWARGS,
        channel_base=GENERATOR_CHANNEL_BASE,
        checkpoint=str(asset_path("generator.pt", asset_dir or ASSET_DIR)),
    )


def load_inverter(asset_dir: str | None = None) -> torch.nn.Module:
    from src.toyworld.models import GENERATOR_KWARGS, Inverter

    inv = Inverter(_n_latent(GENERATOR_KWARGS["size"]), GENERATOR_KWARGS["style_dim"])
    inv.load_state_dict({k: v.float() for k, v in load("inverter.pt", asset_dir or ASSET_DIR).items()})
    return inv.eval().requires_grad_(False)


def load_oracle(asset_dir: str | None = None) -> torch.nn.Module:
    from src.toyworld.oracle import Oracle

    state = load("oracle.pt", asset_dir or ASSET_DIR)
    state.pop("width", None)
    return Oracle.from_state(state).requires_grad_(False)


def load_identity(asset_dir: str | None = None) -> torch.nn.Module:
    """The toy identity net (the ArcFace analogue of the identity loss; never the oracle), frozen."""
    from src.toyworld.identity import IdentityNet

    state = load("identity.pt", asset_dir or ASSET_DIR)
    net = IdentityNet(width=int(state.pop("width")), dim=int(state.pop("dim")))
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False)


def load_latents(split: str, asset_dir: str | None = None) -> dict[str, torch.Tensor]:
    """{'latents': (N, L, D) float32, 'labels': (N, A) render attributes, 'seeds': (N,) render seeds}."""
    data = load("latents.pt", asset_dir or ASSET_DIR)
    if split not in ("train", "test"):
        raise ValueError(f"toyfaces latent split must be 'train' or 'test', got {split!r}")
    return {
        "latents": data[split].float(),
        "labels": data[f"{split}_labels"],
        "seeds": data[f"{split}_seeds"],
    }


def load_sampler(asset_dir: str | None = None) -> torch.nn.Module:
    from src.toyworld.models import GENERATOR_KWARGS, GaussianLatentSampler

    state = {k: v.float() for k, v in load("sampler.pt", asset_dir or ASSET_DIR).items()}
    sampler = GaussianLatentSampler(
        _n_latent(GENERATOR_KWARGS["size"]), GENERATOR_KWARGS["style_dim"], rank=state["factor"].shape[1]
    )
    sampler.load_state_dict(state)
    return sampler


def load_report(asset_dir: str | None = None) -> dict[str, Any]:
    return json.loads(asset_path("report.json", asset_dir or ASSET_DIR).read_text())


def latent_file(split: str, asset_dir: str | None = None) -> str:
    """Write the split's latents as a plain [N, L, D] tensor file (for ``data.source=file``) and return it."""
    directory = Path(asset_dir or ASSET_DIR)
    cache = (
        Path.home()
        / ".cache"
        / "cfclip"
        / "toyfaces"
        / manifest(directory)["files"]["latents.pt"]["sha256"][:16]
    )
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{split}_latents.pt"
    if not path.is_file():
        save_atomic(load_latents(split, str(directory))["latents"].contiguous(), path)
    return str(path)


def _n_latent(size: int) -> int:
    return 2 * (size.bit_length() - 1) - 2


# ---- export -------------------------------------------------------------------------------------------
def _fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def used_token_ids() -> torch.Tensor:
    """Token ids of every caption, template and prompt the toy CLIP can meet (its vocabulary)."""
    import open_clip

    from src.data.prompts import load_templates
    from src.toyworld.attributes import SCHEMA
    from src.toyworld.captions import NEON_TEMPLATES, NEUTRAL_CAPTIONS, TEMPLATES

    words: set[str] = set(NEUTRAL_CAPTIONS)
    for spec in SCHEMA.values():
        for phrases in spec.phrases.values():
            words.update(phrases)
    texts = list(words) + [t.format("x") for t in TEMPLATES + NEON_TEMPLATES]
    texts += [t.format("face with cyberpunk style") for t in load_templates("toyfaces")]
    texts += ["a", "an", "the", "with", "and", ",", ".", "x", "face", "person", "cyberpunk", "neon"]
    tokens = open_clip.get_tokenizer(CLIP_NAME)(texts)
    return torch.unique(tokens)


def export(work: Path, out: Path, cfg: Any, build_command: str) -> None:
    """fp16 assets + report + manifest (sha256 of each file, the build config and command)."""
    out.mkdir(parents=True, exist_ok=True)
    ae = torch.load(work / "autoencoder.pt", map_location="cpu", weights_only=True)
    from src.toyworld.models import build_generator

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
    hardened = work / "clip_hardened.pt"  # the harden stage's CLIP, when the build has one
    clip = torch.load(
        hardened if hardened.is_file() else work / "clip.pt", map_location="cpu", weights_only=True
    )
    clip = clip["state_dict"]
    ids = used_token_ids()
    emb = clip.pop("token_embedding.weight")
    clip = _fp16(clip)
    clip["token_embedding.rows"], clip["token_embedding.ids"] = emb[ids].half(), ids.int()
    torch.save(clip, out / "clip.pt")
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
    built = Path(asset_dir) / "build_config.json"
    if (
        built.is_file() and json.loads(built.read_text()).get("harden_steps", 0) > 0
    ):  # the shipped CLIP is hardened
        put(
            "clip_hardened.pt",
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
