"""Where the new cells of a growing map go: a UMAP layout of them alone, the old cells fixed.

:meth:`NUMAP.extend` first lays out the new rows as free coordinates, by umap-learn's own
layout optimiser (the stochastic gradient descent of ``UMAP.fit``): each new row starts
where the trained network puts it and moves along the edges of the union's graph whose
head is new (towards its old and new neighbours, away from negative samples of all rows),
while the old rows stay where they are. Free coordinates find room quickly where a network
fine-tuned for a few hundred steps does not: a cell type the first map lacked, lying
against an old type in the input space, comes out of the old cells it was extrapolated
onto. With DensMAP, a few steps of the UMAP loss and the density term on the free
coordinates then give the new rows their local densities (:func:`polish_density`). The
network then learns these coordinates (the pull of the extension) together with the UMAP
loss (docs/method.md, "Growing a reference").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .device import np_rng

#: Epochs of the layout of up to :data:`FULL_LAYOUT_ROWS` new rows. The layout starts from
#: where the trained network puts the new rows, not from a spectral initialisation as
#: ``UMAP.fit`` does (200 epochs above 10,000 cells), and gets there in few epochs: on
#: benchmarks/extend.py's kidney and paul15 (4 seeds, ``--layout-epochs``) 40, 60 and 100
#: epochs placed the added cells alike (kNN accuracy 0.857 / 0.861 / 0.855 and 0.769 / 0.766
#: / 0.765; the new types 0.53–0.54 and 0.69–0.70), at 0.37 s for 100 on kidney's 1,951 new
#: rows. It runs on one core (umap-learn's parallel layout is not reproducible), its time
#: proportional to new rows × epochs, so more new rows get fewer epochs, down to
#: :data:`MIN_LAYOUT_EPOCHS`: their time stays that of 10,000 rows until the floor.
LAYOUT_EPOCHS = 50
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


#: With DensMAP, the layout is then polished by this many whole-graph steps of the UMAP loss
#: and the density term on the free coordinates of the new rows (Adam at
#: :data:`POLISH_LR`): the layout alone leaves a new type's internal densities as UMAP lays
#: them out, and the network, pulled towards it, kept them (pbmc4k's union lost density
#: correlation); see docs/method.md, "Growing a reference". 100 steps gave the same union
#: quality within 0.01 on benchmarks/extend.py's five sets, at 1–3 % more of a refit's time.
POLISH_STEPS = 50
POLISH_LR = 0.03

#: Weight of a pull of each new row towards its place in the layout during the polish (the
#: mean squared distance over the new rows, as the extension's pull, whose weight is also 1):
#: the density term sets the new rows' local densities without undoing the layout's
#: neighbourhoods. Without it the polish took back much of what the layout found on two of
#: benchmarks/extend.py's sets (``--stages``: the new type of paul15 and of kidney);
#: 0 lets the density term and the UMAP loss move the new rows freely.
POLISH_PULL = 1.0


class _Coordinates(torch.nn.Module):
    """Free coordinates of the new rows after the fixed old ones, looked up by row index."""

    def __init__(self, fixed: torch.Tensor, free: torch.Tensor):
        super().__init__()
        self.register_buffer("fixed", fixed)
        self.free = torch.nn.Parameter(free.clone())

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.fixed, self.free])[index[:, 0].long()]


class _RowIndex:
    """The table :func:`~scnumap.core.train.train_embedding` reads rows from: each row is its index."""

    def __init__(self, n_obs: int, device: torch.device):
        self.n_obs, self.device = n_obs, device

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.to(torch.float32)[:, None]


def polish_density(
    positions: np.ndarray,
    placed: np.ndarray,
    edges,
    density,
    a: float,
    b: float,
    *,
    batch_size: int,
    negative_sample_rate: int,
    generator: torch.Generator,
    n_steps: int = POLISH_STEPS,
    lr: float = POLISH_LR,
    pull: float | None = None,
) -> np.ndarray:
    """``placed`` after ``n_steps`` whole-graph steps of the UMAP loss and the density term.

    The same training loop as the network's (:func:`~scnumap.core.train.train_embedding`),
    on free coordinates: the old rows fixed at ``positions``, the new rows' coordinates the
    parameters; ``edges`` ``(heads, tails, weights)`` of the graph of all rows (only those
    touching a new row are sampled) and ``density`` (a
    :class:`~scnumap.core.train.DensityTerm` of all rows, active from its ``start_step``);
    ``pull`` (``None``: :data:`POLISH_PULL`) weighs a pull of the new rows towards ``placed``.
    """
    from .sampling import EdgeSampler
    from .train import train_embedding

    device = density.r_orig.device
    n_old = positions.shape[0]
    heads, tails, weights = edges
    keep = (heads >= n_old) | (tails >= n_old)
    if not keep.any():
        return placed
    coordinates = _Coordinates(
        torch.as_tensor(positions, dtype=torch.float32, device=device),
        torch.as_tensor(placed, dtype=torch.float32, device=device),
    )
    train_embedding(
        coordinates,
        _RowIndex(n_old + placed.shape[0], device),
        EdgeSampler(heads[keep], tails[keep], weights[keep], device),
        a=a,
        b=b,
        n_steps=n_steps,
        batch_size=batch_size,
        negative_sample_rate=negative_sample_rate,
        lr=lr,
        generator=generator,
        density=density,
        whole_graph=True,
        step_lr=lr,
        hold=_layout_pull(positions, placed, POLISH_PULL if pull is None else pull, device),
    )
    return coordinates.free.detach().cpu().numpy()


def _layout_pull(positions: np.ndarray, placed: np.ndarray, weight: float, device):
    """The pull of the new rows towards ``placed`` (the old rows, fixed, get none), or None."""
    from .hold import HoldTerm

    if weight <= 0:
        return None
    target = torch.as_tensor(np.concatenate([positions, placed]), dtype=torch.float32, device=device)
    return HoldTerm(target, 0.0, None, positions.shape[0], float(weight))
