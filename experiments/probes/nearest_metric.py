"""Probe: the judge's nearest-target vote with plain CIELAB distance (CIE76, shipped) against CIEDE2000 (which
weighs hue and chroma more than lightness) on a toyfaces run's 64 test edits.

Usage: python experiments/probes/nearest_metric.py <run>/checkpoints/last.ckpt [...]
Prints per run: the faithful rate, each vote's pass rate, and the faces on which the two votes differ. With
PROBE_OUT=<dir>, saves each run's edits and verdicts as <dir>/<prompt>_<seed>.pt for looking at them.
Evaluation only: nothing here trains anything.
"""

import json
import math
import os
import sys

import torch
from kway_faithful import judged_run  # the sibling probe (this folder is on sys.path when run as a script)

from src.evaluation.ideal import PAIRED, changed_region, nearest_value, sides
from src.evaluation.toyfaces import ideal_edits
from src.evaluation.toyfaces_composed import value_renders
from src.toyworld.attributes import SCHEMA


def de2000(l1, l2):  # (..., 3) Lab
    L1, a1, b1 = l1.unbind(-1)
    L2, a2, b2 = l2.unbind(-1)
    C1 = torch.sqrt(a1**2 + b1**2)
    C2 = torch.sqrt(a2**2 + b2**2)
    Cb = (C1 + C2) / 2
    G = 0.5 * (1 - torch.sqrt(Cb**7 / (Cb**7 + 25**7)))
    a1p = (1 + G) * a1
    a2p = (1 + G) * a2
    C1p = torch.sqrt(a1p**2 + b1**2)
    C2p = torch.sqrt(a2p**2 + b2**2)
    h1 = torch.atan2(b1, a1p) % (2 * math.pi)
    h2 = torch.atan2(b2, a2p) % (2 * math.pi)
    dL = L2 - L1
    dC = C2p - C1p
    dh = h2 - h1
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, dh)
    dh = torch.where(dh < -math.pi, dh + 2 * math.pi, dh)
    dh = torch.where(C1p * C2p == 0, torch.zeros_like(dh), dh)
    dH = 2 * torch.sqrt(C1p * C2p) * torch.sin(dh / 2)
    Lb = (L1 + L2) / 2
    Cbp = (C1p + C2p) / 2
    hs = h1 + h2
    hb = torch.where((h1 - h2).abs() > math.pi, (hs + 2 * math.pi) / 2, hs / 2)
    hb = torch.where(C1p * C2p == 0, hs, hb)
    T = (
        1
        - 0.17 * torch.cos(hb - math.radians(30))
        + 0.24 * torch.cos(2 * hb)
        + 0.32 * torch.cos(3 * hb + math.radians(6))
        - 0.20 * torch.cos(4 * hb - math.radians(63))
    )
    dth = math.radians(30) * torch.exp(-(((torch.rad2deg(hb) - 275) / 25) ** 2))
    RC = 2 * torch.sqrt(Cbp**7 / (Cbp**7 + 25**7))
    SL = 1 + 0.015 * (Lb - 50) ** 2 / torch.sqrt(20 + (Lb - 50) ** 2)
    SC = 1 + 0.045 * Cbp
    SH = 1 + 0.015 * Cbp * T
    RT = -torch.sin(2 * dth) * RC
    return torch.sqrt((dL / SL) ** 2 + (dC / SC) ** 2 + (dH / SH) ** 2 + RT * (dC / SC) * (dH / SH))


def de2000_distance(e: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``nearest_value``'s distance with CIEDE2000: (N, 1, 3, H, W), (N, K, 3, H, W) -> (N, K, H, W)."""
    return de2000(e.expand_as(c).movedim(2, -1), c.movedim(2, -1))


torch.set_num_threads(1)
for ckpt in sys.argv[1:]:
    cfg, x, x_hat, ev, m = judged_run(ckpt)
    attribute, value = m["target"].split(":")
    attrs, seeds = ev.scenes(x.shape[0])
    ideal = ev.last["ideal"]
    _, _, source = ideal_edits(attrs, seeds, attribute, value)
    cands = value_renders(attrs, seeds, attribute)
    t = SCHEMA[attribute].index(value)
    sm = sides(changed_region(ideal, source), attribute in PAIRED)
    with torch.no_grad():
        v76 = nearest_value(x_hat.float(), cands, t, sm).all(1)  # the shipped vote
        v00 = nearest_value(x_hat.float(), cands, t, sm, de2000_distance).all(1)
    faithful = ev.last["faithful"]  # the shipped verdict: includes the CIE76 vote
    if os.environ.get("PROBE_OUT"):
        torch.save(
            {"x": x, "x_hat": x_hat, "ideal": ideal, "v76": v76, "v00": v00, "faithful": faithful},
            os.path.join(os.environ["PROBE_OUT"], f"{cfg.prompt.name}_{cfg.seed}.pt"),
        )
    print(
        json.dumps(
            {
                "run": ckpt,
                "target": m["target"],
                "faithful": m["faithful_rate"],
                "vote76": v76.float().mean().item(),
                "vote2000": v00.float().mean().item(),
                "faithful_76_not_2000": int((faithful & ~v00).sum()),
                "2000_not_76": int((v00 & ~v76).sum()),
            }
        ),
        flush=True,
    )
