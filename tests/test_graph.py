import numpy as np
import pytest
import scipy.sparse as sp

from scnumap.core.graph import (
    EXACT_KNN_MAX_SAMPLES,
    EXACT_KNN_MAX_SAMPLES_EUCLIDEAN,
    build_graph,
    check_metric,
    edge_distances,
    graph_from_matrices,
)


def test_build_graph_is_symmetric_fuzzy_graph(pbmc_pca):
    g = build_graph(pbmc_pca, 15)
    G = g.connectivities
    assert G.shape == (700, 700)
    assert abs(G - G.T).max() < 1e-6
    assert G.data.min() > 0
    assert G.data.max() <= 1 + 1e-6
    assert G.diagonal().sum() == 0
    # every cell keeps at least its (n_neighbors - 1) kNN edges after the fuzzy union
    assert np.diff(G.indptr).min() >= 14


def test_build_graph_matches_scanpy_neighbors(pbmc):
    import scanpy as sc

    ad = pbmc.copy()
    sc.pp.neighbors(ad, n_neighbors=15, use_rep="X_pca")
    ours = build_graph(ad.obsm["X_pca"], 15).connectivities
    theirs = sp.csr_matrix(ad.obsp["connectivities"])
    assert abs(ours - theirs).max() < 1e-4


def test_graph_from_matrices_symmetrises(pbmc):
    G = sp.csr_matrix(pbmc.obsp["connectivities"])
    g = graph_from_matrices(sp.triu(G), pbmc.obsp["distances"], n_obs=700)
    assert abs(g.connectivities - g.connectivities.T).max() < 1e-6


def test_graph_from_matrices_checks_the_knn_distances_shape(pbmc):
    with pytest.raises(ValueError, match=r"`knn_distances` has shape \(699, 699\), expected \(700, 700\)"):
        graph_from_matrices(pbmc.obsp["connectivities"], sp.eye(699), n_obs=700)


@pytest.mark.parametrize(("alias", "name"), [("l2", "euclidean"), ("l1", "manhattan"), ("cityblock", "manhattan")])
def test_check_metric_maps_aliases_and_names_the_fix(alias, name):
    assert check_metric(alias) == name
    with pytest.raises(ValueError, match=r"got 'correlation'.*sc.pp.neighbors\(adata, metric='euclidean'\)"):
        check_metric("correlation")


def test_graph_from_matrices_errors():
    with pytest.raises(ValueError, match=r"shape \(3, 3\) but the data has 4 samples"):
        graph_from_matrices(sp.eye(3), n_obs=4)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        graph_from_matrices(2 * sp.eye(3), n_obs=3)


def test_edge_distances_are_euclidean():
    X = np.array([[0, 0], [3, 4], [6, 8]], dtype=np.float32)
    d = edge_distances(X, np.array([0, 1]), np.array([1, 2]))
    np.testing.assert_allclose(d, [5, 5])


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_edge_distances_equal_scikit_learns_paired_distances(metric, dtype):
    from sklearn.metrics.pairwise import paired_distances

    rng = np.random.default_rng(0)
    X = rng.integers(-3, 4, (50, 7)).astype(dtype) if dtype is np.int64 else rng.normal(size=(50, 7)).astype(dtype)
    X[4] = 0  # a row of zeros: cosine as scikit-learn takes it
    heads, tails = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    heads[:3], tails[:2] = 4, 4
    before = X.copy()
    got = edge_distances(X, heads, tails, metric=metric, chunk_size=77)
    np.testing.assert_allclose(got, paired_distances(X[heads], X[tails], metric=metric), rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(X, before)  # the input is left as it was


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_edge_distances_on_sparse_input_equal_dense(metric):
    rng = np.random.default_rng(0)
    X = sp.random(40, 30, density=0.3, random_state=1, format="lil", dtype=np.float32)
    X[0] = 0  # an empty row
    X = X.tocsr()
    heads, tails = rng.integers(0, 40, 100), rng.integers(0, 40, 100)
    dense = edge_distances(X.toarray(), heads, tails, metric=metric, chunk_size=33)
    np.testing.assert_allclose(edge_distances(X, heads, tails, metric=metric, chunk_size=33), dense, atol=1e-6)


def test_duplicates_keep_self_first():
    X = np.zeros((20, 3), dtype=np.float32)
    X[10:] = 1
    g = build_graph(X, 5)
    assert g.connectivities.diagonal().sum() == 0


@pytest.mark.parametrize(
    ("metric", "n_obs", "exact"),
    [
        ("euclidean", EXACT_KNN_MAX_SAMPLES_EUCLIDEAN - 1, True),
        ("l2", EXACT_KNN_MAX_SAMPLES_EUCLIDEAN - 1, True),
        ("euclidean", EXACT_KNN_MAX_SAMPLES_EUCLIDEAN, False),
        ("cosine", EXACT_KNN_MAX_SAMPLES - 1, True),
        ("cosine", EXACT_KNN_MAX_SAMPLES, False),
        ("manhattan", EXACT_KNN_MAX_SAMPLES_EUCLIDEAN - 1, False),
    ],
)
def test_knn_search_is_exact_where_scanpy_searches_exactly(metric, n_obs, exact, monkeypatch):
    """``sc.pp.neighbors``'s rule: brute force below 8,192 cells (Euclidean) or 4,096 (other
    metrics), pynndescent (whose numba code compiles for half a minute per process) above."""
    import sys
    import types

    from scnumap.core.graph import knn_search

    class Approximate:
        def __init__(self, X, n_neighbors, **kwargs):
            self.neighbor_graph = (
                np.zeros((X.shape[0], n_neighbors), np.int64),
                np.zeros((X.shape[0], n_neighbors), np.float32),
            )

    monkeypatch.setitem(sys.modules, "pynndescent", types.SimpleNamespace(NNDescent=Approximate))
    X = np.random.default_rng(0).normal(size=(n_obs, 3)).astype(np.float32)
    indices, distances = knn_search(X, 4, metric=metric)
    # the stand-in answers zeros: only the exact search finds each row itself first
    assert np.array_equal(indices[:, 0], np.arange(n_obs)) == exact
    if exact:
        assert (distances[:, 1:] > 0).all()


def test_sparse_input_between_the_thresholds_is_searched_exactly_as_given():
    """CSR rows of 4,096-8,191 cells stay sparse (scikit-learn's brute force reads them) and
    give the dense input's graph."""
    rng = np.random.default_rng(0)
    X = sp.random(EXACT_KNN_MAX_SAMPLES + 50, 40, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    g_sparse = build_graph(X, 6)
    g_dense = build_graph(X.toarray(), 6)
    assert abs(g_sparse.connectivities - g_dense.connectivities).max() < 1e-5


def test_build_graph_with_pynndescent_on_a_shared_read_only_input():
    """as_matrix hands float32 input over read-only; pynndescent's numba code must still run."""
    from scnumap.core._checks import as_matrix

    Y = np.random.default_rng(0).normal(size=(EXACT_KNN_MAX_SAMPLES_EUCLIDEAN + 100, 5)).astype(np.float32)
    before = Y.copy()
    X = as_matrix(Y)
    assert not X.flags.writeable
    g = build_graph(X, 10)
    assert g.n_obs == Y.shape[0]
    np.testing.assert_array_equal(Y, before)
