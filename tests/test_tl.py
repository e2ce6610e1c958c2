import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scanpy as sc

import scnumap
from scnumap.core import metrics

TL_QUICK = {"epochs": 5, "grease_steps": 60, "hidden": (32,), "batch_size": 512}


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
    assert int(ad.uns["numap"]["model"]["format_version"]) == 1


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
    scnumap.tl.project(again, ref, key_added="X_again")
    assert np.abs(again.obsm["X_again"] - ref.obsm["X_numap"]).max() <= 1e-4


def test_h5ad_round_trip_in_fresh_process(ref_query, tmp_path):
    ref, query = ref_query
    before = scnumap.tl.project(query, ref, copy=True).obsm["X_numap"]
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
    out = scnumap.tl.project(query, ref, obs=["bulk_labels", "louvain"], copy=True)
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


def test_other_representation_needs_right_width(pbmc):
    ad = pbmc.copy()
    ad.obsm["X_rep"] = ad.obsm["X_pca"][:, :12]
    sc.pp.neighbors(ad, use_rep="X_rep")
    scnumap.tl.numap(ad, **TL_QUICK)
    q = ad[:50].copy()
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


def test_more_than_8192_cells_through_scanpy_neighbors():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6, size=(6, 20))
    X = (centers[rng.integers(0, 6, 9000)] + rng.normal(size=(9000, 20))).astype(np.float32)
    import anndata

    ad = anndata.AnnData(X)
    sc.pp.neighbors(ad, use_rep="X", random_state=0)
    scnumap.tl.numap(ad, epochs=1, grease_steps=20, hidden=(16,), densmap=False)
    assert ad.obsm["X_numap"].shape == (9000, 2)
    assert np.all(np.isfinite(ad.obsm["X_numap"]))


def test_densmap_default_raises_density_correlation(pbmc):
    ad = pbmc.copy()
    kw = {"epochs": 60, "grease_steps": 300}
    scnumap.tl.numap(ad, densmap=False, key_added="plain", **kw)
    scnumap.tl.numap(ad, **kw)
    X = ad.obsm["X_pca"]
    assert metrics.density_correlation(X, ad.obsm["X_numap"]) >= metrics.density_correlation(X, ad.obsm["plain"]) + 0.2
