"""Nearest reference cells of query points, in the space the model was trained on.

One :class:`ReferenceIndex` per reference answers every projection onto it: exact
(:mod:`~scnumap.core.exact_search` for dense rows; scikit-learn's brute force for CSR rows,
the Manhattan metric or more than :data:`BLOCK_SEARCH_MAX_THREADS` threads) while a query
is small, pynndescent once the work of an exact search (reference cells × query cells)
passes :data:`EXACT_MAX_PAIRS` (or a lower bound of the index's own, ``exact_max_pairs``).
The pynndescent index is built at most once per reference and process: :func:`cached_index`
keeps the last :data:`CACHE_SIZE` indexes, keyed by a hash of the reference's values.
Dense or CSR input; the reference is never densified.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
import torch

from .exact_search import METRICS, exact_neighbours
from .graph import _numba_readable, check_metric

#: Largest reference × query pair count searched exactly (about 10 s on 2 cores at 50 dims).
EXACT_MAX_PAIRS = 4_000_000_000

#: Indexes kept by :func:`cached_index`.
CACHE_SIZE = 2

#: Answers kept by :meth:`ReferenceIndex.own_neighbors`: the query share's null and, for a
#: model from an older scnumap, the mapping calibration's search of every reference cell.
OWN_CACHE_SIZE = 2

#: Most threads in force (torch's count, which :func:`~scnumap.core.threads.limited_threads`
#: sets with the others) at which an exact search of dense rows uses
#: :func:`~scnumap.core.exact_search.exact_neighbours`, its blocks on that many threads. It
#: searched 1.3–1.5× faster than scikit-learn's brute force on one thread and 1.2–1.6× on
#: two (``benchmarks/search.py --exact``); more threads are not measured here, so
#: scikit-learn's search (which spreads over them too) answers there.
BLOCK_SEARCH_MAX_THREADS = 2

#: Query rows per exact search block (scikit-learn's brute force).
EXACT_BLOCK_ROWS = 4096

#: pynndescent's search breadth (its default 0.1): recall about 0.95 at 15 neighbours.
SEARCH_EPSILON = 0.1


class ReferenceIndex:
    """kNN search of query rows among the reference rows.

    Parameters
    ----------
    space
        ``(n_reference, n_dims)`` float32 array or CSR matrix: the reference cells.
    metric
        ``"euclidean"``, ``"manhattan"`` or ``"cosine"``.
    random_state
        Seed of the pynndescent index.
    exact_max_pairs
        Largest query × reference pair count this index searches exactly (at most
        :data:`EXACT_MAX_PAIRS`; ``None``: that). An index built for one projection only
        (the query share's sample) pays for its pynndescent graph and the compilation of
        its search in every call, and takes a lower bound than a reference's, which is
        built once.
    """

    def __init__(self, space, *, metric: str = "euclidean", random_state=0, exact_max_pairs: int | None = None):
        # a private copy: the cache must not follow later in-place edits of the caller's array
        self.space = sp.csr_matrix(space, dtype=np.float32, copy=True) if sp.issparse(space) else _dense(space).copy()
        self.metric = check_metric(metric)
        self.random_state = random_state
        self.exact_max_pairs = exact_max_pairs
        self._approximate = None
        self._own = OrderedDict()

    @property
    def n_reference(self) -> int:
        return self.space.shape[0]

    def query(self, Y, n_neighbors: int, *, n_queries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``n_neighbors`` nearest reference rows of each row of ``Y``.

        ``n_queries`` is the size of the whole query when ``Y`` is one block of it: the
        choice between exact and approximate search is made on the whole query, so a
        large query read in blocks is not searched exactly block after block.

        Returns
        -------
        distances, indices
            ``(n, k)`` float32 and int64, nearest first, ``k = min(n_neighbors, n_reference)``.
        """
        k = min(int(n_neighbors), self.n_reference)
        Y = sp.csr_matrix(Y, dtype=np.float32) if sp.issparse(Y) else _dense(Y)
        if Y.shape[1] != self.space.shape[1]:
            raise ValueError(f"Query rows have {Y.shape[1]} columns; the reference index has {self.space.shape[1]}.")
        if Y.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        if self.exact_for(max(Y.shape[0], n_queries or 0)):
            return self._exact(Y, k)
        index = self._pynndescent()
        indices, distances = index.query(_numba_readable(Y), k=k, epsilon=SEARCH_EPSILON)
        return distances.astype(np.float32), indices.astype(np.int64)

    def exact_for(self, n_queries: int) -> bool:
        """Whether a query of ``n_queries`` rows in all is searched exactly (no approximate
        index built yet, and at most :data:`EXACT_MAX_PAIRS` query × reference pairs, or
        ``exact_max_pairs`` when lower)."""
        limit = EXACT_MAX_PAIRS if self.exact_max_pairs is None else min(self.exact_max_pairs, EXACT_MAX_PAIRS)
        return self._approximate is None and self.n_reference * int(n_queries) <= limit

    def own_neighbors(self, rows: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`query` of the reference's own ``rows`` (each finds itself), kept for the next call.

        Every projection onto a reference asks for the same reference cells' neighbours
        (the query share's null, an older model's calibration); the last
        :data:`OWN_CACHE_SIZE` answers are kept with the index.
        """
        rows = np.asarray(rows, dtype=np.int64)
        key = (int(n_neighbors), hashlib.blake2b(rows.tobytes(), digest_size=16).hexdigest())
        return kept(
            self._own, key, lambda: self.query(self.space[rows], n_neighbors, n_queries=rows.size), OWN_CACHE_SIZE
        )

    def _exact(self, Y, k: int):
        threads = torch.get_num_threads()
        dense = not sp.issparse(self.space) and not sp.issparse(Y)
        if dense and self.metric in METRICS and threads <= BLOCK_SEARCH_MAX_THREADS:
            return exact_neighbours(Y, self.space, k, metric=self.metric, n_threads=threads)
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k, metric=self.metric, algorithm="brute").fit(self.space)
        distances = np.empty((Y.shape[0], k), np.float32)
        indices = np.empty((Y.shape[0], k), np.int64)
        for start in range(0, Y.shape[0], EXACT_BLOCK_ROWS):
            d, i = nn.kneighbors(Y[start : start + EXACT_BLOCK_ROWS])
            distances[start : start + d.shape[0]] = d
            indices[start : start + d.shape[0]] = i
        return distances, indices

    def _pynndescent(self):
        if self._approximate is None:
            from pynndescent import NNDescent

            seed = int(np.random.default_rng(self.random_state).integers(0, 2**31 - 1))
            index = NNDescent(
                _numba_readable(self.space),
                metric=self.metric,
                n_neighbors=30,
                random_state=np.random.RandomState(seed),
                low_memory=True,
                parallel_batch_queries=True,  # a query block's rows searched on every core
                verbose=False,
            )
            index.prepare()
            self._approximate = index
        return self._approximate


def _dense(X) -> np.ndarray:
    X = X.to_numpy() if hasattr(X, "to_numpy") else X
    return np.ascontiguousarray(X, dtype=np.float32)


_CACHE: OrderedDict[tuple, ReferenceIndex] = OrderedDict()


def cached_index(space, *, metric: str = "euclidean", random_state=0) -> ReferenceIndex:
    """A :class:`ReferenceIndex` of ``space``, reused while the same values come back."""
    key = (fingerprint(space), check_metric(metric), repr(random_state))
    return kept(_CACHE, key, lambda: ReferenceIndex(space, metric=metric, random_state=random_state), CACHE_SIZE)


def kept(cache: OrderedDict, key, make, size: int):
    """``cache[key]``, made by ``make()`` when absent; ``cache`` keeps the ``size`` most
    recently asked keys."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = value = make()
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def fingerprint(space) -> str:
    """A hash of the shape and values of a dense array or sparse matrix."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(space.shape).encode())
    if sp.issparse(space):
        space = sp.csr_matrix(space)
        parts = (space.data, space.indices, space.indptr)
    else:
        parts = (_dense(space),)
    for part in parts:
        digest.update(np.ascontiguousarray(part).view(np.uint8).data)
    return digest.hexdigest()
