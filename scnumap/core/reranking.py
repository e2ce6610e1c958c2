"""Nearest reference cells of moved query rows, from the search made before they moved.

A plain reference with the query correction searches each query row twice: as measured
(for the mapping score) and corrected (for the vote and the placement). Where the
correction moves a row by less than the gap between its nearest neighbours and the last
one found, the corrected row's neighbours are among those already found, and the
triangle inequality proves it. With ``q`` the measured row, ``q'`` the corrected one,
``d_k`` the distance of the ``k``-th (last) reference row found for ``q`` and ``D_n`` the
distance from ``q'`` to the ``n``-th nearest of the ``k`` found rows: any reference row
``c`` not found lies at ``d(q, c) >= d_k``, so ``d(q', c) >= d_k - d(q, q')``, and if
``D_n <= d_k - d(q, q')`` no such row is nearer to ``q'`` than the ``n`` re-ranked ones.
Those rows are re-ranked; the others are searched again. The result equals a search of the
moved rows up to ties (an exact search) or up to the approximate search's own misses.

Euclidean and Manhattan distances are metrics; the cosine distance ``1 - cos`` is not,
but the chord ``sqrt(2 (1 - cos))`` between unit vectors is, so the bound is checked
on chords.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .reference_index import ReferenceIndex

#: Rows re-ranked at a time (each gathers ``k`` reference rows).
CHUNK_ROWS = 4096

#: Relative margin on the bound: the searches' float32 distances are not exact.
MARGIN = 1e-4


def moved_neighbours(
    index: ReferenceIndex,
    before: np.ndarray,
    after: np.ndarray,
    distances: np.ndarray,
    indices: np.ndarray,
    n_neighbors: int,
    *,
    n_queries: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n_neighbors`` nearest reference rows of ``after`` (the rows of ``before``, moved).

    Parameters
    ----------
    index
        The reference index that searched ``before``.
    before, after
        ``(n, n_dims)`` query rows before and after they moved.
    distances, indices
        ``index.query(before, k)``: ``(n, k)``, nearest first.
    n_neighbors
        Neighbours wanted for ``after``.
    n_queries
        As in :meth:`ReferenceIndex.query`, for the rows searched again.

    Returns
    -------
    distances, indices, searched
        ``(n, min(n_neighbors, n_reference))`` float32 and int64, nearest first, and a
        boolean ``(n,)``: the rows searched again (the others were re-ranked).
    """
    n = after.shape[0]
    width = min(int(n_neighbors), index.n_reference)
    out_d = np.empty((n, width), np.float32)
    out_i = np.empty((n, width), np.int64)
    searched = np.ones(n, dtype=bool)
    usable = (
        n
        and not sp.issparse(index.space)
        and not sp.issparse(before)
        and not sp.issparse(after)
        and indices.shape[1] >= width
    )
    if usable:
        before = np.ascontiguousarray(before, dtype=np.float32)
        after = np.ascontiguousarray(after, dtype=np.float32)
        for start in range(0, n, CHUNK_ROWS):
            rows = slice(start, min(start + CHUNK_ROWS, n))
            d, i, ok = _rerank(index, before[rows], after[rows], distances[rows], indices[rows], width)
            out_d[rows][ok], out_i[rows][ok] = d[ok], i[ok]
            searched[rows] = ~ok
    if searched.any():
        d, i = index.query(after[searched], width, n_queries=n_queries)
        out_d[searched], out_i[searched] = d, i
    return out_d, out_i, searched


def _rerank(index: ReferenceIndex, before, after, distances, indices, width: int):
    """Re-ranked candidates of one chunk and which rows the bound proves (torch: the
    gather and the distances on every core, float32 as the searches)."""
    space = torch.from_numpy(index.space)
    found = torch.from_numpy(np.clip(indices, 0, None))
    candidates = space[found.reshape(-1)].view(found.shape[0], found.shape[1], -1)  # (c, k, n_dims)
    a, b = torch.from_numpy(after), torch.from_numpy(before)
    metric = index.metric
    if metric == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        unit = torch.nn.functional.normalize(candidates, dim=2)
        D = 1.0 - torch.einsum("ckd,cd->ck", unit, a)
        shift = torch.linalg.vector_norm(a - torch.nn.functional.normalize(b, dim=1), dim=1)
    else:
        p = 1 if metric == "manhattan" else 2
        D = torch.linalg.vector_norm(candidates - a[:, None, :], ord=p, dim=2)
        shift = torch.linalg.vector_norm(a - b, ord=p, dim=1)
    D_sorted, order = torch.sort(D, dim=1, stable=True)
    D_sorted, order = D_sorted[:, :width].numpy().astype(np.float64), order[:, :width].numpy()
    last, nth, shift = distances[:, -1].astype(np.float64), D_sorted[:, -1], shift.numpy().astype(np.float64)
    if metric == "cosine":  # the bound on chords between unit vectors
        last, nth = np.sqrt(2.0 * np.clip(last, 0.0, None)), np.sqrt(2.0 * np.clip(nth, 0.0, None))
    everything = indices.shape[1] >= index.n_reference  # nothing left unfound
    ok = everything | (nth <= last - shift - MARGIN * (last + shift))
    ok &= (indices >= 0).all(axis=1) & np.isfinite(D_sorted).all(axis=1)
    if metric == "cosine":  # zero rows have no direction
        ok &= (np.linalg.norm(after, axis=1) > 0) & (np.linalg.norm(before, axis=1) > 0)
    return D_sorted.astype(np.float32), np.take_along_axis(indices, order, axis=1), ok
