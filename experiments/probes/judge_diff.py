"""Probe: the faces on which two toyfaces judges (asset dirs that differ in their oracle) give different faithful
verdicts on a run's 64 test edits, shown enlarged: source | reconstruction | edit | ideal per row.

Usage: python experiments/probes/judge_diff.py <old asset dir> <out.png> <run>/checkpoints/last.ckpt [...]
(the new judge is the shipped one). Evaluation only: nothing here trains anything.
"""

import sys

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from kway_faithful import judged_run  # the sibling probe (this folder is on sys.path when run as a script)
from torchvision.utils import save_image

from src.evaluation.toyfaces import ideal_edits


def main() -> None:
    torch.set_num_threads(1)
    old_dir, out, ckpts = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = []
    for ckpt in ckpts:
        cfg, x, x_hat, new, m_new = judged_run(ckpt)
        cfg.domain.evaluator.asset_dir = old_dir
        old = instantiate(cfg.domain.evaluator)
        m_old = old(x.float(), x_hat.float(), cfg.prompt.name)
        f_new, f_old = new.last["faithful"], old.last["faithful"]
        attribute, value = m_new["target"].split(":")
        attrs, seeds = new.scenes(x.shape[0])
        _, _, source = ideal_edits(attrs, seeds, attribute, value)
        gained = torch.nonzero(f_new & ~f_old).flatten().tolist()
        lost = torch.nonzero(~f_new & f_old).flatten().tolist()
        print(
            f"{ckpt}: faithful old {m_old['faithful_rate']:.3f} new {m_new['faithful_rate']:.3f}; "
            f"new passes {gained}, new fails {lost}",
            flush=True,
        )
        for i in gained + lost:
            rows.append(torch.stack([source[i], x[i].float(), x_hat[i].float(), new.last["ideal"][i]]))
    if rows:
        grid = torch.stack(rows).flatten(0, 1)  # (4R, 3, H, W)
        grid = F.interpolate((grid + 1) / 2, scale_factor=4, mode="nearest").clamp(0, 1)
        save_image(grid, out, nrow=4, padding=2, pad_value=1.0)
        print("grid:", out)


if __name__ == "__main__":
    main()
