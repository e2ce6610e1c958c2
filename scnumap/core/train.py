"""The training loop of the parametric UMAP (with the optional DensMAP term)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .batching import RowTable, chunks, take_rows
from .density import (
    NeighbourhoodSampler,
    density_correlation_loss,
    embedding_log_radius,
    whole_graph_density_loss,
)
from .encoder import Encoder
from .hold import HoldTerm
from .layers import adam
from .losses import edge_cross_entropy
from .noise import BOTH_ENDS_SCALE, NOISE_REFRESH, HeadNoise, StandingNoise
from .progress import progress
from .sampling import EdgeSampler, sample_vertices

#: The learning rate decays linearly to this fraction of ``lr``.
LR_FLOOR = 0.05

#: A step reads this many times ``batch_size`` edges: in a step that embeds every vertex,
#: from that pass; in a grouped step, this many edges of each of ``batch_size`` heads.
#: Measured for the steps that embed every vertex (the density term on a graph of at most
#: ``dens_subsample_size`` vertices), pbmc4k, three seeds, density correlation (kNN
#: preservation): factor 1 0.808 / 0.814 / 0.807 (0.162 / 0.160 / 0.164), 4 0.820 / 0.820 /
#: 0.818, 8 0.823 / 0.823 / 0.824 (0.171 / 0.173 / 0.172), 16 0.827 / – / 0.823.
EDGE_FACTOR = 8

#: A fit runs Adam at this multiple of ``lr``: a step's gradient averages ``EDGE_FACTOR``
#: times as many edges as ``batch_size``, so it is less noisy and takes a larger step (the
#: square-root rule for a larger batch; at ``lr`` itself held-out points landed less well,
#: docs/method.md "Whole-graph steps").
STEP_LR_FACTOR = math.sqrt(EDGE_FACTOR)

#: A fit's whole-graph steps with the input noise read every end of an edge (head, tail,
#: negatives) from one pass of the perturbed rows, at :data:`~scnumap.core.noise.BOTH_ENDS_SCALE`
#: of the noise, instead of the heads from a perturbed pass and the rest from a clean one
#: (an extension keeps the clean pass: its hold term reads it). benchmarks/small_fits.py
#: (1,000-cell samples of six sets): training 1.74 s against 2.39 s on 700 cells, kNN
#: preservation 0.414 against 0.419, held-out transfer 0.837 against 0.839 (docs/method.md,
#: "Whole-graph steps on small data").
ONE_PASS = True

#: Steps between loss read-outs (progress bar, history, divergence check).
LOG_EVERY = 50

#: An embedding coordinate beyond this means training diverged (UMAP layouts span ~±30).
MAX_COORDINATE = 1e4

#: When the density term samples only part of the vertices, the neighbours' positions come
#: from a detached embedding of every vertex, recomputed every this many steps: the values
#: read for neighbours are at most ``DENSITY_REFRESH - 1`` steps old (1: always current).
#: At 100,000 cells a refresh every step cost 60 % more fit time on the CPU for no gain in
#: density correlation (docs/method.md, benchmarks/densmap_large.py).
DENSITY_REFRESH = 10


@dataclass
class DensityTerm:
    """What the DensMAP term needs: neighbourhoods, original radii and its knobs."""

    sampler: NeighbourhoodSampler
    r_orig: torch.Tensor  # (n_obs,) standardised original log radii
    dens_lambda: float
    var_shift: float
    subsample_size: int
    start_step: int
    positions: torch.Tensor | None = None  # detached embedding of all vertices (large graphs)
    positions_step: int = -1  # the step whose parameters computed ``positions``


def train_embedding(
    encoder: Encoder,
    table: RowTable,
    sampler: EdgeSampler,
    *,
    a: float,
    b: float,
    n_steps: int,
    batch_size: int,
    negative_sample_rate: int,
    lr: float,
    generator: torch.Generator,
    noise: HeadNoise | None = None,
    density: DensityTerm | None = None,
    verbose: bool = False,
    density_history: list[float] | None = None,
    hold: HoldTerm | None = None,
    whole_graph: bool = False,
    step_lr: float | None = None,
) -> list[float]:
    """Minimise the UMAP cross-entropy (+ density term) by Adam; returns the history of the
    UMAP cross-entropy (mean every ``LOG_EVERY`` steps, density term excluded); the mean
    density term (unweighted) of the density steps among them goes to ``density_history``.

    Each step (a *grouped* step) draws ``batch_size`` heads ∝ their degree and
    ``EDGE_FACTOR`` edges of each ∝ weight (so every edge comes ∝ weight, as UMAP samples
    them, and a head is embedded once for all its edges) and a pool of ``batch_size``
    uniform vertices; every edge head is pushed away from ``negative_sample_rate`` members
    of that pool per edge. ``noise`` perturbs the heads' inputs
    (:class:`~scnumap.core.noise.HeadNoise`), a regulariser that helps new points land
    where their neighbours are; it is off while the density term is active (noise scaled to
    each cell's neighbourhood asks the network to contract sparse regions, against what
    DensMAP asks). When the density term takes every vertex, each step embeds all of them
    once and reads ``EDGE_FACTOR * batch_size`` edges and their negatives
    (uniform over all vertices) from there. ``whole_graph`` makes every step such a step
    (a small graph); with ``noise``, a fit's steps read every end of an edge from one pass
    of perturbed rows (:data:`ONE_PASS`, the noise of an eighth of the vertices drawn again
    per step: :class:`~scnumap.core.noise.StandingNoise`), an extension's the heads from a
    perturbed pass and the rest from a clean one. Adam
    runs at ``step_lr`` (``None``: ``lr``; a fit passes ``STEP_LR_FACTOR * lr``),
    decayed as :func:`lr_factor` says; ``lr`` is the value error messages name.
    ``hold`` (:class:`HoldTerm`) keeps the first rows where they are.
    """
    device = table.device
    n_obs = table.n_obs
    opt = adam(encoder.parameters(), lr if step_lr is None else step_lr)
    restart = density.start_step if density is not None else n_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, n_steps, restart))
    history: list[float] = []
    running = torch.zeros((), device=device)
    running_dens, n_dens = torch.zeros((), device=device), 0
    r = negative_sample_rate
    # perturbed rows of the whole-graph steps of a small graph
    standing = _standing_noise(noise, table, fit=hold is None) if whole_graph and noise is not None else None
    bar = progress(range(n_steps), "NUMAP", verbose)
    encoder.train()
    for step in bar:
        densmap_phase = density is not None and step >= density.start_step
        whole = whole_graph or (densmap_phase and density.subsample_size >= n_obs)
        if whole:
            n_edges = batch_size * EDGE_FACTOR
            y, rows, loss = _whole_graph_loss(
                encoder, table, sampler, n_edges, r, a, b, generator, None if densmap_phase else standing
            )
            clean = 0
        else:
            y, rows, loss = _grouped_loss(
                encoder, table, sampler, batch_size, r, a, b, generator, None if densmap_phase else noise
            )
            clean = batch_size  # the heads may carry noise
        running = running + loss.detach()
        if hold is not None:
            loss = loss + (hold.loss_every_row(y) if whole else hold.loss(y[clean:], rows[clean:]))
        if densmap_phase:
            if whole:
                dens = _whole_density_loss(y, density, a, b)
            else:
                dens = _density_loss(encoder, table, density, a, b, generator, step)
            loss = loss + density.dens_lambda * dens
            running_dens, n_dens = running_dens + dens.detach(), n_dens + 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % LOG_EVERY == 0 or step + 1 == n_steps:
            value = float(running) / (step % LOG_EVERY + 1)
            running = torch.zeros((), device=device)
            dens_value = float(running_dens) / n_dens if n_dens else 0.0
            if n_dens and density_history is not None:
                density_history.append(dens_value)
            running_dens, n_dens = torch.zeros((), device=device), 0
            largest = float(y.detach().abs().max())
            if not (math.isfinite(value + dens_value) and largest < MAX_COORDINATE):
                raise FloatingPointError(
                    f"NUMAP training diverged at step {step + 1} (loss {value + dens_value:g}, largest coordinate "
                    f"{largest:g}); lower `lr` (got {lr:g}), e.g. to {lr / 10:g}."
                )
            history.append(value)
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)  # shown with the next update: no bar before the delay
    encoder.eval()
    return history


def _whole_graph_loss(encoder, table, sampler, n_edges, r, a, b, generator, standing=None):
    """Embed every vertex once; the UMAP loss of ``n_edges`` edges and uniform negatives read
    from it (:func:`~scnumap.core.losses.edge_cross_entropy`).

    With ``standing`` (:class:`~scnumap.core.noise.StandingNoise`) the pass reads its
    perturbed rows: of every end of an edge when ``standing.both_ends`` (``y`` returned is
    then that pass), else of the heads only, the tails and negatives read from a second,
    clean pass (``y`` returned), as an extension's hold term needs it.
    """
    device = table.device
    n = table.n_obs
    rows = torch.arange(n, device=device)
    heads, tails = sampler.sample(n_edges, generator)
    neg = sample_vertices(n, n_edges * r, generator, device).view(r, n_edges).T  # (E, r), read without a copy
    if standing is None:
        y = y_noisy = encoder(table[rows])
    elif standing.both_ends:
        y = y_noisy = encoder(standing.step(generator))
    else:
        both = encoder(torch.cat([standing.step(generator), standing.rows]))
        y_noisy, y = both[:n], both[n:]
    return y, rows, edge_cross_entropy(y_noisy, y, heads, tails, neg, a, b)


def _standing_noise(noise: HeadNoise, table: RowTable, *, fit: bool) -> StandingNoise:
    """The perturbed rows of a run's whole-graph steps. A fit's (with :data:`ONE_PASS`) are
    read at every end of an edge, at :data:`~scnumap.core.noise.BOTH_ENDS_SCALE` of the noise,
    and ``1 / NOISE_REFRESH`` of them get a new draw per step; an extension's are read at the
    heads only, every one of them drawn again at every step."""
    every = table[torch.arange(table.n_obs, device=table.device)]
    if fit and ONE_PASS:
        return StandingNoise(noise.scaled(BOTH_ENDS_SCALE), every, refresh=NOISE_REFRESH, both_ends=True)
    return StandingNoise(noise, every, refresh=NOISE_REFRESH if fit else 1)


def _grouped_loss(encoder, table, sampler, n_heads, r, a, b, generator, noise):
    """Embed ``n_heads`` heads drawn ∝ degree, ``EDGE_FACTOR`` of each head's edges (each
    distinct tail once) and a pool of ``n_heads`` uniform vertices, the negatives; the UMAP
    loss of the ``n_heads × EDGE_FACTOR`` edges and ``r`` negatives of each from the pool
    (:func:`~scnumap.core.losses.edge_cross_entropy`).

    Returns the embedded rows (heads, distinct tails, pool), their indices and the loss.
    """
    device = table.device
    heads, tails = sampler.sample_grouped(n_heads, EDGE_FACTOR, generator)
    distinct, where = torch.unique(tails, return_inverse=True)
    pool = sample_vertices(table.n_obs, n_heads, generator, device)
    x_heads = table[heads]
    if noise is not None:
        x_heads = noise(x_heads, heads, generator)
    y = encoder(torch.cat([x_heads, table[distinct], table[pool]]))
    n_edges = n_heads * EDGE_FACTOR
    head_rows = torch.arange(n_heads, device=device).repeat_interleave(EDGE_FACTOR)
    neg = torch.randint(0, n_heads, (r, n_edges), generator=generator, device=generator.device).to(device)
    neg = neg.add_(n_heads + distinct.shape[0]).T  # rows of the pool in y, (E, r)
    loss = edge_cross_entropy(y, y, head_rows, where.reshape(-1) + n_heads, neg, a, b)
    return y, torch.cat([heads, distinct, pool]), loss


def lr_factor(step: int, n_steps: int, restart_step: int) -> float:
    """Learning-rate multiplier: linear decay to ``LR_FLOOR``, back to 1 at ``restart_step``.

    The density phase (from ``restart_step``) starts again from the full learning rate and
    decays over its own length: a network has to reshape to change local densities, which
    the decayed rate hardly allows. Measured on pbmc4k (three seeds, 1 CPU thread): density
    correlation 0.797–0.801 → 0.808 / 0.813 / 0.810, kNN preservation unchanged (0.163).
    """
    if step >= restart_step:
        return max(LR_FLOOR, 1.0 - (step - restart_step) / max(1, n_steps - restart_step))
    return max(LR_FLOOR, 1.0 - step / n_steps)


def _whole_density_loss(y: torch.Tensor, density: DensityTerm, a, b) -> torch.Tensor:
    """The density term on every vertex, from the embedding ``y`` of all of them (exact gradient)."""
    return whole_graph_density_loss(y, density.sampler, density.r_orig, a, b, density.var_shift)


def _density_loss(encoder, table, density: DensityTerm, a, b, generator, step) -> torch.Tensor:
    """The density term on sampled vertices, each with its full neighbourhood.

    The sampled vertices are embedded live; their neighbours' *values* are read from
    ``density.positions``, a detached embedding of all vertices recomputed every
    ``DENSITY_REFRESH`` steps (so up to ``DENSITY_REFRESH - 1`` steps old), and their
    *gradient* comes from a random subset embedded live (:func:`_neighbour_positions`).
    The cost per step is that of the sample, not of the sample's neighbourhoods, which
    cover most of the graph (benchmarks/densmap_large.py prints the fraction).
    """
    vertices, edge_rows, edge_cols = density.sampler.sample(density.subsample_size, generator)
    if density.positions is None or step - density.positions_step >= DENSITY_REFRESH:
        density.positions = embed_rows(encoder, table)
        density.positions_step = step
    y_vert = encoder(table[vertices])
    y_nbr = take_rows(
        _neighbour_positions(encoder, table, density.positions, edge_cols, vertices.shape[0], generator), edge_cols
    )
    r_emb = embedding_log_radius(y_vert, y_nbr, edge_rows, a, b)
    return density_correlation_loss(density.r_orig[vertices], r_emb, density.var_shift)


def _neighbour_positions(encoder, table, positions, edge_cols, n_live, generator) -> torch.Tensor:
    """``positions`` (values unchanged) with a gradient through ``n_live`` random neighbours.

    The chosen neighbours are embedded live and their gradient is scaled by the inverse of
    their sampling fraction: over the choice of that subset, its expectation is the gradient
    through every neighbour *of the loss evaluated at* ``positions``, which is the exact
    gradient only when ``positions`` are current (``DENSITY_REFRESH == 1``).
    """
    nodes = torch.unique(edge_cols)
    if nodes.shape[0] == 0:  # no edges at all: nothing to differentiate
        return positions
    order = torch.randperm(nodes.shape[0], generator=generator, device=generator.device).to(nodes.device)
    live_nodes = nodes[order[:n_live]]
    scale = nodes.shape[0] / live_nodes.shape[0]
    live = encoder(table[live_nodes])
    return positions.index_put((live_nodes,), positions[live_nodes] + (live - live.detach()) * scale)


def embed_rows(encoder: Encoder, table: RowTable, chunk_size: int = 65536) -> torch.Tensor:
    """Detached embedding of every row of ``table``, in chunks."""
    with torch.no_grad():
        parts = [
            encoder(table[torch.arange(start, stop, device=table.device)])
            for start, stop in chunks(table.n_obs, chunk_size)
        ]
    return torch.cat(parts)
