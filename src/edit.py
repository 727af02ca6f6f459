"""Edit latents or your own photo with trained mappers.

    python -m src.edit ckpt=outputs/train/<time>/checkpoints/last.ckpt          # the domain's own test latents
    python -m src.edit ckpt=outputs/train/<time>/checkpoints/last.ckpt latents=test_faces.pt
    python -m src.edit ckpt=<run ckpt> image=me.jpg [strength=1.5]
    python -m src.edit ckpt=<multi-prompt run ckpt> text="face with blue lipstick" [prompts='[text,...]']
    python -m src.edit ckpt='[elf.ckpt,lipstick.ckpt]' image=me.jpg latents=me_e4e.pt

Photo path: detect the face and its 5 landmarks (facenet-pytorch MTCNN), align it FFHQ-style
(``src.align``), invert it into W+ (``src.invert``: optimisation with LPIPS + L2 and noise regularisation;
the toyfaces world uses its encoder, then 50 steps of pixel-L2 refinement; or the user's own e4e latents via
``latents=``), then apply each checkpoint's mapper (for each prompt, with the edit step scaled by
``strength``). Writes ``edit_grid.png`` (one row per input: source | aligned | inverted | edited per prompt),
the aligned crops and ``latents.pt`` (source and edited W+ codes, noise maps) into the run dir.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image
from torchvision.utils import make_grid, save_image

from src.builders import build_mapper
from src.data.latents import check_latents
from src.eval import load_run
from src.models.weights import load_checkpoint
from src.photo import align_photo, invert_images, letterbox, to_tensor
from src.text_bank import check_generalises
from src.utils.errors import run_task
from src.utils.loggers import quiet_library_logs

log = logging.getLogger("cfclip")


@dataclass
class Editor:
    """One trained mapper: applies ``w + strength * step_size * mapper(w, text)``."""

    label: str
    mapper: torch.nn.Module
    step_size: float
    use_tem: bool
    targets: list[str]  # the texts the run was trained for (several for a multi-prompt run)

    @torch.no_grad()
    def __call__(self, w: torch.Tensor, text: torch.Tensor | None, strength: float) -> torch.Tensor:
        t = text.to(w.device).expand(w.shape[0], -1) if self.use_tem else None
        return w + strength * self.step_size * self.mapper(w, t)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def _run_config(ckpt_path: str) -> tuple[dict, DictConfig]:
    ckpt = load_checkpoint(ckpt_path, what="run checkpoint")
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hparams or "domain" not in hparams:
        raise ValueError(f"{ckpt_path} is not a cfclip run checkpoint (no stored run config)")
    return ckpt, OmegaConf.create(hparams)


def load_editors(ckpts: list[str], device: torch.device) -> tuple[Any, DictConfig, list[Editor]]:
    """The first run rebuilt with ``src.eval.load_run`` (generator, CLIP); every checkpoint's mapper as an Editor.

    All checkpoints must come from runs of the same domain (their edits share one generator and CLIP).
    """
    module, run_cfg, editors, _ = load_editors_and_data(ckpts, device)
    return module, run_cfg, editors


def load_editors_and_data(
    ckpts: list[str], device: torch.device
) -> tuple[Any, DictConfig, list[Editor], Any]:
    """``load_editors`` plus the first run's datamodule (the domain's own latents)."""
    if not ckpts:
        raise ValueError("give a run checkpoint: ckpt=outputs/train/<time>/checkpoints/last.ckpt")
    module, run_cfg, datamodule = load_run(str(ckpts[0]))
    module.eval().to(device)
    gen, clip = module.generator, module.clip
    editors = [
        Editor(
            run_cfg.prompt.name,
            module.mapper,
            float(run_cfg.model.step_size),
            bool(getattr(module.mapper, "use_tem", True)),
            list(module.texts.targets),
        )
    ]
    domain = same_domain_key(run_cfg)
    for path in ckpts[1:]:
        ckpt, cfg = _run_config(str(path))
        if same_domain_key(cfg) != domain:
            raise ValueError(
                f"{path} was trained on another domain ({cfg.domain.name}) than {ckpts[0]} ({run_cfg.domain.name}); "
                "edit with checkpoints of one domain at a time"
            )
        mapper = build_mapper(cfg, gen, clip, instantiate(cfg.prompt))
        mapper.load_state_dict(
            {k[len("mapper.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("mapper.")}
        )
        mapper.eval().requires_grad_(False).to(device)
        editors.append(
            Editor(
                cfg.prompt.name,
                mapper,
                float(cfg.model.step_size),
                bool(getattr(mapper, "use_tem", True)),
                trained_texts(ckpt, cfg),
            )
        )
    labels = [e.label for e in editors]
    for i, e in enumerate(editors):  # distinct labels for two runs of one prompt
        if labels.count(e.label) > 1:
            e.label = f"{e.label}#{i}"
    return module, run_cfg, editors, datamodule


def same_domain_key(cfg: DictConfig) -> dict:
    """A run's domain for the one-domain check, without the path of its generator file: a converted authors' mapper
    names its own file (src.official) and a run fine-tuned from it names that one; the first checkpoint's generator
    renders every column."""
    domain = OmegaConf.to_container(cfg.domain)
    if isinstance(domain.get("generator"), dict):
        domain["generator"].pop("checkpoint", None)
    return domain


def trained_texts(ckpt: dict, cfg: DictConfig) -> list[str]:
    """The texts a run checkpoint's mapper was trained for (its stored prompt list, else its config's prompt)."""
    if ckpt.get("prompts"):
        return [str(p["target"]) for p in ckpt["prompts"]]
    targets = cfg.prompt.get("targets")
    return [str(t) for t in targets] if targets else [str(cfg.prompt.target)]


@torch.no_grad()
def apply_edits(
    editors: list[Editor], clip: Any, w: torch.Tensor, prompts: list[str], strength: float
) -> dict[str, torch.Tensor]:
    """{label: edited W+ (N, L, D)} for each editor and each of ``prompts`` (default: the texts it was trained
    for). A multi-prompt mapper takes any text; a one-prompt mapper only its own (clear error otherwise)."""
    out: dict[str, torch.Tensor] = {}
    for editor in editors:
        if prompts and not editor.use_tem and any(t not in editor.targets for t in prompts):
            raise ValueError(
                f"checkpoint '{editor.label}' was trained without TEM (model.tem=false): its edit is fixed to "
                f"'{editor.targets[0]}' and cannot take other prompts; drop prompts="
            )
        texts = [
            check_generalises(editor.targets, t, f"checkpoint '{editor.label}'") for t in prompts
        ] or editor.targets
        for text in texts:
            emb = clip.encode_text([text], normalize=False)[0] if editor.use_tem else None
            label = editor.label if not prompts and len(texts) == 1 else f"{editor.label}:{text}"
            out[label] = editor(w, emb, strength)
    return out


def read_latents(path: str, n_latent: int, style_dim: int, num: int | None) -> torch.Tensor:
    """W+ (N, L, D) from a .pt file: a tensor [N, L, D], [L, D] or [N, D], or a dict with 'w' / 'latents'."""
    obj = load_checkpoint(os.path.expanduser(str(path)), what="latents")
    if isinstance(obj, dict):
        obj = obj.get("w", obj.get("latents"))
    if isinstance(obj, torch.Tensor) and obj.ndim == 2 and obj.shape == (n_latent, style_dim):
        obj = obj[None]
    w = check_latents(obj, n_latent, style_dim, str(path))
    if w.ndim == 2:
        w = w[:, None].expand(-1, n_latent, -1)
    return (w[:num] if num else w).contiguous()


def domain_test_latents(datamodule: Any, n_latent: int, num: int | None) -> torch.Tensor:
    """W+ (N, L, D): the first ``num`` of the run's domain test latents (those ``src.eval`` judges), for an edit
    with neither a photo nor a latents file."""
    datamodule.setup("test")
    w = datamodule.splits["test"]
    if w.ndim == 2:  # W (N, D) -> W+ (N, L, D)
        w = w[:, None].expand(-1, n_latent, -1)
    return (w[:num] if num else w).contiguous()


@torch.no_grad()
def render(gen: Any, w: torch.Tensor, noises: list[torch.Tensor] | None, batch: int = 8) -> torch.Tensor:
    out = []
    for i in range(0, w.shape[0], batch):
        nz = [n[i : i + batch] for n in noises] if noises is not None else None
        out.append(gen.synthesis(w[i : i + batch], noise=nz).float().cpu())
    return torch.cat(out)


# ---- the command -------------------------------------------------------------------------------------------
def run_edit(cfg: DictConfig) -> dict[str, Any]:
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if cfg.get("device") == "cuda" and torch.cuda.is_available() else "cpu")
    images, ckpts = [str(p) for p in _as_list(cfg.get("image"))], [str(p) for p in _as_list(cfg.ckpt)]
    prompts = [str(p) for p in _as_list(cfg.get("prompts")) + _as_list(cfg.get("text"))]
    strength = float(cfg.strength)
    module, run_cfg, editors, datamodule = load_editors_and_data(ckpts, device)
    gen, size = module.generator, module.generator.size
    weights_dir = cfg.paths.get("weights_dir")
    columns: list[torch.Tensor] = []  # each (N, 3, S, S) in [-1, 1]
    header: list[str] = []
    noises = None
    if images:
        if cfg.get("landmarks") is not None and len(images) > 1:
            raise ValueError("landmarks= applies to one image; give one image=, or drop landmarks=")
        detector = str(cfg.detector)
        if detector == "auto":
            detector = "none" if run_cfg.domain.get("name") == "toyfaces" else "mtcnn"
        sources, aligned = [], []
        for i, path in enumerate(images):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image not found: {path}")
            img = Image.open(path).convert("RGB")
            crop = align_photo(img, size, detector, cfg.get("landmarks"), str(device))
            crop.save(out_dir / f"aligned_{i}.png")
            sources.append(to_tensor(letterbox(img, size)))
            aligned.append(to_tensor(crop))
        x_aligned = torch.stack(aligned).to(device)
        if cfg.get("latents"):
            w = read_latents(cfg.latents, gen.n_latent, gen.style_dim, None).to(device)
            if w.shape[0] != len(images):
                raise ValueError(
                    f"latents={cfg.latents} holds {w.shape[0]} codes for {len(images)} images; give one per image"
                )
        else:
            w, noises, _ = invert_images(cfg.invert, module, run_cfg, x_aligned, weights_dir)
        columns += [torch.stack(sources), x_aligned.cpu()]
        header += ["source", "aligned"]
    elif cfg.get("latents"):
        w = read_latents(cfg.latents, gen.n_latent, gen.style_dim, cfg.get("num")).to(device)
    else:  # neither a photo nor a latents file: the domain's own test latents
        w = domain_test_latents(datamodule, gen.n_latent, cfg.get("num")).to(device)
    columns.append(render(gen, w, noises))
    header.append("inverted" if images else "source")
    edits = apply_edits(editors, module.clip, w, prompts, strength)
    for label, w_hat in edits.items():
        columns.append(render(gen, w_hat, noises))
        header.append(label)
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # (N * C, 3, S, S), row-major per input
    grid_path = out_dir / "edit_grid.png"
    save_image(
        make_grid(grid.clamp(-1, 1).add(1).div(2), nrow=len(columns), padding=2, pad_value=1.0), grid_path
    )
    latents_path = out_dir / "latents.pt"
    torch.save(
        {
            "w": w.cpu(),
            "edits": {k: v.cpu() for k, v in edits.items()},
            "noises": [n.cpu() for n in noises] if noises is not None else None,
            "columns": header,
            "strength": strength,
            "images": images,
            "ckpts": ckpts,
        },
        latents_path,
    )
    result = {"grid": str(grid_path), "latents": str(latents_path), "columns": header, "n": int(w.shape[0])}
    log.info("edit grid (%s): %s", " | ".join(header), grid_path)
    print(json.dumps(result, indent=2))
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="edit")
def main(cfg: DictConfig) -> None:
    quiet_library_logs()
    run_task(run_edit, cfg, output_dir=cfg.paths.output_dir)


if __name__ == "__main__":
    main()
