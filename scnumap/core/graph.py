"""The neighbour graph: kNN search → UMAP fuzzy simplicial set → edges.

The kNN search and the fuzzy union are umap-learn's and pynndescent's own code
(the same that ``sc.pp.neighbors`` runs); nothing here re-implements them.
:class:`KnnGraph` is the seam between building a graph (here, or read from
``adata.obsp``) and training on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._checks import check_n_neighbors

#: Metrics for which scnumap can compute the input distance of any graph edge.
SUPPORTED_METRICS = ("euclidean", "manhattan", "cosine")

#: Other names scipy, scikit-learn and pynndescent (hence ``sc.pp.neighbors``) accept for them.
METRIC_ALIASES = {"l2": "euclidean", "l1": "manhattan", "cityblock": "manhattan", "taxicab": "manhattan"}

#: Below this many samples the kNN search is exact (scikit-learn, brute force), above it
#: pynndescent: scanpy's thresholds (``sc.pp.neighbors``: 8,192 for the Euclidean metric,
#: 4,096 for the others). An exact search of 5,685 cells took 0.08 s, while pynndescent's
#: numba code is compiled in the first search of every new process: 13 s more for the first
#: fit of pbmc4k and of kidney on 2 cores (benchmarks/first_fit.py).
EXACT_KNN_MAX_SAMPLES = 4096
EXACT_KNN_MAX_SAMPLES_EUCLIDEAN = 8192


def exact_knn(n_obs: int, metric: str) -> bool:
    """Whether a kNN search of ``n_obs`` rows in ``metric`` is exact (scanpy's rule)."""
    limit = EXACT_KNN_MAX_SAMPLES_EUCLIDEAN if check_metric(metric) == "euclidean" else EXACT_KNN_MAX_SAMPLES
    return n_obs < limit


@dataclass(frozen=True)
class KnnGraph:
    """A symmetric fuzzy neighbour graph.

    Attributes
    ----------
    connectivities
        ``(n, n)`` CSR matrix, symmetric, weights in ``(0, 1]``, no self loops.
    """

    connectivities: sp.csr_matrix

    @property
    def n_obs(self) -> int:
        return self.connectivities.shape[0]

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directed edges ``(heads, tails, weights)``, both directions of every pair."""
        coo = self.connectivities.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float32)


def knn_search(X, n_neighbors: int, *, metric: str = "euclidean", random_state=0):
    """Nearest neighbours of every row of ``X`` (self first).

    Exact below :data:`EXACT_KNN_MAX_SAMPLES_EUCLIDEAN` rows (Euclidean) or
    :data:`EXACT_KNN_MAX_SAMPLES` (other metrics), pynndescent above (:func:`exact_knn`).

    Returns
    -------
    indices, distances
        Arrays of shape ``(n, n_neighbors)``.
    """
    metric = check_metric(metric)
    n = X.shape[0]
    check_n_neighbors(n_neighbors, n)
    if exact_knn(n, metric):
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=n_neighbors, metric=metric, algorithm="brute")
        distances, indices = nn.fit(X).kneighbors(X)
        # put each sample first in its own list, even among exact duplicates
        indices, distances = _self_first(indices, distances)
        return indices.astype(np.int64), distances.astype(np.float32)
    from pynndescent import NNDescent

    seed = int(np.random.default_rng(random_state).integers(0, 2**31 - 1))
    index = NNDescent(
        _numba_readable(X),
        n_neighbors=n_neighbors,
        metric=metric,
        random_state=np.random.RandomState(seed),
        n_trees=min(64, 5 + round(n**0.5 / 20.0)),
        n_iters=max(5, round(np.log2(n))),
        low_memory=True,
        verbose=False,
    )
    indices, distances = index.neighbor_graph
    return indices.astype(np.int64), distances.astype(np.float32)


def _numba_readable(X):
    """``X`` as pynndescent's numba code accepts it: numba cannot type read-only arrays
    (as_matrix's shared view), so hand over a writeable view of the same memory when the
    owner allows it, else a copy. pynndescent only reads its data for these metrics."""
    if sp.issparse(X) or X.flags.writeable:
        return X
    view = X.view()
    try:
        view.flags.writeable = True
    except ValueError:  # the caller's own array is read-only
        return X.copy()
    return view


def _self_first(indices: np.ndarray, distances: np.ndarray):
    rows = np.arange(indices.shape[0])
    has_self = indices == rows[:, None]
    missing = ~has_self.any(axis=1)
    indices = indices.copy()
    distances = distances.copy()
    # rows whose own index was displaced by a duplicate: replace the last entry by self
    indices[missing, -1] = rows[missing]
    distances[missing, -1] = 0.0
    order = np.argsort(~(indices == rows[:, None]), axis=1, kind="stable")
    indices, distances = np.take_along_axis(indices, order, 1), np.take_along_axis(distances, order, 1)
    distances[:, 0] = 0.0  # brute force returns ~1e-7 for self; UMAP's rho needs an exact 0
    return indices, distances


def fuzzy_graph(indices: np.ndarray, distances: np.ndarray) -> KnnGraph:
    """UMAP's fuzzy simplicial set (smooth-kNN + fuzzy union) from a kNN result."""
    from umap.umap_ import fuzzy_simplicial_set

    n_neighbors = indices.shape[1]
    graph, _, _ = fuzzy_simplicial_set(
        np.empty((indices.shape[0], 0), dtype=np.float32),
        n_neighbors,
        np.random.RandomState(0),
        "euclidean",
        knn_indices=indices,
        knn_dists=distances,
    )
    return KnnGraph(_clean(graph))


def build_graph(X, n_neighbors: int = 15, *, metric: str = "euclidean", random_state=0) -> KnnGraph:
    """kNN search then fuzzy union: the graph ``sc.pp.neighbors`` would build."""
    if sp.issparse(X) and X.shape[0] < EXACT_KNN_MAX_SAMPLES:
        X = X.toarray()  # a small matrix: dense brute force is faster
    indices, distances = knn_search(X, n_neighbors, metric=metric, random_state=random_state)
    return fuzzy_graph(indices, distances)


def graph_from_matrices(connectivities, distances=None, *, n_obs: int) -> KnnGraph:
    """Wrap a precomputed fuzzy graph (e.g. ``adata.obsp['connectivities']``).

    Parameters
    ----------
    connectivities
        ``(n_obs, n_obs)`` sparse or dense matrix with weights in ``[0, 1]``.
        It is symmetrised by the fuzzy union if it is not symmetric.
    distances
        Optional ``(n_obs, n_obs)`` kNN distance matrix (``adata.obsp['distances']``),
        accepted so that calls written for umap-learn and Scanpy run; only its shape is
        checked. Nothing reads its values: the edge lengths that input noise and DensMAP
        need are computed from the data, in the metric, for every edge of the (symmetric)
        graph, including the reverse edges that the kNN distances lack.
    n_obs
        Number of samples the graph must cover.
    """
    if connectivities is None:
        raise ValueError("`graph` is None; pass the fuzzy connectivities matrix or leave both out.")
    G = sp.csr_matrix(connectivities, dtype=np.float32, copy=True)
    if G.shape != (n_obs, n_obs):
        raise ValueError(
            f"The graph has shape {G.shape} but the data has {n_obs} samples; "
            f"pass an ({n_obs}, {n_obs}) connectivities matrix."
        )
    G.sum_duplicates()
    if not np.all(np.isfinite(G.data)) or (G.data.size and (G.data.min() < 0 or G.data.max() > 1 + 1e-6)):
        raise ValueError(
            "Graph weights must be finite and in [0, 1] (a fuzzy graph such as "
            "`adata.obsp['connectivities']`), got values outside that range."
        )
    asym = abs(G - G.T)
    if asym.nnz and asym.max() > 1e-5:
        G = G + G.T - G.multiply(G.T)  # fuzzy union, as in umap-learn
    if distances is not None and tuple(distances.shape) != (n_obs, n_obs):
        raise ValueError(
            f"`knn_distances` has shape {tuple(distances.shape)}, expected ({n_obs}, {n_obs}); "
            "pass the distances that came with the graph (`adata.obsp['distances']`) or None."
        )
    return KnnGraph(_clean(G))


def _clean(graph) -> sp.csr_matrix:
    G = sp.csr_matrix(graph, dtype=np.float32)
    G.setdiag(0)
    G.eliminate_zeros()
    G.sort_indices()
    return G


def check_metric(metric: str) -> str:
    """The canonical name of a supported metric (``"l2"`` → ``"euclidean"``, ``"l1"`` or
    ``"cityblock"`` → ``"manhattan"``); a clear error for any other."""
    name = METRIC_ALIASES.get(metric, metric) if isinstance(metric, str) else metric
    if name not in SUPPORTED_METRICS:
        raise ValueError(
            f"`metric` must be one of {SUPPORTED_METRICS} (or an alias: {sorted(METRIC_ALIASES)}), got {metric!r}. "
            "For a Scanpy graph built with another metric, re-run "
            "`sc.pp.neighbors(adata, metric='euclidean')` (or 'cosine', 'manhattan')."
        )
    return name


def edge_distances(
    X, heads: np.ndarray, tails: np.ndarray, *, metric: str = "euclidean", chunk_size: int = 200_000
) -> np.ndarray:
    """Input-space distance of every edge ``(heads[e], tails[e])``, in chunks (dense or sparse ``X``).

    Distances as scikit-learn's ``paired_distances`` gives them (cosine: half the squared
    distance of the rows scaled to unit length, a row of zeros left as it is)."""
    metric = check_metric(metric)
    out = np.empty(heads.shape[0], dtype=np.float32)
    if metric == "cosine":  # then half the squared Euclidean distance of these rows
        from sklearn.preprocessing import normalize

        X = normalize(X if sp.issparse(X) else np.asarray(X))  # unit rows; a row of zeros stays zero
    for start in range(0, heads.shape[0], chunk_size):
        h = X[heads[start : start + chunk_size]]
        t = X[tails[start : start + chunk_size]]
        stop = start + h.shape[0]
        out[start:stop] = _paired_sparse(h, t, metric) if sp.issparse(h) else _paired_dense(h, t, metric)
    return out


def _paired_dense(h: np.ndarray, t: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distances between two dense arrays of the same shape (``h`` is overwritten;
    for ``"cosine"``, rows already of unit length)."""
    diff = np.subtract(h, t, out=h) if h.dtype.kind == "f" else h - t
    if metric == "manhattan":
        return np.abs(diff).sum(axis=1)
    squared = np.einsum("ij,ij->i", diff, diff)
    return 0.5 * squared if metric == "cosine" else np.sqrt(squared)


def mean_squared_edge_length(rows: np.ndarray, lengths: np.ndarray, weights: np.ndarray, n_obs: int) -> np.ndarray:
    """Per vertex ``i``: ``sum_e w_e d_e^2 / sum_e w_e`` over the edges ``e`` with ``rows[e] == i``
    (0 for a vertex without edges), in float64."""
    weights = np.asarray(weights, dtype=np.float64)
    num = np.bincount(rows, weights=weights * np.asarray(lengths, dtype=np.float64) ** 2, minlength=n_obs)
    den = np.bincount(rows, weights=weights, minlength=n_obs)
    return np.divide(num, den, out=np.zeros(n_obs), where=den > 0)


def _paired_sparse(h: sp.spmatrix, t: sp.spmatrix, metric: str) -> np.ndarray:
    """Row-wise distances between two sparse matrices of the same shape (for ``"cosine"``,
    rows already of unit length)."""
    diff = sp.csr_matrix(h, dtype=np.float64) - sp.csr_matrix(t, dtype=np.float64)
    if metric == "manhattan":
        return np.asarray(abs(diff).sum(axis=1)).ravel()
    squared = np.asarray(diff.multiply(diff).sum(axis=1)).ravel()
    return 0.5 * squared if metric == "cosine" else np.sqrt(squared)
