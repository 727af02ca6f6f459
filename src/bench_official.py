"""The official code's per-step work on our models, the reference ``src.bench`` times as ``official_ms``.

yingchen001/CF-CLIP ``coach.py`` + ``criteria/nce_loss.py``: the target text encoded every step and 4 x T
template prompts in the NCE loss, tokenized and encoded with autograd on; the source encoded K times; K
augmentation calls in a Python loop, each one parameter draw for the whole batch; frozen networks keeping
``requires_grad`` (weight gradients of the generator and CLIP computed and thrown away); ``float()`` of every
loss term.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from src.losses import CLIPNCELoss
from src.losses.base import StepContext, uses_clip
from src.utils.measure import requires_grad


class OfficialStep:
    """One official training step (forward, backward, optimizer step) on ``module``'s models and latents ``w``."""

    def __init__(
        self,
        module: Any,
        optimizer: torch.optim.Optimizer,
        w: torch.Tensor,
        views: int,
        autocast: Callable[[], Any],
        frozen_grads: bool = True,
    ):
        self.module, self.optimizer, self.w, self.K, self.autocast = module, optimizer, w, views, autocast
        self.generator, self.clip, self.frozen_grads = module.generator, module.clip, frozen_grads
        prompt, clip, device = module.prompt, module.clip, w.device
        self.templates_source = prompt.with_templates(prompt.source)
        self.templates_target = prompt.with_templates(prompt.target)
        # coach.py tokenizes the description once (self.text_inputs) and encodes it every step
        self.target_tokens = clip.tokenizer([prompt.target], context_length=clip.context_length).to(device)
        transform = getattr(module.augment, "transform", None)
        self.aug = None
        if transform is not None:
            self.aug = copy.deepcopy(transform)  # one parameter draw per call for the whole batch
            for m in self.aug.modules():
                if hasattr(m, "same_on_batch"):
                    m.same_on_batch = True
        nce = [t for t in module.loss.terms.values() if isinstance(t, CLIPNCELoss)]
        self.nce_weight = nce[0].weight if nce else 0.3
        self.nce_temperature = nce[0].temperature if nce else 0.1
        self.other_terms = {name: t for name, t in module.loss.terms.items() if not uses_clip(t)}
        self.frozen = [self.generator, self.clip]

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """nce_loss.get_text_features: tokenize + encode (autograd on) + detach + normalise, every call."""
        clip = self.clip
        tokens = clip.tokenizer(texts, context_length=clip.context_length).to(self.w.device)
        feats = clip.model.encode_text(tokens).detach().float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.clip.model.encode_image(self.clip.preprocess(x).to(self.clip.dtype)).float()
        return feats / feats.clone().norm(dim=-1, keepdim=True)

    def __call__(self) -> None:
        m, K = self.module, self.K
        with requires_grad(self.frozen, self.frozen_grads):
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                t_feat = m.clip.model.encode_text(self.target_tokens).detach().float()  # (1, E), every step
                text = t_feat.expand(self.w.shape[0], -1) if getattr(m.mapper, "use_tem", True) else None
                with torch.no_grad():
                    x = self.generator.synthesis(self.w)
                w_hat = self.w + m.step_size * m.mapper(self.w, text)
                x_hat = self.generator.synthesis(w_hat)
                ctx = StepContext(w=self.w, w_hat=w_hat, text=m.text_features, x=x, x_hat=x_hat)
                total = 0.0
                log = {}
                for name, term in self.other_terms.items():
                    value = term(ctx)
                    log[name] = float(value.detach())  # coach.calc_loss: float() of every term, every step
                    total = total + term.weight * value
                # K augmentation calls in a Python loop, one parameter draw for the whole batch each
                aug = self.aug
                x_aug = torch.cat([aug(x_hat) if aug is not None else x_hat for _ in range(K)])  # (K*B, ...)
                x_rep = x.repeat(K, 1, 1, 1)  # the source, K times
                total = total + self.nce_weight * self._infonce(x_rep, x_aug, log)
                log["loss"] = float(total.detach())
            total.backward()
            self.optimizer.step()

    def _infonce(self, x_rep: torch.Tensor, x_aug: torch.Tensor, log: dict[str, float]) -> torch.Tensor:
        """nce_loss.infonce_loss, as the official code computes it (texts re-encoded on every call)."""
        source_text = self._text_features(self.templates_source)  # (T, E)
        target_text = self._text_features(self.templates_target).mean(0, keepdim=True)  # (1, E)
        src_img = self._image_features(x_rep)  # (K*B, E): the source encoded K times
        tgt_img = self._image_features(x_aug)  # (K*B, E)
        target_text = target_text.repeat(tgt_img.shape[0], 1)
        query = tgt_img - src_img
        query = query / query.clone().norm(dim=-1, keepdim=True)
        src_t, tgt_t = self._text_features(self.templates_source), self._text_features(self.templates_target)
        pos1 = (tgt_t - src_t).mean(0, keepdim=True)  # compute_text_direction
        pos1 = (pos1 / pos1.norm(dim=-1, keepdim=True)).repeat(tgt_img.shape[0], 1)
        pos2 = target_text - src_img
        pos2 = pos2 / pos2.clone().norm(dim=-1, keepdim=True)
        neg = source_text - src_img[:1]  # the official bug: negatives from the first image only
        neg = neg / neg.clone().norm(dim=-1, keepdim=True)
        q2, pos = query.repeat(2, 1), torch.cat([pos1, pos2], 0)
        logits = torch.cat([(q2 * pos).sum(-1, keepdim=True), q2 @ neg.t()], dim=1) / self.nce_temperature
        nce = F.cross_entropy(logits, logits.new_zeros(logits.shape[0], dtype=torch.long))
        log["nce"] = float(nce.detach())
        return nce
