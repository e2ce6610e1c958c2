"""The term that keeps old cells in place while a trained map grows (:meth:`NUMAP.extend`).

Each old cell is pulled towards its coordinate on the first map. How strongly depends on
how much its neighbourhood changed: with the new cells in the graph, an old cell whose
neighbours are new in the same proportion as the new cells are in the union (new cells
of known types, spread like the old ones) keeps the full weight, while a cell whose
neighbours are mostly new (it borders something the first map did not have) is held
less and can make room. The new cells are pulled, in the mirror image, towards their
place in a layout of the new cells alone (:mod:`scnumap.core.new_rows`): a new cell
whose neighbours are new in the proportion a uniform mix gives is not pulled (the network
already puts a known type among its kind), one whose neighbours are all new (a type the
first map lacked) with the full weight (docs/method.md, "Growing a reference").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class HoldTerm:
    """Keep rows ``0 .. n_old - 1`` at ``positions`` and pull the rest towards theirs.

    Adds ``weight`` × the mean over the held rows of ``row_weights[i]`` × the squared
    distance between row ``i``'s embedding and ``positions[i]``, over the rows of each
    step's tails and negatives (the edge heads carry the input noise) or over every row in
    a whole-graph step; rows from ``n_old`` to ``len(positions) - 1`` (new rows pulled
    towards their layout; ``n_old`` ``None``: none) add ``new_weight`` × their own mean,
    so that pulling new rows leaves the old rows' hold as strong as without them.
    ``row_weights`` ``None`` weighs every row 1.
    """

    positions: torch.Tensor  # (n_rows, n_components) coordinates to keep or to approach
    weight: float
    row_weights: torch.Tensor | None = None  # (n_rows,) in [0, 1]
    n_old: int | None = None
    new_weight: float = 0.0
    _row_coefficients: torch.Tensor | None = field(default=None, init=False, repr=False)

    def loss(self, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        total = y.sum() * 0.0
        n_old = self.positions.shape[0] if self.n_old is None else self.n_old
        parts = ((rows < n_old, self.weight), ((rows >= n_old) & (rows < self.positions.shape[0]), self.new_weight))
        for part, weight in parts:
            if weight == 0 or not bool(part.any()):
                continue
            squared = ((y[part] - self.positions[rows[part]]) ** 2).sum(dim=1)
            if self.row_weights is not None:
                squared = squared * self.row_weights[rows[part]]
            total = total + weight * squared.mean()
        return total

    def loss_every_row(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`loss` of the embedding ``y`` of every row in order (a whole-graph step), as one
        weighted sum: each held row's coefficient is its weight ÷ the number of rows of its part."""
        if self._row_coefficients is None:
            self._row_coefficients = self._coefficients()
        n = self.positions.shape[0]
        return (((y[:n] - self.positions) ** 2).sum(dim=1) * self._row_coefficients).sum()

    def _coefficients(self) -> torch.Tensor:
        n = self.positions.shape[0]
        n_old = n if self.n_old is None else self.n_old
        coefficients = torch.zeros(n, dtype=self.positions.dtype, device=self.positions.device)
        for start, stop, weight in ((0, n_old, self.weight), (n_old, n, self.new_weight)):
            if stop > start:
                coefficients[start:stop] = weight / (stop - start)
        if self.row_weights is not None:
            coefficients = coefficients * self.row_weights[:n]
        return coefficients


def release_weights(graph, n_fixed: int) -> np.ndarray:
    """Hold weight in ``[0, 1]`` of each of the first ``n_fixed`` vertices of ``graph``.

    With ``s_i`` the share of vertex ``i``'s edge weight that goes to new vertices (index
    ``>= n_fixed``) and ``rho`` the share of new vertices in the graph, the weight is
    ``(1 - s_i) / (1 - rho)`` clipped to ``[0, 1]``: 1 when ``i`` has no more new neighbours
    than a uniform mix would give it, 0 when all its neighbours are new. A vertex without
    edges keeps weight 1.
    """
    share, expected = _share_to_new(graph, n_fixed, new_rows=False)
    return np.clip((1.0 - share) / (1.0 - expected), 0.0, 1.0).astype(np.float32)


def novelty_weights(graph, n_fixed: int) -> np.ndarray:
    """Pull weight in ``[0, 1]`` of each vertex of ``graph`` from ``n_fixed`` on (the new ones).

    With ``s_i`` the share of vertex ``i``'s edge weight that goes to new vertices and ``rho``
    the share of new vertices, the weight is ``(s_i - rho) / (1 - rho)`` clipped to
    ``[0, 1]``: 0 for a new vertex among old ones as a uniform mix would put it (a known
    type), 1 when all its neighbours are new (a type the first map lacked). A vertex without
    edges gets weight 0.
    """
    share, expected = _share_to_new(graph, n_fixed, new_rows=True)
    return np.clip((share - expected) / (1.0 - expected), 0.0, 1.0).astype(np.float32)


def _share_to_new(graph, n_fixed: int, *, new_rows: bool) -> tuple[np.ndarray, float]:
    """Share of each old (or, with ``new_rows``, each new) vertex's edge weight that goes to
    the new vertices (index ``>= n_fixed``; 0 without edges), and the share of new vertices."""
    g = sp.csr_matrix(graph)
    n = g.shape[0]
    if not 0 < n_fixed < n:
        raise ValueError(f"`n_fixed` must be between 1 and {n - 1}, got {n_fixed}.")
    rows = g[n_fixed:] if new_rows else g[:n_fixed]
    total = np.asarray(rows.sum(axis=1), dtype=np.float64).ravel()
    new = np.asarray(rows[:, n_fixed:].sum(axis=1), dtype=np.float64).ravel()
    share = np.divide(new, total, out=np.zeros_like(total), where=total > 0)
    return share, (n - n_fixed) / n
