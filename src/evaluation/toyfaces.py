"""Edit metrics of the toyfaces world, judged against ground truth (never by the guiding CLIP).

The headline is the **faithful edit rate** (``judge``): the share of faces whose edit the calibrated oracle
reads as the target, whose every side of the changed region is closer to the ideal edit than to the source and
nearest the target among all the attribute's values (``src.toyworld.judge.rule``), whose other attributes the oracle reads unchanged, and whose collateral change
outside the region is small. Each ideal-edit metric is shown beside its ceiling: the same metric for the world's
own inversion of the ideal edit (the build report's ``ceilings``). Also: edit accuracy, preservation (per
attribute), leakage, realism (valid-face rate, KID to ideal edits on oracle features).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from src.models.clip_ensemble import CLIPEnsemble
from src.toyworld.assets import ASSET_DIR, load_latents, load_report, manifest
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes, values_in_text
from src.toyworld.judge.composed import judge_composed, kept_by_rule, value_renders
from src.toyworld.judge.oracle import load_oracle
from src.toyworld.judge.rule import FaithfulThresholds, ideal_edit_scores, summarize
from src.toyworld.render import attribute_mask, render

# the ideal-edit numbers printed beside their ceilings (src.eval, training summary, src.report)
CEILING_KEYS = (
    "faithful_rate",
    "region_fidelity_left",
    "region_fidelity_right",
    "region_fidelity_region",
    "nearest_target_rate",
    "collateral_psnr",
    "psnr_to_ideal",
    "edit_accuracy",
)


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ideal edits (same faces, only ``attribute`` = ``value``) (N, 3, H, W), the attribute's region (N, 1, H, W):
    its masks before and after (pointed ear tips lie outside the round ear), and the source renders (N, 3, H, W)."""
    ideal, masks, source = [], [], []
    for a, s in zip(attrs, seeds):
        img, m_cf = render(a.replace(**{attribute: value}), s, as_tensor=True)
        src, m_src = render(a, s, as_tensor=True)
        ideal.append(img)
        source.append(src)
        masks.append(torch.from_numpy(attribute_mask(m_src, attribute) | attribute_mask(m_cf, attribute)))
    return torch.stack(ideal), torch.stack(masks)[:, None].float(), torch.stack(source)


@torch.no_grad()
def judge(
    oracle: torch.nn.Module,
    x: torch.Tensor,
    x_hat: torch.Tensor,
    ideal: torch.Tensor,
    source: torch.Tensor,
    attribute: str,
    value: str,
    thresholds: FaithfulThresholds = FaithfulThresholds(),
    readings: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None,
    candidates: torch.Tensor | None = None,
    per_face: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Ideal-edit metrics of edits ``x_hat`` of reconstructions ``x`` (the ideal render and the source render of the
    same faces given): (summary, per-face faithful verdicts (N,) bool). Also used for the build's ceilings.
    ``readings``: the oracle's predictions on (x, x_hat) when the caller has them already. ``candidates``: the
    faces under every value of ``attribute`` (``value_renders``), for the nearest-target vote. ``per_face``: filled with
    ``rule`` (N,) bool, whether the pixel rule alone (region fidelity and the vote) reads the target, and ``kept`` (N,)
    bool, whether the oracle reads every other attribute unchanged."""
    if thresholds.nearest_target and candidates is None:
        raise ValueError(
            "thresholds.nearest_target needs the faces under every value (candidates=value_renders(...))"
        )
    label = SCHEMA[attribute].index(value)
    scores = ideal_edit_scores(x_hat, x, ideal, source, attribute, thresholds, None, candidates, label)
    if readings is None:
        p_src = oracle.predict(x)
        readings = p_src, oracle.predict(x_hat, x, targets=[(attribute, value)], source=p_src)
    p_src, p_edit = readings
    read = p_edit[attribute] == label
    kept = torch.stack([p_edit[a] == p_src[a] for a in LABEL_ATTRIBUTES if a != attribute]).all(0)
    faithful = read & scores["region_ok"] & kept & scores["collateral_ok"]
    if "nearest_ok" in scores:
        faithful &= scores["nearest_ok"]
    if per_face is not None:
        per_face["rule"] = scores["region_ok"] & scores.get("nearest_ok", scores["region_ok"])
        per_face["kept"] = kept
    out: dict[str, Any] = summarize(scores, faithful, attribute)
    out["edit_accuracy"] = read.float().mean().item()
    out["others_kept_rate"] = kept.float().mean().item()
    out["oracle_rule_agreement"] = (read == scores["region_ok"]).float().mean().item()
    if "nearest_ok" in scores:  # against the rule with the vote: does the oracle read colour like it?
        both = scores["region_ok"] & scores["nearest_ok"]
        out["oracle_rule_agreement_nearest"] = (read == both).float().mean().item()
    return out, faithful


def leakage(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Mean absolute change outside the region relative to inside; None for global edits (no outside)."""
    if not bool((mask < 1).any()):
        return None
    change = (x_hat - x).abs().mean(1, keepdim=True)
    inside = (change * mask).sum() / mask.sum().clamp_min(1)
    outside = (change * (1 - mask)).sum() / (1 - mask).sum().clamp_min(1)
    return (outside / inside.clamp_min(1e-8)).item()


def kept_metrics(
    x_hat: torch.Tensor,
    attrs: Sequence[Attributes],
    seeds: Sequence[int],
    attribute: str,
    value: str,
    oracle_kept: torch.Tensor,
    faithful: torch.Tensor,
    region: torch.Tensor,
) -> dict[str, float | None]:
    """The oracle's "others kept" asked of the world's rule (each other part votes for its own value; a diagnostic of
    what the oracle misses, such as a bleed into the irises, not part of the verdict), beside the oracle's reading
    ``oracle_kept`` (N,) and the verdicts ``faithful`` (N,). None for a whole-image edit (a style repaints every
    part)."""
    keys = ("others_kept_rule_rate", "oracle_rule_agreement_kept", "faithful_rule_kept_rate")
    if not bool((region < 1).any()):
        return dict.fromkeys(keys)
    kept = kept_by_rule(x_hat, attrs, seeds, {attribute: value})
    kept_all = torch.stack(list(kept.values())).all(0)
    rates = (kept_all, kept_all == oracle_kept, faithful & kept_all)
    return {k: r.float().mean().item() for k, r in zip(keys, rates, strict=True)}


class ToyfacesEvaluator:
    """Scores source/edited pairs of the toyfaces test latents for one prompt with the oracle."""

    def __init__(
        self,
        edits: dict[str, Sequence[str]],
        dilate: int = 2,
        asset_dir: str | None = None,
        faithful: dict[str, float] | None = None,
        guide: dict[str, int] | None = None,
    ):
        self.edits = {k: tuple(v) for k, v in edits.items()}
        self.dilate = dilate
        self.asset_dir = asset_dir
        self.thresholds = FaithfulThresholds(**{"dilate": dilate, **(faithful or {})})
        # is the guiding CLIP fooled (src.evaluation.guide)? faces / steps of the fair ideal edit (faces 0: skip it)
        self.guide = {"faces": 16, "steps": 100, **(guide or {})}
        self._oracle = None
        self.last: dict[str, torch.Tensor] = {}  # ideal renders and verdicts of the last call (for the grid)

    def ceilings(self, attribute: str, value: str) -> dict[str, Any] | None:
        """The build report's ceilings for this edit (the world's inversion of the ideal edit), if it has them."""
        if "report.json" not in manifest(self.asset_dir or ASSET_DIR)["files"]:  # a provisional export
            return None
        return load_report(self.asset_dir).get("ceilings", {}).get(f"{attribute}:{value}")

    @property
    def oracle(self) -> torch.nn.Module:
        if self._oracle is None:
            self._oracle = load_oracle(self.asset_dir)
        return self._oracle

    def target(self, prompt_name: str) -> tuple[str, str]:
        if prompt_name not in self.edits:
            raise ValueError(
                f"prompt {prompt_name!r} has no ground-truth edit in this domain; known: "
                f"{sorted(self.edits)} (add it to domain.edits as [attribute, value])"
            )
        return self.edits[prompt_name]

    def targets(self, prompt_name: str, text: str | None = None) -> list[tuple[str, str]]:
        """The ground truth of a prompt: ``domain.edits[name]``, else the values its text names with the world's
        caption phrases (src.toyworld.attributes.values_in_text): one, or several for a composed prompt."""
        if prompt_name in self.edits or not text:
            return [self.target(prompt_name)]
        found = values_in_text(text)
        if not found:
            raise ValueError(
                f"prompt {prompt_name!r} ({text!r}) names no value this world knows: write it with the captions' "
                f"phrases (e.g. 'face with blue lipstick'), or add it to domain.edits as [attribute, value]"
            )
        return found

    def scenes(self, n: int) -> tuple[list[Attributes], list[int]]:
        test = load_latents("test", self.asset_dir)
        return ([Attributes.decode(v.numpy()) for v in test["labels"][:n]], test["seeds"][:n].tolist())

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, x_hat: torch.Tensor, prompt_name: str, text: str | None = None
    ) -> dict[str, Any]:
        targets = self.targets(prompt_name, text)
        x, x_hat = x.float().cpu(), x_hat.float().cpu()
        oracle = self.oracle
        # each edit read beside the face it edits, its targets by the edit question (Oracle.reads_target)
        p_src = oracle.predict(x)
        p_edit = oracle.predict(x_hat, x, targets=targets, source=p_src)
        attrs, seeds = self.scenes(x.shape[0])
        if len(targets) > 1:
            out, self.last = judge_composed(
                oracle, x, x_hat, attrs, seeds, targets, self.thresholds, (p_src, p_edit), self.asset_dir
            )
            return out
        ((attribute, value),) = targets
        label = SCHEMA[attribute].index(value)
        ideal_t, mask, source = ideal_edits(attrs, seeds, attribute, value)
        cands = value_renders(attrs, seeds, attribute) if self.thresholds.nearest_target else None
        per_face: dict[str, torch.Tensor] = {}
        ideal_metrics, faithful = judge(
            oracle,
            x,
            x_hat,
            ideal_t,
            source,
            attribute,
            value,
            self.thresholds,
            (p_src, p_edit),
            cands,
            per_face,
        )
        out: dict[str, Any] = {"target": f"{attribute}:{value}", "n": x.shape[0], **ideal_metrics}
        out["unedited_accuracy"] = (p_src[attribute] == label).float().mean().item()
        per = {a: (p_edit[a] == p_src[a]).float().mean().item() for a in LABEL_ATTRIBUTES if a != attribute}
        out["preservation"] = float(np.mean(list(per.values())))
        out["preservation_per_attribute"] = per
        out.update(kept_metrics(x_hat, attrs, seeds, attribute, value, per_face["kept"], faithful, mask))
        out["faithful_thresholds"] = dataclasses.asdict(self.thresholds)
        out["ceiling"] = self.ceilings(attribute, value)
        self.last = {"ideal": ideal_t, "faithful": faithful, "rule": per_face["rule"], "region": mask}
        self.last["target"] = (attribute, value)
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

    def guide_metrics(
        self,
        module: Any,
        latents: torch.Tensor,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        text: str | None = None,
    ) -> dict[str, Any]:
        """After a call: whether the run's guiding CLIP is fooled by its edits, and whether its own loss prefers a
        fair ideal edit to them (``src.evaluation.guide``; empty for composed prompts)."""
        from src.evaluation.guide import fooling_metrics, ideal_beats_edit

        if "rule" not in self.last:
            return {}
        attribute, value = self.last["target"]
        label = SCHEMA[attribute].index(value)
        guide = module.clip
        if len(module.extra_clips):  # the ensemble the run was guided by, read with its weights
            guide = CLIPEnsemble([module.clip, *module.extra_clips], module.clip_weights)
        out = fooling_metrics(guide, x, x_hat, self.last["rule"], label, attribute)
        k = min(int(self.guide["faces"]), latents.shape[0])
        if k > 0:
            ideal, region = self.last["ideal"][:k], self.last["region"][:k]
            out.update(ideal_beats_edit(module, latents[:k], ideal, region, text, int(self.guide["steps"])))
        return out


def ceiling_table(metrics: dict[str, Any]) -> str:
    """The ideal-edit metrics of a result beside their ceilings, as a few aligned lines ('' without them); for
    a multi-prompt evaluation, one block per prompt."""
    if isinstance(metrics.get("prompts"), dict):
        blocks = ((m, ceiling_table(m)) for m in metrics["prompts"].values())
        return "\n".join(f"[{'seen' if m.get('seen') else 'unseen'}] {t}" for m, t in blocks if t)
    if metrics.get("faithful_rate") is None:
        return ""
    ceiling = metrics.get("ceiling") or {}
    lines = [
        f"{metrics.get('target', '')}: ideal-edit metrics on {metrics.get('n')} faces (this run | ceiling)"
    ]
    for key in CEILING_KEYS:
        if key in metrics:
            run, top = metrics[key], ceiling.get(key)
            show = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"  {key:<24} {show(run):>8} | {show(top)}")
    return "\n".join(lines)
