#!/usr/bin/env bash
# The paper's ablation on toyfaces, around the full method (CLIP-NCE + perspective views + TEM):
# 8 configurations (clip_nce / directional / global; perspective / affine / crop / none; TEM on / off; identity
# term on / off, the full method counted once) x 3 prompts x 3 seeds = 72 jobs, then the report (tables, CSV,
# plots, paper claims).
#
#   bash experiments/ablation_toyfaces.sh                          # locally, one job after another
#   bash experiments/ablation_toyfaces.sh slurm                    # on SLURM (hydra/launcher=slurm trainer=gpu)
#   bash experiments/ablation_toyfaces.sh local trainer.max_steps=300 logger=csv   # overrides for every job
#   SEEDS=0 PROMPTS=elf_ears bash experiments/ablation_toyfaces.sh # a smaller study (8 jobs)
#   JOBS=2 bash experiments/ablation_toyfaces.sh                   # two sweeps at once (2 cores, 1 thread each)
#
# Sweeps: multirun/ablation_toyfaces/<time>/{loss,aug,tem}/<job> (SWEEP_ROOT=... to change); W&B group
# ablation_toyfaces/<time>; report: experiments/results/ablation_toyfaces/ (OUT=... to change).
# Failed jobs do not stop the sweep: they leave error.json and are listed in the report.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
SEEDS=${SEEDS:-0,1,2}
PROMPTS=${PROMPTS:-elf_ears,purple_eyebrows,green_lipstick}
ROOT=${SWEEP_ROOT:-multirun/ablation_toyfaces/$STAMP}
OUT=${OUT:-experiments/results/ablation_toyfaces}
export WANDB_RUN_GROUP=${WANDB_RUN_GROUP:-ablation_toyfaces/$STAMP}
axes=("seed=$SEEDS" "prompt=$PROMPTS")

run_sweep loss "$ROOT/loss" experiment=ablation_loss "${axes[@]}"                     # incl. the full method
run_sweep aug "$ROOT/aug" experiment=ablation_aug aug=affine,crop,none "${axes[@]}"
run_sweep tem "$ROOT/tem" experiment=ablation_tem model=no_tem "${axes[@]}"
run_sweep identity "$ROOT/identity" experiment=ablation_loss loss=clip_nce domain.regularizers.identity.weight=0.0 "${axes[@]}"
wait_sweeps
"$PYTHON" -m src.report "$ROOT" --out "$OUT"
