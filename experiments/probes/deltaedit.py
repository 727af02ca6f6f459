"""A DeltaEdit-style mapper (text-free: trained on CLIP image directions of random pairs of the train latents to
predict their latent difference), driven at test time by the CLIP text directions of prompts it never saw, judged
by the toyfaces judge at three strengths. A feasibility probe for held-out prompts, not framework code.

    OMP_NUM_THREADS=1 python experiments/probes/deltaedit.py [seed=0] [steps=3000]   # ~5 min on one core
"""

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.data.prompts import load_templates
from src.evaluation.toyfaces import ToyfacesEvaluator
from src.toyworld import assets

torch.set_num_threads(1)
torch.manual_seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
gen = assets.load_generator().eval()
clip = assets.load_clip()
w = assets.load_latents("train")["latents"].float()
N, L, D = w.shape


@torch.no_grad()
def render(z):
    return torch.cat([gen.synthesis(z[i : i + 200]) for i in range(0, len(z), 200)])


@torch.no_grad()
def embed(x):
    return torch.cat([clip.encode_image(x[i : i + 200]) for i in range(0, len(x), 200)])


t0 = time.time()
e = embed(render(w))  # (N, E) unit
E = e.shape[1]
print(f"embedded {N} train faces in {time.time() - t0:.0f}s", flush=True)
mu, sd = w.mean(0), w.std(0) + 1e-6


class Delta(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(L * D + 2 * E, 1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, 1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, L * D),
        )

    def forward(self, w1, e1, c):
        return self.net(torch.cat([((w1 - mu) / sd).flatten(1), e1, c], 1)).view(-1, L, D) * sd


m = Delta()
opt = torch.optim.Adam(m.parameters(), 1e-3)
for step in range(STEPS):
    i = torch.randint(N, (256,))
    j = torch.randint(N, (256,))
    c = F.normalize(e[j] - e[i], dim=-1)
    target = w[j] - w[i]
    pred = m(w[i], e[i], c)
    loss = (
        F.mse_loss(pred / sd, target / sd)
        + (1 - F.cosine_similarity(pred.flatten(1), target.flatten(1))).mean()
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 500 == 0:
        print(step, round(loss.item(), 4), flush=True)

tmpl = load_templates("toyfaces")


@torch.no_grad()
def etext(t):
    return F.normalize(clip.encode_text([x.format(t) if "{}" in x else x for x in tmpl]).mean(0), dim=-1)


src_t = etext("face")
wt = assets.load_latents("test")["latents"][:64].float()
x = render(wt)
et = embed(x)
ev = ToyfacesEvaluator(edits={})
out = {}
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
        x_hat = render(wt + a * d)
        r = ev(x, x_hat, text.replace(" ", "_"), full)
        out[f"{text}@{a}"] = {
            k: r.get(k)
            for k in (
                "faithful_rate",
                "region_fidelity_min",
                "collateral_psnr",
                "edit_accuracy",
                "others_kept_rate",
            )
        }
        print(text, a, json.dumps(out[f"{text}@{a}"]), flush=True)
