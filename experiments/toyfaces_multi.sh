#!/usr/bin/env bash
# One mapper for six toyfaces prompts (experiment=toyfaces_multi) against one mapper per prompt (issue 16):
# seeds x {800 steps (2x one single-prompt run), 2400 steps (the six single-prompt runs' compute)}, one job after
# another on the whole machine (their wall times are compared), plus one single-prompt run timed the same way.
# Each multi job evaluates its 6 trained prompts, 2 held-out lipstick colours and 2 composed prompts.
#
#   bash experiments/toyfaces_multi.sh                      # SEEDS=0,1,2 STEPS="800 2400"
#   SEEDS=0 STEPS=800 bash experiments/toyfaces_multi.sh    # one multi job (and the single-prompt timing)
#   SWEEP_ROOT=multirun/toyfaces_multi/<time> SEEDS=0 STEPS=2400 bash ...   # add jobs to a study
#   VARIANTS="multi wide" STEPS=2400 bash ...   # also experiment=toyfaces_multi_wide (11 texts), dirs wide_steps<N>
#
# Runs: multirun/toyfaces_multi/<time>/[<variant>_]steps<N>/seed<S> (SWEEP_ROOT=...); a finished job (eval/eval.json) is
# skipped, so the script resumes. Table: experiments/results/toyfaces_multi/ (OUT=...), against the per-prompt
# runs of experiments/results/toyfaces_prompts/runs.csv (PER_PROMPT=...).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
SEEDS=${SEEDS:-0,1,2}
STEPS=${STEPS:-800 2400}
VARIANTS=${VARIANTS:-multi}
ROOT=${SWEEP_ROOT:-multirun/toyfaces_multi/$STAMP}
OUT=${OUT:-experiments/results/toyfaces_multi}
PER_PROMPT=${PER_PROMPT:-experiments/results/toyfaces_prompts/runs.csv}
mkdir -p "$ROOT"
timed() {  # timed DIR overrides...: one training run into DIR, its wall time appended to $ROOT/times.csv
  local dir=$1
  shift
  mkdir -p "$(dirname "$dir")"
  if [[ -f "$dir/eval/eval.json" ]]; then echo "== done already: $dir"; return; fi
  echo "== $dir: $PYTHON -m src.train $* ${EXTRA[*]}"
  local t0=$SECONDS
  "$PYTHON" -m src.train "$@" logger=csv "${EXTRA[@]}" "hydra.run.dir=$dir" >"$dir.log" 2>&1
  echo "$dir,$((SECONDS - t0))" >>"$ROOT/times.csv"
}
for variant in $VARIANTS; do
  exp=toyfaces_multi prefix=""
  if [[ $variant != multi ]]; then exp=toyfaces_multi_$variant prefix=${variant}_; fi
  for steps in $STEPS; do
    for seed in ${SEEDS//,/ }; do
      timed "$ROOT/${prefix}steps$steps/seed$seed" "experiment=$exp" "trainer.max_steps=$steps" "seed=$seed"
    done
  done
done
timed "$ROOT/single/seed0" experiment=toyfaces prompt=green_lipstick seed=0
"$PYTHON" -m src.report_multi "$ROOT" --per-prompt "$PER_PROMPT" --out "$OUT"
