"""Query mapping at atlas scale: 1M query cells onto a 100k-cell reference, with labels and scores.

    .venv/bin/python benchmarks/mapping_scale.py --reference 100000 --query 1000000 [--data cbmc] [--ingest 20000]

Synthetic 50-D latent data: by default the mixtures of ``scaling.py`` (20 isotropic
clusters of different sizes and densities; cluster = label), in which a cell's nearest
neighbours are nearly random within its cluster, the hardest case for a graph search;
with ``--data cbmc`` cells drawn by Poisson resampling of the CBMC set's counts
(``search.py``; label = the parent cell's), the structure of real data. The reference
AnnData carries the latent space in ``obsm['X_latent']``;
``sc.pp.neighbors(use_rep='X_latent')`` then ``scnumap.tl.numap`` (plain NUMAP, a short
training budget: the fit is not what is measured here). The query is ``--query`` cells
drawn in the same way (another seed) with the same key.

Timed: ``scnumap.tl.project(query, ref, obs='label')`` — embedding, mapping score,
label probabilities, Unknown, anchored placement — first call (the reference index is
built: pynndescent, about 40 s at 100k on 2 cores) and second call (index reused), with
the process's peak resident memory. Also reports the label accuracy and the share called
Unknown (every query cell comes from a reference cluster, so that share is the
false-Unknown rate), and the recall of the approximate neighbours against exact search
on 2,000 query cells. ``--ingest N`` also times ``sc.tl.ingest`` (UMAP embedding and kNN
labels, the tool a Scanpy user would pick) on ``N`` of the query cells against the same
reference, warm, as a whole call and with its ``Ingest`` object built once and reused, and
prints its per-cell time over that of ``tl.project``'s second call. Take ``N`` above 10,000:
umap-learn's ``transform`` runs fewer epochs on a query that large, as it would on the
whole query.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
import warnings

import anndata
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from scaling import PeakRSS

import scnumap

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0


def mixture(n: int, seed: int, dim: int = 50, n_clusters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The mixture of ``scaling.synthetic`` (same centres for every seed) and its cluster labels."""
    centres_rng = np.random.default_rng(0)
    centers = centres_rng.normal(scale=6.0, size=(n_clusters, dim))
    scales = centres_rng.uniform(0.3, 2.0, n_clusters)
    sizes = centres_rng.dirichlet(np.full(n_clusters, 0.7))
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_clusters, size=n, p=sizes)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 200_000):
        lab = labels[start : start + 200_000]
        X[start : start + len(lab)] = centers[lab] + scales[lab, None] * rng.normal(size=(len(lab), dim))
    return X, labels


def as_adata(X: np.ndarray, labels: np.ndarray) -> anndata.AnnData:
    ad = anndata.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]))
    ad.obsm["X_latent"] = X
    ad.obs["label"] = pd.Categorical([f"cluster{c}" for c in labels] if labels.dtype.kind in "iu" else labels)
    return ad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--query", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=2, help="NUMAP training budget (not measured)")
    parser.add_argument("--data", choices=("mixture", "cbmc"), default="mixture")
    parser.add_argument(
        "--ingest",
        type=int,
        default=0,
        help="also time sc.tl.ingest on this many query cells (0: not run); the reference's UMAP is not timed",
    )
    args = parser.parse_args()
    print(
        f"{datetime.date.today()}, {platform.node()}: {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, scanpy {sc.__version__}, scnumap {scnumap.__version__}\n"
    )
    if args.data == "cbmc":
        from search import resampled_cbmc_cells

        (X, y), (Q, yq) = resampled_cbmc_cells(args.reference, args.query)
    else:
        X, y = mixture(args.reference, seed=0)
        Q, yq = mixture(args.query, seed=1)
    print(f"data: {args.data}")
    ref = as_adata(X, y)
    t0 = time.perf_counter()
    sc.pp.neighbors(ref, use_rep="X_latent", n_neighbors=15, random_state=0)
    scnumap.tl.numap(ref, densmap=False, epochs=args.epochs, grease_steps=200, random_state=0, verbose=False)
    print(f"reference: {args.reference:,} cells, graph + fit {time.perf_counter() - t0:.0f} s (not measured)")
    query = as_adata(Q, yq)
    truth = query.obs["label"].astype(str).to_numpy()

    print("\n| call | query cells | s | µs/cell | peak RSS GB | label accuracy | Unknown share |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for call in ("first (builds the index)", "second (index reused)"):
        with PeakRSS() as watch:
            scnumap.tl.project(query, ref, obs="label")
        second_call_s = watch.seconds
        labels = query.obs["label_numap"].astype(str).to_numpy()
        print(
            f"| {call} | {args.query:,} | {watch.seconds:.1f} | {watch.seconds / args.query * 1e6:.1f} "
            f"| {watch.peak:.2f} | {np.mean(labels == truth):.3f} | {np.mean(labels == 'Unknown'):.4f} |",
            flush=True,
        )
    recall(ref, Q[:2000])
    if args.ingest:
        ingest(ref, query, args.ingest, second_call_s / args.query * 1e6)


def ingest(ref: anndata.AnnData, query: anndata.AnnData, n: int, numap_per_cell: float) -> None:
    """Warm per-cell time of ``sc.tl.ingest(embedding_method="umap")`` (UMAP embedding and kNN
    labels; the synthetic cells have no genes for its PCA) on ``n`` query
    cells: the whole call, which builds its index of the reference every time, and an
    ``Ingest`` object built once and reused, as ``tl.project`` reuses its index."""
    sc.tl.umap(ref, random_state=0)  # not timed
    sample = query[np.random.default_rng(0).choice(query.n_obs, n, replace=False)].copy()
    sc.tl.ingest(sample[:200].copy(), ref, obs="label", embedding_method="umap")  # warm-up: numba
    q = sample.copy()
    t0 = time.perf_counter()
    sc.tl.ingest(q, ref, obs="label", embedding_method="umap")
    whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    reused = sc.tl.Ingest(ref)
    built = time.perf_counter() - t0
    reused.fit(sample[:200].copy())
    reused.map_embedding("umap")
    q = sample.copy()
    t0 = time.perf_counter()
    reused.fit(q)
    reused.map_embedding("umap")
    reused.neighbors()
    reused.map_labels("label", "knn")
    mapped = time.perf_counter() - t0
    truth = q.obs["label"].astype(str).to_numpy()
    accuracy = np.mean(reused.to_adata(inplace=False).obs["label"].astype(str).to_numpy() == truth)
    print(f"\n`sc.tl.ingest` on {n:,} query cells (the reference's UMAP not timed), warm:\n")
    print("| method | query cells | s | µs/cell | label accuracy | scnumap speed-up (per cell, second call) |")
    print("|---|---|---|---|---|---|")
    for name, seconds in (
        ("sc.tl.ingest, whole call (builds its index)", whole),
        ("Ingest reused (index built once)", mapped),
    ):
        per = seconds / n * 1e6
        print(f"| {name} | {n:,} | {seconds:.1f} | {per:.1f} | {accuracy:.3f} | {per / numap_per_cell:.1f}× |")
    print(f"\n`sc.tl.Ingest(ref)` itself (the index): {built:.1f} s", flush=True)


def recall(ref: anndata.AnnData, Q: np.ndarray, k: int = 15) -> None:
    """Share of the exact ``k`` nearest reference cells that the cached index returns."""
    from sklearn.neighbors import NearestNeighbors

    from scnumap.core.reference_index import cached_index

    space = np.asarray(ref.obsm["X_latent"], dtype=np.float32)
    _, approx = cached_index(space).query(Q, k)
    exact = NearestNeighbors(n_neighbors=k).fit(space).kneighbors(Q, return_distance=False)
    hits = neighbour_recall(approx, exact, k)
    print(f"\nneighbour recall@{k} of the index against exact search ({len(Q):,} query cells): {hits:.3f}")


def neighbour_recall(found: np.ndarray, exact: np.ndarray, k: int = 15) -> float:
    """Mean share of each row's exact ``k`` nearest neighbours among the first ``k`` found."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, exact, strict=True)]))


if __name__ == "__main__":
    main()
