"""The NUMAP estimator: a generalisable (parametric) UMAP built on GrEASE."""

from __future__ import annotations

import functools

import numpy as np
import torch

from ._checks import as_matrix, check_bool, check_float, check_hidden, check_int, check_n_neighbors
from .batching import RowTable, as_numpy, chunks
from .density import NeighbourhoodSampler, original_log_radius
from .device import np_rng, resolve_device, torch_generator
from .encoder import Encoder
from .graph import build_graph, check_metric, edge_distances, graph_from_matrices
from .grease import GrEASE
from .hold import HoldTerm, novelty_weights, release_weights
from .layers import init_parameters
from .losses import find_ab_params
from .new_rows import layout_new_rows, polish_density
from .noise import HeadNoise, neighbourhood_radius
from .sampling import EdgeSampler
from .threads import limited_threads
from .train import EDGE_FACTOR, STEP_LR_FACTOR, DensityTerm, train_embedding
from .warm_start import UMAP_FRACTION, distil, free_layout, spectral_start

#: The automatic training budget: ``AUTO_EPOCHS`` passes over the edges, clipped to
#: ``AUTO_MIN_STEPS`` and a cap of steps (of ``EDGE_FACTOR × batch_size`` edges) that, as
#: umap-learn's epochs, is larger for small data (up to ``SMALL_GRAPH`` vertices).
AUTO_EPOCHS = 300
AUTO_MIN_STEPS = 125
AUTO_MAX_STEPS_SMALL = 1000
AUTO_MAX_STEPS = 500
SMALL_GRAPH = 10_000

#: A fit on a graph of at most this many vertices trains by whole-graph steps: each step
#: embeds every vertex once, with the input noise (:class:`~scnumap.core.noise.StandingNoise`),
#: and reads ``EDGE_FACTOR × batch_size`` edges from there. Larger graphs train by grouped
#: steps: ``batch_size`` heads, each with ``EDGE_FACTOR`` of its edges, and a pool of
#: negatives, about ``(2 + EDGE_FACTOR) × batch_size`` rows at most
#: (:func:`~scnumap.core.train.train_embedding`); both at ``STEP_LR_FACTOR × lr``. With two
#: passes per whole-graph step (before 2026-12-04) grouped steps were faster above 1,000
#: cells; with one pass of standing noise whole-graph steps took digits' fit (1,797 cells) to
#: 52 % of the grouped steps' time, paul15's (2,660) to 88 %, pbmc4k's (4,271) to 84 %, quality
#: within 0.004 (docs/method.md, "Whole-graph steps on small data").
WHOLE_GRAPH_MAX = 5000

#: A fit of at most this many cells starts warm (:mod:`~scnumap.core.warm_start`) and
#: trains by whole-graph steps. Without the warm start, grouped steps let the two circles of
#: benchmarks/circles.py touch on four seeds of eight. Above, the layout's cost grows with
#: the cells while the budget of steps does not.
WARM_START_MAX = 5000

#: GrEASE's step budget in a fit that starts warm (``grease_steps=None``), instead of its
#: default 300 (exact targets). The free layout starts from GrEASE's coordinates and moves
#: every cell, and the network reads them as input features: benchmarks/grease_budget.py
#: (samples of 1,000 and 5,000 cells of six sets) found the maps' quality and held-out
#: transfer unchanged within the scatter, GrEASE's time down by about two thirds
#: (docs/method.md, "GrEASE's budget in a warm fit").
WARM_GREASE_STEPS = 100

#: An extension (:meth:`NUMAP.extend`) of a union of at most this many vertices trains by
#: whole-graph steps: its steps are few and each holds every old row in place; by grouped
#: steps kidney's added cells (5,685 in the union) landed further from where a refit puts them.
EXTEND_WHOLE_GRAPH_MAX = 5000

#: The automatic budget of a fit by whole-graph steps (half of it left held-out points
#: less well placed; docs/method.md, "Whole-graph steps on small data").
WHOLE_GRAPH_STEPS = 1000

#: With DensMAP, an automatic budget gives the density phase this many times its share
#: ``dens_frac``, on top of the UMAP steps: 1,000 steps with ``dens_frac=0.3`` become 700
#: UMAP steps and 600 density steps. A density step makes no noisy pass, so the extra steps
#: cost little; with 300 of them pbmc4k's density correlation stayed below densMAP's
#: (docs/method.md, "Whole-graph steps").
DENSITY_FACTOR = 2

#: ``n_spectral_components=None`` (not the default) reads one GrEASE coordinate per ``CELLS_PER_SPECTRAL``
#: training cells, at least ``MIN_SPECTRAL`` and at most ``MAX_SPECTRAL``
#: (:func:`spectral_components`). More coordinates kept more of each cell's neighbours on
#: every set from 1,797 cells up (benchmarks/network_shape.py ``--spectral``: kidney's kNN
#: preservation 0.327 with 10, 0.345 with 40), but on 490 cells held-out points landed less
#: well with 20 than with 10 (few cells fix few eigenvectors), digits' held-out transfer fell
#: (0.958 → 0.945, benchmarks/quality.py) and loops fold (benchmarks/circles.py
#: ``--spectral 0``: two circles' outer loop a ring on 2 of 8 seeds). Above 40 the gain flattened
#: (60: kidney 0.352), and every coordinate costs fit time (benchmarks/scaling.py
#: ``--spectral 10 0``: 5,000 cells 9.0 s with 10, 10.7 s with 40; 20,000 cells 11.6 s, 12.6 s).
CELLS_PER_SPECTRAL = 100
MIN_SPECTRAL = 10
MAX_SPECTRAL = 40

#: :meth:`NUMAP.extend` trains this fraction of the steps a fit on the union would take.
EXTEND_FRACTION = 0.25

#: With DensMAP, an extension's UMAP phase and density phase are these multiples of a fit's
#: (each then times :data:`EXTEND_FRACTION`): the network is trained already, the new cells
#: keep finding their place in the density phase (its loss is the UMAP loss plus the density
#: term), and the density term needs the steps to reshape the map around them. With (1, 1)
#: and ``lr`` the union's density correlation stayed 0.029 (pbmc4k) and 0.023 (kidney) below
#: a refit's (benchmarks/extend.py; docs/method.md, "Growing a reference").
EXTEND_PHASES = (0.3, 2.0)

#: An extension runs Adam at this multiple of ``lr``, below a fit's :data:`STEP_LR_FACTOR`:
#: Adam's first updates move every weight by about the learning rate, whatever the hold
#: term says, so the held cells need smaller steps than a fit takes; at ``lr`` itself the
#: new cells moved less far from where the trained network first put them.
EXTEND_LR_FACTOR = 2.0

#: Default weight of the term that keeps the fixed cells in place during :meth:`NUMAP.extend`.
HOLD = 1.0

#: Weight of the term that pulls each new row of an extension towards its place in the
#: layout of the new rows (:func:`~scnumap.core.new_rows.layout_new_rows`), times the row's
#: novelty (:func:`~scnumap.core.hold.novelty_weights`); ``hold`` weighs the old rows only.
#: 0 lets the network place the new rows from where it first put them.
NEW_ROWS_HOLD = 1.0


def spectral_components(n_obs: int, n_components: int = 2) -> int:
    """GrEASE coordinates a fit on ``n_obs`` rows reads with ``n_spectral_components=None``:
    ``n_obs // CELLS_PER_SPECTRAL`` clipped to ``[MIN_SPECTRAL, MAX_SPECTRAL]``, and at
    least ``n_components``."""
    return max(int(n_components), int(np.clip(n_obs // CELLS_PER_SPECTRAL, MIN_SPECTRAL, MAX_SPECTRAL)))


def spectral_count(setting: int | None, n_obs: int, n_components: int) -> int:
    """GrEASE coordinates of a fit on ``n_obs`` rows for ``n_spectral_components=setting``:
    the setting itself (an integer >= ``n_components``, checked), or
    :func:`spectral_components` for ``None``. :class:`NUMAP` and ``scnumap.tl.numap`` both
    resolve the count here."""
    if setting is None:
        return spectral_components(n_obs, n_components)
    return check_int(setting, "n_spectral_components", minimum=n_components)


class NUMAP:
    """Generalisable UMAP: a network trained with the UMAP loss on a GrEASE spectral embedding.

    ``NUMAP(n_components=2).fit(X)``, then ``transform(X)`` or ``transform(Y)`` for
    new points: a forward pass, no graph needed.

    Parameters
    ----------
    n_components
        Dimension of the embedding (2 for plots).
    n_neighbors
        Neighbours of the UMAP graph (typically 5–50).
    epochs
        Passes over the graph's edges (``>= 1``); every step reads 8 × ``batch_size``
        edges. ``None`` picks a budget from the graph size. Up to 5,000 cells every step
        embeds all cells (a whole-graph step), and the budget is 1,000 steps. Above, a
        step embeds ``batch_size`` heads with 8 of their edges each (a grouped step), and
        the budget is ``300`` passes, clipped to 125 steps and a cap of 1,000 steps up to
        10,000 cells and 500 above (umap-learn likewise trains small data longer: 500
        epochs up to 10,000 samples, 200 above). Up to 5,000 cells a ``warm_start``
        shortens the UMAP phase to 70 % (700 steps; the density phase unchanged).
        docs/method.md ("Budget") discusses the choice.
    lr
        Adam learning rate (typically 1e-4–1e-2). A fit runs at ``sqrt(8) × lr``: a step's
        gradient averages 8 × ``batch_size`` edges; :meth:`extend` fine-tunes at ``2 × lr``.
    batch_size
        Heads per step, each with 8 of its edges (typically 128–2,048), and the size of
        the pool of negatives.
    min_dist, spread
        UMAP's curve parameters (``a``, ``b`` fitted as in umap-learn); ``min_dist`` in
        ``[0, spread]``, typically 0.001–0.5.
    metric
        Metric of the neighbour graph: ``"euclidean"``, ``"manhattan"`` or ``"cosine"``
        (aliases ``"l2"``, ``"l1"``, ``"cityblock"``). It defines the graph built when none is
        passed, GrEASE's batch affinities and DensMAP's local radii; pass the metric a
        precomputed ``graph`` was built with. The input noise is Euclidean whatever the
        metric (it is added in the input space; docs/method.md, "Input noise").
    negative_sample_rate
        Negatives per positive edge, drawn uniformly over vertices (typically 1–10).
    n_spectral_components
        Dimension of the GrEASE embedding the network reads besides the input
        (>= ``n_components``, typically 5–60). ``None``: one per 100 training cells, at
        least 10 and at most 40 (:func:`spectral_components`), which keeps more of each
        cell's neighbours from a few thousand cells on, but gives the network the freedom
        to fold long loops and costs fit time: on two circles of 3,500 points the outer
        loop came out a figure of eight on most seeds (docs/method.md, "The network on top
        of GrEASE").
    hidden
        Hidden-layer widths of the embedding network. A deeper network keeps more of each
        cell's neighbours for more fit time: ``(96, 96, 96, 96)`` took 1.2–1.6× the
        default's time on six data sets (docs/method.md, "The network on top of GrEASE").
    use_data
        Feed the standardised input as well as the spectral coordinates to the network
        (default). ``False`` uses the spectral coordinates alone, a smaller network whose
        new points land less accurately (docs/method.md, "The network on top of GrEASE").
    input_noise
        Size of the Gaussian noise added to each sampled edge head's input, relative to
        that cell's neighbourhood radius (root weighted mean squared Euclidean distance to
        its graph neighbours); the head's spectral coordinates are recomputed from the
        noisy input. A regulariser that makes new points land among their neighbours;
        typically 0–1, ``0`` turns it off (docs/method.md, "Input noise").
    warm_start
        On graphs of up to 5,000 cells, start the network from
        a UMAP layout of free coordinates: umap-learn's layout optimiser lays the cells out
        from their GrEASE coordinates (100 epochs), the network learns that layout (150
        steps), and the UMAP phase then takes 70 % of its automatic budget (docs/method.md,
        "Warm start on small data"). With ``epochs`` set, the warm start still runs and the
        UMAP phase is as long as ``epochs`` asks. ``False`` trains the network from its
        initialisation with the whole budget. Larger graphs train without it.
    grease_steps
        Maximum training steps of the GrEASE network (typically 100–2,000). ``None``: 100
        in a fit that starts warm (up to 5,000 cells, ``WARM_GREASE_STEPS``: the layout
        reshapes GrEASE's coordinates, and the network reads them as features), else
        GrEASE's default, 300 steps towards the exact eigenvectors of the training graph up
        to 20,000 cells and 600 steps of its walk objective above (:class:`GrEASE`).
    densmap
        Add DensMAP's density-preservation term.
    dens_lambda
        Weight of the density term (0.1–2.0).
    dens_frac
        Fraction of the training (from the end) with the density term active. With
        ``epochs=None`` the density phase gets twice this share of the budget, added to
        the rest: 700 + 600 steps of a budget of 1,000 at 0.3 (490 + 600 after a
        ``warm_start``).
    dens_var_shift
        Constant added to the embedding-radius variance in the correlation.
    dens_subsample_size
        Vertices sampled per step for the density term (each with its full neighbourhood).
        A graph with at most this many vertices takes part whole in every step: the
        gradient is exact, and the UMAP term reads 8 × ``batch_size`` edges from the same
        pass (see docs/method.md).
    device
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or a torch device.
    n_jobs
        CPU threads of ``fit`` and ``transform`` (umap-learn's name): torch's, the
        BLAS/OpenMP pools' (``threadpoolctl``) and numba's are set to ``n_jobs`` during the
        call and restored afterwards, so global settings are left as they were. ``-1``:
        all cores; ``None``: for ``fit``, the cores other processes leave idle, measured
        at its start (``scnumap.core.threads.free_cores``, at least 1), for ``transform``,
        no pool changed. Small networks gain little from many threads and slow down
        badly when their threads compete with other jobs for the same cores.
    random_state
        Seed of all randomness. The same seed, data, machine, torch version and number of
        threads (``n_jobs``; with ``n_jobs=None`` the count depends on the machine's load)
        give the same embedding; another thread count or device changes the order of
        floating-point sums, and training amplifies that into a visibly different
        (equally good) layout.
    verbose
        Show progress bars (``tqdm.auto``: a widget in notebooks, stderr in a terminal)
        for the GrEASE and NUMAP phases once a phase has run a few seconds, when the
        output is watched live (not when stderr goes to a file or a pipe); ``False``
        hides them.

    Attributes
    ----------
    embedding_
        ``(n_samples, n_components)`` float32 embedding of the training data.
    grease_
        The fitted :class:`GrEASE`.
    n_spectral_components_
        GrEASE coordinates the network reads (``n_spectral_components``, or the count
        :func:`spectral_components` chose).
    loss_history_
        Mean UMAP cross-entropy (the attraction and repulsion terms, without the
        density term) every 50 steps.
    density_loss_history_
        Mean density term (before weighting by ``dens_lambda``) every 50 steps of the
        density phase; empty without DensMAP.
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        n_neighbors: int = 15,
        epochs: int | None = None,
        lr: float = 3e-3,
        batch_size: int = 1024,
        min_dist: float = 0.1,
        spread: float = 1.0,
        metric: str = "euclidean",
        negative_sample_rate: int = 5,
        n_spectral_components: int | None = 10,
        hidden: tuple[int, ...] = (128, 128),
        use_data: bool = True,
        input_noise: float = 0.5,
        warm_start: bool = True,
        grease_steps: int | None = None,
        densmap: bool = False,
        dens_lambda: float = 2.0,
        dens_frac: float = 0.3,
        dens_var_shift: float = 0.1,
        dens_subsample_size: int = 10000,
        device="auto",
        n_jobs: int | None = None,
        random_state: int | None = 0,
        verbose: bool = True,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.min_dist = min_dist
        self.spread = spread
        self.metric = metric
        self.negative_sample_rate = negative_sample_rate
        self.n_spectral_components = n_spectral_components
        self.hidden = hidden
        self.use_data = use_data
        self.input_noise = input_noise
        self.warm_start = warm_start
        self.grease_steps = grease_steps
        self.densmap = densmap
        self.dens_lambda = dens_lambda
        self.dens_frac = dens_frac
        self.dens_var_shift = dens_var_shift
        self.dens_subsample_size = dens_subsample_size
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        check_int(self.n_components, "n_components", minimum=1)
        if self.epochs is not None:
            check_int(self.epochs, "epochs", minimum=1)
        check_float(self.lr, "lr", minimum=0.0, strict_minimum=True)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_metric(self.metric)
        check_int(self.negative_sample_rate, "negative_sample_rate", minimum=1)
        if self.n_spectral_components is not None:
            check_int(self.n_spectral_components, "n_spectral_components", minimum=self.n_components)
        check_hidden(self.hidden)
        check_float(self.input_noise, "input_noise", minimum=0.0)
        check_bool(self.warm_start, "warm_start")
        if self.grease_steps is not None:
            check_int(self.grease_steps, "grease_steps", minimum=1)
        check_bool(self.densmap, "densmap")
        check_float(self.dens_lambda, "dens_lambda", minimum=0.0)
        check_float(self.dens_frac, "dens_frac", minimum=0.0, maximum=1.0)
        check_float(self.dens_var_shift, "dens_var_shift", minimum=0.0)
        check_int(self.dens_subsample_size, "dens_subsample_size", minimum=2)

    def n_steps(self, n_edges: int, n_obs: int) -> int:
        """Gradient steps for a graph with ``n_edges`` directed edges on ``n_obs`` vertices."""
        return self._steps(n_edges, n_obs)

    def _steps(self, n_edges: int, n_obs: int, fraction: float = 1.0, *, extension: bool = False) -> int:
        """Gradient steps of a run that trains ``fraction`` of a fit's budget (:meth:`_phases`)."""
        phases = self._phases(extension=extension, warm=self._warm(n_obs, extension=extension))
        return max(1, round(fraction * self._budget(n_edges, n_obs, extension=extension) * sum(phases)))

    def _warm(self, n_obs: int, *, extension: bool = False) -> bool:
        """Whether a run on ``n_obs`` rows starts from a warm start: a fit of at most
        :data:`WARM_START_MAX` rows with ``warm_start`` (:mod:`~scnumap.core.warm_start`)."""
        return bool(self.warm_start) and not extension and n_obs <= WARM_START_MAX

    def _grease_steps(self, n_obs: int) -> int | None:
        """GrEASE's ``max_steps`` in a fit on ``n_obs`` rows: ``grease_steps`` when given, else
        :data:`WARM_GREASE_STEPS` in a fit that starts warm, else GrEASE's default (``None``)."""
        if self.grease_steps is not None:
            return self.grease_steps
        return WARM_GREASE_STEPS if self._warm(n_obs) else None

    def _budget(self, n_edges: int, n_obs: int, *, extension: bool = False) -> int:
        """Steps of a fit (or of the fit an ``extension`` is a fraction of) before the
        density phase's extra share (:meth:`_phases`)."""
        edges_per_step = self.batch_size * EDGE_FACTOR
        if self.epochs is not None:
            return max(1, int(np.ceil(self.epochs * n_edges / edges_per_step)))
        if whole_graph(n_obs, extension=extension):
            return WHOLE_GRAPH_STEPS
        cap = AUTO_MAX_STEPS_SMALL if n_obs <= SMALL_GRAPH else AUTO_MAX_STEPS
        return int(np.clip(np.ceil(AUTO_EPOCHS * n_edges / edges_per_step), AUTO_MIN_STEPS, cap))

    # ------------------------------------------------------------------- fit
    def fit(self, X, graph=None, knn_distances=None) -> NUMAP:
        """Train on ``X`` of shape ``(n_samples, n_features)``.

        Parameters
        ----------
        X
            Training data: numpy array, scipy sparse matrix or torch tensor.
        graph
            Optional precomputed fuzzy neighbour graph ``(n_samples, n_samples)``,
            e.g. ``adata.obsp['connectivities']``. Built with pynndescent and
            umap-learn's fuzzy simplicial set when left out.
        knn_distances
            Optional kNN distance matrix that came with ``graph``
            (``adata.obsp['distances']``). Accepted so that calls written for umap-learn
            and Scanpy run, and checked for shape; its values are not used (edge lengths
            are computed from ``X`` in ``metric`` for every edge of the symmetric graph).

        Returns
        -------
        ``self``, with ``embedding_`` set.
        """
        with limited_threads(self.n_jobs):
            return self._fit(X, graph, knn_distances)

    def _fit(self, X, graph, knn_distances) -> NUMAP:
        X = as_matrix(X)  # float32 C-contiguous input is shared, not copied
        self._check_params()
        metric = check_metric(self.metric)
        n = X.shape[0]
        if graph is None:
            check_n_neighbors(self.n_neighbors, n)
        device = resolve_device(self.device)
        rng = np_rng(self.random_state)
        graph_seed, grease_seed, net_seed, train_seed = (int(s) for s in rng.integers(0, 2**31 - 1, 4))
        knn = self._knn_graph(X, graph, knn_distances, graph_seed)
        self.ab_ = find_ab_params(self.spread, self.min_dist)
        self.n_spectral_components_ = spectral_count(self.n_spectral_components, n, self.n_components)

        self.grease_ = GrEASE(
            self.n_spectral_components_,
            max_steps=self._grease_steps(n),
            metric=metric,
            device=device,
            n_jobs=self.n_jobs,
            random_state=grease_seed,
            verbose=self.verbose,
        ).fit(X)
        self.standardizer_ = self.grease_.standardizer_
        spectral = self._spectral_rows(X, device)
        table = RowTable(X, self.standardizer_, device, extra=spectral)

        self.encoder_ = Encoder(
            X.shape[1], self.n_spectral_components_, self.n_components, check_hidden(self.hidden), self.use_data
        )
        init_parameters(self.encoder_, torch.Generator().manual_seed(net_seed))
        self.encoder_.zero_last_layer()
        self.encoder_.to(device)

        self._train(X, knn, table, train_seed)
        self.n_features_in_ = X.shape[1]
        self.device_ = device
        self.embedding_ = self.transform(X)
        return self

    def extend(
        self, X, positions, graph=None, knn_distances=None, *, hold: float = HOLD, release: bool = True
    ) -> NUMAP:
        """Train the fitted map further on ``X``, keeping its first rows where they are.

        Grows a trained map without moving the cells already on it: the first
        ``len(positions)`` rows of ``X`` are those cells (``positions`` are their
        coordinates, e.g. ``embedding_``), the rest are new. The network is fine-tuned
        from its current weights with the UMAP (+ DensMAP) loss on the graph of all rows
        plus ``hold`` × the mean squared distance of the old rows to ``positions`` (each
        row weighted by how little its neighbourhood changed, with ``release``) plus a pull of
        each new row towards its place in a UMAP layout of the new rows with the old ones
        fixed (:func:`~scnumap.core.new_rows.layout_new_rows`; with DensMAP, polished with
        the density term, :func:`~scnumap.core.new_rows.polish_density`), weighted by how new its
        neighbourhood is (:func:`~scnumap.core.hold.novelty_weights`), so that a type the
        map lacked comes out of the old cells the network first put it on; GrEASE and the
        input standardisation stay as fitted, so ``transform`` keeps its input space. The
        training budget is :data:`EXTEND_FRACTION` of the steps a fit on ``X`` would take
        (``epochs`` scales both); with DensMAP, of 0.3 × a fit's UMAP phase and twice its
        density phase (:data:`EXTEND_PHASES`).

        Parameters
        ----------
        X
            ``(n_old + n_new, n_features)``: the old rows first, in the order of ``positions``.
        positions
            ``(n_old, n_components)`` coordinates the old rows keep.
        graph, knn_distances
            Optional neighbour graph of all rows of ``X``, as in :meth:`fit`.
        hold
            Weight of the term that keeps the old rows in place (typically 0.1–100; larger
            moves them less and gives the new rows less room).
        release
            Hold each old row in proportion to how little the new rows entered its
            neighbourhood (:func:`~scnumap.core.hold.release_weights`): rows whose
            neighbours are mostly new (next to a type the map did not have) may move to
            make room. ``False`` holds every old row with the same weight.

        Returns
        -------
        ``self``, with ``embedding_`` of every row of ``X``.
        """
        self._check_fitted()
        with limited_threads(self.n_jobs):
            return self._extend(X, positions, graph, knn_distances, hold, release)

    def _extend(self, X, positions, graph, knn_distances, hold, release) -> NUMAP:
        X = as_matrix(X)
        self._check_params()
        check_float(hold, "hold", minimum=0.0)
        release = check_bool(release, "release")
        self._check_features(X)
        positions = np.asarray(positions, dtype=np.float32)
        if positions.ndim != 2 or positions.shape[1] != self.n_components:
            raise ValueError(f"`positions` must have shape (n_old, {self.n_components}), got {positions.shape}.")
        if not np.all(np.isfinite(positions)):
            raise ValueError("`positions` contains NaN or infinite values; pass the old rows' embedding.")
        n, n_fixed = X.shape[0], positions.shape[0]
        if n_fixed >= n:
            raise ValueError(
                f"`X` has {n} rows and `positions` {n_fixed}: nothing new to add. Pass the old rows "
                "followed by at least one new row."
            )
        if graph is None:
            check_n_neighbors(self.n_neighbors, n)
        device = self.output_device
        rng = np_rng(self.random_state)
        graph_seed, train_seed = (int(s) for s in rng.integers(0, 2**31 - 1, 2))
        knn = self._knn_graph(X, graph, knn_distances, graph_seed)
        if not hasattr(self, "ab_"):
            self.ab_ = find_ab_params(self.spread, self.min_dist)
        table = RowTable(X, self.standardizer_, device, extra=self._spectral_rows(X, device))
        weights = release_weights(knn.connectivities, n_fixed) if release else np.ones(n_fixed, np.float32)
        edges = lengths = None
        if NEW_ROWS_HOLD > 0:
            # the new rows' place: laid out with the old rows fixed, from where the network puts
            # them; each pulled there in proportion to how new its neighbourhood is
            start = self.transform(X[n_fixed:])
            placed = layout_new_rows(positions, start, knn.connectivities, *self.ab_, random_state=graph_seed)
            if self.densmap:
                # the union's edges and their lengths, for the polish and then for _train
                edges = knn.edges()
                lengths = edge_distances(X, edges[0], edges[1], metric=check_metric(self.metric))
                placed = polish_density(
                    positions,
                    placed,
                    edges,
                    self._density_term(knn, lengths, 0, device),
                    *self.ab_,
                    batch_size=self.batch_size,
                    negative_sample_rate=self.negative_sample_rate,
                    generator=torch_generator(graph_seed, device),
                )
            positions = np.concatenate([positions, placed])
            weights = np.concatenate([weights, novelty_weights(knn.connectivities, n_fixed)])
        row_weights = torch.as_tensor(weights, device=device)
        hold_term = HoldTerm(
            torch.as_tensor(positions, device=device), float(hold), row_weights, n_fixed, float(NEW_ROWS_HOLD)
        )
        self._train(
            X, knn, table, train_seed, fraction=EXTEND_FRACTION, hold=hold_term, edges=edges, edge_lengths=lengths
        )
        self.embedding_ = self.transform(X)
        return self

    def _knn_graph(self, X, graph, knn_distances, seed: int):
        """The graph of ``X``: built in ``metric`` when ``graph`` is None, else read from it."""
        if graph is None:
            knn = build_graph(X, self.n_neighbors, metric=check_metric(self.metric), random_state=seed)
        else:
            knn = graph_from_matrices(graph, knn_distances, n_obs=X.shape[0])
        self.graph_ = knn.connectivities
        return knn

    def _train(
        self, X, knn, table: RowTable, seed: int, *, fraction: float = 1.0, hold=None, edges=None, edge_lengths=None
    ) -> None:
        """Train ``encoder_`` on the graph for ``fraction`` of :meth:`n_steps` (fit: all of it).

        ``edges`` (``knn.edges()``) and ``edge_lengths`` (their lengths in ``metric``) are
        computed here when not passed."""
        device = table.device
        heads, tails, weights = knn.edges() if edges is None else edges
        sampler = EdgeSampler(heads, tails, weights, device)
        extension = hold is not None
        warm = self._warm(X.shape[0], extension=extension)
        n_steps = self._steps(sampler.n_edges, X.shape[0], fraction, extension=extension)
        start = round(n_steps * (1.0 - self._density_share(extension=extension, warm=warm)))
        noise, density = self._regularisers(X, knn, (heads, tails, weights), start, device, edge_lengths)
        whole = whole_graph(X.shape[0], extension=extension)
        # a fit runs at STEP_LR_FACTOR × lr, an extension at the smaller EXTEND_LR_FACTOR × lr:
        # Adam's first updates move every weight by about the learning rate whatever the
        # hold term says
        step_lr = self.lr * (STEP_LR_FACTOR if hold is None else EXTEND_LR_FACTOR)
        a, b = self.ab_
        if warm:
            self._warm_start(X, knn, table, seed, step_lr)
        self.density_loss_history_ = []
        self.loss_history_ = train_embedding(
            self.encoder_,
            table,
            sampler,
            a=a,
            b=b,
            n_steps=n_steps,
            batch_size=self.batch_size,
            negative_sample_rate=self.negative_sample_rate,
            lr=self.lr,
            generator=torch_generator(seed, device),
            noise=noise,
            density=density,
            verbose=self.verbose,
            density_history=self.density_loss_history_,
            hold=hold,
            whole_graph=whole,
            step_lr=step_lr,
        )
        self.n_steps_ = n_steps

    def _check_features(self, X) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"`X` has {X.shape[1]} features but NUMAP was fitted on {self.n_features_in_}; "
                "pass data with the same features, in the same order."
            )

    def _regularisers(
        self, X, knn, edges, start_step: int, device, known_lengths: np.ndarray | None = None
    ) -> tuple[HeadNoise | None, DensityTerm | None]:
        """The input noise and the DensMAP term (from ``start_step`` on) of a training run on ``X``
        and its graph; ``known_lengths``: the edges' lengths in ``metric`` when already computed."""
        heads, tails, weights = edges
        n = X.shape[0]
        metric = check_metric(self.metric)
        # input-space length of every edge (aligned with CSR order), once per metric: the
        # noise needs Euclidean lengths (it is Gaussian in the input space), DensMAP the
        # graph's metric (its radii are umap-learn's), often the same
        edge_lengths = functools.cache(
            lambda name: (
                known_lengths
                if name == metric and known_lengths is not None
                else edge_distances(X, heads, tails, metric=name)
            )
        )
        noise = None
        if self.input_noise > 0:
            noise = HeadNoise.from_radius(
                neighbourhood_radius(heads, edge_lengths("euclidean"), weights, n),
                relative=float(self.input_noise),
                scale=self.standardizer_.scale,
                n_features=X.shape[1],
                spectral=self.grease_.embed,
                device=device,
            )
        density = self._density_term(knn, edge_lengths(metric), start_step, device) if self.densmap else None
        return noise, density

    def _density_term(self, knn, edge_lengths: np.ndarray, start_step: int, device) -> DensityTerm:
        """The DensMAP term of the graph ``knn`` (``edge_lengths``: its edges' input-space
        lengths in ``metric``, in CSR order), active from ``start_step`` on."""
        return DensityTerm(
            sampler=NeighbourhoodSampler(knn.connectivities, device),
            r_orig=torch.as_tensor(original_log_radius(knn.connectivities, edge_lengths), device=device),
            dens_lambda=float(self.dens_lambda),
            var_shift=float(self.dens_var_shift),
            subsample_size=int(self.dens_subsample_size),
            start_step=start_step,
        )

    def _phases(self, *, extension: bool = False, warm: bool = False) -> tuple[float, float]:
        """Lengths of the UMAP phase and the DensMAP phase relative to a budget: ``1 - dens_frac``
        and ``dens_frac`` (0 without DensMAP), the latter ``DENSITY_FACTOR`` times longer in
        an automatic budget; an ``extension`` with DensMAP scales them by :data:`EXTEND_PHASES`;
        after a ``warm`` start an automatic budget's UMAP phase is
        :data:`~scnumap.core.warm_start.UMAP_FRACTION` as long."""
        f = float(self.dens_frac) if self.densmap else 0.0
        umap, density = 1.0 - f, (DENSITY_FACTOR * f if self.epochs is None else f)
        if extension and density > 0:
            umap, density = umap * EXTEND_PHASES[0], density * EXTEND_PHASES[1]
        if warm and self.epochs is None:
            umap *= UMAP_FRACTION
        return umap, density

    def _density_share(self, *, extension: bool = False, warm: bool = False) -> float:
        """Share of the training in the density phase (:meth:`_phases`)."""
        umap, density = self._phases(extension=extension, warm=warm)
        return density / (umap + density)

    def _warm_start(self, X, knn, table: RowTable, seed: int, lr: float) -> None:
        """Lay the rows of ``X`` out as free coordinates on the graph ``knn`` and teach that
        layout to ``encoder_`` at ``lr`` (:mod:`~scnumap.core.warm_start`)."""
        start_seed, layout_seed = (int(s) for s in np_rng(seed).integers(0, 2**31 - 1, 2))
        rows = table[torch.arange(table.n_obs, device=table.device)]  # [x_std, spectral], as the encoder reads them
        spectral = rows[:, X.shape[1] :].cpu().numpy()
        start = spectral_start(spectral, self.n_components, start_seed)
        layout = free_layout(start, knn.connectivities, *self.ab_, random_state=layout_seed)
        distil(self.encoder_, rows, torch.as_tensor(layout, device=table.device), lr=lr)

    def _spectral_rows(self, X, device, chunk_size: int = 65536) -> torch.Tensor:
        out = torch.empty(X.shape[0], self.n_spectral_components_, device=device)
        with torch.no_grad():
            for start, stop in chunks(X.shape[0], chunk_size):
                out[start:stop] = self.grease_.embed(self.standardizer_.rows(X, start, stop, device))
        return out

    # ------------------------------------------------------------- transform
    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise RuntimeError("This NUMAP is not fitted yet; call `fit(X)` first.")

    def transform(self, X, *, chunk_size: int = 65536) -> np.ndarray:
        """Embed any points: ``(n_samples, n_features)`` → ``(n_samples, n_components)`` float32.

        A forward pass in chunks of ``chunk_size`` rows; deterministic; needs no graph.
        """
        self._check_fitted()
        X = as_matrix(X)
        self._check_features(X)
        return self.transform_blocks((X[s:e] for s, e in chunks(X.shape[0], chunk_size)), X.shape[0])

    def transform_blocks(self, blocks, n_rows: int) -> np.ndarray:
        """Embed an iterable of already validated row blocks with ``n_rows`` rows in total."""
        device = self.output_device
        out = np.empty((n_rows, self.n_components), dtype=np.float32)
        start = 0
        with limited_threads(getattr(self, "n_jobs", None), fit=False), torch.no_grad():
            for block in blocks:
                x = self.standardizer_.apply(block, device)
                y = self.encoder_(torch.cat([x, self.grease_.embed(x)], dim=1))
                out[start : start + y.shape[0]] = as_numpy(y)
                start += y.shape[0]
        return out

    @property
    def output_device(self) -> torch.device:
        return next(self.encoder_.parameters()).device

    def fit_transform(self, X, graph=None, knn_distances=None) -> np.ndarray:
        """``fit`` then return ``embedding_``."""
        return self.fit(X, graph=graph, knn_distances=knn_distances).embedding_


def whole_graph(n_obs: int, *, extension: bool = False) -> bool:
    """Whether a fit (or an ``extension``) on a graph of ``n_obs`` vertices trains by
    whole-graph steps (:data:`WHOLE_GRAPH_MAX`, :data:`EXTEND_WHOLE_GRAPH_MAX`)."""
    return n_obs <= (EXTEND_WHOLE_GRAPH_MAX if extension else WHOLE_GRAPH_MAX)
