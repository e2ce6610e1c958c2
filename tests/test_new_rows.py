import numpy as np
import pytest
import scipy.sparse as sp

from scnumap.core import metrics
from scnumap.core.graph import build_graph
from scnumap.core.losses import find_ab_params
from scnumap.core.new_rows import layout_epochs, layout_new_rows

AB = find_ab_params(1.0, 0.1)


@pytest.fixture(scope="module")
def overlaid():
    """Two old clusters (placed in 2-D) and a new type next to the second in the input space,
    started on top of the second cluster, where an extrapolating network would put it."""
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [rng.normal(0, 1, (100, 5)), rng.normal(8, 1, (100, 5)), rng.normal([14, 8, 8, 8, 8], 1, (60, 5))]
    ).astype(np.float32)
    graph = build_graph(X, 10, random_state=0).connectivities
    positions = np.concatenate([rng.normal([0, 0], 1, (100, 2)), rng.normal([10, 0], 1, (100, 2))]).astype(np.float32)
    start = rng.normal([10, 0], 1, (60, 2)).astype(np.float32)
    labels = np.repeat([0, 1, 2], [100, 100, 60])
    return positions, start, graph, labels


def _accuracy(positions, placed, labels):
    """Majority label of each new row's nearest rows in 2-D, the new rows in turn left out."""
    Y = np.concatenate([positions, placed])
    new = np.arange(positions.shape[0], Y.shape[0])
    return np.mean(
        [
            metrics.label_transfer_accuracy(np.delete(Y, i, 0), np.delete(labels, i), Y[i : i + 1], labels[i : i + 1])
            for i in new
        ]
    )


def test_a_new_type_comes_out_of_the_old_cells_it_was_put_on(overlaid):
    positions, start, graph, labels = overlaid
    kept, started = positions.copy(), start.copy()
    placed = layout_new_rows(positions, start, graph, *AB, random_state=0)
    assert placed.shape == start.shape
    assert placed.dtype == np.float32
    np.testing.assert_array_equal(positions, kept)  # the inputs are not written to
    np.testing.assert_array_equal(start, started)
    assert _accuracy(positions, start, labels) < 0.5
    assert _accuracy(positions, placed, labels) >= 0.9
    # its room is next to the old cluster it borders in the input space, not by the other one
    centre = placed.mean(axis=0)
    assert np.linalg.norm(centre - positions[100:].mean(axis=0)) < np.linalg.norm(centre - positions[:100].mean(axis=0))


def test_layout_is_seeded_and_checks_the_graph(overlaid):
    positions, start, graph, _ = overlaid
    one = layout_new_rows(positions, start, graph, *AB, random_state=3)
    np.testing.assert_array_equal(one, layout_new_rows(positions, start, graph, *AB, random_state=3))
    with pytest.raises(ValueError, match="shape"):
        layout_new_rows(positions, start[:10], graph, *AB)
    # new rows without edges stay where they started
    empty = sp.csr_matrix(graph.shape, dtype=np.float32)
    np.testing.assert_array_equal(layout_new_rows(positions, start, empty, *AB), start)


def test_more_new_rows_get_fewer_epochs_down_to_a_floor():
    assert layout_epochs(10) == layout_epochs(10_000) == 50
    assert layout_epochs(12_500) == 40
    assert layout_epochs(1_000_000) == 30
    epochs = [layout_epochs(n) for n in (10_000, 20_000, 50_000, 100_000, 1_000_000)]
    assert epochs == sorted(epochs, reverse=True)


def _polish_case():
    """Old rows in two groups and a new type of a dense and a sparse half, laid out; the
    arguments of :func:`polish_density` and the layout."""
    import torch

    from scnumap.core.density import NeighbourhoodSampler, original_log_radius
    from scnumap.core.graph import edge_distances
    from scnumap.core.train import DensityTerm

    rng = np.random.default_rng(0)
    old = np.concatenate([rng.normal(0, 1, (150, 5)), rng.normal(10, 1, (150, 5))])
    dense = rng.normal([10, -10, 10, -10, 10], 0.3, (60, 5))
    sparse = rng.normal([10, -10, 10, -10, 14], 1.5, (60, 5))
    X = np.concatenate([old, dense, sparse]).astype(np.float32)
    knn = build_graph(X, 10, random_state=0)
    positions = np.concatenate([rng.normal([0, 0], 1, (150, 2)), rng.normal([10, 0], 1, (150, 2))]).astype(np.float32)
    start = rng.normal([10, 8], 1, (120, 2)).astype(np.float32)
    placed = layout_new_rows(positions, start, knn.connectivities, *AB, random_state=0)
    heads, tails, weights = knn.edges()
    density = DensityTerm(
        sampler=NeighbourhoodSampler(knn.connectivities, torch.device("cpu")),
        r_orig=torch.as_tensor(original_log_radius(knn.connectivities, edge_distances(X, heads, tails))),
        dens_lambda=2.0,
        var_shift=0.1,
        subsample_size=10_000,
        start_step=0,
    )
    return positions, placed, (heads, tails, weights), density


def _polish(positions, placed, edges, density, **kwargs):
    import torch

    from scnumap.core.new_rows import polish_density

    generator = torch.Generator().manual_seed(0)
    return polish_density(
        positions, placed, edges, density, *AB, batch_size=256, negative_sample_rate=5, generator=generator, **kwargs
    )


def test_density_polish_gives_a_sparse_part_of_a_new_type_more_room():
    """A new type of a dense and a sparse half: UMAP's layout packs both alike; the polish with
    the density term spreads the sparse half more than the dense one, and keeps its place."""
    positions, placed, edges, density = _polish_case()
    kept = placed.copy()
    polished = _polish(positions, placed, edges, density)
    np.testing.assert_array_equal(placed, kept)  # the layout passed in is not written to
    assert polished.shape == placed.shape
    assert np.isfinite(polished).all()

    def spread(Y):  # mean distance to the part's own centre
        return np.linalg.norm(Y - Y.mean(axis=0), axis=1).mean()

    before = spread(placed[60:]) / spread(placed[:60])
    after = spread(polished[60:]) / spread(polished[:60])
    assert after > 1.2 * before
    # the new type stays where the layout put it
    assert np.linalg.norm(polished.mean(axis=0) - placed.mean(axis=0)) < 0.25 * np.ptp(positions, axis=0).max()


def test_polish_pull_keeps_the_new_rows_near_their_layout():
    """The pull of the polish towards the layout: a stronger one moves the new rows less, and
    none at all (``pull=0``) lets the density term and the UMAP loss move them further."""
    from scnumap.core.new_rows import POLISH_PULL

    positions, placed, edges, density = _polish_case()
    moved = {
        pull: np.linalg.norm(_polish(positions, placed, edges, density, pull=pull) - placed, axis=1).mean()
        for pull in (0.0, 1.0, 10.0)
    }
    assert moved[10.0] < moved[1.0] < moved[0.0]
    # the default is POLISH_PULL
    np.testing.assert_array_equal(
        _polish(positions, placed, edges, density), _polish(positions, placed, edges, density, pull=POLISH_PULL)
    )
