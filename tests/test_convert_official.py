"""The authors' mapper files (CF-CLIP, StyleCLIP) as run checkpoints and back (``python -m src.convert``).

Files are built from their key layout with seeded random values (tests/official_fakes.py): CF-CLIP at 1024
(18 style layers), CF-CLIP at 512 with w_space (16 layers), StyleCLIP at 1024 with no_medium_mapper. w_hat must
match their formula within 1e-5 and the render with the file's decoder within 1e-4; src.edit (latents and a
photo), src.eval and src.train ckpt_path= take the converted run; ours -> theirs -> ours gives identical edits.
The runs use the tiny domain with a 512-d random CLIP (no weight files).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from src.convert import main
from src.eval import load_run, run_eval
from tests.conftest import CONF, FAST, compose_train
from tests.official_fakes import fake_official, reference_render, reference_w_hat

NO_WEIGHTS = ["domain=tiny", "domain.clip.model_config=tiny512"]
CASES = {
    "cfclip-1024": dict(kind="cfclip", size=1024),
    "cfclip-512-w_space": dict(kind="cfclip", size=512, w_space=True),
    "styleclip-1024-no_medium": dict(kind="styleclip", size=1024, off=("medium",)),
}
# a 512 px fine-tune in seconds: no views, no validation pass, no image grid
QUICK = [
    "aug=none",
    "loss=global",
    "data.batch_size=1",
    "trainer.limit_val_batches=0",
    "callbacks.image_grid=null",
]
MAX_ERR: dict[str, dict[str, float]] = {}  # printed at the end of the module (pytest -s) for the report


class Converted:
    """One case: the authors' file (dict and path), the converted run checkpoint, the run loaded lazily."""

    def __init__(self, root: Path, name: str):
        self.name, self.file = name, fake_official(**CASES[name])
        self.theirs, self.ckpt = root / f"{name}.pt", root / f"{name}.ckpt"
        torch.save(self.file, self.theirs)
        assert main([str(self.theirs), str(self.ckpt), *NO_WEIGHTS]) == 0
        self._run = None

    @property
    def run(self):
        if self._run is None:
            module, cfg, dm = load_run(str(self.ckpt))
            self._run = (module.eval(), cfg, dm)
        return self._run

    def latents(self, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(their input: W (n, 512) with w_space, else W+, ours: W+ (n, L, 512))."""
        module = self.run[0]
        g = torch.Generator().manual_seed(seed)
        L = module.generator.n_latent
        if self.file["opts"].get("w_space"):
            w = torch.randn(n, 512, generator=g)
            return w, w[:, None].expand(-1, L, -1)
        w = torch.randn(n, L, 512, generator=g)
        return w, w


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    made: dict[str, Converted] = {}

    def get(name: str) -> Converted:
        if name not in made:
            made[name] = Converted(root, name)
        return made[name]

    yield get
    for name, errs in sorted(MAX_ERR.items()):
        print(f"\n{name}: " + ", ".join(f"{k} max error {v:.3g}" for k, v in errs.items()))


@pytest.mark.parametrize("name", list(CASES))
def test_converted_run_checkpoint(cases, name):
    case = cases(name)
    ckpt = torch.load(case.ckpt, weights_only=True)
    cfg, spec = ckpt["hyper_parameters"], CASES[name]
    assert ckpt["source"]["format"] == f"{spec['kind']}-mapper" and ckpt["global_step"] == 0
    assert cfg["prompt"]["target"] == "face with green lipstick"
    assert cfg["model"]["tem"] is (spec["kind"] == "cfclip")
    assert cfg["model"]["mapper"]["pixelnorm_axis"] == "layer" and cfg["model"]["step_size"] == 0.1
    assert [cfg["model"]["mapper"][g] for g in ("coarse", "medium", "fine")] == [
        g not in spec.get("off", ()) for g in ("coarse", "medium", "fine")
    ]
    gen = cfg["domain"]["generator"]
    assert (gen["size"], gen["style_dim"], gen["n_mlp"], gen["channel_max"]) == (spec["size"], 512, 8, 4)
    decoder = {k[8:]: v for k, v in case.file["state_dict"].items() if k.startswith("decoder.")}
    assert ckpt["g_ema"].keys() == decoder.keys()
    assert all(torch.equal(ckpt["g_ema"][k], v) for k, v in decoder.items())  # incl. noises.noise_*


@pytest.mark.parametrize("name", list(CASES))
def test_w_hat_and_render_match_the_authors_formula(cases, name):
    case = cases(name)
    module = case.run[0]
    w_theirs, w = case.latents()
    t = module.texts.embeddings[0] if module.mapper.use_tem else None
    if t is not None:  # the TEM input is the raw CLIP text embedding of opts.description
        raw = module.clip.encode_text(["face with green lipstick"], normalize=False)[0]
        assert torch.equal(t, raw)
    ref = reference_w_hat(case.file, w_theirs, t)
    with torch.no_grad():
        ours = module.edit(w)
        x = module.generator.synthesis(ours[:1])
    assert (ref - w).abs().max() > 0.1  # a real edit
    err_w = (ours - ref).abs().max().item()
    x_ref = reference_render(case.file, ref[:1])
    err_x = (x - x_ref).abs().max().item()
    MAX_ERR[name] = {"w_hat": err_w, "render": err_x}
    assert x_ref.abs().max() > 0.5 and err_w < 1e-5 and err_x < 1e-4


def test_a_dropped_bias_would_show(cases):
    """The fakes' biases are large enough that losing one moves w_hat far beyond the tolerance."""
    case = cases("cfclip-512-w_space")
    module = case.run[0]
    w_theirs, _ = case.latents()
    t = module.texts.embeddings[0]
    ref = reference_w_hat(case.file, w_theirs, t)
    for key in (
        "mapper.fc.bias",
        "mapper.fine_mapping.mapping.4.bias",
        "text_mapper.mapper_3.mapping.2.bias",
    ):
        sd = dict(case.file["state_dict"], **{key: torch.zeros(512)})
        assert (reference_w_hat({**case.file, "state_dict": sd}, w_theirs, t) - ref).abs().max() > 1e-3, key


@pytest.mark.parametrize("name", ["cfclip-512-w_space", "styleclip-1024-no_medium"])
def test_to_official_and_back_is_the_same_file(cases, name, tmp_path):
    case = cases(name)
    out = tmp_path / "theirs.pt"
    assert main(["--to", "official", str(case.ckpt), str(out)]) == 0
    back = torch.load(out, weights_only=True)
    sd = case.file["state_dict"]
    assert back["state_dict"].keys() == sd.keys()  # their strict load: every key, nothing else
    assert all(torch.equal(back["state_dict"][k], v) for k, v in sd.items())
    opts = back["opts"]
    assert opts["description"] == "face with green lipstick" and opts["mapper_type"] == "LevelsMapper"
    assert opts["stylegan_size"] == CASES[name]["size"] and opts["work_in_stylespace"] is False
    assert [opts[f"no_{g}_mapper"] for g in ("coarse", "medium", "fine")] == [
        g in CASES[name].get("off", ()) for g in ("coarse", "medium", "fine")
    ]


def task_cfg(config_name: str, out: Path, *overrides: str):
    """conf/<config_name>.yaml (edit, eval) composed as its command would, writing under ``out``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def test_edit_latents_and_photo_and_eval(cases, tmp_path):
    from src.edit import run_edit

    case = cases("cfclip-512-w_space")
    w_theirs, _ = case.latents(n=2)
    torch.save(w_theirs, tmp_path / "w.pt")  # W (N, 512), as their w_space latents
    run_edit(task_cfg("edit", tmp_path / "a", f"ckpt={case.ckpt}", f"latents={tmp_path / 'w.pt'}"))
    saved = torch.load(tmp_path / "a" / "latents.pt", weights_only=True)
    (w_hat,) = saved["edits"].values()
    t = case.run[0].texts.embeddings[0]
    assert (w_hat - reference_w_hat(case.file, w_theirs, t)).abs().max() < 1e-5

    img = tmp_path / "a" / "edit_grid.png"  # any picture: the photo path aligns, inverts and edits it
    photo = ["detector=none", "invert.steps=2", "invert.lpips_weight=0", "invert.progress=false"]
    result = run_edit(task_cfg("edit", tmp_path / "b", f"ckpt={case.ckpt}", f"image={img}", *photo))
    assert result["columns"] == ["source", "aligned", "inverted", "face_with_green_lipstick"]

    metrics = run_eval(task_cfg("eval", tmp_path / "c", f"ckpt={case.ckpt}", "num_test=2", "grid_images=2"))
    assert metrics["n"] == 2 and metrics["target_text"] == "face with green lipstick"
    assert math.isfinite(metrics["clip_directional"]) and metrics["pixel_l1_change"] > 0


def test_finetune_then_export_round_trip(cases, tmp_path):
    """src.train ckpt_path=<converted> with the overrides the converter prints: a fresh optimizer from step 0;
    the fine-tuned mapper -> their format -> a run again edits identically."""
    from src.train import train

    case = cases("cfclip-512-w_space")
    tune = torch.load(case.ckpt, weights_only=True)["source"]["finetune"]
    out = tmp_path / "run"
    train(compose_train([*FAST, *tune, *QUICK, f"ckpt_path={case.ckpt}"], out))
    last = out / "checkpoints" / "last.ckpt"
    tuned = torch.load(last, weights_only=True)
    before = torch.load(case.ckpt, weights_only=True)["state_dict"]
    assert tuned["global_step"] == 2
    assert any(not torch.equal(tuned["state_dict"][k], v) for k, v in before.items())  # it trained

    theirs, back = tmp_path / "theirs.pt", tmp_path / "back.ckpt"
    assert main(["--to", "official", str(last), str(theirs)]) == 0
    assert torch.load(theirs, weights_only=True)["state_dict"].keys() == case.file["state_dict"].keys()
    assert main([str(theirs), str(back), *NO_WEIGHTS]) == 0
    m1, m2 = load_run(str(last))[0].eval(), load_run(str(back))[0].eval()
    _, w = case.latents()
    with torch.no_grad():
        assert torch.equal(m1.edit(w), m2.edit(w))
        assert torch.equal(m1.generator.synthesis(w[:1]), m2.generator.synthesis(w[:1]))

    # the authors' mapper beside the one trained here, on the same latents (docs/experiments.md)
    from src.edit import run_edit

    w_theirs, _ = case.latents(n=2)
    torch.save(w_theirs, tmp_path / "w.pt")
    edit = task_cfg("edit", tmp_path / "side", f"ckpt=[{case.ckpt},{last}]", f"latents={tmp_path / 'w.pt'}")
    result = run_edit(edit)
    assert result["columns"] == ["source", "face_with_green_lipstick#0", "face_with_green_lipstick#1"]
    edits = torch.load(tmp_path / "side" / "latents.pt", weights_only=True)["edits"]
    t = case.run[0].texts.embeddings[0]
    ref = reference_w_hat(case.file, w_theirs, t)
    assert (edits["face_with_green_lipstick#0"] - ref).abs().max() < 1e-5
    assert (
        edits["face_with_green_lipstick#1"] - ref
    ).abs().max() > 1e-4  # the fine-tuned mapper edits otherwise
