"""A DeltaEdit-style probe with local pairs: (w, w + delta), delta = a random perturbation of K style channels of one
W+ layer; an MLP learns delta from the CLIP image direction of the pair. Driven by unseen text directions and, as a
diagnostic only (evaluation, never training), by the ideal edit's own image direction, at three strengths.

    OMP_NUM_THREADS=1 python experiments/probes/deltaedit_local.py [seed=0] [pairs=10000] [steps=3000] [K=8]  # ~12 min
"""

import json
import sys
import time

import torch
import torch.nn.functional as F
from delta_common import DeltaMLP, chunked, fit, text_embedding

from src.evaluation.toyfaces import ToyfacesEvaluator, ideal_edits
from src.toyworld import assets
from src.toyworld.attributes import Attributes


def main() -> None:
    torch.set_num_threads(1)
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    M = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    K = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    gen = assets.load_generator().eval()
    clip = assets.load_clip()
    w = assets.load_latents("train")["latents"].float()
    N, L, D = w.shape
    sd = w.std(0) + 1e-6
    render = lambda z: chunked(gen.synthesis, z, 250)  # noqa: E731
    embed = lambda x: chunked(clip.encode_image, x, 250)  # noqa: E731

    t0 = time.time()
    e0 = embed(render(w))
    idx = torch.randint(N, (M,), generator=g)
    layer = torch.randint(L, (M,), generator=g)
    dims = torch.rand(M, D, generator=g).argsort(1)[:, :K]
    mask = torch.zeros(M, L, D)
    mask[torch.arange(M)[:, None], layer[:, None], dims] = 1
    delta = mask * torch.randn(M, L, D, generator=g) * sd * (1 + 2 * torch.rand(M, 1, 1, generator=g))
    e1 = torch.cat([embed(render(w[idx[i : i + 1000]] + delta[i : i + 1000])) for i in range(0, M, 1000)])
    c_all = F.normalize(e1 - e0[idx], dim=-1)
    print(f"{M} local pairs in {time.time() - t0:.0f}s", flush=True)
    net = DeltaMLP(w, e0.shape[1])

    def local_pairs() -> tuple[torch.Tensor, ...]:
        b = torch.randint(M, (256,))
        return w[idx[b]], e0[idx[b]], c_all[b], delta[b]

    fit(net, local_pairs, STEPS)
    etext = text_embedding(clip)
    src_t = etext("face")
    test = assets.load_latents("test")
    wt = test["latents"][:64].float()
    x = render(wt)
    et = embed(x)
    attrs = [Attributes.decode(v.numpy()) for v in test["labels"][:64]]
    seeds = test["seeds"][:64].tolist()
    ev = ToyfacesEvaluator(edits={})
    VAL = {
        "elf ears": ("ears", "pointed"),
        "purple eyebrows": ("eyebrow_color", "purple"),
        "green lipstick": ("lip_color", "green"),
        "blue lipstick": ("lip_color", "blue"),
        "black lipstick": ("lip_color", "black"),
        "red eyes": ("iris_color", "red"),
        "blue skin": ("skin_tone", "blue"),
    }
    for text, (a, v) in VAL.items():
        full = "face with " + text
        ideal, _, _ = ideal_edits(attrs, seeds, a, v)
        conds = {
            "text": F.normalize(etext(full) - src_t, dim=-1).expand(64, -1),
            "ideal image (diagnostic)": F.normalize(embed(ideal) - et, dim=-1),
        }
        for name, c in conds.items():
            with torch.no_grad():
                d = net(wt, et, c)
            for s in (1.0, 3.0, 9.0):
                r = ev(x, render(wt + s * d), text.replace(" ", "_"), full)
                print(
                    text,
                    "|",
                    name,
                    s,
                    json.dumps(
                        {
                            k: round(r.get(k), 3)
                            for k in (
                                "faithful_rate",
                                "region_fidelity_min",
                                "collateral_psnr",
                                "edit_accuracy",
                            )
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
