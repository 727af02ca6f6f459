"""Probe: the second (ResNet) toy CLIP hardened against shortcuts that also pay the encoder round trip.

With the ResNet CLIP and ``ManifoldLoss`` the mapper grows small pointed tips on both ears instead of the streak,
but the tips are too small for the world's rule, and the ResNet reads them as pointed ears (docs/guide.md). Here
the build's harden stage (``harden_clip``: attacks through the generator inside the loop, each attacked image
labelled by the rule and captioned with what it shows, plus the direction ranking) runs on the ResNet, with the
round trip (weight ``--manifold``) in every attack's loss, so the attacks find what such a mapper finds: on-manifold
half measures. Mined on training latents only. Writes the hardened open_clip state dict in the format of
``clip_ensemble_train.py`` (for ``+guide=toyfaces_pair domain.extra_clips.0.checkpoint=<out>``), then prints the
prompt-ensembled zero-shot accuracy on held-out renders (the report's method).

Resumable (``<out>.resume.pt``), one thread. Usage:
  python experiments/probes/harden_guide.py [--steps 300] [--manifold 15] [--values ears:pointed,...]
      [--clip outputs/clip_ensemble/clip_resnet.pt] [--out outputs/harden_guide/clip_resnet_h.pt] [--time-steps N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from clip_ensemble_train import second_clip, zero_shot  # sibling probe (on sys.path as a script)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="outputs/clip_ensemble/clip_resnet.pt")
    p.add_argument("--arch", default="resnet")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--manifold", type=float, default=15.0, help="round-trip weight in each attack (0: none)")
    p.add_argument("--values", default="", help="attribute:value list to mine (default: every value)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/harden_guide/clip_resnet_h.pt")
    p.add_argument("--time-steps", type=int, default=0, help="only time this many steps and exit")
    a = p.parse_args()
    torch.set_num_threads(1)
    from src.toyworld import assets
    from src.toyworld.build.config import BuildConfig
    from src.toyworld.build.hardening import harden_clip

    ckpt = torch.load(a.clip, map_location="cpu", weights_only=True)
    clip = second_clip(a.clip, a.arch)
    gen, inv = assets.load_generator(), assets.load_inverter()
    gen.requires_grad_(False)

    def round_trip(x_hat: torch.Tensor) -> torch.Tensor:  # ManifoldLoss's price, as the run pays it
        return a.manifold * (x_hat - gen.synthesis(inv(x_hat))).abs().mean()

    values = [tuple(v.split(":")) for v in a.values.split(",") if v] or None
    c = BuildConfig()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    steps = a.time_steps or a.steps
    t0 = time.time()
    harden_clip(
        clip, gen, inv, assets.load_latents("train"), steps, lr=a.lr, seed=a.seed, groups=c.harden_groups,
        group_size=c.harden_group_size, attack_steps=c.harden_attack_steps, attack_age=c.harden_attack_age,
        render_batch_size=c.harden_batch, mined_batch=3 * c.harden_batch // 4, recon_size=c.harden_recon,
        direction_weight=c.harden_direction, direction_margin=c.harden_margin, direction_align=c.harden_align,
        real_per_value=c.harden_real, resume_path=None if a.time_steps else f"{out}.resume.pt",
        prior=round_trip if a.manifold > 0 else None, values=values,
    )  # fmt: skip
    if a.time_steps:
        print(f"{steps} steps in {time.time() - t0:.1f} s ({(time.time() - t0) / steps:.2f} s/step)")
        return
    meta = {"from": a.clip, "steps": a.steps, "manifold": a.manifold, "values": a.values, "seed": a.seed}
    torch.save({"state_dict": clip.model.state_dict(), "config": ckpt.get("config"), "metrics": meta}, out)
    clip.model.eval()
    zs = zero_shot(clip)
    (out.with_suffix(".zero_shot.json")).write_text(json.dumps(zs, indent=1))
    print(f"wrote {out}; zero-shot {zs}")


if __name__ == "__main__":
    main()
