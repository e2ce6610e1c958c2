"""Messy input and faults: clear errors, finite embeddings, nothing half-written."""

import anndata
import numpy as np
import pytest
from settings import QUICK

import scnumap
from scnumap import NUMAP
from scnumap.core import metrics


def _labels():
    return np.repeat(np.arange(3), 100)


@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_huge_and_tiny_scales_embed_the_same_clusters(blobs, scale):
    E = NUMAP(random_state=0, **QUICK).fit_transform(blobs * scale)
    assert np.all(np.isfinite(E))
    y = _labels()
    assert metrics.label_transfer_accuracy(E[::2], y[::2], E[1::2], y[1::2]) > 0.95


def test_duplicates_zero_cells_and_constant_features(blobs):
    X = np.concatenate([blobs, blobs[:50], np.zeros((20, 10), dtype=np.float32)])
    X[:, 3] = 7.0  # a constant feature
    E = NUMAP(random_state=0, **QUICK).fit_transform(X)
    assert E.shape == (370, 2)
    assert np.all(np.isfinite(E))
    np.testing.assert_allclose(E[300:350], E[:50], atol=1e-5)  # duplicates land together


def test_disconnected_components_stay_apart():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(150, 5)), rng.normal(size=(150, 5)) + 1000]).astype(np.float32)
    E = NUMAP(random_state=0, **QUICK).fit_transform(X)
    assert np.all(np.isfinite(E))
    y = np.repeat([0, 1], 150)
    assert metrics.label_transfer_accuracy(E[::2], y[::2], E[1::2], y[1::2]) == 1.0


def test_too_few_cells_errors():
    with pytest.raises(ValueError, match=r"`n_neighbors` must be < n_samples \(1\)"):
        NUMAP().fit(np.ones((1, 4)))
    with pytest.raises(ValueError, match="no samples"):
        NUMAP().fit(np.ones((0, 4)))


def test_interrupt_during_training_leaves_adata_clean(pbmc, monkeypatch):
    import scnumap.core.numap as core_numap

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(core_numap, "train_embedding", interrupted)
    ad = pbmc.copy()
    with pytest.raises(KeyboardInterrupt):
        scnumap.tl.numap(ad, **QUICK)
    assert "X_numap" not in ad.obsm
    assert "numap" not in ad.uns


def test_empty_query_is_an_error(pbmc):
    ref = pbmc.copy()
    with pytest.raises(ValueError, match="has no cells"):
        scnumap.tl.project(anndata.AnnData(np.zeros((0, ref.n_vars), dtype=np.float32)), ref)


@pytest.mark.parametrize("n_cells", [0, 1, 5])
def test_tl_numap_on_too_few_cells_names_the_count(n_cells):
    ad = anndata.AnnData(np.random.default_rng(0).random((n_cells, 20)).astype(np.float32))
    with pytest.raises(ValueError, match=rf"`adata` has {n_cells} cells; NUMAP needs at least 13"):
        scnumap.tl.numap(ad, **QUICK)
    assert "X_numap" not in ad.obsm
    assert "neighbors" not in ad.uns


def test_key_added_collision_is_logged(pbmc, monkeypatch):
    import scnumap.tl._numap as tl_numap

    said = []
    monkeypatch.setattr(tl_numap.logg, "info", lambda msg, *a, **k: said.append(msg))
    ad = pbmc.copy()
    ad.obsm["X_numap"] = np.zeros((ad.n_obs, 2), dtype=np.float32)
    scnumap.tl.numap(ad, densmap=False, **QUICK)
    assert "    overwriting existing 'X_numap'" in said
    assert np.abs(ad.obsm["X_numap"]).max() > 0


def test_tl_numap_follows_the_graph_metric(pbmc, monkeypatch):
    """A cosine graph trains a cosine NUMAP (GrEASE affinity and DensMAP radii), recorded in uns."""
    import scanpy as sc

    import scnumap.tl._numap as tl_numap

    fitted = []

    class Recording(NUMAP):
        def fit(self, *args, **kwargs):
            fitted.append(self)
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(tl_numap, "NUMAP", Recording)
    ad = pbmc.copy()
    sc.pp.neighbors(ad, metric="cosine", random_state=0)
    scnumap.tl.numap(ad, **QUICK)
    assert fitted[0].metric == "cosine"
    assert fitted[0].grease_.metric_ == "cosine"
    assert ad.uns["numap"]["params"]["metric"] == "cosine"
    ad.uns["neighbors"]["params"]["metric"] = "cityblock"  # scipy's name, same metric
    scnumap.tl.numap(ad, densmap=False, **QUICK)
    assert fitted[1].metric == "manhattan"
    assert ad.uns["numap"]["params"]["metric"] == "manhattan"


def test_tl_numap_rejects_a_graph_metric_it_cannot_follow(pbmc):
    ad = pbmc.copy()
    ad.uns["neighbors"]["params"]["metric"] = "correlation"
    with pytest.raises(ValueError, match=r"built with metric='correlation'.*metric='euclidean'"):
        scnumap.tl.numap(ad, **QUICK)
    assert "X_numap" not in ad.obsm
