import pytest
import torch

from scnumap.core import train
from scnumap.core.batching import RowTable
from scnumap.core.density import NeighbourhoodSampler
from scnumap.core.encoder import Encoder
from scnumap.core.graph import build_graph
from scnumap.core.hold import HoldTerm
from scnumap.core.losses import edge_cross_entropy
from scnumap.core.noise import BOTH_ENDS_SCALE, NOISE_REFRESH, HeadNoise
from scnumap.core.sampling import EdgeSampler
from scnumap.core.scaling import Standardizer
from scnumap.core.train import EDGE_FACTOR, LR_FLOOR, DensityTerm, lr_factor, train_embedding


class _CountingSampler(EdgeSampler):
    """Notes the edges each step draws: ``size`` (whole-graph) or ``heads × per_head`` (grouped)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sizes = []
        self.groups = []

    def sample(self, size, generator):
        self.sizes.append(size)
        return super().sample(size, generator)

    def sample_grouped(self, n_heads, per_head, generator):
        self.sizes.append(n_heads * per_head)
        self.groups.append((n_heads, per_head))
        return super().sample_grouped(n_heads, per_head, generator)


def _density_setup(blobs, subsample_size: int, start_step: int):
    """The graph, the row table and a density term (random original radii) on ``blobs``."""
    cpu = torch.device("cpu")
    graph = build_graph(blobs, 10)
    table = RowTable(blobs, Standardizer.fit(blobs), cpu, extra=torch.zeros(len(blobs), 2))
    density = DensityTerm(
        sampler=NeighbourhoodSampler(graph.connectivities, cpu),
        r_orig=torch.randn(len(blobs), generator=torch.Generator().manual_seed(0)),
        dens_lambda=1.0,
        var_shift=0.1,
        subsample_size=subsample_size,
        start_step=start_step,
    )
    return graph, table, density


def _density_run(blobs, encoder, noise=None, subsample_size=10_000, sampler=None):
    """Ten steps on ``blobs``, the density term from step 6."""
    cpu = torch.device("cpu")
    graph, table, density = _density_setup(blobs, subsample_size, start_step=6)
    return train_embedding(
        encoder,
        table,
        sampler if sampler is not None else EdgeSampler(*graph.edges(), cpu),
        a=1.6,
        b=0.9,
        n_steps=10,
        batch_size=64,
        negative_sample_rate=5,
        lr=1e-3,
        generator=torch.Generator().manual_seed(0),
        noise=noise,
        density=density,
    )


def test_input_noise_is_off_while_the_density_term_is_on(blobs):
    """Noise scaled to each cell's neighbourhood works against DensMAP; it stops when it starts."""
    calls = []

    def zero_spectral(x):
        calls.append(x.shape[0])
        return torch.zeros(x.shape[0], 2)

    noise = HeadNoise(torch.full((len(blobs),), 0.1), zero_spectral, blobs.shape[1])
    _density_run(blobs, Encoder(blobs.shape[1], 2, 2, (16,)), noise=noise)
    assert calls == [64] * 6  # steps 0-5 only: the heads of a grouped step


class _CountingEncoder(Encoder):
    def __init__(self, *args):
        super().__init__(*args)
        self.rows = []

    def forward(self, rows):
        self.rows.append(rows.shape[0])
        return super().forward(rows)


@pytest.mark.parametrize("subsample_size", [10_000, 100])
def test_density_phase_embeds_every_vertex_once_per_step(blobs, subsample_size):
    """With every vertex in the density term, the edges' positions come from that one pass,
    and the UMAP term draws ``EDGE_FACTOR`` times as many edges."""
    encoder = _CountingEncoder(blobs.shape[1], 2, 2, (16,))
    sampler = _CountingSampler(*build_graph(blobs, 10).edges(), torch.device("cpu"))
    _density_run(blobs, encoder, subsample_size=subsample_size, sampler=sampler)
    assert len(blobs) == 300
    grouped = encoder.rows[:6]  # heads, their distinct tails, negative pool
    assert all(2 * 64 < rows <= 2 * 64 + 64 * EDGE_FACTOR for rows in grouped)
    assert sampler.groups[:6] == [(64, EDGE_FACTOR)] * 6
    if subsample_size >= len(blobs):
        assert encoder.rows[6:] == [300] * 4
        assert sampler.sizes[6:] == [64 * EDGE_FACTOR] * 4
    else:  # grouped step, all positions (detached, every 10 steps), the sample, live neighbours
        rows = encoder.rows[6:]
        assert rows[1:4] == [300, 100, 100]
        assert rows[5:7] == rows[8:10] == rows[11:13] == [100, 100]
        assert sampler.groups[6:] == [(64, EDGE_FACTOR)] * 4


def test_learning_rate_decays_and_restarts_for_the_density_phase():
    assert lr_factor(0, 100, 100) == 1.0
    assert lr_factor(50, 100, 100) == pytest.approx(0.5)
    assert lr_factor(99, 100, 100) == LR_FLOOR
    assert lr_factor(69, 100, 70) == pytest.approx(0.31)
    assert lr_factor(70, 100, 70) == 1.0
    assert lr_factor(85, 100, 70) == pytest.approx(0.5)
    assert lr_factor(99, 100, 70) == LR_FLOOR


@pytest.mark.parametrize("refresh", [None, 1, 3])
def test_neighbour_positions_are_at_most_refresh_minus_one_steps_old(blobs, monkeypatch, refresh):
    """On a large graph the neighbours' values equal a live embedding of every vertex at a step
    no more than ``DENSITY_REFRESH - 1`` steps back (None: the default, 10)."""

    if refresh is None:
        refresh = train.DENSITY_REFRESH
    else:
        monkeypatch.setattr(train, "DENSITY_REFRESH", refresh)
    encoder = Encoder(blobs.shape[1], 2, 2, (16,))
    snapshots, used = {}, []
    sample = NeighbourhoodSampler.sample
    radius = train.embedding_log_radius

    def spy_sample(self, size, generator):  # runs first in each density step: note the live embedding
        out = sample(self, size, generator)
        snapshots[len(snapshots)] = (train.embed_rows(encoder, table), out[2])
        return out

    def spy_radius(y_vert, y_nbr, edge_rows, a, b):
        used.append(y_nbr.detach().clone())
        return radius(y_vert, y_nbr, edge_rows, a, b)

    monkeypatch.setattr(NeighbourhoodSampler, "sample", spy_sample)
    monkeypatch.setattr(train, "embedding_log_radius", spy_radius)
    cpu = torch.device("cpu")
    graph, table, density = _density_setup(blobs, subsample_size=50, start_step=2)
    train_embedding(
        encoder, table, EdgeSampler(*graph.edges(), cpu), a=1.6, b=0.9, n_steps=14, batch_size=64,
        negative_sample_rate=5, lr=1e-2, generator=torch.Generator().manual_seed(0), density=density,
    )  # fmt: skip
    assert len(used) == len(snapshots) == 12
    ages = []
    for step, y_nbr in enumerate(used):
        cols = snapshots[step][1]
        ages.append(next(step - s for s in range(step, -1, -1) if torch.equal(snapshots[s][0][cols], y_nbr)))
    assert max(ages) == min(refresh, 12) - 1
    assert ages[:refresh] == list(range(min(refresh, 12)))


def _counting_spectral():
    """A stand-in GrEASE (two zero columns) and the list of row counts it was called on."""
    noised = []

    def spectral(x):
        noised.append(x.shape[0])
        return torch.zeros(x.shape[0], 2)

    return noised, spectral


def _whole_graph_run(blobs, encoder, noise, batch_size=64):
    cpu = torch.device("cpu")
    graph = build_graph(blobs, 10)
    table = RowTable(blobs, Standardizer.fit(blobs), cpu, extra=torch.zeros(len(blobs), 2))
    sampler = _CountingSampler(*graph.edges(), cpu)
    history = train_embedding(
        encoder, table, sampler, a=1.6, b=0.9, n_steps=60, batch_size=batch_size, negative_sample_rate=5,
        lr=1e-3, generator=torch.Generator().manual_seed(0), noise=noise, whole_graph=True,
    )  # fmt: skip
    return history, sampler


def test_whole_graph_steps_of_a_fit_embed_every_vertex_once_from_standing_noise(blobs):
    """A fit's whole-graph step embeds all vertices once, from perturbed rows whose noise is
    drawn for every vertex at the first step and for an ``NOISE_REFRESH``-th of them after,
    and draws ``EDGE_FACTOR`` × ``batch_size`` edges; the loss goes down."""
    noised, spectral = _counting_spectral()

    n = len(blobs)
    encoder = _CountingEncoder(blobs.shape[1], 2, 2, (16,))
    noise = HeadNoise(torch.full((n,), 0.1), spectral, blobs.shape[1])
    history, sampler = _whole_graph_run(blobs, encoder, noise)
    assert encoder.rows == [n] * 60
    assert noised == [n] + [-(-n // NOISE_REFRESH)] * 59
    assert sampler.sizes == [64 * EDGE_FACTOR] * 60
    assert history[-1] < history[0]
    encoder = _CountingEncoder(blobs.shape[1], 2, 2, (16,))
    _whole_graph_run(blobs, encoder, None)
    assert encoder.rows == [n] * 60  # no noise: one pass as well


def test_whole_graph_steps_read_the_noise_at_every_end_of_an_edge_in_a_fit_only(blobs, monkeypatch):
    """In a fit every end of an edge is read from the perturbed pass (noise scaled by
    ``BOTH_ENDS_SCALE``); with a hold (an extension) the heads are, the tails and negatives
    from a clean second pass, and every vertex's noise is drawn again at every step."""
    seen = []

    def spy(y_heads, y, heads, tails, negatives, a, b):
        seen.append(y_heads is y)
        return edge_cross_entropy(y_heads, y, heads, tails, negatives, a, b)

    monkeypatch.setattr(train, "edge_cross_entropy", spy)
    n = len(blobs)
    sigma = torch.full((n,), 0.1)
    noised, spectral = _counting_spectral()

    cpu = torch.device("cpu")
    graph = build_graph(blobs, 10)
    table = RowTable(blobs, Standardizer.fit(blobs), cpu, extra=torch.zeros(n, 2))
    made = []
    standing = train.StandingNoise

    def spy_standing(noise, rows, **kwargs):
        made.append((noise.sigma.clone(), kwargs))
        return standing(noise, rows, **kwargs)

    monkeypatch.setattr(train, "StandingNoise", spy_standing)
    hold = HoldTerm(torch.zeros(n - 10, 2), 1.0, None, 100, 0.5)
    for held in (None, hold):
        encoder = _CountingEncoder(blobs.shape[1], 2, 2, (16,))
        train_embedding(
            encoder, table, EdgeSampler(*graph.edges(), cpu), a=1.6, b=0.9, n_steps=5, batch_size=64,
            negative_sample_rate=5, lr=1e-3, generator=torch.Generator().manual_seed(0),
            noise=HeadNoise(sigma, spectral, blobs.shape[1]), whole_graph=True, hold=held,
        )  # fmt: skip
        assert encoder.rows == [n if held is None else 2 * n] * 5
    assert seen == [True] * 5 + [False] * 5
    torch.testing.assert_close(made[0][0], sigma * BOTH_ENDS_SCALE)
    torch.testing.assert_close(made[1][0], sigma)
    assert noised[5:] == [n] * 5  # the extension: fresh noise for every vertex at every step


def test_grouped_steps_embed_each_head_once_for_its_edges(blobs):
    """A grouped step embeds ``batch_size`` heads (with the noise), each distinct tail of their
    ``EDGE_FACTOR`` edges once and a pool of ``batch_size`` negatives; the loss goes down."""
    noised, spectral = _counting_spectral()

    cpu = torch.device("cpu")
    graph = build_graph(blobs, 10)
    table = RowTable(blobs, Standardizer.fit(blobs), cpu, extra=torch.zeros(len(blobs), 2))
    sampler = _CountingSampler(*graph.edges(), cpu)
    encoder = _CountingEncoder(blobs.shape[1], 2, 2, (16,))
    noise = HeadNoise(torch.full((len(blobs),), 0.1), spectral, blobs.shape[1])
    history = train_embedding(
        encoder, table, sampler, a=1.6, b=0.9, n_steps=100, batch_size=32, negative_sample_rate=5,
        lr=1e-2, generator=torch.Generator().manual_seed(0), noise=noise,
    )  # fmt: skip
    assert sampler.groups == [(32, EDGE_FACTOR)] * 100
    assert noised == [32] * 100
    # fewer rows than edges' heads, tails and pool would take: tails shared within a head's group
    assert all(2 * 32 < rows < 2 * 32 + 32 * EDGE_FACTOR for rows in encoder.rows)
    assert history[-1] < history[0]


def test_grouped_edges_come_in_proportion_to_weight():
    """Each head's group of edges is drawn ∝ weight among its edges; heads ∝ their degree:
    every directed edge as often as ``sample`` would draw it."""
    import numpy as np

    heads = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    tails = np.array([1, 2, 3, 0, 2, 0, 1, 3, 4])
    weights = np.array([0.1, 0.3, 0.6, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)
    order = np.random.default_rng(0).permutation(len(heads))  # any order: the sampler sorts by head
    sampler = EdgeSampler(heads[order], tails[order], weights[order], torch.device("cpu"))
    h, t = sampler.sample_grouped(40_000, 4, torch.Generator().manual_seed(0))
    assert t.shape == (40_000, 4)
    pairs = np.stack([np.repeat(h.numpy(), 4), t.numpy().ravel()], axis=1)
    counts = {tuple(p): c for p, c in zip(*np.unique(pairs, axis=0, return_counts=True), strict=True)}
    assert set(counts) == set(zip(heads, tails, strict=True))  # only edges of the graph
    for head, tail, w in zip(heads, tails, weights, strict=True):
        assert counts[(head, tail)] / len(pairs) == pytest.approx(w / weights.sum(), abs=0.005)


def _weights_of_two_runs(n_features: int, train) -> list[torch.Tensor]:
    """The weights of two encoders initialised alike (seed 0), each after ``train(encoder)``."""
    from scnumap.core.layers import init_parameters

    outputs = []
    for _ in range(2):
        encoder = Encoder(n_features, 2, 2, (16,))
        init_parameters(encoder, torch.Generator().manual_seed(0))
        train(encoder)
        outputs.append(torch.cat([p.detach().flatten() for p in encoder.parameters()]))
    return outputs


def test_whole_graph_steps_are_reproducible_on_two_threads(blobs, two_torch_threads):
    """The gradient of rows read many times (edges, negatives) is summed in a fixed order."""
    outputs = _weights_of_two_runs(
        blobs.shape[1], lambda encoder: _whole_graph_run(blobs, encoder, None, batch_size=512)
    )  # 4,096 edges × 6 reads
    assert torch.equal(outputs[0], outputs[1])


def test_whole_graph_density_steps_with_a_hold_are_reproducible_on_two_threads(blobs, two_torch_threads):
    """The density term's segment sums and the hold term's weighted sum: same seed, same weights."""
    cpu = torch.device("cpu")
    graph, table, density = _density_setup(blobs, subsample_size=len(blobs), start_step=5)
    hold = HoldTerm(torch.randn(len(blobs) - 10, 2, generator=torch.Generator().manual_seed(1)), 1.0, None, 100, 0.5)

    def train(encoder):
        train_embedding(
            encoder, table, EdgeSampler(*graph.edges(), cpu), a=1.6, b=0.9, n_steps=30, batch_size=512,
            negative_sample_rate=5, lr=1e-3, generator=torch.Generator().manual_seed(0), density=density,
            hold=hold, whole_graph=True,
        )  # fmt: skip

    outputs = _weights_of_two_runs(blobs.shape[1], train)
    assert torch.equal(outputs[0], outputs[1])


def test_grouped_steps_are_reproducible_on_two_threads(blobs, two_torch_threads):
    """Heads, tails and negatives read many times within a grouped step: same seed, same weights."""
    cpu = torch.device("cpu")
    graph = build_graph(blobs, 10)
    table = RowTable(blobs, Standardizer.fit(blobs), cpu, extra=torch.zeros(len(blobs), 2))

    def train(encoder):
        train_embedding(
            encoder, table, EdgeSampler(*graph.edges(), cpu), a=1.6, b=0.9, n_steps=30, batch_size=256,
            negative_sample_rate=5, lr=1e-3, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip

    outputs = _weights_of_two_runs(blobs.shape[1], train)
    assert torch.equal(outputs[0], outputs[1])
