"""scnumap.core.reference_index: exact and pynndescent kNN of query rows among reference rows.

pynndescent's numba code compiles for about a minute per process (dense and sparse
apart), so the fast tests check the switch to it with a stand-in that answers exactly;
the real index is checked under ``slow``.
"""

import sys
import types
from collections import OrderedDict
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
from brute_force import brute

from scnumap.core import reference_index
from scnumap.core.reference_index import ReferenceIndex, cached_index, fingerprint


@pytest.fixture
def data():
    """Reference (400 x 10) and query (60 x 10) rows from three seeded clusters."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5.0, size=(3, 10))
    ref = centres[rng.integers(0, 3, 400)] + rng.normal(size=(400, 10))
    query = centres[rng.integers(0, 3, 60)] + rng.normal(size=(60, 10))
    return ref.astype(np.float32), query.astype(np.float32)


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.setattr(reference_index, "_CACHE", OrderedDict())


def recall(found, truth) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


class StandIn:
    """pynndescent.NNDescent's interface, answering exactly; records what it was given."""

    built: ClassVar[list] = []

    def __init__(self, data, *, metric, n_neighbors, random_state, low_memory, parallel_batch_queries, verbose):
        self.data, self.metric, self.random_state = data, metric, random_state
        self.parallel = parallel_batch_queries
        self.prepared = False
        self.queries = []
        StandIn.built.append(self)

    def prepare(self):
        self.prepared = True

    def query(self, Y, k, epsilon):
        assert self.prepared
        self.queries.append((Y, k, epsilon))
        distances, indices = brute(self.data, Y, k, self.metric)
        return indices.astype(np.int32), distances  # pynndescent's order: indices first


@pytest.fixture
def stand_in(monkeypatch):
    """StandIn as ``pynndescent.NNDescent`` (a module of its own: importing pynndescent takes 15 s)."""
    StandIn.built = []
    monkeypatch.setitem(sys.modules, "pynndescent", types.SimpleNamespace(NNDescent=StandIn))
    return StandIn


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_exact_search_matches_brute_force(data, metric):
    ref, query = data
    distances, indices = ReferenceIndex(ref, metric=metric).query(query, 7)
    expected_d, expected_i = brute(ref, query, 7, metric)
    assert distances.dtype == np.float32
    assert indices.dtype == np.int64
    assert distances.shape == indices.shape == (60, 7)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-4, atol=1e-5)


def test_exact_search_in_blocks_gives_the_same_answer(data, monkeypatch):
    ref, query = data
    whole = ReferenceIndex(ref).query(query, 5)
    monkeypatch.setattr(reference_index, "EXACT_BLOCK_ROWS", 7)  # 60 rows: 8 full blocks and one of 4
    blocks = ReferenceIndex(ref).query(query, 5)
    np.testing.assert_array_equal(blocks[1], whole[1])
    np.testing.assert_array_equal(blocks[0], whole[0])


def test_more_neighbours_than_reference_cells_and_empty_query(data):
    ref, query = data
    index = ReferenceIndex(ref[:4])
    distances, indices = index.query(query, 10)
    assert distances.shape == (60, 4)
    assert np.all(np.sort(indices, axis=1) == np.arange(4))
    d, i = index.query(query[:0], 10)
    assert d.shape == i.shape == (0, 4)
    assert d.dtype == np.float32
    assert i.dtype == np.int64


def test_query_width_must_match(data):
    ref, query = data
    with pytest.raises(ValueError, match="Query rows have 3 columns; the reference index has 10"):
        ReferenceIndex(ref).query(query[:, :3], 5)
    with pytest.raises(ValueError, match="Query rows have 12 columns; the reference index has 10"):
        ReferenceIndex(sp.csr_matrix(ref)).query(sp.csr_matrix(np.ones((2, 12))), 5)
    with pytest.raises(ValueError, match="`metric` must be one of"):
        ReferenceIndex(ref, metric="foo")


def test_sparse_reference_stays_sparse(data):
    ref, query = data
    ref = np.where(np.abs(ref) > 4, ref, 0)  # mostly zeros
    S = sp.csr_matrix(ref.astype(np.float64))
    index = ReferenceIndex(S)
    assert sp.issparse(index.space)
    assert index.space.dtype == np.float32
    assert index.space.nnz == S.nnz
    distances, indices = index.query(sp.csr_matrix(query), 6)
    dense_d, dense_i = ReferenceIndex(ref).query(query, 6)
    np.testing.assert_array_equal(indices, dense_i)
    np.testing.assert_allclose(distances, dense_d, rtol=1e-5)
    assert sp.issparse(index.space)


def test_above_exact_max_pairs_the_approximate_index_is_built_once_and_kept(data, stand_in, monkeypatch):
    ref, query = data
    monkeypatch.setattr(reference_index, "EXACT_MAX_PAIRS", 400 * 30)
    index = ReferenceIndex(ref, random_state=3)
    index.query(query[:30], 5)  # 400 x 30 pairs: exact
    assert stand_in.built == []
    distances, indices = index.query(query, 5)  # 400 x 60 pairs: approximate
    assert len(stand_in.built) == 1
    built = stand_in.built[0]
    assert built.metric == "euclidean"
    assert built.data is not None
    assert built.parallel  # a block's rows are searched on every core
    assert built.queries[-1][1:] == (5, reference_index.SEARCH_EPSILON)
    expected_d, expected_i = brute(ref, query, 5)
    np.testing.assert_array_equal(indices, expected_i)  # not swapped with the distances
    np.testing.assert_allclose(distances, expected_d, rtol=1e-5)
    assert distances.dtype == np.float32
    assert indices.dtype == np.int64
    index.query(query[:2], 5)  # small again: the approximate index is kept, not rebuilt
    assert len(stand_in.built) == 1
    assert len(built.queries) == 2
    ReferenceIndex(ref, random_state=3).query(query, 5)
    seeds = [b.random_state.randint(0, 2**31 - 1) for b in stand_in.built]
    assert seeds[0] == seeds[1]  # the same random_state, the same pynndescent seed


def test_sparse_reference_reaches_pynndescent_sparse(data, stand_in, monkeypatch):
    ref, query = data
    monkeypatch.setattr(reference_index, "EXACT_MAX_PAIRS", 0)
    S = sp.csr_matrix(np.where(np.abs(ref) > 4, ref, 0))
    _distances, indices = ReferenceIndex(S).query(sp.csr_matrix(query), 5)
    assert sp.issparse(stand_in.built[0].data)
    assert sp.issparse(stand_in.built[0].queries[0][0])
    np.testing.assert_array_equal(indices, brute(S, query, 5)[1])


@pytest.mark.slow
@pytest.mark.parametrize("sparse", [False, True])
def test_pynndescent_agrees_with_the_exact_search(sparse, monkeypatch):
    """The real pynndescent index (about a minute of numba compilation each), recall >= 0.9.
    Measured 0.97 (dense) and 0.95 (sparse) at 10 neighbours."""
    rng = np.random.default_rng(0)
    if sparse:
        ref = sp.random(1500, 200, density=0.05, random_state=0, format="csr", dtype=np.float32)
        query = sp.random(100, 200, density=0.05, random_state=1, format="csr", dtype=np.float32)
    else:
        ref = rng.normal(size=(1500, 10)).astype(np.float32)
        query = rng.normal(size=(200, 10)).astype(np.float32)
    exact = ReferenceIndex(ref).query(query, 10)
    monkeypatch.setattr(reference_index, "EXACT_MAX_PAIRS", 0)
    index = ReferenceIndex(ref)
    distances, indices = index.query(query, 10)
    assert index._approximate is not None
    assert sp.issparse(index.space) == sparse
    assert distances.dtype == np.float32
    assert indices.dtype == np.int64
    assert recall(indices, exact[1]) >= 0.9
    assert np.all(np.diff(distances, axis=1) >= -1e-5)  # nearest first
    # the distances pynndescent reports are the true distances to the indices it reports
    truth = brute(ref, query, ref.shape[0])
    full = np.empty((query.shape[0], ref.shape[0]))
    np.put_along_axis(full, truth[1], truth[0], axis=1)
    np.testing.assert_allclose(distances, np.take_along_axis(full, indices, axis=1), rtol=1e-4, atol=1e-5)


def test_cached_index_is_reused_for_equal_values_only(data, empty_cache):
    ref, _ = data
    first = cached_index(ref)
    assert cached_index(ref.copy()) is first  # another array, the same values
    assert cached_index(ref.astype(np.float64)) is first  # the values are compared as float32
    assert cached_index(ref, metric="cosine") is not first
    changed = ref.copy()
    changed[5, 3] += 1.0
    assert cached_index(changed) is not first
    sparse = cached_index(sp.csr_matrix(ref))
    assert sparse is not first
    assert sp.issparse(sparse.space)
    assert cached_index(sp.csr_matrix(ref.copy())) is sparse


def test_cached_index_keeps_the_last_two(data, empty_cache):
    ref, _ = data
    a = cached_index(ref)
    b = cached_index(ref + 1)
    assert cached_index(ref) is a  # a is now the most recent
    cached_index(ref + 2)  # evicts b, the least recently used
    assert cached_index(ref) is a
    assert cached_index(ref + 1) is not b
    assert len(reference_index._CACHE) == reference_index.CACHE_SIZE == 2


def test_fingerprint_sees_shape_and_values(data):
    ref, _ = data
    assert fingerprint(ref) == fingerprint(ref.copy())
    assert fingerprint(ref) != fingerprint(ref.reshape(800, 5))  # the same bytes, another shape
    changed = ref.copy()
    changed[-1, -1] = np.nextafter(changed[-1, -1], np.inf)
    assert fingerprint(ref) != fingerprint(changed)
    S = sp.csr_matrix(np.where(np.abs(ref) > 4, ref, 0))
    assert fingerprint(S) == fingerprint(S.copy()) == fingerprint(S.tocoo())
    assert fingerprint(S) != fingerprint(ref)
    moved = S.copy()
    moved.indices = moved.indices.copy()
    moved.indices[0] = (moved.indices[0] + 1) % 10  # the same values in another column
    assert fingerprint(S) != fingerprint(moved)


def test_cached_index_is_not_changed_by_later_edits_of_the_callers_array(data, empty_cache):
    ref, query = data
    original = ref.copy()
    first = cached_index(ref)
    ref *= 2.0  # the caller edits its own array in place, e.g. adata.obsm['X_pca']
    assert cached_index(ref) is not first
    again = cached_index(original)  # the original values come back: a cache hit
    assert again is first
    np.testing.assert_allclose(again.query(query, 3)[0], brute(original, query, 3)[0], rtol=1e-4)


def test_the_whole_query_size_decides_between_exact_and_approximate(data, stand_in, monkeypatch):
    ref, query = data
    monkeypatch.setattr(reference_index, "EXACT_MAX_PAIRS", ref.shape[0] * 100)
    index = ReferenceIndex(ref)
    index.query(query[:10], 3, n_queries=100)  # one block of a 100-row query: exact is still cheap
    assert stand_in.built == []
    index.query(query[:10], 3, n_queries=101)  # one block of a larger query: the index is built
    assert len(stand_in.built) == 1
    assert len(stand_in.built[0].queries) == 1


def test_own_neighbors_find_each_row_itself_and_are_kept(data, monkeypatch):
    ref, _ = data
    index = ReferenceIndex(ref)
    rows = np.array([3, 10, 399])
    distances, indices = index.own_neighbors(rows, 5)
    truth_d, truth_i = brute(ref, ref[rows], 5)
    np.testing.assert_array_equal(indices, truth_i)
    np.testing.assert_allclose(distances, truth_d, atol=1e-4)
    assert np.all(indices[:, 0] == rows)
    calls = []
    monkeypatch.setattr(index, "query", lambda *a, **k: calls.append(a))
    again = index.own_neighbors(rows, 5)
    assert again[0] is distances
    assert not calls
    index.own_neighbors(rows, 6)
    assert len(calls) == 1  # another k is another question
    index.own_neighbors(rows, 5)
    assert len(calls) == 1  # both answers are kept (the share's null and a calibration)
    index.own_neighbors(rows[:2], 5)
    index.own_neighbors(rows, 6)
    assert len(calls) == 3  # only the last two
