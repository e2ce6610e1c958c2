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

A share is a count among ``k`` neighbours, so it scatters from cell to cell. Each cell's
share is therefore averaged with those of the query-sample cells among its ``k`` pooled
neighbours (their own shares as counted): where a type is missing, those neighbours crowd
the same region and their shares are high too, while a typical cell's average comes closer
to the typical share. Query cells and the null (the reference cells) are averaged alike,
so they stay comparable. On the leave-one-type-out sets of ``benchmarks/mapping.py`` this
raised the mean novelty AUROC of the mapping score from 0.898 to 0.907 (35 left-out types;
benchmarks/RESULTS.md, "Query mapping").

The share depends on the rest of the query (as Azimuth's mapping score does): mapping
the same cell with another query can change it. The pool is the whole reference and a
query sample of at most :data:`SAMPLE_SIZE` cells; a cell's ``k`` nearest pooled cells
are merged from its nearest reference cells (the search the mapping score and the label
vote make anyway) and its nearest cells of the query sample (a small index), so the
pooled index is never built. The null is the shares of at most :data:`NULL_SIZE`
reference cells.

Where the query sample is searched approximately (a large query), it is searched in two
stages: first for the few nearest sample cells that a typical cell's ``k`` pooled
neighbours hold (read off the sample's own shares, :meth:`QueryShare.narrow`), then again
at full width only for the rows whose pooled neighbours took every sample cell found, as
more may follow. A row whose last-found sample cell is not among its ``k`` nearest has no
farther one among them either, so the counts are those of one full-width search (up to
the approximate search's own misses).
"""

from __future__ import annotations

import numpy as np

from .reference_index import ReferenceIndex

#: Pooled neighbours per cell.
SHARE_NEIGHBORS = 30

#: Largest query sample in the pool.
SAMPLE_SIZE = 20_000

#: Reference cells whose shares form the null (all of them in a smaller reference).
NULL_SIZE = 5_000

#: Quantile of the reference's shares that the query's median share may reach and still mix.
MIXING_QUANTILE = 0.9

#: Fewest query cells for a share: below it a missing type cannot crowd a neighbourhood.
MIN_QUERY_CELLS = 50

#: Share of the query sample's rows whose first, narrow search (:meth:`QueryShare.narrow`)
#: falls short, so that they are searched again at full width.
WIDEN_QUANTILE = 0.05

#: Fewest sample cells that the first search of an approximate two-stage search looks for.
MIN_FIRST_WIDTH = 5

#: Largest query × sample pair count whose sample search is exact (120,000 query cells
#: against a full sample). The sample's pynndescent index is built, and its search
#: compiled by numba, in every projection (a few seconds on 2 cores), so it pays from a
#: lower count than a reference's index, which is built once: on a 2,989-cell corrected
#: reference with a 20,000-cell sample, ``tl.project`` of 80,000 / 100,000 / 150,000 /
#: 200,000 query cells took 5.5 / 6.5 / 9.7 / 12.2 s with the exact sample search (by
#: :mod:`~scnumap.core.exact_search`) and 6.8 / 6.8 / 8.5 / 10.1 s with the approximate one
#: (fastest of two calls, ``benchmarks/share_search.py``).
SAMPLE_EXACT_MAX_PAIRS = 2_400_000_000


class QueryShare:
    """The reference and a query sample, pooled.

    Parameters
    ----------
    reference
        The reference's :class:`~scnumap.core.reference_index.ReferenceIndex`, or its
        ``(n_reference, n_dims)`` rows (dense or CSR).
    query_sample
        ``(m_query, n_dims)`` dense query rows in the pool.
    metric
        Distance of the space (that of ``reference`` when it is an index).
    n_neighbors
        Pooled neighbours ``k`` per cell.
    null_size
        Reference cells whose shares form the null (a random sample when the reference
        is larger); their rows are :attr:`null_rows`.
    random_state
        Seed of the null's sample and of the query sample's (approximate) index.
    n_queries
        Query cells whose share will be asked for (chooses exact or approximate search).
    search_width
        Nearest reference cells to find for each sample cell (at least ``k``): the query
        sample's own search, kept in :attr:`sample_search` for the projection to reuse.

    Attributes
    ----------
    null
        ``(len(null_rows),)`` averaged shares of the null's reference cells.
    null_counts
        ``(len(null_rows),)`` query-sample cells among their ``k`` pooled neighbours.
    sample_shares
        ``(m_query,)`` averaged shares of the query sample's own cells.
    sample_counts
        ``(m_query,)`` query-sample cells among each sample cell's ``k`` pooled neighbours
        (what :meth:`narrow` reads).
    sample_search
        ``(distances, indices)`` of the query sample's nearest reference cells, nearest first.
    """

    def __init__(
        self,
        reference,
        query_sample: np.ndarray,
        *,
        metric: str = "euclidean",
        n_neighbors: int = SHARE_NEIGHBORS,
        null_size: int = NULL_SIZE,
        random_state=0,
        n_queries: int | None = None,
        search_width: int = 0,
    ):
        if not isinstance(reference, ReferenceIndex):
            reference = ReferenceIndex(reference, metric=metric, random_state=random_state)
        self.reference = reference
        m_ref, m_query = reference.n_reference, query_sample.shape[0]
        self.k = int(min(n_neighbors, m_ref + m_query - 1))
        rng = np.random.default_rng(random_state)
        self.sample = ReferenceIndex(
            np.asarray(query_sample, dtype=np.float32),
            metric=reference.metric,
            random_state=int(rng.integers(0, 2**31 - 1)),
            exact_max_pairs=SAMPLE_EXACT_MAX_PAIRS,
        )
        self._n_queries = n_queries if n_queries is not None else m_query
        self.first_width = self.k  # sample cells sought by the first search (:meth:`narrow`)
        rows = np.arange(m_ref) if m_ref <= null_size else np.sort(rng.choice(m_ref, null_size, replace=False))
        self.null_rows = rows
        distances, indices = reference.own_neighbors(rows, self.k + 1)
        self.null_counts, null_near = self._counts(
            _without(distances, indices, rows, self.k)[0], reference.space[rows], np.full(rows.size, -1), self.k
        )
        sample = self.sample.space
        self.sample_search = reference.query(sample, max(self.k, int(search_width)), n_queries=self._n_queries)
        own = np.arange(m_query)
        self.sample_counts, sample_near = self._counts(_padded(self.sample_search[0], self.k), sample, own, self.k)
        self._sample_raw = (self.sample_counts / self.k).astype(np.float32)
        self.null = self._averaged(self.null_counts, null_near)
        self.sample_shares = self._averaged(self.sample_counts, sample_near)

    def share(self, Y: np.ndarray, pool_rows: np.ndarray, reference_distances: np.ndarray | None = None) -> np.ndarray:
        """Query share of each row of ``Y``, averaged with those of its query-sample neighbours.

        ``pool_rows[i]`` is the row of ``Y[i]`` in the query sample (``-1`` if it is not in
        it), so that a sampled cell does not count itself. ``reference_distances`` are the
        rows' sorted distances to their nearest reference cells (at least ``k`` columns,
        or all the reference), when a search has found them already.
        """
        return self._averaged(*self.count(Y, pool_rows, reference_distances))

    def count(
        self, Y: np.ndarray, pool_rows: np.ndarray, reference_distances: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Query-sample cells among the ``k`` pooled neighbours of each row of ``Y`` (its
        share before the average is this ÷ ``k``), and which: ``(n, k)`` sample rows, nearest
        first, ``-1`` after the last. Arguments as :meth:`share`."""
        if reference_distances is None or reference_distances.shape[1] < min(self.k, self.reference.n_reference):
            reference_distances, _ = self.reference.query(Y, self.k, n_queries=self._n_queries)
        reference_distances = _padded(reference_distances, self.k)
        own = np.asarray(pool_rows)
        width = self.first_width
        counts, near = self._counts(reference_distances, Y, own, width)
        if width < self.k:
            # every sample cell found is among the k nearest: farther ones may be too
            wide = np.flatnonzero(counts >= width)
            if wide.size:
                counts[wide], near[wide] = self._counts(reference_distances[wide], Y[wide], own[wide], self.k)
        return counts, near

    def narrow(self) -> int:
        """Search the query sample in two stages from now on, when it is searched approximately.

        The first search looks for one more sample cell than all but :data:`WIDEN_QUANTILE`
        of the query sample's own cells hold among their ``k`` pooled neighbours (at least
        :data:`MIN_FIRST_WIDTH`), so that about that share of rows is searched again. An
        exact search is not narrowed (its cost hardly depends on the width). Returns
        :attr:`first_width`.
        """
        counts = self.sample_counts
        if self.sample.exact_for(self._n_queries) or len(counts) == 0:
            return self.first_width
        width = int(np.quantile(counts, 1.0 - WIDEN_QUANTILE)) + 1
        self.first_width = int(min(self.k, max(width, MIN_FIRST_WIDTH)))
        return self.first_width

    def shift(self, shares: np.ndarray) -> float:
        """How far the query's typical share lies above the reference's (``>= 0``)."""
        return float(max(0.0, np.median(shares) - np.median(self.null)))

    def mixes(self, shares: np.ndarray) -> bool:
        """Whether the query's median share stays within the reference's :data:`MIXING_QUANTILE`."""
        return bool(np.median(shares) <= np.quantile(self.null, MIXING_QUANTILE))

    def _averaged(self, counts: np.ndarray, near: np.ndarray) -> np.ndarray:
        """Each row's share (``counts / k``) averaged with the shares of the sample cells ``near`` it."""
        found = near >= 0
        neighbours = np.where(found, self._sample_raw[np.maximum(near, 0)], 0.0).sum(axis=1)
        return ((counts / self.k + neighbours) / (1.0 + found.sum(axis=1))).astype(np.float32)

    def _counts(self, reference_distances: np.ndarray, Y, own: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample cells among the ``k`` nearest of the merged neighbours, from the ``width``
        nearest sample cells of each row (itself excluded), and their rows (``(n, k)``,
        ``-1`` after the last); ``reference_distances``: sorted, ``k`` columns."""
        distances, indices = self.sample.query(Y, width + 1, n_queries=self._n_queries)
        query_distances, query_rows = _without(distances, indices, own, width)
        # the j-th nearest sample cell is among the k nearest merged cells when fewer than
        # k - j + 1 reference cells lie as near or nearer (ties go to the reference): when it
        # is strictly nearer than the (k - j + 1)-th reference cell. Both sides are sorted, so
        # the sample cells that count are the first ones.
        counts = (query_distances < reference_distances[:, ::-1][:, :width]).sum(axis=1)
        near = np.full((counts.size, self.k), -1, dtype=np.int64)
        counted = np.arange(width)[None, :] < counts[:, None]
        near[:, :width][counted] = query_rows[counted]
        return counts, near


def _without(distances: np.ndarray, indices: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest distances of each row without its own entry ``own[i]`` (``-1``: none),
    ``inf``-padded, and their indices (``-1``-padded)."""
    keep = indices != own[:, None]
    keep &= np.cumsum(keep, axis=1) <= k
    out = np.full((distances.shape[0], k), np.inf, dtype=np.float32)
    rows = np.full((distances.shape[0], k), -1, dtype=np.int64)
    counts = keep.sum(axis=1)
    columns = np.arange(k)[None, :] < counts[:, None]
    out[columns] = distances[keep]
    rows[columns] = indices[keep]
    return out, rows


def _padded(distances: np.ndarray, k: int) -> np.ndarray:
    """``distances`` with ``k`` columns, ``inf`` where fewer cells exist."""
    if distances.shape[1] >= k:
        return distances[:, :k].astype(np.float32, copy=False)
    out = np.full((distances.shape[0], k), np.inf, dtype=np.float32)
    out[:, : distances.shape[1]] = distances
    return out
