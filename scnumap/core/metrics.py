"""Quality measures used by the tests and the benchmarks (docs/method.md and benchmarks/RESULTS.md report them)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.stats import spearmanr


def _knn_indices(X, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]


def trustworthiness(X, Y, k: int = 15) -> float:
    """sklearn's trustworthiness with ``k`` neighbours."""
    from sklearn.manifold import trustworthiness as _trust

    return float(_trust(np.asarray(X), np.asarray(Y), n_neighbors=k))


def knn_preservation(X, Y, k: int = 15) -> float:
    """Mean over samples of ``|N_k(x) ∩ N_k(y)| / k``."""
    a = _knn_indices(X, k)
    b = _knn_indices(Y, k)
    hits = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def other_label_share(Y, labels, k: int = 15) -> float:
    """Share of samples with a sample of another label among their ``k`` nearest in ``Y``
    (0 when the labels' groups lie apart, e.g. the two loops of two circles)."""
    labels = np.asarray(labels)
    return float(np.mean((labels[_knn_indices(Y, k)] != labels[:, None]).any(axis=1)))


def local_log_radius(X, k: int = 15) -> np.ndarray:
    """Log of the mean squared Euclidean distance to the ``k`` nearest neighbours."""
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    return np.log(np.mean(dist[:, 1:] ** 2, axis=1) + 1e-12)


def density_correlation(X, Y, k: int = 15) -> float:
    """Pearson r between the local log radii in the data and in the embedding."""
    return float(np.corrcoef(local_log_radius(X, k), local_log_radius(Y, k))[0, 1])


def centroid_distance_spearman(X, Y, labels) -> float:
    """Spearman correlation of pairwise cluster-centroid distances, data vs embedding."""
    from scipy.spatial.distance import pdist

    labels = np.asarray(labels)
    groups = [g for g in np.unique(labels)]
    cx = np.stack([np.asarray(X)[labels == g].mean(axis=0) for g in groups])
    cy = np.stack([np.asarray(Y)[labels == g].mean(axis=0) for g in groups])
    return float(spearmanr(pdist(cx), pdist(cy)).correlation)


def label_transfer_accuracy(Y_ref, labels_ref, Y_query, labels_query, k: int = 15) -> float:
    """Accuracy of a kNN classifier fitted on the reference embedding, scored on the query."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=k).fit(Y_ref, np.asarray(labels_ref))
    return float(np.mean(clf.predict(Y_query) == np.asarray(labels_query)))


def laplace_kernel_graph(X, n_neighbors: int = 10) -> sp.csr_matrix:
    """The kNN Laplace-kernel affinity of GrEASE's batches, built on all points."""
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float64)
    dist, idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(X).kneighbors(X)
    sigma = np.maximum(np.median(dist, axis=1), 1e-8)
    w = np.exp(-dist / sigma[:, None])
    n = X.shape[0]
    W = sp.csr_matrix((w[:, 1:].ravel(), (np.repeat(np.arange(n), n_neighbors), idx[:, 1:].ravel())), shape=(n, n))
    W.setdiag(0)
    W.eliminate_zeros()
    return ((W + W.T) / 2).tocsr()


def exact_spectral_embedding(
    X,
    n_components: int,
    n_neighbors: int = 10,
    *,
    standardize: bool = True,
    random_walk: bool = False,
    return_eigenvalues: bool = False,
):
    """Bottom non-trivial eigenvectors of the symmetric normalised Laplacian (``eigsh``).

    With ``standardize``, ``X`` is centred and divided by one global scale first, as
    GrEASE does, so the kNN graph is the same. With ``random_walk``, the eigenvectors
    ``D^-1/2 phi`` of the random-walk Laplacian ``I - D^-1 W`` (same eigenvalues), which
    GrEASE learns, instead of ``phi``. With ``return_eigenvalues``, also their Laplacian
    eigenvalues (ascending), as ``(vectors, eigenvalues)``.
    """
    X = np.asarray(X, dtype=np.float64)
    if standardize:
        X = X - X.mean(axis=0)
        X = X / np.sqrt((X**2).sum(axis=0).mean() / X.shape[0])
    W = laplace_kernel_graph(X, n_neighbors)
    d = np.asarray(W.sum(axis=1)).ravel()
    d_inv_sqrt = sp.diags(1.0 / np.sqrt(np.maximum(d, 1e-12)))
    M = d_inv_sqrt @ W @ d_inv_sqrt
    # Deflate the trivial eigenvector sqrt(d): on a graph with several connected
    # components eigenvalue 1 of M repeats, and "drop the top vector" would drop an
    # arbitrary mix of the trivial vector and a component indicator.
    root_degree = np.sqrt(d) / np.linalg.norm(np.sqrt(d))
    deflated = LinearOperator(M.shape, matvec=lambda v: M @ v - root_degree * (root_degree @ v), dtype=np.float64)
    start = np.random.default_rng(0).standard_normal(M.shape[0])  # a deterministic start
    vals, vecs = eigsh(deflated, k=n_components, which="LA", v0=start)
    order = np.argsort(-vals)
    vecs = vecs[:, order]
    if random_walk:
        vecs = vecs / np.sqrt(np.maximum(d, 1e-12))[:, None]
    return (vecs, 1.0 - vals[order]) if return_eigenvalues else vecs


def grassmann_distance(A, B) -> float:
    """Mean ``sin^2`` of the principal angles between the column spaces of ``A`` and ``B``."""
    qa, _ = np.linalg.qr(np.asarray(A, dtype=np.float64))
    qb, _ = np.linalg.qr(np.asarray(B, dtype=np.float64))
    cos = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)
    return float(np.mean(1.0 - cos**2))
