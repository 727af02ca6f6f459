"""The oracle's dense colour reader: the rule's per-pixel maps, read back as the rule reads them; attached to an
oracle, saved and loaded with it, and used for its attributes' targets."""

import torch

from src.toyworld.attributes import SCHEMA, Attributes
from src.toyworld.judge.calibration import compose, read_sides_by_rule
from src.toyworld.judge.composed import value_renders
from src.toyworld.judge.dense import DenseReader, dense_labels, pairs, read_maps
from src.toyworld.judge.dense_calibration import dense_attributes, dense_targets, train_head
from src.toyworld.judge.oracle import Oracle, OracleEnsemble

LIPS = SCHEMA["lip_color"].values


def test_the_rules_maps_read_back_as_the_rule_reads_the_target():
    """True maps of composed hard cases (the ideal, one side, blends, rings, casts, blur) give the rule's verdict."""
    g = torch.Generator().manual_seed(0)
    agree, n, both = 0, 0, set()
    for seed, (source, target) in enumerate([("red", "black"), ("pink", "blue"), ("brown", "green")] * 2):
        face = Attributes(lip_color=source)
        cands = value_renders([face], [seed], "lip_color")[0].float()
        s, t = LIPS.index(source), LIPS.index(target)
        edits = compose(cands[[s] * 8], cands[[t] * 8], "lip_color", g)
        region, nearest, first = dense_labels(edits, cands)
        read = read_maps(region, nearest, first, t, torch.full((8,), s), paired=False)
        for i in range(8):
            _, _, _ = rule = read_sides_by_rule(edits[i], face, seed, ("lip_color", target))
            truth = rule[0].lip_color == target
            agree, n = agree + int(bool(read[i]) == truth), n + 1
            both.add(truth)
    assert both == {True, False}  # the cases hold reads and misses
    assert agree / n >= 0.95  # the maps' region is every value's; the rule's the source-target pair's


def test_the_ideal_reads_its_target_and_the_source_does_not_on_every_side_of_a_pair():
    face = Attributes(iris_color="brown")
    cands = value_renders([face], [3], "iris_color")[0].float()
    s, t = SCHEMA["iris_color"].index("brown"), SCHEMA["iris_color"].index("red")
    x = torch.stack([cands[t], cands[s], cands[s]])
    x[2, :, :, 32:] = cands[t, :, :, 32:]  # one eye red: not red eyes
    read = read_maps(*dense_labels(x, cands), t, torch.full((3,), s), paired=True)
    assert read.tolist() == [True, False, False]
    # an image whose source already is the target is not read by the dense maps
    assert not read_maps(*dense_labels(x[:1], cands), t, torch.tensor([t]), paired=True)[0]


def test_a_head_fits_the_maps_and_the_oracle_reads_its_targets_with_it_after_a_round_trip():
    torch.manual_seed(0)
    faces = [Attributes(lip_color=v) for v in ("red", "pink")]
    cands = value_renders(faces, [0, 1], "lip_color")  # (2, K, 3, H, W)
    black = LIPS.index("black")
    x = torch.cat([cands[:, black], cands[:, 0]])  # the ideal edits and two unedited faces
    ref = torch.cat([cands[0, :1], cands[1, 1:2]] * 2)
    to8 = lambda v: ((v + 1) * 127.5).round().to(torch.uint8)  # noqa: E731
    maps = dense_targets(x, faces * 2, [0, 1, 0, 1], "lip_color")
    assert maps[0].shape == (4, 64, 64) and maps[2].shape == (4, len(pairs(len(LIPS))), 64, 64)
    reader = DenseReader(["lip_color"], width=4)
    train_head(reader.heads["lip_color"], to8(x), to8(ref), maps, steps=3, log=lambda _: None)
    oracle = Oracle(width=4, relative=True)
    oracle.dense = reader
    loaded = Oracle.from_state(oracle.state_dict())
    assert isinstance(loaded.dense, DenseReader) and set(loaded.dense.heads) == {"lip_color"}
    source = torch.tensor([0, 1, 0, 1])
    want = reader.reads_target(x, ref, "lip_color", "black", source)
    got = loaded.predict(x, ref, targets=[("lip_color", "black")], source={"lip_color": source})["lip_color"]
    assert torch.equal(got == black, want)
    # an ensemble carries its reader too; attributes the reader lacks are read by the heads
    ens = OracleEnsemble([Oracle(width=4, relative=True)], mirror=True)
    ens.dense = reader
    again = Oracle.from_state(ens.state_dict())
    assert isinstance(again, OracleEnsemble) and again.mirrored and again.dense is not None
    heads = again.predict(x, ref, targets=[("iris_color", "red")])["iris_color"]
    again.dense = None
    assert torch.equal(heads, again.predict(x, ref, targets=[("iris_color", "red")])["iris_color"])


def test_dense_attributes_are_checked():
    assert dense_attributes(" lip_color, iris_color ") == ["lip_color", "iris_color"]
    assert dense_attributes("") == []
    try:
        dense_attributes("lips")
    except ValueError as err:
        assert "lip_color" in str(err)
    else:
        raise AssertionError("an unknown attribute must be refused")


def test_the_vote_takes_the_rules_colour_distance():
    """``dense_labels``' vote follows the distance it is given (the judge's CIE76 by default), e.g. for a probe of
    another rule; region and pair maps do not depend on it."""
    cands = value_renders([Attributes()], [0], "lip_color")[0].float()
    x = cands[[LIPS.index("black"), LIPS.index("blue")]]
    region, nearest, first = dense_labels(x, cands)
    assert nearest[0][region[0]].eq(LIPS.index("black")).float().mean() > 0.9  # a render votes for itself
    farthest = lambda a, b: -(a - b).pow(2).sum(-3)  # noqa: E731
    r2, n2, f2 = dense_labels(x, cands, farthest)
    assert torch.equal(r2, region) and torch.equal(f2, first) and not torch.equal(n2, nearest)
