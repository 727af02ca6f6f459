"""Oracle API (a few training steps only; the real accuracy check belongs to the world build)."""

import numpy as np
import torch

from src.toyworld.attributes import LABEL_ATTRIBUTES, SCHEMA, Attributes
from src.toyworld.judge.oracle import Oracle, OracleEnsemble
from src.toyworld.judge.oracle_training import corrupt, region_stats, train_oracle
from src.toyworld.judge.rule import PAIRED
from src.toyworld.pool import TEST_SEED_OFFSET, RenderPool, heldout_scenes
from src.toyworld.render import COLOURS, render, render_batch


def test_tiny_training_run_and_prediction_shapes():
    model, metrics = train_oracle(
        num_steps=3, batch=8, pool_size=32, refresh_per_step=2, eval_size=16, progress=False
    )
    assert {f"acc/{a}" for a in LABEL_ATTRIBUTES} <= set(metrics)
    assert all(0.0 <= metrics[f"acc/{a}"] <= 1.0 for a in LABEL_ATTRIBUTES)
    x = render_batch([Attributes()] * 3, [0, 1, 2])
    pred = model.predict(x)
    assert set(pred) == set(LABEL_ATTRIBUTES)
    for a, p in pred.items():
        assert p.dtype == torch.long and p.shape == (3,)
        assert int(p.max()) < len(SCHEMA[a].values)
    v = model.valid_prob(x)
    assert v.shape == (3,) and bool(((v >= 0) & (v <= 1)).all())
    # other resolutions are resized to the oracle's input size
    assert model.predict(render_batch([Attributes()], [0], size=128))["ears"].shape == (1,)
    assert model.features(x).shape == (3, 8 * 16)


def test_corruptions_keep_shape_and_change_images():
    x = render_batch([Attributes()] * 4, [0, 1, 2, 3])
    bad = corrupt(x, torch.Generator().manual_seed(0))
    assert bad.shape == x.shape and bad.min() >= -1 and bad.max() <= 1
    assert (bad - x).abs().mean() > 0.05


def test_pool_refresh_and_heldout_seeds():
    pool = RenderPool(16, 0.1, seed=0)
    before = pool.images.clone()
    pool.refresh(4)
    assert (pool.images != before).flatten(1).any(1).sum() >= 3
    x, y = pool.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 3, 64, 64) and y.shape == (5, len(LABEL_ATTRIBUTES))
    assert all(Attributes.decode(y[i].numpy()) in pool.attrs for i in range(5))
    assert max(pool.seeds) < TEST_SEED_OFFSET
    _, seeds = heldout_scenes(4, 0.1)
    assert min(seeds) >= TEST_SEED_OFFSET
    assert Oracle().heads["lip_color"].out_features == 6


def test_region_stats_reads_lip_colour():
    img, masks = render(Attributes(lip_color="blue"), 0)
    stats = region_stats(img, masks)
    assert np.abs(stats["lips"] - np.array(COLOURS["lip_color"]["blue"])).max() < 60
    assert set(stats) <= set(masks)


def test_pool_part_maps_cover_the_small_parts_only():
    pool = RenderPool(8, 0.1, seed=0, part_regions=("lips", "eyes"))
    assert pool.parts.shape == (8, 1, 64, 64) and pool.parts.dtype == torch.bool
    _, masks = render_batch(pool.attrs, pool.seeds, return_masks=True)
    lips = masks["lips"].unsqueeze(1)
    assert pool.parts[lips].all(), "every lip pixel is in the part map"
    share = pool.parts.float().mean().item()
    assert 0.005 < share < 0.2, share  # small parts (dilated by a pixel), not the whole face
    pool.refresh(3)
    x, y, parts = pool.sample_with_parts(4, torch.Generator().manual_seed(0))
    assert parts.shape == (4, 1, 64, 64) and x.shape == (4, 3, 64, 64)
    assert RenderPool(4, 0.1).sample_with_parts(2)[2] is None


def test_pairs_are_read_from_both_sides():
    """A counterfactual value read on one side only is not the pair's value (as in the region rule)."""
    from src.toyworld.judge.oracle import both_sides

    hi = lambda k, n: torch.nn.functional.one_hot(torch.tensor([k]), n).float() * 8  # noqa: E731
    assert both_sides(hi(1, 2), hi(1, 2), "ears").item() == 1  # both pointed
    assert both_sides(hi(1, 2), hi(0, 2), "ears").item() == 0  # one pointed ear: round
    purple = SCHEMA["eyebrow_color"].index("purple")
    black = SCHEMA["eyebrow_color"].index("black")
    assert both_sides(hi(purple, 6), hi(black, 6), "eyebrow_color").item() == black


def test_side_heads_and_loading_an_oracle_saved_without_them():
    model = Oracle()
    out = model(render_batch([Attributes()] * 2, [0, 1]))
    assert out["ears_left"].shape == (2, 2) and out["iris_color_right"].shape == (2, 5)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("side_heads.")}
    legacy = Oracle.from_state(old)
    assert not legacy.sided and "ears_left" not in legacy(render_batch([Attributes()], [0]))
    assert Oracle.from_state(model.state_dict()).sided


def test_an_oracle_with_a_reference_starts_as_the_image_oracle_and_learns_from_the_difference():
    """``with_reference`` reads exactly as before until fine-tuned; fine-tuning needs references and makes them
    matter; the relative oracle round-trips through its state dict; a reference of another shape is an error."""
    import pytest

    from src.toyworld.judge.calibration_set import to_uint8
    from src.toyworld.judge.oracle_training import finetune_oracle

    base = Oracle().eval()
    x = render_batch([Attributes()] * 3, [0, 1, 2])
    ref = render_batch([Attributes(lip_color="blue")] * 3, [0, 1, 2])
    pair = base.with_reference().eval()
    assert pair.relative and not base.relative
    with torch.no_grad():
        for k, v in base(x).items():
            assert torch.equal(pair(x, ref)[k], v), k
            assert torch.equal(pair(x)[k], v), k
    with pytest.raises(ValueError, match="references"):
        finetune_oracle(pair, to_uint8(x), torch.zeros(3, len(LABEL_ATTRIBUTES), dtype=torch.long), 1, 4)
    finetune_oracle(pair, to_uint8(x), torch.zeros(3, len(LABEL_ATTRIBUTES), dtype=torch.long), 2, 4,
                    pool_size=8, progress=False, references=to_uint8(ref))  # fmt: skip
    with torch.no_grad():
        assert not torch.equal(pair(x, ref)["lip_color"], pair(x)["lip_color"])
    loaded = Oracle.from_state(pair.state_dict())
    assert loaded.relative and torch.equal(
        loaded.predict(x, ref)["lip_color"], pair.predict(x, ref)["lip_color"]
    )
    with pytest.raises(ValueError, match="must match"):
        pair(x, ref[:1])


def test_an_oracle_with_cielab_channels_starts_as_the_relative_oracle_and_learns_from_them():
    """``with_lab`` (the ``calib_lab`` option) adds the image and its difference in CIELAB at zero weight: it reads
    as the relative oracle until fine-tuned, then they matter; it round-trips through its state dict; CIELAB
    channels without a reference are an error. Fine-tuning without augmenting the generated images works too."""
    import pytest

    from src.toyworld.judge.calibration_set import to_uint8
    from src.toyworld.judge.oracle_training import finetune_oracle

    x = render_batch([Attributes()] * 3, [0, 1, 2])
    ref = render_batch([Attributes(lip_color="blue")] * 3, [0, 1, 2])
    pair = Oracle().with_reference().eval()
    lab = pair.with_lab().eval()
    assert lab.lab and lab.body[0].in_channels == 12 and lab.with_lab() is lab
    with torch.no_grad():
        for k, v in pair(x, ref).items():
            assert torch.allclose(lab(x, ref)[k], v, atol=1e-5), k
    before = lab.body[0].weight[:, 6:].clone()
    assert not before.any()
    finetune_oracle(lab, to_uint8(x), torch.zeros(3, len(LABEL_ATTRIBUTES), dtype=torch.long), 2, 4,
                    pool_size=8, progress=False, references=to_uint8(ref), augment_generated=False)  # fmt: skip
    assert lab.body[0].weight[:, 6:].any()
    loaded = Oracle.from_state(lab.state_dict())
    assert loaded.lab and loaded.relative
    assert torch.equal(loaded.predict(x, ref)["lip_color"], lab.predict(x, ref)["lip_color"])
    with pytest.raises(ValueError, match="relative"):
        Oracle(lab=True)


def test_a_mirrored_ensemble_reads_each_image_and_its_mirror_with_the_sides_swapped():
    """``calib_mirror``: the mean of the image's and its mirror's log-probabilities, a side head reading its own side
    in both; the mirror option survives the state dict (old ensembles load unmirrored)."""
    member = Oracle(8).with_reference().eval()
    x = render_batch([Attributes(ears="pointed")] * 2, [0, 1])
    x[:, :, :, :32] = -1  # the left half blanked: the sides now differ
    ref = render_batch([Attributes()] * 2, [0, 1])
    ens = OracleEnsemble([member], mirror=True).eval()
    with torch.no_grad():
        a, b, out = member(x, ref), member(x.flip(3), ref.flip(3)), ens(x, ref)
    for k in ("ears", "ears_left", "valid"):
        other = {"ears_left": "ears_right"}.get(k, k)
        want = (a[k] + b[other]) / 2 if k == "valid" else (a[k].log_softmax(1) + b[other].log_softmax(1)) / 2
        assert torch.allclose(out[k], want, atol=1e-5), k
    loaded = Oracle.from_state(ens.state_dict())
    assert isinstance(loaded, OracleEnsemble) and loaded.mirrored
    assert not Oracle.from_state(OracleEnsemble([member]).state_dict()).mirrored
    assert torch.allclose(loaded(x, ref)["ears_right"], out["ears_right"], atol=1e-5)


def test_an_edit_reads_its_target_when_the_target_beats_the_source_on_every_side():
    """The judge's question (as the region rule's): is the edit closer to the target than to the source? A lip
    that turned dark reads black against pink even if brown is its top value; one pointed ear is not elf ears."""
    model = Oracle().with_reference().eval()
    lips = SCHEMA["lip_color"].values
    logits = {n: torch.zeros(2, len(SCHEMA[n].values)) for n in LABEL_ATTRIBUTES}
    logits.update(
        {f"{n}_{s}": torch.zeros(2, len(SCHEMA[n].values)) for n in PAIRED for s in ("left", "right")}
    )
    logits["lip_color"][:, lips.index("brown")] = 3.0
    logits["lip_color"][0, lips.index("black")] = 2.0  # black beats pink on the first edit only
    pink = torch.full((2,), lips.index("pink"))
    assert model.reads_target(logits, pink, "lip_color", "black").tolist() == [True, False]
    ears = SCHEMA["ears"].values
    logits["ears_left"][:, ears.index("pointed")] = 2.0  # both edits: the left ear
    logits["ears_right"][1, ears.index("pointed")] = 2.0  # the second: the right one too
    rnd = torch.full((2,), ears.index("round"))
    assert model.reads_target(logits, rnd, "ears", "pointed").tolist() == [False, True]


def test_the_edit_loss_trains_the_target_against_the_source_value():
    from src.toyworld.judge.oracle_training import _edit_loss

    lips = SCHEMA["lip_color"].values
    j = LABEL_ATTRIBUTES.index("lip_color")
    out = {n: torch.zeros(2, len(SCHEMA[n].values), requires_grad=True) for n in LABEL_ATTRIBUTES}
    out["valid"] = torch.zeros(2)
    y = torch.zeros(2, len(LABEL_ATTRIBUTES), dtype=torch.long)
    y[:, j] = torch.tensor([lips.index("black"), lips.index("brown")])  # the rule: read / not read
    edits = torch.tensor([[j, lips.index("black"), lips.index("pink")]] * 2)
    _edit_loss(out, y, None, edits).backward()
    g = out["lip_color"].grad
    assert g[0, lips.index("black")] < 0 < g[0, lips.index("pink")]  # raise black over pink
    assert g[1, lips.index("black")] > 0 > g[1, lips.index("pink")]  # lower it
    assert g[:, lips.index("brown")].abs().max() == 0
    none = torch.full((2, 3), -1)
    assert _edit_loss(out, y, None, none).item() == 0.0


def test_an_ensemble_reads_the_mean_of_its_members_log_probabilities_and_round_trips():
    """``OracleEnsemble``: per head the mean log-probability of its members (mean valid logit), one relative
    member reads the reference, its state dict loads back as the ensemble, mixed side heads are refused."""
    import pytest

    torch.manual_seed(0)
    a, b = Oracle(8).eval(), Oracle(4, relative=True).eval()
    ens = OracleEnsemble([a, b]).eval()
    x = render_batch([Attributes(), Attributes(lip_color="blue")], [0, 1])
    ref = render_batch([Attributes()] * 2, [0, 1])
    with torch.no_grad():
        out, oa, ob = ens(x, ref), a(x), b(x, ref)
        assert ens.relative and ens.sided
        want = (oa["lip_color"].log_softmax(1) + ob["lip_color"].log_softmax(1)) / 2
        assert torch.allclose(out["lip_color"], want, atol=1e-6)
        assert torch.allclose(out["valid"], (oa["valid"] + ob["valid"]) / 2, atol=1e-6)
        assert not torch.allclose(
            ens(x)["lip_color"], out["lip_color"]
        )  # the relative member saw the reference
        assert torch.equal(ens.features(x), a.features(x))
    loaded = Oracle.from_state(ens.state_dict())
    assert isinstance(loaded, OracleEnsemble) and len(loaded.members) == 2
    for k, v in ens.predict(x, ref, targets=[("lip_color", "blue")]).items():
        assert torch.equal(loaded.predict(x, ref, targets=[("lip_color", "blue")])[k], v), k
    assert all(m.relative for m in OracleEnsemble([a, Oracle(4)]).with_reference().members)
    with pytest.raises(ValueError, match="all sided"):
        OracleEnsemble([a, Oracle(4, sided=False)])
