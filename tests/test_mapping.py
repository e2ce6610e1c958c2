"""scnumap.core.mapping: mapping score, label vote, anchored and label-consistent placement, kNN matrices.

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
    CalibrationFormatError,
    MappingCalibration,
    anchored_placement,
    conformal_p,
    fisher,
    knn_distance_matrix,
    label_consistent_placement,
    label_probabilities,
    neighbour_weights,
    typical_cells,
    vote,
)
from scnumap.core.projection import EmbeddingIndex

K = 14  # neighbours per cell: sc.pp.neighbors' default 15, the cell itself excluded


def calibrate(R: np.ndarray, k: int = K):
    """Calibration of reference ``R`` from its exact kNN graph (self excluded by sklearn), and the index."""
    nn = NearestNeighbors(n_neighbors=k).fit(R)
    return MappingCalibration.from_distances(nn.kneighbors_graph(mode="distance")), nn


def statistics_of(calibration, nn, Y=None) -> np.ndarray:
    """Statistics of query rows ``Y``; of the reference's own cells left out of their lists when ``Y`` is None."""
    d, i = nn.kneighbors(Y)
    return calibration.statistics(d.astype(np.float32), i)


def score_of(calibration, nn, Y=None) -> np.ndarray:
    """Distance-only scores (no query share) of ``Y`` (see :func:`statistics_of`)."""
    return calibration.score(statistics_of(calibration, nn, Y))


# --- p-values and the score -------------------------------------------------------------------


def test_statistics_are_the_mean_distance_and_its_ratio_to_the_neighbour_radii():
    cal = MappingCalibration(3, "euclidean", np.array([1, 2, 3, 10], np.float32), np.ones(4, np.float32), 0.015)
    distances = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]], np.float32)
    indices = np.array([[0, 1, 2], [3, 3, 0]])
    stats = cal.statistics(distances, indices)
    assert stats.dtype == np.float32
    np.testing.assert_allclose(stats, [[2.0, 2.0 / 2.0], [2.0, 2.0 / 7.0]], rtol=1e-6)


def test_conformal_p_values_by_hand():
    null = np.array([4.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(conformal_p([0.0, 2.5, 4.0, 5.0], null), [5 / 5, 3 / 5, 2 / 5, 1 / 5])
    # values of the null itself: each one counted once, as the 1
    np.testing.assert_allclose(conformal_p(null, null, own=True), [1 / 4, 4 / 4, 2 / 4, 3 / 4])
    np.testing.assert_allclose(fisher([np.array([0.5, 1.0]), np.array([0.25, 1.0])]), [np.log(8.0), 0.0])


def test_score_is_the_conformal_p_value_of_fishers_statistic():
    """By hand on four reference cells: each query row's p-values, their Fisher sum, its rank."""
    radius = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    ratio = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    cal = MappingCalibration(1, "euclidean", radius, ratio, 0.015)
    stats = np.array([[0.5, 0.25], [2.5, 1.25], [9.0, 9.0]], np.float32)
    null_T = -np.log(np.array([1.0, 0.75, 0.5, 0.25])) * 2  # each reference cell: the same rank in both
    query_T = -np.log([5 / 5, 3 / 5, 1 / 5]) * 2
    expected = [(1 + np.sum(null_T >= t)) / 5 for t in query_T]
    np.testing.assert_allclose(cal.score(stats), expected, rtol=1e-6)
    # with a share: a third p-value, and the null over the reference rows given
    share, share_null = np.array([0.1, 0.9, 0.1]), np.array([0.2, 0.4, 0.6, 0.8])
    p_share = conformal_p(share, share_null)
    T = query_T + -np.log(p_share)
    T0 = null_T - np.log(conformal_p(share_null, share_null, own=True))
    expected = [(1 + np.sum(T0 >= t)) / 5 for t in T]
    np.testing.assert_allclose(cal.score(stats, share, share_null, np.arange(4)), expected, rtol=1e-6)


def test_score_is_bounded_and_monotone_decreasing_in_the_distance(pbmc_pca):
    cal, nn = calibrate(pbmc_pca)
    d, i = nn.kneighbors(pbmc_pca[:1])
    # the same neighbours ever further away, up to 3x the largest reference radius
    factors = np.linspace(0.0, 3.0 * cal.radius.max() / d.mean(), 400)
    stats = cal.statistics((factors[:, None] * d).astype(np.float32), np.repeat(i, factors.size, axis=0))
    score = cal.score(stats)
    n = pbmc_pca.shape[0]
    assert np.all(np.diff(stats, axis=0) > 0)
    assert np.all((score > 0) & (score <= 1))
    assert np.all(np.diff(score) <= 0)
    assert score[0] == 1.0
    assert score[-1] == pytest.approx(1 / (n + 1))  # beyond every reference cell: the smallest p-value
    assert np.unique(score).size > 50  # it falls gradually, not as a step


def test_reference_cells_left_out_score_in_calibrated_shares(pbmc_pca):
    """On the calibration's own cells the share below t is t, up to a cell or two in n."""
    cal, nn = calibrate(pbmc_pca)
    score = score_of(cal, nn)
    n = pbmc_pca.shape[0]
    assert cal.unknown_threshold == pytest.approx(DEFAULT_UNKNOWN_RATE)
    for t in (cal.unknown_threshold, 0.1, 0.5, 1.0):
        assert np.mean(score < t) == pytest.approx(t, abs=2 / n + 1e-3), t


def test_held_out_cells_of_known_types_score_in_calibrated_shares(pbmc_pca):
    """Ten random 70/30 splits pooled (2,100 query cells). Measured shares below 0.015 / 0.1 / 0.5:
    0.014 / 0.099 / 0.524 (expected 0.015 / 0.1 / 0.5); held-out cells of a PCA fitted without them
    look a little more typical. Tolerances: about three times the split-to-split spread."""
    pooled = []
    for seed in range(10):
        order = np.random.default_rng(seed).permutation(pbmc_pca.shape[0])
        ref, query = order[:490], order[490:]
        cal, nn = calibrate(pbmc_pca[ref])
        pooled.append(score_of(cal, nn, pbmc_pca[query]))
    score = np.concatenate(pooled)
    for t, tolerance in ((0.015, 0.012), (0.1, 0.04), (0.5, 0.05)):
        assert np.mean(score < t) == pytest.approx(t, abs=tolerance), t


def test_points_far_from_all_reference_cells_get_the_smallest_score(pbmc_pca):
    cal, nn = calibrate(pbmc_pca)
    n = pbmc_pca.shape[0]
    far = pbmc_pca + 1000.0
    np.testing.assert_allclose(score_of(cal, nn, far), 1 / (n + 1))
    halfway = pbmc_pca * 3.0  # spread out: most cells are now unlike reference cells
    assert np.median(score_of(cal, nn, halfway)) < 0.05


def test_cell_type_missing_from_the_reference_scores_lower(pbmc, pbmc_pca):
    """CD19+ B cells removed from the reference, distance statistics only: AUROC of -score, B cells
    against held-out cells of the kept types, 0.939 here."""
    removed = pbmc.obs["bulk_labels"].to_numpy() == "CD19+ B"
    kept = np.flatnonzero(~removed)
    np.random.default_rng(0).shuffle(kept)
    n = int(0.7 * kept.size)
    cal, nn = calibrate(pbmc_pca[kept[:n]])
    known = score_of(cal, nn, pbmc_pca[kept[n:]])
    novel = score_of(cal, nn, pbmc_pca[removed])
    y = np.r_[np.zeros(known.size), np.ones(novel.size)]
    assert roc_auc_score(y, -np.r_[known, novel]) >= 0.85
    assert np.median(novel) < 0.15 < np.median(known)  # measured 0.057 and 0.56
    threshold = cal.unknown_threshold
    assert np.mean(novel < threshold) > 5 * np.mean(known < threshold)  # measured 0.19 and 0.011


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
    # ratio: own radius over the mean radius of the neighbours
    np.testing.assert_allclose(cal.ratio, [2.0 / 2.0, 1.5 / 2.25, 2.5 / 1.75, 5.0 / 2.0], rtol=1e-6)
    assert cal.ratio.dtype == np.float32
    np.testing.assert_array_equal(cal.null(), np.stack([cal.radius, cal.ratio], axis=1))
    assert cal.n_neighbors == 2
    assert cal.metric == "euclidean"
    assert cal.unknown_threshold == pytest.approx(0.015)
    assert MappingCalibration.from_distances(line_graph(), unknown_rate=0.1).unknown_threshold == pytest.approx(0.1)


def test_a_stored_self_entry_is_dropped():
    """Scanpy's graphs of 8,192 cells or more (Euclidean) hold each cell's own entry as an explicit 0
    (measured: 16 entries per row at n_neighbors=15, 14 below); the calibration must equal
    that of the graph without it, else reference cells look closer than new cells can be."""
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    D = NearestNeighbors(n_neighbors=3).fit(points).kneighbors_graph(points, mode="distance")  # self included
    assert np.all(D.diagonal() == 0)
    D = sp.csr_matrix((D.data, D.indices, D.indptr), shape=D.shape)  # the zeros stored explicitly
    assert D.nnz == 12
    with_self = MappingCalibration.from_distances(D)
    plain = MappingCalibration.from_distances(line_graph())
    assert with_self.n_neighbors == plain.n_neighbors == 2
    np.testing.assert_array_equal(with_self.radius, plain.radius)
    np.testing.assert_array_equal(with_self.ratio, plain.ratio)


@pytest.mark.slow
def test_held_out_cells_score_calibrated_on_a_large_scanpy_graph():
    """9,000 cells of a 50-D mixture, sc.pp.neighbors (its approximate path from 8,192 cells,
    which stores each cell's own entry):
    held-out cells of the same mixture score below 0.015 at about the calibrated rate
    (measured 0.112 with the self entry counted, a 0.94× radius)."""
    import anndata
    import scanpy as sc

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(5, 50))
    X = (centres[rng.integers(0, 5, 11000)] + rng.normal(size=(11000, 50))).astype(np.float32)
    ref = anndata.AnnData(X[:9000])
    sc.pp.neighbors(ref, use_rep="X", n_neighbors=15, random_state=0)
    assert np.diff(ref.obsp["distances"].indptr).max() == 16  # the case this test is about
    cal = MappingCalibration.from_distances(ref.obsp["distances"])
    assert cal.n_neighbors == 15
    nn = NearestNeighbors(n_neighbors=cal.n_neighbors).fit(X[:9000])
    d, i = nn.kneighbors(X[9000:])
    score = cal.score(cal.statistics(d.astype(np.float32), i))
    assert np.mean(score < 0.015) < 0.04


def test_duplicated_cells_get_a_floored_radius():
    points = np.array([[0.0], [0.0], [0.0], [1.0], [3.0], [6.0]])
    D = NearestNeighbors(n_neighbors=2).fit(points).kneighbors_graph(mode="distance")
    cal = MappingCalibration.from_distances(D)
    raw = np.asarray(D.sum(axis=1)).ravel() / 2
    assert np.sum(raw == 0) >= 1  # the test needs a zero radius
    floor = MIN_RADIUS_FRACTION * np.median(raw[raw > 0])
    np.testing.assert_allclose(cal.radius, np.maximum(raw, floor), rtol=1e-6)
    assert np.all(np.isfinite(cal.ratio))
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
    np.testing.assert_array_equal(back.ratio, cal.ratio)
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
    elif name == "ratio NaN":
        entry["ratio"] = entry["ratio"].copy()
        entry["ratio"][100] = np.nan
    elif name == "ratio zero":
        entry["ratio"] = np.zeros_like(entry["ratio"])
    elif name == "ratio length":
        entry["ratio"] = entry["ratio"][:-1]
    elif name == "ratio 2-D":
        entry["ratio"] = entry["ratio"][:, None]
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
    "ratio NaN": r"`mapping/ratio` must be a 1-D array of positive finite floats",
    "ratio zero": r"`mapping/ratio` must be a 1-D array of positive finite floats",
    "ratio length": r"`mapping/ratio` has 489 values; the reference has 490 cells",
    "ratio 2-D": r"`mapping/ratio` must be a 1-D array of positive finite floats",
    "extra key": r"`mapping` has entries \['extra', 'metric'.*expected \['metric'",
    "missing key": r"`mapping` has entries \['metric', 'n_neighbors', 'ratio', 'unknown_threshold'\]",
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


# --- label-consistent placement -------------------------------------------------------------


def test_label_consistent_placement_moves_only_cells_among_another_type():
    # type 0 around (0, 0), type 1 around (10, 0), five cells each
    offsets = np.array([[0, 0], [0.5, 0], [-0.5, 0], [0, 0.5], [0, -0.5]], np.float32)
    reference = np.concatenate([offsets, offsets + np.array([10.0, 0.0], np.float32)])
    codes = np.array([0] * 5 + [1] * 5)
    indices = np.array([[0, 1, 5, 6]] * 4)  # each cell's nearest reference cells: two of each type
    weights = np.array([[0.4, 0.2, 0.3, 0.1]] * 4, np.float32)
    embedding = np.array([[10.0, 0.2], [0.1, 0.1], [10.0, 0.2], [10.0, 0.2]], np.float32)
    label = np.array([0, 0, 0, -1])
    keep = np.array([False, False, True, False])
    placed, moved = label_consistent_placement(
        embedding, indices, weights, codes, label, reference, EmbeddingIndex(reference, 3), 3, keep
    )
    np.testing.assert_array_equal(moved, [True, False, False, False])
    # pulled onto the circle of its type-0 neighbours' spread around their weighted mean:
    # weights 2/3, 1/3 on (0, 0) and (0.5, 0): mean (1/6, 0), spread sqrt(1/18)
    centre, spread = np.array([1 / 6, 0.0]), np.sqrt(1 / 18)
    offset = embedding[0] - centre
    np.testing.assert_allclose(placed[0], centre + spread * offset / np.linalg.norm(offset), atol=1e-6)
    np.testing.assert_array_equal(placed[1:], embedding[1:])  # already among type 0; kept; no label
    assert placed.dtype == np.float32


def test_label_consistent_placement_falls_back_to_a_typical_neighbour_of_the_label():
    # type 0 in a group at x = -10 and a pair at x = +10, type 1 in between: the mean of the
    # cell's type-0 neighbours lies among type 1, and the pair at +10 sits among type 1 too
    reference = np.array(
        [[-10, 0], [-10, 1], [-11, 0], [-10, -1], [10, 0], [10, 1], [0, 0], [0, 1], [0, -1], [1, 0], [1, 1]],
        np.float32,
    )
    codes = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    index = EmbeddingIndex(reference, 3)
    typical = typical_cells(codes, index.own_neighbors())
    np.testing.assert_array_equal(typical, [True] * 4 + [False] * 2 + [True] * 5)
    indices = np.array([[4, 0, 6]])  # nearest first: the atypical type-0 cell at (10, 0)
    weights = np.array([[0.4, 0.4, 0.2]], np.float32)
    args = (np.array([[0.5, 0.5]], np.float32), indices, weights, codes, np.array([0]), reference, index, 3)
    placed, moved = label_consistent_placement(*args, typical=typical)
    assert moved[0]
    np.testing.assert_array_equal(placed[0], reference[0])  # the nearest typical type-0 neighbour
    placed, _ = label_consistent_placement(*args)  # every cell typical: the nearest of the type
    np.testing.assert_array_equal(placed[0], reference[4])


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
