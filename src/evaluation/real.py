"""Metrics of edits on real domains (ffhq, afhq_*), used as ``domain.evaluator`` by ``python -m src.eval``.

``RealEvaluator(x, x_hat, prompt_name) -> dict`` with, each computed only when its weights are local:
- ``eval_clip_score`` / ``eval_clip_score_source`` / ``eval_clip_directional``: CLIP score of the edits (and of
  the sources) to the target text, and directional similarity of the image change to the text change (template
  averaged), with a separate evaluation CLIP (default ViT-L/14, configurable) so the training CLIP is not its
  own judge;
- ``identity_similarity``: cosine of ArcFace IR-SE50 features of source and edit (faces);
- ``lpips``: LPIPS(source, edit) with the ``lpips`` package's linear heads and a local backbone file
  (``src.models.perceptual.lpips_model``);
- ``fid`` / ``kid`` / ``kid_std``: torchmetrics FID/KID between sources and edits with the local Inception file.

A metric whose file is missing reports ``"skipped: file X missing (...)"`` instead of a number; nothing is
downloaded. Every network can be injected (tests use random-weight stand-ins).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.data.prompts import load_templates
from src.losses import IdentityLoss
from src.models.arcface import load_arcface
from src.models.perceptual import LPIPS_BACKBONES, lpips_model
from src.models.real import real_clip
from src.models.weights import WeightsError, find_weights, search_locations

log = logging.getLogger("cfclip")

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception v3
DEFAULT_EVAL_CLIP = {"model_name": "ViT-L-14", "pretrained": "openai", "file": "ViT-L-14.pt"}


def skipped(filename: str, weights_dir: str | None = None) -> str:
    """The entry a metric gets when its file is missing: which file and where it was looked for."""
    places = [str(p.parent) for _, p in search_locations(filename, None, weights_dir) if p is not None]
    return f"skipped: file {filename} missing (looked in {', '.join(dict.fromkeys(places))})"


def _skip_reason(err: Exception, filename: str, weights_dir: str | None) -> str:
    text = str(err)
    if "Missing weights file" in text or "not found" in text:
        return skipped(filename, weights_dir)
    return f"skipped: {filename} could not be loaded ({text.splitlines()[0][:300]})"


def inception_feature(path: str) -> nn.Module:
    """torchmetrics' FID Inception (torch-fidelity's inception-v3-compat) from a local weight file."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
    )


class RealEvaluator:
    """Evaluation metrics of source / edited image pairs (B, 3, H, W) in [-1, 1] for real domains."""

    def __init__(
        self,
        target_text: str,
        source_text: str = "face",
        templates: str | Sequence[str] = "imagenet",
        weights_dir: str | None = None,
        clip: dict | None = None,
        identity: bool = True,
        identity_file: str | None = None,
        lpips_net: str = "vgg",
        lpips_file: str | None = None,
        fid: bool = True,
        inception_file: str = INCEPTION_FILE,
        kid_subset_size: int = 50,
        batch_size: int = 16,
        device: str | None = None,
        clip_model: nn.Module | None = None,
        identity_backbone: nn.Module | None = None,
        lpips: nn.Module | None = None,
        fid_feature: nn.Module | None = None,
    ):
        self.target_text, self.source_text = target_text, source_text
        self.templates = load_templates(templates)
        self.weights_dir = weights_dir
        self.clip_cfg = dict(DEFAULT_EVAL_CLIP if clip is None else clip)
        self.identity, self.identity_file = identity, identity_file
        self.lpips_net, self.lpips_file = lpips_net, lpips_file
        self.fid, self.inception_file = fid, inception_file
        self.kid_subset_size, self.batch_size = kid_subset_size, batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._clip, self._identity, self._lpips, self._fid_feature = (
            clip_model,
            identity_backbone,
            lpips,
            fid_feature,
        )

    # ---- helpers ------------------------------------------------------------------------------------------
    def _batches(self, *ts: torch.Tensor):
        n = ts[0].shape[0]
        for i in range(0, n, self.batch_size):
            yield [t[i : i + self.batch_size].to(self.device, torch.float32) for t in ts]

    def _load(self, what: str, filename: str, factory) -> tuple[Any, str | None]:
        try:
            return factory(), None
        except (WeightsError, FileNotFoundError) as err:
            reason = _skip_reason(err, filename, self.weights_dir)
            log.warning("evaluation %s %s", what, reason)
            return None, reason

    # ---- metrics ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def clip_metrics(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, Any]:
        cfg = self.clip_cfg
        name = f"{cfg.get('model_name')}/{cfg.get('pretrained')}"
        clip = self._clip
        if clip is None:
            clip, reason = self._load(
                "CLIP", str(cfg.get("file") or name), lambda: real_clip(weights_dir=self.weights_dir, **cfg)
            )
            if clip is None:
                reason += (
                    " (or choose the evaluation CLIP with domain.evaluator.clip={model_name,pretrained,file})"
                )
                return {"eval_clip_model": name, "eval_clip_score": reason}
        clip = clip.to(self.device)
        f, fh = [], []
        for a, b in self._batches(x, x_hat):
            f.append(clip.encode_image(a))
            fh.append(clip.encode_image(b))
        f, fh = torch.cat(f), torch.cat(fh)
        target = clip.encode_text([self.target_text])[0]
        t_dir = F.normalize(
            clip.encode_text([t.format(self.target_text) for t in self.templates]).mean(0)
            - clip.encode_text([t.format(self.source_text) for t in self.templates]).mean(0),
            dim=-1,
        )
        return {
            "eval_clip_model": name if self._clip is None else type(clip).__name__,
            "eval_clip_score": (fh @ target).mean().item(),
            "eval_clip_score_source": (f @ target).mean().item(),
            "eval_clip_directional": (F.normalize(fh - f, dim=-1) @ t_dir).mean().item(),
        }

    @torch.no_grad()
    def identity_similarity(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, Any]:
        backbone = self._identity
        if backbone is None:
            filename = self.identity_file or "model_ir_se50.pth"
            backbone, reason = self._load(
                "identity",
                filename,
                lambda: load_arcface(self.identity_file, weights_dir=self.weights_dir),
            )
            if backbone is None:
                return {"identity_similarity": reason}
        term = IdentityLoss(backbone).to(self.device)  # its embed(): the official pool / crop / pool
        sims = [(term.embed(a) * term.embed(b)).sum(-1) for a, b in self._batches(x, x_hat)]
        return {"identity_similarity": torch.cat(sims).mean().item()}

    @torch.no_grad()
    def lpips(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, Any]:
        model = self._lpips
        if model is None:
            filename = self.lpips_file or LPIPS_BACKBONES[self.lpips_net]
            model, reason = self._load(
                "LPIPS", filename, lambda: lpips_model(self.lpips_net, self.lpips_file, self.weights_dir)
            )
            if model is None:
                return {"lpips": reason}
        model = model.to(self.device)
        size = min(256, x.shape[-1])
        resize = lambda t: F.interpolate(t, size=size, mode="area") if t.shape[-1] != size else t  # noqa: E731
        dists = [model(resize(a), resize(b)).flatten() for a, b in self._batches(x, x_hat)]
        return {"lpips": torch.cat(dists).mean().item()}

    @torch.no_grad()
    def fid_kid(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, Any]:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        n = x.shape[0]
        if n < 2:
            reason = "skipped: FID/KID need at least 2 images"
            return {"fid": reason, "kid": reason}
        feature = self._fid_feature
        if feature is None:
            try:
                path = find_weights(self.inception_file, weights_dir=self.weights_dir)
            except WeightsError:
                hub = os.path.join(torch.hub.get_dir(), "checkpoints", self.inception_file)
                if not os.path.isfile(hub):
                    reason = skipped(self.inception_file, self.weights_dir) + f" or {os.path.dirname(hub)}"
                    return {"fid": reason, "kid": reason}
                path = hub
            try:
                feature = inception_feature(str(path))
            except ModuleNotFoundError as err:
                reason = f"skipped: {err}".splitlines()[0]
                return {"fid": reason, "kid": reason}
        fid = FrechetInceptionDistance(feature=feature, normalize=True).to(self.device)
        kid = KernelInceptionDistance(
            feature=feature, normalize=True, subset_size=min(self.kid_subset_size, n)
        ).to(self.device)
        for a, b in self._batches(x, x_hat):
            a, b = a.clamp(-1, 1).add(1).div(2), b.clamp(-1, 1).add(1).div(2)
            for metric in (fid, kid):
                metric.update(a, real=True)
                metric.update(b, real=False)
        kid_mean, kid_std = kid.compute()
        return {"fid": fid.compute().item(), "kid": kid_mean.item(), "kid_std": kid_std.item(), "fid_n": n}

    def __call__(
        self, x: torch.Tensor, x_hat: torch.Tensor, prompt_name: str, text: str | None = None
    ) -> dict[str, Any]:
        """``text`` (the prompt's text, as every domain evaluator takes it) is unused: the texts are configured."""
        out: dict[str, Any] = {"eval_target_text": self.target_text}
        out.update(self.clip_metrics(x, x_hat))
        if self.identity:
            out.update(self.identity_similarity(x, x_hat))
        out.update(self.lpips(x, x_hat))
        if self.fid:
            out.update(self.fid_kid(x, x_hat))
        return out
