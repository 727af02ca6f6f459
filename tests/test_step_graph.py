"""src.step_graph: the whole-step graph path falls back to the eager step without CUDA, and traced by
torch.compile (the eager backend on the CPU: the same graph breaks as on a GPU, no CUDA graphs) it gives the eager
step's loss and update. On a GPU, the CUDA-graph step equals eager (marker gpu)."""

from __future__ import annotations

import copy

import pytest
import torch

from src.builders import build
from src.data.source_cache import SourceCache
from src.step_graph import GraphedStep


def setup_step(cfg):
    torch.manual_seed(0)
    module, _ = build(cfg)
    module.train()
    g = module.generator
    batch = {"w": torch.randn(2, g.n_latent, g.style_dim) * 0.3, "idx": torch.tensor([0, 1])}
    module.source_caches = {"train": SourceCache(2, "test")}
    return module, batch


def eager_step(module, optimizer, batch) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    total, _, _ = module.step_loss(batch, training=True)
    total.backward()
    optimizer.step()
    return total.detach()


def run_twice(module, batch, make_step):
    """Two steps (a cold then a warm cache) with seeded augmentation: losses and the mapper's weights after."""
    module = copy.deepcopy(module)
    optimizer = module.configure_optimizers()
    step = make_step(module, optimizer)
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        losses.append(step(batch))
    return torch.stack(losses), torch.cat([p.detach().flatten() for p in module.mapper.parameters()])


def test_cpu_falls_back_to_the_eager_step(fast_cfg) -> None:
    module, batch = setup_step(fast_cfg("loss=clip_nce"))
    graphed = GraphedStep(copy.deepcopy(module), torch.optim.SGD([torch.zeros(1)], lr=0.1))
    assert not graphed.compiled and "eager" in graphed.note
    ref_loss, ref_w = run_twice(module, batch, lambda m, o: lambda b: eager_step(m, o, b))
    loss, w = run_twice(module, batch, GraphedStep)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=0)


@pytest.mark.slow
def test_traced_step_equals_eager(fast_cfg) -> None:
    """torch.compile traces the whole step (mapper, generator, views, CLIP, loss, optimizer) without errors."""
    module, batch = setup_step(fast_cfg("loss=clip_nce"))
    ref_loss, ref_w = run_twice(module, batch, lambda m, o: lambda b: eager_step(m, o, b))
    torch._dynamo.reset()
    loss, w = run_twice(module, batch, lambda m, o: GraphedStep(m, o, backend="eager", force=True))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    # Adam (lr 0.1) amplifies float noise of near-zero gradients (the traced optimizer may take another kernel
    # path): 1e-5 is 1e-4 of one update
    torch.testing.assert_close(w, ref_w, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
def test_cuda_graph_step_equals_eager(fast_cfg) -> None:
    """On CUDA: torch.compile(mode="reduce-overhead") of the step, with eager random numbers, equals eager."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import torch._inductor.config as inductor_config

    module, batch = setup_step(fast_cfg("loss=clip_nce"))
    module, batch = module.cuda(), {"w": batch["w"].cuda(), "idx": batch["idx"]}
    ref_loss, ref_w = run_twice(module, batch, lambda m, o: lambda b: eager_step(m, o, b))
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        loss, w = run_twice(module, batch, GraphedStep)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w, ref_w, rtol=1e-4, atol=1e-5)
