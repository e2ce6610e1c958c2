"""Where the new cells of a growing map go: a UMAP layout of them alone, the old cells fixed.

:meth:`NUMAP.extend` first lays out the new rows as free coordinates, by umap-learn's own
layout optimiser (the stochastic gradient descent of ``UMAP.fit``): each new row starts
where the trained network puts it and moves along the edges of the union's graph whose
head is new (towards its old and new neighbours, away from negative samples of all rows),
while the old rows stay where they are. Free coordinates find room quickly where a network
fine-tuned for a few hundred steps does not: a cell type the first map lacked, lying
against an old type in the input space, comes out of the old cells it was extrapolated
onto. The network then learns these coordinates (the hold term of the extension) together
with the UMAP loss (docs/method.md, "Growing a reference").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .device import np_rng

#: Epochs of the layout of up to :data:`FULL_LAYOUT_ROWS` new rows. The layout starts from
#: where the trained network puts the new rows, not from a spectral initialisation as
#: ``UMAP.fit`` does (200 epochs above 10,000 cells); with 100 epochs the extensions of two
#: of benchmarks/extend.py's sets placed the new cells as well as with 200. It runs on one core
#: (umap-learn's parallel layout is not reproducible), its time proportional to new rows ×
#: epochs, so more new rows get fewer epochs, down to :data:`MIN_LAYOUT_EPOCHS`: their time
#: stays that of 10,000 rows until the floor (1,000,000 new rows: 30 epochs).
LAYOUT_EPOCHS = 100
FULL_LAYOUT_ROWS = 10_000
MIN_LAYOUT_EPOCHS = 30


def layout_epochs(n_new: int) -> int:
    """Epochs of the layout of ``n_new`` new rows (:data:`LAYOUT_EPOCHS`, fewer above :data:`FULL_LAYOUT_ROWS`)."""
    if n_new <= FULL_LAYOUT_ROWS:
        return LAYOUT_EPOCHS
    return max(MIN_LAYOUT_EPOCHS, round(LAYOUT_EPOCHS * FULL_LAYOUT_ROWS / n_new))


def layout_new_rows(
    positions: np.ndarray,
    start: np.ndarray,
    graph,
    a: float,
    b: float,
    *,
    n_epochs: int | None = None,
    random_state=None,
) -> np.ndarray:
    """Coordinates of the new rows of ``graph`` laid out with the old rows fixed at ``positions``.

    Parameters
    ----------
    positions
        ``(n_old, n_components)`` coordinates of rows ``0 .. n_old - 1`` (kept).
    start
        ``(n_new, n_components)`` starting coordinates of the other rows.
    graph
        ``(n_old + n_new, n_old + n_new)`` fuzzy neighbour graph of all rows (symmetric).
    a, b
        UMAP's curve parameters.
    n_epochs
        Epochs of umap-learn's layout optimiser (``None``: :func:`layout_epochs`); edges
        weaker than ``1 / n_epochs`` of the strongest are left out, as in ``UMAP.fit``.
    random_state
        Seed of the negative sampling.

    Returns
    -------
    ``(n_new, n_components)`` float32 coordinates of the new rows.
    """
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import make_epochs_per_sample

    n_old, n_new = positions.shape[0], start.shape[0]
    n_epochs = layout_epochs(n_new) if n_epochs is None else n_epochs
    g = sp.coo_matrix(graph)
    if g.shape != (n_old + n_new, n_old + n_new):
        raise ValueError(f"`graph` must have shape {(n_old + n_new,) * 2}, got {g.shape}.")
    embedding = np.ascontiguousarray(np.concatenate([positions, start]), dtype=np.float32)
    keep = (g.row >= n_old) & (g.data >= g.data.max(initial=0.0) / n_epochs) & (g.data > 0)
    if not keep.any():
        return embedding[n_old:].copy()
    head, tail = g.row[keep].astype(np.int32), g.col[keep].astype(np.int32)
    epochs_per_sample = make_epochs_per_sample(g.data[keep].astype(np.float64), n_epochs)
    rng_state = np_rng(random_state).integers(-(2**31), 2**31 - 1, 3).astype(np.int64)
    # head and tail embeddings are one array: new rows move, and see each other move; the
    # old rows are only ever tails and negatives (``move_other=False``), so they stay
    optimize_layout_euclidean(
        embedding,
        embedding,
        head,
        tail,
        n_epochs,
        embedding.shape[0],
        epochs_per_sample,
        float(a),
        float(b),
        rng_state,
        move_other=False,
    )
    return embedding[n_old:].copy()
