"""What one reference search costs at atlas scale: the floor under ``tl.project``'s time per cell.

    .venv/bin/python benchmarks/search.py [--reference 100000] [--query 100000]

``tl.project`` searches each query cell's nearest reference cells twice when the query is
corrected (as measured, 31 neighbours for the mapping score and the query share; corrected,
15 for the vote and the anchor) and once among the query sample (31, the query share).
This script times one search of ``--query`` cells against a ``--reference``-cell index with
the settings of :class:`scnumap.core.reference_index.ReferenceIndex` (pynndescent,
``n_neighbors=30``, ``epsilon=0.1``, a block's rows on every core), at 31 and 15
neighbours, with the recall@15 against exact search on 2,000 query cells, on two kinds of
50-D data:

- ``mixture``: the 20 isotropic Gaussian clusters of ``mapping_scale.py`` (no structure
  inside a cluster: its cells' nearest neighbours are nearly random, the hardest case);
- ``cbmc resampled``: cells drawn from the CBMC set's cells by Poisson resampling of their
  counts (each new cell ``Poisson(counts of a random real cell)``), log-normalised and put
  in the 50 PCs of the real cells: the structure of real data at any size.

With faiss installed (the ``benchmark`` extra; not a dependency of scnumap), its HNSW index (``M=32``,
``efSearch`` 32 and 64) is timed beside it, as the other well-kept search library.

    .venv/bin/python benchmarks/search.py --exact

times the exact searches of smaller queries instead (``ReferenceIndex`` below
``EXACT_MAX_PAIRS``): :func:`scnumap.core.exact_search.exact_neighbours` against
scikit-learn's brute force (``NearestNeighbors(algorithm="brute")``) on the resampled CBMC
cells, at the sizes of a projection (query × reference cells), on one and two threads
(``limited_threads``, as ``tl.project`` sets them), best of three, with the share of
neighbour lists the two return identically.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
import warnings

import numpy as np
from datasets import SCDCC, SHARED, available
from mapping_scale import mixture, neighbour_recall
from pynndescent import NNDescent
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

warnings.filterwarnings("ignore")

RECALL_CELLS = 2_000


def resampled_cbmc(n_reference: int, n_query: int) -> tuple[np.ndarray, np.ndarray]:
    (X, _), (Q, _) = resampled_cbmc_cells(n_reference, n_query)
    return X, Q


def resampled_cbmc_cells(n_reference: int, n_query: int) -> tuple[tuple, tuple]:
    """``(X, labels)`` of ``n_reference`` and of ``n_query`` cells drawn by Poisson resampling
    of the CBMC set's cells (each new cell carries its parent's label), in the real cells' 50 PCs."""
    import h5py

    with h5py.File(SHARED / SCDCC["cbmc"], "r") as f:
        counts = np.asarray(f["X"], dtype=np.float32)
        labels = np.asarray(f["Y"]).astype(str)

    def lognorm(c):
        return np.log1p(c / np.maximum(c.sum(axis=1, keepdims=True), 1.0) * 1e4)

    pca = PCA(50, random_state=0).fit(lognorm(counts))
    rng = np.random.default_rng(0)

    def draw(n):
        out = np.empty((n, 50), dtype=np.float32)
        parents = np.empty(n, dtype=np.int64)
        for start in range(0, n, 10_000):
            rows = rng.integers(0, counts.shape[0], min(10_000, n - start))
            parents[start : start + rows.size] = rows
            out[start : start + rows.size] = pca.transform(lognorm(rng.poisson(counts[rows]).astype(np.float32)))
        return out, labels[parents]

    return draw(n_reference), draw(n_query)


def timed(search, n: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    indices = search()
    return (time.perf_counter() - t0) / n * 1e6, indices


def run(data: str, X: np.ndarray, Q: np.ndarray) -> None:
    exact = NearestNeighbors(n_neighbors=15).fit(X).kneighbors(Q[:RECALL_CELLS], return_distance=False)
    t0 = time.perf_counter()
    index = NNDescent(
        X, n_neighbors=30, random_state=np.random.RandomState(1), low_memory=True, parallel_batch_queries=True
    )
    index.prepare()
    index.query(Q[:100], k=15)  # compiles the search
    build = time.perf_counter() - t0
    for k in (31, 15):
        per_cell, (indices, _) = timed(lambda k=k: index.query(Q, k=k, epsilon=0.1), len(Q))
        found = neighbour_recall(indices[:RECALL_CELLS], exact)
        print(f"| {data} | pynndescent | {k} | {build:.0f} | {per_cell:.1f} | {found:.3f} |", flush=True)
    try:
        import faiss
    except ImportError:
        print(f"| {data} | faiss HNSW | – | – | (faiss not installed) | – |", flush=True)
        return
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(X.shape[1], 32)
    hnsw.hnsw.efConstruction = 80
    hnsw.add(X)
    build = time.perf_counter() - t0
    for ef in (32, 64):
        hnsw.hnsw.efSearch = ef
        per_cell, (_, indices) = timed(lambda: hnsw.search(Q, 31), len(Q))
        print(
            f"| {data} | faiss HNSW, efSearch {ef} | 31 | {build:.0f} | {per_cell:.1f} "
            f"| {neighbour_recall(indices[:RECALL_CELLS], exact):.3f} |",
            flush=True,
        )


#: ``--exact``'s (query, reference) cell counts.
EXACT_SIZES = ((1_282, 2_989), (2_586, 4_440), (20_000, 5_000), (4_000, 40_000))


def best_of(search, repeats: int = 3) -> tuple[float, tuple]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = search()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3, out


def run_exact() -> None:
    from scnumap.core.exact_search import exact_neighbours
    from scnumap.core.threads import limited_threads

    largest = max(n for sizes in EXACT_SIZES for n in sizes)
    X_all, Q_all = resampled_cbmc(largest, largest)
    print(
        "| query × reference cells | neighbours | threads | exact_neighbours ms | scikit-learn brute ms "
        "| speed-up | same lists |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    exact_neighbours(Q_all[:10], X_all[:100], 5)  # compiles (or loads) the numba code
    for n_query, n_reference in EXACT_SIZES:
        X, Q = X_all[:n_reference], Q_all[:n_query]
        for k in (31, 15):
            for threads in (1, 2):
                with limited_threads(threads):
                    ours, (_, found) = best_of(lambda X=X, Q=Q, k=k, t=threads: exact_neighbours(Q, X, k, n_threads=t))
                    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X)
                    theirs, (_, want) = best_of(lambda nn=nn, Q=Q: nn.kneighbors(Q))
                print(
                    f"| {n_query:,} × {n_reference:,} | {k} | {threads} | {ours:.1f} | {theirs:.1f} "
                    f"| {theirs / ours:.2f}× | {np.mean(np.all(found == want, axis=1)):.4f} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--query", type=int, default=100_000)
    parser.add_argument("--exact", action="store_true", help="time the exact search of small queries instead")
    args = parser.parse_args()
    if args.exact:
        print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}\n")
        run_exact()
        return
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}\n")
    print(f"reference {args.reference:,} cells, query {args.query:,} cells, 50-D\n")
    print("| data | search | neighbours | index build s | search µs/cell | recall@15 |")
    print("|---|---|---|---|---|---|", flush=True)
    run("mixture", mixture(args.reference, seed=0)[0], mixture(args.query, seed=1)[0])
    if available("cbmc"):
        run("cbmc resampled", *resampled_cbmc(args.reference, args.query))
    else:
        print("| cbmc resampled | (data absent) | | | | |")


if __name__ == "__main__":
    main()
