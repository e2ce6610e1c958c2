"""Projection time against its thread count: the policy of ``scnumap.core.threads.projection_threads``.

    .venv/bin/python benchmarks/projection_threads.py [--calls 20] [--sets pbmc68k_reduced pbmc4k cbmc]
        [--synthetic 10000x2000 10000x4000 10000x10000]

``tl.project(query, ref, obs='label')`` (labels, mapping score, correction, placement),
warm, timed ``--calls`` times in a row with the projection forced onto one thread, onto
every torch thread, and with the default policy (one thread per ``PAIRS_PER_THREAD``
query × reference pairs). Labelled sets: ``projection.py``'s 70/30 split by cells (seed 0;
reference PCA, ``sc.pp.neighbors``, ``tl.numap`` defaults). Synthetic ``RxQ``: ``R``
reference and ``Q`` query cells of ``mapping_scale.py``'s 50-D mixture (a short fit). Prints
mean and median milliseconds per call: single calls of a few tens of milliseconds vary
up to 4× when the pools of torch, BLAS and scikit-learn wait for each other, so the mean
is what a user's loop pays.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
import warnings
from unittest import mock

import numpy as np
import scanpy as sc
import torch
from datasets import LABELLED, available
from mapping_scale import as_adata, mixture
from projection import split

import scnumap
import scnumap.tl._project as project_module
from scnumap.core.threads import PAIRS_PER_THREAD, projection_threads

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0


def labelled_pair(name: str):
    ref, query = split(LABELLED[name](), 0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)
    scnumap.tl.numap(ref, random_state=0)
    return ref, query


def synthetic_pair(n_ref: int, n_query: int):
    ref = as_adata(*mixture(n_ref, seed=0))
    sc.pp.neighbors(ref, use_rep="X_latent", n_neighbors=15, random_state=0)
    scnumap.tl.numap(ref, densmap=False, epochs=2, grease_steps=200, random_state=0, verbose=False)
    return ref, as_adata(*mixture(n_query, seed=1))


def timed(ref, query, calls: int, threads: int | None) -> np.ndarray:
    """Milliseconds of ``calls`` projections; ``threads`` forces the count (``None``: the policy)."""
    policy = project_module.projection_threads
    forced = policy if threads is None else (lambda n_queries, n_reference: threads)
    times = []
    with mock.patch.object(project_module, "projection_threads", forced):
        scnumap.tl.project(query.copy(), ref, obs="label")  # warm-up
        for _ in range(calls):
            q = query.copy()
            t0 = time.perf_counter()
            scnumap.tl.project(q, ref, obs="label")
            times.append(time.perf_counter() - t0)
    return 1e3 * np.array(times)


def row(name: str, ref, query, calls: int) -> None:
    all_threads = torch.get_num_threads()
    cells = f"{query.n_obs:,} × {ref.n_obs:,}"
    policy = projection_threads(query.n_obs, ref.n_obs)
    parts = []
    for threads in (1, all_threads, None):
        t = timed(ref, query, calls, threads)
        parts.append(f"{t.mean():.0f} / {np.median(t):.0f}")
    print(f"| {name} | {cells} | {query.n_obs * ref.n_obs:.1e} | " + " | ".join(parts) + f" | {policy} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--sets", nargs="*", default=["pbmc68k_reduced", "pbmc4k", "cbmc"])
    parser.add_argument("--synthetic", nargs="*", default=["10000x2000", "10000x4000", "10000x10000"])
    args = parser.parse_args()
    n = torch.get_num_threads()
    print(
        f"{datetime.date.today()}, {platform.node()}: {n} torch threads, torch {torch.__version__}, "
        f"scnumap {scnumap.__version__}; PAIRS_PER_THREAD = {PAIRS_PER_THREAD:,}\n"
    )
    print(
        f"| data | query × reference cells | pairs | 1 thread ms (mean / median) | {n} threads ms "
        "| policy ms | policy threads |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    for name in args.sets:
        if name == "pbmc68k_reduced" or available(name):
            ref, query = labelled_pair(name)
            row(name, ref, query, args.calls)
    for spec in args.synthetic:
        n_ref, n_query = (int(v) for v in spec.split("x"))
        ref, query = synthetic_pair(n_ref, n_query)
        row(f"synthetic {spec}", ref, query, max(3, args.calls // 4))


if __name__ == "__main__":
    main()
