import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scnumap.core.graph import build_graph
from scnumap.core.hold import HoldTerm, novelty_weights, release_weights


def test_release_weights_hold_cells_far_from_new_ones_and_free_those_next_to_a_new_type():
    rng = np.random.default_rng(0)
    old = np.concatenate([rng.normal(0, 1, (100, 5)), rng.normal(8, 1, (100, 5))])
    new = rng.normal([10, 8, 8, 8, 8], 0.5, (50, 5))  # a new type beside the second cluster
    X = np.concatenate([old, new]).astype(np.float32)
    weights = release_weights(build_graph(X, 10).connectivities, 200)
    assert weights.shape == (200,)
    assert weights.dtype == np.float32
    assert np.all((weights >= 0) & (weights <= 1))
    np.testing.assert_array_equal(weights[:100], 1.0)  # the first cluster never meets a new cell
    second = weights[100:]
    released = second < 1
    assert released.any()
    assert second.min() < 0.5
    # the released cells are those facing the new type
    assert X[100:200][released, 0].mean() > X[100:200][~released, 0].mean() + 0.5


def test_release_weights_exact_values_and_errors():
    # vertex 0: edges only to old vertices; vertex 1: half its weight to the new vertex;
    # vertex 2: only to the new vertex; vertex 3 (new)
    graph = sp.csr_matrix(np.array([[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]], dtype=np.float32))
    graph[2, 0] = 0.0
    graph.eliminate_zeros()
    weights = release_weights(graph, 3)
    # rho = 1/4: vertex 1 (share 1/2) → (1/2) / (3/4) = 2/3, vertex 2 (share 1) → 0
    np.testing.assert_allclose(weights, [1.0, 2.0 / 3.0, 0.0], rtol=1e-6)
    isolated = sp.csr_matrix((3, 3), dtype=np.float32)
    np.testing.assert_array_equal(release_weights(isolated, 2), [1.0, 1.0])
    with pytest.raises(ValueError, match="n_fixed"):
        release_weights(graph, 4)


def test_hold_term_weights_rows():
    positions = torch.zeros(3, 2)
    y = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [9.0, 9.0]])
    rows = torch.tensor([0, 1, 2, 3])  # row 3 is new: not held
    plain = HoldTerm(positions, 2.0)
    assert float(plain.loss(y, rows)) == pytest.approx(2.0 * (1 + 4 + 9) / 3)
    weighted = HoldTerm(positions, 2.0, torch.tensor([1.0, 0.5, 0.0]))
    assert float(weighted.loss(y, rows)) == pytest.approx(2.0 * (1 + 2 + 0) / 3)
    assert float(weighted.loss(y[3:], rows[3:])) == 0.0


def test_novelty_weights_pull_a_new_type_and_leave_new_cells_of_old_types():
    rng = np.random.default_rng(0)
    old = np.concatenate([rng.normal(0, 1, (100, 5)), rng.normal(8, 1, (100, 5))])
    known = rng.normal(0, 1, (50, 5))  # new cells of the first cluster's type
    novel = rng.normal([8, -8, 8, -8, 8], 0.5, (50, 5))  # a type the first cells lack
    X = np.concatenate([old, known, novel]).astype(np.float32)
    weights = novelty_weights(build_graph(X, 10).connectivities, 200)
    assert weights.shape == (100,)
    assert weights.dtype == np.float32
    assert np.all((weights >= 0) & (weights <= 1))
    np.testing.assert_array_equal(weights[50:], 1.0)  # all neighbours new
    assert weights[:50].mean() < 0.2  # new among old about as a uniform mix would be


def test_novelty_weights_exact_values():
    # vertices 0, 1 old; 2 (new): half its weight to new vertex 3; 3 (new): only to new vertex 2;
    # 4 (new): only to old vertex 0
    dense = np.zeros((5, 5), dtype=np.float32)
    for i, j in [(0, 1), (0, 2), (1, 2), (2, 3), (0, 4)]:
        dense[i, j] = dense[j, i] = 1.0
    dense[2, 1] = 0.0  # vertex 2: edges to 0 and 3 only
    weights = novelty_weights(sp.csr_matrix(dense), 2)
    # rho = 3/5: vertex 2 (share 1/2) → 0, vertex 3 (share 1) → 1, vertex 4 (share 0) → 0
    np.testing.assert_allclose(weights, [0.0, 1.0, 0.0], rtol=1e-6)
    assert novelty_weights(sp.csr_matrix((3, 3), dtype=np.float32), 2).tolist() == [0.0]


def test_hold_term_averages_new_rows_apart():
    positions = torch.zeros(4, 2)  # rows 0-1 old, 2-3 new rows pulled towards their layout
    y = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, 0.0], [7.0, 7.0]])
    rows = torch.tensor([0, 1, 2, 3, 4])  # row 4: neither held nor pulled
    term = HoldTerm(positions, 2.0, torch.tensor([1.0, 1.0, 0.5, 1.0]), n_old=2, new_weight=3.0)
    assert float(term.loss(y, rows)) == pytest.approx(2.0 * (1 + 9) / 2 + 3.0 * (0.5 * 4 + 0) / 2)
    # old rows alone, or new rows alone, in a step
    assert float(term.loss(y[:2], rows[:2])) == pytest.approx(2.0 * 5.0)
    assert float(term.loss(y[2:4], rows[2:4])) == pytest.approx(3.0 * 1.0)
    # without a weight for them, new rows are left alone
    assert float(HoldTerm(positions, 2.0, n_old=2).loss(y[2:4], rows[2:4])) == 0.0


@pytest.mark.parametrize(("n_old", "n_positions", "new_weight", "weighted"), [
    (40, 60, 1.0, True), (40, 60, 0.5, False), (40, 40, 0.0, True), (70, 70, 0.0, False),
])  # fmt: skip
def test_hold_term_on_every_row_equals_the_loss_over_all_rows(n_old, n_positions, new_weight, weighted):
    """A whole-graph step's weighted sum equals :meth:`HoldTerm.loss` over every row in order
    (rows past the positions are free)."""
    gen = torch.Generator().manual_seed(0)
    positions = torch.randn(n_positions, 2, generator=gen, dtype=torch.float64)
    weights = torch.rand(n_positions, generator=gen, dtype=torch.float64) if weighted else None
    term = HoldTerm(positions, 2.0, weights, n_old, new_weight)
    y = torch.randn(70, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(term.loss_every_row(y), term.loss(y, torch.arange(70)), rtol=1e-12, atol=0.0)
