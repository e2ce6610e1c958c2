"""``scnumap.tl.extend``: the union AnnData, old cells kept, new types given room, errors."""

import anndata
import numpy as np
import pytest
import scanpy as sc
from test_tl import TL_QUICK

import scnumap
from scnumap.core import metrics


def _split(pbmc, new_type: str, fraction: float, seed: int = 0):
    """Reference without ``new_type`` and ``fraction`` of the other cells; those are the new cells."""
    ad = pbmc.copy()
    ad.X = np.nan_to_num(ad.X)
    new = (ad.obs["bulk_labels"] == new_type).to_numpy() | (np.random.default_rng(seed).random(ad.n_obs) < fraction)
    ref, add = ad[~new].copy(), ad[new].copy()
    for part in (ref, add):
        del part.obsm["X_pca"], part.uns["neighbors"], part.obsp["connectivities"], part.obsp["distances"]
    sc.pp.pca(ref, n_comps=30, random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)
    return ref, add


@pytest.fixture(scope="module")
def ref_new(pbmc):
    ref, add = _split(pbmc, "CD19+ B", 0.3)
    # the default network, and extensions with the automatic budget: the displacement targets
    # are for them (a network of 32 units, or the quick fit's few steps, cannot learn the new
    # rows' layout without moving the old rows further)
    scnumap.tl.numap(ref, random_state=0, **{**TL_QUICK, "hidden": (128, 128)})
    ref.uns["numap"]["params"]["epochs"] = -1
    ref.uns["bulk_labels_colors"] = np.asarray(sc.pl.palettes.default_20[: ref.obs["bulk_labels"].cat.categories.size])
    return ref, add


@pytest.fixture(scope="module")
def union(ref_new):
    ref, add = ref_new
    return scnumap.tl.extend(ref, add, verbose=False)


def test_union_holds_every_cell_and_the_documented_keys(ref_new, union):
    ref, add = ref_new
    assert union.n_obs == ref.n_obs + add.n_obs
    assert list(union.obs_names) == list(ref.obs_names) + list(add.obs_names)
    np.testing.assert_array_equal(union.obs["numap_release"], [0] * ref.n_obs + [1] * add.n_obs)
    np.testing.assert_array_equal(union.obs["bulk_labels"].astype(str)[ref.n_obs :], add.obs["bulk_labels"].astype(str))
    np.testing.assert_array_equal(union.X[: ref.n_obs], ref.X)
    np.testing.assert_array_equal(union.X[ref.n_obs :], add[:, ref.var_names].X)
    assert union.obsm["X_numap"].shape == (union.n_obs, 2)
    assert union.obsm["X_pca"].shape == (union.n_obs, 30)
    np.testing.assert_allclose(union.obsm["X_pca"][: ref.n_obs], ref.obsm["X_pca"], atol=1e-6)
    # the new cells' PCs are the reference's loadings applied to their genes
    mean = np.asarray(ref.X.mean(axis=0))
    np.testing.assert_allclose(
        union.obsm["X_pca"][ref.n_obs :], (add[:, ref.var_names].X - mean) @ ref.varm["PCs"], atol=1e-3
    )
    assert union.obsp["connectivities"].shape == (union.n_obs, union.n_obs)
    assert union.uns["neighbors"]["params"]["use_rep"] == "X_pca"
    history = union.uns["numap"]["params"]["extensions"]
    np.testing.assert_array_equal(history["n_obs_before"], [ref.n_obs])
    np.testing.assert_array_equal(history["n_obs_added"], [add.n_obs])
    assert history["n_steps"][0] >= 1
    assert history["hold"][0] == 1.0
    np.testing.assert_array_equal(history["release"], [1])
    # the union shares no array with the reference: editing one leaves the other as it was
    rep_new, rep_old = union.uns["numap"]["model"]["representation"], ref.uns["numap"]["model"]["representation"]
    assert not np.shares_memory(rep_new["pca_loadings"], rep_old["pca_loadings"])
    assert not np.shares_memory(union.uns["numap"]["params"]["hidden"], ref.uns["numap"]["params"]["hidden"])


def test_old_cells_stay_put_and_reference_is_untouched(ref_new, union):
    ref, add = ref_new
    before = ref.obsm["X_numap"]
    moved = np.linalg.norm(union.obsm["X_numap"][: ref.n_obs] - before, axis=1)
    extent = np.ptp(before, axis=0).max()
    assert np.median(moved) <= 0.01 * extent
    assert np.quantile(moved, 0.95) <= 0.05 * extent
    # nothing of the reference or the new cells was changed
    assert ref.n_obs == 436
    assert "numap_release" not in ref.obs
    assert "extensions" not in ref.uns["numap"]["params"]
    assert "X_numap" not in add.obsm
    assert "X_pca" not in add.obsm


def test_a_weaker_hold_moves_old_cells_more(ref_new, union):
    ref, add = ref_new
    ref_before, add_before = ref.copy(), add.copy()
    loose = scnumap.tl.extend(ref, add, hold=0.01, verbose=False)
    for before, after in ((ref_before, ref), (add_before, add)):  # inputs untouched
        np.testing.assert_array_equal(after.X, before.X)
        assert after.obs.equals(before.obs)
        assert set(after.obsm) == set(before.obsm)
        for key in before.obsm:
            np.testing.assert_array_equal(after.obsm[key], before.obsm[key])
    strict = np.abs(union.obsm["X_numap"][: ref.n_obs] - ref.obsm["X_numap"]).mean()
    assert np.abs(loose.obsm["X_numap"][: ref.n_obs] - ref.obsm["X_numap"]).mean() > 2 * strict


def test_palette_keeps_old_colours_and_gives_new_categories_their_own(ref_new, union):
    ref, _ = ref_new
    old = dict(zip(ref.obs["bulk_labels"].cat.categories, ref.uns["bulk_labels_colors"], strict=True))
    new = dict(zip(union.obs["bulk_labels"].cat.categories, union.uns["bulk_labels_colors"], strict=True))
    assert "CD19+ B" in new
    assert "CD19+ B" not in old
    assert all(new[c] == colour for c, colour in old.items())
    assert new["CD19+ B"] not in old.values()


def test_model_round_trips_and_projects_further_queries(ref_new, union, tmp_path):
    _, add = ref_new
    union.write_h5ad(tmp_path / "union.h5ad")
    again = anndata.read_h5ad(tmp_path / "union.h5ad")
    query = add[:60].copy()
    query.obs_names = query.obs_names + "-q"
    direct = scnumap.tl.project(query, union, obs="bulk_labels", copy=True)
    loaded = scnumap.tl.project(query, again, obs="bulk_labels", copy=True)
    np.testing.assert_allclose(direct.obsm["X_numap"], loaded.obsm["X_numap"], atol=1e-5)
    # a copy of cells already in the union is placed where they are, and labelled like them
    same = add[:60].copy()
    same.obs_names = same.obs_names + "-copy"
    scnumap.tl.project(same, again, obs="bulk_labels", anchor=None, correct=False)
    np.testing.assert_allclose(same.obsm["X_numap"], union.obsm["X_numap"][-add.n_obs :][:60], atol=1e-4)
    # and the union grows again: a second release with its history
    twice = scnumap.tl.extend(tmp_path / "union.h5ad", query, verbose=False)
    assert twice.obs["numap_release"].max() == 2
    np.testing.assert_array_equal(twice.uns["numap"]["params"]["extensions"]["n_obs_added"], [add.n_obs, 60])


def test_extend_errors_name_the_value_and_the_fix(ref_new):
    ref, add = ref_new
    with pytest.raises(ValueError, match="no cells"):
        scnumap.tl.extend(ref, add[:0].copy())
    other = add.copy()
    other.var_names = [f"other{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="genes are missing"):
        scnumap.tl.extend(ref, other)
    with pytest.raises(ValueError, match="already in the reference"):
        scnumap.tl.extend(ref, ref[:5].copy())
    with pytest.raises(ValueError, match="`hold` must be a number > 0"):
        scnumap.tl.extend(ref, add, hold=0)
    with pytest.raises(TypeError, match="`release` must be True or False"):
        scnumap.tl.extend(ref, add, release="yes")
    with pytest.raises(ValueError, match="not integrated"):
        scnumap.tl.extend(ref, add, batch_key="bulk_labels")
    with pytest.raises(ValueError, match="no NUMAP model"):
        scnumap.tl.extend(add, add)


@pytest.mark.slow
def test_new_type_gets_room_and_old_cells_stay(pbmc):
    """Full budget: a type the first fit lacked lands apart, new cells of old types among them."""
    ref, add = _split(pbmc, "CD19+ B", 0.3)
    scnumap.tl.numap(ref, random_state=0)
    union = scnumap.tl.extend(ref, add, verbose=False)
    Y, labels = union.obsm["X_numap"], union.obs["bulk_labels"].astype(str).to_numpy()
    moved = np.linalg.norm(Y[: ref.n_obs] - ref.obsm["X_numap"], axis=1) / np.ptp(ref.obsm["X_numap"], axis=0).max()
    assert np.median(moved) <= 0.01
    assert np.quantile(moved, 0.95) <= 0.05
    new = np.arange(ref.n_obs, union.n_obs)
    known = new[labels[new] != "CD19+ B"]
    b_cells = new[labels[new] == "CD19+ B"]
    # new cells of the first release's types land among the old cells of their type
    accuracy = metrics.label_transfer_accuracy(Y[: ref.n_obs], labels[: ref.n_obs], Y[known], labels[known])
    others = np.setdiff1d(np.arange(union.n_obs), b_cells)
    b_accuracy = metrics.label_transfer_accuracy(  # the new type forms its own group
        np.concatenate([Y[others], Y[b_cells[::2]]]),
        np.concatenate([labels[others], labels[b_cells[::2]]]),
        Y[b_cells[1::2]],
        labels[b_cells[1::2]],
    )
    assert accuracy >= 0.65  # bulk_labels are noisy: the CD4+ and CD8+ subtypes mix (measured 0.77)
    # measured 0.894-0.957 over seeds 0-3 (seed 0: 0.894 on one host, above 0.9 on another); the
    # same cells projected onto the first map without extending it: 0.51-0.66
    assert b_accuracy >= 0.85
    assert metrics.trustworthiness(union.obsm["X_pca"], Y) >= 0.9


def test_integrated_reference_extends_through_its_correction(pbmc):
    ref, add = _split(pbmc, "CD19+ B", 0.3)
    ref.obs["donor"] = np.where(np.arange(ref.n_obs) % 2 == 0, "d1", "d2")
    scnumap.tl.numap(ref, batch_key="donor", random_state=0, **TL_QUICK)
    add.obs["donor"] = "d3"
    union = scnumap.tl.extend(ref, add, batch_key="donor", verbose=False)
    n = ref.n_obs
    assert union.obsm["X_pca_harmony"].shape == (union.n_obs, ref.obsm["X_pca_harmony"].shape[1])
    np.testing.assert_allclose(union.obsm["X_pca_harmony"][:n], ref.obsm["X_pca_harmony"], atol=1e-6)
    # the new cells: reference PCs (uncorrected in X_pca), then the stored correction
    corrected = scnumap.tl.project(add, ref, batch_key="donor", copy=True).obsm["X_pca_harmony"]
    np.testing.assert_allclose(union.obsm["X_pca_harmony"][n:], corrected, atol=1e-4)
    mean = np.asarray(ref.X.mean(axis=0))
    np.testing.assert_allclose(union.obsm["X_pca"][n:], (add[:, ref.var_names].X - mean) @ ref.varm["PCs"], atol=1e-3)
    assert union.uns["neighbors"]["params"]["use_rep"] == "X_pca_harmony"
    for name, value in ref.uns["numap"]["model"]["correction"].items():
        np.testing.assert_array_equal(union.uns["numap"]["model"]["correction"][name], value)


def test_history_of_a_model_stored_before_release_existed():
    from types import SimpleNamespace

    from scnumap.tl._extend import _history

    old = {"n_obs_before": np.array([100]), "n_obs_added": np.array([20]), "n_steps": np.array([50]), "hold": [1.0]}
    history = _history(old, 120, 30, SimpleNamespace(n_steps_=60), 0.5, True)
    np.testing.assert_array_equal(history["n_obs_before"], [100, 120])
    np.testing.assert_array_equal(history["hold"], [1.0, 0.5])
    np.testing.assert_array_equal(history["release"], [0, 1])  # the first extension held every cell alike
    assert history["release"].dtype == np.int64
