"""scnumap.core.query_share: the query share, its shift and the mixing check; with the mapping score."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from scnumap.core.mapping import MappingCalibration
from scnumap.core.query_share import QueryShare


def line_pool():
    """Reference at 0, 1, …, 9; query sample at 0.5, 1.5, 2.5 (among them) and 100, 101, 102 (alone)."""
    reference = np.arange(10, dtype=np.float32)[:, None]
    sample = np.array([0.5, 1.5, 2.5, 100.0, 101.0, 102.0], np.float32)[:, None]
    return reference, sample, QueryShare(reference, sample, n_neighbors=2)


def test_shares_by_hand():
    _, sample, pool = line_pool()
    # the far query cells' 2 nearest pooled cells are the other far query cells
    counts, near = pool.count(sample, np.arange(6))
    np.testing.assert_array_equal(counts, [0, 0, 0, 2, 2, 2])
    np.testing.assert_array_equal(near[3], [4, 5])  # 100: 101, 102
    np.testing.assert_array_equal(near[0], [-1, -1])  # 0.5: nearest others 0 and 1 (reference, 0.5 each)
    np.testing.assert_array_equal(pool.sample_counts, counts)
    shares = pool.share(sample, np.arange(6))
    assert shares.dtype == np.float32
    np.testing.assert_allclose(shares[3:], 1.0)  # averaged with the other far cells' 1 and 1
    assert shares[0] == 0.0
    np.testing.assert_array_equal(pool.sample_shares, shares)
    # reference cells: 0 -> (0.5, 1): one sample cell, of share 0; 9 -> (8, 7): none;
    # 3 -> (2.5, 2 or 4): one sample cell, 2.5, whose own neighbours 2 and 3 are reference cells
    np.testing.assert_array_equal(pool.null_counts[[0, 9, 3]], [1, 0, 1])
    assert pool.null[0] == 0.25  # (1/2 + 0) / 2
    assert pool.null[9] == 0.0
    assert pool.null[3] == 0.25
    assert pool.null.shape == (10,)


def test_a_sampled_cell_does_not_count_itself():
    _, sample, pool = line_pool()
    twin = sample[3:4]  # 100, also in the sample at position 3
    as_itself = pool.count(twin, np.array([3]))  # neighbours 101 and 102 (itself left out)
    as_stranger = pool.count(twin, np.array([-1]))  # the farthest of 100, 101, 102 dropped instead
    np.testing.assert_array_equal(as_itself[1], [[4, 5]])
    np.testing.assert_array_equal(as_stranger[1], [[3, 4]])
    np.testing.assert_allclose(pool.share(twin, np.array([3])), 1.0)
    np.testing.assert_allclose(pool.share(twin, np.array([-1])), 1.0)
    near = np.array([[0.5]], np.float32)  # the sampled 0.5: itself, then 0 and 1
    assert pool.count(near, np.array([0]))[0][0] == 0
    assert pool.count(near, np.array([-1]))[0][0] == 1  # a stranger at 0.5 sees the sampled twin
    assert pool.share(near, np.array([-1]))[0] == 0.25  # (1/2 + the twin's 0) / 2


def test_sparse_reference_gives_the_same_shares():
    reference, sample, pool = line_pool()
    sparse = QueryShare(sp.csr_matrix(reference), sample, n_neighbors=2)
    np.testing.assert_array_equal(sparse.null, pool.null)
    np.testing.assert_array_equal(sparse.share(sample, np.arange(6)), pool.share(sample, np.arange(6)))


def pooled_shares(R, Q, k):
    """Shares from one exact search of the pooled reference + query (each cell excluded from its
    own list): as counted, and averaged with the query cells among each cell's k neighbours."""
    pooled = np.vstack([R, Q])
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(pooled).kneighbors(pooled)
    own = idx == np.arange(pooled.shape[0])[:, None]
    keep = ~own & (np.cumsum(~own, axis=1) <= k)
    from_query = (idx >= R.shape[0]) & keep
    shares = from_query.sum(axis=1) / k
    averaged = (shares + np.where(from_query, shares[idx], 0.0).sum(axis=1)) / (1 + from_query.sum(axis=1))
    n = R.shape[0]
    return shares[:n], shares[n:], averaged[:n], averaged[n:]


def test_merged_searches_equal_one_pooled_search(pbmc_pca):
    """The pool is never built: reference and query-sample neighbours are merged instead."""
    R, Q = split(pbmc_pca)
    null, query, null_averaged, query_averaged = pooled_shares(R, Q, k=30)
    pool = QueryShare(R, Q)
    rows = np.arange(Q.shape[0])
    np.testing.assert_array_equal(pool.null_rows, np.arange(R.shape[0]))
    np.testing.assert_allclose(pool.null_counts / 30, null, atol=1e-6)
    np.testing.assert_allclose(pool.count(Q, rows)[0] / 30, query, atol=1e-6)
    np.testing.assert_allclose(pool.null, null_averaged, atol=1e-6)
    np.testing.assert_allclose(pool.share(Q, rows), query_averaged, atol=1e-6)
    np.testing.assert_allclose(pool.sample_shares, query_averaged, atol=1e-6)
    # the reference distances of a search already made give the same shares
    d, i = NearestNeighbors(n_neighbors=30).fit(R).kneighbors(Q)
    np.testing.assert_allclose(pool.share(Q, rows, d.astype(np.float32)), query_averaged, atol=1e-6)
    # and the pool's own search of the sample is that search
    np.testing.assert_allclose(pool.sample_search[0], d, rtol=1e-5)
    assert np.mean(pool.sample_search[1] == i) > 0.99  # ties may come in another order


def test_averaging_lowers_the_scatter_of_typical_shares(pbmc_pca):
    """A query from the reference's own population: each share counts k neighbours and scatters;
    the average with its query neighbours' shares scatters less about the same typical value."""
    R, Q = split(pbmc_pca)
    pool = QueryShare(R, Q)
    counted = pool.sample_counts / pool.k
    averaged = pool.sample_shares
    assert averaged.std() < 0.8 * counted.std()
    assert abs(np.median(averaged) - np.median(counted)) < 0.05


def test_null_of_a_large_reference_is_a_sample_of_its_cells(pbmc_pca):
    R, Q = split(pbmc_pca)
    full = QueryShare(R, Q)
    sampled = QueryShare(R, Q, null_size=100, random_state=3)
    assert sampled.null_rows.shape == (100,)
    assert np.all(np.diff(sampled.null_rows) > 0)
    assert sampled.null_rows.max() < R.shape[0]
    np.testing.assert_allclose(sampled.null, full.null[sampled.null_rows], atol=1e-6)
    again = QueryShare(R, Q, null_size=100, random_state=3)
    np.testing.assert_array_equal(again.null_rows, sampled.null_rows)


def split(X, seed=0, n_ref=490):
    order = np.random.default_rng(seed).permutation(X.shape[0])
    return X[order[:n_ref]], X[order[n_ref:]]


def test_held_out_query_mixes_and_a_shifted_one_does_not(pbmc_pca):
    R, Q = split(pbmc_pca)
    pool = QueryShare(R, Q)
    shares = pool.share(Q, np.arange(Q.shape[0]))
    assert pool.mixes(shares)
    assert pool.shift(shares) <= 0.1  # measured 0
    moved = Q + 3.0 * pbmc_pca.std(axis=0)  # a query off the reference as a whole
    far = QueryShare(R, moved)
    far_shares = far.share(moved, np.arange(Q.shape[0]))
    assert not far.mixes(far_shares)
    assert far.shift(far_shares) > 0.5
    assert pool.shift(np.zeros(5)) == 0.0  # never negative


def mapping_scores(R, Q, with_share: bool):
    nn = NearestNeighbors(n_neighbors=14).fit(R)
    cal = MappingCalibration.from_distances(nn.kneighbors_graph(mode="distance"))
    d, i = nn.kneighbors(Q)
    stats = cal.statistics(d.astype(np.float32), i)
    if not with_share:
        return cal.score(stats), cal
    pool = QueryShare(R, Q)
    share = pool.share(Q, np.arange(Q.shape[0]))
    return cal.score(stats, share - pool.shift(share), pool.null, pool.null_rows), cal


@pytest.mark.parametrize("removed_type", ["CD19+ B", "CD56+ NK"])
def test_the_query_share_flags_a_missing_type_better(pbmc, pbmc_pca, removed_type):
    """A type removed from the reference (70 % of the other cells), the query = the other 30 % + that type.
    AUROC of -score for the removed type, distances alone → with the (averaged) share: measured
    0.939 → 0.980 (B) and 0.950 → 0.964 (NK); called Unknown 19 % → 63 % and 39 % → 39 %, false
    Unknown 0.5 % and 1 %."""
    removed = pbmc.obs["bulk_labels"].to_numpy() == removed_type
    kept = np.flatnonzero(~removed)
    np.random.default_rng(0).shuffle(kept)
    n = int(0.7 * kept.size)
    R, Q = pbmc_pca[kept[:n]], np.vstack([pbmc_pca[kept[n:]], pbmc_pca[removed]])
    y = np.r_[np.zeros(kept.size - n), np.ones(removed.sum())].astype(bool)
    alone, _ = mapping_scores(R, Q, with_share=False)
    joint, cal = mapping_scores(R, Q, with_share=True)
    auroc_alone, auroc_joint = roc_auc_score(y, -alone), roc_auc_score(y, -joint)
    assert auroc_joint >= 0.95
    assert auroc_joint >= auroc_alone
    threshold = cal.unknown_threshold
    assert np.mean(joint[~y] < threshold) <= 0.03  # false Unknown
    assert np.mean(joint[y] < threshold) >= np.mean(alone[y] < threshold)


def test_two_stage_search_of_the_sample_gives_the_full_searchs_shares(pbmc_pca):
    """A narrow first search, widened where every sample cell found is among the k nearest."""
    R, Q = split(pbmc_pca)
    pool = QueryShare(R, Q)
    full = pool.share(Q, np.arange(Q.shape[0]))
    assert pool.narrow() == pool.k  # searched exactly: not narrowed
    for width in (1, 3, 8):
        pool.first_width = width
        np.testing.assert_array_equal(pool.share(Q, np.arange(Q.shape[0])), full)
        strangers = np.full(Q.shape[0], -1)
        np.testing.assert_array_equal(pool.share(Q, strangers), QueryShare(R, Q).share(Q, strangers))


def test_the_sample_is_searched_approximately_from_a_lower_count_than_the_reference(pbmc_pca, monkeypatch):
    """The sample's index serves one projection: approximate from SAMPLE_EXACT_MAX_PAIRS on,
    while the reference's stays exact up to EXACT_MAX_PAIRS."""
    from scnumap.core import query_share

    R, Q = split(pbmc_pca)
    monkeypatch.setattr(query_share, "SAMPLE_EXACT_MAX_PAIRS", Q.shape[0] * 1000)
    assert QueryShare(R, Q, n_queries=1000).sample.exact_for(1000)
    pool = QueryShare(R, Q, n_queries=1001)
    assert not pool.sample.exact_for(1001)
    assert pool.reference.exact_for(1001)
    full = QueryShare(R, Q).share(Q, np.arange(Q.shape[0]))  # exact
    approximate = pool.share(Q, np.arange(Q.shape[0]))
    assert np.mean(approximate == full) >= 0.9  # pynndescent's misses change a few counts by one


def test_narrow_takes_the_width_most_sample_rows_need_when_searched_approximately(pbmc_pca):
    R, Q = split(pbmc_pca)
    pool = QueryShare(R, Q, n_queries=10**9)  # a huge query: the sample is searched approximately
    assert not pool.sample.exact_for(10**9)
    pool.sample_counts = np.r_[np.full(95, 3), np.full(5, 30)]
    assert pool.narrow() == 5  # 3 sample cells for 95 % of rows, +1, at least MIN_FIRST_WIDTH
    pool.sample_counts = np.r_[np.full(90, 12), np.full(10, 0)]
    assert pool.narrow() == 13
    pool.sample_counts = np.full(100, 30)
    assert pool.narrow() == pool.k  # never wider than k
