import numpy as np
import pytest
import scipy.sparse as sp
import torch
from settings import QUICK

from scnumap import NUMAP
from scnumap.core import metrics


def test_fit_transform_shapes_and_dtype(blobs, fitted_blobs):
    E = fitted_blobs.embedding_
    assert E.shape == (300, 2)
    assert E.dtype == np.float32
    assert np.all(np.isfinite(E))
    one = fitted_blobs.transform(blobs[:1])
    assert one.shape == (1, 2)
    np.testing.assert_allclose(one[0], E[0], atol=1e-5)


def test_transform_is_deterministic_and_chunk_invariant(blobs, fitted_blobs):
    a = fitted_blobs.transform(blobs)
    b = fitted_blobs.transform(blobs, chunk_size=7)
    np.testing.assert_allclose(a, b, atol=1e-4)  # float32 matmul blocking differs per chunk
    np.testing.assert_array_equal(a, fitted_blobs.transform(blobs))


def test_same_seed_same_embedding_and_input_untouched(blobs):
    X = blobs.copy()
    a = NUMAP(random_state=5, **QUICK).fit_transform(X)
    b = NUMAP(random_state=5, **QUICK).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(X, blobs)
    c = NUMAP(random_state=6, **QUICK).fit_transform(X)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ["csr", "csc", "coo", "torch", "float64", "int"])
def test_accepts_sparse_torch_and_dtypes(blobs, fitted_blobs, kind):
    X = {
        "csr": sp.csr_matrix(blobs),
        "csc": sp.csc_matrix(blobs),
        "coo": sp.coo_matrix(blobs),
        "torch": torch.from_numpy(blobs),
        "float64": blobs.astype(np.float64),
        "int": np.round(blobs).astype(np.int64),
    }[kind]
    out = fitted_blobs.transform(X)
    ref = fitted_blobs.transform(np.round(blobs) if kind == "int" else blobs)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_fit_on_sparse_input(blobs):
    E = NUMAP(random_state=0, **QUICK).fit_transform(sp.csr_matrix(blobs))
    assert E.shape == (300, 2)
    assert np.all(np.isfinite(E))


def test_clusters_are_separated(blobs, fitted_blobs):
    labels = np.repeat(np.arange(3), 100)
    acc = metrics.label_transfer_accuracy(
        fitted_blobs.embedding_[::2], labels[::2], fitted_blobs.embedding_[1::2], labels[1::2]
    )
    assert acc > 0.99


def test_loss_goes_down(fitted_blobs):
    hist = fitted_blobs.loss_history_
    assert np.mean(hist[-2:]) < hist[0]


def test_precomputed_graph_is_used(pbmc, pbmc_pca):
    m = NUMAP(random_state=0, **QUICK).fit(
        pbmc_pca, graph=pbmc.obsp["connectivities"], knn_distances=pbmc.obsp["distances"]
    )
    assert abs(m.graph_ - pbmc.obsp["connectivities"]).max() < 1e-6


def test_errors_name_value_and_fix(blobs, fitted_blobs):
    with pytest.raises(RuntimeError, match="not fitted yet; call `fit"):
        NUMAP().transform(blobs)
    with pytest.raises(ValueError, match="has 3 features but NUMAP was fitted on 10"):
        fitted_blobs.transform(blobs[:, :3])
    with pytest.raises(ValueError, match=r"`n_neighbors` must be < n_samples \(10\), got 15"):
        NUMAP().fit(blobs[:10])
    bad = blobs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        NUMAP().fit(bad)
    with pytest.raises(ValueError, match="1-D array"):
        fitted_blobs.transform(blobs[0])
    with pytest.raises(ValueError, match="`metric` must be one of"):
        NUMAP(metric="hamming").fit(blobs)
    with pytest.raises(TypeError, match="`densmap` must be True or False"):
        NUMAP(densmap="yes").fit(blobs)
    with pytest.raises(ValueError, match=r"`dens_frac` must be <= 1.0, got 2.0"):
        NUMAP(dens_frac=2.0).fit(blobs)
    with (
        pytest.raises(ValueError, match="asks for CUDA but torch sees no GPU")
        if not torch.cuda.is_available()
        else pytest.raises(ValueError, match="must be 'auto'")
    ):
        NUMAP(device="cuda" if not torch.cuda.is_available() else "tpu", **QUICK).fit(blobs)


def test_automatic_budget_is_larger_on_small_graphs():
    m = NUMAP(batch_size=1000)
    assert m.n_steps(n_edges=10_000, n_obs=500) == 3000  # 300 passes
    assert m.n_steps(n_edges=100, n_obs=10) == 1000  # floor
    assert m.n_steps(n_edges=200_000, n_obs=10_000) == 8000  # small-data cap
    assert m.n_steps(n_edges=200_000, n_obs=10_001) == 4000  # large-data cap
    assert NUMAP(batch_size=1000, epochs=2).n_steps(n_edges=200_000, n_obs=10_001) == 400


def test_divergence_is_reported(blobs):
    with pytest.raises(FloatingPointError, match="lower `lr`"):
        NUMAP(lr=1e30, random_state=0, **QUICK).fit(blobs * 1e6)


def test_quality_on_pbmc68k_reduced(pbmc_pca, pbmc):
    """Trustworthiness and kNN preservation close to umap-learn's (0.928 / 0.407 here)."""
    m = NUMAP(random_state=0, epochs=60, grease_steps=300).fit(pbmc_pca)
    assert metrics.trustworthiness(pbmc_pca, m.embedding_) >= 0.90
    assert metrics.knn_preservation(pbmc_pca, m.embedding_) >= 0.33
    labels = pbmc.obs["bulk_labels"].to_numpy()
    assert metrics.centroid_distance_spearman(pbmc_pca, m.embedding_, labels) > 0.4


@pytest.mark.parametrize("subsample", [10000, 100])
def test_densmap_keeps_local_density(pbmc_pca, subsample):
    """All vertices per step (exact), or 100 of 700 (neighbours via the refreshed positions)."""
    kw = {"random_state": 0, "epochs": 60, "grease_steps": 300}
    plain = NUMAP(**kw).fit_transform(pbmc_pca)
    dens = NUMAP(densmap=True, dens_subsample_size=subsample, **kw).fit_transform(pbmc_pca)
    r_plain = metrics.density_correlation(pbmc_pca, plain)
    r_dens = metrics.density_correlation(pbmc_pca, dens)
    assert r_dens >= r_plain + 0.2
    assert r_dens >= 0.7
    assert metrics.trustworthiness(pbmc_pca, dens) >= 0.88


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_transform(blobs):
    m = NUMAP(device="cuda", **QUICK).fit(blobs)
    assert m.transform(blobs).shape == (300, 2)
