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
