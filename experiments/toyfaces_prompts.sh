#!/usr/bin/env bash
# The main toyfaces result: the default recipe on every prompt the oracle judges (6) x 3 seeds = 18 jobs.
#
#   bash experiments/toyfaces_prompts.sh [local|slurm] [overrides for every job...]
#   SEEDS=0 bash experiments/toyfaces_prompts.sh
#
# Sweep: multirun/toyfaces_prompts/<time>; report: experiments/results/toyfaces_prompts/ (OUT=...).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
SEEDS=${SEEDS:-0,1,2}
ROOT=${SWEEP_ROOT:-multirun/toyfaces_prompts/$STAMP}
OUT=${OUT:-experiments/results/toyfaces_prompts}
run_sweep prompts "$ROOT" experiment=toyfaces_prompts "seed=$SEEDS" ${PROMPTS:+"prompt=$PROMPTS"}
wait_sweeps
"$PYTHON" -m src.report "$ROOT" --out "$OUT"
