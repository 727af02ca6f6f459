"""Every option of every config group composes, and the parts instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import CONF, compose_train

GROUPS = [
    "domain",
    "prompt",
    "loss",
    "aug",
    "model",
    "optimizer",
    "data",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group == "prompt" and option == "custom":
        overrides.append("prompt.target='a face with a beard'")
    cfg = compose_train(overrides, tmp_path)
    assert cfg.task_name == "train"
    if group not in ("experiment", "debug"):  # global packages: merged into the root
        assert cfg[group] is not None


def test_user_command_composes(tmp_path):
    cfg = compose_train(["loss=clip_nce", "aug=perspective", "prompt=elf_ears"], tmp_path)
    assert cfg.loss.terms.clip_nce.weight == 0.3
    assert cfg.aug.num_views == 8
    # the warp is the domain's knob (conf/domain/toyfaces.yaml: the official 0.5 since the robust toy CLIP)
    assert cfg.aug.transform.distortion == cfg.domain.perspective_distortion == 0.5
    milder = compose_train(["domain.perspective_distortion=0.25"], tmp_path)
    assert milder.aug.transform.distortion == 0.25
    # negative prompts come from the domain's one rule (no prompt named); the ablations run the paper's method
    green = compose_train(["prompt=green_lipstick"], tmp_path).prompt
    assert list(green.negatives) == [] and green.auto_negatives.parts == cfg.prompt.auto_negatives.parts
    assert list(cfg.prompt.negatives) == []
    for study in ("ablation_loss", "ablation_aug", "ablation_tem"):
        sweep = compose_train([f"experiment={study}", "prompt=green_lipstick"], tmp_path)
        assert list(sweep.prompt.negatives) == [] and sweep.prompt.auto_negatives is None
        assert sweep.domain.perspective_distortion == 0.5
    assert cfg.domain.name == "toyfaces"  # the embedded default world, in its own words
    assert cfg.prompt.target == "face with elf ears"
    tiny = compose_train(["domain=tiny", "prompt=elf_ears"], tmp_path)
    assert tiny.prompt.target == "elf ears"  # the paper's text where a domain has no phrasing of its own
    for domain in ("tiny", "ffhq", "afhq_dog"):
        assert compose_train([f"domain={domain}"], tmp_path).aug.transform.distortion == 0.5


@pytest.mark.parametrize("aug", options("aug"))
def test_augmentations_instantiate(aug, tmp_path):
    cfg = compose_train([f"aug={aug}"], tmp_path)
    assert instantiate(cfg.aug).num_views == cfg.aug.num_views


@pytest.mark.parametrize("loss", options("loss"))
def test_losses_instantiate_with_domain_regularizers(loss, tmp_path):
    cfg = compose_train([f"loss={loss}", "domain=tiny"], tmp_path)
    total = instantiate(cfg.loss)
    assert "latent_l2" in total.terms and "identity" in total.terms


def test_optimizers_instantiate(tmp_path):
    import torch

    for opt in options("optimizer"):
        cfg = compose_train([f"optimizer={opt}"], tmp_path)
        optimizer = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
        assert optimizer.param_groups[0]["lr"] == {"adam": 0.1, "ranger": 0.5}[opt]
    for paper in ("paper_ffhq_elf_ears", "paper_afhq_dog_green_tongue"):  # the paper's lr and warp
        cfg = compose_train([f"experiment={paper}", "+domain.perspective_distortion=0.1"], tmp_path)
        assert cfg.optimizer.lr == 0.5 and cfg.aug.transform.distortion == 0.5


def test_slurm_launcher_config_composes(tmp_path):
    cfg = compose_train(["hydra/launcher=slurm"], tmp_path)
    assert cfg.hydra.launcher.gpus_per_node == 1
    assert "submitit" in cfg.hydra.launcher._target_


def test_toyfaces_domain_has_no_per_prompt_settings():
    """One recipe for every prompt: the toyfaces domain may say how each prompt is phrased (prompt_texts) and
    judged (edits), nothing else per prompt. A key naming a prompt anywhere else is a hand setting."""
    import yaml

    prompts = {p.stem for p in (Path(CONF) / "prompt").glob("*.yaml")} - {"custom"}
    domain = yaml.safe_load((Path(CONF) / "domain" / "toyfaces.yaml").read_text())
    allowed = {"prompt_texts", "edits"}
    assert set(domain["prompt_texts"]) <= prompts and set(domain["edits"]) >= set(domain["prompt_texts"])

    def keys(node, path=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield (*path, str(k))
                yield from keys(v, (*path, str(k)))

    offending = [".".join(p) for p in keys(domain) if p[0] not in allowed and set(p) & prompts]
    assert not offending, f"per-prompt settings in conf/domain/toyfaces.yaml: {offending}"
    assert "prompt_negatives" not in domain


def test_toyfaces_recipe_is_two_clips_mirrored_views_and_the_round_trip(tmp_path):
    """docs/guide.md measures this recipe: the world's ViT and ResNet CLIPs (their mean), half the views mirrored, the
    encoder round trip, pixel L1 0.5 and the paper's identity and latent L2 terms."""
    cfg = compose_train([], tmp_path)
    assert cfg.domain.clip_weights is None and cfg.domain.extra_clips[0].file == "clip_resnet.pt"
    assert cfg.aug.flip == 0.5 and cfg.domain.latent_l2_weight == 0.8
    total = instantiate(cfg.loss)
    assert {"manifold", "identity", "pixel_l1", "clip_nce"} <= set(total.terms)
    assert type(total.terms["manifold"]).__name__ == "ManifoldLoss" and total.terms["manifold"].weight == 15.0
    assert total.terms["pixel_l1"].weight == 0.5
    # every view family mirrors as the domain says
    assert compose_train(["aug=affine"], tmp_path).aug.flip == 0.5


def test_guide_groups_bring_the_earlier_recipe_to_stop_41s_guide(tmp_path):
    """docs/guide.md's commands before the recipe changed: experiment=recipe_vit plus the guide groups."""
    base = compose_train(["experiment=recipe_vit", "+guide=[toyfaces_pair,toyfaces_manifold]"], tmp_path)
    assert [c.file for c in base.domain.extra_clips] == ["clip_resnet.pt"]
    assert base.domain.regularizers.manifold.weight == 15.0
    cfg = compose_train(["experiment=guide_flip", "prompt=red_eyes"], tmp_path)
    assert list(cfg.domain.clip_weights) == [0, 1] and len(cfg.domain.extra_clips) == 1
    assert cfg.domain.regularizers.manifold.weight == 15.0 and cfg.domain.regularizers.pixel_l1.weight == 0.5
    assert cfg.domain.latent_l2_weight == 0.8 and cfg.aug.flip == 0.5 and cfg.trainer.max_steps == 800
    assert cfg.prompt.target == "face with red eyes"
    # on the default recipe the pair group changes nothing: lists are replaced, not appended
    assert len(compose_train(["+guide=toyfaces_pair"], tmp_path).domain.extra_clips) == 1


def test_recipe_vit_is_the_earlier_recipe_for_its_tables(tmp_path):
    cfg = compose_train(["experiment=recipe_vit", "prompt=red_eyes"], tmp_path)
    assert len(cfg.domain.extra_clips) == 0 and cfg.aug.flip == 0.0 and cfg.domain.latent_l2_weight == 0.0
    total = instantiate(cfg.loss)
    assert "manifold" not in total.terms and total.terms["pixel_l1"].weight == 1.5
    assert cfg.prompt.target == "face with red eyes"
