"""Integrated references (tl/_integrate.py): Harmony at fit, Symphony's correction at projection."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scanpy as sc
from settings import QUICK

import scnumap
from scnumap.core.model_io import ModelFormatError
from scnumap.tl._integrate import _seeded_centres, compress

FAST = {k: v for k, v in QUICK.items() if k != "hidden"} | {"densmap": False, "verbose": False}


@pytest.fixture(scope="module")
def harmony_ref(batched):
    ref, query, clean = batched()
    scnumap.tl.numap(ref, batch_key="batch", random_state=0, **FAST)
    return ref, query, clean


def test_fit_integrates_and_stores_the_correction(harmony_ref):
    ref, _, _ = harmony_ref
    assert ref.obsm["X_pca_harmony"].shape == (ref.n_obs, 20)
    assert ref.uns["neighbors"]["params"]["use_rep"] == "X_pca_harmony"
    model = ref.uns["numap"]["model"]
    assert str(model["representation"]["use_rep"]) == "X_pca_harmony"
    assert bool(model["representation"]["integrated"])
    assert model["correction"]["centroids"].shape[1] == 20
    assert ref.uns["numap"]["params"]["batch_key"] == "batch"
    # Harmony mixes the two reference batches: each cell's neighbours come from both
    conn = ref.obsp["connectivities"].tocsr()
    b = (ref.obs["batch"] == "b").to_numpy()
    share_b = np.asarray(conn[b][:, b].sum(axis=1)).ravel() / np.asarray(conn[b].sum(axis=1)).ravel()
    assert share_b.mean() < 0.8


def test_query_correction_removes_the_query_offset(harmony_ref, tmp_path):
    ref, query, clean = harmony_ref
    path = tmp_path / "ref.h5ad"
    ref.write_h5ad(path)
    shifted = query.copy()
    scnumap.tl.project(shifted, path, obs="bulk_labels", batch_key="tech")
    scnumap.tl.project(clean, path, batch_key="tech")
    y = (query.obs["tech"] == "y").to_numpy()
    corrected = shifted.obsm["X_pca_harmony"]
    # the offset batch ends where its clean copy does (both corrected), up to a small residual
    gap = np.linalg.norm(corrected[y] - clean.obsm["X_pca_harmony"][y], axis=1).mean()
    raw = scnumap.tl.project(query.copy(), path, copy=True).obsm["X_pca_harmony"]  # one batch: offset kept in part
    raw_gap = np.linalg.norm(raw[y] - clean.obsm["X_pca_harmony"][y], axis=1).mean()
    assert gap < 0.5 * raw_gap
    labels = shifted.obs["bulk_labels_numap"].astype(str).to_numpy()
    assert np.mean(labels == query.obs["bulk_labels"].astype(str).to_numpy()) > 0.6


def test_round_trip_equals_in_memory(harmony_ref, tmp_path):
    ref, query, _ = harmony_ref
    path = tmp_path / "ref.h5ad"
    ref.write_h5ad(path)
    a = scnumap.tl.project(query.copy(), ref, batch_key="tech", copy=True)
    b = scnumap.tl.project(query.copy(), path, batch_key="tech", copy=True)
    np.testing.assert_array_equal(a.obsm["X_numap"], b.obsm["X_numap"])
    np.testing.assert_array_equal(a.obsm["X_pca_harmony"], b.obsm["X_pca_harmony"])


def test_user_harmony_graph_is_used_and_compressed(batched):
    import harmonypy

    ref, query, _ = batched()
    # what `sc.external.pp.harmony_integrate(ref, "batch")` stores (scanpy 1.11 transposes harmonypy 2's
    # (cells, PCs) output into the wrong shape, so the test writes it the way a working pair does)
    ref.obsm["X_pca_harmony"] = np.asarray(
        harmonypy.run_harmony(ref.obsm["X_pca"], ref.obs, "batch", verbose=False).Z_corr, dtype=np.float32
    )
    sc.pp.neighbors(ref, use_rep="X_pca_harmony", method="gauss", random_state=0)  # no numba compile
    graph = ref.obsp["connectivities"].copy()
    scnumap.tl.numap(ref, random_state=0, **FAST)  # no batch_key: the graph says integrated
    assert bool(ref.uns["numap"]["model"]["representation"]["integrated"])
    assert (ref.obsp["connectivities"] != graph).nnz == 0  # the user's graph is kept
    out = scnumap.tl.project(query, ref, copy=True)
    assert out.obsm["X_pca_harmony"].shape == (query.n_obs, ref.obsm["X_pca_harmony"].shape[1])


def test_errors_name_the_fix(harmony_ref, pbmc):
    ref, query, _ = harmony_ref
    with pytest.raises(KeyError, match="`batch_key='donor'` is not a column of the query's obs"):
        scnumap.tl.project(query.copy(), ref, batch_key="donor")
    plain = pbmc.copy()
    plain.X = np.nan_to_num(plain.X)
    with pytest.raises(KeyError, match=r"`batch_key='donor'` is not a column of `adata\.obs`"):
        scnumap.tl.numap(plain.copy(), batch_key="donor", **FAST)
    bad = ref.copy()
    bad.uns["numap"] = copy.deepcopy(dict(ref.uns["numap"]))
    bad.uns["numap"]["model"]["correction"]["sums"] = bad.uns["numap"]["model"]["correction"]["sums"][:, :3]
    with pytest.raises(ModelFormatError, match="correction/sums` must have shape"):
        scnumap.tl.project(query.copy(), bad)
    del bad.uns["numap"]["model"]["correction"]
    with pytest.raises(ModelFormatError, match="lacks a `correction` entry"):
        scnumap.tl.project(query.copy(), bad)
    q = query.copy()
    q.obs["tech"] = q.obs["tech"].astype(object)
    q.obs.iloc[0, q.obs.columns.get_loc("tech")] = None
    with pytest.raises(ValueError, match="missing values; give every cell a batch"):
        scnumap.tl.project(q, ref, batch_key="tech")
    assert "X_numap" not in q.obsm  # nothing written on error


def test_plain_reference_corrects_the_query_and_batch_key_needs_a_correction(pbmc):
    """A plain reference stores its soft clusters: the query is corrected (batch_key allowed);
    with `correct=False` or a model without clusters, batch_key is refused."""
    ref = pbmc[:400].copy()
    ref.X = np.nan_to_num(ref.X)
    sc.pp.pca(ref, n_comps=20, random_state=0)
    sc.pp.neighbors(ref, method="gauss", random_state=0)  # no numba compile
    scnumap.tl.numap(ref, random_state=0, **FAST)
    assert "correction" in ref.uns["numap"]["model"]
    query = pbmc[400:].copy()
    query.X = np.nan_to_num(query.X)
    query.obs["tech"] = np.where(np.arange(query.n_obs) % 2, "a", "b")
    by_batch = scnumap.tl.project(query, ref, batch_key="tech", copy=True)
    plain = scnumap.tl.project(query, ref, correct=False, copy=True)
    corrected = scnumap.tl.project(query, ref, copy=True)
    assert "X_pca_harmony" not in corrected.obsm  # only integrated references write the corrected PCs
    assert not np.allclose(corrected.obsm["X_numap"], plain.obsm["X_numap"])
    assert not np.allclose(by_batch.obsm["X_numap"], corrected.obsm["X_numap"])
    # the mapping score of a plain reference is computed on the query as measured
    np.testing.assert_array_equal(corrected.obs["numap_mapping_score"], plain.obs["numap_mapping_score"])
    with pytest.raises(ValueError, match="`correct=False` has no correction"):
        scnumap.tl.project(query, ref, batch_key="tech", correct=False)
    old = ref.copy()
    del old.uns["numap"]["model"]["correction"]
    with pytest.raises(ValueError, match="this model has no correction"):
        scnumap.tl.project(query, old, batch_key="tech")


def _blobs(directions, n_each, rng):
    """Tight clusters of ``n_each`` rows around each of ``directions`` (scaled to length 5)."""
    return np.vstack([rng.normal(5.0 * d / np.linalg.norm(d), 0.05, size=(n_each, len(d))) for d in directions])


def test_compress_from_previous_clusters_keeps_them_and_seeds_new_ones():
    """An extension's compression starts from the reference's clusters: the old clusters are
    found again, and the K_new - K_old extra centres go where the old ones were far (a new type)."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(10, 8))
    first = _blobs(directions, 30, rng)  # 300 rows: K = 10
    before = compress(first, 0)
    new_direction = -directions.mean(axis=0)  # away from every old cluster
    union = np.vstack([first, _blobs([new_direction], 60, rng)])  # 360 rows: K = 12
    after = compress(union, 1, previous=before.centroids)
    assert after.n_clusters == 12
    # every old cluster is still a cluster, and one centre sits on the new blob
    cosine = before.centroids @ after.centroids.T
    assert np.all(cosine.max(axis=1) > 0.999)
    assert np.max(after.centroids @ (new_direction / np.linalg.norm(new_direction))) > 0.999
    np.testing.assert_allclose(after.sizes.sum(), union.shape[0])
    # reproducible, and the same K warm-started equals a cold start on well-separated clusters
    np.testing.assert_array_equal(compress(union, 1, previous=before.centroids).sums, after.sums)
    same_k = compress(first, 2, previous=before.centroids)
    cold = compress(first, 2)
    assert np.all((same_k.centroids @ cold.centroids.T).max(axis=1) > 0.999)


def test_seeded_centres_keep_the_previous_ones_and_add_far_rows():
    rng = np.random.default_rng(0)
    near = rng.normal(0.0, 0.01, size=(50, 3))
    far = rng.normal(0.0, 0.01, size=(5, 3)) + np.array([10.0, 0.0, 0.0])
    previous = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    centres = _seeded_centres(np.vstack([near, far]), previous, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(centres[:2], previous)
    assert centres[2][0] > 9.0  # drawn ∝ squared distance: the far group carries almost all of it
