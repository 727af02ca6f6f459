"""Probe: a second toy CLIP of another architecture (a small ResNet image tower), trained with the shipped toy
CLIP's recipe and data (``train_clip``, the build's clip stage settings), for the guide ensemble (docs/guide.md).

Resumable (``<out>.resume.pt``), one thread. Writes the open_clip state dict to ``--out`` (default
outputs/clip_ensemble/clip_resnet.pt, git-ignored; not a world asset) and prints the prompt-ensembled zero-shot
accuracy on held-out renders of it and of the shipped CLIP (the build report's method).

Usage: python experiments/probes/clip_ensemble_train.py [--arch resnet|vit16] [--steps 2000] [--robust-steps 600]
       [--out PATH] [--occlude SHARE] [--time-steps N]   (--time-steps: only time N steps and exit)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src.models.factory import clip_model_config

# The second CLIP's architectures (the text tower is the shipped toy CLIP's: same tokenizer and context).
TEXT_CFG = clip_model_config("toyfaces")["text_cfg"]
ARCHS = {
    # the world's second CLIP (src/models/clip_configs/toyfaces_resnet.json, the clip_resnet build stage): open_clip's
    # ModifiedResNet (a list of layers), conv stem + 4 bottleneck stages + attention pooling, 64 px
    "resnet": {k: v for k, v in clip_model_config("toyfaces_resnet").items() if k != "text_cfg"},
    # a ViT on a coarser 4 x 4 patch grid (the shipped CLIP's is 8 x 8)
    "vit16": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 16, "mlp_ratio": 2.0},
    },
}  # fmt: skip


def model_config(arch: str) -> dict:
    return {**ARCHS[arch], "text_cfg": dict(TEXT_CFG)}


def new_model(arch: str, seed: int = 0):
    """A trainable open_clip model of ``arch`` and its tokenizer (registered as ``toyfaces-clip-<arch>``)."""
    import open_clip

    from src.models.clip import register_model_config

    name = f"toyfaces-clip-{arch}"
    register_model_config(name, model_config(arch))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
    return model, open_clip.get_tokenizer(name)


def second_clip(path: str, arch: str = "resnet"):
    """A second toy CLIP written by this probe (``arch``'s architecture, the weights at ``path``) as a FrozenCLIP."""
    from src.models.factory import create_clip

    return create_clip(f"toyfaces-clip-{arch}", model_config=model_config(arch), checkpoint=path)


@torch.no_grad()
def zero_shot(clip, n: int = 400, seed: int = 0) -> dict[str, float]:
    """Prompt-ensembled zero-shot accuracy per edit attribute on ``n`` held-out renders (the report's scenes)."""
    from src.toyworld.attributes import SCHEMA, sample_attributes, uniform_rates
    from src.toyworld.captions import TEMPLATES, zero_shot_prompts
    from src.toyworld.pool import TEST_SEED_OFFSET
    from src.toyworld.render import render_batch

    rng = np.random.default_rng([seed + 8, 202])
    attrs = [sample_attributes(rng, uniform_rates()) for _ in range(n)]
    seeds = [TEST_SEED_OFFSET + 500_000_000 + (seed + 8) * 100_000 + i for i in range(n)]
    images = render_batch(attrs, seeds)
    x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images
    feats = torch.cat([clip.encode_image(b) for b in x.split(200)])
    out = {}
    for name in ("ears", "eyebrow_color", "lip_color", "iris_color", "skin_tone", "style"):
        cls = torch.stack(
            [F.normalize(clip.encode_text(p).mean(0), dim=-1) for p in zero_shot_prompts(name, TEMPLATES)]
        )
        truth = torch.tensor([SCHEMA[name].index(getattr(a, name)) for a in attrs])
        out[name] = ((feats @ cls.T).argmax(1) == truth).float().mean().item()
    out["mean"] = float(np.mean(list(out.values())))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet", choices=sorted(ARCHS))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--robust-steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--occlude", type=float, default=0.0, help="share of each batch with one side cut off, every step"
    )
    p.add_argument("--out", default=None)
    p.add_argument("--time-steps", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    from src.models.clip import FrozenCLIP, clip_preprocess
    from src.toyworld import assets
    from src.toyworld.clip_training import train_clip

    out = Path(a.out or f"outputs/clip_ensemble/clip_{a.arch}.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = new_model(a.arch, a.seed)
    cfg = assets.clip_preprocess_cfg(model)
    pre = lambda x: clip_preprocess(x, cfg["size"], cfg["mean"], cfg["std"])  # noqa: E731
    print(f"{a.arch}: {sum(p.numel() for p in model.visual.parameters()) / 1e6:.2f}M image-tower parameters")
    if a.time_steps:
        t = time.perf_counter()
        train_clip(model, tokenizer, pre, a.time_steps, 128, 1e-3, seed=a.seed, pool_size=512, progress=False)
        print(f"{a.arch}: {(time.perf_counter() - t) / a.time_steps:.2f} s/step (incl. a 512-render pool)")
        return
    if not out.is_file():  # the shipped recipe (build_config.json: clip_* settings), resumable
        t = time.perf_counter()
        metrics = train_clip(
            model, tokenizer, pre, a.steps, 128, 1e-3, seed=a.seed, robust_steps=a.robust_steps,
            robust_perspective=0.5, robust_colour=0.08, robust_colour_grid=1, occlude=a.occlude, robust_occlude=a.occlude,
            resume_path=f"{out}.resume.pt",
        )  # fmt: skip
        metrics["seconds"] = time.perf_counter() - t
        torch.save(
            {"state_dict": model.state_dict(), "config": model_config(a.arch), "metrics": metrics}, out
        )
    model.load_state_dict(torch.load(out, map_location="cpu", weights_only=True)["state_dict"])
    result = {
        a.arch: zero_shot(FrozenCLIP(model, tokenizer).eval()),
        "shipped": zero_shot(assets.load_clip()),
    }
    print(json.dumps(result, indent=1))
    out.with_suffix(".zero_shot.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
