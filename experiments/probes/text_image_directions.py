"""Do the toy CLIP's text directions point like the image directions of the ideal edits, and do held-out texts lie
in the span of the trained ones? (one mapper for many prompts, docs/experiments.md). Evaluation only: ideal renders
are ground truth, used here to measure the CLIP, never to train.

    OMP_NUM_THREADS=1 python experiments/probes/text_image_directions.py
"""

import torch
import torch.nn.functional as F
from delta_common import text_embedding

from src.toyworld import assets
from src.toyworld.attributes import COUNTERFACTUAL_VALUES, Attributes
from src.toyworld.render import render_batch


def main() -> None:
    torch.set_num_threads(1)
    clip = assets.load_clip()
    lat = assets.load_latents("test")
    n = 48
    attrs = [Attributes.decode(v.numpy()) for v in lat["labels"][:n]]
    seeds = lat["seeds"][:n].tolist()
    TEXT = {
        "ears:pointed": "elf ears",
        "eyebrow_color:purple": "purple eyebrows",
        "lip_color:green": "green lipstick",
        "lip_color:blue": "blue lipstick",
        "lip_color:black": "black lipstick",
        "iris_color:red": "red eyes",
        "skin_tone:blue": "blue skin",
        "style:neon": "cyberpunk style",
    }
    etext = text_embedding(clip)
    src_t = etext("face")
    keys = [f"{a}:{v}" for a, v in COUNTERFACTUAL_VALUES]
    keys = [k for k in keys if k in TEXT]
    dt = torch.stack([F.normalize(etext("face with " + TEXT[k]) - src_t, dim=-1) for k in keys])  # (V, E)
    with torch.no_grad():
        src = render_batch(attrs, seeds)
        es = clip.encode_image(src)
        rows = []
        for k in keys:
            a, v = k.split(":")
            ideal = render_batch([x.replace(**{a: v}) for x in attrs], seeds)
            di = F.normalize(clip.encode_image(ideal) - es, dim=-1)  # (n, E)
            rows.append(di)
    di = torch.stack(rows)  # (V, n, E)
    cos = torch.einsum("vne,ue->vnu", di, dt)  # (V, n, U)
    acc = (cos.argmax(-1) == torch.arange(len(keys))[:, None]).float().mean(1)
    for i, k in enumerate(keys):
        print(
            f"{k:22s} cos(own)={cos[i, :, i].mean():.3f} best-other={cos[i].mean(0)[[j for j in range(len(keys)) if j != i]].max():.3f} top1={acc[i]:.2f}"
        )
    # image-direction consistency across faces
    for i, k in enumerate(keys):
        m = di[i] @ di[i].T
        print(k, "image-delta self-consistency", ((m.sum() - m.diag().sum()) / (n * n - n)).item())
    # span residuals: absolute embeddings vs directions, trained = the toyfaces_multi six
    trained = ["elf ears", "purple eyebrows", "green lipstick", "red eyes", "blue skin", "cyberpunk style"]
    held = ["blue lipstick", "black lipstick"]

    def resid(vecs, x):
        q, _ = torch.linalg.qr(vecs.T)
        return (x - q @ (q.T @ x)).norm().item()

    A = torch.stack([etext("face with " + t) for t in trained])
    D = torch.stack([F.normalize(etext("face with " + t) - src_t, dim=-1) for t in trained])
    for h in held:
        a = etext("face with " + h)
        d = F.normalize(a - src_t, dim=-1)
        print(
            h,
            "absolute residual",
            round(resid(A, a), 3),
            "direction residual",
            round(resid(D, d), 3),
            "direction residual incl. source in span",
            round(resid(torch.cat([D, src_t[None]]), d), 3),
        )


if __name__ == "__main__":
    main()
