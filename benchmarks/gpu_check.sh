#!/usr/bin/env bash
# Prepared GPU check (device machine: python3 with CUDA torch, numba, scikit-learn there;
# umap-learn and pynndescent carried as wheels in .whl). Runs a CUDA smoke test, the scaling benchmark and densmap_large.py at 100k.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 - <<'PY'
import numpy as np, torch
from scnumap import NUMAP
X = np.random.default_rng(0).normal(size=(2000, 20)).astype(np.float32)
m = NUMAP(device="cuda", epochs=5, grease_steps=50).fit(X)
cpu = m.transform(X)
assert m.output_device.type == "cuda" and np.all(np.isfinite(cpu)), "CUDA fit/transform failed"
print("CUDA smoke test: ok", cpu.shape)
PY
python3 benchmarks/scaling.py --device cuda --fit 10000 100000 --project 1000000 2>&1 | tee "${OUT:-/tmp}/scaling_gpu.txt"
# DensMAP on a graph larger than dens_subsample_size: neighbours refreshed every 10 steps / every step / every vertex live
timeout 300 python3 benchmarks/densmap_large.py --n 100000 --device cuda 2>&1 | tee "${OUT:-/tmp}/densmap_large_gpu.txt"
