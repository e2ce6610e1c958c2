#!/usr/bin/env bash
# Set up .venv with a CPU build of PyTorch, then scnumap with its test and docs extras.
# A torch requirement left to pip alone would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # on this project's machines the CPU wheel of torch 2.13.0 lies on disk; elsewhere install
  # the torch build you want first (CPU or CUDA) and this step is skipped
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test,docs]"
