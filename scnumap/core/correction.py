"""Query-side batch correction against a Harmony-integrated reference (Symphony's maths).

Symphony (Kang et al. 2021, Nat Commun) compresses a Harmony-integrated reference into
``K`` soft clusters and corrects a query with a mixture of linear experts, one per
cluster. With ``Z`` the reference's integrated coordinates ``(N, d)`` and ``R`` Harmony's
soft assignment ``(K, N)``, the reference keeps

* the cluster centroids' directions ``Y_k = C_k / |C_k|``, where ``C_k = Σ_n R_kn Z_n``;
* the soft cluster sizes ``N_k = Σ_n R_kn`` and the sums ``C_k``;
* Harmony's kernel widths ``σ_k``.

A query cell ``x`` (reference PC coordinates, uncorrected) is assigned softly,

``R_k(x) ∝ exp(-2 (1 - Y_k · x / |x|) / σ_k)``,

and, with ``φ(x) = (1, one-hot batch of x)`` its design row, each cluster fits a ridge
regression of the query's coordinates on the design, with the reference as extra
intercept-only data:

``A_k = Σ_x R_k(x) φ φᵀ + diag(0, λ, …, λ) + N_k e_0 e_0ᵀ``,
``B_k = Σ_x R_k(x) φ xᵀ + e_0 C_kᵀ``,   ``W_k = A_k⁻¹ B_k`` with its intercept row set to 0,

``x_corrected = x - Σ_k R_k(x) W_kᵀ φ(x)``.

Only batch terms are removed: the intercept (where the reference is) stays. ``A_k`` and
``B_k`` are sums over query cells, so a query of any size is corrected in two passes over
its blocks (:meth:`QueryCorrection.add` then :meth:`QueryCorrection.apply`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: Ridge penalty λ on the batch terms (Symphony's default).
DEFAULT_RIDGE = 1.0


class CompressionFormatError(ValueError):
    """A stored reference compression is missing or malformed."""


@dataclass(frozen=True)
class ReferenceCompression:
    """What a query's correction needs from the integrated reference.

    Attributes
    ----------
    centroids
        ``(K, d)`` unit-length cluster directions ``Y``.
    sizes
        ``(K,)`` soft cluster sizes ``N_k``.
    sums
        ``(K, d)`` soft sums ``C_k`` of the integrated coordinates.
    sigma
        ``(K,)`` kernel widths.
    """

    centroids: np.ndarray
    sizes: np.ndarray
    sums: np.ndarray
    sigma: np.ndarray

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    @property
    def n_dims(self) -> int:
        return self.centroids.shape[1]

    @classmethod
    def from_harmony(cls, Z_corr: np.ndarray, R: np.ndarray, sigma) -> ReferenceCompression:
        """From Harmony's corrected coordinates ``(N, d)``, soft assignment ``(K, N)`` and ``sigma``."""
        Z = np.asarray(Z_corr, dtype=np.float64)
        R = np.asarray(R, dtype=np.float64)
        if R.shape[1] != Z.shape[0]:
            raise ValueError(f"`R` must be (K, {Z.shape[0]}) to match `Z_corr` {Z.shape}, got {R.shape}.")
        return cls.from_sums(R @ Z, R.sum(axis=1), sigma)

    @classmethod
    def from_sums(cls, sums: np.ndarray, sizes: np.ndarray, sigma) -> ReferenceCompression:
        """From the soft sums ``C`` ``(K, d)`` and sizes ``N`` ``(K,)`` of a soft assignment
        (accumulated block by block for a large reference) and ``sigma``."""
        sums = np.asarray(sums, dtype=np.float64)
        sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64).ravel(), (sums.shape[0],)).copy()
        return cls(_unit_rows(sums), np.asarray(sizes, dtype=np.float64), sums, sigma)

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Soft cluster assignment ``(K, n)`` of query rows ``X`` (columns sum to 1)."""
        R = self.centroids @ _unit_rows(np.asarray(X, dtype=np.float64)).T  # the cosines
        # -2 (1 - cosine) / sigma, shifted by its column maximum, exponentiated, normalised: in place
        np.subtract(1.0, R, out=R)
        R *= -2.0
        R /= self.sigma[:, None]
        R -= R.max(axis=0, keepdims=True)
        np.exp(R, out=R)
        R /= R.sum(axis=0, keepdims=True)
        return R

    def to_dict(self) -> dict:
        return {
            "centroids": self.centroids.astype(np.float64),
            "sizes": self.sizes.astype(np.float64),
            "sums": self.sums.astype(np.float64),
            "sigma": self.sigma.astype(np.float64),
        }

    @classmethod
    def from_dict(cls, entry, *, n_dims: int | None = None, where: str = "correction") -> ReferenceCompression:
        """Validate and rebuild; :class:`CompressionFormatError` names any bad entry."""
        if not isinstance(entry, Mapping):
            raise CompressionFormatError(f"`{where}` must be a dict of arrays, got {type(entry).__name__}.")
        expected = {"centroids", "sizes", "sums", "sigma"}
        if set(entry) != expected:
            raise CompressionFormatError(f"`{where}` has entries {sorted(entry)}; expected {sorted(expected)}.")
        arrays = {}
        for key in sorted(expected):
            a = np.asarray(entry[key])
            if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a)):
                raise CompressionFormatError(f"`{where}/{key}` must be an array of finite numbers.")
            arrays[key] = a.astype(np.float64)
        K, d = arrays["centroids"].shape if arrays["centroids"].ndim == 2 else (-1, -1)
        if K < 1 or (n_dims is not None and d != n_dims):
            raise CompressionFormatError(
                f"`{where}/centroids` must be (clusters, {n_dims or 'dims'}), got {arrays['centroids'].shape}."
            )
        for key, shape in (("sizes", (K,)), ("sums", (K, d)), ("sigma", (K,))):
            if arrays[key].shape != shape:
                raise CompressionFormatError(f"`{where}/{key}` must have shape {shape}, got {arrays[key].shape}.")
        if np.any(arrays["sigma"] <= 0) or np.any(arrays["sizes"] < 0):
            raise CompressionFormatError(f"`{where}/sigma` must be > 0 and `{where}/sizes` >= 0.")
        if not np.allclose(np.linalg.norm(arrays["centroids"], axis=1), 1.0, atol=1e-4):
            raise CompressionFormatError(f"`{where}/centroids` must have unit-length rows.")
        return cls(arrays["centroids"], arrays["sizes"], arrays["sums"], arrays["sigma"])


class QueryCorrection:
    """Accumulate a query's regression terms block by block, then correct its blocks.

    Parameters
    ----------
    reference
        The integrated reference's compression.
    n_batches
        Query batches ``B`` (≥ 1); every query row carries a batch code in ``0 … B-1``.
    ridge
        λ ≥ 0 on the batch terms (Symphony's default 1).
    """

    def __init__(self, reference: ReferenceCompression, n_batches: int = 1, ridge: float = DEFAULT_RIDGE):
        if n_batches < 1:
            raise ValueError(f"`n_batches` must be >= 1, got {n_batches}.")
        self.reference = reference
        self.n_batches = int(n_batches)
        self.ridge = float(ridge)
        self._done = []  # weights of finished rounds
        self._kept = {}  # key -> (finished rounds, coordinates after them) of keyed row blocks
        self._reset()

    def _reset(self) -> None:
        K, d, p = self.reference.n_clusters, self.reference.n_dims, self.n_batches + 1
        self._A = np.zeros((K, p, p))
        self._B = np.zeros((K, p, d))
        self._W = None
        self._n_added = 0

    def _groups(self, batches: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
        """``(b, rows)`` for every batch code ``b`` present in ``batches`` (``rows`` a slice of
        all rows when they share one code: views instead of copies)."""
        batches = np.asarray(batches)
        if batches.min(initial=0) < 0 or batches.max(initial=0) >= self.n_batches:
            raise ValueError(f"Batch codes must lie in 0 … {self.n_batches - 1}.")
        if batches.size == 0 or batches.min() == batches.max():
            return [(int(batches[0]) if batches.size else 0, slice(None))]
        order = np.argsort(batches, kind="stable")
        codes, starts = np.unique(batches[order], return_index=True)
        return list(zip(codes.tolist(), np.split(order, starts[1:]), strict=True))

    def add(self, X: np.ndarray, batches: np.ndarray, *, key=None) -> None:
        """Add query rows ``X`` (``(n, d)``, reference PC coordinates) with their batch codes.

        The rows are assigned to the reference clusters from their coordinates after the
        finished rounds (:meth:`next_round`); the regression is on ``X`` itself. With the
        design ``φ = (1, one-hot batch)``, ``Σ R φ φᵀ`` and ``Σ R φ xᵀ`` are sums over
        each batch's rows (no ``(K, n, B + 1)`` product is formed).

        ``key`` (any hashable, e.g. the block's first and last row) names the same rows in
        every pass: their coordinates after the finished rounds are kept under it, so that
        the next round and :meth:`apply` start from there instead of correcting the rows
        again from the first round (the same numbers; over three rounds and the final
        correction, six assignments of the rows instead of nine).
        """
        self.add_statistics(self.statistics(X, batches, key=key))

    def statistics(self, X: np.ndarray, batches: np.ndarray, *, key=None) -> tuple[np.ndarray, np.ndarray, int]:
        """What :meth:`add` adds for rows ``X``: ``(Σ R φ φᵀ, Σ R φ xᵀ, n)``; changes nothing
        but what ``key`` keeps (:meth:`add`).

        Blocks of the query can be summarised apart (e.g. on dask workers) and their sums
        added with :meth:`add_statistics`.
        """
        X = np.asarray(X, dtype=np.float64)
        groups = self._groups(batches)
        R = self.reference.assign(self._after_rounds(X, groups, key))  # (K, n)
        A, B = np.zeros_like(self._A), np.zeros_like(self._B)
        A[:, 0, 0] = R.sum(axis=1)
        B[:, 0, :] = R @ X
        for b, rows in groups:
            whole = isinstance(rows, slice)  # every row in batch b: the sums above
            size = A[:, 0, 0].copy() if whole else R[:, rows].sum(axis=1)
            A[:, 0, b + 1] += size
            A[:, b + 1, 0] += size
            A[:, b + 1, b + 1] += size
            B[:, b + 1, :] += B[:, 0, :] if whole else R[:, rows] @ X[rows]
        return A, B, X.shape[0]

    def add_statistics(self, statistics: tuple[np.ndarray, np.ndarray, int]) -> None:
        """Add the sums of :meth:`statistics` (of one block, or summed over blocks)."""
        A, B, n = statistics
        self._A += A
        self._B += B
        self._W = None
        self._n_added += int(n)

    def next_round(self) -> None:
        """Freeze this round's batch terms and start another: the query's rows are
        :meth:`add`-ed again, assigned to clusters from their corrected coordinates (as
        Harmony alternates clustering and correction). One round is Symphony's mapping."""
        if self._n_added == 0:
            raise RuntimeError("`next_round` needs query rows `add`-ed in this round.")
        self._done.append(self.weights())
        self._reset()

    def _after_rounds(self, X: np.ndarray, groups, key=None, *, keep: bool = True) -> np.ndarray:
        """``X`` corrected by the finished rounds, from what ``key`` kept (rows of the same
        shape) when there is something; kept again under ``key`` unless ``keep`` is false."""
        done, corrected = 0, X
        if key is not None:
            kept = self._kept.pop(key, None)
            if kept is not None and kept[1].shape == X.shape and kept[0] <= len(self._done):
                done, corrected = kept
        for W in self._done[done:]:
            corrected = self._corrected(X, corrected, groups, W)
        if key is not None and keep and self._done:
            self._kept[key] = (len(self._done), corrected)
        return corrected

    def _corrected(self, X: np.ndarray, assigned_from: np.ndarray, groups, W: np.ndarray) -> np.ndarray:
        """``X - Σ_k R_k W_kᵀ φ`` with ``R`` assigned from ``assigned_from`` (intercept rows of ``W`` are 0)."""
        R = self.reference.assign(assigned_from)
        corrected = X.copy()
        for b, rows in groups:
            corrected[rows] -= R[:, rows].T @ W[:, b + 1, :]
        return corrected

    def weights(self) -> np.ndarray:
        """``(K, B + 1, d)`` batch terms per cluster, intercept rows 0."""
        if self._W is None:
            ref = self.reference
            A = self._A.copy()
            A[:, 0, 0] += ref.sizes
            A += np.diag(np.r_[0.0, np.full(self.n_batches, self.ridge)])[None]
            B = self._B.copy()
            B[:, 0, :] += ref.sums
            W = np.linalg.solve(A, B)
            W[:, 0, :] = 0.0
            self._W = W
        return self._W

    def apply(self, X: np.ndarray, batches: np.ndarray, *, key=None) -> np.ndarray:
        """Corrected ``(n, d)`` float32 coordinates of query rows already :meth:`add`-ed;
        what ``key`` kept of them (:meth:`add`) serves and is then let go."""
        X = np.asarray(X, dtype=np.float64)
        groups = self._groups(batches)
        corrected = self._after_rounds(X, groups, key, keep=False)
        if self._n_added:
            corrected = self._corrected(X, corrected, groups, self.weights())
        return corrected.astype(np.float32)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)
