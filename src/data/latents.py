"""Latent codes to edit, as a LightningDataModule: random (z through the mapping net) or from a .pt file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.source_cache import SourceCacheOptions
from src.models.weights import load_checkpoint


class LatentDataset(Dataset):
    """Rows of a [N, L, D] tensor (W latents [N, D] are broadcast to L layers lazily)."""

    def __init__(self, latents: torch.Tensor, n_latent: int):
        self.latents = latents
        self.n_latent = n_latent

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        w = self.latents[i]
        if w.ndim == 1:
            w = w.unsqueeze(0).expand(self.n_latent, -1)
        return {"w": w.float(), "idx": torch.tensor(i)}


def check_latents(latents: object, n_latent: int, style_dim: int, origin: str) -> torch.Tensor:
    """Validate a latent tensor against the generator: [N, L, D] or [N, D], floating, finite."""
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"{origin}: expected a tensor of latents, found a {type(latents).__name__}")
    ok_shape = (latents.ndim == 3 and latents.shape[1:] == (n_latent, style_dim)) or (
        latents.ndim == 2 and latents.shape[1] == style_dim
    )
    if not ok_shape or latents.shape[0] == 0:
        raise ValueError(
            f"{origin}: latents of shape {tuple(latents.shape)} do not fit the generator: expected "
            f"[N, {n_latent}, {style_dim}] (W+) or [N, {style_dim}] (W) with N > 0. "
            "Were they inverted for another generator (resolution / style dim)?"
        )
    if not latents.is_floating_point():
        raise ValueError(f"{origin}: latents have dtype {latents.dtype}, expected a floating-point tensor")
    if not torch.isfinite(latents).all():
        raise ValueError(f"{origin}: latents contain NaN or Inf values")
    return latents.float()


class LatentDataModule(pl.LightningDataModule):
    """Train / val / test latents for the mapper.

    ``source="random"``: z ~ N(0, I) with disjoint seeds per split, through the generator's mapping net,
    truncated toward the mean latent (psi ``truncation``), stored as W [N, D]. ``source="file"``: tensors
    from ``train_path`` / ``test_path`` (e.g. e4e's ``train_faces.pt``); val is the first ``num_val`` test rows.
    ``source_cache``: options of the per-latent source cache (src/data/source_cache.py), kept beside the files.
    """

    def __init__(
        self,
        source: str = "random",
        train_path: str | None = None,
        test_path: str | None = None,
        num_train: int = 1000,
        num_val: int = 8,
        num_test: int = 64,
        truncation: float = 0.7,
        seed: int = 0,
        batch_size: int = 2,
        num_workers: int = 0,
        generator: torch.nn.Module | None = None,
        source_cache: dict | None = None,
    ):
        super().__init__()
        if source not in ("random", "file"):
            raise ValueError(f"data.source must be 'random' or 'file', got {source!r}")
        self.source, self.train_path, self.test_path = source, train_path, test_path
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.truncation, self.seed = truncation, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.generator = generator
        self.source_cache = SourceCacheOptions(**dict(source_cache or {}))
        self.splits: dict[str, torch.Tensor] = {}

    def attach_generator(self, generator: torch.nn.Module) -> None:
        self.generator = generator

    @torch.no_grad()
    def _random(self, n: int, seed: int) -> torch.Tensor:
        g = self.generator
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, g.style_dim, generator=gen)
        mean = g.mapping(
            torch.randn(4096, g.style_dim, generator=torch.Generator().manual_seed(10_000 + self.seed))
        )
        mean = mean.mean(0, keepdim=True)
        w = torch.cat([g.mapping(chunk) for chunk in z.split(1024)])
        return mean + self.truncation * (w - mean)  # (n, D)

    def _file(self, path: str | None, what: str) -> torch.Tensor:
        if not path:
            raise ValueError(f"data.source=file needs data.{what}_path (a .pt tensor [N, L, D] or [N, D])")
        obj = load_checkpoint(os.path.expanduser(path), what=f"{what} latents")
        return check_latents(obj, self.generator.n_latent, self.generator.style_dim, str(path))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.generator is None:
            raise RuntimeError("LatentDataModule needs the generator: call attach_generator() first")
        if self.source == "random":
            # disjoint seeds: the official AFHQ code used one seed, so its test set leaked into training
            self.splits = {
                "train": self._random(self.num_train, self.seed * 3 + 1),
                "val": self._random(self.num_val, self.seed * 3 + 2),
                "test": self._random(self.num_test, self.seed * 3 + 3),
            }
        else:
            train = self._file(self.train_path, "train")
            test = self._file(self.test_path or self.train_path, "test")
            self.splits = {
                "train": train[: self.num_train] if self.num_train else train,
                "val": test[: self.num_val],
                "test": test[: self.num_test] if self.num_test else test,
            }

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """The latents go to the device; their indices stay on the host, where the source cache and the prompt
        schedule read them without a device sync."""
        if isinstance(batch, dict) and "idx" in batch:
            rest = {k: v for k, v in batch.items() if k != "idx"}
            return {**super().transfer_batch_to_device(rest, device, dataloader_idx), "idx": batch["idx"]}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def cache_dir(self, split: str) -> Path | None:
        """Where the split's source cache is kept: a ``source_cache`` folder beside its latents file (val and
        test come from ``test_path``); None for random latents (the cache then lives in memory)."""
        if self.source != "file":
            return None
        path = self.train_path if split == "train" else (self.test_path or self.train_path)
        return Path(os.path.expanduser(str(path))).parent / "source_cache" if path else None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            LatentDataset(self.splits[split], self.generator.n_latent),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(self.splits[split]) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
