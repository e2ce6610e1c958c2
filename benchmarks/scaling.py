"""Scaling: fit time and projection throughput on synthetic single-cell-like data.

    .venv/bin/python benchmarks/scaling.py --device cpu --fit 10000 100000 --project 1000000

Data: 50-D mixtures of 20 Gaussian clusters with different sizes (Dirichlet weights)
and densities (scales 0.3–2), seeded. For each ``--fit`` size: graph + GrEASE + NUMAP
fit time and peak memory; the model of the largest fit then projects ``--project``
cells: throughput (cells/s, warm) and peak memory. ``--umap`` adds umap-learn's fit
and transform alongside where given sizes allow.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from scnumap import NUMAP


def synthetic(n: int, seed: int = 0, dim: int = 50, n_clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0, size=(n_clusters, dim))
    scales = rng.uniform(0.3, 2.0, n_clusters)
    sizes = rng.dirichlet(np.full(n_clusters, 0.7))
    labels = rng.choice(n_clusters, size=n, p=sizes)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 200_000):
        lab = labels[start : start + 200_000]
        X[start : start + len(lab)] = centers[lab] + scales[lab, None] * rng.normal(size=(len(lab), dim))
    return X


def peak_host_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fit", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--project", type=int, default=1_000_000)
    parser.add_argument("--umap", action="store_true", help="also time umap-learn (fit + transform)")
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"GPU: {torch.cuda.get_device_name() if cuda else 'none'}"
    )
    print("| cells | method | fit s | fit peak host GB | fit peak GPU GB |")
    print("|---|---|---|---|---|", flush=True)
    model = None
    for n in args.fit:
        X = synthetic(n)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        model = NUMAP(device=args.device, random_state=0, densmap=True).fit(X)
        fit_s = time.perf_counter() - t0
        gpu = torch.cuda.max_memory_allocated() / 1024**3 if cuda else float("nan")
        print(
            f"| {n} | scnumap NUMAP+DensMAP ({model.n_steps_} steps) | {fit_s:.1f} | {peak_host_gb():.2f} "
            f"| {gpu:.2f} |",
            flush=True,
        )
        if args.umap:
            import umap

            t0 = time.perf_counter()
            reducer = umap.UMAP(random_state=0).fit(X)
            print(f"| {n} | umap-learn UMAP | {time.perf_counter() - t0:.1f} | {peak_host_gb():.2f} | – |", flush=True)
    Q = synthetic(args.project, seed=1)
    model.transform(Q[:1000])  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model.transform(Q)
    proj_s = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 1024**3 if cuda else float("nan")
    print(
        f"\nprojection of {args.project} cells: {proj_s:.2f} s = {args.project / proj_s:,.0f} cells/s; "
        f"peak host {peak_host_gb():.2f} GB (input itself {Q.nbytes / 1024**3:.2f} GB), peak GPU {gpu:.2f} GB",
        flush=True,
    )
    if args.umap:
        n_q = min(args.project, 20_000)
        reducer.transform(Q[:100])
        t0 = time.perf_counter()
        reducer.transform(Q[:n_q])
        per = (time.perf_counter() - t0) / n_q
        print(
            f"umap-learn transform of {n_q} cells: {n_q * per:.2f} s = {1 / per:,.0f} cells/s; "
            f"scnumap speed-up {per / (proj_s / args.project):.0f}×",
            flush=True,
        )


if __name__ == "__main__":
    main()
