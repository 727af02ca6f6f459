# Shared by the study scripts: the python to use, the launcher, a time stamp. Source it, don't run it.
# MODE (first argument of a study script): local (default: one job after another on this machine) or slurm
# (hydra/launcher=slurm, conf/hydra/launcher/slurm.yaml: one SLURM job per Hydra job, GPU trainer).
# JOBS=N (local only): run up to N of the study's sweeps at once, one CPU thread each (JOBS=2 on 2 cores).
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
MODE=${1:-local}
case "$MODE" in
  local) LAUNCH=() ;;
  slurm) LAUNCH=(hydra/launcher=slurm trainer=gpu) ;;
  -h|--help|help) sed -n '2,/^set -/p' "$SCRIPT" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: bash $SCRIPT [local|slurm] [hydra overrides for every job...]" >&2; exit 2 ;;
esac
shift || true
EXTRA=("$@")
STAMP=$(date +%Y-%m-%d_%H-%M-%S)
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
JOBS=${JOBS:-1}
if [[ "$MODE" == local && "$JOBS" -gt 1 ]]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # N single-thread sweeps beat N sweeps fighting for threads
fi

# run_sweep NAME DIR overrides...: one Hydra multirun into DIR (in the background under slurm or JOBS > 1)
PIDS=()
run_sweep() {
  local name=$1 dir=$2
  shift 2
  echo "== $name: $PYTHON -m src.train -m $* ${LAUNCH[*]} ${EXTRA[*]} hydra.sweep.dir=$dir"
  if [[ "$MODE" == slurm ]]; then
    "$PYTHON" -m src.train -m "$@" "${LAUNCH[@]}" "${EXTRA[@]}" "hydra.sweep.dir=$dir" &
    PIDS+=($!)
  elif [[ "$JOBS" -gt 1 ]]; then
    while [[ $(jobs -rp | wc -l) -ge "$JOBS" ]]; do sleep 5; done
    mkdir -p "$(dirname "$dir")"
    "$PYTHON" -m src.train -m "$@" "${EXTRA[@]}" "hydra.sweep.dir=$dir" >"$dir.log" 2>&1 &
    PIDS+=($!)
    echo "   (in the background, log: $dir.log)"
  else
    "$PYTHON" -m src.train -m "$@" "${EXTRA[@]}" "hydra.sweep.dir=$dir"
  fi
}
wait_sweeps() {
  local pid status=0
  for pid in "${PIDS[@]}"; do wait "$pid" || status=$?; done
  return $status
}
