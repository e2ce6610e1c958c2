"""scnumap.tl.project's mapping outputs: score, Unknown, confidence, probabilities, placement.

One quick reference fit for the module. The mapping score and the label vote run in the
reference's PCA space and do not depend on how well the network is trained.
"""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from settings import TINY
from sklearn.neighbors import NearestNeighbors

import scnumap
from scnumap.core.mapping import MappingCalibration, neighbour_weights
from scnumap.core.model_io import FORMAT_VERSION, ModelFormatError
from scnumap.core.query_share import MIN_QUERY_CELLS, QueryShare
from scnumap.core.recentring import reference_offsets

WHERE = r"`uns\['numap'\]\['model'\]/mapping"


def project(*args, **kwargs):
    """``tl.project`` without the query correction (``correct=False``) unless asked: the tests
    below compare with a by-hand kNN of the query as measured; the correction is tested in
    test_integrate.py and test_correction.py, and the mapping score ignores it."""
    kwargs.setdefault("correct", False)
    return scnumap.tl.project(*args, **kwargs)


@pytest.fixture(scope="module")
def ref_query(pbmc):
    """pbmc68k_reduced split 490/210; reference PCA by scanpy, a Gaussian kNN graph, a quick tl.numap.

    ``method='gauss'`` because the UMAP connectivities compile for ~25 s per process; the
    calibration reads only ``obsp['distances']``, the same exact kNN distances either way.
    """
    order = np.random.default_rng(0).permutation(pbmc.n_obs)
    ref, query = pbmc[order[:490]].copy(), pbmc[order[490:]].copy()
    for ad in (ref, query):
        del ad.obsm["X_pca"], ad.uns["neighbors"], ad.obsp["connectivities"], ad.obsp["distances"]
        ad.X = np.nan_to_num(ad.X)
    sc.pp.pca(ref, n_comps=30, random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0, method="gauss")
    scnumap.tl.numap(ref, random_state=0, **TINY)  # the outputs tested here read the PCA space, not the map
    return ref, query


@pytest.fixture(scope="module")
def projected(ref_query):
    ref, query = ref_query
    return project(query, ref, obs=["bulk_labels", "louvain"], copy=True)


def query_pca(ref, query):
    return ((query.X - ref.X.mean(axis=0)) @ ref.varm["PCs"]).astype(np.float32)


def query_knn(ref, query, k):
    """Exact kNN of the query among the reference cells in the reference's PCA space (sklearn)."""
    nn = NearestNeighbors(n_neighbors=k).fit(ref.obsm["X_pca"])
    d, i = nn.kneighbors(query_pca(ref, query))
    return d.astype(np.float32), i


def expected_score(ref, query) -> np.ndarray:
    """The mapping score by hand: stored calibration, exact kNN, the query share over the whole query."""
    cal = stored(ref)
    stats = cal.statistics(*query_knn(ref, query, cal.n_neighbors))
    if query.n_obs < MIN_QUERY_CELLS:
        return cal.score(stats)
    Y = query_pca(ref, query)
    pool = QueryShare(ref.obsm["X_pca"], Y)
    share = pool.share(Y, np.arange(query.n_obs))
    assert pool.mixes(share)
    return cal.score(stats, share - pool.shift(share), pool.null, pool.null_rows)


def stored(ref) -> MappingCalibration:
    return MappingCalibration.from_dict(ref.uns["numap"]["model"]["mapping"], n_reference=ref.n_obs)


def unknown(out, col="bulk_labels", suffix="numap") -> np.ndarray:
    return (out.obs[f"{col}_{suffix}"] == "Unknown").to_numpy()


# --- what tl.numap stores and tl.project writes -----------------------------------------------


def test_numap_stores_the_calibration_of_its_graph(ref_query):
    ref, _ = ref_query
    assert int(ref.uns["numap"]["model"]["format_version"]) == FORMAT_VERSION
    cal = stored(ref)
    expected = MappingCalibration.from_distances(ref.obsp["distances"])
    assert (cal.n_neighbors, cal.metric, cal.unknown_threshold) == (14, "euclidean", pytest.approx(0.015))
    np.testing.assert_allclose(cal.radius, expected.radius, rtol=1e-6)
    np.testing.assert_allclose(cal.ratio, expected.ratio, rtol=1e-6)


def test_score_is_the_calibrated_score_of_the_query_neighbours(ref_query, projected):
    ref, query = ref_query
    score = projected.obs["numap_mapping_score"].to_numpy()
    assert score.dtype == np.float32
    assert np.all((score >= 0) & (score <= 1))
    np.testing.assert_allclose(score, expected_score(ref, query), atol=1e-4)
    assert 0.05 < np.mean(score < 0.5) < 0.95  # a spread of scores, so the threshold tests below bite
    assert np.mean(score < 0.015) <= 0.05


def test_a_small_query_is_scored_on_distances_alone(ref_query, projected):
    ref, query = ref_query
    small = query[: MIN_QUERY_CELLS - 1].copy()
    out = project(small, ref, copy=True)
    cal = stored(ref)
    by_hand = cal.score(cal.statistics(*query_knn(ref, small, cal.n_neighbors)))
    np.testing.assert_allclose(out.obs["numap_mapping_score"], by_hand, atol=1e-6)
    np.testing.assert_allclose(out.obs["numap_mapping_score"], expected_score(ref, small), atol=1e-6)


def test_the_default_correction_changes_labels_not_the_score(ref_query, projected):
    ref, query = ref_query
    out = scnumap.tl.project(query, ref, obs=["bulk_labels", "louvain"], copy=True)
    np.testing.assert_array_equal(out.obs["numap_mapping_score"], projected.obs["numap_mapping_score"])
    key = "bulk_labels_numap_probabilities"
    assert not np.allclose(out.obsm[key], projected.obsm[key])


def test_a_query_off_the_reference_is_scored_on_distances_alone(ref_query):
    """Shifted as a whole (a strong batch effect), the query share cannot tell a missing type from
    the shift: the score falls back to the distances."""
    ref, query = ref_query
    shifted = query.copy()
    shifted.X = shifted.X + 3.0 * ref.X.std(axis=0)
    out = project(shifted, ref, copy=True)
    cal = stored(ref)
    by_hand = cal.score(cal.statistics(*query_knn(ref, shifted, cal.n_neighbors)))
    np.testing.assert_allclose(out.obs["numap_mapping_score"], by_hand, atol=1e-6)


def test_reference_projected_onto_itself_scores_high(ref_query):
    ref, _ = ref_query
    out = project(ref.copy(), ref, obs="bulk_labels", copy=True)
    score = out.obs["numap_mapping_score"].to_numpy()
    assert np.median(score) >= 0.5
    assert np.mean(score < 0.015) <= 0.015  # each cell is its own nearest neighbour: more typical than left out
    assert np.mean(out.obs["bulk_labels_numap"].astype(str) == ref.obs["bulk_labels"].astype(str)) >= 0.8


def test_outputs_keys_types_and_probabilities(ref_query, projected):
    ref, query = ref_query
    out = projected
    for col in ("bulk_labels", "louvain"):
        categories = [str(c) for c in ref.obs[col].cat.categories]
        labels = out.obs[f"{col}_numap"]
        assert list(labels.cat.categories) == [*categories, "Unknown"]
        assert not labels.isna().any()
        confidence = out.obs[f"{col}_numap_confidence"].to_numpy()
        assert confidence.dtype == np.float32
        P = out.obsm[f"{col}_numap_probabilities"]
        assert isinstance(P, pd.DataFrame)
        assert list(P.columns) == categories
        assert P.index.equals(query.obs_names)
        np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
        assert (P.to_numpy() >= 0).all()
        is_unknown = unknown(out, col)
        rows = np.flatnonzero(~is_unknown)
        columns = P.columns.get_indexer(labels.astype(str).to_numpy()[rows])
        np.testing.assert_array_equal(confidence[rows], P.to_numpy()[rows, columns])
        np.testing.assert_array_equal(confidence, P.to_numpy().max(axis=1))  # the best class, Unknown or not
    np.testing.assert_array_equal(unknown(out, "bulk_labels"), unknown(out, "louvain"))
    assert set(out.obs) - set(query.obs) == {
        "numap_mapping_score",
        *(f"{c}_numap{s}" for c in ("bulk_labels", "louvain") for s in ("", "_confidence")),
    }


def test_key_added_names_the_outputs(ref_query):
    ref, query = ref_query
    out = project(query, ref, obs="bulk_labels", key_added="X_foo", copy=True)
    assert {"foo_mapping_score", "bulk_labels_foo", "bulk_labels_foo_confidence"} <= set(out.obs)
    assert {"X_foo", "bulk_labels_foo_probabilities"} <= set(out.obsm)


def test_embedding_label_space_probabilities(ref_query):
    ref, query = ref_query
    out = project(query, ref, obs="bulk_labels", label_space="embedding", copy=True)
    P = out.obsm["bulk_labels_numap_probabilities"].to_numpy()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out.obs["bulk_labels_numap_confidence"].to_numpy(), P.max(axis=1))


# --- unknown_threshold -----------------------------------------------------------------------


def test_threshold_none_never_calls_unknown(ref_query, projected):
    ref, query = ref_query
    out = project(query, ref, obs="bulk_labels", unknown_threshold=None, copy=True)
    labels = out.obs["bulk_labels_numap"]
    assert list(labels.cat.categories) == list(ref.obs["bulk_labels"].cat.categories)
    assert not labels.isna().any()
    kept = ~unknown(projected)
    assert (labels.astype(str)[kept] == projected.obs["bulk_labels_numap"].astype(str)[kept]).all()
    pd.testing.assert_frame_equal(
        out.obsm["bulk_labels_numap_probabilities"], projected.obsm["bulk_labels_numap_probabilities"]
    )
    np.testing.assert_array_equal(out.obs["numap_mapping_score"], projected.obs["numap_mapping_score"])


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_numeric_threshold_calls_unknown_below_it(ref_query, projected, threshold):
    ref, query = ref_query
    out = project(query, ref, obs="bulk_labels", unknown_threshold=threshold, copy=True)
    score = out.obs["numap_mapping_score"].to_numpy()
    np.testing.assert_array_equal(unknown(out), score < threshold)
    assert "Unknown" in out.obs["bulk_labels_numap"].cat.categories
    labelled = score >= threshold
    base = projected.obs["bulk_labels_numap"].astype(str).to_numpy()
    none = project(query, ref, obs="bulk_labels", unknown_threshold=None, copy=True)
    expected = none.obs["bulk_labels_numap"].astype(str).to_numpy()
    np.testing.assert_array_equal(out.obs["bulk_labels_numap"].astype(str).to_numpy()[labelled], expected[labelled])
    if threshold == 1.0:
        assert 0 < unknown(out).sum() < query.n_obs
        assert unknown(out).sum() > (base == "Unknown").sum()


def test_auto_threshold_reads_the_stored_value(ref_query, projected):
    ref, query = ref_query
    score = projected.obs["numap_mapping_score"].to_numpy()
    np.testing.assert_array_equal(unknown(projected), score < 0.015)  # the stored default
    assert np.sum(score < 0.5) > np.sum(score < 0.015)  # 0.5 must call more cells Unknown than 0.015
    other = ref.copy()
    other.uns["numap"]["model"]["mapping"]["unknown_threshold"] = np.float64(0.5)
    auto = project(query, other, obs="bulk_labels", copy=True)
    np.testing.assert_array_equal(unknown(auto), score < 0.5)
    explicit = project(query, ref, obs="bulk_labels", unknown_threshold=0.5, copy=True)
    assert auto.obs["bulk_labels_numap"].equals(explicit.obs["bulk_labels_numap"])


@pytest.mark.parametrize("value", [-0.1, 1.5, "x", True, float("nan"), [0.5]])
def test_bad_threshold_is_refused_before_writing(ref_query, value):
    ref, query = ref_query
    q = query.copy()
    with pytest.raises(ValueError, match=r"`unknown_threshold` must be 'auto', None or a number in \[0, 1\], got"):
        project(q, ref, obs="bulk_labels", unknown_threshold=value)
    assert set(q.obs) == set(query.obs)
    assert "X_numap" not in q.obsm


@pytest.mark.parametrize("value", [0, -1.0, True, "x", float("nan")])
def test_bad_anchor_is_refused_before_writing(ref_query, value):
    ref, query = ref_query
    q = query.copy()
    with pytest.raises(ValueError, match=r"`anchor` must be a number > 0 or None, got"):
        project(q, ref, anchor=value)
    assert "numap_mapping_score" not in q.obs
    assert "X_numap" not in q.obsm


@pytest.mark.parametrize(("name", "value"), [("unknown_threshold", np.int64(1)), ("anchor", np.float32(2.0))])
def test_numpy_numbers_are_accepted(ref_query, name, value):
    ref, query = ref_query
    out = project(query, ref, obs="bulk_labels", copy=True, **{name: value})
    assert "numap_mapping_score" in out.obs


# --- anchor ----------------------------------------------------------------------------------


def test_anchor_bounds_the_placement_around_the_reference_neighbours(ref_query, projected):
    ref, query = ref_query
    free = project(query, ref, anchor=None, copy=True).obsm["X_numap"]
    wide = project(query, ref, anchor=1e6, copy=True).obsm["X_numap"]
    np.testing.assert_allclose(wide, free, rtol=0, atol=1e-6)  # centre + (f(x) - centre): equal up to rounding
    d, i = query_knn(ref, query, 15)
    w = neighbour_weights(d, i, stored(ref).radius)
    Y = ref.obsm["X_numap"][i]
    centre = np.einsum("nk,nkd->nd", w, Y)
    spread = np.sqrt(np.einsum("nk,nk->n", w, ((Y - centre[:, None]) ** 2).sum(axis=-1)))
    tight = project(query, ref, anchor=0.1, copy=True).obsm["X_numap"]
    distance = np.linalg.norm(tight - centre, axis=1)
    assert np.all(distance <= 0.1 * spread * (1 + 1e-3) + 1e-4)
    default = project(query, ref, obs=["bulk_labels", "louvain"], place_by_label=False, copy=True).obsm["X_numap"]
    within = np.linalg.norm(free - centre, axis=1) <= 2.0 * spread * (1 - 1e-3)
    assert within.any()
    np.testing.assert_allclose(default[within], free[within], atol=1e-5)
    assert np.all(np.linalg.norm(default - centre, axis=1) <= 2.0 * spread * (1 + 1e-3) + 1e-4)


# --- recentring ------------------------------------------------------------------------------


def test_numap_stores_the_reference_offsets_in_its_map(ref_query):
    ref, _ = ref_query
    np.testing.assert_allclose(
        stored(ref).offset, reference_offsets(ref.obsm["X_numap"], ref.obsp["distances"]), rtol=1e-5, atol=1e-6
    )


def test_recentring_takes_a_systematic_displacement_of_the_network_out(ref_query, monkeypatch):
    """A network that places every query cell 5 units to the right of where it should: recentred,
    the placements are those of the undisplaced network; not recentred, the displacement stays."""
    from scnumap.core.numap import NUMAP

    ref, query = ref_query
    kwargs = {"obs": "bulk_labels", "anchor": None, "place_by_label": False, "copy": True}
    plain = project(query, ref, **kwargs).obsm["X_numap"]
    network = project(query, ref, recentre=False, **kwargs).obsm["X_numap"]
    assert np.abs(plain - network).max() > 1e-3  # the recentring moved cells
    transform = NUMAP.transform_blocks
    monkeypatch.setattr(NUMAP, "transform_blocks", lambda self, *a: transform(self, *a) + np.float32([5.0, 0.0]))
    shifted = project(query, ref, **kwargs).obsm["X_numap"]
    np.testing.assert_allclose(shifted, plain, atol=1e-4)
    kept = project(query, ref, recentre=False, **kwargs).obsm["X_numap"]
    np.testing.assert_allclose(kept, network + np.float32([5.0, 0.0]), atol=1e-5)


def test_reference_cells_projected_again_are_not_recentred(ref_query):
    ref, _ = ref_query
    out = project(ref.copy(), ref, anchor=None, copy=True)
    np.testing.assert_allclose(out.obsm["X_numap"], ref.obsm["X_numap"], atol=1e-3)


def test_a_model_without_offsets_projects_without_recentring(ref_query, projected):
    """A format-4 model (no `offset` in its calibration) projects as with ``recentre=False``."""
    ref, query = ref_query
    old = ref.copy()
    del old.uns["numap"]["model"]["mapping"]["offset"]
    old.uns["numap"]["model"]["format_version"] = np.int64(4)
    out = project(query, old, obs=["bulk_labels", "louvain"], copy=True)
    expected = project(query, ref, obs=["bulk_labels", "louvain"], recentre=False, copy=True)
    np.testing.assert_array_equal(out.obsm["X_numap"], expected.obsm["X_numap"])
    np.testing.assert_array_equal(out.obs["numap_mapping_score"], projected.obs["numap_mapping_score"])


def test_the_corrected_search_reuses_the_measured_one(ref_query, monkeypatch):
    """With the query correction on a plain reference (scored as measured, voted corrected),
    the corrected rows' neighbours are re-ranked from the measured search where the bound
    proves them (:mod:`scnumap.core.reranking`), and recentring's corrected sample is
    reused for the sample's rows: the same result as searching every corrected row."""
    import scnumap.core.projection as projection_module
    import scnumap.tl._project as project_module

    ref, query = ref_query
    reranked = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True)  # correct=True
    calls = []

    def full_search(index, before, after, distances, indices, n_neighbors, *, n_queries=None):
        calls.append(after.shape[0])
        d, i = index.query(after, n_neighbors, n_queries=n_queries)
        return d, i, np.ones(after.shape[0], dtype=bool)

    monkeypatch.setattr(projection_module, "moved_neighbours", full_search)
    monkeypatch.setattr(project_module, "moved_neighbours", full_search)
    again = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True)
    assert calls == [query.n_obs]  # the sample (here the whole query), once: the blocks reuse it
    # the re-ranked distances are computed anew (float32 sums in another order): same cells, same weights
    np.testing.assert_allclose(again.obsm["X_numap"], reranked.obsm["X_numap"], atol=1e-5)
    np.testing.assert_array_equal(again.obs["bulk_labels_numap"], reranked.obs["bulk_labels_numap"])
    np.testing.assert_array_equal(again.obs["numap_mapping_score"], reranked.obs["numap_mapping_score"])


# --- placement by label ----------------------------------------------------------------------


def among_own_type(ref, coords, label, col="bulk_labels"):
    """Whether ``label`` is (one of) the commonest type(s) among the 15 nearest reference
    cells of ``coords`` in the reference's map (what a reader of the plot sees)."""
    i = NearestNeighbors(n_neighbors=15).fit(ref.obsm["X_numap"]).kneighbors(coords, return_distance=False)
    types = ref.obs[col].astype(str).to_numpy()[i]
    own = (types == label[:, None]).sum(axis=1)
    most = np.array([max(Counter(row).values()) for row in types])
    return own == most


def test_place_by_label_puts_cells_among_reference_cells_of_their_label(ref_query, projected):
    ref, query = ref_query
    off = project(query, ref, obs=["bulk_labels", "louvain"], place_by_label=False, copy=True)
    for col in ("bulk_labels_numap", "louvain_numap", "numap_mapping_score"):
        pd.testing.assert_series_equal(projected.obs[col], off.obs[col])  # the placement changes no label
    label = projected.obs["bulk_labels_numap"].astype(str).to_numpy()
    known = label != "Unknown"
    agree_off = among_own_type(ref, off.obsm["X_numap"], label)
    agree_on = among_own_type(ref, projected.obsm["X_numap"], label)
    assert (~agree_off[known]).sum() >= 5  # the quick map leaves cells to move
    assert agree_on[known].mean() > agree_off[known].mean() + 0.05
    same = np.all(projected.obsm["X_numap"] == off.obsm["X_numap"], axis=1)
    assert same[agree_off | ~known].all()  # cells already among their type, and Unknown ones, stay
    # a moved cell lands where the map votes for its label, or on a reference cell of its label
    d, i = NearestNeighbors(n_neighbors=1).fit(ref.obsm["X_numap"]).kneighbors(projected.obsm["X_numap"])
    on_own_cell = (d[:, 0] == 0) & (ref.obs["bulk_labels"].astype(str).to_numpy()[i[:, 0]] == label)
    assert np.all(agree_on[~same] | on_own_cell[~same])
    # without labels the placement is the same as with place_by_label=False
    plain = project(query, ref, copy=True).obsm["X_numap"]
    np.testing.assert_array_equal(plain, off.obsm["X_numap"])


def test_place_by_label_leaves_unknown_cells_where_the_network_put_them(ref_query):
    ref, query = ref_query
    kwargs = {"obs": "bulk_labels", "unknown_threshold": 0.5, "copy": True}
    on, off = project(query, ref, **kwargs), project(query, ref, place_by_label=False, **kwargs)
    unknown = (on.obs["bulk_labels_numap"] == "Unknown").to_numpy()
    assert 0 < unknown.sum() < query.n_obs
    np.testing.assert_array_equal(on.obsm["X_numap"][unknown], off.obsm["X_numap"][unknown])


def test_place_by_label_leaves_reference_cells_where_the_map_puts_them(ref_query):
    ref, _ = ref_query
    out = project(ref.copy(), ref, obs="bulk_labels", unknown_threshold=None, anchor=None, copy=True)
    labels = out.obs["bulk_labels_numap"].astype(str).to_numpy()
    assert (~among_own_type(ref, ref.obsm["X_numap"], labels)).sum() >= 5  # the map puts some among another type
    np.testing.assert_allclose(out.obsm["X_numap"], ref.obsm["X_numap"], atol=1e-3)


@pytest.mark.parametrize("name", ["place_by_label", "recentre", "correct", "copy", "query_pca_in_reference_basis"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_switch_is_refused_before_writing(ref_query, name, value):
    """A switch that is not True or False is a TypeError (as in every scnumap call), raised
    before anything is written."""
    ref, query = ref_query
    q = query.copy()
    with pytest.raises(TypeError, match=rf"`{name}` must be True or False, got"):
        project(q, ref, obs="bulk_labels", **{name: value})
    assert "X_numap" not in q.obsm


# --- unlabelled reference cells ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["object", "categorical"])
def test_unlabelled_reference_cells_do_not_vote(ref_query, kind):
    ref, query = ref_query
    ref = ref.copy()
    values = ref.obs["bulk_labels"].astype(str).to_numpy().astype(object)
    b_cells = values == "CD19+ B"
    values[b_cells] = np.nan
    ref.obs["partial"] = pd.Categorical(values) if kind == "categorical" else values
    out = project(query, ref, obs="partial", unknown_threshold=None, copy=True)
    labels, P = out.obs["partial_numap"], out.obsm["partial_numap_probabilities"]
    categories = sorted(set(values[~b_cells]))
    assert list(labels.cat.categories) == categories
    assert list(P.columns) == categories  # no "nan" column, no "nan" label
    _d, i = query_knn(ref, query, 15)
    alone = b_cells[i].all(axis=1)  # every neighbour unlabelled
    assert 0 < alone.sum() < query.n_obs
    assert labels[alone].isna().all()
    assert not labels[~alone].isna().any()
    np.testing.assert_array_equal(out.obs["partial_numap_confidence"].to_numpy()[alone], 0.0)
    sums = P.sum(axis=1).to_numpy()
    np.testing.assert_array_equal(sums[alone], 0.0)
    np.testing.assert_allclose(sums[~alone], 1.0, atol=1e-5)
    with_unknown = project(query, ref, obs="partial", unknown_threshold=1.0, copy=True)
    score = with_unknown.obs["numap_mapping_score"].to_numpy()
    expected = np.where(score < 1.0, "Unknown", labels.astype(object).fillna("nan").to_numpy())
    np.testing.assert_array_equal(with_unknown.obs["partial_numap"].astype(object).fillna("nan"), expected)


def test_reference_column_without_any_label(ref_query):
    ref, query = ref_query
    ref = ref.copy()
    ref.obs["empty"] = np.full(ref.n_obs, np.nan, dtype=object)
    q = query.copy()
    with pytest.raises(ValueError, match=r"`obs\['empty'\]` has no label on any cell"):
        project(q, ref, obs="empty")
    assert "X_numap" not in q.obsm


# --- stored calibration: files, tampering, old models ------------------------------------------


def test_calibration_survives_h5ad(ref_query, projected, tmp_path):
    ref, query = ref_query
    ref.write_h5ad(tmp_path / "ref.h5ad")
    back = sc.read_h5ad(tmp_path / "ref.h5ad")
    before, after = stored(ref), stored(back)
    assert (after.n_neighbors, after.metric, after.unknown_threshold) == (
        before.n_neighbors,
        before.metric,
        before.unknown_threshold,
    )
    np.testing.assert_array_equal(after.radius, before.radius)
    np.testing.assert_array_equal(after.ratio, before.ratio)
    out = project(query, tmp_path / "ref.h5ad", obs=["bulk_labels", "louvain"], copy=True)
    np.testing.assert_array_equal(out.obs["numap_mapping_score"], projected.obs["numap_mapping_score"])
    for col in ("bulk_labels", "louvain"):
        assert out.obs[f"{col}_numap"].equals(projected.obs[f"{col}_numap"])
        pd.testing.assert_frame_equal(
            out.obsm[f"{col}_numap_probabilities"], projected.obsm[f"{col}_numap_probabilities"]
        )


def _tampered(ref, name):
    bad = ref.copy()
    entry = bad.uns["numap"]["model"]["mapping"]
    if name == "radius":
        entry["radius"] = entry["radius"][:-1]
    elif name == "nan":
        entry["ratio"] = np.where(np.arange(entry["ratio"].size) == 3, np.nan, entry["ratio"])
    elif name == "negative":
        entry["ratio"] = -entry["ratio"]
    elif name == "extra":
        entry["extra"] = np.zeros(3)
    elif name == "missing":
        del entry["ratio"]
    elif name == "threshold":
        entry["unknown_threshold"] = np.float64(2.0)
    elif name == "metric":
        entry["metric"] = "foo"
    elif name == "offset shape":
        entry["offset"] = entry["offset"][:-1]
    elif name == "offset nan":
        entry["offset"] = np.where(np.arange(entry["offset"].size).reshape(entry["offset"].shape) == 3, np.nan, 0.0)
    elif name == "not a dict":
        bad.uns["numap"]["model"]["mapping"] = np.zeros(3)
    return bad


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("radius", r"/radius` has 489 values; the reference has 490 cells"),
        ("nan", r"/ratio` must be a 1-D array of positive finite floats"),
        ("negative", r"/ratio` must be a 1-D array of positive finite floats"),
        ("extra", r"` has entries \['extra', .*expected \['metric'"),
        ("missing", r"` has entries \['metric', 'n_neighbors', 'offset', 'radius', 'unknown_threshold'\]; expected"),
        ("threshold", r"/unknown_threshold` must lie in \[0, 1\], got 2\.0"),
        ("metric", r"/metric`: `metric` must be one of .* got 'foo'"),
        ("offset shape", r"/offset` must be a 2-D array of finite floats with one row per reference cell \(490\)"),
        ("offset nan", r"/offset` must be a 2-D array of finite floats"),
        ("not a dict", r"` must be a dict of arrays, got ndarray"),
    ],
)
def test_tampered_calibration_is_refused_before_writing(ref_query, name, message):
    ref, query = ref_query
    q = query.copy()
    with pytest.raises(ModelFormatError, match=WHERE + message):
        project(q, _tampered(ref, name), obs="bulk_labels")
    assert set(q.obs) == set(query.obs)
    assert "X_numap" not in q.obsm


def test_old_model_without_calibration_is_calibrated_when_projecting(ref_query, projected, tmp_path):
    """A format-1 model (no 'mapping') is calibrated on the reference's own kNN at projection time;
    with an exact search on both sides the scores equal the stored calibration's (measured: identical)."""
    ref, query = ref_query
    old = ref.copy()
    del old.uns["numap"]["model"]["mapping"]
    old.uns["numap"]["model"]["format_version"] = np.int64(1)
    del old.obsp["distances"]  # not read when projecting
    out = project(query, old, obs="bulk_labels", copy=True)
    score, expected = out.obs["numap_mapping_score"].to_numpy(), projected.obs["numap_mapping_score"].to_numpy()
    np.testing.assert_allclose(score, expected, atol=1e-3)
    assert np.mean(unknown(out) == unknown(projected)) >= 0.99
    np.testing.assert_allclose(out.obsm["X_numap"], projected.obsm["X_numap"], atol=1e-5)
    old.write_h5ad(tmp_path / "old.h5ad")
    from_file = project(query, tmp_path / "old.h5ad", obs="bulk_labels", copy=True)
    np.testing.assert_array_equal(from_file.obs["numap_mapping_score"], score)


def test_format_2_calibration_is_recomputed_when_projecting(ref_query, projected):
    """Format 2 stored quantiles of one statistic and a threshold of 0.03 for another score: it is
    recomputed from the reference (the same kNN distances, exact search) and the scores agree."""
    ref, query = ref_query
    old = ref.copy()
    entry = old.uns["numap"]["model"]["mapping"]
    del entry["ratio"]
    entry["null_quantiles"] = np.linspace(0.0, 2.0, 1001)
    entry["unknown_threshold"] = np.float64(0.03)
    old.uns["numap"]["model"]["format_version"] = np.int64(2)
    out = project(query, old, obs="bulk_labels", copy=True)
    score = out.obs["numap_mapping_score"].to_numpy()
    np.testing.assert_allclose(score, projected.obs["numap_mapping_score"].to_numpy(), atol=1e-3)
    np.testing.assert_array_equal(unknown(out), score < 0.015)


def test_format_3_calibration_of_a_large_reference_is_recomputed_when_projecting(ref_query, projected, monkeypatch):
    """Format 3 could count each cell's own graph entry (Scanpy, >= 4,096 cells): such a model is
    recalibrated at projection; a format-4 model's stored calibration is used as is."""
    from scnumap.tl import _project

    ref, query = ref_query
    monkeypatch.setattr(_project, "SELF_ENTRY_MIN_CELLS", 100)  # the fixture has 490 reference cells
    biased = ref.copy()
    entry = biased.uns["numap"]["model"]["mapping"]
    entry["radius"] = entry["radius"] * np.float32(14 / 15)  # what averaging in a 0 does
    biased.uns["numap"]["model"]["format_version"] = np.int64(3)
    out = project(query, biased, obs="bulk_labels", copy=True)
    np.testing.assert_allclose(
        out.obs["numap_mapping_score"].to_numpy(), projected.obs["numap_mapping_score"].to_numpy(), atol=1e-3
    )
    biased.uns["numap"]["model"]["format_version"] = np.int64(4)
    kept = project(query, biased, obs="bulk_labels", copy=True)
    moved = kept.obs["numap_mapping_score"].to_numpy() - projected.obs["numap_mapping_score"].to_numpy()
    assert np.abs(moved).max() > 0.01


def test_sparse_query_matrix_gives_the_same_mapping(ref_query, projected):
    ref, query = ref_query
    q = query.copy()
    q.X = sp.csr_matrix(q.X)
    out = project(q, ref, obs="bulk_labels", copy=True)
    np.testing.assert_allclose(out.obs["numap_mapping_score"], projected.obs["numap_mapping_score"], atol=1e-5)
    assert np.mean(out.obs["bulk_labels_numap"] == projected.obs["bulk_labels_numap"]) >= 0.99


def test_a_query_too_large_to_hold_is_read_again_with_the_same_result(ref_query, monkeypatch):
    """Above MAX_HELD_BYTES the query is not kept between passes (correction, sample, projection)."""
    from scnumap.tl import _project

    ref, query = ref_query
    reads = []
    blocks = _project._query_blocks
    monkeypatch.setattr(_project, "_query_blocks", lambda *a: reads.append(a[0].n_obs) or blocks(*a))
    held = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True, chunk_size=64)
    assert len(reads) == 1
    monkeypatch.setattr(_project, "MAX_HELD_BYTES", 0)
    again = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True, chunk_size=64)
    assert len(reads) == 1 + _project.CORRECTION_ROUNDS + 2  # each round, the query sample, the projection
    for key in ("X_numap", "bulk_labels_numap_probabilities"):
        np.testing.assert_allclose(np.asarray(again.obsm[key]), np.asarray(held.obsm[key]), atol=1e-5)
    np.testing.assert_allclose(again.obs["numap_mapping_score"], held.obs["numap_mapping_score"], atol=1e-6)


def test_sparse_query_with_missing_genes_equals_the_dense_query(ref_query):
    """Sparse rows go straight onto the PCs (x @ L - mean @ L); missing genes count as 0 either way."""
    ref, query = ref_query
    kept = query[:, query.var_names[3:]].copy()  # reference genes missing
    sparse = kept.copy()
    sparse.X = sp.csr_matrix(sparse.X)
    outs = [project(q, ref, obs="bulk_labels", missing_genes="zeros", copy=True, chunk_size=50) for q in (kept, sparse)]
    np.testing.assert_allclose(outs[1].obsm["X_numap"], outs[0].obsm["X_numap"], atol=1e-4)
    np.testing.assert_allclose(
        outs[1].obsm["bulk_labels_numap_probabilities"], outs[0].obsm["bulk_labels_numap_probabilities"], atol=1e-4
    )
    bad = sparse.copy()
    bad.X.data[: bad.X.indptr[1]] = np.nan  # the first cell
    with pytest.raises(ValueError, match="NaN or infinite"):
        project(bad, ref, missing_genes="zeros")


def test_a_large_querys_sample_searched_in_two_stages_scores_the_same(ref_query, monkeypatch):
    """Above the exact search's size the query sample is searched narrow first, then at full
    width where needed (:meth:`QueryShare.narrow`): the scores of the full-width search."""
    from scnumap.core import reference_index
    from scnumap.tl import _project

    ref, query = ref_query
    monkeypatch.setattr(_project, "SAMPLE_SIZE", 100)  # 110 query cells scored in blocks, against the sample
    monkeypatch.setattr(reference_index, "EXACT_MAX_PAIRS", 0)  # every search approximate
    widths = []
    narrow = QueryShare.narrow
    monkeypatch.setattr(QueryShare, "narrow", lambda self: widths.append(narrow(self)) or widths[-1])
    two_stage = project(query, ref, obs="bulk_labels", copy=True)
    assert 0 < widths[0] < 30
    monkeypatch.setattr(QueryShare, "narrow", lambda self: self.k)
    full = project(query, ref, obs="bulk_labels", copy=True)
    np.testing.assert_array_equal(two_stage.obs["numap_mapping_score"], full.obs["numap_mapping_score"])
    np.testing.assert_array_equal(two_stage.obs["bulk_labels_numap"], full.obs["bulk_labels_numap"])
