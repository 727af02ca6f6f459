"""The toy identity net: its training pairs, its loss, and that it stays apart from the oracle."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

from src.toyworld.attributes import EDIT_ATTRIBUTES, SCHEMA, sample_attributes
from src.toyworld.identity import (
    IdentityNet,
    info_nce,
    other_natural,
    train_identity,
    triplets,
    with_counterfactuals,
)
from tests.conftest import ROOT


def test_pairs_change_counterfactuals_only_and_hard_negatives_change_the_face():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = sample_attributes(rng, 0.0)
        b = with_counterfactuals(a, rng)
        for (
            n
        ) in EDIT_ATTRIBUTES:  # a positive keeps every natural value or replaces it by a counterfactual one
            assert getattr(b, n) == getattr(a, n) or getattr(b, n) in SCHEMA[n].counterfactual
        c = other_natural(a, rng)  # a hard negative: exactly one natural value changed to another natural one
        diff = [n for n in SCHEMA if getattr(c, n) != getattr(a, n)]
        assert len(diff) == 1 and getattr(c, diff[0]) in SCHEMA[diff[0]].natural


def test_triplets_are_three_renders_per_face():
    anchor, positive, hard = triplets(6, np.random.default_rng(1))
    assert anchor.shape == positive.shape == hard.shape == (6, 3, 64, 64)
    assert anchor.min() >= -1 and anchor.max() <= 1
    assert not torch.equal(anchor, hard) and not torch.equal(anchor, positive.roll(1, 0))


def test_info_nce_learns_and_verification_reports(tmp_path):
    torch.manual_seed(0)
    net = IdentityNet(width=8, dim=16)
    anchor, positive, hard = triplets(4, np.random.default_rng(2))
    loss = info_nce(net, anchor, positive, hard, tau=0.1)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    trained, metrics = train_identity(
        2, batch=4, progress=False, eval_size=8, resume_path=str(tmp_path / "r.pt")
    )
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())
    assert {"verification_accuracy", "hard_verification_accuracy", "cos_same", "cos_other"} <= set(metrics)
    assert 0.0 <= metrics["verification_accuracy"] <= 1.0


def test_identity_code_never_reaches_the_oracle():
    """Kept apart from the judge: the identity module imports neither the oracle nor its calibration."""
    tree = ast.parse(Path(ROOT, "src/toyworld/identity.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if "oracle" in m or "calibration" in m}


def test_toyfaces_recipe_regularises_with_the_shipped_identity_net(tmp_path):
    """The default toyfaces loss: CLIP-NCE + the paper's identity term through the toy ArcFace + latent L2 + pixel L1
    + the round trip + the target term; the identity term is ~0 for the same image and large for another face."""
    from hydra.utils import instantiate

    from src.losses.base import StepContext
    from tests.conftest import compose_train

    loss = instantiate(compose_train([], tmp_path).loss)
    assert set(loss.terms) == {"clip_nce", "identity", "pixel_l1", "manifold", "latent_l2", "target_clip"}
    ident = loss.terms["identity"]
    assert isinstance(ident.backbone, IdentityNet) and ident.weight == 0.2
    anchor, positive, _ = triplets(4, np.random.default_rng(3))
    w = torch.zeros(4, 1, 1)
    same = ident(StepContext(w=w, w_hat=w, text=None, x=anchor, x_hat=anchor)).item()
    other = ident(StepContext(w=w, w_hat=w, text=None, x=anchor, x_hat=positive.roll(1, 0))).item()
    assert same < 1e-4 and other > 0.3
