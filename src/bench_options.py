"""Options of ``src.bench``: presets, bench keys vs train overrides, and the composed train config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TOYFACES_ASSETS = Path(__file__).resolve().parent / "toyworld" / "assets" / "manifest.json"

# Overrides of conf/train.yaml shared by every preset: nothing is logged or saved, the paper's loss and aug.
BASE_OVERRIDES = ["logger=none", "callbacks=none", "loss=clip_nce", "aug=perspective", "trainer=cpu"]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"overrides": ["domain=tiny"], "batch": 2, "views": 8, "steps": 20, "warmup": 3, "reg": True},
    "toyfaces": {"overrides": [], "batch": 2, "views": 8, "steps": 10, "warmup": 2, "reg": False},
    "ffhq1024": {
        "overrides": [
            "domain=tiny",
            "domain.name=ffhq1024-random",
            "domain.templates=imagenet",
            "domain.generator.size=1024",
            "domain.generator.style_dim=512",
            "domain.generator.n_mlp=8",
            "domain.generator.channel_multiplier=2",
            "domain.generator.channel_max=512",
            "+domain.generator.channel_base=16384",
            "domain.clip.model_name=ViT-B-32",
            "+domain.clip._convert_=all",
        ],
        "batch": 2,
        "views": 8,
        "steps": 3,  # on CPU one step takes seconds
        "warmup": 1,
        "cuda_steps": 20,  # on a GPU ~0.1 s: enough rounds for a stable median, warm-up past autotuning
        "cuda_warmup": 5,
        "reg": False,
    },
}

# The paper's identity term (conf/domain/ffhq.yaml) on an IR-SE50 with random weights (no file needed).
PAPER_IDENTITY = {
    "_target_": "src.losses.IdentityLoss",
    "weight": 0.2,
    "pool_size": 256,
    "crop": [35, 223, 32, 220],
    "out_size": 112,
    "backbone": {
        "_target_": "src.models.arcface.Backbone",
        "input_size": 112,
        "num_layers": 50,
        "mode": "ir_se",
    },
}

# The toyfaces world's architecture, for when its shipped assets are absent (random weights).
TOYFACES_RANDOM = [
    "domain=tiny",
    "domain.name=toyfaces-random",
    "domain.templates=toyfaces",
    "domain.generator.size=64",
    "domain.generator.style_dim=128",
    "domain.generator.n_mlp=2",
    "domain.generator.channel_multiplier=1",
    "domain.generator.channel_max=128",
    "+domain.generator.channel_base=4096",
    "domain.clip.model_name=toyfaces-clip",
    "domain.clip.model_config=toyfaces",
]

BENCH_KEYS = frozenset(
    "preset steps warmup device batch views precision compile channels_last threads frozen_grads "
    "regularizers seed tf32 cache official graph".split()
)


# ---- options --------------------------------------------------------------------------------------------
def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"bench: expected a boolean (true/false), got {value!r}")


def parse_args(argv: list[str], usage: str = "") -> tuple[dict[str, Any], list[str]]:
    """``key=value`` tokens -> (bench options with preset defaults filled in, Hydra overrides); ``--help``
    prints ``usage``."""
    raw: dict[str, str] = {}
    overrides: list[str] = []
    for token in argv:
        if token in ("-h", "--help"):
            print(usage or "python -m src.bench preset=tiny|toyfaces|ffhq1024 [key=value ...]")
            raise SystemExit(0)
        key, sep, value = token.partition("=")
        if not sep:
            raise SystemExit(f"bench: arguments are key=value, got {token!r} (try --help)")
        if key.lstrip("+~") in BENCH_KEYS:
            raw[key.lstrip("+~")] = value
        else:
            overrides.append(token)
    preset = raw.get("preset", "tiny")
    if preset not in PRESETS:
        raise SystemExit(f"bench: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    device = raw.get("device", "cuda" if torch.cuda.is_available() else "cpu")
    kind = device.split(":")[0]  # cuda:1 gets the CUDA defaults too
    precision = raw.get("precision", "32")
    if precision not in ("32", "bf16"):
        raise SystemExit(f"bench: precision must be 32 or bf16, got {precision!r}")
    cache = raw.get("cache", "warm")
    if cache not in ("warm", "cold", "off"):
        raise SystemExit(f"bench: cache must be warm, cold or off, got {cache!r}")
    opts = {
        "preset": preset,
        "device": device,
        "steps": int(raw.get("steps", p.get(f"{kind}_steps", p["steps"]))),
        "warmup": int(raw.get("warmup", p.get(f"{kind}_warmup", p["warmup"]))),
        "batch": int(raw.get("batch", p["batch"])),
        "views": int(raw.get("views", p["views"])),
        "precision": precision,
        "compile": _bool(raw.get("compile", "false")),
        "channels_last": _bool(raw["channels_last"]) if "channels_last" in raw else None,
        "threads": int(raw["threads"]) if "threads" in raw else None,
        "frozen_grads": _bool(raw.get("frozen_grads", "true")),
        "regularizers": _bool(raw.get("regularizers", str(p["reg"]))),
        "seed": int(raw.get("seed", 0)),
        "tf32": _bool(raw.get("tf32", "false")),
        "cache": cache,
        "official": _bool(raw.get("official", "true")),
        "graph": _bool(raw.get("graph", "false")),
    }
    if opts["steps"] < 1 or opts["warmup"] < 0:
        raise SystemExit("bench: steps must be >= 1 and warmup >= 0")
    return opts, overrides


def compose_config(opts: dict[str, Any], extra: list[str]) -> tuple[Any, str]:
    """conf/train.yaml composed with the preset's overrides; returns (cfg, which world the preset used)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    preset = opts["preset"]
    overrides = list(BASE_OVERRIDES) + list(PRESETS[preset]["overrides"])
    world = preset
    if preset == "toyfaces":
        if TOYFACES_ASSETS.is_file():
            overrides.append("domain=toyfaces")
            world = "toyfaces (shipped assets)"
        else:
            overrides += TOYFACES_RANDOM
            world = "toyfaces architecture, random weights (assets not built)"
    elif preset == "ffhq1024":
        world = "ffhq1024 config-f generator + ViT-B-32, random weights"
    overrides += [f"data.batch_size={opts['batch']}", f"aug.num_views={opts['views']}"]
    overrides += extra
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        # the hydra: paths only exist inside @hydra.main; the bench writes nothing, so plain paths do
        cfg.paths.root_dir = str(CONF_DIR.parent)
        cfg.paths.output_dir = str(CONF_DIR.parent / "outputs" / "bench")
        if preset == "ffhq1024":
            import open_clip

            cfg.domain.clip.model_config = open_clip.get_model_config("ViT-B-32")  # architecture only
        if not opts["regularizers"]:
            cfg.loss.regularizers = {}
        elif (
            preset == "ffhq1024"
        ):  # the paper's identity term: IR-SE50 (random weights) with the official crop
            cfg.loss.regularizers = {"identity": PAPER_IDENTITY}
    return cfg, world
