#!/usr/bin/env bash
# Here, with the package index: the wheels the air-gapped GPU box lacks (CPython 3.12, Linux x86_64).
#
#   scripts/wheelhouse.sh DIR                 download exactly what scripts/gpu_wheels.lock names, each checked
#                                             against its size and sha256, into DIR/1 (transfer 1) and DIR/2
#   scripts/wheelhouse.sh --lock [--carry A,B]  re-resolve at this repo's pins around the box's own packages
#                                             (scripts/gpu_box_packages.txt) and rewrite the lock; --carry carries
#                                             box packages anyway, when the box's version breaks a check
#
# Optionally, here: python -m scripts.gpu_kit rehearse DIR (the install part against a box-like CPython 3.12).
# Then on the box: scripts/gpu_check.sh --wheels DIR/1 (docs/recipes.md, "Proving the GPU half").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${1:-}" = --lock ]; then shift; exec "$PY" -m scripts.gpu_kit lock "$@"; fi
exec "$PY" -m scripts.gpu_kit fetch "${1:?usage: scripts/wheelhouse.sh DIR | --lock [--carry A,B]}"
