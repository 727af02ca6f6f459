#!/usr/bin/env bash
# Optuna search of the default recipe on toyfaces (conf/hparams_search/toyfaces_optuna.yaml), one prompt:
# maximises the oracle's edit accuracy above a preservation floor (optimized_metric). N_TRIALS=30 by default.
#
#   bash experiments/hparams_toyfaces.sh [local|slurm] [overrides...]
#   PROMPT=red_eyes N_TRIALS=60 bash experiments/hparams_toyfaces.sh local trainer.max_steps=500
#
# Sweep: multirun/hparams_toyfaces/<time> (best parameters in optimization_results.yaml);
# report of every trial: experiments/results/hparams_toyfaces_<prompt>/ (OUT=...).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
PROMPT=${PROMPT:-elf_ears}
ROOT=${SWEEP_ROOT:-multirun/hparams_toyfaces/$STAMP}
OUT=${OUT:-experiments/results/hparams_toyfaces_$PROMPT}
run_sweep optuna "$ROOT" hparams_search=toyfaces_optuna "prompt=$PROMPT" "hydra.sweeper.n_trials=${N_TRIALS:-30}"
wait_sweeps
cat "$ROOT/optimization_results.yaml"
"$PYTHON" -m src.report "$ROOT" --out "$OUT"
