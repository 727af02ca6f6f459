"""CIEDE2000 colour difference for the probes that compare the judge's CIE76 vote with it (nearest_metric.py,
dense_distance.py)."""

import math

import torch


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
