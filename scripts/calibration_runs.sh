#!/usr/bin/env bash
# Short mapper runs whose edits calibrate the toyfaces oracle (build stage `calibrate`, src/toyworld/judge/calibration.py):
# every counterfactual value x (loss, augmentation) pairs, 150 steps, a checkpoint every 50. Runs 0-7 and the
# EXTRA runs (16 on) go to <work>/calibration_runs/fit (the oracle is fine-tuned on their edits of train faces);
# runs 8-15 and two default-recipe runs (elf ears, "face with blue lipstick", 400 steps, a checkpoint every 100) go
# to .../heldout (the oracle's agreement with the region rule is measured on their edits of test faces).
# For each value the fitting runs use other (loss, augmentation) pairs than its held-out run. Resumable: finished
# runs are skipped. ~2 min per 150-step run on one core.
# Usage: [ASSETS=<asset dir>] [EXTRA=0] scripts/calibration_runs.sh [work dir, default build/toyfaces]
# ASSETS: the generator/CLIP the runs train on (default: the shipped assets); in a fresh build, a provisional
# export of the new generator (python -m src.toyworld.build --stages latents,export --out <dir>).
# DRY_RUN=1: print the plan (one line per run still to do) and train nothing.
# SHARD=k/n: do only every n-th run, from the k-th (0-based); start n processes, k = 0..n-1, to use n cores.
# EXTRA: fitting runs per value beyond the first (0-3; default 0: 8 fitting runs and 10 held out; EXTRA=3, the
# shipped calibration: 8 + 24 fitting runs, every value fitted on 4 (loss, augmentation) pairs).
# RECIPE=1: also one default-recipe fitting run per value (seed 2000 + value, 400 steps, a checkpoint every 100;
# .../fit/recipe_<attribute>_<value>), the kind of edit the judge mostly judges. Default 0.
# FOCUS="lip_color:blue lip_color:black": those values also get a fitting run on every (loss, augmentation) pair
# not yet used for them but their held-out run's (EXTRA=3: 7 more each; seed 3000 + 12 v + pair, 150 steps;
# .../fit/focus_<attribute>_<value>_p<pair>): more varied edits where the oracle agrees least with the rule.
set -euo pipefail
WORK=${1:-build/toyfaces}
EXTRA=${EXTRA:-0}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 WANDB_MODE=offline
VALS=("ears pointed|face with elf ears" "eyebrow_color purple|face with purple eyebrows"
  "lip_color green|face with green lipstick" "lip_color blue|face with blue lipstick"
  "lip_color black|face with black lipstick" "iris_color red|face with red eyes" "skin_tone blue|face with blue skin"
  "style neon|face with cyberpunk style")
LOSSES=(clip_nce directional global)
AUGS=(perspective affine crop none)
RECIPE=${RECIPE:-0}
FOCUS=${FOCUS:-}
[[ "$EXTRA" =~ ^[0-3]$ ]] || { echo "EXTRA must be 0-3, got $EXTRA" >&2; exit 2; }
[[ "$RECIPE" =~ ^[01]$ ]] || { echo "RECIPE must be 0 or 1, got $RECIPE" >&2; exit 2; }
SHARD=${SHARD:-0/1}
[[ "$SHARD" =~ ^([0-9]+)/([1-9][0-9]*)$ ]] && [ "${BASH_REMATCH[1]}" -lt "${BASH_REMATCH[2]}" ] || {
  echo "SHARD must be k/n with 0 <= k < n, got $SHARD" >&2; exit 2; }
SHARD_K=${BASH_REMATCH[1]} SHARD_N=${BASH_REMATCH[2]} RUN_INDEX=-1
SHIFTS=(0 5 9 1 2 3 4 6 7 10 11)  # (loss, aug) pair of value v's k-th fitting run: (v + SHIFTS[k]) mod 12; held out: v + 8

# one_run OUT SEED STEPS EVERY TEXT ATTR VAL [overrides...]
one_run() {
  local out=$1 seed=$2 steps=$3 every=$4 text=$5 attr=$6 val=$7
  shift 7
  RUN_INDEX=$((RUN_INDEX + 1))
  [ $((RUN_INDEX % SHARD_N)) -eq "$SHARD_K" ] || return 0
  [ -f "$out/checkpoints/last.ckpt" ] && return 0
  if [ -n "${DRY_RUN:-}" ]; then echo "plan $out $attr:$val seed=$seed steps=$steps $*"; return 0; fi
  rm -rf "$out"; mkdir -p "$(dirname "$out")"
  echo "$(date +%T) calibration run $out: $attr:$val $*"
  $PY -m src.train experiment=toyfaces prompt=custom "prompt.target=$text" "+domain.edits.custom=[$attr,$val]" \
    ${ASSETS:+"domain.asset_dir=$ASSETS"} seed="$seed" trainer.max_steps="$steps" eval_after_fit=false logger=csv \
    callbacks.oracle_curve.evaluator=null callbacks.image_grid.every_n_steps=1000 \
    callbacks.model_checkpoint.every_n_train_steps="$every" "$@" hydra.run.dir="$out" > "$out.log" 2>&1 || {
    echo "run $out failed: see $out.log"; exit 1; }
}

# value_spec V: the text, attribute and value of VALS[V] into $text $attr $val
value_spec() { local spec=${VALS[$1]} av; text=${spec#*|}; av=${spec%|*}; attr=${av% *}; val=${av#* }; }

for i in $(seq 0 $((16 + 8 * EXTRA - 1))); do
  v=$((i % 8)); value_spec "$v"
  if [ "$i" -lt 8 ]; then c=$v; part=fit
  elif [ "$i" -lt 16 ]; then c=$(((v + 8) % 12)); part=heldout
  else c=$(((v + SHIFTS[(i - 8) / 8]) % 12)); part=fit; fi
  one_run "$WORK/calibration_runs/$part/run$(printf %02d "$i")" $((1000 + i)) 150 50 "$text" "$attr" "$val" \
    loss="${LOSSES[$((c % 3))]}" aug="${AUGS[$((c / 3))]}"
done
# the default recipe's own edits (what the judge mostly judges), held out
one_run "$WORK/calibration_runs/heldout/recipe_elf_ears" 42 400 100 "face with elf ears" ears pointed
one_run "$WORK/calibration_runs/heldout/recipe_blue_lipstick" 42 400 100 "face with blue lipstick" lip_color blue
if [ "$RECIPE" = 1 ]; then
  for v in $(seq 0 7); do
    value_spec "$v"
    one_run "$WORK/calibration_runs/fit/recipe_${attr}_$val" $((2000 + v)) 400 100 "$text" "$attr" "$val"
  done
fi
for spec in $FOCUS; do
  v=-1
  for j in $(seq 0 7); do [ "${VALS[$j]%%|*}" = "${spec/:/ }" ] && v=$j; done
  [ "$v" -ge 0 ] || { echo "FOCUS: unknown value $spec (attribute:value, one of the counterfactual values)" >&2; exit 2; }
  value_spec "$v"
  for k in $(seq $((1 + EXTRA)) 10); do
    c=$(((v + SHIFTS[k]) % 12))
    one_run "$WORK/calibration_runs/fit/focus_${attr}_${val}_p$(printf %02d "$c")" $((3000 + 12 * v + c)) 150 50 \
      "$text" "$attr" "$val" loss="${LOSSES[$((c % 3))]}" aug="${AUGS[$((c / 3))]}"
  done
done
