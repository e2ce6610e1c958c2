r"""DensMAP's density term (Narayan, Berger & Cho 2021).

Original local radius, once, over each vertex's graph edges :math:`e` with weight
:math:`\mu_e` and input distance :math:`d_e`:
:math:`r_i = \log(\varepsilon + \sum_e \mu_e d_e^2 / \sum_e \mu_e)`, standardised.

Embedding local radius (differentiable), with :math:`\phi_e = 1/(1 + a\|y_i-y_j\|^{2b})`:
:math:`r'_i = \log(\varepsilon + \sum_e \phi_e \|y_i-y_j\|^2 / \sum_e \phi_e)`.

Loss: :math:`-\lambda\,\mathrm{corr}(R_\mathrm{orig}, R_\mathrm{emb})`, with
``dens_var_shift`` added to the embedding variance. Each step samples vertices but
takes every sampled vertex's *full* neighbourhood, so its radius is unbiased. When every
vertex takes part (a graph of at most ``dens_subsample_size`` vertices),
:func:`whole_graph_density_loss` computes the same term with its gradient written out.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .batching import add_rows, bin_sums, take_rows
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
        self._graph = graph
        self._everything = None
        self._mirrored = None

    def sample(self, size: int, generator: torch.Generator):
        """Return ``(vertices, edge_rows, edge_cols)``; ``edge_rows`` index into ``vertices``."""
        perm = torch.randperm(self.n_obs, generator=generator, device=generator.device).to(self.device)
        return self._neighbourhoods(perm[: min(size, self.n_obs)])

    def everything(self):
        """``(vertices, edge_rows, edge_cols)`` for all vertices in order (computed once)."""
        if self._everything is None:
            self._everything = self._neighbourhoods(torch.arange(self.n_obs, device=self.device))
        return self._everything

    def mirrored_edges(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The edges of :meth:`everything` with each mirrored pair once: ``(heads, tails, n_pairs)``.

        The first ``n_pairs`` edges ``(i, j)``, ``i < j``, stand for both ``(i, j)`` and
        ``(j, i)`` of the graph (a symmetric graph's edges, half of them); the others are
        edges whose mirror the graph lacks, and loops, each standing for itself. Every edge
        of the graph is thus counted once from its head's side (computed once; a graph with
        duplicate entries keeps every edge as its own).
        """
        if self._mirrored is None:
            g = self._graph
            rows = np.repeat(np.arange(g.shape[0], dtype=np.int64), np.diff(g.indptr))
            cols = g.indices.astype(np.int64)
            if g.has_canonical_format:
                n = np.int64(g.shape[0])
                mirrored = np.isin(cols * n + rows, rows * n + cols)
            else:
                mirrored = np.zeros(rows.shape[0], dtype=bool)
            pair = mirrored & (rows < cols)
            alone = ~mirrored | (rows == cols)
            heads = np.concatenate([rows[pair], rows[alone]])
            tails = np.concatenate([cols[pair], cols[alone]])
            self._mirrored = (
                torch.as_tensor(heads, device=self.device),
                torch.as_tensor(tails, device=self.device),
                int(pair.sum()),
            )
        return self._mirrored

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


def whole_graph_density_loss(
    y: torch.Tensor, sampler: NeighbourhoodSampler, r_orig: torch.Tensor, a: float, b: float, var_shift: float
) -> torch.Tensor:
    """``density_correlation_loss(r_orig, r')`` with ``r'`` the :func:`embedding_log_radius`
    of every vertex of ``sampler``'s graph, from the embedding ``y`` of all of them.

    The same value as composing those two functions, with the gradient with respect to
    ``y`` written out (:class:`_WholeGraphDensity`), in fewer operations than autograd's
    gradient of the composition (benchmarks/step_losses.py compares them). A symmetric
    graph's edge ``(i, j)`` and its mirror ``(j, i)`` have the same length, so each such
    pair is computed once (:meth:`NeighbourhoodSampler.mirrored_edges`) and counted for
    both ends; the sums per vertex are :func:`~scnumap.core.batching.bin_sums`. Coordinates
    are handled column by column, as in :func:`~scnumap.core.losses.edge_cross_entropy`.
    Summed in a fixed order, so two runs on the CPU agree to the bit.
    """
    heads, tails, n_pairs = sampler.mirrored_edges()
    return _WholeGraphDensity.apply(y, heads, tails, n_pairs, r_orig, float(a), float(b), float(var_shift))


class _WholeGraphDensity(torch.autograd.Function):
    """Forward: the density term of every vertex; backward: its gradient with respect to ``y``.

    With ``s_e = |y_i - y_j|^2`` on edge ``e = (i, j)``, ``phi_e = 1 / (1 + a s_e^b)``,
    ``N_i = sum_e phi_e s_e``, ``D_i = sum_e phi_e`` over the edges of ``i`` (its own, and
    the first ``n_pairs`` edges that end at ``i``, which stand for their mirrors),
    ``r'_i = log(eps + N_i / D_i)`` and ``L = -cov(r, r') / sqrt((var r + eps)(var r' +
    shift))`` (means over vertices): ``dL/dr'_i = (c re_i / v' - ro_i) / (n sqrt(v v'))``
    (``ro``, ``re`` centred, ``c`` the covariance, ``v``, ``v'`` the shifted variances), then
    through ``N_i``, ``D_i`` to ``dL/ds_e`` (from both ends for a pair) and
    ``dL/dy_i = sum_e 2 (y_i - y_j) dL/ds_e`` over the edges leaving ``i`` minus that over
    the edges arriving at ``i``.
    """

    @staticmethod
    def forward(ctx, y, heads, tails, n_pairs, r_orig, a, b, var_shift):
        n = r_orig.shape[0]
        columns = y.T.contiguous()  # (d, n): every operation below runs along the edges
        diff = torch.index_select(columns, 1, heads) - torch.index_select(columns, 1, tails)
        sq = (diff * diff).sum(dim=0)
        shifted = sq + 1e-10  # as membership()
        powered = shifted.pow(b)
        phi = 1.0 / (1.0 + a * powered)
        paired = tails[:n_pairs]
        phi_sq = phi * sq
        num = bin_sums(heads, phi_sq, n) + bin_sums(paired, phi_sq[:n_pairs], n)
        den = bin_sums(heads, phi, n) + bin_sums(paired, phi[:n_pairs], n)
        den_clamped = den.clamp_min(EPS)
        ratio = num / den_clamped
        r_emb = torch.log(EPS + ratio)
        ro = r_orig - r_orig.mean()
        re = r_emb - r_emb.mean()
        var_orig = ro.pow(2).mean() + EPS
        var_emb = re.pow(2).mean() + var_shift
        cov = (ro * re).mean()
        root = torch.sqrt(var_orig * var_emb)
        ctx.save_for_backward(diff, sq, shifted, powered, phi, den, den_clamped, ratio, ro, re, var_emb, cov, root)
        ctx.index = (heads, tails, n_pairs)
        ctx.a, ctx.b = a, b
        return -cov / root

    @staticmethod
    def backward(ctx, grad):
        diff, sq, shifted, powered, phi, den, den_clamped, ratio, ro, re, var_emb, cov, root = ctx.saved_tensors
        heads, tails, n_pairs = ctx.index
        a, b = ctx.a, ctx.b
        n = ro.shape[0]
        # the centring adds nothing: ro and re sum to zero
        grad_r = (grad / (n * root)) * (cov / var_emb * re - ro)
        grad_ratio = grad_r / (EPS + ratio)
        grad_num = grad_ratio / den_clamped
        grad_den = torch.where(den > EPS, -grad_ratio * ratio / den_clamped, torch.zeros_like(ratio))
        dphi = (-a * b) * powered / shifted * phi * phi  # d phi / d s
        through_num = phi + sq * dphi  # d (phi s) / d s
        grad_sq = torch.index_select(grad_num, 0, heads) * through_num + torch.index_select(grad_den, 0, heads) * dphi
        if n_pairs:  # a pair's length also enters its tail's radius
            paired = tails[:n_pairs]
            grad_sq[:n_pairs] += (
                torch.index_select(grad_num, 0, paired) * through_num[:n_pairs]
                + torch.index_select(grad_den, 0, paired) * dphi[:n_pairs]
            )
        grad_edge = diff.mul_(2.0 * grad_sq)  # (d, E)
        grad_y = torch.stack(
            [bin_sums(heads, column, n) - bin_sums(tails, column, n) for column in grad_edge],
            1,
        )
        return grad_y, None, None, None, None, None, None, None
