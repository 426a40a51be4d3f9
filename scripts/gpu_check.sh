#!/usr/bin/env bash
# GPU check: every preset in 2-D and 3-D plus gpu-batch (linear and deformable) on CUDA, as one table.
# Usage (from the repository root, after `make setup`): bash scripts/gpu_check.sh [--only 2d|3d|batch]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: gpu_check needs one')"
exec "$PY" scripts/gpu_check.py --device cuda "$@"
