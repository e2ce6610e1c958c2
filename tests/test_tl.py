import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import scnumap
from scnumap.core import metrics
from scnumap.core.model_io import FORMAT_VERSION, ModelFormatError
from scnumap.tl._project import load_reference

TL_QUICK = {"epochs": 40, "grease_steps": 60, "hidden": (32,), "batch_size": 512}


@pytest.fixture(scope="module")
def pbmc_numap(pbmc):
    """pbmc68k_reduced after a quick tl.numap with the defaults (DensMAP on)."""
    ad = pbmc.copy()
    scnumap.tl.numap(ad, **TL_QUICK)
    return ad


@pytest.fixture(scope="module")
def ref_query(pbmc):
    """pbmc68k_reduced split 70/30 by cells; PCA recomputed on the reference by scanpy."""
    rng = np.random.default_rng(0)
    idx = rng.permutation(pbmc.n_obs)
    ref = pbmc[idx[:490]].copy()
    query = pbmc[idx[490:]].copy()
    for ad in (ref, query):
        del ad.obsm["X_pca"], ad.uns["neighbors"], ad.obsp["connectivities"], ad.obsp["distances"]
        ad.X = np.nan_to_num(ad.X)
    sc.pp.pca(ref, n_comps=30, random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)
    scnumap.tl.numap(ref, random_state=0, **TL_QUICK)
    return ref, query


def test_numap_writes_documented_keys_only(pbmc, pbmc_numap):
    ad = pbmc_numap
    assert set(ad.obsm) - set(pbmc.obsm) == {"X_numap"}
    assert set(ad.uns) - set(pbmc.uns) == {"numap"}
    assert set(ad.obsp) == set(pbmc.obsp)
    assert set(ad.obs) == set(pbmc.obs)
    assert ad.obsm["X_numap"].shape == (700, 2)
    assert ad.obsm["X_numap"].dtype == np.float32
    params = ad.uns["numap"]["params"]
    assert params["densmap"] is True
    assert params["neighbors_key"] == "neighbors"
    assert params["use_rep"] == "X_pca"
    assert int(ad.uns["numap"]["model"]["format_version"]) == FORMAT_VERSION
    # the setting as passed (automatic would be -1, as ``epochs``), the count in the model
    assert params["n_spectral_components"] == 10
    assert int(ad.uns["numap"]["model"]["n_spectral_components"]) == 10


def test_automatic_spectral_count_is_stored_as_minus_one_and_resolved_in_the_model(pbmc):
    out = scnumap.tl.numap(pbmc.copy(), copy=True, n_spectral_components=None, densmap=False, **TL_QUICK)
    assert out.uns["numap"]["params"]["n_spectral_components"] == -1
    assert int(out.uns["numap"]["model"]["n_spectral_components"]) == 10  # 700 cells: the floor


def test_copy_and_key_added(pbmc):
    ad = pbmc.copy()
    out = scnumap.tl.numap(ad, copy=True, key_added="emb", densmap=False, **TL_QUICK)
    assert "emb" in out.obsm
    assert "emb" in out.uns
    assert out.uns["emb"]["params"]["densmap"] is False
    assert "emb" not in ad.obsm
    assert "emb" not in ad.uns
    assert set(ad.obsm) == set(pbmc.obsm)
    assert set(ad.uns) == set(pbmc.uns)


def test_neighbors_key_missing_is_an_error(pbmc):
    with pytest.raises(KeyError, match=r"`neighbors_key='nope'` is not in `adata\.uns`"):
        scnumap.tl.numap(pbmc.copy(), neighbors_key="nope", **TL_QUICK)


def test_builds_graph_when_missing(pbmc):
    ad = pbmc.copy()
    del ad.uns["neighbors"], ad.obsp["connectivities"], ad.obsp["distances"]
    scnumap.tl.numap(ad, **TL_QUICK)
    assert "connectivities" in ad.obsp
    assert "X_numap" in ad.obsm


def test_uses_the_neighbors_representation(pbmc):
    ad = pbmc.copy()
    sc.pp.neighbors(ad, n_pcs=20, key_added="nb20")
    scnumap.tl.numap(ad, neighbors_key="nb20", **TL_QUICK)
    assert int(ad.uns["numap"]["model"]["n_features"]) == 20


def test_model_rebuilds_pca_and_reproduces_reference(ref_query):
    ref, _ = ref_query
    rep = ref.uns["numap"]["model"]["representation"]
    assert bool(rep["has_pca"])
    assert rep["pca_loadings"].shape[1] == 30
    again = ref.copy()
    scnumap.tl.project(again, ref, key_added="X_again", correct=False)
    assert np.abs(again.obsm["X_again"] - ref.obsm["X_numap"]).max() <= 1e-4


def test_h5ad_round_trip_in_fresh_process(ref_query, tmp_path):
    ref, query = ref_query
    before = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True).obsm["X_numap"]
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    code = textwrap.dedent(f"""
        import anndata, numpy as np, scnumap
        q = anndata.read_h5ad({str(tmp_path / "query.h5ad")!r})
        scnumap.tl.project(q, {str(tmp_path / "ref.h5ad")!r}, obs="bulk_labels")
        np.save({str(tmp_path / "out.npy")!r}, q.obsm["X_numap"])
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = np.load(tmp_path / "out.npy")
    assert np.abs(after - before).max() <= 1e-5


def test_label_transfer(ref_query):
    ref, query = ref_query
    # the network's placement (not moved by the labels): the embedded check below tests the model
    out = scnumap.tl.project(query, ref, obs=["bulk_labels", "louvain"], place_by_label=False, copy=True)
    for col in ("bulk_labels", "louvain"):
        assert f"{col}_numap" in out.obs
        assert f"{col}_numap_confidence" in out.obs
        conf = out.obs[f"{col}_numap_confidence"]
        assert conf.between(0, 1).all()
    acc = np.mean(
        out.obs["bulk_labels_numap"].astype(str).to_numpy() == query.obs["bulk_labels"].astype(str).to_numpy()
    )
    assert acc >= 0.7
    assert "X_numap" not in query.obsm  # copy=True left the query alone
    # the vote above runs in PCA space; this checks the model: projected cells land among
    # reference cells of their own label in the 2-D embedding (trained: 0.77; without
    # recentring, the encoder's last layer shuffled: 0.62; zeroed, which leaves the GrEASE
    # start, 0.71, negated 0.70, since GrEASE's columns are aligned to the exact
    # eigenvectors; 0.61-0.62 before; see test_broken_encoder_...)
    embedded = metrics.label_transfer_accuracy(
        ref.obsm["X_numap"], ref.obs["bulk_labels"], out.obsm["X_numap"], query.obs["bulk_labels"]
    )
    assert embedded >= EMBEDDED_ACCURACY


#: Threshold for the kNN accuracy of projected query cells in the reference embedding:
#: between a broken model's (0.62, above) and the trained one's (0.77).
EMBEDDED_ACCURACY = 0.70


def test_broken_encoder_fails_the_embedded_label_check(ref_query):
    ref, query = ref_query
    broken = ref.copy()
    layers = broken.uns["numap"]["model"]["encoder"]["layers"]
    last = max(int(name.split("_")[1]) for name in layers)
    weight = layers[f"linear_{last}_weight"]
    layers[f"linear_{last}_weight"] = np.random.default_rng(0).permutation(weight.ravel()).reshape(weight.shape)
    # the network's own placement: recentring moves every query cell by its region's mean
    # offset from the reference and would hide most of the damage (measured: 0.76)
    out = scnumap.tl.project(query, broken, recentre=False, copy=True)
    embedded = metrics.label_transfer_accuracy(
        ref.obsm["X_numap"], ref.obs["bulk_labels"], out.obsm["X_numap"], query.obs["bulk_labels"]
    )
    assert embedded < EMBEDDED_ACCURACY


def test_labels_follow_reference_categories_and_key(ref_query):
    ref, query = ref_query
    ref = ref.copy()
    order = list(reversed(ref.obs["bulk_labels"].cat.categories))
    ref.obs["bulk_labels"] = ref.obs["bulk_labels"].cat.reorder_categories(order)
    ref.obs["plain"] = ref.obs["louvain"].astype(str).to_numpy()
    q = query.copy()
    q.obs["bulk_labels"] = q.obs["bulk_labels"].cat.set_categories(order)
    scnumap.tl.project(q, ref, obs=["bulk_labels", "plain"])
    assert list(q.obs["bulk_labels_numap"].cat.categories) == [*order, "Unknown"]
    transferred = q.obs["bulk_labels_numap"].astype(str).to_numpy()
    assert (transferred == q.obs["bulk_labels"].astype(str).to_numpy()).mean() >= 0.7
    assert list(q.obs["plain_numap"].cat.categories) == [*sorted(set(ref.obs["plain"])), "Unknown"]
    first = q.obs["bulk_labels_numap"].copy()
    scnumap.tl.project(q, ref, obs="bulk_labels", key_added="X_second", label_space="embedding")
    assert {"X_numap", "X_second"} <= set(q.obsm)
    assert {"bulk_labels_second", "bulk_labels_second_confidence"} <= set(q.obs)
    assert q.obs["bulk_labels_numap"].equals(first)  # the first projection is kept
    other = ref.copy()
    other.uns["emb"], other.obsm["emb"] = other.uns.pop("numap"), other.obsm.pop("X_numap")
    scnumap.tl.project(q, other, obs="bulk_labels", ref_key="emb")
    np.testing.assert_array_equal(q.obsm["emb"], q.obsm["X_numap"])
    assert q.obs["bulk_labels_emb"].equals(first)


def test_tampered_representation_writes_nothing(ref_query):
    ref, query = ref_query
    bad = ref.copy()
    rep = bad.uns["numap"]["model"]["representation"]
    rep["pca_loadings"] = rep["pca_loadings"][:, :1]
    q = query.copy()
    with pytest.raises(
        ModelFormatError, match=r"`uns\['numap'\]\['model'\]/representation/pca_loadings` must have shape \(\d+, 30\)"
    ):
        scnumap.tl.project(q, bad, obs="bulk_labels")
    bad.uns["numap"]["model"]["representation"] = {**ref.uns["numap"]["model"]["representation"], "n_dims": 1}
    with pytest.raises(ModelFormatError, match="representation/n_dims` is 1 but the network takes 30 inputs"):
        scnumap.tl.project(q, bad)
    assert "X_numap" not in q.obsm
    assert set(q.obs) == set(query.obs)


def test_pca_not_from_genes_is_refused_unless_declared(pbmc_numap):
    ref = pbmc_numap  # pbmc68k_reduced's X_pca is not (X - mean) @ PCs
    assert not bool(ref.uns["numap"]["model"]["representation"]["has_pca"])
    q = ref[:50].copy()
    del q.obsm["X_numap"]
    with pytest.raises(ValueError, match=r"sc\.pp\.pca\(adata_ref\).*query_pca_in_reference_basis=True"):
        scnumap.tl.project(q, ref)
    assert "X_numap" not in q.obsm
    scnumap.tl.project(q, ref, query_pca_in_reference_basis=True, correct=False)
    np.testing.assert_allclose(q.obsm["X_numap"], ref.obsm["X_numap"][:50], atol=1e-4)


@pytest.fixture(scope="module")
def genes_ref_query(pbmc):
    """40 genes (<= 50: Scanpy's rule uses X), sparse X, a quick tl.numap."""
    ref, query = pbmc[:500, :40].copy(), pbmc[500:, :40].copy()
    for ad in (ref, query):
        ad.X = sp.csr_matrix(np.nan_to_num(ad.X))
        del ad.uns["neighbors"], ad.obsp["connectivities"], ad.obsp["distances"]
    sc.pp.neighbors(ref, random_state=0)
    scnumap.tl.numap(ref, random_state=0, **TL_QUICK)
    return ref, query


def test_sparse_gene_space_reference(genes_ref_query, tmp_path):
    ref, query = genes_ref_query
    assert str(ref.uns["numap"]["model"]["representation"]["use_rep"]) == "X"
    sparse = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True)
    dense_ref, dense_query = ref.copy(), query.copy()
    dense_ref.X, dense_query.X = ref.X.toarray(), query.X.toarray()
    dense = scnumap.tl.project(dense_query, dense_ref, obs="bulk_labels", copy=True)
    np.testing.assert_allclose(sparse.obsm["X_numap"], dense.obsm["X_numap"], atol=1e-5)
    assert np.mean(sparse.obs["bulk_labels_numap"] == dense.obs["bulk_labels_numap"]) >= 0.98
    # 40 weakly informative genes: the vote is right for 0.455 of the cells (10 labels, largest 0.325)
    assert np.mean(sparse.obs["bulk_labels_numap"].astype(str) == query.obs["bulk_labels"].astype(str)) >= 0.4
    for name, ad in (("sparse", ref), ("dense", dense_ref)):
        ad.write_h5ad(tmp_path / f"{name}.h5ad")
        out = scnumap.tl.project(query, tmp_path / f"{name}.h5ad", obs="bulk_labels", copy=True)
        np.testing.assert_allclose(out.obsm["X_numap"], sparse.obsm["X_numap"], atol=1e-5)
        assert out.obs["bulk_labels_numap"].equals(sparse.obs["bulk_labels_numap"])


def test_reference_path_is_read_selectively(ref_query, tmp_path):
    ref, query = ref_query
    big = ref.copy()
    big.layers["counts"] = np.ones(big.shape, dtype=np.float32)
    big.obsm["X_unused"] = np.zeros((big.n_obs, 3), dtype=np.float32)
    big.write_h5ad(tmp_path / "ref.h5ad")
    loaded, entry, model = load_reference(tmp_path / "ref.h5ad")
    assert loaded.X is None
    assert not loaded.layers
    assert not loaded.obsp
    assert not loaded.varm
    assert set(loaded.obsm) == {"X_numap", "X_pca"}
    assert set(loaded.uns) == {"numap"} | {k for k in ref.uns if k.endswith("_colors")}
    assert model.n_features_in_ == 30
    assert "representation" in entry
    out = scnumap.tl.project(query, tmp_path / "ref.h5ad", obs="bulk_labels", copy=True)
    again = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True)
    np.testing.assert_allclose(out.obsm["X_numap"], again.obsm["X_numap"], atol=1e-6)
    assert out.obs["bulk_labels_numap"].equals(again.obs["bulk_labels_numap"])
    (tmp_path / "ref.h5ad").unlink()  # the file was closed


def test_a_query_within_the_sample_goes_through_the_network_once(ref_query, monkeypatch):
    """A query no larger than the query sample (here 210 cells) is embedded once: the
    projection reuses the placements the recentring made of the same rows, and they equal
    those of a second pass."""
    from scnumap.core.numap import NUMAP
    from scnumap.core.projection import BlockProjector

    ref, query = ref_query
    embed = NUMAP.transform_blocks
    calls = []

    def counted(self, blocks, n_rows):
        calls.append(n_rows)
        return embed(self, blocks, n_rows)

    monkeypatch.setattr(NUMAP, "transform_blocks", counted)
    once = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True)
    assert calls == [query.n_obs]

    def embedded_again(self, block, positions):
        return embed(self.model, [block], len(block))

    monkeypatch.setattr(BlockProjector, "_placed", embedded_again)
    again = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True)
    assert calls == [query.n_obs, query.n_obs]  # the second call's recentring (its projection is not counted)
    np.testing.assert_allclose(once.obsm["X_numap"], again.obsm["X_numap"], atol=1e-5)
    np.testing.assert_array_equal(once.obs["bulk_labels_numap"].to_numpy(), again.obs["bulk_labels_numap"].to_numpy())


def test_project_errors(ref_query, pbmc):
    ref, query = ref_query
    genes = ref.uns["numap"]["model"]["representation"]["var_names"]
    q = query[:, ~query.var_names.isin(genes[:10])].copy()
    with pytest.raises(
        ValueError, match=rf"10 of the reference's {len(genes)} genes are missing from the query: {genes[0]}"
    ):
        scnumap.tl.project(q, ref)
    assert "X_numap" not in q.obsm
    scnumap.tl.project(q, ref, missing_genes="zeros")
    assert q.obsm["X_numap"].shape == (q.n_obs, 2)
    with pytest.raises(ValueError, match="no NUMAP model"):
        scnumap.tl.project(query.copy(), pbmc)
    with pytest.raises(KeyError, match="`obs='nope'` is not a column"):
        scnumap.tl.project(query.copy(), ref, obs="nope")


def test_other_representation_needs_right_width(pbmc, tmp_path):
    ad = pbmc.copy()
    ad.obsm["X_rep"] = ad.obsm["X_pca"][:, :12]
    sc.pp.neighbors(ad, use_rep="X_rep")
    scnumap.tl.numap(ad, **TL_QUICK)
    ad.write_h5ad(tmp_path / "ref.h5ad")
    q = ad[:50].copy()
    del q.obsm["X_numap"]
    scnumap.tl.project(q, tmp_path / "ref.h5ad", obs="bulk_labels", correct=False)
    np.testing.assert_allclose(q.obsm["X_numap"], ad.obsm["X_numap"][:50], atol=1e-4)
    q.obsm["X_rep"] = q.obsm["X_rep"][:, :5]
    with pytest.raises(ValueError, match="has 5 columns; the reference model expects 12"):
        scnumap.tl.project(q, ad)
    del q.obsm["X_rep"]
    with pytest.raises(ValueError, match=r"trained on `obsm\['X_rep'\]`, which the query lacks"):
        scnumap.tl.project(q, ad)


def test_key_added_collision_overwrites(pbmc_numap):
    ad = pbmc_numap.copy()
    ad.obsm["X_numap"] = np.zeros((ad.n_obs, 2), dtype=np.float32)
    scnumap.tl.numap(ad, densmap=False, **TL_QUICK)
    assert np.abs(ad.obsm["X_numap"]).max() > 0
    assert ad.uns["numap"]["params"]["densmap"] is False


def test_tampered_model_writes_nothing(ref_query):
    ref, query = ref_query
    bad = ref.copy()
    bad.uns["numap"]["model"]["encoder"]["layers"]["linear_0_weight"] = np.zeros((3, 3), dtype=np.float32)
    q = query.copy()
    with pytest.raises(ValueError, match="encoder/layers/linear_0"):
        scnumap.tl.project(q, bad)
    assert "X_numap" not in q.obsm


@pytest.mark.slow
def test_more_than_8192_cells_through_scanpy_neighbors():
    """Why pyproject.toml pins ``pynndescent<0.7``: Scanpy (<= 1.11.5, the newest on the index)
    cannot read the ``csr_array`` graph that pynndescent 0.7.0 returns. With 0.7.0 installed,
    ``sc.pp.neighbors`` above 8,192 cells (where Scanpy switches from an exact search to
    pynndescent) raises ``AttributeError: 'csr_array' object has no attribute 'getnnz'``, and so
    does ``tl.numap`` without a graph. Drop the pin once a Scanpy release reads it."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6, size=(6, 20))
    X = (centers[rng.integers(0, 6, 9000)] + rng.normal(size=(9000, 20))).astype(np.float32)
    import anndata

    ad = anndata.AnnData(X)
    sc.pp.neighbors(ad, use_rep="X", random_state=0)  # pynndescent above 8,192 cells
    assert ad.obsp["connectivities"].shape == (9000, 9000)
    assert ad.obsp["connectivities"].nnz > 9000
    scnumap.tl.numap(ad, epochs=1, grease_steps=20, hidden=(16,), densmap=False)
    assert ad.obsm["X_numap"].shape == (9000, 2)
    assert np.all(np.isfinite(ad.obsm["X_numap"]))


@pytest.mark.slow
def test_densmap_default_raises_density_correlation(pbmc):
    ad = pbmc.copy()
    kw = {"epochs": 60, "grease_steps": 300}
    scnumap.tl.numap(ad, densmap=False, key_added="plain", **kw)
    scnumap.tl.numap(ad, **kw)
    X = ad.obsm["X_pca"]
    assert metrics.density_correlation(X, ad.obsm["X_numap"]) >= metrics.density_correlation(X, ad.obsm["plain"]) + 0.2
