#!/usr/bin/env bash
# GPU check, a few minutes on one CUDA machine with no network:
#   1. installs the Python packages that machine lacks from wheels carried in ./wheels (git-ignored),
#   2. runs the GPU-marked tests (pytest -m gpu: Lightning trainer=gpu in bf16, edits on the GPU, the
#      1024 px generator in bf16),
#   3. runs the benchmark on the full-size FFHQ-1024 + ViT-B/32 random-weight set-up in bf16, paper loss (CLIP-NCE +
#      latent L2 + IR-SE50 identity), warm source cache: step / core at batch 2 and the official pattern,
#   4. the same step captured whole (graph=true: torch.compile reduce-overhead, CUDA graphs),
#   5. time per sample at batch 2, 8 and 32 in bf16 and fp32 (SWEEP_GRAPH=true|false), and writes sweep.md: step /
#      core, ms per sample and the paper's 50k-step run projected in hours (at batch 2) for docs/performance.md.
# Logs and the benchmark JSON go to $OUT (the device tool's result folder) or outputs/gpu_check.
#
# Usage:
#   scripts/gpu_check.sh               # on the GPU machine (torch with CUDA must be installed there)
#   scripts/gpu_check.sh --download    # where there is network: fill ./wheels (git-ignored) with the packages a bare
#                                      # CUDA image lacks, as Python 3.12 x86-64 wheels; carry wheels/ there
#   PY_VERSION=3.11 scripts/gpu_check.sh --download   # for another Python on the GPU machine
# Environment: PYTHON (default python3), GPU_CHECK_TIMEOUT (seconds per stage, default 300),
#   BENCH_ARGS (default "preset=ffhq1024 device=cuda precision=bf16 regularizers=true"),
#   STAGES (default "tests bench graph sweep"), SWEEP_BATCHES (default "2 8 32"),
#   SWEEP_PRECISIONS (default "bf16 32"), SWEEP_GRAPH (default false: compiling each size costs minutes),
#   SWEEP_ARGS (default "steps=10 warmup=3 official=false"), ALLOW_CPU=1 (run the stages without CUDA, to
#   check this script itself; the GPU tests then skip; e.g. BENCH_ARGS="preset=tiny device=cpu").
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TIMEOUT=${GPU_CHECK_TIMEOUT:-300}
BENCH_ARGS=${BENCH_ARGS:-"preset=ffhq1024 device=cuda precision=bf16 regularizers=true"}
STAGES=${STAGES:-"tests bench graph sweep"}
SWEEP_BATCHES=${SWEEP_BATCHES:-"2 8 32"}
SWEEP_PRECISIONS=${SWEEP_PRECISIONS:-"bf16 32"}
SWEEP_GRAPH=${SWEEP_GRAPH:-false}
SWEEP_ARGS=${SWEEP_ARGS:-"steps=10 warmup=3 official=false"}
WHEELS=wheels
OUT_DIR=${OUT:-outputs/gpu_check}
# What a CUDA image with torch, pytorch-lightning, torchmetrics, timm, huggingface_hub, pytest and tqdm lacks
# (the H200 image's list: ../.library/device/KINDS.md), pinned to the versions `make install` resolves here; about
# 12 MB. Only these are installed there (--no-deps), so torch and its stack are never replaced.
PACKAGES=(
  hydra-core==1.3.8 omegaconf==2.3.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  kornia==0.9.0 kornia_rs==0.2.0 facenet-pytorch==2.5.3 lpips==0.1.4
)
SDISTS=(antlr4-python3-runtime==4.9.3)  # no wheel on PyPI: built here into a pure-Python wheel
MODULES=(hydra omegaconf pytorch_lightning torchmetrics open_clip kornia facenet_pytorch tqdm pytest)

if [[ "${1:-}" == "--download" ]]; then
  mkdir -p "$WHEELS"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
    platforms+=(--platform "$p")
  done
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "${PY_VERSION:-3.12}" \
    --implementation cp "${platforms[@]}" -d "$WHEELS" "${PACKAGES[@]}" || exit 1
  exec "$PYTHON" -m pip wheel --no-deps -w "$WHEELS" "${SDISTS[@]}"
fi

mkdir -p "$OUT_DIR"
log() { echo "[gpu_check] $*" | tee -a "$OUT_DIR/gpu_check.log"; }
export HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1

# --- 0. torch with CUDA -----------------------------------------------------------------------------
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  log "FAIL: $PYTHON has no torch; this check needs a machine with torch (CUDA build) installed"
  exit 3
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$OUT_DIR/gpu_check.log"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  if [[ "${ALLOW_CPU:-0}" != "1" ]]; then
    log "FAIL: no CUDA device visible to torch (set ALLOW_CPU=1 to run the stages anyway)"
    exit 3
  fi
  log "no CUDA: running on CPU because ALLOW_CPU=1 (GPU tests will skip)"
fi

# --- 1. missing packages from ./wheels (a venv on top of the system site-packages, so torch is reused) --
missing=$("$PYTHON" - "${MODULES[@]}" <<'PY'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PY
)
if [[ -n "$missing" ]]; then
  log "missing modules: $missing"
  if ! compgen -G "$WHEELS/*.whl" >/dev/null && ! compgen -G "$WHEELS/*.tar.gz" >/dev/null; then
    log "FAIL: no wheels in ./$WHEELS; fill it with: scripts/gpu_check.sh --download (where there is network)"
    exit 4
  fi
  # a --target folder on PYTHONPATH, not a venv: the image's python may itself live in a venv, whose packages
  # (torch) a nested --system-site-packages venv would not see
  SITE=build/gpu-site  # git-ignored
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl 2>&1 \
    | tee -a "$OUT_DIR/gpu_check.log"
  export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
  still=$("$PYTHON" - "${MODULES[@]}" <<'PY'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PY
)
  if [[ -n "$still" ]]; then
    log "FAIL: still missing after installing the wheels: $still"
    exit 4
  fi
fi

status=0
has() { [[ " $STAGES " == *" $1 "* ]]; }
# one bench run: bench <name> <args...> -> $OUT_DIR/<name>.json (one JSON line) and <name>.log
bench() {
  local name=$1; shift
  log "python -m src.bench $* (timeout ${TIMEOUT}s)"
  timeout "$TIMEOUT" "$PYTHON" -m src.bench "$@" > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.log"
  local rc=$?
  tail -n 3 "$OUT_DIR/$name.log" | tee -a "$OUT_DIR/gpu_check.log"
  tee -a "$OUT_DIR/gpu_check.log" < "$OUT_DIR/$name.json"
  log "bench $name exit code $rc$([[ $rc -eq 124 ]] && echo ' (timed out)')"
  return $rc
}

# --- 2. GPU-marked tests ---------------------------------------------------------------------------
if has tests; then
  # only the files that hold GPU tests are collected: a CPU-only test module importing a package the GPU
  # machine lacks (notebooks, plotting) cannot stop the run
  mapfile -t gpu_files < <(grep -l "mark.gpu" tests/test_*.py)
  log "pytest -m gpu ${gpu_files[*]} (timeout ${TIMEOUT}s)"
  timeout "$TIMEOUT" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider -rs --junitxml="$OUT_DIR/pytest_gpu.xml" "${gpu_files[@]}" 2>&1 | tee "$OUT_DIR/pytest_gpu.log"
  rc=${PIPESTATUS[0]}
  log "pytest -m gpu exit code $rc"
  [[ $rc -eq 0 ]] || status=1
fi

# --- 3. benchmark: FFHQ-1024 + ViT-B/32, random weights, bf16, warm cache, eager step ----------------
# shellcheck disable=SC2086
if has bench; then
  bench bench $BENCH_ARGS || status=1
fi

# --- 4. the same, the whole step in CUDA graphs --------------------------------------------------------
# shellcheck disable=SC2086
if has graph; then
  bench bench_graph $BENCH_ARGS graph=true official=false || status=1
fi

# --- 5. time per sample: batch x precision (a batch that does not fit is one failed row, not a stop) ------
if has sweep; then
  : > "$OUT_DIR/sweep.jsonl"
  for precision in $SWEEP_PRECISIONS; do
    for batch in $SWEEP_BATCHES; do
      # shellcheck disable=SC2086
      if bench "sweep_${precision}_b${batch}" $BENCH_ARGS $SWEEP_ARGS precision="$precision" batch="$batch" graph="$SWEEP_GRAPH"; then
        cat "$OUT_DIR/sweep_${precision}_b${batch}.json" >> "$OUT_DIR/sweep.jsonl"
      else
        echo "{\"precision\": \"$precision\", \"batch\": $batch, \"failed\": true}" >> "$OUT_DIR/sweep.jsonl"
      fi
    done
  done
  "$PYTHON" - "$OUT_DIR" <<'PY' | tee "$OUT_DIR/sweep.md" | tee -a "$OUT_DIR/gpu_check.log"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [
    {**json.loads((out / f"{name}.json").read_text()), "run": name}
    for name in ("bench", "bench_graph")
    if (out / f"{name}.json").is_file() and (out / f"{name}.json").read_text().strip()
]
rows += [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines() if line.strip()]
print("| run | device | precision | batch | cache | graph | step ms | core ms | step / core | ms / sample | "
      "uncached ms | 50k steps h |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("failed"):
        print(f"| sweep | | {r['precision']} | {r['batch']} | | | failed (see its log) | | | | | |")
        continue
    print(f"| {r.get('run', 'sweep')} | {r['device']} | {r['precision']} | {r['batch']} | {r['cache']} | "
          f"{'graphs' if r['graph'] and 'eager' not in r['graph'] else 'eager'} | {r['step_ms']:.1f} | "
          f"{r['core_ms']:.1f} | {r['overhead_ratio']:.2f} | {r['ms_per_sample']:.1f} | {r['step_uncached_ms']:.1f} | "
          f"{r['projected_50k_steps_h']:.2f} |")
PY
fi

log "$([[ $status -eq 0 ]] && echo PASS || echo FAIL); outputs in $OUT_DIR"
exit $status
