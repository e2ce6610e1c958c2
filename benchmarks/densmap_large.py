"""DensMAP on a graph larger than ``dens_subsample_size``: how fresh the neighbours are.

    .venv/bin/python benchmarks/densmap_large.py --n 100000          # the measurement
    .venv/bin/python benchmarks/densmap_large.py --quick             # smoke run (5,000 cells)

When the density term samples only part of the vertices (more than ``dens_subsample_size``,
default 10,000), the sampled vertices are embedded live and their neighbours' values come
from a detached embedding of every vertex recomputed every ``DENSITY_REFRESH`` steps
(scnumap.core.train); see docs/method.md. Variants, all on the same graph and seed:

- ``no DensMAP``: the UMAP term alone, for reference;
- ``refresh every k``: neighbours' values up to ``k - 1`` steps old (``k = 10``, the
  default, ``k = 1``: always current);
- ``every vertex live``: ``dens_subsample_size = n``, the exact density term over every
  vertex (the path graphs of at most ``dens_subsample_size`` vertices take).

Data: benchmarks/scaling.py's synthetic 50-D mixture of 20 Gaussian clusters of different
sizes and densities. Measures (on every cell, as benchmarks/quality.py): density r, the
Pearson r of the log local radius (15 neighbours) in the data and in the embedding
(scnumap.core.metrics.density_correlation), and kNN preservation@15; fit seconds include
GrEASE and training, not the kNN graph (built once, shared). Also prints the fraction of
the graph covered by the neighbourhoods of one sample of ``dens_subsample_size`` vertices,
i.e. what embedding every sampled neighbourhood live would cost.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import warnings

import numpy as np
import torch
from scaling import synthetic
from sklearn.neighbors import NearestNeighbors

from scnumap import NUMAP
from scnumap.core import train
from scnumap.core.graph import build_graph

warnings.filterwarnings("ignore")

K = 15


def neighbours(X):
    """Distances to and indices of the ``K`` nearest neighbours (self excluded), once per array."""
    dist, idx = NearestNeighbors(n_neighbors=K + 1).fit(X).kneighbors(X)
    return dist[:, 1:], idx[:, 1:]


def scores(data_knn, E):
    """Density r and kNN preservation, the definitions of scnumap.core.metrics."""
    (dx, ix), (de, ie) = data_knn, neighbours(E)
    rx = np.log(np.mean(dx**2, axis=1) + 1e-12)
    re = np.log(np.mean(de**2, axis=1) + 1e-12)
    hits = (ix[:, :, None] == ie[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.corrcoef(rx, re)[0, 1]), float(hits.mean() / K)


def union_fraction(graph, size, seed=0):
    """Fraction of vertices in the closed neighbourhoods of ``size`` random vertices."""
    n = graph.shape[0]
    sample = np.random.default_rng(seed).permutation(n)[: min(size, n)]
    return np.unique(np.r_[sample, graph[sample].indices]).size / n


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (
        f"{datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), GPU: {gpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 cells, 500 sampled vertices, 300 steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--refresh", type=int, nargs="+", default=[10, 1], help="DENSITY_REFRESH values")
    parser.add_argument("--no-whole", action="store_true", help="skip the 'every vertex live' variant")
    args = parser.parse_args()
    n = 5_000 if args.quick else args.n
    subsample = 500 if args.quick else 10_000
    budget = {"epochs": None} if not args.quick else {"epochs": 3, "grease_steps": 100}
    print(machine())
    X = synthetic(n)
    graph = build_graph(X, K, random_state=args.seed).connectivities
    print(
        f"\n{n:,} cells, {graph.nnz / n:.1f} edges per vertex; neighbourhoods of {subsample:,} sampled "
        f"vertices cover {union_fraction(graph, subsample):.1%} of the graph\n"
    )
    NUMAP(epochs=1, grease_steps=1, device=args.device, verbose=False).fit(X[:300])  # warm-up, exact kNN
    data_knn = neighbours(X)
    variants = [("no DensMAP", None, {"densmap": False})]
    variants += [(f"refresh every {k}", k, {"densmap": True, "dens_subsample_size": subsample}) for k in args.refresh]
    if not args.no_whole:
        variants.append(("every vertex live", None, {"densmap": True, "dens_subsample_size": max(n, 2)}))
    print("| variant | cells | density r | kNN pres@15 | fit s |")
    print("|---|---|---|---|---|", flush=True)
    default = train.DENSITY_REFRESH
    for name, refresh, params in variants:
        train.DENSITY_REFRESH = refresh if refresh is not None else default
        t0 = time.perf_counter()
        model = NUMAP(random_state=args.seed, device=args.device, verbose=False, **budget, **params).fit(X, graph=graph)
        seconds = time.perf_counter() - t0
        r, kp = scores(data_knn, model.embedding_)
        print(f"| {name} | {n:,} | {r:.3f} | {kp:.3f} | {seconds:.1f} |", flush=True)
    train.DENSITY_REFRESH = default


if __name__ == "__main__":
    main()
