"""The term that keeps old cells in place while a trained map grows (:meth:`NUMAP.extend`).

Each old cell is pulled towards its coordinate on the first map. How strongly depends on
how much its neighbourhood changed: with the new cells in the graph, an old cell whose
neighbours are new in the same proportion as the new cells are in the union (new cells
of known types, spread like the old ones) keeps the full weight, while a cell whose
neighbours are mostly new (it borders something the first map did not have) is held
less and can make room (docs/method.md, "Growing a reference").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class HoldTerm:
    """Keep rows ``0 .. n_fixed - 1`` at ``positions`` (extending a trained map).

    Adds ``weight`` × the mean over held rows of ``row_weights[i]`` × the squared distance
    between row ``i``'s embedding and ``positions[i]``, over the rows of each step's tails
    and negatives (the edge heads carry the input noise) or over every row in a
    whole-graph step. ``row_weights`` ``None`` holds every row with weight 1.
    """

    positions: torch.Tensor  # (n_fixed, n_components) coordinates to keep
    weight: float
    row_weights: torch.Tensor | None = None  # (n_fixed,) in [0, 1]

    def loss(self, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        held = rows < self.positions.shape[0]
        if not bool(held.any()):
            return y.sum() * 0.0
        squared = ((y[held] - self.positions[rows[held]]) ** 2).sum(dim=1)
        if self.row_weights is not None:
            squared = squared * self.row_weights[rows[held]]
        return self.weight * squared.mean()


def release_weights(graph, n_fixed: int) -> np.ndarray:
    """Hold weight in ``[0, 1]`` of each of the first ``n_fixed`` vertices of ``graph``.

    With ``s_i`` the share of vertex ``i``'s edge weight that goes to new vertices (index
    ``>= n_fixed``) and ``rho`` the share of new vertices in the graph, the weight is
    ``(1 - s_i) / (1 - rho)`` clipped to ``[0, 1]``: 1 when ``i`` has no more new neighbours
    than a uniform mix would give it, 0 when all its neighbours are new. A vertex without
    edges keeps weight 1.
    """
    g = sp.csr_matrix(graph)
    n = g.shape[0]
    if not 0 < n_fixed < n:
        raise ValueError(f"`n_fixed` must be between 1 and {n - 1}, got {n_fixed}.")
    total = np.asarray(g[:n_fixed].sum(axis=1), dtype=np.float64).ravel()
    new = np.asarray(g[:n_fixed, n_fixed:].sum(axis=1), dtype=np.float64).ravel()
    share = np.divide(new, total, out=np.zeros_like(total), where=total > 0)
    expected = (n - n_fixed) / n
    return np.clip((1.0 - share) / (1.0 - expected), 0.0, 1.0).astype(np.float32)
