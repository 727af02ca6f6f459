"""One mapper for many prompts (prompt=multi): each sample's loss with its own text, the checkpoint's prompt
list, edits and evaluation of any text, the clear error of one-prompt checkpoints, and the toyfaces judge of
texts without a config (held-out values, composed prompts)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from src.builders import build
from src.data.prompts import content_words, prompt_set, short_name
from src.toyworld.attributes import values_in_text
from tests.conftest import FAST, compose_train

TEXTS = ["elf ears", "green lipstick", "purple eyebrows"]
MULTI = ["prompt=multi", f"prompt.targets=[{','.join(TEXTS)}]"]


def test_prompt_set_names_and_errors():
    ps = prompt_set(["face with elf ears", "face with blue lipstick"], "face", ["a {}"])
    assert [p.name for p in ps] == ["elf_ears", "blue_lipstick"] and ps[1].templates == ["a {}"]
    assert short_name("a beard", "face") == "a_beard"
    with pytest.raises(ValueError, match="non-empty list"):
        prompt_set("elf ears", "face")
    with pytest.raises(ValueError, match="repeats"):
        prompt_set(["elf ears", "elf ears"], "face")


def test_words_tem_input_is_additive_in_the_words(tmp_path):
    """prompt.tem_input=words: the TEM reads the mean of the content words' unit embeddings minus the source's, so a
    text of trained words is an exact mix of trained inputs, for the run's prompts and any text asked later."""
    assert content_words("face with elf ears and green lipstick", "face") == [
        "elf",
        "ears",
        "green",
        "lipstick",
    ]
    with pytest.raises(ValueError, match="no word beyond"):
        content_words("face with a face", "face")
    with pytest.raises(ValueError, match="tem_input"):
        prompt_set(["elf ears"], "face", tem_input="tokens")
    texts = ["face with blue eyes", "face with red lipstick", "face with red eyes"]
    words = ["prompt=multi", f"prompt.targets=[{','.join(texts)}]", "prompt.tem_input=words"]
    m, _ = build(compose_train([*FAST, *words], tmp_path))
    e = m.texts.embeddings  # (3, E)
    blue_lips = m.texts.lookup(m.clip, "face with blue lipstick")[1]
    torch.testing.assert_close(
        blue_lips, e[0] + e[1] - e[2]
    )  # blue + (lipstick) = blue eyes + red lips - red eyes
    assert m.texts.novelty(m.clip, "face with blue lipstick")["text_residual"] < 1e-3
    sentence, _ = build(compose_train([*FAST, *words[:2]], tmp_path))
    torch.testing.assert_close(
        sentence.texts.features(1).target, m.texts.features(1).target
    )  # losses unchanged
    assert not torch.allclose(sentence.texts.embeddings, e)


def test_factored_tem_input_binds_modifier_to_noun(tmp_path):
    """prompt.tem_input=factored: the TEM input is (modifier, noun), each half shared with the texts that share the
    word, and the mapper multiplies the two halves' codes (a second TEM, tem_noun)."""
    texts = ["face with blue eyes", "face with red lipstick"]
    over = ["prompt=multi", f"prompt.targets=[{','.join(texts)}]", "prompt.tem_input=factored"]
    m, _ = build(compose_train([*FAST, *over], tmp_path))
    e = m.texts.embeddings
    width = m.mapper.text_dim
    assert e.shape == (2, 2 * width) and m.mapper.text_factors == 2 and hasattr(m.mapper, "tem_noun")
    blue_lips = m.texts.lookup(m.clip, "face with blue lipstick")[1]
    torch.testing.assert_close(blue_lips[:width], e[0, :width])  # "blue", as in blue eyes
    torch.testing.assert_close(blue_lips[width:], e[1, width:])  # "lipstick", as in red lipstick
    w = torch.randn(3, m.generator.n_latent, m.generator.style_dim)
    out = m.edit(w, text="face with blue lipstick")
    assert out.shape == w.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=rf"\(B, {2 * width}\)"):
        m.mapper(w, e[:1, :width].expand(3, -1))


def test_a_mixed_batch_uses_each_samples_own_text(tmp_path):
    """The multi-prompt loss of a batch = the one-prompt runs' losses on the same samples, weighted by share."""
    torch.manual_seed(0)
    multi, _ = build(compose_train([*FAST, *MULTI, "aug=none"], tmp_path))
    singles = []
    for text in TEXTS:
        m, _ = build(compose_train([*FAST, "prompt=custom", f"prompt.target={text}", "aug=none"], tmp_path))
        m.mapper.load_state_dict(multi.mapper.state_dict())
        singles.append(m)
    w = torch.randn(6, multi.generator.n_latent, multi.generator.style_dim)
    ids = torch.tensor([0, 1, 2, 1, 0, 1])
    total, parts, per_prompt = multi.step_loss({"w": w, "prompt": ids}, training=False)
    expected, expected_parts = 0.0, {}
    for i, single in enumerate(singles):
        rows = (ids == i).nonzero().squeeze(1)
        t, p = single.loss(single.compute_context(w[rows]))
        torch.testing.assert_close(per_prompt[multi.texts.names[i]], t)
        torch.testing.assert_close(multi.edit(w[rows], ids[rows]), single.edit(w[rows]))
        expected = expected + len(rows) / len(ids) * t
        expected_parts = {k: expected_parts.get(k, 0.0) + len(rows) / len(ids) * v for k, v in p.items()}
    torch.testing.assert_close(total, expected)
    for k, v in expected_parts.items():
        torch.testing.assert_close(parts[k], v)
    assert len({round(float(v.detach()), 6) for v in per_prompt.values()}) == 3  # the texts really differ
    # without a "prompt" entry: (latent index + step) mod P, so each latent meets every prompt in turn
    assert multi.prompt_ids({"w": w, "idx": torch.tensor([4, 0, 2])}, training=False).tolist() == [1, 0, 2]


@pytest.fixture(scope="module")
def multi_ckpt(tmp_path_factory):
    from src.train import train

    out = tmp_path_factory.mktemp("multi")
    train(compose_train([*FAST, *MULTI], out))
    return out / "checkpoints" / "last.ckpt"


def test_checkpoint_prompt_list_round_trips(multi_ckpt):
    from src.eval import load_run

    stored = torch.load(multi_ckpt, map_location="cpu", weights_only=True)["prompts"]
    assert [p["target"] for p in stored] == TEXTS
    assert [p["name"] for p in stored] == ["elf_ears", "green_lipstick", "purple_eyebrows"]
    module, run_cfg, _ = load_run(str(multi_ckpt))
    assert module.texts.targets == TEXTS and list(run_cfg.prompt.targets) == TEXTS


def test_edit_any_text_with_a_multi_checkpoint(multi_ckpt, tmp_path):
    from src.edit import run_edit
    from tests.test_edit import edit_cfg

    w = torch.randn(2, 8, 64)
    torch.save(w, tmp_path / "w.pt")
    result = run_edit(
        edit_cfg(tmp_path, f"ckpt={multi_ckpt}", f"latents={tmp_path / 'w.pt'}", "text=blue eyes")
    )
    assert result["columns"][-1] == "multi:blue eyes"
    saved = torch.load(tmp_path / "latents.pt", weights_only=True)["edits"]
    assert not torch.equal(saved["multi:blue eyes"], w)
    # without text=, every trained prompt gets its column
    result = run_edit(edit_cfg(tmp_path / "all", f"ckpt={multi_ckpt}", f"latents={tmp_path / 'w.pt'}"))
    assert result["columns"][-3:] == [f"multi:{t}" for t in TEXTS]


def test_evaluate_seen_and_unseen_texts(multi_ckpt, tmp_path):
    from src.eval import load_run
    from src.evaluation.generic import evaluate

    module, run_cfg, dm = load_run(str(multi_ckpt))
    dm.setup("test")
    m = evaluate(module, run_cfg, dm.splits["test"], str(tmp_path), 2, prompts=["blue eyes", "elf ears"])
    assert list(m["prompts"]) == ["elf_ears", "green_lipstick", "purple_eyebrows", "blue_eyes"]
    assert m["seen"]["prompts"] == 3 and m["unseen"]["prompts"] == 1 and not m["prompts"]["blue_eyes"]["seen"]
    assert (tmp_path / "blue_eyes" / "eval_grid.png").is_file() and (tmp_path / "eval.json").is_file()
    assert m["prompts"]["blue_eyes"]["clip_score"] != m["prompts"]["elf_ears"]["clip_score"]
    seen, new = m["prompts"]["elf_ears"], m["prompts"]["blue_eyes"]  # distance from the trained texts
    assert seen["text_residual"] < 1e-4 and seen["nearest_trained"] == "elf ears"
    assert seen["nearest_trained_cos"] == pytest.approx(1.0, abs=1e-5)
    assert 0.01 < new["text_residual"] <= 1.0 and new["nearest_trained_cos"] < 1.0 - 1e-4


def test_eval_judges_the_runs_eval_prompts_by_default(monkeypatch, tmp_path):
    """``python -m src.eval ckpt=...`` without ``prompts`` re-judges what the run's final evaluation judged."""
    from omegaconf import OmegaConf

    import src.eval as ev

    class Data:
        num_test, splits = 1, {"test": torch.zeros(1, 8, 64)}

        def setup(self, stage):
            pass

    asked = []
    run_cfg = OmegaConf.create({"eval_prompts": ["face with blue lipstick"]})
    monkeypatch.setattr(ev, "load_run", lambda path: (torch.nn.Linear(1, 1), run_cfg, Data()))
    monkeypatch.setattr(ev, "evaluate", lambda *a, prompts=None, **k: asked.append(prompts) or {})
    cfg = {"ckpt": "last.ckpt", "num_test": None, "device": "cpu", "grid_images": 2, "batch_size": 4}
    cfg["paths"] = {"output_dir": str(tmp_path)}
    ev.run_eval(OmegaConf.create({**cfg, "prompts": None}))
    ev.run_eval(OmegaConf.create({**cfg, "prompts": ["blue eyes"]}))
    assert [list(p) for p in asked] == [["face with blue lipstick"], ["blue eyes"]]


def test_one_prompt_checkpoint_refuses_other_texts(tmp_path):
    from src.edit import apply_edits, load_editors
    from src.train import train

    train(compose_train(FAST, tmp_path))
    module, _, editors = load_editors([str(tmp_path / "checkpoints" / "last.ckpt")], torch.device("cpu"))
    w = torch.randn(1, 8, 64)
    assert list(apply_edits(editors, module.clip, w, ["elf ears"], 1.0)) == ["elf_ears:elf ears"]
    with pytest.raises(ValueError, match="trained for the one prompt 'elf ears'.*prompt=multi"):
        apply_edits(editors, module.clip, w, ["blue eyes"], 1.0)
    with pytest.raises(ValueError, match="one-prompt mappers do not generalise"):
        module.edit(w, text="blue eyes")


def test_paper_ffhq_multi_wires_on_tiny(tmp_path):
    from src.train import train

    cfg = compose_train(["experiment=paper_ffhq_multi", *FAST, "trainer.precision=32-true"], tmp_path)
    assert list(cfg.prompt.targets) == ["elf ears", "purple eyebrows", "green lipstick", "cyberpunk"]
    assert len(instantiate(cfg.prompt)) == 4
    train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_values_in_text():
    assert values_in_text("face with elf ears and green lipstick") == [
        ("ears", "pointed"),
        ("lip_color", "green"),
    ]
    assert values_in_text("a face with bright blue skin") == [("skin_tone", "blue")]
    assert values_in_text("face with cyberpunk style") == [("style", "neon")]
    assert values_in_text("face with blue eyes") == [("iris_color", "blue")]
    assert values_in_text("a beard") == []


def test_composed_judge_on_hand_made_edits():
    """Both parts as the ideal: faithful; only one of the two parts: not; the ceiling comes with it."""
    from src.evaluation.toyfaces import ToyfacesEvaluator, ideal_edits

    ev = ToyfacesEvaluator({})
    attrs, seeds = ev.scenes(4)
    _, _, source = ideal_edits(attrs, seeds, "ears", "pointed")
    from src.toyworld.judge.composed import renders

    both = renders(attrs, seeds, {"ears": "pointed", "lip_color": "green"})
    ears_only = renders(attrs, seeds, {"ears": "pointed"})
    good = ev(source, both, "x", "face with elf ears and green lipstick")
    bad = ev(source, ears_only, "x", "face with elf ears and green lipstick")
    assert good["target"] == "ears:pointed + lip_color:green"
    assert good["faithful_rate"] == 1.0 and good["per_target"]["lip_color:green"]["edit_accuracy"] == 1.0
    assert bad["faithful_rate"] == 0.0 and bad["per_target"]["lip_color:green"]["region_pass_rate"] == 0.0
    assert bad["per_target"]["ears:pointed"]["region_pass_rate"] == 1.0
    assert 0.0 <= good["ceiling"]["faithful_rate"] <= 1.0 and good["ceiling"]["collateral_psnr"] > 25
    with pytest.raises(ValueError, match="names no value"):
        ev(source, both, "x", "a beard")
