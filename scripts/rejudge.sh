#!/usr/bin/env bash
# Re-judge finished runs with the shipped toyfaces judge (same checkpoints, new oracle/ceilings): for every
# <root>/**/checkpoints/last.ckpt, keep the previous <job>/eval/eval.json as eval_<TAG>.json and run src.eval into
# <job>/eval (a multi-prompt run: its trained texts and its eval_prompts, as its final evaluation judged them).
# Resumable (a job whose eval/.rejudged-<TAG> exists is skipped); SHARD=k/n runs every n-th job.
#
#   TAG=v4 SHARD=0/2 bash scripts/rejudge.sh multirun/ablation_toyfaces multirun/toyfaces_prompts
set -euo pipefail
TAG=${TAG:?name the judge being replaced, e.g. TAG=v4}
SHARD=${SHARD:-0/1}
k=${SHARD%/*}
n=${SHARD#*/}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
i=0
for ckpt in $(find "$@" -path '*/checkpoints/last.ckpt' | sort); do
  job=$(dirname "$(dirname "$ckpt")")
  if (( i++ % n != k )) || [[ -e "$job/eval/.rejudged-$TAG" ]]; then continue; fi
  mkdir -p "$job/eval"
  [[ -f "$job/eval/eval.json" && ! -f "$job/eval/eval_$TAG.json" ]] && cp "$job/eval/eval.json" "$job/eval/eval_$TAG.json"
  echo "[rejudge] $job"
  "$PYTHON" -m src.eval ckpt="$ckpt" hydra.run.dir="$job/eval" > "$job/eval/rejudge.log" 2>&1 || { echo "[rejudge] FAILED $job (see $job/eval/rejudge.log)"; continue; }
  touch "$job/eval/.rejudged-$TAG"
done
