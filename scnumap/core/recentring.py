"""Recentring: take the query's systematic 2-D displacement from its reference neighbours out.

The network places a query cell at ``f(x)``; its ``k`` nearest reference cells (in the
search space) have 2-D positions whose mean is ``a``. For a reference cell itself the
offset ``f(x) - a`` (its position minus the mean of its own neighbours' positions) is not
zero: at the edge of a cluster the neighbours' mean lies inward. A query from the same
batch has offsets like these; a query from another technology, which the correction
brought next to the reference in the search space but which the network still reads
slightly differently, has offsets that point the same way over whole regions, and its
cells sit as a clump beside the reference cells they resemble. Recentring estimates, per
reference cell, the mean offset of the query cells that list it among their neighbours
(from the query sample) and the reference's own mean offset there, and moves each query
cell by the difference averaged over its neighbours. The cell-to-cell spread of the
offsets is kept; only the local mean is matched. docs/method.md ("Recentring") has the
measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def reference_offsets(embedding: np.ndarray, distances) -> np.ndarray:
    """``(n, d)`` float32: each reference cell's 2-D position minus the mean position of its
    stored graph neighbours (rows of ``distances``, its own entry left out; a cell without
    neighbours gets 0)."""
    E = np.asarray(embedding, dtype=np.float64)
    D = sp.csr_matrix(distances)
    n = D.shape[0]
    if E.shape[0] != n:
        raise ValueError(f"The embedding has {E.shape[0]} rows; the neighbour graph has {n} cells.")
    D.sum_duplicates()
    rows = np.repeat(np.arange(n), np.diff(D.indptr))
    keep = D.indices != rows  # Scanpy stores each cell's own entry on large graphs
    rows, cols = rows[keep], D.indices[keep]
    counts = np.bincount(rows, minlength=n)
    centre = np.zeros_like(E)
    np.add.at(centre, rows, E[cols])
    has = counts > 0
    offset = np.zeros_like(E)
    offset[has] = E[has] - centre[has] / counts[has, None]
    return offset.astype(np.float32)


@dataclass(frozen=True)
class Recentring:
    """Per reference cell: the query sample's mean offset and the reference's own offset.

    Attributes
    ----------
    query_offset
        ``(n_reference, d)`` mean offset of the sampled query cells listing each reference
        cell among their neighbours (0 where none does).
    count
        ``(n_reference,)`` how many sampled query cells list each reference cell.
    reference_offset
        ``(n_reference, d)`` from :func:`reference_offsets`.
    """

    query_offset: np.ndarray
    count: np.ndarray
    reference_offset: np.ndarray

    @classmethod
    def from_sample(
        cls, placed: np.ndarray, indices: np.ndarray, reference_embedding: np.ndarray, reference_offset: np.ndarray
    ) -> Recentring:
        """From the sampled query cells' network placements ``(m, d)`` and the indices of their
        ``k`` nearest reference cells ``(m, k)``."""
        n, k = reference_embedding.shape[0], indices.shape[1]
        centre = reference_embedding[indices].mean(axis=1, dtype=np.float64)
        offset = np.asarray(placed, dtype=np.float64) - centre
        flat = indices.ravel()
        count = np.bincount(flat, minlength=n)
        total = np.zeros((n, offset.shape[1]))
        np.add.at(total, flat, np.repeat(offset, k, axis=0))
        mean = np.divide(total, count[:, None], out=np.zeros_like(total), where=count[:, None] > 0)
        return cls(mean.astype(np.float32), count.astype(np.int64), np.asarray(reference_offset, dtype=np.float32))

    def shift(self, indices: np.ndarray) -> np.ndarray:
        """``(n, d)`` float32 displacement to subtract from the placements of query rows with
        reference neighbours ``indices`` ``(n, k)``: the mean, over the neighbours that the
        sample reached, of the query's minus the reference's offset (0 where it reached none)."""
        reached = (self.count[indices] > 0)[..., None]
        difference = np.where(reached, self.query_offset[indices] - self.reference_offset[indices], 0.0)
        n_reached = reached.sum(axis=1)
        out = np.zeros((indices.shape[0], difference.shape[2]))
        return np.divide(difference.sum(axis=1), n_reached, out=out, where=n_reached > 0).astype(np.float32)
