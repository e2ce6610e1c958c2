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
from .batching import bin_sums

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
    of that composition takes more of them. ``negatives`` whose transpose is contiguous (a
    view ``(r, E)`` transposed) is read without a copy. The gradient's sums over repeated
    rows are added in a fixed order on the CPU (:func:`~scnumap.core.batching.bin_sums`).
    """
    return _EdgeCrossEntropy.apply(y_heads, y, heads, tails, negatives, float(a), float(b))


#: ``-log EPS``: the clamped value of both terms.
_CLAMPED = -float(np.log(EPS))


class _EdgeCrossEntropy(torch.autograd.Function):
    """Forward: :func:`edge_cross_entropy` and its gradient; backward: that gradient, scaled.

    With ``s`` a squared distance, ``p = (s + 1e-10)^b`` and ``q = 1 / (1 + a p)``:
    ``-log q = log(1 + a p)`` with ``d/ds = b a p q / (s + 1e-10)``, and, since
    ``1 - q = a p q``, ``-log(1 - q) = -log(a p q)`` with ``d/ds = -b q / (s + 1e-10)``;
    each derivative is 0 where its clamp at ``EPS`` holds; ``d s / d y_head = 2 (y_head -
    y_other)``. Coordinates are handled column by column (``(d, E)`` and ``(d, r, E)``
    tensors), so that every operation runs over a long contiguous axis: on rows of two
    values torch's reductions and broadcasts are several times slower.
    """

    @staticmethod
    def forward(ctx, y_heads, y, heads, tails, negatives, a, b):
        n_edges, r = negatives.shape
        by_draw = negatives.T.reshape(-1)  # negative k of every edge, k = 0 .. r - 1
        columns = y.T.contiguous()
        head = torch.index_select(columns if y_heads is y else y_heads.T.contiguous(), 1, heads)
        to_tail = head - torch.index_select(columns, 1, tails)  # (d, E)
        to_negative = head[:, None, :] - torch.index_select(columns, 1, by_draw).view(-1, r, n_edges)  # (d, r, E)
        shifted_pos = (to_tail * to_tail).sum(dim=0).add_(1e-10)
        shifted_neg = (to_negative * to_negative).sum(dim=0).add_(1e-10)
        ap_pos, ap_neg = shifted_pos.pow(b).mul_(a), shifted_neg.pow(b).mul_(a)
        q_pos, q_neg = ap_pos.add(1.0).reciprocal_(), ap_neg.add(1.0).reciprocal_()
        attraction = torch.log1p(ap_pos)
        attracted = attraction <= _CLAMPED  # q >= EPS
        repelled = ap_neg * q_neg  # 1 - q
        kept = repelled >= EPS
        loss = (attraction.clamp_max_(_CLAMPED).sum() - repelled.clamp_min_(EPS).log_().sum()) / n_edges
        d_pos = ap_pos.mul_(q_pos).div_(shifted_pos).mul_(2.0 * b / n_edges).mul_(attracted)
        d_neg = q_neg.div_(shifted_neg).mul_(-2.0 * b / n_edges).mul_(kept)
        g_pos, g_neg = to_tail.mul_(d_pos), to_negative.mul_(d_neg)  # d loss / d head, per pair
        ctx.save_for_backward(heads, tails, by_draw, g_pos, g_neg)
        ctx.rows = (y_heads.shape[0], y.shape[0])
        return loss

    @staticmethod
    def backward(ctx, grad):
        heads, tails, by_draw, g_pos, g_neg = ctx.saved_tensors
        n_heads_rows, n_rows = ctx.rows
        on_heads = g_pos + g_neg.sum(dim=1)
        g_neg = g_neg.reshape(g_neg.shape[0], -1)
        grad_heads = torch.stack([bin_sums(heads, column, n_heads_rows) for column in on_heads], 1)
        grad_y = torch.stack(
            [
                bin_sums(tails, along_edge, n_rows) + bin_sums(by_draw, along_negative, n_rows)
                for along_edge, along_negative in zip(g_pos, g_neg, strict=True)
            ],
            1,
        )
        return grad_heads * grad, grad_y * -grad, None, None, None, None, None
