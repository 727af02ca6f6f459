"""Is the guide fooled? Two diagnostics of a toyfaces run beside its faithful rate (``src.eval`` prints them).

- ``clip_fooled_rate``: the share of test edits the guiding CLIP (an ensemble: its weighted reading) reads as the
  target (prompt-ensembled zero-shot, the build report's method) while the world's rule (region fidelity +
  nearest-value vote) says the part did not change to it. High: the mapper found a shortcut the CLIP rewards, such as
  a streak it reads as "elf ears".
- ``ideal_beats_edit``: the share of faces on which the run's own loss and views score a **fair ideal edit**
  better than the trained edit. The fair ideal starts at the source latent and is optimised toward the target
  render inside the part while keeping the source's reconstruction outside. Low: the loss prefers the edit it
  got to a real one, so no training budget fixes it; only the guide can.
Evaluation only: the rule and its renders never enter a loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from src.losses.base import StepContext
from src.module import CFCLIPModule, add_clip_features
from src.toyworld.judge.shortcuts import clip_reads, fooled_rate


def fooling_metrics(
    clip: torch.nn.Module,
    x: torch.Tensor,
    x_hat: torch.Tensor,
    rule: torch.Tensor,
    label: int,
    attribute: str,
) -> dict[str, float]:
    """The CLIP's zero-shot reading of the target on edits and sources, and the fooled rate against ``rule`` (N,).
    ``clip``: one CLIP, or a ``CLIPEnsemble`` read as the run is guided (its members' weighted scores)."""
    device = next(iter(clip.parameters()), torch.empty(0)).device
    edit_reads = clip_reads(clip, x_hat.to(device), attribute).cpu() == label
    source_reads = clip_reads(clip, x.to(device), attribute).cpu() == label
    return {
        "clip_fooled_rate": fooled_rate(edit_reads, rule),
        "clip_reads_target_rate": edit_reads.float().mean().item(),
        "clip_reads_target_source_rate": source_reads.float().mean().item(),
    }


def fair_ideal(
    gen: torch.nn.Module,
    w: torch.Tensor,
    ideal: torch.Tensor,
    region: torch.Tensor,
    steps: int = 100,
    lr: float = 0.03,
) -> torch.Tensor:
    """W+ (B, L, D) from the source latents w, optimised toward the ideal render (B, 3, H, W) inside ``region``
    (B, 1, H, W) and toward the source's own reconstruction outside it (pixel L2)."""
    with torch.no_grad():
        target = torch.where(region.bool(), ideal, gen.synthesis(w))
    w_opt = w.clone().requires_grad_(True)
    opt = torch.optim.Adam([w_opt], lr=lr)
    for _ in range(steps):
        loss = F.mse_loss(gen.synthesis(w_opt), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w_opt.detach()


@torch.no_grad()
def per_face_loss(
    module: CFCLIPModule, w: torch.Tensor, w_hat: torch.Tensor, text: str | None, seed: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The run's own loss of each face's edit w -> w_hat (B,) and each weighted term of it (name -> (B,)), its views
    drawn from ``seed`` per face (so two edits of a face meet the same views). The run's prompt: its whole guide
    (every CLIP of an ensemble, as in training); another ``text`` (a multi-prompt mapper): the primary CLIP's terms
    only."""
    feats = None if text is None else module.texts.lookup(module.clip, text)[0]
    out, parts = [], []
    for i in range(w.shape[0]):
        with torch.random.fork_rng():
            torch.manual_seed(seed + i)
            if feats is None:
                ctx = module.compute_context(w[i : i + 1], w_hat=w_hat[i : i + 1])
            else:
                ctx = StepContext(w=w[i : i + 1], w_hat=w_hat[i : i + 1], text=feats)
                ctx.x, ctx.x_hat = module.generator.synthesis(ctx.w), module.generator.synthesis(ctx.w_hat)
                ctx = add_clip_features(
                    ctx, module.clip, module.augment, module.requires, module.augment_source
                )
        total, terms = module.loss(ctx)
        out.append(total)
        parts.append(terms)
    weight = {k: float(t.weight) for k, t in module.loss.terms.items()}  # an ensemble's term@i: as its term
    per_term = {k: weight[k.split("@")[0]] * torch.stack([p[k].float() for p in parts]) for k in parts[0]}
    return torch.stack(out), per_term


def ideal_beats_edit(
    module: CFCLIPModule,
    w: torch.Tensor,
    ideal: torch.Tensor,
    region: torch.Tensor,
    text: str | None,
    steps: int = 100,
) -> dict[str, Any]:
    """The share of faces whose fair ideal edit the run's loss scores lower than the trained edit, both means, and
    each term's mean for both (``loss_edit/<term>``: which term prefers which edit)."""
    w = w.to(module.device, torch.float32)
    with torch.no_grad():
        w_hat = module.edit(w) if text is None else module.edit(w, text=text)
    with torch.enable_grad():
        w_ideal = fair_ideal(module.generator, w, ideal.to(w.device), region.to(w.device), steps)
    edit_loss, edit_parts = per_face_loss(module, w, w_hat, text)
    ideal_loss, ideal_parts = per_face_loss(module, w, w_ideal, text)
    out = {
        "ideal_beats_edit": (ideal_loss < edit_loss).float().mean().item(),
        "loss_edit": edit_loss.mean().item(),
        "loss_fair_ideal": ideal_loss.mean().item(),
        "ideal_beats_edit_faces": int(w.shape[0]),
    }
    for name in edit_parts:
        out[f"loss_edit/{name}"] = edit_parts[name].mean().item()
        out[f"loss_fair_ideal/{name}"] = ideal_parts[name].mean().item()
    return out
