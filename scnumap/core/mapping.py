"""How well a query cell maps onto the reference, and what its reference neighbours say.

Everything here works on the ``k`` nearest reference cells of each query cell in the
space the model was trained on (distances ``d_1 ≤ … ≤ d_k`` to reference cells
``n_1 … n_k``), found by :class:`scnumap.core.reference_index.ReferenceIndex`.

Mapping score
    Each reference cell ``j`` has a local radius ``r_j``: the mean distance to its own
    ``k`` reference neighbours (itself excluded; from the neighbour graph the model was
    trained on). A query cell's statistic is

    ``s = mean_i d_i / mean_i r_{n_i}``,

    its distance to the reference relative to how far apart reference cells are there, so
    that dense and sparse regions compare. The same statistic of every reference cell,
    left out of its own neighbour list, is the null: ``p`` = the share of reference cells
    with a larger statistic (a conformal p-value, read from :data:`N_QUANTILES` stored
    quantiles). The mapping score is ``min(1, 2 p)``: 1 for a cell at least as typical as
    the median reference cell, falling to 0 for cells unlike any reference cell. A score
    below ``t`` happens to a share ``t / 2`` of reference cells, so the default
    ``unknown_threshold`` ``2 × DEFAULT_UNKNOWN_RATE`` calls 1.5 % of them Unknown.

Label probabilities
    Neighbour ``i`` votes with weight ``w_i ∝ exp(-(d_i - d_1) / mean_i r_{n_i})``; a class's
    probability is its share of the weight of the labelled neighbours. Ties go to the class
    of the nearest neighbour among the tied ones.

Anchored placement
    The weighted mean ``a = Σ w_i y_{n_i}`` of the neighbours' embedding coordinates and
    their weighted spread ``ρ = (Σ w_i |y_{n_i} - a|²)^½`` bound the network's placement
    ``f(x)``: a cell whose ``f(x)`` lies further than ``anchor × ρ`` from ``a`` is moved
    onto that circle, toward ``a``; all others keep ``f(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .graph import check_metric

#: Quantiles of the null statistic kept in the model.
N_QUANTILES = 1001

#: Share of reference cells the default threshold calls Unknown.
DEFAULT_UNKNOWN_RATE = 0.015

#: Neighbours per reference cell when a calibration is searched rather than read from
#: the neighbour graph (``sc.pp.neighbors``' default 15, the cell itself excluded).
CALIBRATION_NEIGHBORS = 14

#: Smallest local radius, relative to the median one (duplicated cells have radius 0).
MIN_RADIUS_FRACTION = 1e-3


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
        ``(n_reference,)`` float32 local radius of each reference cell.
    null_quantiles
        ``(N_QUANTILES,)`` float64, non-decreasing: quantiles 0, 0.001, …, 1 of the
        reference cells' own statistic.
    unknown_threshold
        Default score threshold below which a cell is called Unknown.
    """

    n_neighbors: int
    metric: str
    radius: np.ndarray
    null_quantiles: np.ndarray
    unknown_threshold: float

    @classmethod
    def from_distances(cls, distances, *, metric: str = "euclidean", unknown_rate: float = DEFAULT_UNKNOWN_RATE):
        """Calibrate from the reference's own kNN distances.

        Parameters
        ----------
        distances
            ``(n_reference, n_reference)`` sparse matrix, row ``j`` holding the distances
            from cell ``j`` to its neighbours, itself excluded (``obsp['distances']`` of
            ``sc.pp.neighbors``).
        """
        D = sp.csr_matrix(distances, dtype=np.float64)
        D.sum_duplicates()
        n = D.shape[0]
        if D.shape != (n, n) or n < 2:
            raise ValueError(f"`distances` must be a square (n_cells, n_cells) matrix, got shape {D.shape}.")
        counts = np.diff(D.indptr)
        if not counts.any():
            raise ValueError("`distances` has no stored neighbour; the reference graph is empty.")
        rows = np.repeat(np.arange(n), counts)
        mean_distance = _row_means(rows, D.data, counts)
        radius = _floor(mean_distance)
        has = counts > 0
        statistic = mean_distance[has] / _row_means(rows, radius[D.indices], counts)[has]
        return cls(
            n_neighbors=int(np.median(counts[counts > 0])),
            metric=check_metric(metric),
            radius=radius.astype(np.float32),
            null_quantiles=np.quantile(statistic, np.linspace(0.0, 1.0, N_QUANTILES)),
            unknown_threshold=float(2 * unknown_rate),
        )

    def statistic(self, distances: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """``s`` of each query row from its ``(n, k)`` neighbour distances and indices."""
        return distances.mean(axis=1, dtype=np.float64) / self.radius[indices].mean(axis=1, dtype=np.float64)

    def score(self, distances: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Mapping score in [0, 1] of each query row (float32)."""
        s = self.statistic(distances, indices)
        levels = np.linspace(0.0, 1.0, N_QUANTILES)
        # F(s) = share of reference statistics below s; flat stretches (ties) take their upper end
        cdf = np.interp(s, self.null_quantiles, levels, left=0.0, right=1.0)
        return np.minimum(1.0, 2.0 * (1.0 - cdf)).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "n_neighbors": np.int64(self.n_neighbors),
            "metric": self.metric,
            "radius": self.radius.astype(np.float32),
            "null_quantiles": self.null_quantiles.astype(np.float64),
            "unknown_threshold": np.float64(self.unknown_threshold),
        }

    @classmethod
    def from_dict(cls, entry, *, n_reference: int | None = None, where: str = "mapping") -> MappingCalibration:
        """Validate and rebuild; :class:`CalibrationFormatError` names any bad entry."""
        if not isinstance(entry, Mapping):
            raise CalibrationFormatError(f"`{where}` must be a dict of arrays, got {type(entry).__name__}.")
        expected = {"n_neighbors", "metric", "radius", "null_quantiles", "unknown_threshold"}
        if set(entry) != expected:
            raise CalibrationFormatError(
                f"`{where}` has entries {sorted(entry)}; expected {sorted(expected)}. Re-run `scnumap.tl.numap`."
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
        radius = np.asarray(entry["radius"])
        if radius.ndim != 1 or radius.dtype.kind != "f" or not np.all(np.isfinite(radius)) or np.any(radius <= 0):
            raise CalibrationFormatError(f"`{where}/radius` must be a 1-D array of positive finite floats.")
        if n_reference is not None and radius.shape[0] != n_reference:
            raise CalibrationFormatError(
                f"`{where}/radius` has {radius.shape[0]} values; the reference has {n_reference} cells. "
                "The calibration belongs to another reference: re-run `scnumap.tl.numap` on this one."
            )
        quantiles = np.asarray(entry["null_quantiles"])
        if (
            quantiles.shape != (N_QUANTILES,)
            or quantiles.dtype.kind != "f"
            or not np.all(np.isfinite(quantiles))
            or np.any(np.diff(quantiles) < 0)
        ):
            raise CalibrationFormatError(
                f"`{where}/null_quantiles` must be {N_QUANTILES} finite non-decreasing floats, "
                f"got shape {quantiles.shape}."
            )
        threshold = _number(entry, "unknown_threshold", where)
        if not 0 <= threshold <= 1:
            raise CalibrationFormatError(f"`{where}/unknown_threshold` must lie in [0, 1], got {threshold}.")
        return cls(int(k), metric, radius.astype(np.float32), quantiles.astype(np.float64), float(threshold))


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
    votes = codes[indices]
    ok = votes >= 0
    rows = np.broadcast_to(np.arange(indices.shape[0])[:, None], votes.shape)
    P = np.zeros((indices.shape[0], max(n_classes, 1)), dtype=np.float64)
    np.add.at(P, (rows[ok], votes[ok]), weights[ok])
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
    moved = length > limit
    factor = limit / np.maximum(length, 1e-12)
    placed = np.where(moved[:, None], centre + offset * factor[:, None], embedding)
    return placed.astype(np.float32), moved


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
