#!/usr/bin/env bash
# Prove the repo's CUDA half on a GPU box in one run, offline, each part under its own time limit.
#
#   scripts/gpu_check.sh --wheels DIR/1 [--out DIR] [--parts install,pytest,train,ig]   on the box
#   scripts/gpu_check.sh --dry-run      anywhere, offline (make test runs it): the transfers, MiB and minutes,
#                                       where each module the checks import comes from, every check with what
#                                       it proves and why it would skip here; exits 1 if the plan does not fit
#
# The parts, in order: install (the wheels into /tmp/segsft-site, every requirement checked), pytest -m gpu,
# Unsloth vs TRL training at 4k and 16k tokens, IG on CUDA with the LIMO-scale H100-hour estimate.
# Figures: DIR/gpu_check.md (default runs/gpu_check), one log a part, ig.md and the box's package list.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${1:-}" = --dry-run ]; then exec "$PY" -m scripts.gpu_kit plan; fi
exec "$PY" -m scripts.gpu_kit run "$@"
