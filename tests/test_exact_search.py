"""scnumap.core.exact_search: exact kNN from blocks of a matrix product, checked against
the full distance matrix (scipy, float64)."""

import numpy as np
import pytest
from brute_force import brute

from scnumap.core import exact_search, reference_index
from scnumap.core.exact_search import exact_neighbours
from scnumap.core.reference_index import ReferenceIndex
from scnumap.core.threads import limited_threads


def rows(n, d=12, seed=0, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(4, d))
    return (offset + scale * (centres[rng.integers(0, 4, n)] + rng.normal(size=(n, d)))).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_neighbours_equal_the_full_distance_matrix(metric, monkeypatch):
    X, Y = rows(700, seed=1), rows(230, seed=2)
    Y[:5] = X[[3, 50, 51, 600, 699]]  # duplicates of reference cells: distance 0, found first
    monkeypatch.setattr(exact_search, "BLOCK_ENTRIES", 700 * 37)  # blocks of 37 rows, the last short
    distances, indices = exact_neighbours(Y, X, 15, metric=metric)
    want_d, want_i = brute(X, Y, 15, metric)
    assert distances.dtype == np.float32
    assert indices.dtype == np.int64
    assert distances.shape == indices.shape == (230, 15)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(indices[:5, 0], [3, 50, 51, 600, 699])
    assert np.all(distances[:5, 0] <= (0.0 if metric == "euclidean" else 1e-7))


def test_blocks_on_two_threads_give_the_same_neighbours_and_restore_blas(monkeypatch):
    from threadpoolctl import threadpool_info

    X, Y = rows(500, seed=11), rows(300, seed=12)
    monkeypatch.setattr(exact_search, "BLOCK_ENTRIES", 500 * 16)  # 19 blocks of 16 rows
    before = [(p["prefix"], p["num_threads"]) for p in threadpool_info()]
    one = exact_neighbours(Y, X, 9)
    two = exact_neighbours(Y, X, 9, n_threads=2)
    assert [(p["prefix"], p["num_threads"]) for p in threadpool_info()] == before
    np.testing.assert_array_equal(two[1], one[1])
    np.testing.assert_array_equal(two[0], one[0])
    np.testing.assert_array_equal(one[1], brute(X, Y, 9, "euclidean")[1])


def test_searches_from_two_threads_at_once_agree_and_restore_blas(monkeypatch):
    """A caller's threads (a dask worker's) may search at once; one of them runs threaded,
    the other one block after another, and the BLAS limit is restored after both."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    X, Ys = rows(400, seed=13), [rows(250, seed=s) for s in (14, 15, 16, 17)]
    monkeypatch.setattr(exact_search, "BLOCK_ENTRIES", 400 * 10)
    before = [(p["prefix"], p["num_threads"]) for p in threadpool_info()]
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda Y: exact_neighbours(Y, X, 5, n_threads=2)[1], Ys))
    assert [(p["prefix"], p["num_threads"]) for p in threadpool_info()] == before
    for Y, indices in zip(Ys, found, strict=True):
        np.testing.assert_array_equal(indices, brute(X, Y, 5, "euclidean")[1])


def test_distances_keep_their_precision_far_from_the_origin():
    """A product form |y|^2 + |x|^2 - 2 y.x in float32 loses the small distances of rows at a
    norm of 10^4; the distances of the found rows are computed from the rows."""
    X = rows(300, seed=3, scale=0.01, offset=1e4)
    Y = X[:40] + np.float32(0.01)
    distances, indices = exact_neighbours(Y, X, 5)
    want_d, want_i = brute(X, Y, 5, "euclidean")
    np.testing.assert_allclose(distances, want_d, rtol=1e-3)
    assert np.mean(indices[:, 0] == want_i[:, 0]) > 0.9
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_ties_go_to_the_lower_index():
    X = np.zeros((6, 3), np.float32)
    X[[1, 4]] = 1.0
    distances, indices = exact_neighbours(np.zeros((1, 3), np.float32), X, 6)
    np.testing.assert_array_equal(indices[0], [0, 2, 3, 5, 1, 4])
    np.testing.assert_allclose(distances[0], [0, 0, 0, 0, np.sqrt(3), np.sqrt(3)], rtol=1e-6)


def test_many_ties_keep_the_lowest_indices():
    """More equal rows than the selection's spare places: the lowest indices are kept, not
    those the interleaved scan meets first."""
    X = np.ones((100, 3), np.float32)
    X[90:] = 5.0
    _, indices = exact_neighbours(np.zeros((2, 3), np.float32), X, 3)
    np.testing.assert_array_equal(indices, [[0, 1, 2], [0, 1, 2]])


def test_cosine_puts_a_zero_row_at_distance_one():
    X = rows(50, seed=4)
    distances, _ = exact_neighbours(np.zeros((2, X.shape[1]), np.float32), X, 3, metric="cosine")
    np.testing.assert_allclose(distances, 1.0)


def test_every_reference_row_when_k_is_their_count():
    X, Y = rows(20, seed=5), rows(7, seed=6)
    distances, indices = exact_neighbours(Y, X, 20)
    assert all(sorted(r) == list(range(20)) for r in indices.tolist())
    assert np.all(np.diff(distances, axis=1) >= 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "manhattan"}, "`metric` must be one of"),
        ({"k": 0}, "`k` must be between 1 and the 30 reference rows, got 0"),
        ({"k": 31}, "got 31"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    X, Y = rows(30, seed=7), rows(5, seed=8)
    with pytest.raises(ValueError, match=match):
        exact_neighbours(Y, X, **{"k": 3, **kwargs})


def test_an_empty_query_gives_empty_lists():
    for threads in (1, 2):
        distances, indices = exact_neighbours(np.zeros((0, 3), np.float32), rows(5, d=3), 2, n_threads=threads)
        assert distances.shape == indices.shape == (0, 2)


def test_non_finite_rows_are_refused():
    X, Y = rows(30, seed=7), rows(5, seed=8)
    Y[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        exact_neighbours(Y, X, 3)


def test_reference_index_uses_it_up_to_two_threads_and_scikit_learn_above(monkeypatch):
    X, Y = rows(500, seed=9), rows(80, seed=10)
    calls = []
    original = reference_index.exact_neighbours
    monkeypatch.setattr(reference_index, "exact_neighbours", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    with limited_threads(1):
        blocks = ReferenceIndex(X).query(Y, 10)
    with limited_threads(2):
        ReferenceIndex(X).query(Y, 10)
    assert calls == [1, 1]
    monkeypatch.setattr(reference_index, "BLOCK_SEARCH_MAX_THREADS", 1)
    with limited_threads(2):
        scikit = ReferenceIndex(X).query(Y, 10)
    assert calls == [1, 1]
    np.testing.assert_array_equal(blocks[1], scikit[1])
    np.testing.assert_allclose(blocks[0], scikit[0], rtol=1e-5, atol=1e-5)
