"""What the DeltaEdit-style probes share: the toy world's generator and CLIP in chunks, the template-averaged text
embedding, and the MLP that maps (latent, CLIP image embedding, CLIP direction) to a latent change, with its
regression loop (scaled MSE + cosine)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from src.data.prompts import load_templates


@torch.no_grad()
def chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``size`` (generator renders, CLIP image embeddings)."""
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def text_embedding(clip: nn.Module, templates: str = "toyfaces") -> Callable[[str], torch.Tensor]:
    """text -> its unit CLIP embedding, averaged over the domain's templates."""
    tmpl = load_templates(templates)

    @torch.no_grad()
    def embed(t: str) -> torch.Tensor:
        return F.normalize(clip.encode_text([x.format(t) if "{}" in x else x for x in tmpl]).mean(0), dim=-1)

    return embed


class DeltaMLP(nn.Module):
    """(w (B, L, D), image embedding (B, E), unit direction (B, E)) -> latent change (B, L, D), in units of the
    latents' per-coordinate std."""

    def __init__(self, w: torch.Tensor, embed_dim: int):
        super().__init__()
        _, self.L, self.D = w.shape
        self.mu, self.sd = w.mean(0), w.std(0) + 1e-6
        self.net = nn.Sequential(
            nn.Linear(self.L * self.D + 2 * embed_dim, 1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, 1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, self.L * self.D),
        )

    def forward(self, w1: torch.Tensor, e1: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = torch.cat([((w1 - self.mu) / self.sd).flatten(1), e1, c], 1)
        return self.net(x).view(-1, self.L, self.D) * self.sd


def fit(model: DeltaMLP, batch: Callable[[], tuple[torch.Tensor, ...]], steps: int) -> None:
    """Adam on scaled MSE + (1 - cosine) between the predicted and the pair's latent change; ``batch()`` returns
    (w1, e1, direction, target)."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for step in range(steps):
        w1, e1, c, target = batch()
        pred = model(w1, e1, c)
        loss = (
            F.mse_loss(pred / model.sd, target / model.sd)
            + (1 - F.cosine_similarity(pred.flatten(1), target.flatten(1))).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(step, round(loss.item(), 4), flush=True)
