"""Edge sampling in proportion to the fuzzy-graph weights, over the whole graph.

Every draw picks edge ``e`` with probability ``w_e / sum(w)`` by inverse-CDF
search in the cumulative weights (``torch.searchsorted``), so memory stays
``O(n_edges)``: nothing is materialised per epoch and no fixed subset of edges
is reused. Negatives are drawn uniformly over all vertices.
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
        self.heads = torch.as_tensor(heads, dtype=torch.int64, device=device)
        self.tails = torch.as_tensor(tails, dtype=torch.int64, device=device)
        cumulative = np.cumsum(weights, dtype=np.float64)
        self.total = float(cumulative[-1])
        self.cumulative = torch.as_tensor(cumulative, device=device)
        self.n_edges = heads.shape[0]

    def sample(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(size, generator=generator, device=generator.device, dtype=torch.float64)
        u = u.to(self.device) * self.total
        index = torch.searchsorted(self.cumulative, u, right=True).clamp_max(self.n_edges - 1)
        return self.heads[index], self.tails[index]


def sample_vertices(n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``size`` vertices drawn uniformly with replacement (negative samples)."""
    return torch.randint(0, n, (size,), generator=generator, device=generator.device).to(device)
