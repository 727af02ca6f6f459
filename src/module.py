"""The CF-CLIP LightningModule: frozen StyleGAN2 + frozen CLIP + trainable TEM/fusion/mapper.

A step: delta = mapper(w, E_T(target)); w_hat = w + step * delta; render x (no grad) and x_hat; compute the CLIP
features every loss term needs exactly once (one batched augmentation, one CLIP call for the edit and all its
views); total, parts = loss(ctx). Only the mapper trains, and only its weights go into run checkpoints.
With the per-latent source cache (src/data/source_cache.py, on by default) a step whose latents were seen before
takes the source's CLIP embedding and the terms' source features from the cache and renders x only when a term
reads the image itself. Several prompts (prompt=multi) train one TEM mapper: each sample of a batch carries its
own prompt, and the loss is the batch-share-weighted sum over the prompts present of the same loss on that
prompt's samples and text. A CLIP ensemble (``domain.clip`` a list, src.models.clip_ensemble.CLIPEnsemble)
guides with each CLIP's weighted CLIP terms (``LossSum``), each CLIP with its own text features and source-cache entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from src.augment import MultiView
from src.data import cache_fill
from src.data import source_cache as sc
from src.data.prompts import Prompt
from src.losses.base import LossSum, StepContext, TextFeatures
from src.losses.clip import add_clip_features  # also imported from here (eval, the probe)
from src.models.clip_ensemble import as_ensemble
from src.models.frozen import freeze, is_frozen
from src.text_bank import TextBank, check_generalises

TRAINABLE_PREFIX = "mapper."


class CFCLIPModule(pl.LightningModule):
    """Trains the text-conditioned latent mapper of CF-CLIP for one prompt, or one mapper for several."""

    def __init__(
        self,
        generator: nn.Module,
        clip: nn.Module | Sequence[nn.Module],
        mapper: nn.Module,
        loss: LossSum,
        augment: MultiView,
        prompt: Prompt | Sequence[Prompt],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        step_size: float = 0.1,
        augment_source: bool = False,
        config: dict | None = None,
    ):
        super().__init__()
        self.generator = freeze(generator)
        ensemble = as_ensemble(clip)
        # the primary CLIP (the TEM's text encoder; evaluation and editing read it), then an ensemble's others
        self.clip = freeze(ensemble.members[0])
        self.extra_clips = nn.ModuleList(list(ensemble.members)[1:])
        self.clip_weights = ensemble.weights
        self.mapper = mapper
        self.loss = loss
        self.augment = augment
        self.prompts = [prompt] if isinstance(prompt, Prompt) else list(prompt)
        self.prompt = self.prompts[0]  # the run's prompt (the first one of a multi-prompt run)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.step_size = step_size
        self.augment_source = augment_source
        self.requires = loss.requires
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith(TRAINABLE_PREFIX):
                raise ValueError(f"parameter {name} is trainable but outside the mapper: freeze it")
        if len(self.prompts) > 1 and not getattr(mapper, "use_tem", True):
            raise ValueError(
                "several prompts need the text-conditioned mapper (model=cfclip): model.tem is off"
            )
        self.texts = TextBank(self.clip, self.prompts)  # text features, encoded once per run (never saved)
        self.extra_texts = nn.ModuleList([TextBank(c, self.prompts) for c in self.extra_clips])
        # the last training loss, detached: src.utils.guards.NaNGuard checks it before the optimizer step
        self.last_loss: torch.Tensor | None = None
        self.last_loss_parts: dict[str, torch.Tensor] = {}
        # per split ("train", "val"): the source side of each latent (opened in setup from the datamodule's options)
        self.source_caches: dict[str, sc.SourceCache] = {}
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
        """The (first) prompt's text features."""
        return self.texts.features(0)

    # ---- the step ------------------------------------------------------------------------------------------
    def text_embedding(
        self, w: torch.Tensor, prompt_ids: torch.Tensor | None = None, text: str | None = None
    ):
        """The TEM input (B, E) for each sample: its prompt's (ids (B,)), the text's, or the first prompt's."""
        if not getattr(self.mapper, "use_tem", True):
            return None
        if text is not None:
            return self.texts.lookup(self.clip, self.check_text(text))[1].expand(w.shape[0], -1)
        if prompt_ids is None:
            return self.texts.embeddings[0].expand(w.shape[0], -1)
        return self.texts.embeddings[prompt_ids.to(self.texts.embeddings.device)]

    def check_text(self, text: str) -> str:
        """A text this mapper can edit toward: any text for a multi-prompt mapper, its own for a single one."""
        return check_generalises(self.texts.targets, text, "this checkpoint's mapper", self.texts.names)

    def edit(
        self, w: torch.Tensor, prompt_ids: torch.Tensor | None = None, text: str | None = None
    ) -> torch.Tensor:
        """w (B, L, D) -> w_hat (B, L, D), toward each sample's prompt (see text_embedding)."""
        return w + self.step_size * self.mapper(w, self.text_embedding(w, prompt_ids, text))

    def compute_context(
        self,
        w: torch.Tensor,
        prompt_ids: torch.Tensor | None = None,
        source: tuple[dict[str, torch.Tensor], torch.Tensor | None] | None = None,
        w_hat: torch.Tensor | None = None,
    ) -> StepContext:
        """Everything the loss terms need, each computed once (see LossTerm.requires). ``source``: the batch's
        source side from the cache (entries, and x when it was rendered to fill them); x is then rendered only
        if a term reads it. ``w_hat``: score this edit instead of the mapper's (evaluation: a fair ideal edit)."""
        w_hat = self.edit(w, prompt_ids) if w_hat is None else w_hat
        ctx = StepContext(w=w, w_hat=w_hat, text=self.text_features)
        if not self.requires:
            return ctx
        entries = {}
        if source is None:
            ctx.x = self.render_source(w)  # (B, 3, H, W)
        else:
            entries, ctx.x = source
            if ctx.x is None:
                ctx.render_source = lambda: self.render_source(w)
            ctx.src_features = entries.get(sc.CLIP_ENTRY)
            ctx.source = {k: v for k, v in entries.items() if not sc.is_clip_entry(k)}
        ctx.x_hat = self.generator.synthesis(ctx.w_hat)
        if self.extra_clips:
            ctx.clip_weights = self.clip_weights
            ctx.guides = [
                StepContext(
                    w=w, w_hat=ctx.w_hat, text=bank.features(0), src_features=entries.get(sc.clip_entry(i))
                )
                for i, bank in enumerate(self.extra_texts, start=1)
            ]
        return add_clip_features(
            ctx, self.clip, self.augment, self.requires, self.augment_source, self.extra_clips
        )

    @torch.no_grad()
    def render_source(self, w: torch.Tensor) -> torch.Tensor:
        """The source images (B, 3, H, W) of latents w (B, L, D), without grad."""
        return self.generator.synthesis(w)

    @torch.no_grad()
    def source_side(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cacheable source side of images x (B, 3, H, W): {entry: (B, F)}, the same calls as an uncached step."""
        nets = sc.cache_entries(self)
        return {
            k: n.encode_image(x) if sc.is_clip_entry(k) else n.source_features(x) for k, n in nets.items()
        }

    def cached_source(
        self, batch: dict[str, torch.Tensor], split: str
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None] | None:
        """The batch's source side from the split's cache: (entries on the device, None) when every latent is
        cached; else computed now from the rendered x and stored, (entries, x); None without a cache."""
        cache = self.source_caches.get(split)
        if cache is None or "idx" not in batch:
            return None
        idx = batch["idx"].cpu()  # LatentDataModule keeps the indices on the host: no sync
        hit = cache.lookup(idx)
        if hit is not None:
            return {k: v.to(self.device, non_blocking=True) for k, v in hit.items()}, None
        x = self.render_source(batch["w"])
        entries = self.source_side(x)
        cache.store(idx, entries)
        return entries, x

    def prompt_ids(self, batch: dict[str, torch.Tensor], training: bool) -> torch.Tensor | None:
        """Each sample's prompt (B,) on the CPU: the batch's own "prompt" entry, else (latent index + step) mod P,
        so every latent meets every prompt in turn, each prompt gets ~1/P of every batch, and DDP ranks agree
        with one process (no random draw); None for a one-prompt run."""
        if "prompt" in batch:
            return batch["prompt"].long().cpu()
        n, B = len(self.texts), batch["w"].shape[0]
        if n == 1:
            return None
        idx = batch["idx"].long().cpu() if "idx" in batch else torch.arange(B)
        return (idx + (self.global_step if training else 0)) % n

    def step_loss(
        self, batch: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(total, parts, per-prompt totals): with several prompts, the same loss on each prompt's samples with
        its own text, weighted by its share of the batch (so a batch of one prompt gives the one-prompt loss)."""
        ids = self.prompt_ids(batch, training)
        source = self.cached_source(batch, "train" if training else "val")
        return self.latent_loss(batch["w"], ids, source)

    def latent_loss(
        self,
        w: torch.Tensor,
        ids: torch.Tensor | None,
        source: tuple[dict[str, torch.Tensor], torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """step_loss's work for latents w (B, L, D), prompt ids (B,) or None and the cached source side (the part
        of the step that src.step_graph compiles: device tensors only)."""
        ctx = self.compute_context(w, ids, source)
        if ids is None:
            total, parts = self.loss(ctx)
            return total, parts, {}
        total, parts, per_prompt = 0.0, {}, {}
        for i in ids.unique().tolist():
            rows = (ids == i).nonzero().squeeze(1)
            guide_texts = [bank.features(i) for bank in self.extra_texts]
            t, p = self.loss(ctx.select(rows.to(ctx.w.device), self.texts.features(i), guide_texts))
            share = len(rows) / len(ids)
            total = total + share * t
            parts = {k: parts.get(k, 0.0) + share * v for k, v in p.items()}
            per_prompt[self.texts.names[i]] = t
        return total, parts, per_prompt

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        total, parts, per_prompt = self.step_loss(batch, training=True)
        # kept for the NaN guard (no host sync here: it checks them together with the gradient norm)
        self.last_loss, self.last_loss_parts = total.detach(), {k: v.detach() for k, v in parts.items()}
        self.log_dict({f"train/loss_{k}": v for k, v in self.last_loss_parts.items()}, on_step=True)
        self.log_dict({f"train/loss/{k}": v.detach() for k, v in per_prompt.items()}, on_step=True)
        self.log("train/loss", self.last_loss, on_step=True, prog_bar=True)
        return total

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, parts, _ = self.step_loss(batch, training=False)
        self.log_dict({f"val/loss_{k}": v for k, v in parts.items()}, on_epoch=True, sync_dist=True)
        self.log("val/loss", total, on_epoch=True, prog_bar=True, sync_dist=True)

    # ---- the source cache ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Open the source caches the datamodule asks for (``data.source_cache``), once its splits exist."""
        if stage == "fit" and not self.source_caches:
            self.source_caches = cache_fill.caches_for(self, getattr(self.trainer, "datamodule", None))

    def on_fit_start(self) -> None:
        """Fill the caches now where asked (``fill=eager``) and under DDP (each rank its share, then merged)."""
        cache_fill.prefill(self, getattr(self.trainer, "datamodule", None))

    def on_train_epoch_end(self) -> None:
        cache_fill.save_caches(self)

    def on_fit_end(self) -> None:
        cache_fill.save_caches(self)

    @torch.no_grad()
    def render_pair(self, w: torch.Tensor, text: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Source and edited images (B, 3, H, W) in [-1, 1] for latents w (B, L, D), toward ``text`` if given."""
        return self.generator.synthesis(w), self.generator.synthesis(self.edit(w, text=text))

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
        checkpoint["prompts"] = [{"name": p.name, "target": p.target} for p in self.prompts]

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
