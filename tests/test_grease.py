import numpy as np
import pytest
import torch

from scnumap import GrEASE
from scnumap.core.grease import batch_affinity, orthonormalizer
from scnumap.core.metrics import exact_spectral_embedding, grassmann_distance, laplace_kernel_graph
from scnumap.core.scaling import Standardizer


def test_orthonormalizer_whitens_with_canonical_signs():
    Y = torch.randn(200, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W = orthonormalizer(Y)
    Z = Y @ W
    torch.testing.assert_close(Z.T @ Z / 200, torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)
    R = torch.linalg.inv(W)  # = R / sqrt(m): upper triangular, positive diagonal
    assert torch.all(torch.diagonal(R) > 0)
    torch.testing.assert_close(torch.tril(R, -1), torch.zeros_like(R))
    with pytest.raises(ValueError, match="at least 5 rows"):
        orthonormalizer(Y[:3])


def test_batch_affinity_equals_full_graph_on_whole_data(pbmc_pca):
    x = Standardizer.fit(pbmc_pca).apply(pbmc_pca, torch.device("cpu")).double()
    A = batch_affinity(x, 10).numpy()
    W = laplace_kernel_graph(x.numpy(), 10).toarray()
    np.testing.assert_allclose(A, A.T)
    np.testing.assert_allclose(A, W, atol=1e-10)


@pytest.fixture(scope="module")
def grease_pbmc(pbmc_pca):
    return GrEASE(4, random_state=0).fit(pbmc_pca)


def test_grease_matches_exact_eigenvectors(pbmc_pca, grease_pbmc):
    S = grease_pbmc.transform(pbmc_pca)
    exact = exact_spectral_embedding(pbmc_pca, 4, 10)
    assert grassmann_distance(S, exact) <= 0.1
    # the first eigenvector is well separated: matched up to sign individually
    cos = abs(np.corrcoef(S[:, 0], exact[:, 0])[0, 1])
    assert cos > 0.95
    assert np.all(np.diff(grease_pbmc.eigenvalues_) >= 0)


def test_grease_output_is_orthonormal(pbmc_pca, grease_pbmc):
    S = grease_pbmc.transform(pbmc_pca).astype(np.float64)
    np.testing.assert_allclose(S.T @ S / len(S), np.eye(4), atol=0.05)


def test_grease_is_deterministic_and_leaves_input(pbmc_pca):
    X = pbmc_pca.copy()
    a = GrEASE(3, max_steps=30, random_state=1).fit_transform(X)
    b = GrEASE(3, max_steps=30, random_state=1).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(X, pbmc_pca)
    assert a.dtype == np.float32


def test_grease_diffusion_time_scales_columns(pbmc_pca):
    g0 = GrEASE(3, max_steps=30, random_state=1).fit(pbmc_pca)
    g1 = GrEASE(3, max_steps=30, random_state=1, t=2).fit(pbmc_pca)
    ratio = np.std(g1.transform(pbmc_pca), axis=0) / np.std(g0.transform(pbmc_pca), axis=0)
    np.testing.assert_allclose(ratio, (1 - g0.eigenvalues_) ** 2, rtol=1e-3)


def test_grease_errors(pbmc_pca):
    with pytest.raises(RuntimeError, match="not fitted yet"):
        GrEASE(2).transform(pbmc_pca)
    with pytest.raises(ValueError, match=r"more samples than `n_components \+ 1`"):
        GrEASE(5).fit(pbmc_pca[:4])
    g = GrEASE(2, max_steps=5).fit(pbmc_pca)
    with pytest.raises(ValueError, match="has 3 features but GrEASE was fitted on 50"):
        g.transform(pbmc_pca[:, :3])
