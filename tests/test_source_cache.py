"""The per-latent source cache: a cached step gives the uncached step's loss and gradients and skips the source
render where no term reads the image; Lightning fills it lazily and saves it; DDP ranks fill disjoint rows and
read the same merged cache; a changed fingerprint is not read."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from src.builders import build
from src.data.source_cache import CLIP_ENTRY, SourceCache, cache_entries, cache_key, digest
from src.toyworld.assets import ASSET_DIR


def counted_synthesis(module) -> list[int]:
    """Wrap the generator's synthesis; the returned list grows by one per call."""
    calls: list[int] = []
    real = module.generator.synthesis

    def synthesis(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    module.generator.synthesis = synthesis
    return calls


def step(module, batch, cache: SourceCache | None):
    """One training step's loss, parts and mapper gradient (augmentation draws seeded alike), and renders."""
    module.source_caches = {"train": cache} if cache is not None else {}
    module.mapper.zero_grad(set_to_none=True)
    calls = counted_synthesis(module)
    torch.manual_seed(1)
    total, parts, _ = module.step_loss(batch, training=True)
    total.backward()
    grad = torch.cat([p.grad.flatten() for p in module.mapper.parameters() if p.grad is not None])
    del module.generator.synthesis  # back to the class's method
    return total.detach(), {k: v.detach() for k, v in parts.items()}, grad, len(calls)


def check_cached_equals_uncached(module, renders_when_warm: int) -> None:
    module.train()
    g = module.generator
    torch.manual_seed(0)
    w = (torch.randn(4, g.n_latent, g.style_dim) * 0.3).requires_grad_(False)
    batch = {"w": w[:2], "idx": torch.tensor([2, 0])}
    ref_total, ref_parts, ref_grad, ref_renders = step(module, batch, None)
    cache = SourceCache(4, "test")
    # cold: the batch is computed (same calls as uncached) and stored; a second batch fills the other rows
    cold_total, _, cold_grad, _ = step(module, batch, cache)
    step(module, {"w": w[2:], "idx": torch.tensor([1, 3])}, cache)
    assert len(cache) == 4 and cache.fills.tolist() == [1, 1, 1, 1]
    warm_total, warm_parts, warm_grad, warm_renders = step(module, batch, cache)
    assert ref_grad.abs().max() > 0
    tol = {"rtol": 1e-4, "atol": 1e-6 * ref_grad.abs().max().item()}
    for total, grad in ((cold_total, cold_grad), (warm_total, warm_grad)):
        torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, **tol)
    for k in ref_parts:
        torch.testing.assert_close(warm_parts[k], ref_parts[k], rtol=1e-5, atol=1e-6)
    assert ref_renders == 2 and warm_renders == renders_when_warm


def test_tiny_cached_step_equals_uncached_and_skips_the_source_render(fast_cfg) -> None:
    """CLIP-NCE + latent L2 + identity: no term reads x itself, so a warm step renders only the edit."""
    module, _ = build(fast_cfg("loss=clip_nce"))
    assert set(cache_entries(module)) == {CLIP_ENTRY, "identity"}
    check_cached_equals_uncached(module, renders_when_warm=1)


def test_multi_prompt_step_with_pixel_term_renders_the_source_once(fast_cfg) -> None:
    """prompt groups select rows of a lazy x: the source is rendered once per step, on the pixel term's read."""
    module, _ = build(
        fast_cfg(
            "prompt=multi",
            "prompt.targets=[elf ears,green lipstick]",
            "+domain.regularizers.pixel_l1._target_=src.losses.PixelL1Loss",
        )
    )
    module.prompt_ids = lambda batch, training: torch.tensor([0, 1])
    check_cached_equals_uncached(module, renders_when_warm=2)


@pytest.mark.skipif(not (Path(ASSET_DIR) / "manifest.json").is_file(), reason="toyfaces assets not built")
def test_toyfaces_cached_step_equals_uncached(fast_cfg) -> None:
    """The toyfaces recipe (CLIP-NCE of two CLIPs, identity, pixel L1, round trip): the pixel term still renders the
    source."""
    module, _ = build(fast_cfg("domain=toyfaces"))
    assert set(cache_entries(module)) == {CLIP_ENTRY, "clip@1", "identity"}
    check_cached_equals_uncached(module, renders_when_warm=2)


def test_changed_fingerprint_is_not_read(tmp_path: Path, fast_cfg) -> None:
    path = tmp_path / "train.pt"
    cache = SourceCache(3, "key-a", path)
    cache.store(torch.tensor([0, 2]), {"clip": torch.ones(2, 4)})
    cache.save()
    assert len(SourceCache(3, "key-a", path)) == 2
    assert len(SourceCache(3, "key-b", path)) == 0  # another generator / nets / latents: not used
    module, _ = build(fast_cfg())
    latents = torch.randn(3, 64)
    key = cache_key(module, latents, "32-true", "cpu")
    assert cache_key(module, latents, "bf16-mixed", "cpu") != key
    assert cache_key(module, latents + 1e-3, "32-true", "cpu") != key
    module.generator.noises.noise_0.add_(1.0)  # the generator changed
    assert cache_key(module, latents, "32-true", "cpu") != key
    assert digest([torch.zeros(2)]) != digest([torch.zeros(3)])


def fit(cfg, callbacks=()) -> pl.LightningModule:
    pl.seed_everything(cfg.seed, workers=True)
    module, dm = build(cfg)
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    return module


def test_training_fills_the_cache_lazily_and_a_new_run_reads_it(fast_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cfg = fast_cfg("data.num_train=4", "trainer.max_steps=4", f"data.source_cache.dir={folder}")
    cache = fit(cfg).source_caches["train"]
    assert len(cache) == 4 and cache.fills.tolist() == [1] * 4 and not cache.opened.any()
    (saved,) = folder.glob("train-*.pt")
    again = fit(cfg).source_caches["train"]
    assert again.opened.all() and again.fills.tolist() == [1] * 4  # read from the file, nothing recomputed
    off = fit(fast_cfg("data.num_train=4", "data.source_cache.enabled=false"))
    assert off.source_caches == {}


class WriteCacheDigest(pl.Callback):
    """Each DDP rank writes a digest of the train cache it reads (spawned processes return nothing else)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_start(self, trainer, module) -> None:
        cache = module.source_caches["train"]
        tensors = [cache.filled.int(), cache.fills, *(cache.entries[k] for k in sorted(cache.entries))]
        Path(self.folder, f"rank{trainer.global_rank}.txt").write_text(digest(tensors))


def test_ddp_ranks_fill_disjoint_rows_and_read_the_same_cache(fast_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cfg = fast_cfg(
        "trainer=ddp_cpu",
        "trainer.max_steps=1",
        "data.num_train=6",
        "data.batch_size=2",
        f"data.source_cache.dir={folder}",
    )
    fit(cfg, [WriteCacheDigest(str(tmp_path))])
    digests = {p.name: p.read_text() for p in tmp_path.glob("rank*.txt")}
    assert len(digests) == 2 and len(set(digests.values())) == 1, digests
    (path,) = folder.glob("train-*.pt")
    state = torch.load(path, weights_only=True)
    assert state["filled"].all() and state["fills"].tolist() == [1] * 6  # every row, each computed once
    # the merged rows equal one process's computation of them
    module, dm = build(fast_cfg("data.num_train=6"))
    dm.setup("fit")
    w = dm.splits["train"][:, None].expand(-1, module.generator.n_latent, -1)
    ref = module.source_side(module.render_source(w))
    for k, v in ref.items():
        torch.testing.assert_close(state["entries"][k], v, rtol=1e-5, atol=1e-6)


def test_fill_command_fills_every_row_and_training_reads_them(fast_cfg, tmp_path: Path) -> None:
    from src.data.fill_source_cache import fill_caches

    folder = tmp_path / "cache"
    cfg = fast_cfg("data.num_train=4", f"data.source_cache.dir={folder}")
    assert fill_caches(cfg, progress=False) == {"train": 4, "val": 2}
    assert fill_caches(cfg, progress=False) == {"train": 0, "val": 0}  # resumable: nothing left to do
    assert fit(cfg).source_caches["train"].opened.all()
    with pytest.raises(ValueError, match="source_cache.dir"):
        fill_caches(fast_cfg("data.num_train=4"), progress=False)


def test_latent_indices_stay_on_the_host(fast_cfg) -> None:
    _, dm = build(fast_cfg())
    batch = {"w": torch.zeros(2, 3), "idx": torch.tensor([0, 1])}
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved["w"].device.type == "meta" and moved["idx"].device.type == "cpu"
