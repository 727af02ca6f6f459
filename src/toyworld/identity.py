"""The toyfaces identity net, the ArcFace analogue of the paper's identity loss (a training-time regulariser).

It embeds renders of the same face (render seed + natural attributes) together whatever counterfactual values are
applied, and other faces apart, including hard negatives: the same face with one natural attribute or one
nuisance (position, scale, rotation, shape, lighting, background) changed. It is kept apart from the oracle, the
judge: its own class, weights and render seeds, and it never reads the oracle's outputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.toyworld.attributes import EDIT_ATTRIBUTES, SCHEMA, Attributes, sample_attributes
from src.toyworld.render import render, sample_nuisance
from src.toyworld.shapes import Nuisance
from src.toyworld.training import Progress, Resumable, decode, invert

IDENTITY_STREAM = 4099  # its own random stream of faces (nuisances drawn from 62-bit seeds, no shared pool)
# attributes with more than one natural value (ears are always round in a natural face)
NATURAL_CHANGES = tuple(n for n in ("hair_color", *EDIT_ATTRIBUTES) if len(SCHEMA[n].natural) > 1)
# nuisance fields a hard negative moves, and by how much (half the range sample_nuisance draws from)
NUISANCE_STEPS = {
    "cx": 0.04, "cy": 0.04, "scale": 0.1, "rotation": 0.14, "face_height": 0.1, "jaw": 0.12,
    "light_angle": 3.1, "light_strength": 0.075, "gaze": 0.04, "mouth_width": 0.04, "brow_tilt": 0.04,
}  # fmt: skip


class IdentityNet(nn.Module):
    """A small CNN: images in [-1, 1] (N, 3, H, W) -> identity embedding (N, dim), not normalised.

    GroupNorm, not BatchNorm, so a frozen copy behaves the same on any batch (it is a loss in training).
    """

    def __init__(self, width: int = 24, dim: int = 128) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2, True)]

        self.body = nn.Sequential(
            *block(3, w, 2), *block(w, w, 1),  # 32
            *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1),  # 16
            *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 1),  # 8
        )  # fmt: skip
        self.head = nn.Linear(4 * w * 16, dim)
        self.width, self.dim = width, dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # (N, 3, H, W) -> (N, 4w, 8, 8) -> (N, 4w, 4, 4) -> (N, dim); other sizes are resized to 64
        if images.shape[-2:] != (64, 64):
            images = F.interpolate(images, size=(64, 64), mode="bilinear", antialias=True)
        h = F.adaptive_avg_pool2d(self.body(images), 4)
        return self.head(h.flatten(1))


def with_counterfactuals(a: Attributes, rng: np.random.Generator, p: float = 0.5) -> Attributes:
    """The same face with each edit attribute set to a random counterfactual value with probability p."""
    changes = {n: str(rng.choice(SCHEMA[n].counterfactual)) for n in EDIT_ATTRIBUTES if rng.random() < p}
    return a.replace(**changes)


def other_natural(a: Attributes, rng: np.random.Generator) -> Attributes:
    """A different face: one natural attribute (hair or an edit attribute) changed to another natural value."""
    name = NATURAL_CHANGES[rng.integers(len(NATURAL_CHANGES))]
    choices = [v for v in SCHEMA[name].natural if v != getattr(a, name)]
    return a.replace(**{name: str(rng.choice(choices))})


def moved_nuisance(nz: Nuisance, rng: np.random.Generator) -> Nuisance:
    """A different face: one nuisance moved by a sizeable step in a random direction."""
    name = list(NUISANCE_STEPS)[rng.integers(len(NUISANCE_STEPS))]
    step = NUISANCE_STEPS[name] * (0.5 + 0.5 * rng.random()) * rng.choice([-1.0, 1.0])
    return dataclasses.replace(nz, **{name: getattr(nz, name) + step})


def triplets(n: int, rng: np.random.Generator) -> torch.Tensor:
    """(3, n, 3, 64, 64) renders: anchor and positive (the same natural face under independent random
    counterfactual values) and a hard negative (one natural attribute or one nuisance changed)."""
    out = torch.empty(3, n, 3, 64, 64)
    for i in range(n):
        base = sample_attributes(rng, 0.0)
        nz = sample_nuisance(np.random.default_rng(int(rng.integers(1 << 62))))
        neg_attrs, neg_nz = (
            (other_natural(base, rng), nz) if rng.random() < 0.5 else (base, moved_nuisance(nz, rng))
        )
        views = (
            (with_counterfactuals(base, rng), nz),
            (with_counterfactuals(base, rng), nz),
            (with_counterfactuals(neg_attrs, rng, p=0.25), neg_nz),
        )
        for k, (a, z) in enumerate(views):
            out[k, i] = render(a, z, as_tensor=True)[0]
    return out


def info_nce(
    net: IdentityNet, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, tau: float
):
    """Each anchor against its positive, every other face's positive and every hard negative."""
    a, p, n = (F.normalize(net(t), dim=-1) for t in (anchor, positive, negative))
    logits = torch.cat([a @ p.T, a @ n.T], dim=1) / tau  # (B, 2B)
    return F.cross_entropy(logits, torch.arange(a.shape[0]))


def reconstruct(gen: nn.Module, inv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) through the world's inverter and generator, clamped to [-1, 1]."""
    return decode(gen, invert(inv, x)).clamp(-1, 1)


def through_generator(
    x: torch.Tensor, gen: nn.Module | None, inv: nn.Module | None, share: float, g
) -> torch.Tensor:
    """Replace a random share of the images by their reconstruction (the images the loss will see)."""
    if gen is None or inv is None or share <= 0:
        return x
    pick = torch.rand(x.shape[0], generator=g) < share
    if pick.any():
        x = x.clone()
        x[pick] = reconstruct(gen, inv, x[pick])
    return x


def train_identity(
    steps: int,
    batch: int = 64,
    lr: float = 1e-3,
    tau: float = 0.1,
    seed: int = 0,
    gen: nn.Module | None = None,
    inv: nn.Module | None = None,
    recon_share: float = 0.5,
    resume_path: str | None = None,
    progress: bool = True,
    eval_size: int = 400,
) -> tuple[IdentityNet, dict[str, float]]:
    """Train the identity net on fresh triplets each step; returns it (eval, frozen) and its verification."""
    torch.manual_seed(seed)
    net = IdentityNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng([seed, IDENTITY_STREAM])
    g = torch.Generator().manual_seed(seed)
    saver = Resumable(resume_path, {"net": net, "opt": opt})
    start = saver.restore()
    bar = Progress("identity", steps, progress)
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / max(1, steps)))
        views = [through_generator(v, gen, inv, recon_share, g) for v in triplets(batch, rng)]
        loss = info_nce(net, *views, tau=tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar(step, loss=loss.item())
        saver.maybe_save(step + 1)
    net.eval().requires_grad_(False)
    return net, verification(net, eval_size, seed, gen, inv)


def _threshold_accuracy(same: torch.Tensor, different: torch.Tensor) -> tuple[float, float]:
    """Fit the cosine threshold on the first half of each set, read the balanced accuracy on the second half."""
    h = same.shape[0] // 2
    cands = torch.cat([same[:h], different[:h]])
    hits = torch.stack([(same[:h] >= t).float().mean() + (different[:h] < t).float().mean() for t in cands])
    t = cands[hits.argmax()]
    return (((same[h:] >= t).float().mean() + (different[h:] < t).float().mean()) / 2).item(), t.item()


@torch.no_grad()
def verification(
    net: IdentityNet, n: int = 400, seed: int = 0, gen: nn.Module | None = None, inv: nn.Module | None = None
) -> dict[str, float]:
    """Same/different-face verification on held-out faces (their own stream), through the generator when given.

    Same: a face and itself under random counterfactual values. Different: another face, or (hard) the same face
    with one natural attribute or nuisance changed. Each threshold is fitted on half the pairs, read on the rest.
    """
    rng = np.random.default_rng([seed, IDENTITY_STREAM, 1])
    anchor, positive, hard = triplets(n, rng)
    if gen is not None and inv is not None:
        anchor, positive, hard = (reconstruct(gen, inv, t) for t in (anchor, positive, hard))
    emb = lambda t: torch.cat([F.normalize(net(c), dim=-1) for c in t.split(128)])  # noqa: E731
    a, p, h = emb(anchor), emb(positive), emb(hard)
    same, other, hard_cos = (a * p).sum(-1), (a * p.roll(1, 0)).sum(-1), (a * h).sum(-1)
    acc, t = _threshold_accuracy(same, other)
    hard_acc, hard_t = _threshold_accuracy(same, hard_cos)
    return {
        "verification_accuracy": acc,
        "threshold": t,
        "hard_verification_accuracy": hard_acc,
        "hard_threshold": hard_t,
        "cos_same": same.mean().item(),
        "cos_other": other.mean().item(),
        "cos_hard": hard_cos.mean().item(),
    }
