"""A fit's warm start: a UMAP layout of free coordinates, learnt by the network first.

On a small graph (a fit of :data:`~scnumap.core.numap.WARM_START_MAX` cells at most)
the network's UMAP steps are most of a fit's time, and the first of them
only unfold the map. umap-learn's layout optimiser unfolds free coordinates far more
cheaply: starting from the GrEASE coordinates (umap-learn's spectral initialisation, as
GrEASE learns the same eigenvectors), :data:`LAYOUT_EPOCHS` epochs of its stochastic
gradient descent lay the cells out; the network then learns that layout by
:data:`DISTIL_STEPS` steps of the mean squared distance to it (one pass of every cell,
no edges), and the UMAP steps that follow (with the input noise that makes new points
land well) start from an unfolded map, so a fit trains :data:`UMAP_FRACTION` of the UMAP
steps it trains without it (docs/method.md, "Warm start on small data").
"""

from __future__ import annotations

import numpy as np
import torch

from .device import np_rng
from .layers import adam
from .new_rows import layout_new_rows
from .train import lr_factor

#: Epochs of umap-learn's layout of the free coordinates.
LAYOUT_EPOCHS = 100

#: Steps in which the network learns the layout.
DISTIL_STEPS = 150

#: Share of a fit's automatic UMAP phase that a warm-started fit trains (its density phase,
#: with DensMAP, keeps its length). benchmarks/warm_start.py: at 0.5 pbmc4k's kNN
#: preservation fell below umap-learn's − 0.03 (0.163) and kidney's held-out transfer (70 %
#: splits, 3,980 cells) to 0.927 against 0.938 without the warm start; at 0.7 0.171 and
#: 0.935 (benchmarks/RESULTS.md, "Warm start").
UMAP_FRACTION = 0.7

#: Side of the box the starting coordinates are scaled into, as umap-learn's initialisation.
START_BOX = 10.0


def spectral_start(spectral: np.ndarray, n_components: int, random_state=None) -> np.ndarray:
    """Starting coordinates of the layout: the first ``n_components`` GrEASE coordinates.

    As umap-learn starts its layout from the spectral embedding: each column scaled to
    ``[0, START_BOX]`` (a constant column stays at 0), plus noise of scale ``1e-4`` so that
    no two cells coincide.

    Returns
    -------
    ``(n, n_components)`` float32 array.
    """
    start = np.asarray(spectral, dtype=np.float64)[:, :n_components]
    if start.shape[1] < n_components:
        raise ValueError(f"`spectral` has {start.shape[1]} columns; the layout needs {n_components}.")
    low, span = start.min(axis=0), np.ptp(start, axis=0)
    start = np.divide(start - low, span, out=np.zeros_like(start), where=span > 0) * START_BOX
    start += np_rng(random_state).normal(scale=1e-4, size=start.shape)
    return start.astype(np.float32)


def free_layout(start: np.ndarray, graph, a: float, b: float, *, random_state=None) -> np.ndarray:
    """umap-learn's layout of every row of ``graph`` from ``start`` (:data:`LAYOUT_EPOCHS`)."""
    nothing_fixed = np.empty((0, start.shape[1]), dtype=np.float32)
    return layout_new_rows(nothing_fixed, start, graph, a, b, n_epochs=LAYOUT_EPOCHS, random_state=random_state)


def distil(encoder: torch.nn.Module, rows: torch.Tensor, target: torch.Tensor, *, lr: float) -> list[float]:
    """Train ``encoder`` for :data:`DISTIL_STEPS` steps so that ``encoder(rows)`` comes close to ``target``.

    Adam at ``lr``, decayed linearly as a fit's steps are (:func:`~scnumap.core.train.lr_factor`,
    down to :data:`~scnumap.core.train.LR_FLOOR` of it); the loss is the mean
    over rows of the squared distance to the target row. Returns the loss of every step.
    """
    opt = adam(encoder.parameters(), lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, DISTIL_STEPS, DISTIL_STEPS))
    losses = []  # tensors: no device sync per step
    encoder.train()
    for _ in range(DISTIL_STEPS):
        loss = ((encoder(rows) - target) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    encoder.eval()
    return torch.stack(losses).tolist()
