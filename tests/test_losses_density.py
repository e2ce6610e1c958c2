import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scnumap.core.batching import take_rows
from scnumap.core.density import (
    NeighbourhoodSampler,
    density_correlation_loss,
    embedding_log_radius,
    original_log_radius,
    whole_graph_density_loss,
)
from scnumap.core.losses import edge_cross_entropy, find_ab_params, membership, umap_cross_entropy


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


@pytest.mark.parametrize("symmetric", [True, False])
def test_mirrored_edges_stand_for_every_edge_once(symmetric):
    """Each mirrored pair once (head < tail) and counted from both ends, every other edge
    (no mirror, a loop) once from its head: together exactly the graph's edges."""
    g = _random_graph(40, 1, symmetric).tolil()
    g[5, 5] = 0.5  # a loop
    g = g.tocsr()
    heads, tails, n_pairs = NeighbourhoodSampler(g, torch.device("cpu")).mirrored_edges()
    heads, tails = heads.tolist(), tails.tolist()
    pairs = list(zip(heads[:n_pairs], tails[:n_pairs], strict=True))
    counted = pairs + [(j, i) for i, j in pairs] + list(zip(heads[n_pairs:], tails[n_pairs:], strict=True))
    coo = g.tocoo()
    assert sorted(counted) == sorted(zip(coo.row.tolist(), coo.col.tolist(), strict=True))
    assert all(i < j for i, j in pairs)
    assert (n_pairs == (g.nnz - 1) // 2) if symmetric else (0 < n_pairs < g.nnz // 2)


def test_mirrored_edges_of_a_graph_with_duplicate_entries_keep_every_edge():
    g = sp.csr_matrix((np.ones(3), np.array([1, 1, 0]), np.array([0, 2, 3])), shape=(2, 2))  # (0, 1) twice
    assert not g.has_canonical_format
    heads, tails, n_pairs = NeighbourhoodSampler(g, torch.device("cpu")).mirrored_edges()
    assert n_pairs == 0
    assert heads.tolist() == [0, 0, 1]
    assert tails.tolist() == [1, 1, 0]


def _random_graph(n: int, seed: int, symmetric: bool) -> sp.csr_matrix:
    """A random weighted graph; vertex 0 has no edges (its radius is log(EPS))."""
    rng = np.random.default_rng(seed)
    g = sp.random(n, n, density=0.15, random_state=rng, format="csr")
    g.setdiag(0)
    if symmetric:
        g = g.maximum(g.T)
    g = g.tolil()
    g[0, :] = 0
    g[:, 0] = 0
    g = g.tocsr()
    g.eliminate_zeros()
    return g


@pytest.mark.parametrize("symmetric", [True, False])
def test_whole_graph_density_loss_equals_the_composition_and_its_gradient(symmetric):
    """The written-out gradient equals autograd's of embedding_log_radius + density_correlation_loss."""
    a, b = find_ab_params(1.0, 0.1)
    g = _random_graph(60, 0, symmetric)
    sampler = NeighbourhoodSampler(g, torch.device("cpu"))
    _, rows, cols = sampler.everything()
    gen = torch.Generator().manual_seed(0)
    r_orig = torch.randn(60, generator=gen, dtype=torch.float64)
    y = (3 * torch.randn(60, 2, generator=gen, dtype=torch.float64)).requires_grad_(True)
    with torch.no_grad():
        y[2] = y[int(cols[rows == 2][0])]  # a zero-length edge
    expected = density_correlation_loss(r_orig, embedding_log_radius(y, take_rows(y, cols), rows, a, b), 0.1)
    (expected_grad,) = torch.autograd.grad(expected, y)
    value = whole_graph_density_loss(y, sampler, r_orig, a, b, 0.1)
    (grad,) = torch.autograd.grad(value, y)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)
    assert torch.count_nonzero(grad[0]) == 0  # no edges, no gradient


def test_edge_cross_entropy_equals_the_composition_and_its_gradient():
    """Value and gradients (heads from one table, tails and negatives from another) equal
    autograd's of gathering the rows and umap_cross_entropy, clamps included."""
    a, b = find_ab_params(1.0, 0.1)
    gen = torch.Generator().manual_seed(1)
    heads = torch.randint(0, 50, (300,), generator=gen)
    tails = torch.randint(0, 50, (300,), generator=gen)
    negatives = torch.randint(0, 50, (300, 5), generator=gen)
    tails[:4], negatives[:3, 0] = heads[:4], heads[:3]  # zero distances: both clamps hold
    y_heads = (3 * torch.randn(50, 2, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = (3 * torch.randn(50, 2, generator=gen, dtype=torch.float64)).requires_grad_(True)
    with torch.no_grad():
        y_heads[heads[:4]] = y[heads[:4]]
    for first in (y_heads, y):  # noisy heads, and one table for all
        h = take_rows(first, heads)
        sq_pos = ((h - take_rows(y, tails)) ** 2).sum(dim=1)
        sq_neg = ((h[:, None] - take_rows(y, negatives)) ** 2).sum(dim=2)
        expected = umap_cross_entropy(sq_pos, sq_neg, a, b)
        inputs = (y_heads, y) if first is y_heads else (y,)
        expected_grads = torch.autograd.grad(expected, inputs)
        value = edge_cross_entropy(first, y, heads, tails, negatives, a, b)
        grads = torch.autograd.grad(value, inputs)
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
