"""The authors' released mappers as run checkpoints, and back (``python -m src.convert``).

``import_official``: a CF-CLIP / StyleCLIP mapper file -> a run checkpoint of the kind ``src.train`` writes (the
mapper in ``model=official`` / ``model=styleclip``, the text from ``opts.description``, the domain from
``opts.stylegan_size``) that also holds the file's decoder as ``g_ema`` (rosinality layout), so ``src.edit``,
``src.eval`` and ``src.train ckpt_path=`` need no separate generator file. ``export_official``: a run checkpoint ->
``{'state_dict', 'opts'}`` that the authors' inference loads with ``strict=True``. Files load with
``weights_only=True``; their ``opts`` is plain data.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from src.models.legacy import rosinality_config
from src.models.official_format import (
    DIM,
    KIND_NAMES,
    N_LINEAR,
    STEP,
    THEIR_GROUP,
    FormatError,
    OfficialMapper,
    n_latent_of,
    official_opts,
    parse_official,
    to_official,
)
from src.models.weights import load_checkpoint, save_atomic
from src.utils.loggers import scrub_secrets

CONF = Path(__file__).resolve().parents[1] / "conf"
CLIP_CONFIGS = Path(__file__).resolve().parent / "models" / "clip_configs"
# domains whose generator is a StyleGAN2 built from sizes + a checkpoint file (the converted run's decoder)
GENERATOR_TARGETS = ("src.models.real.real_generator", "src.models.factory.create_generator")
# the arguments real_generator and create_generator share, at their defaults (StyleGAN2 config-f)
GENERATOR_DEFAULTS = dict(style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512, channel_base=16384)
EMPTY_LOOPS = ("fit_loop", "validate_loop", "test_loop", "predict_loop")


def read_official(path: str | Path) -> OfficialMapper:
    """Load (weights_only) and check an authors' mapper file."""
    obj = load_checkpoint(path, what="authors' mapper checkpoint")
    return parse_official(obj, str(path))


def default_domain(spec: OfficialMapper, where: str) -> str:
    """The domain config of the file's generator: 1024 -> ffhq; 512 -> afhq_cat or afhq_dog (source text)."""
    if spec.size == 1024:
        return "ffhq"
    if spec.size == 512:
        words = f"{spec.source_text or ''} {spec.description}".lower()
        return "afhq_cat" if re.search(r"\bcats?\b", words) else "afhq_dog"
    raise FormatError(
        f"{where}: no domain config has a {spec.size} px generator (1024: ffhq, 512: afhq_dog / afhq_cat); "
        "pass one, e.g. domain=tiny"
    )


def _clip_width(clip: DictConfig) -> int | None:
    """The embedding width a domain's CLIP config gives, where it can be told without building it (a built-in
    architecture file, src/models/clip_configs/<name>.json, or an OpenAI ViT-B/32)."""
    spec = clip.get("model_config")
    if isinstance(spec, str) and (CLIP_CONFIGS / f"{spec}.json").is_file():
        return int(json.loads((CLIP_CONFIGS / f"{spec}.json").read_text())["embed_dim"])
    if spec is not None:
        return int(spec["embed_dim"]) if "embed_dim" in spec else None
    return DIM if str(clip.get("model_name")) in ("ViT-B-32", "ViT-B-32-quickgelu") else None


def _quoted(text: str) -> str:
    """A Hydra override value that stays one string whatever it holds (spaces, commas, quotes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_config(
    spec: OfficialMapper, overrides: list[str], out: Path, where: str
) -> tuple[dict[str, Any], list[str]]:
    """The train config of the converted run: default domain / model / prompt, the user's overrides, then the
    file's facts (text, generator sizes, the run checkpoint as the generator file, mapper groups). Also the
    ``src.train`` overrides that compose the same model, generator and prompt (to fine-tune with ``ckpt_path=``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from src.builders import plain_config

    fixed = [o for o in overrides if re.match(r"^[~+]*model([.=]|$)", o)]
    if fixed:
        raise ValueError(
            f"{fixed[0]}: the mapper's settings come from the file (the authors' semantics); drop it"
        )
    domain = (
        []
        if any(re.match(r"^[~+]*domain=", o) for o in overrides)
        else [f"domain={default_domain(spec, where)}"]
    )
    model = "official" if spec.use_tem else "styleclip"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*domain, f"model={model}", "prompt=custom", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_readonly(cfg.hydra, False)
    gen = cfg.domain.generator
    if gen.get("_target_") not in GENERATOR_TARGETS:
        raise ValueError(
            f"domain {cfg.domain.get('name')} builds its generator with {gen.get('_target_')}; a converted mapper "
            "needs a StyleGAN2 domain (ffhq, afhq_dog, afhq_cat, tiny)"
        )
    width = _clip_width(cfg.domain.clip)
    if spec.use_tem and width not in (None, DIM):
        raise ValueError(
            f"the CF-CLIP text mapper reads {DIM}-d CLIP ViT-B/32 text features, domain {cfg.domain.get('name')}'s "
            f"CLIP gives {width}-d: use a ViT-B/32 (or, without weights, domain.clip.model_config=tiny512)"
        )
    name = re.sub(r"[^0-9a-zA-Z]+", "_", spec.description).strip("_").lower()[:60] or "custom"
    # the run checkpoint holds the decoder as g_ema, so it is the generator's file
    generator = {**spec.generator_config, "checkpoint": str(out.resolve())}
    # only what differs from the domain's generator (a key it lacks has the constructors' default), so a converted
    # FFHQ mapper's domain equals a run's trained here (src.edit compares them)
    generator = {k: v for k, v in generator.items() if gen.get(k, GENERATOR_DEFAULTS.get(k)) != v}
    tune = [
        *domain,
        f"model={model}",
        *[f"model.mapper.{g}=false" for g, on in spec.groups.items() if not on],
    ]
    tune += ["prompt=custom", f"prompt.target={_quoted(spec.description)}", f"prompt.name={name}", *overrides]
    tune += [
        f"{'' if k in gen else '+'}domain.generator.{k}={_quoted(v) if isinstance(v, str) else v}"
        for k, v in generator.items()
    ]
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out.parent.resolve())
        cfg.prompt.target, cfg.prompt.name = spec.description, name
        for key, value in generator.items():
            gen[key] = value
        for g, on in spec.groups.items():
            cfg.model.mapper[g] = on
        cfg.model.step_size = STEP
    assert cfg.model.mapper.pixelnorm_axis == "layer" and cfg.model.mapper.n_layers == N_LINEAR
    return scrub_secrets(plain_config(cfg)), tune


def import_official(
    src: str | Path, dst: str | Path, overrides: list[str] | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Convert an authors' mapper file into a run checkpoint at ``dst``; returns the checkpoint written."""
    from src.builders import mapper_from_sizes

    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")
    spec = read_official(src)
    config, tune = run_config(spec, list(overrides or []), dst, str(src))
    mapper = mapper_from_sizes(OmegaConf.create(config), n_latent_of(spec.size), DIM, DIM)
    mapper.load_state_dict(spec.mapper_state, strict=True)  # the renaming fits our mapper exactly
    ckpt = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": version("pytorch-lightning"),
        "state_dict": {f"mapper.{k}": v for k, v in spec.mapper_state.items()},
        # no optimizer or loop state yet: `src.train ckpt_path=` fine-tunes from step 0 with a fresh optimizer
        "loops": {name: {} for name in EMPTY_LOOPS},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": config,
        "prompts": [{"name": config["prompt"]["name"], "target": spec.description}],
        "g_ema": spec.decoder_state,
        "generator_config": spec.generator_config,
        "source": {
            "format": f"{spec.kind}-mapper",
            "file": Path(src).name,
            "opts": spec.opts,
            "finetune": tune,
        },
    }
    save_atomic(ckpt, dst)
    return ckpt


def _generator_state(ckpt: dict, cfg: dict) -> dict[str, torch.Tensor]:
    """The run's generator weights: embedded (a converted run) or built from its domain config (weight file)."""
    if isinstance(ckpt.get("g_ema"), dict):
        return ckpt["g_ema"]
    from hydra.utils import instantiate

    return instantiate(OmegaConf.create(cfg["domain"]["generator"])).state_dict()


def export_official(src: str | Path, dst: str | Path, overwrite: bool = False) -> tuple[dict, list[str]]:
    """A run checkpoint -> the authors' format at ``dst``. Returns (what was written, notes for the user)."""
    dst, where = Path(dst), str(src)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")
    ckpt = load_checkpoint(src, what="run checkpoint")
    cfg = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(cfg, dict) or "model" not in cfg or not isinstance(ckpt.get("state_dict"), dict):
        raise FormatError(f"{where}: not a cfclip run checkpoint (no stored run config)")
    model, mapper_cfg, prompt = cfg["model"], cfg["model"]["mapper"], cfg["prompt"]
    texts = [p["target"] for p in ckpt.get("prompts") or []] or list(
        prompt.get("targets") or [prompt.get("target")]
    )
    problems = []
    if len(texts) != 1:
        problems.append(
            f"it edits toward {len(texts)} texts (prompt=multi); the format holds one description"
        )
    if prompt.get("tem_input", "sentence") != "sentence":
        problems.append(
            f"prompt.tem_input={prompt['tem_input']}; their text mapper reads the sentence's CLIP embedding"
        )
    if mapper_cfg.get("pixelnorm_axis") != "layer":
        problems.append(
            f"model.mapper.pixelnorm_axis={mapper_cfg.get('pixelnorm_axis')}; their code normalises over the layer "
            "axis (train with model=official, or model=styleclip without TEM), so its edits would differ there"
        )
    if float(model.get("step_size", STEP)) != STEP:
        problems.append(f"model.step_size={model['step_size']}; their inference adds {STEP} * delta")
    if int(mapper_cfg.get("n_layers", N_LINEAR)) != N_LINEAR:
        problems.append(
            f"model.mapper.n_layers={mapper_cfg['n_layers']}; their mappers have {N_LINEAR} layers"
        )
    if problems:
        raise FormatError(f"{where}: cannot be written in the authors' format: " + "; ".join(problems))
    gen_state = _generator_state(ckpt, cfg)
    gen_cfg = rosinality_config(gen_state)
    n_latent = n_latent_of(gen_cfg["size"])
    if gen_cfg["style_dim"] != DIM or n_latent <= 8:
        raise FormatError(
            f"{where}: its generator ({gen_cfg['size']} px, style dim {gen_cfg['style_dim']}) does not fit the "
            f"authors' format ({DIM}-d styles, more than 8 style layers for the coarse / medium / fine mappers)"
        )
    use_tem = bool(model.get("tem", True))
    groups = {g: bool(mapper_cfg.get(g, True)) for g in THEIR_GROUP}
    state = {k[len("mapper.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("mapper.")}
    their = to_official(state, gen_state, use_tem, groups, n_latent, where)
    latents = (cfg.get("domain") or {}).get("latents") or {}
    opts = official_opts(
        texts[0],
        gen_cfg["size"],
        latents.get("source") == "random",
        groups,
        (cfg.get("domain") or {}).get("source_text"),
    )
    out = {"state_dict": their, "opts": opts}
    parse_official(out, str(dst))  # what is written reads back as the same mapper
    notes = []
    standard = dict(
        size=gen_cfg["size"],
        style_dim=DIM,
        n_mlp=8,
        channel_multiplier=2,
        channel_max=512,
        channel_base=16384,
    )
    if gen_cfg != standard:
        notes.append(
            f"the decoder ({', '.join(f'{k}={v}' for k, v in gen_cfg.items())}) is not the Generator({gen_cfg['size']}, "
            f"{DIM}, 8) their inference builds: it will not load there"
        )
    clip_name = str((cfg.get("domain") or {}).get("clip", {}).get("model_name"))
    if use_tem and clip_name != "ViT-B-32":
        notes.append(
            f"the text mapper was trained on CLIP {clip_name}; their inference feeds it CLIP ViT-B/32"
        )
    save_atomic(out, dst)
    return out, notes


def describe(spec_or_ckpt: dict) -> str:
    """One line about a converted run checkpoint: kind, text, size, groups."""
    source = spec_or_ckpt.get("source", {})
    cfg = spec_or_ckpt["hyper_parameters"]
    groups = [g for g in THEIR_GROUP if cfg["model"]["mapper"][g]]
    kind = KIND_NAMES.get(source.get("format", "").removesuffix("-mapper"), "?")
    return (
        f"{kind} mapper for '{cfg['prompt']['target']}', domain {cfg['domain'].get('name')}, "
        f"{spec_or_ckpt['generator_config']['size']} px, levels {'/'.join(groups)}, model "
        f"{'official' if cfg['model']['tem'] else 'styleclip'}"
    )
