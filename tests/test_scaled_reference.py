"""References whose ``X`` was standardised by ``sc.pp.scale``: the query is scaled like them.

The reference is 70 % of pbmc68k_reduced's cells in its log-normalised genes (``raw``),
``sc.pp.scale(max_value=10)``, ``sc.pp.pca``, ``sc.pp.neighbors`` and a quick
``tl.numap``; the query is the other 30 %, log-normalised and unscaled (what users have).
"""

import copy

import anndata
import numpy as np
import pytest
import scanpy as sc

import scnumap
from scnumap.core.model_io import ModelFormatError
from scnumap.core.representation import Representation
from scnumap.tl import _representation
from scnumap.tl._project import _load, _query_blocks
from scnumap.tl._representation import describe_representation

QUICK = {"random_state": 0, "epochs": 2, "grease_steps": 20, "hidden": (16,), "densmap": False}
CLIP = 10.0
WHERE = "uns['numap']['model']/representation"


def _log_data(pbmc) -> anndata.AnnData:
    """pbmc68k_reduced's log-normalised genes (dense: ``sc.pp.scale`` densifies anyway)."""
    return anndata.AnnData(
        np.asarray(pbmc.raw.X.toarray(), dtype=np.float32),
        obs=pbmc.obs[["bulk_labels"]].copy(),
        var=pbmc.raw.var.copy(),
    )


@pytest.fixture(scope="module")
def split(pbmc):
    """Log-normalised reference (70 %) and query (30 %) cells, before any scaling."""
    full = _log_data(pbmc)
    idx = np.random.default_rng(0).permutation(full.n_obs)
    return full[idx[:490]].copy(), full[idx[490:]].copy()


@pytest.fixture(scope="module")
def scaled_ref(split):
    ref = split[0].copy()
    sc.pp.scale(ref, max_value=CLIP)
    sc.pp.pca(ref, random_state=0)
    sc.pp.neighbors(ref, random_state=0)
    scnumap.tl.numap(ref, **QUICK)
    return ref


def _rep(ref) -> Representation:
    return _load(ref, "numap", True)[3]


def _blocks(query, rep, missing_genes="error", chunk_size=100) -> np.ndarray:
    blocks, n = _query_blocks(query, rep, missing_genes, 0.1, chunk_size)
    out = np.concatenate(list(blocks))
    assert out.shape[0] == n
    return out


def _by_hand(query, ref, drop=()) -> np.ndarray:
    """``sc.pp.scale`` with the reference's statistics, then the reference's PCA, in float64."""
    x = np.asarray(query[:, ref.var_names].X, dtype=np.float64)
    std = ref.var["std"].to_numpy(dtype=np.float64)
    z = np.clip((x - ref.var["mean"].to_numpy(dtype=np.float64)) / np.where(std > 0, std, 1.0), -CLIP, CLIP)
    z[:, ref.var_names.get_indexer(list(drop))] = 0.0  # a missing gene: the reference mean
    pcs = np.asarray(ref.varm["PCs"], dtype=np.float64)
    return (z - _column_mean(ref)) @ pcs  # pca_mean: the column mean of the scaled X


def _column_mean(ref) -> np.ndarray:
    return np.asarray(ref.X, dtype=np.float64).mean(axis=0)


def test_scaling_statistics_are_stored(scaled_ref):
    rep = _rep(scaled_ref)
    assert rep.scaled
    assert rep.has_pca
    np.testing.assert_array_equal(rep.var_names, np.asarray(scaled_ref.var_names))
    np.testing.assert_array_equal(rep.scale_mean, scaled_ref.var["mean"].to_numpy().astype(np.float32))
    np.testing.assert_array_equal(rep.scale_std, scaled_ref.var["std"].to_numpy().astype(np.float32))
    assert rep.scale_mean.dtype == rep.scale_std.dtype == np.float32
    assert rep.scale_max == CLIP
    assert np.abs(rep.pca_mean).max() < 0.05  # the scaled X is centred, up to the clipping


def test_query_is_scaled_with_the_reference_statistics(scaled_ref, split):
    query = split[1]
    found = _blocks(query, _rep(scaled_ref))
    expected = _by_hand(query, scaled_ref)
    assert np.abs(expected).max() > 1
    np.testing.assert_allclose(found, expected, atol=1e-4 * np.abs(expected).max())
    # Clipping matters for this query: some of its scaled values lie beyond ±10.
    x = np.asarray(query.X, dtype=np.float64)
    z = (x - scaled_ref.var["mean"].to_numpy()) / scaled_ref.var["std"].to_numpy()
    assert np.abs(z).max() > CLIP
    unclipped = (z - _column_mean(scaled_ref)) @ np.asarray(scaled_ref.varm["PCs"], dtype=np.float64)
    assert np.abs(found - unclipped).max() > 1e-2


def test_reference_cells_unscaled_land_on_their_own_pca_and_embedding(scaled_ref, split):
    """The reference's own log-normalised cells, scaled by the model, give back its X_pca and embedding."""
    own = split[0].copy()
    target = np.asarray(scaled_ref.obsm["X_pca"])
    found = _blocks(own, _rep(scaled_ref))
    np.testing.assert_allclose(found, target, atol=1e-4 * np.abs(target).max())
    scnumap.tl.project(own, scaled_ref, anchor=None, correct=False)
    reference = np.asarray(scaled_ref.obsm["X_numap"])
    np.testing.assert_allclose(own.obsm["X_numap"], reference, atol=1e-3 * np.abs(reference).max())


def test_missing_genes_are_filled_with_the_reference_mean(scaled_ref, split):
    dropped = list(scaled_ref.var_names[[3, 50, 400]])
    query = split[1][:, [g for g in split[1].var_names if g not in dropped]].copy()
    found = _blocks(query, _rep(scaled_ref), missing_genes="zeros")
    expected = _by_hand(split[1], scaled_ref, drop=dropped)
    np.testing.assert_allclose(found, expected, atol=1e-4 * np.abs(expected).max())
    # Filling the unscaled expression with 0 instead would be a different (negative) scaled value.
    assert np.abs(found - _by_hand(split[1], scaled_ref)).max() > 1e-3


def test_label_transfer_needs_the_scaling(scaled_ref, split):
    """Held-out accuracy of ``bulk_labels`` (210 cells, no Unknown calls).

    Measured: 0.790 with the query scaled, 0.710 when the scaling is skipped (the model's
    scale entries removed: the query projected as ``(x - pca_mean) @ PCs``, as before).
    The median mapping score drops from 0.92 to 0.23: the unscaled query is off the
    reference.
    """
    query = split[1]
    truth = query.obs["bulk_labels"].astype(str).to_numpy()
    scaled = scnumap.tl.project(query, scaled_ref, obs="bulk_labels", unknown_threshold=None, copy=True, correct=False)
    skipped_ref = scaled_ref.copy()
    for key in ("scale_mean", "scale_std", "scale_max"):
        del skipped_ref.uns["numap"]["model"]["representation"][key]
    skipped = scnumap.tl.project(
        query, skipped_ref, obs="bulk_labels", unknown_threshold=None, copy=True, correct=False
    )
    accuracy = [np.mean(out.obs["bulk_labels_numap"].astype(str).to_numpy() == truth) for out in (scaled, skipped)]
    assert accuracy[0] >= 0.75
    assert accuracy[0] >= accuracy[1] + 0.05
    scores = [float(np.median(out.obs["numap_mapping_score"])) for out in (scaled, skipped)]
    assert scores[0] > 0.5 > scores[1]


def test_round_trip_through_h5ad(scaled_ref, split, tmp_path):
    path = tmp_path / "ref.h5ad"
    scaled_ref.write_h5ad(path)
    back = anndata.read_h5ad(path)
    before, after = _rep(scaled_ref), _rep(back)
    for key in ("scale_mean", "scale_std", "pca_mean", "pca_loadings"):
        np.testing.assert_array_equal(getattr(after, key), getattr(before, key))
    assert after.scale_max == before.scale_max
    in_memory = scnumap.tl.project(split[1], scaled_ref, copy=True)
    from_file = scnumap.tl.project(split[1], path, copy=True)
    np.testing.assert_array_equal(from_file.obsm["X_numap"], in_memory.obsm["X_numap"])
    np.testing.assert_array_equal(from_file.obs["numap_mapping_score"], in_memory.obs["numap_mapping_score"])


N_GENES = 765


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("scale_std", np.zeros(N_GENES, np.float32), r"representation/scale_std` must be > 0 for every gene, got 0"),
        ("scale_std", np.full(N_GENES, np.nan, np.float32), r"representation/scale_std` contains NaN"),
        ("scale_std", np.ones(N_GENES - 1, np.float32), r"representation/scale_std` must have shape \(765,\)"),
        ("scale_std", KeyError, r"has `scale_mean` but no `scale_std` entry"),
        ("scale_mean", np.ones((N_GENES, 2), np.float32), r"representation/scale_mean` must have shape \(765,\)"),
        ("scale_mean", np.array(["a"] * N_GENES), r"representation/scale_mean` must be numeric"),
        ("scale_max", np.float64(-10.0), r"representation/scale_max` \(the clip value .*\) must be > 0, got -10"),
        ("scale_max", np.float64(np.inf), r"representation/scale_max` contains NaN or infinite"),
    ],
)
def test_tampered_scaling_is_refused(scaled_ref, split, key, value, message):
    ref = scaled_ref.copy()
    ref.uns["numap"] = copy.deepcopy(scaled_ref.uns["numap"])
    entry = ref.uns["numap"]["model"]["representation"]
    if value is KeyError:
        del entry[key]
    else:
        entry[key] = value
    with pytest.raises(ModelFormatError, match=message):
        scnumap.tl.project(split[1], ref, copy=True)


def test_scaling_of_a_representation_without_genes_is_refused():
    entry = Representation("X_scvi", 4).to_dict()
    entry["scale_mean"] = entry["scale_std"] = np.ones(4, np.float32)
    with pytest.raises(ModelFormatError, match=r"representation/scale_mean` is present but .* not come from genes"):
        Representation.from_dict(entry, n_features=4, where=WHERE)


def test_old_models_without_scaling_load_unchanged():
    rng = np.random.default_rng(0)
    entry = Representation(
        "X_pca",
        3,
        has_pca=True,
        var_names=np.array(["a", "b", "c", "d"]),
        pca_loadings=rng.normal(size=(4, 3)).astype(np.float32),
        pca_mean=rng.normal(size=4).astype(np.float32),
    ).to_dict()
    assert not {"scale_mean", "scale_std", "scale_max"} & set(entry)
    rep = Representation.from_dict(entry, n_features=3)
    assert not rep.scaled
    assert rep.scale_std is None
    assert rep.scale_max is None
    assert set(rep.to_dict()) == set(entry)


# --- when X counts as scaled ----------------------------------------------------------------


def _described(ad, monkeypatch) -> tuple[dict, list[str]]:
    """``describe_representation`` of ``ad`` after ``sc.pp.pca``, and its logged warnings."""
    said = []
    monkeypatch.setattr(_representation.logg, "warning", lambda msg, *a, **k: said.append(msg))
    sc.pp.pca(ad, n_comps=20, random_state=0)
    return describe_representation(ad, ad.obsm["X_pca"], "X_pca", 20), said


def test_unscaled_reference_stores_no_scaling(split, monkeypatch):
    rep, said = _described(split[0].copy(), monkeypatch)
    assert bool(rep["has_pca"])
    assert not {"scale_mean", "scale_std", "scale_max"} & set(rep)
    assert said == []


def test_leftover_scale_columns_on_unscaled_x_are_ignored(split, monkeypatch):
    ad = split[0].copy()
    stats = sc.pp.scale(ad, copy=True).var
    ad.var["mean"], ad.var["std"] = stats["mean"], stats["std"]  # X stays log-normalised
    rep, said = _described(ad, monkeypatch)
    assert bool(rep["has_pca"])
    assert "scale_mean" not in rep
    assert len(said) == 1
    assert "`X` does not look scaled: 0% of its" in said[0]


def test_scaling_without_centring_is_named(split, monkeypatch):
    ad = split[0].copy()
    sc.pp.scale(ad, zero_center=False)
    rep, said = _described(ad, monkeypatch)
    assert "scale_mean" not in rep
    assert "sc.pp.scale(zero_center=False)" in said[0]


def test_unclipped_scaling_stores_no_clip_value(split, monkeypatch):
    ad = split[0].copy()
    sc.pp.scale(ad)
    assert ad.X.max() > CLIP
    rep, said = _described(ad, monkeypatch)
    assert said == []
    assert "scale_max" not in rep
    np.testing.assert_array_equal(rep["scale_std"], ad.var["std"].to_numpy().astype(np.float32))


def test_cells_subset_after_scaling_still_count_as_scaled(pbmc, monkeypatch):
    """Scaled on all 700 cells, reference = a random 70 %: its columns are only near 0 and 1."""
    ad = _log_data(pbmc)
    sc.pp.scale(ad, max_value=CLIP)
    ref = ad[np.random.default_rng(1).permutation(ad.n_obs)[:490]].copy()
    assert np.abs(ref.X.mean(axis=0)).max() > 1e-3
    rep, said = _described(ref, monkeypatch)
    assert said == []
    np.testing.assert_array_equal(rep["scale_mean"], ad.var["mean"].to_numpy().astype(np.float32))
    assert float(rep["scale_max"]) == CLIP


def test_model_on_scaled_genes_scales_the_query_too(split):
    """``use_rep='X'`` on scaled genes (≤ 50 genes): the query's genes are scaled before the network."""
    ref = split[0][:, :40].copy()
    sc.pp.scale(ref, max_value=CLIP)
    rep = Representation.from_dict(describe_representation(ref, ref.X, "X", 40), n_features=40)
    assert rep.scaled
    assert rep.scale_max == CLIP
    x = np.asarray(split[1][:, ref.var_names].X, dtype=np.float64)
    expected = np.clip((x - ref.var["mean"].to_numpy()) / ref.var["std"].to_numpy(), -CLIP, CLIP)
    np.testing.assert_allclose(_blocks(split[1], rep), expected, atol=1e-5 * CLIP)
    np.testing.assert_allclose(_blocks(split[0][:, :40].copy(), rep), ref.X, atol=1e-5 * CLIP)


def test_an_already_scaled_query_is_warned_about(scaled_ref, split, monkeypatch):
    """A query scaled on its own (negative values) would be scaled twice: tl.project says so."""
    from scanpy import logging as logg

    warnings = []
    monkeypatch.setattr(logg, "warning", lambda msg, *args, **kwargs: warnings.append(msg))
    query = split[1].copy()
    sc.pp.scale(query, max_value=CLIP)
    scnumap.tl.project(query, scaled_ref, copy=True)
    assert any("it looks scaled already" in w for w in warnings)
    warnings.clear()
    scnumap.tl.project(split[1], scaled_ref, copy=True)  # log data: no warning
    assert not any("looks scaled" in w for w in warnings)
