"""The toyfaces oracle: an attribute reader independent of CLIP, used only to evaluate edits.

A small multi-head CNN (one softmax head per attribute over natural + counterfactual values, plus a
"valid face" logit trained on renders vs corrupted images). The calibrated oracle is ``relative``: it reads an edit
beside the reconstruction it edits, as a person compares before and after. Training: ``src.toyworld.judge.oracle_training``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.toyworld import assets
from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA
from src.toyworld.judge.dense import DenseReader
from src.toyworld.judge.rule import PAIRED, scaled_lab

ORACLE_SIZE = 64  # input resolution; other sizes are resized
# image halves; the region rule's sides of a paired part (src.toyworld.judge.rule.sides)
SIDES = ("left", "right")
EYEBROWS_FOLLOW_HAIR = 0.5  # decorrelate eyebrows from hair so the oracle looks at the eyebrows


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class Oracle(nn.Module):
    """Multi-head CNN on images in [-1, 1] (N, 3, H, W); heads named by LABEL_ATTRIBUTES, plus 'valid'.

    Parts that come in pairs (``PAIRED``: ears, eyebrows, eyes) are also read per side, from the left and the right
    half of the feature map (``side_heads``); with ``sided`` the reading of such an attribute needs both sides, as
    a person's does: one pointed ear, or a streak beside it, is not elf ears (``both_sides``)."""

    def __init__(
        self, width: int = 16, sided: bool = True, relative: bool = False, lab: bool = False
    ) -> None:
        super().__init__()
        w = width
        # True: the oracle also sees how the image differs from a reference (``with_reference``)
        self.relative = relative
        # True (relative oracles only): it also sees the image and that difference in CIELAB (``with_lab``)
        if lab and not relative:
            raise ValueError("CIELAB channels are for relative oracles (Oracle(relative=True, lab=True))")
        self.lab = lab
        # the dense colour reader of some attributes' targets (src.toyworld.judge.dense; the build's dense stage)
        self.dense: DenseReader | None = None
        cin = 12 if lab else 6 if relative else 3
        self.body = nn.Sequential(
            nn.Conv2d(cin, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),  # 32x32
            _block(w, w, 1),
            _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),  # 16x16
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1),  # 8x8
        )  # fmt: skip
        feat = 8 * w  # average and max pooled
        self.heads = nn.ModuleDict({n: nn.Linear(feat, len(SCHEMA[n].values)) for n in LABEL_ATTRIBUTES})
        self.valid_head = nn.Linear(feat, 1)
        # False: an oracle saved before side heads existed (its paired heads read the pair)
        self.sided = sided
        if sided:
            self.side_heads = nn.ModuleDict(
                {f"{n}_{s}": nn.Linear(feat, len(SCHEMA[n].values)) for n in PAIRED for s in SIDES}
            )

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Oracle:
        """An oracle in eval mode from its state dict (any float dtype); one saved before side heads existed reads
        pairs whole; an ``OracleEnsemble``'s (keys ``members.<i>.*``) gives the ensemble; keys ``dense.*``: its dense
        reader."""
        dense = {k[len("dense.") :]: v for k, v in state.items() if k.startswith("dense.")}
        if dense:
            model = cls.from_state({k: v for k, v in state.items() if not k.startswith("dense.")})
            model.dense = DenseReader.from_state(dense)
            return model.eval()
        if any(k.startswith("members.") for k in state):
            parts: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in state.items():
                if k.startswith("members."):
                    i, _, rest = k[len("members.") :].partition(".")
                    parts.setdefault(int(i), {})[rest] = v
            mirror = bool(state.get("mirror", False))
            return OracleEnsemble([Oracle.from_state(parts[i]) for i in sorted(parts)], mirror).eval()
        conv = state["body.0.weight"]
        sided = any(k.startswith("side_heads.") for k in state)
        model = cls(conv.shape[0], sided, relative=conv.shape[1] in (6, 12), lab=conv.shape[1] == 12)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return model.eval()

    def _maps(self, images: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1] == 3, f"expected (N,3,H,W), got {tuple(images.shape)}"
        if reference is not None and reference.shape != images.shape:
            raise ValueError(
                f"reference {tuple(reference.shape)} must match the images {tuple(images.shape)}"
            )
        if self.relative:  # an image read on its own is read against itself: no difference
            ref = images if reference is None else reference
            parts = [images, images - ref]
            if self.lab:  # L in [0, 100] and a, b in about [-100, 100] to about [-1, 1]
                lab_x = scaled_lab(images)
                parts += [lab_x, lab_x - (lab_x if reference is None else scaled_lab(reference))]
            images = torch.cat(parts, 1)
        if images.shape[-1] != ORACLE_SIZE or images.shape[-2] != ORACLE_SIZE:
            images = F.interpolate(images, size=(ORACLE_SIZE, ORACLE_SIZE), mode="bilinear", antialias=True)
        return self.body(images)  # (N, 4w, 8, 8)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, 8*width) of images read on their own, e.g. for KID between edits and renders."""
        return _pool(self._maps(images))

    def forward(self, images: torch.Tensor, reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits per attribute (N, n_values), per side of a paired one ('<attr>_left', '<attr>_right', when
        ``sided``) and 'valid' (N,). A ``relative`` oracle reads the images against ``reference`` (N, 3, H, W),
        e.g. edits against the reconstructions they edit (default: each image against itself); others ignore it."""
        h = self._maps(images, reference)
        f = _pool(h)
        out = {n: head(f) for n, head in self.heads.items()}
        out["valid"] = self.valid_head(f).squeeze(1)
        if self.sided:
            half = h.shape[-1] // 2
            halves = {"left": _pool(h[..., :half]), "right": _pool(h[..., half:])}
            out.update({f"{n}_{s}": self.side_heads[f"{n}_{s}"](halves[s]) for n in PAIRED for s in SIDES})
        return out

    @torch.no_grad()
    def logits(
        self, images: torch.Tensor, reference: torch.Tensor | None = None, batch: int = 512
    ) -> dict[str, torch.Tensor]:
        """``forward`` over many images, in batches."""
        ref = lambda i: None if reference is None else reference[i : i + batch]  # noqa: E731
        outs = [self(images[i : i + batch], ref(i)) for i in range(0, len(images), batch)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def read(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Value index per attribute from ``logits``; a paired attribute read from both sides (``both_sides``)
        when the oracle is ``sided``."""
        pred = {n: logits[n].argmax(1) for n in LABEL_ATTRIBUTES}
        if self.sided:
            pred.update({n: both_sides(logits[f"{n}_left"], logits[f"{n}_right"], n) for n in PAIRED})
        return pred

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        reference: torch.Tensor | None = None,
        batch: int = 512,
        targets: Sequence[tuple[str, str]] = (),
        source: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predicted value index per attribute (LongTensor (N,), index into SCHEMA[attr].values). Edits of a
        ``relative`` oracle, read beside the faces they edit (``reference``), read each of their ``targets``
        (attribute, value) by ``reads_target``, or by the ``dense`` reader where it has the attribute (then an edit
        it does not read as the target reads the pooled head's likeliest other value); ``source``: the reading of
        ``reference`` when the caller has it."""
        logits = self.logits(images, reference, batch)
        pred = self.read(logits)
        if self.relative and reference is not None and targets:
            src = source if source is not None else self.read(self.logits(reference, batch=batch))
            for attribute, value in targets:
                k = SCHEMA[attribute].index(value)
                if self.dense is not None and attribute in self.dense.heads:
                    hit = self.dense.reads_target(
                        images, reference, attribute, value, src[attribute], ORACLE_SIZE
                    )
                    other = logits[attribute].index_fill(
                        1, torch.tensor([k], device=images.device), float("-inf")
                    )
                    pred[attribute] = torch.where(pred[attribute] == k, other.argmax(1), pred[attribute])
                else:
                    hit = self.reads_target(logits, src[attribute], attribute, value)
                pred[attribute] = torch.where(hit, k, pred[attribute])
        return pred

    @torch.no_grad()
    def valid_prob(self, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Probability (N,) that each image is a well-formed face."""
        return torch.sigmoid(self.logits(images, batch=batch)["valid"])

    def reads_target(
        self, logits: dict[str, torch.Tensor], source: torch.Tensor, attribute: str, value: str
    ) -> torch.Tensor:
        """Whether edits (N,) bool read ``value`` beside the faces they edit, whose ``attribute`` reads ``source``
        (N,): the value is read, or it beats the source's value on every side of a pair (the question the region
        rule answers: closer to the ideal than to the source). ``logits`` of the edits against those faces."""
        k = SCHEMA[attribute].index(value)
        keys = [f"{attribute}_{s}" for s in SIDES] if attribute in PAIRED and self.sided else [attribute]
        lo = [logits[n] for n in keys]
        beats = torch.stack([x[:, k] > x.gather(1, source[:, None]).squeeze(1) for x in lo]).all(0)
        return (self.read(logits)[attribute] == k) | ((source != k) & beats)

    def with_reference(self) -> Oracle:
        """A ``relative`` copy that reads exactly as this oracle until trained: the difference channels start at
        zero weight. A person judges an edit beside the face it edits; so does the calibrated oracle."""
        if self.relative:
            return self
        return self._widened(relative=True, lab=False)

    def with_lab(self) -> Oracle:
        """A relative copy that also sees the image and its difference in CIELAB, where the judge's colour vote is
        taken (dark colours lie apart there, not in RGB); reads exactly as this oracle until trained."""
        if self.lab:
            return self
        return self.with_reference()._widened(relative=True, lab=True)

    def _widened(self, relative: bool, lab: bool) -> Oracle:
        out = Oracle(self.body[0].out_channels, self.sided, relative=relative, lab=lab)
        state = self.state_dict()
        w = state["body.0.weight"]
        extra = out.body[0].in_channels - w.shape[1]
        state["body.0.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], 1)
        out.load_state_dict(state)
        return out.train(self.training)


class OracleEnsemble(Oracle):
    """Oracles read as one: per head the mean of their log-probabilities (the mean 'valid' logit), so a value is
    read where the members agree on it on balance; each relative member reads the reference, the others ignore
    it. With ``mirror`` each member also reads the mirrored image, its sides swapped (the region rule is
    left-right symmetric), averaged in. ``features`` (KID) are the first member's. Built by the calibrate stage
    (``calib_ensemble``, ``calib_mirror``)."""

    def __init__(self, members: Sequence[Oracle], mirror: bool = False) -> None:
        nn.Module.__init__(self)
        if not members or len({m.sided for m in members}) != 1:
            raise ValueError("an oracle ensemble needs one or more members, all sided or all not")
        self.members = nn.ModuleList(members)
        self.dense = None
        self.relative = any(m.relative for m in members)
        self.sided = members[0].sided
        if mirror:  # in the state dict, so a loaded judge reads as the saved one
            self.register_buffer("mirror", torch.tensor(True))
        self.mirrored = mirror

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.members[0].features(images)

    def forward(self, images: torch.Tensor, reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        outs = [m(images, reference) for m in self.members]
        if self.mirrored:
            ref = None if reference is None else reference.flip(3)
            outs += [_swap_sides(m(images.flip(3), ref)) for m in self.members]
        return {
            k: torch.stack([o[k] if k == "valid" else o[k].log_softmax(1) for o in outs]).mean(0)
            for k in outs[0]
        }

    def with_reference(self) -> OracleEnsemble:
        members = [m.with_reference() for m in self.members]
        return OracleEnsemble(members, self.mirrored).train(self.training)

    def with_lab(self) -> OracleEnsemble:
        return OracleEnsemble([m.with_lab() for m in self.members], self.mirrored).train(self.training)


def _swap_sides(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A mirrored image's readings with its side heads swapped: its left is the image's right."""
    swap = {"_left": "_right", "_right": "_left"}
    return {next((k[: -len(a)] + b for a, b in swap.items() if k.endswith(a)), k): v for k, v in out.items()}


def _pool(h: torch.Tensor) -> torch.Tensor:
    """Average and max pooled features (N, 2C) of a feature map (N, C, H, W)."""
    return torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)


def both_sides(left: torch.Tensor, right: torch.Tensor, attribute: str) -> torch.Tensor:
    """The value (N,) a pair of parts reads from its sides' logits (N, K): the value both sides read; when they
    differ, the natural value both find likeliest (a counterfactual value on one side only is not the edit, as in
    the region rule)."""
    agree = left.argmax(1) == right.argmax(1)
    p = torch.minimum(left.softmax(1), right.softmax(1))[:, : len(SCHEMA[attribute].natural)]
    return torch.where(agree, left.argmax(1), p.argmax(1))


def side_targets(labels: torch.Tensor) -> torch.Tensor:
    """Per-side labels (N, len(PAIRED), 2) of images whose every side shows its attribute label (renders)."""
    idx = [LABEL_ATTRIBUTES.index(n) for n in PAIRED]
    return labels[:, idx, None].expand(-1, -1, len(SIDES))


def load_oracle(asset_dir: str | None = None) -> torch.nn.Module:
    """The shipped (calibrated) oracle, frozen: the judge's reader of generated edits."""
    state = assets.load("oracle.pt", asset_dir or assets.ASSET_DIR)
    state.pop("width", None)
    return Oracle.from_state(state).requires_grad_(False)
