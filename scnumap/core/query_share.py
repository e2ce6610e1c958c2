"""Where the query has cells and the reference has none: the query share.

A cell type missing from the reference is a region of the representation space where
query cells crowd together with no reference cells among them. Pool a sample ``S`` of
the query with a sample ``R`` of the reference and take each cell's ``k`` nearest pooled
cells (itself excluded): its *query share* is the fraction of them that come from ``S``.
Reference cells' own shares are the null: where the query has a counterpart in the
reference, query and reference cells mix and a query cell's share looks like a
reference cell's; in a region the reference lacks it approaches 1.

A technology or batch shift raises every query cell's share, not only those of missing
types. So the query's shares are moved down by ``max(0, median(query) - median(null))``
before they are compared with the null: a cell scores as novel when its share stands out
against the query's typical share, which assumes that at least half of the query's
cells have a counterpart in the reference. When the typical query cell's share lies
above :data:`MIXING_QUANTILE` of the reference cells' shares, query and reference do not
mix at all (a strong batch effect): the share cannot tell a missing type from the shift,
and :meth:`QueryShare.mixes` says so (the mapping score then uses distances alone).

The share depends on the rest of the query (as Azimuth's mapping score does): mapping
the same cell with another query can change it. Both samples hold at most
:data:`SAMPLE_SIZE` cells, so the pooled index stays small for atlas-sized inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .reference_index import ReferenceIndex

#: Pooled neighbours per cell.
SHARE_NEIGHBORS = 30

#: Largest sample of the reference and of the query in the pooled index.
SAMPLE_SIZE = 20_000

#: Quantile of the reference's shares that the query's median share may reach and still mix.
MIXING_QUANTILE = 0.9

#: Fewest query cells for a share: below it a missing type cannot crowd a neighbourhood.
MIN_QUERY_CELLS = 50


class QueryShare:
    """Pooled kNN of a reference sample and a query sample.

    Parameters
    ----------
    reference
        ``(m_ref, n_dims)`` reference rows (dense or CSR) in the pool.
    query_sample
        ``(m_query, n_dims)`` dense query rows in the pool.
    metric
        Distance of the space.
    n_neighbors
        Pooled neighbours ``k`` per cell.
    random_state
        Seed of the (approximate) pooled index.
    n_queries
        Query cells whose share will be asked for (chooses exact or approximate search).
    """

    def __init__(
        self,
        reference,
        query_sample: np.ndarray,
        *,
        metric: str = "euclidean",
        n_neighbors: int = SHARE_NEIGHBORS,
        random_state=0,
        n_queries: int | None = None,
    ):
        m_ref, m_query = reference.shape[0], query_sample.shape[0]
        pool = (
            sp.vstack([sp.csr_matrix(reference), sp.csr_matrix(query_sample)]).tocsr()
            if sp.issparse(reference)
            else np.vstack([np.asarray(reference, dtype=np.float32), np.asarray(query_sample, dtype=np.float32)])
        )
        self.m_ref = m_ref
        self.k = int(min(n_neighbors, m_ref + m_query - 1))
        self.index = ReferenceIndex(pool, metric=metric, random_state=random_state)
        self._n_queries = m_ref + (n_queries if n_queries is not None else m_query)
        self.null = self._shares(reference, np.arange(m_ref))

    def share(self, Y: np.ndarray, pool_rows: np.ndarray) -> np.ndarray:
        """Query share of each row of ``Y``.

        ``pool_rows[i]`` is the row of ``Y[i]`` in the query sample (``-1`` if it is not in
        it), so that a sampled cell does not count itself.
        """
        return self._shares(Y, np.where(pool_rows >= 0, self.m_ref + pool_rows, -1))

    def shift(self, shares: np.ndarray) -> float:
        """How far the query's typical share lies above the reference's (``>= 0``)."""
        return float(max(0.0, np.median(shares) - np.median(self.null)))

    def mixes(self, shares: np.ndarray) -> bool:
        """Whether the query's median share stays within the reference's :data:`MIXING_QUANTILE`."""
        return bool(np.median(shares) <= np.quantile(self.null, MIXING_QUANTILE))

    def _shares(self, Y, own: np.ndarray) -> np.ndarray:
        _, indices = self.index.query(Y, self.k + 1, n_queries=self._n_queries)
        is_own = indices == own[:, None]
        # drop the cell itself where it is in the pool, else the farthest of the k + 1
        keep = ~is_own
        keep[~is_own.any(axis=1), -1] = False
        from_query = (indices >= self.m_ref) & keep
        return (from_query.sum(axis=1) / self.k).astype(np.float32)
