import numpy as np
import pytest
import torch

from scnumap import NUMAP
from scnumap.core import metrics
from scnumap.core import numap as numap_module
from scnumap.core.encoder import Encoder
from scnumap.core.graph import build_graph
from scnumap.core.layers import init_parameters
from scnumap.core.losses import find_ab_params
from scnumap.core.warm_start import START_BOX, distil, free_layout, spectral_start


def test_spectral_start_scales_each_column_into_the_box():
    rng = np.random.default_rng(0)
    spectral = np.column_stack([rng.normal(size=50), 1e-3 * rng.normal(size=50), np.ones(50), rng.normal(size=50)])
    start = spectral_start(spectral, 3, random_state=0)
    assert start.shape == (50, 3)
    assert start.dtype == np.float32
    for column in (0, 1):  # a small column is stretched as much as a large one
        assert start[:, column].min() == pytest.approx(0.0, abs=1e-3)
        assert start[:, column].max() == pytest.approx(START_BOX, abs=1e-3)
    assert np.abs(start[:, 2]).max() < 1e-3  # a constant column stays at 0, only the noise
    # the order of the cells along a column is kept
    assert np.array_equal(np.argsort(start[:, 0]), np.argsort(spectral[:, 0]))
    np.testing.assert_array_equal(start, spectral_start(spectral, 3, random_state=0))
    with pytest.raises(ValueError, match="has 4 columns; the layout needs 5"):
        spectral_start(spectral, 5)


def test_free_layout_pulls_each_cluster_together_from_a_random_start(blobs):
    graph = build_graph(blobs, 15, random_state=0).connectivities
    labels = np.repeat([0, 1, 2], 100)
    start = np.random.default_rng(0).uniform(0, START_BOX, (300, 2)).astype(np.float32)
    assert metrics.other_label_share(start, labels) > 0.9  # mixed at the start
    layout = free_layout(start, graph, *find_ab_params(1.0, 0.1), random_state=0)
    assert layout.shape == (300, 2)
    assert metrics.other_label_share(layout, labels) < 0.05
    np.testing.assert_array_equal(layout, free_layout(start, graph, *find_ab_params(1.0, 0.1), random_state=0))


def test_distil_teaches_the_encoder_its_target(blobs):
    rows = torch.as_tensor(np.column_stack([blobs, blobs[:, :4]]))  # 10 features, 4 "spectral" columns
    target = torch.as_tensor(np.random.default_rng(0).normal(scale=5.0, size=(300, 2)), dtype=torch.float32)
    encoder = Encoder(10, 4, 2, (64, 64))
    init_parameters(encoder, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(((encoder(rows) - target) ** 2).sum(dim=1).mean())
    losses = distil(encoder, rows, target, lr=0.01)
    with torch.no_grad():
        after = float(((encoder(rows) - target) ** 2).sum(dim=1).mean())
    assert losses[0] == pytest.approx(before, rel=1e-4)
    assert after < 0.2 * before
    assert not encoder.training  # left in evaluation mode


@pytest.fixture
def untrained(monkeypatch):
    """NUMAP's UMAP steps replaced by nothing, and the free layout by a known target (each
    blob at a corner of a triangle); the target, and the layout calls, are returned."""
    corners = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.0]], dtype=np.float32)
    target = corners[np.repeat([0, 1, 2], 100)] + np.random.default_rng(1).normal(scale=0.3, size=(300, 2))
    target = target.astype(np.float32)
    calls = []

    def layout(start, graph, a, b, *, random_state=None):
        calls.append(start.shape)
        return target

    monkeypatch.setattr(numap_module, "free_layout", layout)
    monkeypatch.setattr(numap_module, "train_embedding", lambda *args, **kwargs: [])
    return target, calls


def test_a_fit_starts_the_network_from_the_layout(blobs, untrained):
    target, calls = untrained
    kwargs = {"grease_steps": 50, "hidden": (64, 64), "random_state": 0, "verbose": False}
    warm = NUMAP(**kwargs).fit(blobs)
    assert calls == [(300, 2)]
    spread = ((target - target.mean(axis=0)) ** 2).sum(axis=1).mean()
    assert ((warm.embedding_ - target) ** 2).sum(axis=1).mean() < 0.05 * spread
    cold = NUMAP(warm_start=False, **kwargs).fit(blobs)
    assert calls == [(300, 2)]  # no layout without the warm start
    assert ((cold.embedding_ - target) ** 2).sum(axis=1).mean() > 0.5 * spread
    # a graph above WARM_START_MAX trains without it
    assert NUMAP()._warm(numap_module.WARM_START_MAX)
    assert not NUMAP()._warm(numap_module.WARM_START_MAX + 1)
    assert not NUMAP()._warm(100, extension=True)


def test_warm_started_fit_with_the_automatic_budget_on_pbmc68k_reduced(pbmc_pca, pbmc):
    """70 % of the UMAP steps after the warm start: umap-learn's quality on this set (trust 0.925,
    kNN preservation 0.411, benchmarks/quality.py). Measured: 0.933 / 0.430, 700 steps."""
    labels = pbmc.obs["bulk_labels"].to_numpy()
    train = np.arange(pbmc_pca.shape[0]) % 10 < 7
    m = NUMAP(random_state=0, verbose=False).fit(pbmc_pca)
    assert m.n_steps_ == 700
    assert metrics.trustworthiness(pbmc_pca, m.embedding_) >= 0.92
    assert metrics.knn_preservation(pbmc_pca, m.embedding_) >= 0.40
    held_out = NUMAP(random_state=0, verbose=False).fit(pbmc_pca[train])
    accuracy = metrics.label_transfer_accuracy(
        held_out.embedding_, labels[train], held_out.transform(pbmc_pca[~train]), labels[~train]
    )
    assert accuracy >= 0.75
