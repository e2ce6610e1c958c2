"""Exact nearest neighbours by blocks of a distance matrix, selected in one pass.

A block of query rows ``Y_b`` against all reference rows ``X`` costs one matrix product
(BLAS), ``Y_b X^T``. Each query row ``y`` ranks the reference rows by a key of that
product: ``|x|^2 / 2 - y.x`` for the Euclidean distance (``|y - x|^2 / 2`` less a
constant of the row) and ``-y.x`` of unit rows for the cosine distance ``1 - cos``. Each
row's ``k`` smallest keys are kept in a sorted buffer (numba): a
key enters only when it beats the buffer's last, which after the first few columns is
rare, so the selection reads the block about once. The distances of the ``k`` found
rows (and of :data:`SPARE` more) are then computed from the rows themselves in float64
(the product form loses precision where ``|y|`` and ``|x|`` are large and ``y`` is near
``x``; a cell's distance to its duplicate is 0 here), each row re-sorted, ties to the
lower index, and the ``k`` nearest kept.

On two threads the blocks are searched two at a time, each on its own thread with a
one-thread matrix product (numba's and numpy's kernels release the GIL): numba's own
parallel loops next to a multi-threaded BLAS slowed each other down, each pool keeping a
core busy while it waits for work. One such search runs at a time in a process (the BLAS
limit is process-wide); a search called meanwhile from another thread reads its blocks one
after another.

Why not scikit-learn's brute force (``NearestNeighbors(algorithm="brute")``), which this
replaced on one and two threads: at the sizes of ``benchmarks/search.py --exact`` it
searched 1.3–1.5× faster on one thread and 1.2–1.6× on two (38 against 54 ms for 2,586
query × 4,440 reference rows, 50 dimensions, 15 neighbours, one thread), and a warm
``tl.project`` of those 2,586 cells with labels went from 154 to 109 µs per cell
(``benchmarks/mapping.py --parts A D``; ``benchmarks/RESULTS.md``). More threads are not
measured here: scikit-learn's search answers there
(:data:`~scnumap.core.reference_index.BLOCK_SEARCH_MAX_THREADS`).
"""

from __future__ import annotations

import functools
import threading

import numba
import numpy as np

#: Metrics searched here; others (Manhattan) go to scikit-learn's brute force.
METRICS = ("euclidean", "cosine")

#: Entries of one block of the product (16 MB of float32: it stays in a large cache while
#: it is read; much smaller blocks pay the product's fixed costs more often).
BLOCK_ENTRIES = 1 << 22

#: Rows selected beyond ``k`` before the distances are recomputed: the product's float32
#: rounding can misorder near-ties, and a row nearer than the ``k``-th is lost only when
#: more than this many others sit within that rounding of it.
SPARE = 4

#: A row's columns are read in this many interleaved passes (0, 8, 16, ..., then 1, 9, ...):
#: the first pass sees every part of the reference, so the buffer's last entry falls fast
#: also where the reference is ordered (by cell type, by sample) and a row's nearest
#: columns sit together late in it; on a reference in random order it costs a little.
STRIDE = 8

#: Most query rows per block.
MAX_BLOCK_ROWS = 4096


def exact_neighbours(Y: np.ndarray, X: np.ndarray, k: int, *, metric: str = "euclidean", n_threads: int = 1):
    """The ``k`` nearest rows of ``X`` for each row of ``Y``.

    Parameters
    ----------
    Y
        ``(n, d)`` dense query rows.
    X
        ``(m, d)`` dense reference rows.
    k
        Neighbours per query row, ``1 <= k <= m``.
    metric
        ``"euclidean"`` or ``"cosine"`` (``1 - cos``; a zero row is at distance 1 from
        every row, as in scikit-learn).
    n_threads
        Blocks searched at once, each on its own thread with a one-thread matrix product
        (the BLAS pools are set to one thread meanwhile and restored after).

    Returns
    -------
    distances, indices
        ``(n, k)`` float32 and int64, nearest first.
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS} here, got {metric!r}.")
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, m = Y.shape[0], X.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"`k` must be between 1 and the {m} reference rows, got {k}.")
    if not (np.isfinite(Y).all() and np.isfinite(X).all()):
        raise ValueError("The rows to search contain NaN or infinite values; remove or impute them first.")
    cosine = metric == "cosine"
    if cosine:
        Y, X = _unit_rows(Y), _unit_rows(X)
        keys = np.zeros(m, np.float32)
    else:
        # distances do not change when both sides move; products of rows centred on the
        # reference's mean keep float32's precision where the rows lie far from the origin
        centre = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        Y, X = Y - centre, X - centre
        keys = np.einsum("ij,ij->i", X, X) / 2
    width = min(m, k + SPARE)
    distances = np.empty((n, width), np.float32)
    indices = np.empty((n, width), np.int64)
    rows = int(min(MAX_BLOCK_ROWS, max(1, BLOCK_ENTRIES // max(m, 1))))
    if n_threads > 1:
        rows = max(1, min(rows, -(-n // n_threads)))  # a block for every thread at least

    def search(start: int) -> None:
        block = slice(start, min(n, start + rows))
        _select(Y[block] @ X.T, keys, distances[block], indices[block])
        _distances(Y[block], X, indices[block], distances[block], cosine)

    starts = range(0, n, rows)
    # one threaded search at a time per process: the BLAS limit it sets is process-wide, and
    # two searches that set and restore it at once could leave it at one thread
    if n_threads > 1 and len(starts) > 1 and _THREADED.acquire(blocking=False):
        from concurrent.futures import ThreadPoolExecutor

        try:  # the kernels release the GIL, and so does the matrix product
            with _blas().limit(limits=1, user_api="blas"), ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(search, starts))
        finally:
            _THREADED.release()
    else:
        for start in starts:
            search(start)
    return np.ascontiguousarray(distances[:, :k]), np.ascontiguousarray(indices[:, :k])


_THREADED = threading.Lock()


@functools.cache
def _blas():
    """threadpoolctl's controller of the loaded BLAS and OpenMP libraries, made once (its
    scan of the loaded libraries costs milliseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _unit_rows(A: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", A, A))
    return (A / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)


@numba.njit(nogil=True, cache=True)
def _select(products, keys, best, best_rows):  # pragma: no cover - compiled
    """Each row's ``k`` smallest ``keys[j] - products[r, j]`` and their ``j``, sorted by key
    and then by ``j`` (``kept_rows`` starts at -1, which no tie replaces before the buffer is full:
    an ``inf`` key is never equal to a finite one)."""
    n, m = products.shape
    k = best.shape[1]
    for r in range(n):
        kept = best[r]
        kept_rows = best_rows[r]
        kept[:] = np.inf
        kept_rows[:] = -1
        worst = np.inf
        row = products[r]
        for first in range(STRIDE):
            for j in range(first, m, STRIDE):
                v = keys[j] - row[j]
                if v < worst or (v == worst and j < kept_rows[k - 1]):  # ties: the lower index
                    p = k - 1
                    while p > 0 and (kept[p - 1] > v or (kept[p - 1] == v and kept_rows[p - 1] > j)):
                        kept[p] = kept[p - 1]
                        kept_rows[p] = kept_rows[p - 1]
                        p -= 1
                    kept[p] = v
                    kept_rows[p] = j
                    worst = kept[k - 1]


@numba.njit(nogil=True, cache=True)
def _distances(A, B, indices, distances, cosine):  # pragma: no cover - compiled
    """Distances from each row of ``A`` to its rows ``indices`` of ``B``, Euclidean or
    ``1 - cos`` of unit rows, in float64 from the rows; each row re-sorted (ties: the
    lower index first)."""
    n, k = indices.shape
    d = A.shape[1]
    for r in range(n):
        for j in range(k):
            i = indices[r, j]
            s = 0.0
            if cosine:
                for c in range(d):
                    s += np.float64(A[r, c]) * np.float64(B[i, c])
                distances[r, j] = max(0.0, 1.0 - s)
            else:
                for c in range(d):
                    diff = np.float64(A[r, c]) - np.float64(B[i, c])
                    s += diff * diff
                distances[r, j] = np.sqrt(s)
        for j in range(1, k):  # insertion sort of k nearly sorted entries
            v = distances[r, j]
            i = indices[r, j]
            p = j
            while p > 0 and (distances[r, p - 1] > v or (distances[r, p - 1] == v and indices[r, p - 1] > i)):
                distances[r, p] = distances[r, p - 1]
                indices[r, p] = indices[r, p - 1]
                p -= 1
            distances[r, p] = v
            indices[r, p] = i
