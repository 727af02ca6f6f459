"""The CF-CLIP LightningModule: frozen StyleGAN2 + frozen CLIP + trainable TEM/fusion/mapper.

A step: delta = mapper(w, E_T(target)); w_hat = w + step * delta; render x (no grad) and x_hat; compute the CLIP
features every loss term needs exactly once (one batched augmentation, one CLIP call for the edit and all its
views); total, parts = loss(ctx). Only the mapper trains, and only its weights go into run checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from src.augment import MultiView
from src.data.prompts import Prompt, part_negatives
from src.losses.base import LossSum, StepContext, TextFeatures
from src.models.frozen import freeze, is_frozen

TRAINABLE_PREFIX = "mapper."


class CFCLIPModule(pl.LightningModule):
    """Trains the text-conditioned latent mapper of CF-CLIP for one prompt."""

    def __init__(
        self,
        generator: nn.Module,
        clip: nn.Module,
        mapper: nn.Module,
        loss: LossSum,
        augment: MultiView,
        prompt: Prompt,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        step_size: float = 0.1,
        augment_source: bool = False,
        config: dict | None = None,
    ):
        super().__init__()
        self.generator = freeze(generator)
        self.clip = freeze(clip)
        self.mapper = mapper
        self.loss = loss
        self.augment = augment
        self.prompt = prompt
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.step_size = step_size
        self.augment_source = augment_source
        self.requires = loss.requires
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith(TRAINABLE_PREFIX):
                raise ValueError(f"parameter {name} is trainable but outside the mapper: freeze it")
        # Text features, encoded once per run (non-persistent buffers: they follow .to() but are not saved).
        with torch.no_grad():
            feats = encode_prompt(clip, prompt)
            raw = clip.encode_text([prompt.target], normalize=False)[0]
        for key, value in vars(feats).items():
            self.register_buffer(f"text_{key}", value.float().clone(), persistent=False)
        self.register_buffer("text_embedding", raw.float().clone(), persistent=False)  # (E,) TEM input
        # the last training loss, detached: src.utils.guards.NaNGuard checks it before the optimizer step
        self.last_loss: torch.Tensor | None = None
        self.last_loss_parts: dict[str, torch.Tensor] = {}
        self.save_hyperparameters(config or {}, logger=False)

    # ---- frozen parts stay frozen -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> CFCLIPModule:
        super().train(mode)
        for m in self.modules():
            if is_frozen(m):
                m.eval()
        return self

    @property
    def text_features(self) -> TextFeatures:
        return TextFeatures(
            self.text_target,
            self.text_source,
            self.text_target_templates,
            self.text_source_templates,
            self.text_negative_templates,
        )

    # ---- the step ------------------------------------------------------------------------------------------
    def edit(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, L, D) -> w_hat (B, L, D)."""
        text = self.text_embedding.expand(w.shape[0], -1) if getattr(self.mapper, "use_tem", True) else None
        return w + self.step_size * self.mapper(w, text)

    def compute_context(self, w: torch.Tensor) -> StepContext:
        """Everything the loss terms need, each computed once (see LossTerm.requires)."""
        ctx = StepContext(w=w, w_hat=self.edit(w), text=self.text_features)
        if not self.requires:
            return ctx
        with torch.no_grad():
            ctx.x = self.generator.synthesis(w)  # (B, 3, H, W)
        ctx.x_hat = self.generator.synthesis(ctx.w_hat)
        return add_clip_features(ctx, self.clip, self.augment, self.requires, self.augment_source)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        total, parts = self.loss(self.compute_context(batch["w"]))
        # kept for the NaN guard (no host sync here: it checks them together with the gradient norm)
        self.last_loss, self.last_loss_parts = total.detach(), {k: v.detach() for k, v in parts.items()}
        self.log_dict({f"train/loss_{k}": v for k, v in self.last_loss_parts.items()}, on_step=True)
        self.log("train/loss", self.last_loss, on_step=True, prog_bar=True)
        return total

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, parts = self.loss(self.compute_context(batch["w"]))
        self.log_dict({f"val/loss_{k}": v for k, v in parts.items()}, on_epoch=True, sync_dist=True)
        self.log("val/loss", total, on_epoch=True, prog_bar=True, sync_dist=True)

    @torch.no_grad()
    def render_pair(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source and edited images (B, 3, H, W) in [-1, 1] for latents w (B, L, D)."""
        return self.generator.synthesis(w), self.generator.synthesis(self.edit(w))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.mapper.parameters() if p.grad is not None]
        if grads:
            self.log(
                "train/grad_norm",
                torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])),
                on_step=True,
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=[p for p in self.mapper.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": "step"},
        }

    # ---- checkpoints hold only the trainable weights -------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k.startswith(TRAINABLE_PREFIX)
        }

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load mapper weights only; a checkpoint from an incompatible mapper config gets a clear error."""
        own = {k: v for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIX)}
        theirs = {k: v for k, v in state_dict.items() if k.startswith(TRAINABLE_PREFIX)}
        missing, extra = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
        shapes = [k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape]
        if missing or extra or shapes:
            raise ValueError(
                "the run checkpoint does not fit this model config "
                f"(missing {len(missing)} keys e.g. {missing[:2]}, unexpected {len(extra)} e.g. {extra[:2]}, "
                f"shape mismatches {shapes[:2]}). Use the same model/domain settings as the run that wrote it "
                "(e.g. model.tem, the generator's resolution and style dim)."
            )
        return self.mapper.load_state_dict(
            {k[len(TRAINABLE_PREFIX) :]: v for k, v in theirs.items()}, strict=True
        )


@torch.no_grad()
def derived_negatives(clip: nn.Module, prompt: Prompt) -> list[str]:
    """prompt.negatives plus those its auto_negatives rule derives with this CLIP (template-averaged cosines)."""
    rule = prompt.auto_negatives
    if not rule:
        return list(prompt.negatives)
    cache: dict[str, torch.Tensor] = {}

    def embed(text: str) -> torch.Tensor:
        if text not in cache:
            cache[text] = F.normalize(clip.encode_text(prompt.with_templates(text)).float().mean(0), dim=0)
        return cache[text]

    sim = lambda a, b: float(embed(a) @ embed(b))  # noqa: E731
    derived = part_negatives(prompt.target, list(rule["parts"]), sim, float(rule.get("max_cos", 0.95)))
    logging.getLogger("cfclip").info("negatives derived for %r: %s", prompt.target, derived or "none")
    return list(dict.fromkeys([*prompt.negatives, *derived]))


def encode_prompt(clip: nn.Module, prompt: Prompt) -> TextFeatures:
    """The prompt's normalised text features: plain target/source and every template of each (and of every
    negative, given or derived: (0, E) without negatives)."""
    target_templates = clip.encode_text(prompt.with_templates(prompt.target))
    negatives = [t for text in derived_negatives(clip, prompt) for t in prompt.with_templates(text)]
    return TextFeatures(
        target=clip.encode_text([prompt.target])[0],
        source=clip.encode_text([prompt.source])[0],
        target_templates=target_templates,
        source_templates=clip.encode_text(prompt.with_templates(prompt.source)),
        negative_templates=clip.encode_text(negatives) if negatives else target_templates[:0],
    )


def add_clip_features(
    ctx: StepContext,
    clip: nn.Module,
    augment: MultiView,
    requires: frozenset[str],
    augment_source: bool = False,
) -> StepContext:
    """Fill ctx's CLIP features of x / x_hat / the K views of x_hat that ``requires`` names, each once:
    one batched augmentation and one CLIP call for the edit and all its views (also used by the probe)."""
    need_edit, need_views = "edit_features" in requires, "view_features" in requires
    if not (need_edit or need_views):
        return ctx
    B = ctx.x_hat.shape[0]
    views = src_views = None
    if need_views:
        if augment_source:
            views, src_views = augment(ctx.x_hat, ctx.x)  # (B, K, 3, H, W) each, same transforms
        else:
            views = augment(ctx.x_hat)
    with torch.no_grad():
        src_in = ctx.x if src_views is None else torch.cat([ctx.x, src_views.flatten(0, 1)])
        src_feats = clip.encode_image(src_in)
        ctx.src_features = src_feats[:B]  # (B, E)
    inputs = ([ctx.x_hat] if need_edit else []) + ([views.flatten(0, 1)] if need_views else [])
    feats = clip.encode_image(torch.cat(inputs))  # one CLIP call: (B [+ B*K], E)
    if need_edit:
        ctx.edit_features, feats = feats[:B], feats[B:]
    if need_views:
        K = views.shape[1]
        ctx.view_features = feats.view(B, K, -1)
        ctx.src_view_features = (
            src_feats[B:].view(B, K, -1)
            if src_views is not None
            else ctx.src_features[:, None].expand(-1, K, -1)
        )
    return ctx
