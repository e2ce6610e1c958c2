"""The corrected rows' neighbours re-ranked from the measured search (scnumap.core.reranking)."""

import numpy as np
import pytest
import scipy.sparse as sp

from scnumap.core.reference_index import ReferenceIndex
from scnumap.core.reranking import moved_neighbours


def clusters(n, seed, dim=8):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(scale=4.0, size=(5, dim))
    return (centres[rng.integers(0, 5, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("scale", [0.02, 0.3])
def test_same_neighbours_as_a_search_of_the_moved_rows(metric, scale):
    """Re-ranked or searched again, every row gets the neighbours an exact search of the
    moved rows finds; small moves are re-ranked, large ones searched."""
    index = ReferenceIndex(clusters(600, 0), metric=metric)
    before = clusters(300, 1)
    after = before + np.random.default_rng(2).normal(scale=scale, size=before.shape).astype(np.float32)
    d, i = index.query(before, 31)
    d2, i2, searched = moved_neighbours(index, before, after, d, i, 15)
    d_exact, i_exact = index.query(after, 15)
    np.testing.assert_array_equal(np.sort(i2, axis=1), np.sort(i_exact, axis=1))
    np.testing.assert_allclose(d2, d_exact, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(d2, axis=1) >= 0)
    if scale == 0.02:
        assert searched.mean() < 0.2
    else:
        assert 0.2 < searched.mean() < 1.0  # both kinds of rows occur


def test_a_row_moved_onto_an_unfound_cell_is_searched():
    """The bound fails where a reference cell the first search did not find becomes nearest."""
    ref = np.array([[0.0, 0.0], [1.0, 0.0], [1.1, 0.0], [10.0, 0.0]], dtype=np.float32)
    index = ReferenceIndex(ref)
    before = np.array([[0.5, 0.0]], dtype=np.float32)
    after = np.array([[9.0, 0.0]], dtype=np.float32)
    d, i = index.query(before, 3)
    assert 3 not in i
    _, i2, searched = moved_neighbours(index, before, after, d, i, 1)
    assert searched[0]
    assert i2[0, 0] == 3


def test_unmoved_rows_keep_their_neighbours():
    index = ReferenceIndex(clusters(400, 0))
    rows = clusters(50, 3)
    d, i = index.query(rows, 20)
    d2, i2, searched = moved_neighbours(index, rows, rows.copy(), d, i, 10)
    assert not searched.any()
    np.testing.assert_array_equal(i2, i[:, :10])
    np.testing.assert_allclose(d2, d[:, :10], rtol=1e-5, atol=1e-5)


def test_all_reference_cells_found_needs_no_bound():
    index = ReferenceIndex(clusters(12, 0))
    before = clusters(5, 1)
    after = before + 5.0
    d, i = index.query(before, 12)
    _, i2, searched = moved_neighbours(index, before, after, d, i, 4)
    assert not searched.any()
    np.testing.assert_array_equal(i2, index.query(after, 4)[1])


def test_sparse_reference_is_searched_again():
    index = ReferenceIndex(sp.csr_matrix(clusters(100, 0)))
    rows = clusters(10, 1)
    d, i = index.query(rows, 15)
    _, i2, searched = moved_neighbours(index, rows, rows, d, i, 5)
    assert searched.all()
    np.testing.assert_array_equal(i2, index.query(rows, 5)[1])
