#!/usr/bin/env bash
# Short mapper runs whose edits calibrate the toyfaces oracle (build stage `calibrate`, src/toyworld/calibration.py):
# every counterfactual value x two (loss, augmentation) pairs, 150 steps, a checkpoint every 50. Runs 0-7 go to
# <work>/calibration_runs/fit (the oracle is fine-tuned on their edits of train faces), runs 8-15 to .../heldout
# (the oracle's agreement with the region rule is measured on their edits of test faces). Resumable: finished
# runs are skipped. ~2 min per run on one core.
# Usage: [ASSETS=<asset dir>] scripts/calibration_runs.sh [work dir, default build/toyfaces]
# ASSETS: the generator/CLIP the runs train on (default: the shipped assets); in a fresh build, a provisional
# export of the new generator (python -m src.toyworld.build --stages latents,export --out <dir>).
set -euo pipefail
WORK=${1:-build/toyfaces}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 WANDB_MODE=offline
VALS=("ears pointed|face with elf ears" "eyebrow_color purple|face with purple eyebrows"
  "lip_color green|face with green lipstick" "lip_color blue|face with blue lipstick"
  "lip_color black|face with black lipstick" "iris_color red|face with red eyes" "skin_tone blue|face with blue skin"
  "style neon|face with cyberpunk style")
LOSSES=(clip_nce directional global)
AUGS=(perspective affine crop none)
for i in $(seq 0 15); do
  v=${VALS[$((i % 8))]}; text=${v#*|}; av=${v%|*}; attr=${av% *}; val=${av#* }
  c=$((i % 12)); loss=${LOSSES[$((c % 3))]}; aug=${AUGS[$((c / 3))]}
  part=$([ "$i" -lt 8 ] && echo fit || echo heldout)
  out=$WORK/calibration_runs/$part/run$(printf %02d "$i")
  [ -f "$out/checkpoints/last.ckpt" ] && continue
  rm -rf "$out"; mkdir -p "$(dirname "$out")"
  echo "$(date +%T) calibration run $i ($part): $attr:$val, loss=$loss aug=$aug"
  $PY -m src.train experiment=toyfaces prompt=custom "prompt.target=$text" "+domain.edits.custom=[$attr,$val]" \
    ${ASSETS:+"domain.asset_dir=$ASSETS"} loss="$loss" aug="$aug" seed=$((1000 + i)) trainer.max_steps=150 eval_after_fit=false logger=csv \
    callbacks.oracle_curve.evaluator=null callbacks.image_grid.every_n_steps=1000 \
    callbacks.model_checkpoint.every_n_train_steps=50 hydra.run.dir="$out" > "$out.log" 2>&1 || {
    echo "run $i failed: see $out.log"; exit 1; }
done
