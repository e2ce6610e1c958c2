"""Does umap-learn's pruning of weak edges before densMAP's radii matter for scnumap?

    .venv/bin/python benchmarks/densmap_pruning.py [--seeds 0 1] [--synthetic 5000] [--quick]

umap-learn (``simplicial_set_embedding``) sets graph weights ``mu < max(mu) / n_epochs`` to
zero (``n_epochs`` 500 up to 10,000 cells, 200 above) before it computes densMAP's original
radii and optimises, so those edges are in neither radius. scnumap keeps every edge. This
script fits NUMAP+DensMAP (default budget) on scanpy's ``pbmc68k_reduced`` (``X_pca``) and on
benchmarks/scaling.py's synthetic mixture, with the density term's graph as is and pruned
as umap-learn prunes it (the UMAP term's graph is untouched: its edges are drawn ∝ weight,
so such edges are hardly ever drawn), and prints the fraction of edges pruned, density r
and kNN preservation@15 (scnumap.core.metrics, on every cell).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import warnings

import numpy as np
import scanpy as sc
import scipy.sparse as sp
import torch
from scaling import synthetic

from scnumap import NUMAP
from scnumap.core import density, metrics, numap

warnings.filterwarnings("ignore")


def pruned(graph: sp.csr_matrix, edge_dist=None):
    """``graph`` (and ``edge_dist``, aligned with ``graph.data``) without umap-learn's weak edges."""
    n_epochs = 500 if graph.shape[0] <= 10_000 else 200
    keep = graph.data >= graph.data.max() / n_epochs
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    indptr = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=graph.shape[0]))]
    out = sp.csr_matrix((graph.data[keep], graph.indices[keep], indptr), shape=graph.shape)
    return out if edge_dist is None else (out, np.asarray(edge_dist)[keep])


def fit(X, seed, prune, budget):
    original = (numap.original_log_radius, numap.NeighbourhoodSampler)
    if prune:
        numap.original_log_radius = lambda g, d: density.original_log_radius(*pruned(g, d))
        numap.NeighbourhoodSampler = lambda g, device: density.NeighbourhoodSampler(pruned(g), device)
    try:
        return NUMAP(densmap=True, random_state=seed, device="cpu", verbose=False, **budget).fit(X)
    finally:
        numap.original_log_radius, numap.NeighbourhoodSampler = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--synthetic", type=int, default=5000, help="cells of the synthetic set")
    parser.add_argument("--quick", action="store_true", help="60 epochs, 150 GrEASE steps")
    parser.add_argument("--no-pbmc", action="store_true", help="only the synthetic set")
    args = parser.parse_args()
    print(
        f"{datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)\n"
    )
    budget = {"epochs": 60, "grease_steps": 150} if args.quick else {}
    sets = {} if args.no_pbmc else {"pbmc68k_reduced": sc.datasets.pbmc68k_reduced().obsm["X_pca"]}
    sets[f"synthetic {args.synthetic:,}"] = synthetic(args.synthetic)
    print("| data | seed | edges pruned | density r kept | density r pruned | kNN pres kept | kNN pres pruned |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for name, X in sets.items():
        X = np.asarray(X, dtype=np.float32)
        for seed in args.seeds:
            kept, cut = fit(X, seed, False, budget), fit(X, seed, True, budget)
            frac = 1 - pruned(kept.graph_).nnz / kept.graph_.nnz
            r = [metrics.density_correlation(X, m.embedding_) for m in (kept, cut)]
            kp = [metrics.knn_preservation(X, m.embedding_) for m in (kept, cut)]
            print(f"| {name} | {seed} | {frac:.2%} | {r[0]:.3f} | {r[1]:.3f} | {kp[0]:.3f} | {kp[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
