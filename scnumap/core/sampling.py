"""Edge sampling in proportion to the fuzzy-graph weights, over the whole graph.

Every draw picks edge ``e`` with probability ``w_e / sum(w)``, so memory stays
``O(n_edges)``: nothing is materialised per epoch and no fixed subset of edges
is reused. :meth:`EdgeSampler.sample` reads Walker's alias table (:func:`alias_table`,
two look-ups per draw); a grouped draw (:meth:`EdgeSampler.sample_grouped`) draws several
edges of each head, with the same probability per edge, by inverse-CDF search in the
cumulative weights (``torch.searchsorted``). Negatives are drawn uniformly over all
vertices.
"""

from __future__ import annotations

import numpy as np
import torch


class EdgeSampler:
    """Draw batches of directed edges ``(heads, tails)`` with probability ∝ weight."""

    def __init__(self, heads: np.ndarray, tails: np.ndarray, weights: np.ndarray, device: torch.device):
        if heads.shape[0] == 0:
            raise ValueError(
                "The neighbour graph has no edges; every sample is isolated. "
                "Check for duplicated or constant data and try a larger `n_neighbors`."
            )
        self.device = device
        heads, tails, weights = _by_head(heads, tails, weights)
        self.heads = torch.as_tensor(heads, dtype=torch.int64, device=device)
        self.tails = torch.as_tensor(tails, dtype=torch.int64, device=device)
        cumulative = np.cumsum(weights, dtype=np.float64)
        self.total = float(cumulative[-1])
        self.cumulative = torch.as_tensor(cumulative, device=device)
        self.n_edges = heads.shape[0]
        # each head's edges are the consecutive range [start, stop) of the head-sorted edges,
        # their weights the cumulative range [below, above)
        vertices = np.arange(int(heads[-1]) + 1)
        start, stop = np.searchsorted(heads, vertices, side="left"), np.searchsorted(heads, vertices, side="right")
        padded = np.concatenate([[0.0], cumulative])
        self.start = torch.as_tensor(start, device=device)
        self.stop = torch.as_tensor(stop, device=device)
        self.below = torch.as_tensor(padded[start], device=device)
        self.above = torch.as_tensor(padded[stop], device=device)
        self._weights = weights
        self._alias = None  # (keep, alias), built by the first `sample`

    def sample(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` edges, each drawn with probability ∝ weight: tensors ``(size,)``."""
        if self._alias is None:
            keep, alias = alias_table(self._weights)
            self._alias = torch.as_tensor(keep, device=self.device), torch.as_tensor(alias, device=self.device)
        keep, alias = self._alias
        # one uniform per draw: its integer part picks a column, its fraction keeps it or takes the alias
        u = torch.rand(size, generator=generator, device=generator.device, dtype=torch.float64).to(self.device)
        u = u.mul_(self.n_edges)
        column = u.long().clamp_max_(self.n_edges - 1)
        index = torch.where(u.sub_(column) < keep[column], column, alias[column])
        return self.heads[index], self.tails[index]

    def sample_grouped(self, n_heads: int, per_head: int, generator: torch.Generator):
        """``n_heads`` heads and ``per_head`` tails of each: tensors ``(n_heads,)`` and ``(n_heads, per_head)``.

        The first edge of each group is drawn ∝ weight over the whole graph (so a head comes
        with probability ∝ its degree), the others ∝ weight among that head's edges: every
        edge is drawn with the same probability ∝ weight as by :meth:`sample`, but the
        edges of a head come together.
        """
        u = torch.rand(n_heads, per_head, generator=generator, device=generator.device, dtype=torch.float64)
        u = u.to(self.device)
        first = self._edges_at(u[:, 0] * self.total)
        heads = self.heads[first]
        below, above = self.below[heads, None], self.above[heads, None]
        rest = torch.searchsorted(self.cumulative, below + u[:, 1:] * (above - below), right=True)
        rest = torch.minimum(torch.maximum(rest, self.start[heads, None]), self.stop[heads, None] - 1)
        return heads, torch.cat([self.tails[first][:, None], self.tails[rest]], dim=1)

    def _edges_at(self, positions: torch.Tensor) -> torch.Tensor:
        """The edge whose cumulative-weight interval holds each position in ``[0, total)``."""
        return torch.searchsorted(self.cumulative, positions, right=True).clamp_max(self.n_edges - 1)


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of non-negative ``weights`` (Vose's construction, vectorised).

    Returns ``keep`` (float64) and ``alias`` (int64), both ``(n,)``: a column ``i`` drawn
    uniformly is kept with probability ``keep[i]`` and otherwise replaced by ``alias[i]``,
    which draws ``i`` with probability ``weights[i] / sum(weights)``.

    Each round hands every column below the mean weight (a *small*) to one column above it
    (a *large*) whose excess covers the start of the small's deficit, so a large gives
    away at most its excess plus one deficit and keeps a non-negative share; larges that
    fall below the mean are the next round's smalls. Columns left when either side runs
    out (rounding) are kept whole.
    """
    weights = np.asarray(weights, dtype=np.float64)
    n = weights.shape[0]
    scaled = weights * (n / weights.sum())
    keep, alias = np.ones(n), np.arange(n, dtype=np.int64)
    small, large = np.flatnonzero(scaled < 1.0), np.flatnonzero(scaled >= 1.0)
    while small.size and large.size:
        deficit = 1.0 - scaled[small]
        owner = np.searchsorted(np.cumsum(scaled[large] - 1.0), np.cumsum(deficit) - deficit, side="right")
        placed = owner < large.size
        if not placed.any():
            break
        keep[small[placed]] = scaled[small[placed]]
        alias[small[placed]] = large[owner[placed]]
        scaled[large] -= np.bincount(owner[placed], deficit[placed], minlength=large.size)
        fell = scaled[large] < 1.0
        small, large = np.concatenate([small[~placed], large[fell]]), large[~fell]
    return keep, alias


def sample_vertices(n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``size`` vertices drawn uniformly with replacement (negative samples)."""
    return torch.randint(0, n, (size,), generator=generator, device=generator.device).to(device)


def _by_head(heads: np.ndarray, tails: np.ndarray, weights: np.ndarray):
    """The edges sorted by head (kept as they are when they already are, as in CSR order)."""
    if heads.shape[0] > 1 and np.any(heads[1:] < heads[:-1]):
        order = np.argsort(heads, kind="stable")
        return heads[order], tails[order], weights[order]
    return heads, tails, weights
