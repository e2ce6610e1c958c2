"""A Harmony-integrated reference: its integrated PCA, neighbour graph and compression.

``tl.numap(adata, batch_key=...)`` integrates the reference PCA with Harmony
(``harmonypy``, what ``sc.external.pp.harmony_integrate`` runs) and compresses the
integrated coordinates into soft clusters (:func:`compress`: k-means of the unit rows,
Harmony's number of clusters and kernel width) as a
:class:`scnumap.core.correction.ReferenceCompression`, so that ``tl.project`` can correct a
query the way Symphony does. Symphony keeps Harmony's own soft clusters instead; they
depend on Harmony's seed, and so did the labels of a cross-technology query (Wang → Xin:
0.902–0.970 over five seeds, against 0.967–0.969 with the k-means of the integrated space).
A reference integrated by the user (the neighbour graph built on
``obsm['X_pca_harmony']``) is compressed the same way. Nothing is
written to the AnnData here; the caller writes everything once the fit succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from ..core.correction import ReferenceCompression
from ._representation import neighbour_graph

#: ``obsm`` key of the integrated PCA (scanpy's ``harmony_integrate`` default).
HARMONY_KEY = "X_pca_harmony"

#: Harmony's kernel width (its default ``sigma``).
HARMONY_SIGMA = 0.1


@dataclass
class Integration:
    """What ``tl.numap`` trains on and stores for an integrated reference."""

    use_rep: str
    coordinates: np.ndarray  # (n_obs, d) integrated PCA
    compression: ReferenceCompression
    graph: AnnData | None  # a light AnnData holding the new neighbour graph, or None to keep adata's
    n_dims: int


def integrated_rep(adata: AnnData, neighbors_key: str) -> str | None:
    """The graph's ``use_rep`` when it is an integrated PCA (``X_pca_harmony``), else None."""
    params = adata.uns.get(neighbors_key, {}).get("params", {}) if neighbors_key in adata.uns else {}
    use_rep = params.get("use_rep")
    return use_rep if use_rep == HARMONY_KEY and use_rep in adata.obsm else None


def integrate(adata: AnnData, batch_key: str | None, *, neighbors_key: str, random_state) -> Integration:
    """Harmony on ``obsm['X_pca']`` (or the user's ``X_pca_harmony``) and its compression."""
    params = adata.uns[neighbors_key].get("params", {}) if neighbors_key in adata.uns else {}
    existing = integrated_rep(adata, neighbors_key)
    if existing is not None:
        logg.info(
            f"    the neighbour graph is on `obsm[{existing!r}]`: compressing that integrated space into soft "
            "clusters (k-means)"
        )
        Z = np.asarray(adata.obsm[existing], dtype=np.float64)
        n_pcs = params.get("n_pcs")
        Z = Z[:, : int(np.ravel(n_pcs)[0])] if n_pcs is not None else Z
        return Integration(existing, Z.astype(np.float32), compress(Z, random_state), None, Z.shape[1])
    if batch_key not in adata.obs:
        raise KeyError(f"`batch_key={batch_key!r}` is not a column of `adata.obs` ({list(adata.obs.columns)}).")
    if "X_pca" not in adata.obsm:
        raise ValueError("Harmony integrates `obsm['X_pca']`, which `adata` lacks; run `sc.pp.pca(adata)` first.")
    batches = pd.Series(adata.obs[batch_key]).astype(str)
    if batches.nunique() < 2:
        logg.warning(f"`adata.obs[{batch_key!r}]` has a single batch; Harmony only clusters the PCA.")
    n_pcs = params.get("n_pcs")
    X = np.asarray(adata.obsm["X_pca"], dtype=np.float64)
    X = X[:, : int(np.ravel(n_pcs)[0])] if n_pcs is not None else X
    logg.info(f"    integrating `obsm['X_pca']` ({X.shape[1]} PCs) over `obs[{batch_key!r}]` with Harmony")
    Z = _harmony(X, batches, random_state)
    graph = _graph(adata, Z, params, random_state)
    return Integration(HARMONY_KEY, Z.astype(np.float32), compress(Z, random_state), graph, Z.shape[1])


def _harmony(X: np.ndarray, batches: pd.Series, random_state) -> np.ndarray:
    """Harmony's integrated coordinates ``(N, d)`` of the PCA ``X``."""
    try:
        import harmonypy
    except ImportError as err:  # a declared dependency; a broken install says how to fix it
        raise ImportError("`batch_key` needs harmonypy: `pip install harmonypy`.") from err
    seed = 0 if random_state is None else int(np.random.default_rng(random_state).integers(0, 2**31 - 1))
    out = harmonypy.run_harmony(
        X, pd.DataFrame({"batch": batches.to_numpy()}), "batch", sigma=HARMONY_SIGMA, random_state=seed, verbose=False
    )
    Z = np.asarray(out.Z_corr)
    if Z.shape[0] != X.shape[0]:  # harmonypy < 0.1 returned (d, N)
        Z = Z.T
    return Z.astype(np.float64)


#: Most cells the k-means of :func:`compress` is fitted on (all cells are assigned).
KMEANS_SAMPLE = 50_000

#: Cells assigned at a time by :func:`compress`.
ASSIGN_BLOCK = 50_000


def compress(Z: np.ndarray, random_state, *, previous: np.ndarray | None = None) -> ReferenceCompression:
    """Soft clusters of coordinates ``Z``: k-means of the unit rows (3 starts) into Harmony's
    K = min(100, N/30) clusters, then every cell assigned with Harmony's kernel width.

    ``previous``: the ``(K_old, d)`` unit centroids of an earlier compression of some of
    these rows (a reference before :func:`scnumap.tl.extend` added cells). The k-means then
    starts once from them, with ``K - K_old`` more centres seeded as k-means++ does: the
    clusters follow the old ones where the cells did not change, and one short run replaces
    three from scratch.
    """
    from sklearn.cluster import KMeans

    n = Z.shape[0]
    k = int(max(1, min(100, round(n / 30.0))))
    unit = _unit(Z)
    rng = np.random.default_rng(random_state)
    seed = int(rng.integers(0, 2**31 - 1))
    sample = unit if n <= KMEANS_SAMPLE else unit[np.sort(rng.choice(n, KMEANS_SAMPLE, replace=False))]
    if previous is not None and 0 < previous.shape[0] <= k and previous.shape[1] == Z.shape[1]:
        init = _seeded_centres(sample, _unit(np.asarray(previous, dtype=np.float64)), k, rng)
        kmeans = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed)
    else:
        kmeans = KMeans(n_clusters=k, n_init=3, random_state=seed)
    centres = _unit(kmeans.fit(sample).cluster_centers_)
    start = ReferenceCompression(centres, np.ones(k), centres, np.full(k, HARMONY_SIGMA))
    # R @ Z and R.sum(axis=1) block by block: the (K, N) assignment is never held whole
    sizes, sums = np.zeros(k), np.zeros((k, Z.shape[1]))
    for begin in range(0, n, ASSIGN_BLOCK):
        block = np.asarray(Z[begin : begin + ASSIGN_BLOCK], dtype=np.float64)
        R = start.assign(block)
        sizes += R.sum(axis=1)
        sums += R @ block
    return ReferenceCompression.from_sums(sums, sizes, HARMONY_SIGMA)


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _seeded_centres(rows: np.ndarray, centres: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``centres`` and ``k - len(centres)`` rows drawn as k-means++ seeds them (each ∝ its
    squared distance to the nearest centre chosen so far)."""
    squared = (rows**2).sum(axis=1)
    nearest = np.maximum(np.min(squared[:, None] + (centres**2).sum(axis=1) - 2.0 * rows @ centres.T, axis=1), 0.0)
    centres = list(centres)
    while len(centres) < k:
        total = nearest.sum()
        pick = int(rng.choice(rows.shape[0], p=nearest / total)) if total > 0 else int(rng.integers(rows.shape[0]))
        centres.append(rows[pick])
        nearest = np.minimum(nearest, ((rows - rows[pick]) ** 2).sum(-1))
    return np.asarray(centres)


def _graph(adata: AnnData, Z: np.ndarray, params: dict, random_state) -> AnnData:
    """The neighbour graph on the integrated PCA, with the reference graph's settings."""
    n_neighbors = int(np.ravel(params.get("n_neighbors", 15))[0])
    metric = str(params.get("metric", "euclidean"))
    logg.info(f"    building the neighbour graph on `obsm[{HARMONY_KEY!r}]` ({n_neighbors} neighbours, {metric})")
    return neighbour_graph(Z.astype(np.float32), HARMONY_KEY, n_neighbors, metric, random_state)
