"""Exact kNN from the full float64 distance matrix, the truth the search tests compare with."""

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import cdist

SCIPY_METRIC = {"euclidean": "euclidean", "manhattan": "cityblock", "cosine": "cosine"}


def brute(ref, query, k, metric="euclidean"):
    """(distances, indices) of each query row's ``k`` nearest reference rows, nearest first,
    ties to the lower index (a stable sort)."""
    ref = ref.toarray() if sp.issparse(ref) else ref
    query = query.toarray() if sp.issparse(query) else query
    D = cdist(query.astype(np.float64), ref.astype(np.float64), metric=SCIPY_METRIC[metric])
    order = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, axis=1), order
