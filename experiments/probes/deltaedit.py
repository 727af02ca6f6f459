"""A DeltaEdit-style mapper (text-free: trained on CLIP image directions of random pairs of the train latents to
predict their latent difference), driven at test time by the CLIP text directions of prompts it never saw, judged
by the toyfaces judge at three strengths. A feasibility probe for held-out prompts, not framework code.

    OMP_NUM_THREADS=1 python experiments/probes/deltaedit.py [seed=0] [steps=3000]   # ~5 min on one core
"""

import json
import sys
import time

import torch
import torch.nn.functional as F
from delta_common import DeltaMLP, chunked, fit, text_embedding

from src.evaluation.toyfaces import ToyfacesEvaluator
from src.toyworld import assets


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    gen = assets.load_generator().eval()
    clip = assets.load_clip()
    w = assets.load_latents("train")["latents"].float()
    N = w.shape[0]
    render = lambda z: chunked(gen.synthesis, z, 200)  # noqa: E731
    embed = lambda x: chunked(clip.encode_image, x, 200)  # noqa: E731

    t0 = time.time()
    e = embed(render(w))  # (N, E) unit
    print(f"embedded {N} train faces in {time.time() - t0:.0f}s", flush=True)
    m = DeltaMLP(w, e.shape[1])

    def random_pairs() -> tuple[torch.Tensor, ...]:
        i = torch.randint(N, (256,))
        j = torch.randint(N, (256,))
        return w[i], e[i], F.normalize(e[j] - e[i], dim=-1), w[j] - w[i]

    fit(m, random_pairs, STEPS)
    etext = text_embedding(clip)
    src_t = etext("face")
    wt = assets.load_latents("test")["latents"][:64].float()
    x = render(wt)
    et = embed(x)
    ev = ToyfacesEvaluator(edits={})
    KEYS = ("faithful_rate", "region_fidelity_min", "collateral_psnr", "edit_accuracy", "others_kept_rate")
    for text in [
        "elf ears",
        "purple eyebrows",
        "green lipstick",
        "blue lipstick",
        "black lipstick",
        "red eyes",
        "blue skin",
    ]:
        full = "face with " + text
        c = F.normalize(etext(full) - src_t, dim=-1).expand(len(wt), -1)
        with torch.no_grad():
            d = m(wt, et, c)
        for a in (0.25, 0.5, 1.0):
            r = ev(x, render(wt + a * d), text.replace(" ", "_"), full)
            print(text, a, json.dumps({k: r.get(k) for k in KEYS}), flush=True)


if __name__ == "__main__":
    main()
