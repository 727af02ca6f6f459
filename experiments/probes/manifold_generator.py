"""Probe: does an adversarially fine-tuned toy generator stop painting the CLIP's streak? (docs/guide.md)

The shipped toy generator is an autoencoder decoder trained with a pixel loss only, so it paints whatever W+
asks for: a mapper's W+ move draws a light streak by the ear that the toy CLIP reads as pointed ears. A real
StyleGAN is trained against a discriminator on its whole latent distribution. This fine-tunes the SHIPPED
generator (synthesis only; the mapping net stays frozen) with
  * reconstruction: L1 + MSE of G(w) against the render of w's face (training latents; keeps the world), and
  * a non-saturating adversarial term on G(w + delta), delta a W+ perturbation of a mapper edit's size (flattened
    norm 2-6): half random directions, half a bank of per-face CLIP attacks toward "face with elf ears" (Adam on
    the offset under CLIP-NCE + the recipe's pixel L1, advanced one step per training step against the current
    generator), against a small conv discriminator on real renders (R1 every 4 steps),
then measures before / after: reconstruction PSNR on 64 test latents; how far a random move of norm 4 moves the
image (a generator that ignores W+ moves would also "pass"); the run's streak edit rendered through each
generator (rule and CLIP read pointed ears); the inverter's real-ear move (the rule should still see ears);
fresh per-face CLIP attacks through each generator (how often they fool the CLIP).

Usage (repo root, OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1):
  python experiments/probes/manifold_generator.py train --minutes 20          # -> outputs/manifold/generator.pt
  python experiments/probes/manifold_generator.py eval outputs/clip_ensemble/run_a/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

OUT = Path("outputs/manifold")
TARGET = ("ears", "pointed")
TEXT = "face with elf ears"


class Discriminator(nn.Module):
    """A small conv discriminator for 64 x 64 images in [-1, 1] -> one logit each."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        layers: list[nn.Module] = [nn.Conv2d(3, w, 3, 1, 1), nn.LeakyReLU(0.2)]
        for cin, cout in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w), (4 * w, 4 * w)):  # 64 -> 4
            layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 4, 2, 1)]
            layers += [nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(4 * w * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).flatten(1)).squeeze(1)


def random_delta(w: torch.Tensor, lo: float = 2.0, hi: float = 6.0) -> torch.Tensor:
    """Random W+ directions (B, L, D) with flattened norms uniform in [lo, hi]."""
    d = torch.randn_like(w)
    r = torch.empty(len(w)).uniform_(lo, hi)
    return d / d.flatten(1).norm(dim=1).view(-1, 1, 1) * r.view(-1, 1, 1)


def clamp_norm(delta: torch.Tensor, max_norm: float) -> torch.Tensor:
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
    return delta * (max_norm / n).clamp(max=1.0)


def faces(split: str, n: int | None = None):
    from src.toyworld import assets
    from src.toyworld.attributes import Attributes

    d = assets.load_latents(split)
    n = n or len(d["latents"])
    attrs = [Attributes.decode(v.numpy()) for v in d["labels"][:n]]
    return d["latents"][:n], attrs, d["seeds"][:n].tolist()


def train(args: argparse.Namespace) -> None:
    from src.data.prompts import load_templates
    from src.toyworld import assets
    from src.toyworld.judge.shortcuts import Attack, AttackSpec, make_views, text_features
    from src.toyworld.render import render_batch
    from src.toyworld.training import psnr_db

    torch.manual_seed(args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    gen = assets.load_generator()
    gen.requires_grad_(True)
    gen.style.requires_grad_(False)
    gen.train()
    clip = assets.load_clip().eval()
    disc = Discriminator()
    w_all, attrs, seeds = faces("train", args.faces)
    t0 = time.perf_counter()
    x_all = torch.cat(
        [render_batch(attrs[i : i + 256], seeds[i : i + 256]) for i in range(0, len(attrs), 256)]
    )
    print(f"rendered {len(x_all)} train faces in {time.perf_counter() - t0:.0f}s", flush=True)
    g_params = [p for p in gen.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(g_params, lr=args.lr_g, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr_d, betas=(0.0, 0.99))
    spec = AttackSpec("clip_nce", "none", *TARGET, TEXT, universal=False)
    feats = text_features(clip, TEXT, load_templates("toyfaces"))
    views = make_views("none", 1)
    bank: list[tuple[Attack, torch.Tensor, int]] = []  # (attack, its clean renders, age)
    half = args.batch // 2
    step, t0, log = 0, time.perf_counter(), []
    while time.perf_counter() - t0 < args.minutes * 60 and (args.steps <= 0 or step < args.steps):
        # advance one attack of the bank one step against the current generator (new ones replace old ones)
        if len(bank) < args.bank or bank[step % len(bank)][2] >= args.attack_life:
            idx = torch.randint(len(w_all), (half,))
            with torch.no_grad():
                xc = gen.synthesis(w_all[idx])
            a = Attack(spec, w_all[idx], lr=args.attack_lr)
            a.delta = random_delta(a.w, 0.5, 1.0)  # a small random start
            entry = (a, xc, 0)
            if len(bank) < args.bank:
                bank.append(entry)
            else:
                bank[step % len(bank)] = entry
        k = step % len(bank)
        a, xc, age = bank[k]
        gen.requires_grad_(False)
        a.step(gen, clip, feats, views, xc)
        gen.requires_grad_(True)
        gen.style.requires_grad_(False)
        a.delta = clamp_norm(a.delta, args.max_norm)
        bank[k] = (a, xc, age + 1)
        # the batch: recon latents, random perturbations, the attack's perturbations
        idx = torch.randint(len(w_all), (args.batch,))
        w, x = w_all[idx], x_all[idx]
        w_fake = torch.cat([w[:half] + random_delta(w[:half]), a.w + a.delta])
        real = x_all[torch.randint(len(x_all), (len(w_fake),))]
        # discriminator
        with torch.no_grad():
            fake = gen.synthesis(w_fake)
        d_loss = F.softplus(disc(fake)).mean() + F.softplus(-disc(real)).mean()
        if step % 4 == 0 and args.r1 > 0:
            real_r = real.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(disc(real_r).sum(), real_r, create_graph=True)
            d_loss = d_loss + args.r1 / 2 * 4 * g.pow(2).flatten(1).sum(1).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # generator
        y = gen.synthesis(torch.cat([w, w_fake]))
        rec, fake = y[: len(w)], y[len(w) :]
        err = (rec - x).abs()
        recon = (err + err.pow(2)).mean()
        adv = F.softplus(-disc(fake)).mean()
        g_loss = recon + args.adv * adv
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % 25 == 0:
            row = {
                "step": step,
                "min": round((time.perf_counter() - t0) / 60, 2),
                "d": round(d_loss.item(), 3),
                "adv": round(adv.item(), 3),
                "psnr": round(psnr_db(rec.detach(), x).mean().item(), 2),
            }
            log.append(row)
            print(json.dumps(row), flush=True)
        if step % 200 == 0:
            torch.save(gen.state_dict(), OUT / "generator.pt")
        step += 1
    gen.eval()
    torch.save(gen.state_dict(), OUT / "generator.pt")  # a plain state dict: create_generator(checkpoint=...)
    torch.save(disc.state_dict(), OUT / "discriminator.pt")
    (OUT / "train_log.json").write_text(json.dumps({"args": vars(args), "steps": step, "log": log}, indent=1))
    print(f"done: {step} steps in {(time.perf_counter() - t0) / 60:.1f} min -> {OUT / 'generator.pt'}")


def load_new(path: str) -> nn.Module:
    from src.models.factory import create_generator
    from src.toyworld.models import GENERATOR_CHANNEL_BASE, GENERATOR_KWARGS

    return create_generator(**GENERATOR_KWARGS, channel_base=GENERATOR_CHANNEL_BASE, checkpoint=path).eval()


def evaluate(args: argparse.Namespace) -> None:
    from src.eval import load_run
    from src.toyworld import assets
    from src.toyworld.attributes import SCHEMA
    from src.toyworld.judge.shortcuts import AttackSpec, clip_reads, rule_reads, run_attack
    from src.toyworld.render import render_batch
    from src.toyworld.training import decode, invert, psnr_db

    torch.manual_seed(0)
    clip = assets.load_clip().eval()
    gens = {"old": assets.load_generator().eval(), "new": load_new(args.generator)}
    w, attrs, seeds = faces("test", 64)
    attribute, value = TARGET
    pointed = SCHEMA[attribute].index(value)

    def reads(x, a, s) -> dict[str, float]:
        rule = torch.tensor([getattr(r, attribute) == value for r in rule_reads(x, a, s, TARGET)])
        c = clip_reads(clip, x, attribute) == pointed
        return {
            "rule": rule.float().mean().item(),
            "clip": c.float().mean().item(),
            "fooled": (c & ~rule).float().mean().item(),
        }

    out: dict = {"generator": args.generator, "ckpt": args.ckpt}
    with torch.no_grad():
        src = render_batch(attrs, seeds)
        dr = random_delta(w, 4.0, 4.0)
        for name, g in gens.items():
            x = decode(g, w)
            out[f"{name}/psnr_recon"] = psnr_db(x, src).mean().item()
            out[f"{name}/psnr_move4"] = psnr_db(decode(g, w + dr), x.clamp(-1, 1)).mean().item()
    k = args.faces
    wk, ak, sk = w[:k], attrs[:k], seeds[:k]
    with torch.no_grad():
        ideal = render_batch([a.replace(**{attribute: value}) for a in ak], sk)
        inv = assets.load_inverter()
        d_inv = invert(inv, ideal) - invert(inv, src[:k])
        if args.ckpt:
            module, _, _ = load_run(args.ckpt)
            module.eval()
            d_edit = module.edit(wk) - wk
            out["edit_norm"] = d_edit.flatten(1).norm(dim=1).mean().item()
    for name, g in gens.items():
        with torch.no_grad():
            out[f"{name}/source"] = reads(decode(g, wk), ak, sk)
            out[f"{name}/inverted_real_ears"] = reads(decode(g, wk + d_inv), ak, sk)
            if args.ckpt:
                out[f"{name}/run_edit"] = reads(decode(g, wk + d_edit), ak, sk)
        if args.attack_steps > 0:
            spec = AttackSpec("clip_nce", "none", *TARGET, TEXT, universal=False)
            xa = run_attack(g.requires_grad_(False), clip, spec, wk, args.attack_steps, seed=1)
            out[f"{name}/fresh_attack"] = reads(xa, ak, sk)
        print(name, json.dumps({k_: v for k_, v in out.items() if k_.startswith(name)}), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--minutes", type=float, default=20.0)
    t.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: the time limit only)")
    t.add_argument(
        "--faces", type=int, default=2048, help="training latents used, at most (the train split holds 1000)"
    )
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr-g", type=float, default=5e-5)
    t.add_argument("--lr-d", type=float, default=1e-3)
    t.add_argument("--adv", type=float, default=0.1, help="weight of the adversarial term against the recon")
    t.add_argument("--r1", type=float, default=0.05)
    t.add_argument("--bank", type=int, default=8, help="attacks kept, each advanced in turn")
    t.add_argument("--attack-life", type=int, default=6, help="steps of each attack before it is replaced")
    t.add_argument("--attack-lr", type=float, default=0.1)
    t.add_argument("--max-norm", type=float, default=6.0)
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eval")
    e.add_argument("ckpt", nargs="?", default=None, help="a mapper run checkpoint whose edit is tested")
    e.add_argument("--generator", default=str(OUT / "generator.pt"))
    e.add_argument("--faces", type=int, default=32)
    e.add_argument("--attack-steps", type=int, default=30)
    e.add_argument("--json", default=str(OUT / "eval.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    (train if args.cmd == "train" else evaluate)(args)


if __name__ == "__main__":
    main()
