import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scnumap.core.density import (
    NeighbourhoodSampler,
    density_correlation_loss,
    embedding_log_radius,
    original_log_radius,
)
from scnumap.core.losses import find_ab_params, membership, umap_cross_entropy


def test_ab_params_match_umap_defaults():
    a, b = find_ab_params(1.0, 0.1)
    assert a == pytest.approx(1.577, abs=0.01)
    assert b == pytest.approx(0.895, abs=0.01)
    with pytest.raises(ValueError, match=r"`min_dist` \(2.0\) must be <= `spread` \(1.0\)"):
        find_ab_params(1.0, 2.0)


@pytest.mark.parametrize(("spread", "min_dist"), [(1.0, 0.1), (1.0, 0.5), (2.0, 0.01), (1.5, 0.0)])
def test_ab_params_equal_umap_learns_fit(spread, min_dist):
    from umap.umap_ import find_ab_params as umap_find_ab_params

    np.testing.assert_allclose(find_ab_params(spread, min_dist), umap_find_ab_params(spread, min_dist), rtol=1e-6)


def test_cross_entropy_prefers_close_edges_and_far_negatives():
    a, b = find_ab_params(1.0, 0.1)
    near, far = torch.tensor([0.01]), torch.tensor([25.0])
    assert umap_cross_entropy(near, far[None], a, b) < umap_cross_entropy(far, far[None], a, b)
    assert umap_cross_entropy(near, far[None], a, b) < umap_cross_entropy(near, near[None], a, b)
    assert 0 < float(membership(torch.tensor(1.0), a, b)) < 1


def _ring_graph(n):
    rows = np.arange(n)
    G = sp.csr_matrix((np.ones(2 * n), (np.r_[rows, rows], np.r_[(rows + 1) % n, (rows - 1) % n])), shape=(n, n))
    return G


def test_original_log_radius_is_standardised_and_ordered():
    G = _ring_graph(6)
    coo = G.tocoo()
    dist = np.where(coo.row < 3, 1.0, 2.0).astype(np.float32)  # rows 0-2 have close neighbours
    csr_order = sp.csr_matrix((dist, (coo.row, coo.col)), shape=G.shape)
    r = original_log_radius(G, csr_order.data)
    assert abs(r.mean()) < 1e-6
    assert r.std() == pytest.approx(1.0, abs=1e-5)
    assert r[:3].max() < r[3:].min()


def test_neighbourhood_sampler_returns_full_neighbourhoods():
    G = _ring_graph(10)
    s = NeighbourhoodSampler(G, torch.device("cpu"))
    vertices, rows, cols = s.sample(4, torch.Generator().manual_seed(0))
    assert vertices.shape[0] == 4
    assert rows.shape[0] == 8
    for i, v in enumerate(vertices.tolist()):
        assert set(cols[rows == i].tolist()) == {(v + 1) % 10, (v - 1) % 10}


def test_density_loss_is_minus_one_for_matching_radii():
    r = torch.linspace(-1, 1, 50)
    assert float(density_correlation_loss(r, 3 * r + 1, 0.0)) == pytest.approx(-1.0, abs=1e-4)
    assert float(density_correlation_loss(r, -r, 0.0)) == pytest.approx(1.0, abs=1e-4)


def test_embedding_radius_grows_with_spread():
    a, b = find_ab_params(1.0, 0.1)
    y_vert = torch.zeros(2, 2)
    y_nbr = torch.tensor([[0.1, 0.0], [0.0, 0.1], [2.0, 0.0], [0.0, 2.0]])
    r = embedding_log_radius(y_vert, y_nbr, torch.tensor([0, 0, 1, 1]), a, b)
    assert r[0] < r[1]


def test_neighbourhood_sampler_everything_is_every_vertex_in_order():
    G = _ring_graph(7)
    s = NeighbourhoodSampler(G, torch.device("cpu"))
    vertices, rows, cols = s.everything()
    assert vertices.tolist() == list(range(7))
    assert rows.shape[0] == 14
    for v in range(7):
        assert set(cols[rows == v].tolist()) == {(v + 1) % 7, (v - 1) % 7}
