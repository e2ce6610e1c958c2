"""scnumap.core.mapping: mapping score, label vote, anchored placement, kNN matrices.

The real-data tests work on pbmc68k_reduced's ``X_pca`` with scikit-learn's exact kNN
(no model fit): the score only reads distances in the representation space.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from scnumap.core.mapping import (
    DEFAULT_UNKNOWN_RATE,
    MIN_RADIUS_FRACTION,
    N_QUANTILES,
    CalibrationFormatError,
    MappingCalibration,
    anchored_placement,
    knn_distance_matrix,
    label_probabilities,
    neighbour_weights,
    vote,
)

K = 14  # neighbours per cell: sc.pp.neighbors' default 15, the cell itself excluded


def calibrate(R: np.ndarray, k: int = K):
    """Calibration of reference ``R`` from its exact kNN graph (self excluded by sklearn), and the index."""
    nn = NearestNeighbors(n_neighbors=k).fit(R)
    return MappingCalibration.from_distances(nn.kneighbors_graph(mode="distance")), nn


def score_of(calibration, nn, Y=None) -> np.ndarray:
    """Scores of query rows ``Y``; of the reference's own cells left out of their lists when ``Y`` is None."""
    d, i = nn.kneighbors(Y)
    return calibration.score(d.astype(np.float32), i)


def uniform_calibration(n_reference: int = 5, upper: float = 2.0) -> MappingCalibration:
    """A null statistic uniform on [0, upper] and unit radii: score(s) = min(1, 2 (1 - s / upper))."""
    return MappingCalibration(
        n_neighbors=3,
        metric="euclidean",
        radius=np.ones(n_reference, np.float32),
        null_quantiles=np.linspace(0.0, upper, N_QUANTILES),
        unknown_threshold=0.03,
    )


# --- the score --------------------------------------------------------------------------------


def test_statistic_is_mean_distance_over_mean_neighbour_radius():
    cal = MappingCalibration(3, "euclidean", np.array([1, 2, 3, 10], np.float32), np.linspace(0, 2, N_QUANTILES), 0.03)
    distances = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]], np.float32)
    indices = np.array([[0, 1, 2], [3, 3, 0]])
    np.testing.assert_allclose(cal.statistic(distances, indices), [2.0 / 2.0, 2.0 / 7.0])


@pytest.mark.parametrize(
    ("s", "expected"),
    [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (1.5, 0.5), (1.9, 0.1), (2.0, 0.0), (3.0, 0.0), (1e6, 0.0)],
)
def test_score_is_twice_the_conformal_p_value(s, expected):
    """Null uniform on [0, 2]: the share of reference statistics above s is 1 - s/2, so the score is min(1, 2 - s)."""
    cal = uniform_calibration()
    distances = np.full((1, 3), s, np.float32)
    score = cal.score(distances, np.array([[0, 1, 2]]))
    assert score.dtype == np.float32
    np.testing.assert_allclose(score, [expected], atol=1e-5)


def test_score_is_bounded_and_monotone_decreasing_in_the_statistic(pbmc_pca):
    cal, nn = calibrate(pbmc_pca)
    d, i = nn.kneighbors(pbmc_pca[:1])
    # statistics from 0 to 1.5 x the largest reference statistic, the same neighbours ever further away
    top = 1.5 * cal.null_quantiles[-1] / cal.statistic(d, i)[0]
    factors = np.linspace(0.0, top, 400)
    distances = (factors[:, None] * d).astype(np.float32)
    indices = np.repeat(i, factors.size, axis=0)
    statistic = cal.statistic(distances, indices)
    score = cal.score(distances, indices)
    assert np.all(np.diff(statistic) > 0)
    assert np.all((score >= 0) & (score <= 1))
    assert np.all(np.diff(score) <= 0)
    assert score[0] == 1.0
    assert score[-1] == 0.0
    assert np.unique(score).size > 50  # it falls gradually, not as a step


def test_reference_cells_left_out_score_high_in_calibrated_shares(pbmc_pca):
    """On the calibration's own cells the share below t is t/2 up to the 1,001 quantiles and one cell in n."""
    cal, nn = calibrate(pbmc_pca)
    score = score_of(cal, nn)
    n = pbmc_pca.shape[0]
    assert np.median(score) >= 0.99
    assert cal.unknown_threshold == pytest.approx(2 * DEFAULT_UNKNOWN_RATE)
    for t in (cal.unknown_threshold, 0.2, 0.5, 1.0):
        assert np.mean(score < t) == pytest.approx(t / 2, abs=2 / n + 1e-3), t


def test_held_out_cells_of_known_types_score_in_calibrated_shares(pbmc_pca):
    """Ten random 70/30 splits pooled (2,100 query cells). Measured shares below 0.03 / 0.2 / 0.5 / 1:
    0.020 / 0.102 / 0.261 / 0.524 (expected 0.015 / 0.1 / 0.25 / 0.5). The tolerances allow about
    three times the split-to-split spread of a pooled share; a score of p instead of 2p would
    double the shares and fail."""
    pooled = []
    for seed in range(10):
        order = np.random.default_rng(seed).permutation(pbmc_pca.shape[0])
        ref, query = order[:490], order[490:]
        cal, nn = calibrate(pbmc_pca[ref])
        pooled.append(score_of(cal, nn, pbmc_pca[query]))
    score = np.concatenate(pooled)
    assert np.median(score) >= 0.9
    for t, tolerance in ((0.03, 0.015), (0.2, 0.04), (0.5, 0.05), (1.0, 0.06)):
        assert np.mean(score < t) == pytest.approx(t / 2, abs=tolerance), t


def test_points_far_from_all_reference_cells_score_zero(pbmc_pca):
    cal, nn = calibrate(pbmc_pca)
    far = pbmc_pca + 1000.0
    assert np.all(score_of(cal, nn, far) == 0.0)
    halfway = pbmc_pca * 3.0  # spread out: most cells are now unlike reference cells
    assert np.median(score_of(cal, nn, halfway)) < 0.1


def test_cell_type_missing_from_the_reference_scores_lower(pbmc, pbmc_pca):
    """CD19+ B cells removed from the reference: AUROC of -score, B cells against held-out cells of
    the kept types, 0.949 here (0.92-0.97 over ten splits; CD56+ NK 0.93-0.96). 'CD14+ Monocyte'
    is no test: in pbmc68k_reduced it overlaps the 'Dendritic' cells (AUROC 0.46-0.55)."""
    removed = pbmc.obs["bulk_labels"].to_numpy() == "CD19+ B"
    kept = np.flatnonzero(~removed)
    np.random.default_rng(0).shuffle(kept)
    n = int(0.7 * kept.size)
    cal, nn = calibrate(pbmc_pca[kept[:n]])
    known = score_of(cal, nn, pbmc_pca[kept[n:]])
    novel = score_of(cal, nn, pbmc_pca[removed])
    y = np.r_[np.zeros(known.size), np.ones(novel.size)]
    assert roc_auc_score(y, -np.r_[known, novel]) >= 0.85
    assert np.median(novel) < 0.25 < np.median(known)  # measured 0.06 and 1.0
    threshold = cal.unknown_threshold
    assert np.mean(novel < threshold) > 5 * np.mean(known < threshold)  # measured 0.24 and 0.005


# --- the calibration ------------------------------------------------------------------------


def line_graph():
    """Points 0, 1, 3, 7 on a line, each with its 2 nearest others (self excluded)."""
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    return NearestNeighbors(n_neighbors=2).fit(points).kneighbors_graph(mode="distance")


def test_from_distances_by_hand():
    cal = MappingCalibration.from_distances(line_graph(), metric="l2")
    # mean distance to the 2 neighbours: 0 -> (1, 3), 1 -> (0, 3), 3 -> (1, 0), 7 -> (3, 1)
    np.testing.assert_allclose(cal.radius, [2.0, 1.5, 2.5, 5.0])
    assert cal.radius.dtype == np.float32
    # statistic: own radius over the mean radius of the neighbours
    statistic = np.array([2.0 / 2.0, 1.5 / 2.25, 2.5 / 1.75, 5.0 / 2.0])
    assert cal.null_quantiles.shape == (N_QUANTILES,)
    np.testing.assert_allclose(cal.null_quantiles, np.quantile(statistic, np.linspace(0, 1, N_QUANTILES)))
    assert cal.n_neighbors == 2
    assert cal.metric == "euclidean"
    assert cal.unknown_threshold == pytest.approx(0.03)
    assert MappingCalibration.from_distances(line_graph(), unknown_rate=0.1).unknown_threshold == pytest.approx(0.2)


def test_duplicated_cells_get_a_floored_radius():
    points = np.array([[0.0], [0.0], [0.0], [1.0], [3.0], [6.0]])
    D = NearestNeighbors(n_neighbors=2).fit(points).kneighbors_graph(mode="distance")
    cal = MappingCalibration.from_distances(D)
    raw = np.asarray(D.sum(axis=1)).ravel() / 2
    assert np.sum(raw == 0) >= 1  # the test needs a zero radius
    floor = MIN_RADIUS_FRACTION * np.median(raw[raw > 0])
    np.testing.assert_allclose(cal.radius, np.maximum(raw, floor), rtol=1e-6)
    assert np.all(np.isfinite(cal.null_quantiles))
    MappingCalibration.from_dict(cal.to_dict(), n_reference=points.shape[0])  # still valid


def test_from_distances_errors():
    with pytest.raises(ValueError, match=r"square \(n_cells, n_cells\)"):
        MappingCalibration.from_distances(sp.csr_matrix((3, 4)))
    with pytest.raises(ValueError, match="no stored neighbour"):
        MappingCalibration.from_distances(sp.csr_matrix((3, 3)))
    with pytest.raises(ValueError, match="`metric` must be one of"):
        MappingCalibration.from_distances(line_graph(), metric="foo")


def test_dict_round_trip_is_exact(pbmc_pca):
    cal, _ = calibrate(pbmc_pca)
    back = MappingCalibration.from_dict(cal.to_dict(), n_reference=pbmc_pca.shape[0])
    assert (back.n_neighbors, back.metric, back.unknown_threshold) == (K, "euclidean", cal.unknown_threshold)
    np.testing.assert_array_equal(back.radius, cal.radius)
    np.testing.assert_array_equal(back.null_quantiles, cal.null_quantiles)
    entry = cal.to_dict()
    entry["metric"] = b"euclidean"  # h5py may hand strings back as bytes
    assert MappingCalibration.from_dict(entry).metric == "euclidean"


def _tamper(entry: dict, name: str) -> dict:
    entry = dict(entry)
    if name == "radius length":
        entry["radius"] = entry["radius"][:-1]
    elif name == "radius negative":
        entry["radius"] = -entry["radius"]
    elif name == "radius int":
        entry["radius"] = np.ones(entry["radius"].shape, np.int64)
    elif name == "quantiles NaN":
        entry["null_quantiles"] = entry["null_quantiles"].copy()
        entry["null_quantiles"][500] = np.nan
    elif name == "quantiles decreasing":
        entry["null_quantiles"] = entry["null_quantiles"][::-1].copy()
    elif name == "quantiles length":
        entry["null_quantiles"] = entry["null_quantiles"][:-1]
    elif name == "extra key":
        entry["extra"] = 1
    elif name == "missing key":
        del entry["radius"]
    elif name == "threshold 2":
        entry["unknown_threshold"] = np.float64(2.0)
    elif name == "threshold NaN":
        entry["unknown_threshold"] = np.float64(np.nan)
    elif name == "metric foo":
        entry["metric"] = "foo"
    elif name == "metric number":
        entry["metric"] = 3
    elif name == "n_neighbors 0":
        entry["n_neighbors"] = np.int64(0)
    elif name == "n_neighbors fraction":
        entry["n_neighbors"] = 2.5
    else:  # pragma: no cover
        raise AssertionError(name)
    return entry


#: Each tampering and the entry the error must name.
TAMPERED = {
    "radius length": r"`mapping/radius` has 489 values; the reference has 490 cells",
    "radius negative": r"`mapping/radius` must be a 1-D array of positive finite floats",
    "radius int": r"`mapping/radius` must be a 1-D array of positive finite floats",
    "quantiles NaN": r"`mapping/null_quantiles` must be 1001 finite non-decreasing floats",
    "quantiles decreasing": r"`mapping/null_quantiles` must be 1001 finite non-decreasing floats",
    "quantiles length": r"`mapping/null_quantiles` must be 1001 .* got shape \(1000,\)",
    "extra key": r"`mapping` has entries \['extra', 'metric'.*expected \['metric'",
    "missing key": r"`mapping` has entries \['metric', 'n_neighbors', 'null_quantiles', 'unknown_threshold'\]",
    "threshold 2": r"`mapping/unknown_threshold` must lie in \[0, 1\], got 2\.0",
    "threshold NaN": r"`mapping/unknown_threshold` must be a finite number",
    "metric foo": r"`mapping/metric`: `metric` must be one of .* got 'foo'",
    "metric number": r"`mapping/metric` must be a string, got int",
    "n_neighbors 0": r"`mapping/n_neighbors` must be an integer >= 1, got 0",
    "n_neighbors fraction": r"`mapping/n_neighbors` must be an integer >= 1, got 2\.5",
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_from_dict_names_the_bad_entry(name):
    R = np.random.default_rng(0).normal(size=(490, 5)).astype(np.float32)
    entry = _tamper(calibrate(R)[0].to_dict(), name)
    with pytest.raises(CalibrationFormatError, match=TAMPERED[name]):
        MappingCalibration.from_dict(entry, n_reference=490)


def test_from_dict_rejects_a_non_dict():
    assert issubclass(CalibrationFormatError, ValueError)
    with pytest.raises(ValueError, match=r"`uns/x` must be a dict of arrays, got list"):
        MappingCalibration.from_dict([1, 2], where="uns/x")


# --- weights, probabilities, vote -----------------------------------------------------------


def test_neighbour_weights_formula():
    radius = np.array([1.0, 3.0, 2.0], np.float32)
    distances = np.array([[1.0, 2.0, 4.0], [0.5, 0.5, 0.5]], np.float32)
    indices = np.array([[0, 1, 2], [0, 1, 2]])
    w = neighbour_weights(distances, indices, radius)
    raw = np.exp(-np.array([0.0, 1.0, 3.0]) / 2.0)  # scale: mean radius of the neighbours, 2
    np.testing.assert_allclose(w[0], raw / raw.sum(), rtol=1e-6)
    np.testing.assert_allclose(w[1], [1 / 3] * 3, rtol=1e-6)
    assert w.dtype == np.float32


def test_label_probabilities_weighted_shares_and_unlabelled_neighbours():
    codes = np.array([0, 1, -1, 1, -1, -1])  # cells 2, 4, 5 have no label
    indices = np.array([[0, 1, 2, 3], [2, 4, 5, 2], [4, 1, 3, 0]])
    weights = np.array([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]], np.float32)
    P = label_probabilities(indices, weights, codes, 3)
    assert P.shape == (3, 3)
    assert P.dtype == np.float32
    np.testing.assert_allclose(P[0], [0.4 / 0.8, 0.4 / 0.8, 0.0], rtol=1e-6)  # the unlabelled 0.2 does not vote
    np.testing.assert_array_equal(P[1], [0, 0, 0])  # only unlabelled neighbours
    np.testing.assert_allclose(P[2], [0.1 / 0.6, 0.5 / 0.6, 0.0], rtol=1e-6)
    best, confidence = vote(P, indices, codes)
    assert best.dtype == np.int64
    assert best[1] == -1
    assert confidence[1] == 0.0
    assert best[2] == 1
    assert confidence[2] == pytest.approx(5 / 6)


@pytest.mark.parametrize(("nearest", "other"), [(1, 0), (0, 1)])
def test_ties_go_to_the_nearest_neighbour_not_the_first_class(nearest, other):
    """Two neighbours of classes a (code 0) and b (code 1) at the same distance: equal weights."""
    codes = np.array([nearest, other])
    indices = np.array([[0, 1]])
    weights = neighbour_weights(np.array([[1.0, 1.0]], np.float32), indices, np.ones(2, np.float32))
    P = label_probabilities(indices, weights, codes, 2)
    np.testing.assert_allclose(P, [[0.5, 0.5]])
    best, confidence = vote(P, indices, codes)
    assert best[0] == nearest
    assert confidence[0] == pytest.approx(0.5)


def test_ties_skip_unlabelled_and_untied_nearest_neighbours():
    # classes a=0, b=1, c=2; neighbour order: unlabelled, c (not tied), b, a, a, b
    codes = np.array([-1, 2, 1, 0, 0, 1])
    indices = np.array([[0, 1, 2, 3, 4, 5]])
    weights = np.array([[0.3, 0.1, 0.15, 0.15, 0.15, 0.15]], np.float32)
    P = label_probabilities(indices, weights, codes, 3)
    np.testing.assert_allclose(P, [[0.3 / 0.7, 0.3 / 0.7, 0.1 / 0.7]], rtol=1e-6)
    best, _ = vote(P, indices, codes)
    assert best[0] == 1  # b: the nearest labelled neighbour among the tied classes


def test_majority_beats_the_nearest_neighbour():
    codes = np.array([0, 1, 1])
    indices = np.array([[0, 1, 2]])
    weights = np.array([[0.4, 0.3, 0.3]], np.float32)
    best, confidence = vote(label_probabilities(indices, weights, codes, 2), indices, codes)
    assert best[0] == 1
    assert confidence[0] == pytest.approx(0.6)


# --- anchored placement ---------------------------------------------------------------------


def test_anchored_placement_moves_only_far_cells_onto_the_circle():
    reference = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]], np.float32)
    indices = np.array([[0, 1, 2, 3]] * 3)
    weights = np.full((3, 4), 0.25, np.float32)
    # centre (1, 1); every neighbour at distance sqrt(2), so the spread is sqrt(2)
    embedding = np.array([[1.5, 1.0], [10.0, 1.0], [1.0, -5.0]], np.float32)
    placed, moved = anchored_placement(embedding, indices, weights, reference, anchor=2.0)
    np.testing.assert_array_equal(moved, [False, True, True])
    np.testing.assert_array_equal(placed[0], embedding[0])  # within 2 sqrt(2) of the centre: unchanged
    limit = 2.0 * np.sqrt(2.0)
    np.testing.assert_allclose(placed[1], [1.0 + limit, 1.0], rtol=1e-6)  # onto the circle, toward the centre
    np.testing.assert_allclose(placed[2], [1.0, 1.0 - limit], rtol=1e-6)
    assert placed.dtype == np.float32
    _, never = anchored_placement(embedding, indices, weights, reference, anchor=np.inf)
    assert not never.any()


def test_anchored_placement_uses_the_weighted_centre_and_spread():
    reference = np.array([[0.0, 0.0], [4.0, 0.0]], np.float32)
    indices = np.array([[0, 1]])
    weights = np.array([[0.75, 0.25]], np.float32)
    # centre (1, 0); spread sqrt(0.75 * 1 + 0.25 * 9) = sqrt(3)
    placed, moved = anchored_placement(np.array([[1.0, 10.0]], np.float32), indices, weights, reference, anchor=1.0)
    assert moved[0]
    np.testing.assert_allclose(placed[0], [1.0, np.sqrt(3.0)], rtol=1e-6)


# --- kNN distance matrix --------------------------------------------------------------------


def test_knn_distance_matrix_drops_self():
    points = np.random.default_rng(0).normal(size=(30, 3))
    d, i = NearestNeighbors(n_neighbors=5).fit(points).kneighbors(points)
    D = knn_distance_matrix(i, d)
    assert D.shape == (30, 30)
    assert np.all(np.diff(D.indptr) == 4)
    assert D.diagonal().max() == 0
    assert all(j not in D[j].indices for j in range(30))
    expected = NearestNeighbors(n_neighbors=4).fit(points).kneighbors_graph(mode="distance")
    np.testing.assert_allclose(D.toarray(), expected.toarray())
    kept = knn_distance_matrix(i, d, exclude_self=False)
    assert np.all(np.diff(kept.indptr) == 5)


def test_knn_distance_matrix_with_duplicates_keeps_k_minus_one():
    # cells 0, 1, 2 identical; cell 0 is listed second in its own row, cell 2 not at all
    indices = np.array([[1, 0, 3], [0, 1, 2], [0, 1, 3], [3, 2, 1]])
    distances = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 2.0, 2.0]])
    D = knn_distance_matrix(indices, distances)
    assert np.all(np.diff(D.indptr) == 2)  # explicit zero distances are kept as neighbours
    assert sorted(D[0].indices) == [1, 3]  # its own entry dropped, the duplicate kept
    assert sorted(D[1].indices) == [0, 2]
    assert sorted(D[2].indices) == [0, 1]  # own index missing: the last neighbour dropped
    assert sorted(D[3].indices) == [1, 2]
    np.testing.assert_array_equal(D[0].toarray(), [[0, 0, 0, 2]])
    cal = MappingCalibration.from_distances(D)
    assert cal.n_neighbors == 2
