"""OmegaConf resolvers used by the configs (registered once when ``src`` is imported)."""

from __future__ import annotations

from omegaconf import OmegaConf

from src.toyworld.assets import latent_file


def _toyfaces_latents(split: str, asset_dir: str | None = None) -> str:
    """``${toyfaces_latents:train}`` -> a [N, L, D] tensor file of the toyfaces latents (shipped or asset_dir)."""
    return latent_file(split, asset_dir)


def register() -> None:
    if not OmegaConf.has_resolver("toyfaces_latents"):
        OmegaConf.register_new_resolver("toyfaces_latents", _toyfaces_latents)
