r"""The UMAP loss of the parametric embedding.

With :math:`q(d) = 1 / (1 + a\,d^{2b})` for an embedding distance :math:`d`, the
cross-entropy of UMAP's fuzzy sets is :math:`-\log q` on sampled graph edges
(attraction) and :math:`-\log(1 - q)` on negative pairs (repulsion), both clamped.
This exact form kept neighbours better than umap-learn's parametric
softplus-of-logit variant in our measurements (docs/method.md, "The UMAP part").
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_float
from .batching import add_rows

#: Floor inside the logarithms, as umap-learn's clamp.
EPS = 1e-4


def find_ab_params(spread: float = 1.0, min_dist: float = 0.1) -> tuple[float, float]:
    """``(a, b)`` of the curve ``1 / (1 + a d^{2b})`` for ``min_dist`` and ``spread``.

    umap-learn's least-squares fit (the same target curve, grid and optimiser), written here
    because importing umap-learn costs about half a minute of numba compilation.
    """
    spread = check_float(spread, "spread", minimum=0.0, strict_minimum=True)
    min_dist = check_float(min_dist, "min_dist", minimum=0.0)
    if min_dist > spread:
        raise ValueError(f"`min_dist` ({min_dist}) must be <= `spread` ({spread}).")
    from scipy.optimize import curve_fit

    x = np.linspace(0, spread * 3, 300)
    target = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(lambda d, a, b: 1.0 / (1.0 + a * d ** (2 * b)), x, target)
    return float(a), float(b)


def membership(sq_dist: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """``q = 1 / (1 + a d^{2b})`` from squared distances."""
    return 1.0 / (1.0 + a * (sq_dist + 1e-10).pow(b))


def umap_cross_entropy(sq_dist_pos: torch.Tensor, sq_dist_neg: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Mean over positive edges of ``-log q(pos) - sum_neg log(1 - q(neg))``.

    Parameters
    ----------
    sq_dist_pos
        ``(B,)`` squared embedding distances of the sampled edges.
    sq_dist_neg
        ``(B, r)`` squared distances of each edge's head to its ``r`` negatives.
    """
    attraction = -torch.log(membership(sq_dist_pos, a, b).clamp_min(EPS))
    repulsion = -torch.log((1.0 - membership(sq_dist_neg, a, b)).clamp_min(EPS))
    return attraction.mean() + repulsion.sum(dim=1).mean()


def edge_cross_entropy(
    y_heads: torch.Tensor, y: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor, negatives: torch.Tensor, a, b
) -> torch.Tensor:
    """:func:`umap_cross_entropy` of the edges ``heads[e] → tails[e]`` and of each head's
    negatives ``negatives[e]`` (``(E, r)``), the heads read from ``y_heads``, tails and
    negatives from ``y`` (the same tensor when no head carries noise).

    The same value as gathering the rows and composing the squared distances with
    :func:`umap_cross_entropy`, with the gradient written out (:class:`_EdgeCrossEntropy`):
    on a small graph a step is bound by the number of operations, and autograd's gradient
    of that composition takes more of them. The gradient's sums over repeated rows are
    added in a fixed order (:func:`~scnumap.core.batching.add_rows`).
    """
    return _EdgeCrossEntropy.apply(y_heads, y, heads, tails, negatives, float(a), float(b))


class _EdgeCrossEntropy(torch.autograd.Function):
    """Forward: :func:`edge_cross_entropy`; backward: its gradient with respect to both tables.

    With ``p = (s + 1e-10)^b`` and ``q = 1 / (1 + a p)`` on a squared distance ``s``:
    ``d(-log q)/ds = a b p q / (s + 1e-10)`` and ``d(-log(1 - q))/ds = -a b p q^2 / ((1 - q)(s + 1e-10))``,
    each 0 where its clamp at ``EPS`` holds; ``d s / d y_head = 2 (y_head - y_other)``.
    """

    @staticmethod
    def forward(ctx, y_heads, y, heads, tails, negatives, a, b):
        n_edges, r = negatives.shape
        head_rows = torch.index_select(y_heads, 0, heads)
        to_tail = head_rows - torch.index_select(y, 0, tails)
        to_negative = head_rows[:, None, :] - torch.index_select(y, 0, negatives.reshape(-1)).view(n_edges, r, -1)
        sq_pos = (to_tail * to_tail).sum(dim=1)
        sq_neg = (to_negative * to_negative).sum(dim=2)
        shifted_pos, shifted_neg = sq_pos + 1e-10, sq_neg + 1e-10
        p_pos, p_neg = shifted_pos.pow(b), shifted_neg.pow(b)
        q_pos, q_neg = 1.0 / (1.0 + a * p_pos), 1.0 / (1.0 + a * p_neg)
        attraction = -torch.log(q_pos.clamp_min(EPS))
        repulsion = -torch.log((1.0 - q_neg).clamp_min(EPS))
        ctx.save_for_backward(
            heads, tails, negatives, to_tail, to_negative, shifted_pos, shifted_neg, p_pos, p_neg, q_pos, q_neg
        )
        ctx.a, ctx.b, ctx.rows = a, b, (y_heads.shape[0], y.shape[0])
        return attraction.mean() + repulsion.sum(dim=1).mean()

    @staticmethod
    def backward(ctx, grad):
        heads, tails, negatives, to_tail, to_negative, shifted_pos, shifted_neg, p_pos, p_neg, q_pos, q_neg = (
            ctx.saved_tensors
        )
        a, b = ctx.a, ctx.b
        n_edges = heads.shape[0]
        scale = grad * (2.0 * a * b / n_edges)
        d_pos = torch.where(q_pos >= EPS, scale * p_pos * q_pos / shifted_pos, torch.zeros_like(q_pos))
        repelled = 1.0 - q_neg
        d_neg = torch.where(
            repelled >= EPS,
            -scale * p_neg * q_neg * q_neg / (repelled.clamp_min(EPS) * shifted_neg),
            torch.zeros_like(q_neg),
        )
        g_pos = d_pos[:, None] * to_tail
        g_neg = d_neg[:, :, None] * to_negative
        n_heads_rows, n_rows = ctx.rows
        grad_heads = add_rows(g_pos.new_zeros(n_heads_rows, g_pos.shape[1]), heads, g_pos + g_neg.sum(dim=1))
        grad_y = add_rows(g_pos.new_zeros(n_rows, g_pos.shape[1]), tails, -g_pos)
        grad_y = add_rows(grad_y, negatives.reshape(-1), -g_neg.reshape(-1, g_neg.shape[2]))
        return grad_heads, grad_y, None, None, None, None, None
