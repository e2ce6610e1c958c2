r"""DensMAP's density term (Narayan, Berger & Cho 2021).

Original local radius, once, over each vertex's graph edges :math:`e` with weight
:math:`\mu_e` and input distance :math:`d_e`:
:math:`r_i = \log(\varepsilon + \sum_e \mu_e d_e^2 / \sum_e \mu_e)`, standardised.

Embedding local radius (differentiable), with :math:`\phi_e = 1/(1 + a\|y_i-y_j\|^{2b})`:
:math:`r'_i = \log(\varepsilon + \sum_e \phi_e \|y_i-y_j\|^2 / \sum_e \phi_e)`.

Loss: :math:`-\lambda\,\mathrm{corr}(R_\mathrm{orig}, R_\mathrm{emb})`, with
``dens_var_shift`` added to the embedding variance. Each step samples vertices but
takes every sampled vertex's *full* neighbourhood, so its radius is unbiased.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .batching import add_rows, take_rows
from .graph import mean_squared_edge_length
from .losses import membership

EPS = 1e-8


def original_log_radius(graph: sp.csr_matrix, edge_dist: np.ndarray) -> np.ndarray:
    """Standardised log local radius ``R_orig`` per vertex (``edge_dist`` aligned with ``graph.data``)."""
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    r = np.log(EPS + mean_squared_edge_length(rows, edge_dist, graph.data, graph.shape[0]))
    std = r.std()
    return ((r - r.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


class NeighbourhoodSampler:
    """Sample vertices and return their full neighbourhoods from a CSR graph."""

    def __init__(self, graph: sp.csr_matrix, device: torch.device):
        self.device = device
        self.indptr = torch.as_tensor(graph.indptr.astype(np.int64), device=device)
        self.indices = torch.as_tensor(graph.indices.astype(np.int64), device=device)
        self.n_obs = graph.shape[0]
        self._everything = None

    def sample(self, size: int, generator: torch.Generator):
        """Return ``(vertices, edge_rows, edge_cols)``; ``edge_rows`` index into ``vertices``."""
        perm = torch.randperm(self.n_obs, generator=generator, device=generator.device).to(self.device)
        return self._neighbourhoods(perm[: min(size, self.n_obs)])

    def everything(self):
        """``(vertices, edge_rows, edge_cols)`` for all vertices in order (computed once)."""
        if self._everything is None:
            self._everything = self._neighbourhoods(torch.arange(self.n_obs, device=self.device))
        return self._everything

    def _neighbourhoods(self, vertices: torch.Tensor):
        start = self.indptr[vertices]
        counts = self.indptr[vertices + 1] - start
        edge_rows = torch.repeat_interleave(torch.arange(vertices.shape[0], device=self.device), counts)
        offsets = torch.arange(edge_rows.shape[0], device=self.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        edge_cols = self.indices[start[edge_rows] + offsets]
        return vertices, edge_rows, edge_cols


def embedding_log_radius(y_vert: torch.Tensor, y_nbr: torch.Tensor, edge_rows: torch.Tensor, a: float, b: float):
    """Differentiable log local radius ``r'`` of each sampled vertex."""
    sq = ((take_rows(y_vert, edge_rows) - y_nbr) ** 2).sum(dim=1)
    phi = membership(sq, a, b)
    n = y_vert.shape[0]
    num = add_rows(torch.zeros(n, dtype=sq.dtype, device=sq.device), edge_rows, phi * sq)
    den = add_rows(torch.zeros(n, dtype=sq.dtype, device=sq.device), edge_rows, phi)
    return torch.log(EPS + num / den.clamp_min(EPS))


def density_correlation_loss(r_orig: torch.Tensor, r_emb: torch.Tensor, var_shift: float) -> torch.Tensor:
    """``-corr(r_orig, r_emb)`` with ``var_shift`` added to the embedding variance."""
    ro = r_orig - r_orig.mean()
    re = r_emb - r_emb.mean()
    cov = (ro * re).mean()
    return -cov / torch.sqrt((ro.pow(2).mean() + EPS) * (re.pow(2).mean() + var_shift))
