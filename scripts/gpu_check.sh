#!/usr/bin/env bash
# Prove every CUDA path of the repo on a GPU box in one run, without internet; write one markdown file.
#
#   scripts/gpu_check.sh [--wheels DIR] [--out DIR]   on the GPU box (DIR from scripts/wheelhouse.sh)
#   scripts/gpu_check.sh --dry-run                    anywhere: resolve the wheel list against the pins and
#                                                     list every check with why it would skip here (CI runs it)
#
# The checks: pytest -m gpu (Unsloth vs plain TRL loss, 20 Unsloth steps, QLoRA steps, bf16 IG on CUDA,
# Captum parity on CUDA, resumable HF generation on CUDA), then the figures: training tokens/s and
# peak memory of Unsloth vs plain TRL at 4k and 16k tokens (R1-Distill-Qwen-1.5B architecture), and
# IG on CUDA with the LIMO-scale H100-hours estimate (benchmarks/bench_gpu.py). About 20 minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS= OUT=runs/gpu_check DRY=
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}

if [ -n "$DRY" ]; then
  echo "== wheel list for an air-gapped CUDA box, resolved against the pins (no wheel is downloaded)"
  bash scripts/wheelhouse.sh "$(mktemp -d)" --dry-run
  echo "== the GPU checks, and why each would skip here"
  "$PY" -m pytest -q -m gpu -rs -p no:randomly tests | grep -E "SKIPPED|passed|failed|skipped|error" || true
  "$PY" -m benchmarks.bench_gpu --dry-run
  "$PY" -m benchmarks.bench_train --help > /dev/null && echo "would run benchmarks.bench_train --model r1-distill-qwen-1.5b --length 4096,16384 --unsloth false,true"
  exit 0
fi

if [ -n "$WHEELS" ]; then  # private target: the box's own packages stay untouched
  TARGET=${TARGET:-/tmp/segsft-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" "$WHEELS"/*.whl
  export PYTHONPATH="$TARGET:$PWD"
fi
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.md"
GPU=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)
{
  echo "# GPU check: $GPU, $(date -u +%Y-%m-%d)"
  echo
  echo "## pytest -m gpu"
  echo '```'
  "$PY" -m pytest -q -m gpu -rs tests 2>&1 | tail -n 15 || true
  echo '```'
  echo
  echo "## Training: Unsloth vs plain TRL (R1-Distill-Qwen-1.5B architecture, random weights, gradient checkpointing)"
  echo
  "$PY" -m benchmarks.bench_train --model r1-distill-qwen-1.5b --length 4096,16384 --batch 1 --steps 6 --unsloth false,true
  echo
  "$PY" -m benchmarks.bench_gpu --out "$OUT/ig.md" > /dev/null && cat "$OUT/ig.md"
} 2>&1 | tee "$REPORT"
echo "written: $REPORT"
