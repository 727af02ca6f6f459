"""Turn a composed config into the objects of a run (shared by train, eval, edit and bench)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.data.latents import LatentDataModule
from src.data.prompts import tem_factors
from src.models.clip_ensemble import guide_from_config, primary_clip
from src.module import CFCLIPModule
from src.utils.loggers import scrub_secrets


def to_container(cfg: DictConfig | dict) -> dict:
    """A plain, resolved dict (what run checkpoints store: loadable with weights_only=True)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return dict(cfg)


def build(cfg: DictConfig) -> tuple[CFCLIPModule, LatentDataModule]:
    """Generator, CLIP, prompt, mapper (sized from them), loss, augmentation, optimizer -> module + data."""
    generator = instantiate(cfg.domain.generator)
    clip = build_guide(cfg)
    prompt = instantiate(cfg.prompt)
    module = CFCLIPModule(
        generator=generator,
        clip=clip,
        mapper=build_mapper(cfg, generator, clip, prompt),
        loss=instantiate(cfg.loss),
        augment=build_augment(cfg, clip),
        prompt=prompt,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.get("scheduler")),
        step_size=cfg.model.step_size,
        augment_source=cfg.model.augment_source,
        config=scrub_secrets(plain_config(cfg)),  # run checkpoints never hold secrets
    )
    datamodule = instantiate(cfg.data)
    datamodule.attach_generator(generator)
    return module, datamodule


def build_guide(cfg: DictConfig) -> Any:
    """The guiding CLIP: one, or an ensemble (domain.clip a list, or domain.extra_clips added to it)."""
    return guide_from_config(
        instantiate(cfg.domain.clip),
        instantiate(cfg.domain.get("extra_clips")),
        cfg.domain.get("clip_weights"),
    )


def build_augment(cfg: DictConfig, clip: Any) -> Any:
    """The CLIP-NCE views' augmentation, bound to the guiding CLIP (``aug.resize_to: clip``: its input size)."""
    augment = instantiate(cfg.aug)
    return augment.bind_clip(clip) if hasattr(augment, "bind_clip") else augment


def build_mapper(cfg: DictConfig, generator: Any, clip: Any, prompt: Any) -> Any:
    """The run's mapper, sized from its generator, CLIP and prompts (the TEM input's width: ``tem_factors``)."""
    return mapper_from_sizes(
        cfg, generator.n_latent, generator.style_dim, primary_clip(clip).embed_dim, tem_factors(prompt)
    )


def mapper_from_sizes(
    cfg: DictConfig, n_latent: int, latent_dim: int, text_dim: int, text_factors: int = 1
) -> Any:
    """The run's mapper from sizes alone (no generator or CLIP built: e.g. checking a converted file)."""
    return instantiate(cfg.model.mapper)(
        n_latent=n_latent, latent_dim=latent_dim, text_dim=text_dim, text_factors=text_factors
    )


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config without Hydra's own node, resolved (hydra: interpolations included)."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if isinstance(cfg, DictConfig) else cfg
    return to_container(cfg)


def instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a dict of configs (loggers, callbacks)."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]
