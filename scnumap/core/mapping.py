"""How well a query cell maps onto the reference, and what its reference neighbours say.

Everything here works on the ``k`` nearest reference cells of each query cell in the
space the model was trained on (distances ``d_1 ≤ … ≤ d_k`` to reference cells
``n_1 … n_k``), found by :class:`scnumap.core.reference_index.ReferenceIndex`.

Mapping score
    Each reference cell ``j`` has a local radius ``r_j``: the mean distance to its own
    ``k`` reference neighbours (itself excluded; from the neighbour graph the model was
    trained on). A query cell gives two distance statistics,

    ``s_dist = mean_i d_i``  and  ``s_ratio = mean_i d_i / mean_i r_{n_i}``,

    how far it is from the reference, in absolute terms and relative to how far apart
    reference cells are where it lands (a cell in a gap between dense populations is near
    in absolute terms, far relative to them). The same statistics of every reference cell,
    left out of its own neighbour list (``r_j`` and ``r_j / mean r`` of its neighbours),
    are the null, stored per cell. With a query of at least
    :data:`scnumap.core.query_share.MIN_QUERY_CELLS` cells, a third statistic says where
    the query crowds together without reference cells (the query share, see
    :mod:`scnumap.core.query_share`). Each statistic gives a conformal p-value against
    its null, ``p = (1 + #{null >= s}) / (1 + n_null)``; Fisher's ``T = -Σ log p`` joins
    them, and ``T`` of the reference cells themselves is the null of ``T``: the mapping
    score is the conformal p-value of a cell's ``T``, the share of reference cells that
    look less typical than it (near 1 for the most typical cells, near 0 for cells unlike
    any). A score below ``t`` happens to a share ``t`` of reference cells, so the default
    ``unknown_threshold`` :data:`DEFAULT_UNKNOWN_RATE` calls 1.5 % of them Unknown.

Label probabilities
    Neighbour ``i`` votes with weight ``w_i ∝ exp(-(d_i - d_1) / mean_i r_{n_i})``; a class's
    probability is its share of the weight of the labelled neighbours. Ties go to the class
    of the nearest neighbour among the tied ones.

Anchored placement
    The weighted mean ``a = Σ w_i y_{n_i}`` of the neighbours' embedding coordinates and
    their weighted spread ``ρ = (Σ w_i |y_{n_i} - a|²)^½`` bound the network's placement
    ``f(x)``: a cell whose ``f(x)`` lies further than ``anchor × ρ`` from ``a`` is moved
    onto that circle, toward ``a``; all others keep ``f(x)``.

Label-consistent placement
    With a transferred label ``c`` (the vote above), a cell should land among reference
    cells of type ``c``. Where more of the ``k`` nearest reference cells of its 2-D position
    are of another type than of type ``c`` (what a kNN classifier of the map sees), the
    cell moves toward its reference neighbours of type ``c``: their weighted mean ``a_c``
    and spread ``ρ_c`` (the weights ``w_i`` restricted to them) take the place of ``a`` and
    ``ρ`` in the anchored placement, with ``anchor`` 1; where type ``c`` is still outnumbered
    there, to ``a_c``; where it is outnumbered at ``a_c`` too (the neighbours of type ``c``
    lie in two places), to the 2-D position of its nearest neighbour of type ``c`` that is
    *typical* (type ``c`` is the commonest among that reference cell's own ``k`` nearest
    cells in the map), or of its nearest neighbour of type ``c`` if none is. Cells called
    Unknown keep their place, and so does a cell that is a reference cell (nearest
    reference distance at most :data:`SAME_CELL_DISTANCE` × that cell's radius): it lies
    where the map puts that reference cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .graph import check_metric
from .recentring import reference_offsets

#: Share of reference cells the default threshold calls Unknown.
DEFAULT_UNKNOWN_RATE = 0.015

#: Neighbours per reference cell when a calibration is searched rather than read from
#: the neighbour graph (``sc.pp.neighbors``' default 15, the cell itself excluded).
CALIBRATION_NEIGHBORS = 14

#: Smallest local radius, relative to the median one (duplicated cells have radius 0).
MIN_RADIUS_FRACTION = 1e-3

#: A query cell at most this many local radii from a reference cell is that cell (a
#: reference cell projected again): the placement by label leaves it where the map put it.
SAME_CELL_DISTANCE = 1e-3


class CalibrationFormatError(ValueError):
    """A stored mapping calibration is missing or malformed."""


@dataclass(frozen=True)
class MappingCalibration:
    """What the mapping score needs from the reference, as plain arrays.

    Attributes
    ----------
    n_neighbors
        Reference neighbours ``k`` per query cell.
    metric
        Distance of the representation space.
    radius
        ``(n_reference,)`` float32 local radius of each reference cell: also its own
        distance statistic ``s_dist``.
    ratio
        ``(n_reference,)`` float32 ratio statistic ``s_ratio`` of each reference cell.
    unknown_threshold
        Default score threshold below which a cell is called Unknown.
    offset
        ``(n_reference, n_components)`` float32 offset of each reference cell from its
        neighbours in the embedding (:func:`~scnumap.core.recentring.reference_offsets`),
        what recentring compares the query with; ``None`` in models of format 4 and older.
    """

    n_neighbors: int
    metric: str
    radius: np.ndarray
    ratio: np.ndarray
    unknown_threshold: float
    offset: np.ndarray | None = None

    @classmethod
    def from_distances(
        cls,
        distances,
        *,
        metric: str = "euclidean",
        unknown_rate: float = DEFAULT_UNKNOWN_RATE,
        embedding: np.ndarray | None = None,
    ):
        """Calibrate from the reference's own kNN distances.

        Parameters
        ----------
        distances
            ``(n_reference, n_reference)`` sparse matrix, row ``j`` holding the distances
            from cell ``j`` to its neighbours (``obsp['distances']`` of
            ``sc.pp.neighbors``). A cell's entry for itself is dropped: Scanpy stores it,
            as an explicit 0, for graphs of 8,192 cells or more (its approximate search)
            and leaves it out below, and a 0 in the mean would make every reference cell
            look closer to its neighbours than a new cell can be.
        embedding
            The reference's embedding ``(n_reference, n_components)``; gives :attr:`offset`.
        """
        D = sp.csr_matrix(distances, dtype=np.float64)
        D.sum_duplicates()
        n = D.shape[0]
        if D.shape != (n, n) or n < 2:
            raise ValueError(f"`distances` must be a square (n_cells, n_cells) matrix, got shape {D.shape}.")
        D = _without_diagonal(D)
        counts = np.diff(D.indptr)
        if not counts.any():
            raise ValueError("`distances` has no stored neighbour; the reference graph is empty.")
        rows = np.repeat(np.arange(n), counts)
        radius = _floor(_row_means(rows, D.data, counts))
        ratio = np.ones(n)  # a cell without neighbours counts as typical
        has = counts > 0
        ratio[has] = radius[has] / _row_means(rows, radius[D.indices], counts)[has]
        return cls(
            n_neighbors=int(np.median(counts[counts > 0])),
            metric=check_metric(metric),
            radius=radius.astype(np.float32),
            ratio=ratio.astype(np.float32),
            unknown_threshold=float(unknown_rate),
            offset=None if embedding is None else reference_offsets(embedding, D),
        )

    def statistics(self, distances: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """``(n, 2)`` float32 ``s_dist`` and ``s_ratio`` of query rows from their ``(n, k)`` neighbours."""
        mean = distances.mean(axis=1, dtype=np.float64)
        return np.stack([mean, mean / self.radius[indices].mean(axis=1, dtype=np.float64)], axis=1).astype(np.float32)

    def null(self) -> np.ndarray:
        """``(n_reference, 2)`` the reference cells' own statistics, as :meth:`statistics` gives."""
        return np.stack([self.radius, self.ratio], axis=1)

    def score(
        self,
        statistics: np.ndarray,
        share: np.ndarray | None = None,
        share_null: np.ndarray | None = None,
        null_rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Mapping score in [0, 1] (float32) of query rows.

        Parameters
        ----------
        statistics
            ``(n, 2)`` from :meth:`statistics`.
        share, share_null
            The query rows' (shifted) query shares and the reference sample's, or ``None``
            to score on the distance statistics alone.
        null_rows
            Reference rows of ``share_null`` (the reference sample in the pooled index).
        """
        null = self.null()
        rows = np.arange(null.shape[0]) if share is None else np.asarray(null_rows)
        p_query = [conformal_p(statistics[:, j], null[:, j]) for j in range(null.shape[1])]
        p_null = [conformal_p(null[rows, j], null[:, j], own=True) for j in range(null.shape[1])]
        if share is not None:
            p_query.append(conformal_p(share, share_null))
            p_null.append(conformal_p(share_null, share_null, own=True))
        T_null = fisher(p_null)
        return conformal_p(fisher(p_query), T_null).astype(np.float32)

    def to_dict(self) -> dict:
        entry = {
            "n_neighbors": np.int64(self.n_neighbors),
            "metric": self.metric,
            "radius": self.radius.astype(np.float32),
            "ratio": self.ratio.astype(np.float32),
            "unknown_threshold": np.float64(self.unknown_threshold),
        }
        if self.offset is not None:
            entry["offset"] = self.offset.astype(np.float32)
        return entry

    @classmethod
    def from_dict(cls, entry, *, n_reference: int | None = None, where: str = "mapping") -> MappingCalibration:
        """Validate and rebuild; :class:`CalibrationFormatError` names any bad entry."""
        if not isinstance(entry, Mapping):
            raise CalibrationFormatError(f"`{where}` must be a dict of arrays, got {type(entry).__name__}.")
        expected = {"n_neighbors", "metric", "radius", "ratio", "unknown_threshold"}
        if set(entry) - {"offset"} != expected:
            raise CalibrationFormatError(
                f"`{where}` has entries {sorted(entry)}; expected {sorted(expected)} (and `offset` since format 5). "
                "Re-run `scnumap.tl.numap`."
            )
        k = _number(entry, "n_neighbors", where)
        if k != int(k) or k < 1:
            raise CalibrationFormatError(f"`{where}/n_neighbors` must be an integer >= 1, got {k}.")
        metric = entry["metric"]
        metric = metric.decode() if isinstance(metric, bytes) else metric
        if not isinstance(metric, str):
            raise CalibrationFormatError(f"`{where}/metric` must be a string, got {type(metric).__name__}.")
        try:
            metric = check_metric(str(metric))
        except ValueError as err:
            raise CalibrationFormatError(f"`{where}/metric`: {err}") from None
        arrays = {}
        for name in ("radius", "ratio"):
            values = np.asarray(entry[name])
            if values.ndim != 1 or values.dtype.kind != "f" or not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise CalibrationFormatError(f"`{where}/{name}` must be a 1-D array of positive finite floats.")
            if n_reference is not None and values.shape[0] != n_reference:
                raise CalibrationFormatError(
                    f"`{where}/{name}` has {values.shape[0]} values; the reference has {n_reference} cells. "
                    "The calibration belongs to another reference: re-run `scnumap.tl.numap` on this one."
                )
            arrays[name] = values.astype(np.float32)
        if arrays["radius"].shape != arrays["ratio"].shape:
            raise CalibrationFormatError(
                f"`{where}/radius` and `{where}/ratio` differ in length "
                f"({arrays['radius'].shape[0]} and {arrays['ratio'].shape[0]})."
            )
        threshold = _number(entry, "unknown_threshold", where)
        if not 0 <= threshold <= 1:
            raise CalibrationFormatError(f"`{where}/unknown_threshold` must lie in [0, 1], got {threshold}.")
        offset = None
        if "offset" in entry:
            offset = np.asarray(entry["offset"])
            n = arrays["radius"].shape[0]
            if offset.ndim != 2 or offset.shape[0] != n or offset.dtype.kind != "f" or not np.all(np.isfinite(offset)):
                raise CalibrationFormatError(
                    f"`{where}/offset` must be a 2-D array of finite floats with one row per reference cell ({n}), "
                    f"got shape {offset.shape}. Re-run `scnumap.tl.numap`."
                )
            offset = offset.astype(np.float32)
        return cls(int(k), metric, arrays["radius"], arrays["ratio"], float(threshold), offset)


def conformal_p(values: np.ndarray, null: np.ndarray, *, own: bool = False) -> np.ndarray:
    """Conformal p-value of each ``v`` in ``values`` against ``null`` (float64).

    ``(1 + #{null >= v}) / (1 + n_null)`` for new values; ``#{null >= v} / n_null`` with
    ``own=True``, for values that are themselves in ``null`` (each one left out of its own
    comparison and counted as the ``1``).
    """
    ordered = np.sort(np.asarray(null, dtype=np.float64))
    above = ordered.shape[0] - np.searchsorted(ordered, np.asarray(values, dtype=np.float64), side="left")
    return above / ordered.shape[0] if own else (1.0 + above) / (1.0 + ordered.shape[0])


def fisher(p_values: list[np.ndarray]) -> np.ndarray:
    """Fisher's statistic ``-Σ log p`` of aligned p-value arrays."""
    return -np.sum([np.log(p) for p in p_values], axis=0)


def _number(entry, key: str, where: str) -> float:
    value = np.asarray(entry[key])
    if value.shape != () or value.dtype.kind not in "iuf" or not np.isfinite(value):
        raise CalibrationFormatError(f"`{where}/{key}` must be a finite number, got {entry[key]!r}.")
    return float(value)


def _row_means(rows: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.bincount(rows, weights=values, minlength=counts.shape[0]) / np.maximum(counts, 1)


def _floor(radius: np.ndarray) -> np.ndarray:
    positive = radius[radius > 0]
    floor = MIN_RADIUS_FRACTION * (np.median(positive) if positive.size else 1.0)
    return np.maximum(radius, floor)


def neighbour_weights(distances: np.ndarray, indices: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``(n, k)`` float32 vote weights, each row summing to 1 (see the module docstring)."""
    scale = radius[indices].mean(axis=1, keepdims=True)
    w = np.exp(-(distances - distances[:, :1]) / scale)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def label_probabilities(indices: np.ndarray, weights: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n_classes)`` float32 class probabilities from the neighbours' class codes.

    Neighbours with code -1 (no label) do not vote; a row without labelled neighbours is 0.
    """
    P = _row_counts(indices, codes, max(n_classes, 1), weights)
    total = P.sum(axis=1, keepdims=True)
    return np.divide(P, total, out=np.zeros_like(P), where=total > 0).astype(np.float32)


def vote(probabilities: np.ndarray, indices: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winning class code (-1 without labelled neighbours) and its probability.

    Classes within 1e-6 of the top probability are tied; the nearest neighbour whose
    class is among them decides.
    """
    top = probabilities.max(axis=1)
    tied = probabilities >= (top - 1e-6)[:, None]
    best = np.where(top > 0, probabilities.argmax(axis=1), -1)
    open_rows = np.flatnonzero((tied.sum(axis=1) > 1) & (top > 0))
    for column in range(indices.shape[1]):
        if open_rows.size == 0:
            break
        cls = codes[indices[open_rows, column]]
        hit = (cls >= 0) & tied[open_rows, np.maximum(cls, 0)]
        best[open_rows[hit]] = cls[hit]
        open_rows = open_rows[~hit]
    return best.astype(np.int64), top.astype(np.float32)


def anchored_placement(
    embedding: np.ndarray, indices: np.ndarray, weights: np.ndarray, reference_embedding: np.ndarray, anchor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pull network placements that stray from their reference neighbours back to them.

    Returns
    -------
    placed, moved
        ``(n, n_components)`` float32 coordinates and an ``(n,)`` bool mask of the cells moved.
    """
    Y = reference_embedding[indices]  # (n, k, d)
    centre = np.einsum("nk,nkd->nd", weights, Y)
    spread = np.sqrt(np.einsum("nk,nk->n", weights, ((Y - centre[:, None]) ** 2).sum(axis=-1)))
    offset = embedding - centre
    length = np.linalg.norm(offset, axis=1)
    limit = anchor * spread
    moved = length > limit  # so length > 0 and limit finite where moved (anchor=inf moves none)
    placed = np.array(embedding, dtype=np.float32)
    placed[moved] = centre[moved] + offset[moved] * (limit[moved] / length[moved])[:, None]
    return placed, moved


def label_consistent_placement(
    embedding: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    codes: np.ndarray,
    label: np.ndarray,
    reference_embedding: np.ndarray,
    map_index,
    n_neighbors: int,
    keep: np.ndarray | None = None,
    typical: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Move cells placed among reference cells of another type to those of their own.

    Parameters
    ----------
    embedding
        ``(n, n_components)`` placements.
    indices, weights
        ``(n, k)`` the cells' reference neighbours (nearest first) and vote weights.
    codes
        ``(n_reference,)`` class codes of the reference cells (-1: no label).
    label
        ``(n,)`` transferred class codes (-1: none; such cells keep their place).
    reference_embedding
        ``(n_reference, n_components)`` reference coordinates.
    map_index
        kNN search among ``reference_embedding``: ``map_index.query(points, k)`` returns
        ``(distances, indices)``.
    n_neighbors
        Reference cells of the map's vote at a position.
    keep
        ``(n,)`` bool, cells that keep their place (called Unknown, or reference cells).
    typical
        ``(n_reference,)`` bool, :func:`typical_cells` (``None``: every reference cell).

    Returns
    -------
    placed, moved
        ``(n, n_components)`` float32 coordinates and an ``(n,)`` bool mask of the cells moved.
    """
    placed = np.array(embedding, dtype=np.float32)
    open_rows = np.flatnonzero((label >= 0) & (True if keep is None else ~keep))
    moved = np.zeros(placed.shape[0], dtype=bool)
    if open_rows.size == 0:
        return placed, moved
    wrong = open_rows[_map_vote_differs(map_index, placed[open_rows], label[open_rows], codes, n_neighbors)]
    if wrong.size == 0:
        return placed, moved
    near, lab = indices[wrong], label[wrong]
    own = codes[near] == lab[:, None]  # the voted label came from these: >= 1 per row
    w = np.where(own, weights[wrong], 0.0)
    w = (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)
    target, _ = anchored_placement(placed[wrong], near, w, reference_embedding, 1.0)
    centre = np.einsum("nk,nkd->nd", w, reference_embedding[near]).astype(np.float32)
    for fallback in (centre, None):
        left = _map_vote_differs(map_index, target, lab, codes, n_neighbors)
        if not left.any():
            break
        if fallback is None:
            ok = own & (True if typical is None else typical[near])
            column = np.where(ok.any(axis=1), np.argmax(ok, axis=1), np.argmax(own, axis=1))
            fallback = reference_embedding[near[np.arange(near.shape[0]), column]]
        target[left] = fallback[left]
    placed[wrong] = target
    moved[wrong] = True
    return placed, moved


def typical_cells(codes: np.ndarray, own_neighbors: np.ndarray) -> np.ndarray:
    """Reference cells whose type is (one of) the commonest among their own nearest cells
    in the map (``own_neighbors``: ``(n_reference, k)``, each cell itself excluded);
    unlabelled cells are not typical."""
    return (codes >= 0) & (_outnumbered(own_neighbors, np.maximum(codes, 0), codes) == 0)


def _map_vote_differs(map_index, points: np.ndarray, label: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Whether another type than ``label`` has more of the ``k`` nearest reference cells of
    ``points`` in the map (a tie with ``label`` does not count; ``label`` must be >= 0)."""
    _, near = map_index.query(points, k)
    return _outnumbered(near, label, codes) > 0


def _outnumbered(neighbours: np.ndarray, label: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """By how many cells the commonest type among each row of ``neighbours`` (reference
    rows with class ``codes``, -1 not counted) outnumbers ``label`` there (``>= 0``)."""
    counts = _row_counts(neighbours, codes, max(int(codes.max()), int(label.max())) + 1)
    return counts.max(axis=1) - counts[np.arange(neighbours.shape[0]), label]


def _row_counts(neighbours: np.ndarray, codes: np.ndarray, n_classes: int, weights=None) -> np.ndarray:
    """``(n, n_classes)`` per row of ``neighbours``: how many of its reference cells have each
    class (``codes``, -1 not counted), or the sum of their ``weights`` (float64, in order)."""
    n = neighbours.shape[0]
    votes = codes[neighbours]
    ok = votes >= 0
    cells = (np.arange(n)[:, None] * n_classes + votes)[ok]
    sums = np.bincount(cells, weights=None if weights is None else weights[ok], minlength=n * n_classes)
    return sums.reshape(n, n_classes)


def knn_distance_matrix(indices: np.ndarray, distances: np.ndarray, *, exclude_self: bool = True) -> sp.csr_matrix:
    """``(n, n)`` CSR distances from a self-query's ``(n, k)`` kNN result, each row's own entry dropped.

    A row whose own index is missing (exact duplicates) drops its last neighbour instead,
    so every row keeps ``k - 1`` neighbours.
    """
    n, k = indices.shape
    keep = np.ones((n, k), dtype=bool)
    if exclude_self:
        own = indices == np.arange(n)[:, None]
        own[~own.any(axis=1), -1] = True
        first = own.argmax(axis=1)
        keep[np.arange(n), first] = False
    rows = np.repeat(np.arange(n), keep.sum(axis=1))
    return sp.csr_matrix((distances[keep].astype(np.float64), (rows, indices[keep])), shape=(n, n))


def _without_diagonal(D: sp.csr_matrix) -> sp.csr_matrix:
    """``D`` without its stored diagonal entries (explicit zeros between other cells stay)."""
    rows = np.repeat(np.arange(D.shape[0]), np.diff(D.indptr))
    keep = D.indices != rows
    if keep.all():
        return D
    counts = np.bincount(rows[keep], minlength=D.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((D.data[keep], D.indices[keep], indptr), shape=D.shape)
