"""Edit metrics of the toyfaces world, judged by the oracle (never by the guiding CLIP).

edit accuracy, preservation (per attribute), leakage outside the target region, realism (valid-face rate and
KID to ideal edits on oracle features), distance to the ideal edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.render import attribute_mask, render


def kid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased kernel inception distance (cubic polynomial kernel MMD^2) between feature sets (N, F), (M, F)."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    n, m = a.shape[0], b.shape[0]
    return (
        (kaa.sum() - kaa.diag().sum()) / (n * (n - 1))
        + (kbb.sum() - kbb.diag().sum()) / (m * (m - 1))
        - 2 * kab.mean()
    ).item()


def ideal_edits(
    attrs: Sequence[Attributes], seeds: Sequence[int], attribute: str, value: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ideal edits (same faces, only ``attribute`` = ``value``) (N, 3, H, W) and the edit region (N, 1, H, W):
    the attribute's masks before and after (pointed ear tips lie outside the round ear)."""
    ideal, masks = [], []
    for a, s in zip(attrs, seeds):
        img, m_cf = render(a.replace(**{attribute: value}), s, as_tensor=True)
        _, m_src = render(a, s)
        ideal.append(img)
        masks.append(torch.from_numpy(attribute_mask(m_src, attribute) | attribute_mask(m_cf, attribute)))
    return torch.stack(ideal), torch.stack(masks)[:, None].float()


def leakage(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Mean absolute change outside the region relative to inside; None for global edits (no outside)."""
    if not bool((mask < 1).any()):
        return None
    change = (x_hat - x).abs().mean(1, keepdim=True)
    inside = (change * mask).sum() / mask.sum().clamp_min(1)
    outside = (change * (1 - mask)).sum() / (1 - mask).sum().clamp_min(1)
    return (outside / inside.clamp_min(1e-8)).item()


class ToyfacesEvaluator:
    """Scores source/edited pairs of the toyfaces test latents for one prompt with the oracle."""

    def __init__(self, edits: dict[str, Sequence[str]], dilate: int = 2, asset_dir: str | None = None):
        self.edits = {k: tuple(v) for k, v in edits.items()}
        self.dilate = dilate
        self.asset_dir = asset_dir
        self._oracle = None

    @property
    def oracle(self) -> torch.nn.Module:
        if self._oracle is None:
            from src.toyworld.assets import load_oracle

            self._oracle = load_oracle(self.asset_dir)
        return self._oracle

    def target(self, prompt_name: str) -> tuple[str, str]:
        if prompt_name not in self.edits:
            raise ValueError(
                f"prompt {prompt_name!r} has no ground-truth edit in this domain; known: "
                f"{sorted(self.edits)} (add it to domain.edits as [attribute, value])"
            )
        return self.edits[prompt_name]

    def scenes(self, n: int) -> tuple[list[Attributes], list[int]]:
        from src.toyworld.assets import load_latents

        test = load_latents("test", self.asset_dir)
        return ([Attributes.decode(v.numpy()) for v in test["labels"][:n]], test["seeds"][:n].tolist())

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, x_hat: torch.Tensor, prompt_name: str) -> dict[str, Any]:
        attribute, value = self.target(prompt_name)
        label = SCHEMA[attribute].index(value)
        x, x_hat = x.float().cpu(), x_hat.float().cpu()
        oracle = self.oracle
        p_src, p_edit = oracle.predict(x), oracle.predict(x_hat)
        out: dict[str, Any] = {"target": f"{attribute}:{value}", "n": x.shape[0]}
        out["edit_accuracy"] = (p_edit[attribute] == label).float().mean().item()
        out["unedited_accuracy"] = (p_src[attribute] == label).float().mean().item()
        per = {a: (p_edit[a] == p_src[a]).float().mean().item() for a in LABEL_ATTRIBUTES if a != attribute}
        out["preservation"] = float(np.mean(list(per.values())))
        out["preservation_per_attribute"] = per
        attrs, seeds = self.scenes(x.shape[0])
        ideal_t, mask = ideal_edits(attrs, seeds, attribute, value)
        if self.dilate:
            mask = F.max_pool2d(mask, 2 * self.dilate + 1, 1, self.dilate)
        out["leakage"] = leakage(x, x_hat, mask)
        valid = oracle.valid_prob(x_hat)
        out["realism"] = {
            "valid_rate": (valid > 0.5).float().mean().item(),
            "kid_to_ideal": kid(oracle.features(x_hat), oracle.features(ideal_t)) if x.shape[0] > 2 else None,
            "l1_to_ideal": (x_hat - ideal_t).abs().mean().item(),
        }
        return out
