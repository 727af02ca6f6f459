"""A pool of pre-rendered toyfaces with labels, refreshed a few images at a time.

Training loops sample batches from the pool instead of rendering each batch, so rendering does not compete
with the model for the CPU cores, while refreshing keeps the data stream effectively endless.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from src.toyworld.attributes import Attributes, sample_attributes
from src.toyworld.render import render_batch

TEST_SEED_OFFSET = 1 << 40  # render seeds at or above this are reserved for held-out sets


def sample_scenes(
    n: int,
    rng: np.random.Generator,
    counterfactual_rate: float | Mapping[str, float],
    eyebrows_follow_hair: float = 1.0,
    seed_offset: int = 0,
) -> tuple[list[Attributes], list[int]]:
    """n random (attributes, render seed) pairs; training seeds lie below TEST_SEED_OFFSET."""
    attrs = [sample_attributes(rng, counterfactual_rate, eyebrows_follow_hair) for _ in range(n)]
    seeds = (rng.integers(0, TEST_SEED_OFFSET, size=n) + seed_offset).tolist()
    return attrs, seeds


def heldout_scenes(
    n: int, counterfactual_rate: float | Mapping[str, float], eyebrows_follow_hair: float = 1.0, seed: int = 0
) -> tuple[list[Attributes], list[int]]:
    """A fixed held-out set: seeds from the reserved range, disjoint from every training pool."""
    rng = np.random.default_rng([seed, 77])
    attrs = [sample_attributes(rng, counterfactual_rate, eyebrows_follow_hair) for _ in range(n)]
    return attrs, [TEST_SEED_OFFSET + seed * 10_000_000 + i for i in range(n)]


class RenderPool:
    """`capacity` renders (uint8, N x 3 x H x W) with their attributes and label vectors."""

    def __init__(
        self,
        capacity: int,
        counterfactual_rate: float | Mapping[str, float],
        eyebrows_follow_hair: float = 1.0,
        image_size: int = 64,
        supersample: int = 2,
        seed: int = 0,
        part_regions: tuple[str, ...] = (),
    ) -> None:
        self.rate, self.follow = counterfactual_rate, eyebrows_follow_hair
        self.image_size, self.supersample = image_size, supersample
        self.part_regions = tuple(part_regions)
        self.rng = np.random.default_rng([seed, 13])
        self.attrs, self.seeds = sample_scenes(capacity, self.rng, self.rate, self.follow)
        self.images, self.parts = self._render(self.attrs, self.seeds)
        self.labels = torch.from_numpy(np.stack([a.encode() for a in self.attrs]))

    def __len__(self) -> int:
        return len(self.attrs)

    def _render(self, attrs: list[Attributes], seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 renders (N, 3, H, W) and, with part_regions, a bool map (N, 1, H, W) of those regions
        dilated by one pixel (small parts a pixel loss should weight up; None otherwise)."""
        parts = None
        if self.part_regions:
            x, masks = render_batch(attrs, seeds, self.image_size, self.supersample, return_masks=True)
            union = torch.stack([masks[r] for r in self.part_regions]).any(0).unsqueeze(1).float()
            parts = torch.nn.functional.max_pool2d(union, 3, 1, 1) > 0  # (N, 1, H, W)
        else:
            x = render_batch(attrs, seeds, self.image_size, self.supersample)
        return ((x + 1) * 127.5).round().to(torch.uint8), parts

    def refresh(self, k: int) -> None:
        """Replace k random entries by new renders."""
        if k <= 0:
            return
        idx = self.rng.choice(len(self), size=min(k, len(self)), replace=False)
        attrs, seeds = sample_scenes(len(idx), self.rng, self.rate, self.follow)
        images, parts = self._render(attrs, seeds)
        self.images[idx] = images
        if parts is not None:
            self.parts[idx] = parts
        self.labels[idx] = torch.from_numpy(np.stack([a.encode() for a in attrs]))
        for j, i in enumerate(idx.tolist()):
            self.attrs[i], self.seeds[i] = attrs[j], seeds[j]

    def sample(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch: (float images in [-1,1], N x 3 x H x W; long labels, N x len(LABEL_ATTRIBUTES))."""
        return self.sample_with_parts(batch, generator)[:2]

    def sample_with_parts(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Like sample(), plus the part map (N, 1, H, W) bool of those images (None without part_regions)."""
        idx = torch.randint(len(self), (batch,), generator=generator)
        parts = None if self.parts is None else self.parts[idx]
        return self.images[idx].float() / 127.5 - 1.0, self.labels[idx], parts
