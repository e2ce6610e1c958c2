import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from scnumap.core.recentring import Recentring, reference_offsets


def test_reference_offsets_are_positions_minus_their_neighbours_mean():
    E = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 10.0]], dtype=np.float32)
    # cell 0 lists 1 and 2 and itself (Scanpy's explicit 0 on large graphs), 1 lists 0, 2 lists 1, 3 none
    D = sp.csr_matrix(([0.0, 1.0, 3.0, 1.0, 2.0], ([0, 0, 0, 1, 2], [0, 1, 2, 0, 1])), shape=(4, 4))
    np.testing.assert_allclose(reference_offsets(E, D), [[-2.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]])


def test_reference_offsets_refuse_an_embedding_of_another_size():
    with pytest.raises(ValueError, match="The embedding has 3 rows; the neighbour graph has 4 cells"):
        reference_offsets(np.zeros((3, 2)), sp.csr_matrix((4, 4)))


@pytest.fixture
def reference():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 1.0, size=(100, 5)) for c in (0.0, 6.0)]).astype(np.float32)
    E = (X[:, :2] + rng.normal(0, 0.3, size=(200, 2))).astype(np.float32)  # a map of the first two axes
    nn = NearestNeighbors(n_neighbors=14).fit(X)
    return X, E, reference_offsets(E, nn.kneighbors_graph(mode="distance")), nn


def test_a_translation_of_the_whole_query_is_taken_out(reference):
    """The network places a query ``delta`` away from where it places the reference: the
    recentred placements are those without ``delta``, exactly (every neighbour is reached)."""
    X, E, offset, nn = reference
    rng = np.random.default_rng(1)
    Q = X[rng.choice(200, 80, replace=False)] + rng.normal(0, 0.2, size=(80, 5)).astype(np.float32)
    indices = nn.kneighbors(Q, n_neighbors=15, return_distance=False)
    placed = (Q[:, :2] + rng.normal(0, 0.3, size=(80, 2))).astype(np.float32)
    delta = np.array([4.0, -2.5], dtype=np.float32)
    plain = Recentring.from_sample(placed, indices, E, offset)
    moved = Recentring.from_sample(placed + delta, indices, E, offset)
    np.testing.assert_allclose(moved.shift(indices) - plain.shift(indices), np.broadcast_to(delta, (80, 2)), atol=1e-5)
    np.testing.assert_allclose(
        placed + delta - moved.shift(indices), placed - plain.shift(indices), atol=1e-5
    )  # the recentred placements agree


def test_the_reference_itself_is_hardly_moved(reference):
    """Reference cells as a query (the map's own positions, their own neighbours): the local
    means of the offsets match, so the shift is small next to the offsets themselves."""
    X, E, offset, nn = reference
    indices = nn.kneighbors(X, n_neighbors=15, return_distance=False)
    shift = Recentring.from_sample(E, indices, E, offset).shift(indices)
    offsets = E - E[indices].mean(axis=1)
    assert np.median(np.linalg.norm(shift, axis=1)) < 0.5 * np.median(np.linalg.norm(offsets, axis=1))


def test_neighbours_the_sample_did_not_reach_do_not_count(reference):
    _, E, offset, _ = reference
    recentring = Recentring.from_sample(E[:1] + 1.0, np.array([[0, 1]]), E, offset)
    np.testing.assert_array_equal(recentring.count, np.r_[1, 1, np.zeros(198, dtype=int)])
    shift = recentring.shift(np.array([[0, 5], [7, 9]]))
    np.testing.assert_allclose(shift[0], recentring.query_offset[0] - offset[0], atol=1e-6)  # neighbour 5: unreached
    np.testing.assert_array_equal(shift[1], [0.0, 0.0])  # nothing reached: not moved
