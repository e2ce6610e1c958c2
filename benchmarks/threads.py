"""Fit time against ``n_jobs`` (threads of torch, BLAS/OpenMP and numba during the fit).

    .venv/bin/python benchmarks/threads.py --idle yes|no [--n-jobs 1 2] [--repeats 1] [--quick]

``--idle`` is required: say whether the machine ran nothing else during the run (the
numbers of a shared machine are not those of an idle one); it is printed in the header
with the load average at the start, the date, the machine and the versions.

Two fits, each timed for every ``--n-jobs`` value (``none``: ``n_jobs=None``, the cores
other processes leave idle), in a fresh copy of the data, ``random_state=0``, no progress
bars:

A. ``scnumap.tl.numap`` on scanpy's bundled ``pbmc68k_reduced`` (700 cells) with the
   neighbour graph it ships with (DensMAP on, tl.numap's defaults): the whole call.
B. ``NUMAP(densmap=True).fit`` on 5,000 synthetic cells (10 Gaussian clusters in 50
   dimensions, seeded), graph built by the fit (pynndescent).

A short warm-up fit of each kind runs first (numba compilation, imports, first-touch
allocation), untimed. ``--busy N`` starts N other busy processes (one core each, a
Python loop) before the timed fits and stops them after: the measurement of a shared
machine, reproducible. ``--quick`` runs tiny budgets on 500 synthetic cells, only to check
that the script works: its times mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import sys
import time
from importlib.metadata import version

import numpy as np
import scanpy as sc
import torch

import scnumap
from scnumap.core.threads import available_cores

QUICK = {"epochs": 1, "grease_steps": 10, "hidden": (32, 32), "batch_size": 256}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(command: str, args, argv) -> None:
    """Date, machine, cores, load, idle or not, threads, versions and the command (as benchmarks/mapping.py)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    numba_version = version("numba") if _installed("numba") else "absent"
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()} "
        f"({cpu_model()}, {available_cores()} cores available): "
        f"idle machine: **{args.idle}** (as stated by whoever ran it), load average at start {load}; "
        f"{torch.get_num_threads()} torch threads by default, OMP_NUM_THREADS={omp}, "
        f"torch {torch.__version__}, scanpy {version('scanpy')}, scnumap {scnumap.__version__}, "
        f"numpy {np.__version__}, threadpoolctl {version('threadpoolctl')}, numba {numba_version}\n"
    )
    shown = sys.argv[1:] if argv is None else argv
    print(f"`{command} {' '.join(shown)}`\n", flush=True)


def _installed(name: str) -> bool:
    try:
        version(name)
    except Exception:
        return False
    return True


def n_jobs_value(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def synthetic(n: int, n_dims: int = 50, n_clusters: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0, size=(n_clusters, n_dims))
    labels = rng.integers(0, n_clusters, n)
    return (centers[labels] + rng.normal(size=(n, n_dims))).astype(np.float32)


def spin() -> None:
    """One busy core: another job on the machine."""
    while True:
        pass


def fit_tl_numap(adata, n_jobs, budget: dict) -> float:
    ad = adata.copy()
    start = time.perf_counter()
    scnumap.tl.numap(ad, n_jobs=n_jobs, random_state=0, verbose=False, **budget)
    return time.perf_counter() - start


def fit_densmap(X: np.ndarray, n_jobs, budget: dict) -> float:
    start = time.perf_counter()
    scnumap.NUMAP(densmap=True, n_jobs=n_jobs, random_state=0, verbose=False, **budget).fit(X.copy())
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", required=True, choices=["yes", "no"], help="did the machine run nothing else?")
    parser.add_argument("--n-jobs", nargs="+", type=n_jobs_value, default=[1, 2], help="values of n_jobs ('none')")
    parser.add_argument("--repeats", type=int, default=1, help="fits per value (the table shows each)")
    parser.add_argument("--cells", type=int, default=5000, help="synthetic cells of fit B")
    parser.add_argument("--busy", type=int, default=0, help="other busy processes (one core each) during the fits")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, 500 cells: checks the script only")
    args = parser.parse_args(argv)
    print_header("python -u benchmarks/threads.py", args, argv)

    budget = QUICK if args.quick else {}
    warm = QUICK
    pbmc = sc.datasets.pbmc68k_reduced()
    X = synthetic(500 if args.quick else args.cells)
    runs = [
        (f"A. tl.numap, pbmc68k_reduced ({pbmc.n_obs} cells, graph given)", lambda n: fit_tl_numap(pbmc, n, budget)),
        (f"B. NUMAP(densmap=True).fit, {X.shape[0]} synthetic cells", lambda n: fit_densmap(X, n, budget)),
    ]
    log("warm-up (untimed)")
    fit_tl_numap(pbmc, 1, warm)
    fit_densmap(X[:500], 1, warm)

    others = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for other in others:
        other.start()
    rows = []
    for name, run in runs:
        for n_jobs in args.n_jobs:
            for repeat in range(args.repeats):
                seconds = run(n_jobs)
                log(f"{name}, n_jobs={n_jobs}, repeat {repeat + 1}: {seconds:.1f} s")
                rows.append((name, n_jobs, seconds))
    for other in others:
        other.terminate()

    if args.busy:
        print(f"{args.busy} other busy process(es), one core each, during the timed fits\n")
    print("| fit | n_jobs | s |")
    print("|---|---:|---:|")
    for name, n_jobs, seconds in rows:
        print(f"| {name} | {'None' if n_jobs is None else n_jobs} | {seconds:.1f} |")
    if args.quick:
        print("\n(--quick: tiny budgets; these times mean nothing)")


if __name__ == "__main__":
    main()
