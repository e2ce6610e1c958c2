import numpy as np
import pytest
import torch

import scnumap.core.grease as grease_module
from scnumap import GrEASE
from scnumap.core.grease import (
    MAX_SEPARATION_WALK,
    batch_affinity,
    exact_eigenpairs,
    exact_eigenvectors,
    holdout_size,
    orthonormalizer,
    pairwise_distances,
    separation_walk_steps,
    span_loss,
    target_overlaps,
    walk_loss,
)
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


def _exact_eigenvalues(X, k: int) -> np.ndarray:
    """Bottom ``k`` non-trivial eigenvalues of the same kind of graph, from ``eigsh``."""
    return exact_spectral_embedding(X, k, 10, return_eigenvalues=True)[1]


@pytest.mark.parametrize("chunk_size", [2048, 64])
def test_batch_affinity_equals_full_graph_on_whole_data(pbmc_pca, chunk_size):
    x = Standardizer.fit(pbmc_pca).apply(pbmc_pca, torch.device("cpu")).double()
    A = batch_affinity(x, 10, chunk_size=chunk_size).to_dense().numpy()
    W = laplace_kernel_graph(x.numpy(), 10).toarray()
    np.testing.assert_allclose(A, A.T)
    np.testing.assert_allclose(A, W, atol=1e-10)


def _walk_loss_through_autograd(Y, A, n_steps):
    A = A.to_dense()
    degree = A.sum(dim=1)
    Z = Y
    for _ in range(n_steps):
        Z = 0.5 * (Z + A @ Z / degree[:, None])
    gram = Y.T @ (degree[:, None] * Y)
    return Y.shape[1] - torch.trace(torch.linalg.solve(gram, Y.T @ (degree[:, None] * Z)))


def test_walk_loss_value_and_gradient_match_autograd_through_the_walk():
    gen = torch.Generator().manual_seed(0)
    A = batch_affinity(torch.randn(80, 5, generator=gen, dtype=torch.float64), 6)
    Y = torch.randn(80, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = walk_loss(Y, A, 9)
    reference = _walk_loss_through_autograd(Y, A, 9)
    torch.testing.assert_close(loss, reference, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.autograd.grad(loss, Y)[0], torch.autograd.grad(reference, Y)[0], atol=1e-8, rtol=0)


def test_walk_loss_is_minimised_by_the_bottom_random_walk_eigenvectors():
    gen = torch.Generator().manual_seed(1)
    A = batch_affinity(torch.randn(120, 3, generator=gen, dtype=torch.float64), 8)
    dense = A.to_dense()
    degree = dense.sum(dim=1)
    # eigenvectors of I - D^-1 A from the symmetric form
    sym = torch.eye(120, dtype=torch.float64) - dense / degree.sqrt()[:, None] / degree.sqrt()[None, :]
    evals, evecs = torch.linalg.eigh(sym)
    bottom = evecs[:, :4] / degree.sqrt()[:, None]
    expected = float(torch.sum(1 - (1 - evals[:4] / 2) ** 16))
    assert float(walk_loss(bottom, A, 16)) == pytest.approx(expected, abs=1e-7)
    # any other subspace does worse; a collapsed (rank-deficient) output is not rewarded
    other = torch.randn(120, 4, generator=gen, dtype=torch.float64)
    assert float(walk_loss(other, A, 16)) > expected + 0.1
    collapsed = torch.cat([bottom[:, :3], bottom[:, :1] * (1 + 1e-12)], dim=1)
    assert float(walk_loss(collapsed, A, 16)) > expected


@pytest.fixture(scope="module")
def grease_pbmc(pbmc_pca):
    return GrEASE(4, random_state=0).fit(pbmc_pca)


@pytest.fixture(scope="module")
def grease_pbmc_walk(pbmc_pca):
    return GrEASE(4, solver="walk", random_state=0).fit(pbmc_pca)


@pytest.mark.parametrize("fitted", ["grease_pbmc", "grease_pbmc_walk"])
def test_grease_matches_exact_eigenvectors(pbmc_pca, fitted, request):
    grease_pbmc = request.getfixturevalue(fitted)
    assert grease_pbmc.solver_ == ("walk" if fitted.endswith("walk") else "exact")
    S = grease_pbmc.transform(pbmc_pca)
    # the random-walk eigenvectors it learns (measured 0.0006 with either solver), and the
    # symmetric Laplacian's, which differ from them by the degree weighting (measured 0.051)
    walk = exact_spectral_embedding(pbmc_pca, 4, 10, random_walk=True)
    assert grassmann_distance(S, walk) <= 0.01
    assert grassmann_distance(S, exact_spectral_embedding(pbmc_pca, 4, 10)) <= 0.1
    # each eigenvector is matched individually, up to sign
    for j in range(4):
        assert abs(np.corrcoef(S[:, j], walk[:, j])[0, 1]) > 0.95
    assert np.all(np.diff(grease_pbmc.eigenvalues_) >= 0)
    # eigenvalue estimates (measured within 0.1 % of eigsh's)
    np.testing.assert_allclose(grease_pbmc.eigenvalues_, _exact_eigenvalues(pbmc_pca, 4), rtol=0.02)


def test_many_coordinates_keep_the_smallest_eigenvectors_first():
    """Two circles with 35 coordinates and the 100 steps of a warm NUMAP fit: the learned span
    carries a few per cent of residue outside the targets, which a Rayleigh quotient through
    a walk of 1/lambda_35 steps (64) counted at a high eigenvalue, so the circle indicator
    (eigenvalue ~0) came third (|corr| 0.002 / 0.038 / 0.961 for columns 0-2 on 3,500
    points); aligned to the targets it is first (0.985)."""
    from sklearn.datasets import make_circles

    X, ring = make_circles(n_samples=2000, noise=0.05, factor=0.5, random_state=0)
    model = GrEASE(35, max_steps=100, random_state=0).fit(X.astype(np.float32))
    S = model.transform(X.astype(np.float32))
    assert abs(np.corrcoef(S[:, 0], ring)[0, 1]) > 0.95
    assert np.all(np.diff(model.eigenvalues_) >= 0)


def test_target_overlaps_drop_the_constant_also_when_eigsh_mixes_it_with_an_indicator():
    """Two components: eigenvalue 0 twice, so eigsh's first two targets may be any rotation
    of the constant and the component indicator. What the separation aligns to must be the
    indicator (orthogonal to the constant) first, then the other targets unchanged."""
    rng = np.random.default_rng(0)
    n = 300
    degree = torch.as_tensor(rng.uniform(1.0, 3.0, n))
    w = degree / degree.sum()
    side = torch.as_tensor((np.arange(n) < 120).astype(float))
    columns = [torch.ones(n, dtype=torch.float64), side, *torch.as_tensor(rng.normal(size=(3, n)))]
    T = []
    for v in columns:  # Gram-Schmidt in the D-weighted inner product
        for t in T:
            v = v - (w * v * t).sum() * t
        T.append(v / torch.sqrt((w * v * v).sum()))
    T = torch.stack(T, dim=1)
    lam = torch.tensor([0.0, 0.0, 0.01, 0.02, 0.05], dtype=torch.float64)
    for angle in (0.0, 0.5, 1.3):  # the constant first, mixed, mostly the indicator first
        mix = torch.eye(5, dtype=torch.float64)
        mix[:2, :2] = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        values, overlap = target_overlaps(T, degree, lam, T @ mix)  # V = the targets themselves
        aligned = T @ overlap  # the D-normalised targets the separation aligns to
        assert aligned.shape == (n, 4)
        torch.testing.assert_close(aligned.T @ (w[:, None] * aligned), torch.eye(4, dtype=torch.float64))
        assert float((w @ aligned).abs().max()) < 1e-10  # no constant part
        assert abs(np.corrcoef(aligned[:, 0].numpy(), side.numpy())[0, 1]) > 0.999
        for j in range(1, 4):
            assert abs(float((w * aligned[:, j] * T[:, j + 1]).sum())) > 0.999
        np.testing.assert_allclose(values.numpy(), [0.0, 0.01, 0.02, 0.05], atol=1e-12)


def test_separation_walk_is_about_one_over_the_kth_eigenvalue():
    assert separation_walk_steps(0.01, 64) == 100
    assert separation_walk_steps(0.5, 64) == 64
    assert separation_walk_steps(1e-6, 64) == MAX_SEPARATION_WALK
    assert separation_walk_steps(0.0, 64) == MAX_SEPARATION_WALK


@pytest.mark.parametrize("solver", ["exact", pytest.param("walk", marks=pytest.mark.slow)])
def test_grease_on_a_graph_with_two_components(solver):
    """Two circles: eigenvalue 0 repeats (constant and component indicator), and the 4th
    eigenvector is one of a near-degenerate pair (the inner circle's cos/sin, eigenvalues
    ~4 % apart). The indicator must be kept and the constant dropped, and the pair member
    must be the one the full graph ranks first (measured on 5,000 points, seed 0: 0.174
    before the guard column and the walk-based separation, 0.010 with them)."""
    from sklearn.datasets import make_circles

    X, ring = make_circles(n_samples=3000, noise=0.05, factor=0.5, random_state=0)
    X = X.astype(np.float32)
    model = GrEASE(4, solver=solver, random_state=0).fit(X)
    S = model.transform(X)
    exact = exact_spectral_embedding(X, 4, 10, random_walk=True)
    assert grassmann_distance(S, exact) <= 0.05
    assert abs(np.corrcoef(S[:, 0], ring)[0, 1]) > 0.95
    q, _ = np.linalg.qr(S.astype(np.float64))
    constant = np.ones(len(X)) / np.sqrt(len(X))
    assert np.sum((q.T @ constant) ** 2) < 0.05
    # eigenvalues of order 1e-4 (0 for the indicator), estimated within 10 %
    expected = _exact_eigenvalues(X, 4)
    assert model.eigenvalues_[0] < 0.1 * expected[1]
    np.testing.assert_allclose(model.eigenvalues_[1:], expected[1:], rtol=0.1)


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
    with pytest.raises(ValueError, match=r"more samples than `n_components \+ 2` \(7\), got 7"):
        GrEASE(5).fit(pbmc_pca[:7])
    g = GrEASE(2, max_steps=5).fit(pbmc_pca)
    with pytest.raises(ValueError, match="has 3 features but GrEASE was fitted on 50"):
        g.transform(pbmc_pca[:, :3])


def _dense(A: torch.Tensor) -> np.ndarray:
    return A.to_dense().numpy()


def test_cosine_affinity_follows_the_metric(pbmc_pca):
    """Cosine ignores each row's length: rescaling rows by positive factors (which changes the
    standardisation too) leaves a cosine GrEASE's affinity unchanged, not a Euclidean one's."""
    X = pbmc_pca[:300] + 3.0  # uncentred, as the angle of raw data is
    factors = np.random.default_rng(0).uniform(0.2, 5.0, size=(300, 1)).astype(np.float32)
    affinities = {}
    for metric in ("cosine", "euclidean"):
        for name, data in (("X", X), ("scaled", X * factors)):
            g = GrEASE(3, metric=metric, max_steps=1, random_state=0).fit(data)
            assert g.metric_ == metric
            x_std = g.standardizer_.apply(data, torch.device("cpu"))
            affinities[metric, name] = _dense(g.affinity(x_std))
    np.testing.assert_allclose(affinities["cosine", "X"], affinities["cosine", "scaled"], atol=1e-5)
    assert np.abs(affinities["euclidean", "X"] - affinities["euclidean", "scaled"]).max() > 0.1
    # and the cosine affinity is the Laplace kernel of 1 - cos of the raw rows
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    expected = _dense(batch_affinity(torch.as_tensor(unit), 10, metric="euclidean"))
    assert ((affinities["cosine", "X"] > 0) == (expected > 0)).mean() > 0.99  # same neighbours


@pytest.mark.parametrize(
    ("metric", "scipy_name"), [("euclidean", "euclidean"), ("manhattan", "cityblock"), ("cosine", "cosine")]
)
def test_pairwise_distances_match_scipy(metric, scipy_name):
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 4)), rng.normal(size=(5, 4))
    ours = pairwise_distances(torch.as_tensor(a), torch.as_tensor(b), metric).numpy()
    np.testing.assert_allclose(ours, cdist(a, b, scipy_name), atol=1e-10)


def test_grease_metric_errors(pbmc_pca):
    with pytest.raises(ValueError, match=r"`metric` must be one of .* got 'hamming'"):
        GrEASE(2, metric="hamming").fit(pbmc_pca)


def test_held_out_rows_are_never_in_a_training_batch(monkeypatch):
    """The plateau schedule watches rows that no gradient step has seen."""
    X = np.random.default_rng(0).normal(size=(1200, 5)).astype(np.float32)  # distinct rows
    seen = []
    original = GrEASE.affinity

    def spy(self, x_std):
        seen.append(x_std.clone())
        return original(self, x_std)

    monkeypatch.setattr(GrEASE, "affinity", spy)
    g = GrEASE(2, batch_size=256, max_steps=40, solver="walk", random_state=0).fit(X)
    assert g.holdout_size_ == 120  # min(batch_size, n // 10)
    held_out, training = seen[0], [x for x in seen[1:] if x.shape[0] < X.shape[0]]
    assert held_out.shape[0] == 120
    assert len(training) == 40
    held = {tuple(row) for row in held_out.numpy().round(5)}
    assert not any(tuple(row) in held for x in training for row in x.numpy().round(5))
    # data that fit in one batch are watched on the whole (exact) training loss
    assert GrEASE(2, batch_size=2048, max_steps=5).fit(X).holdout_size_ == 0
    assert holdout_size(1200, 256, 4, 10) == 120
    assert holdout_size(300, 256, 4, 10) == 30
    assert holdout_size(100, 64, 12, 10) == 0  # 10 rows are too few for a graph


def test_held_out_rows_are_never_in_a_training_batch_of_the_exact_solver(monkeypatch):
    """With exact targets too, the rows that watch the plateau are never trained on."""
    X = np.random.default_rng(0).normal(size=(1200, 5)).astype(np.float32)
    seen = []
    original = grease_module.SpectralNetwork.forward

    def spy(self, x):
        if torch.is_grad_enabled():
            seen.append(("train", x.detach().clone()))
        else:
            seen.append(("watch", x.clone()))
        return original(self, x)

    monkeypatch.setattr(grease_module.SpectralNetwork, "forward", spy)
    g = GrEASE(2, batch_size=256, max_steps=50, solver="exact", random_state=0).fit(X)
    assert g.solver_ == "exact"
    assert g.holdout_size_ == 120
    training = [x for kind, x in seen if kind == "train"]
    watched = [x for kind, x in seen if kind == "watch" and x.shape[0] == 120]
    assert len(training) == 50
    assert all(x.shape[0] == 256 for x in training)
    assert len(watched) == 2  # every 25 steps
    held = {tuple(row) for row in watched[0].numpy().round(5)}
    assert not any(tuple(row) in held for x in training for row in x.numpy().round(5))


@pytest.mark.parametrize("dense_max", [10_000, 0])  # dense eigh and eigsh
def test_exact_eigenvectors_are_the_random_walk_ones(pbmc_pca, dense_max, monkeypatch):
    monkeypatch.setattr(grease_module, "DENSE_EIGEN_MAX", dense_max)
    n = pbmc_pca.shape[0]
    A = batch_affinity(Standardizer.fit(pbmc_pca).apply(pbmc_pca, torch.device("cpu")).double(), 10)
    V = exact_eigenvectors(A, 6, seed=0)
    assert V.shape == (n, 6)
    np.testing.assert_allclose((V**2).mean(axis=0), 1.0)
    # the first is the constant (a connected graph), then the non-trivial ones
    assert np.std(V[:, 0]) < 1e-6 * np.abs(V[:, 0]).mean()
    walk = exact_spectral_embedding(pbmc_pca, 5, 10, random_walk=True)
    assert grassmann_distance(V[:, 1:6], walk) < 1e-6
    # eigenvectors of I - D^-1 A: D^-1 A v = mu v
    W = _dense(A)
    P = W / W.sum(axis=1, keepdims=True)
    mu = (V * (P @ V)).sum(axis=0) / (V * V).sum(axis=0)
    np.testing.assert_allclose(P @ V, V * mu, atol=1e-6)
    assert np.all(np.diff(mu) <= 1e-12)
    # with their eigenvalues lambda = 1 - mu of I - D^-1 A
    lam, same = exact_eigenpairs(A, 6, seed=0)
    np.testing.assert_allclose(same, V)
    np.testing.assert_allclose(lam, 1.0 - mu, atol=1e-8)


def test_exact_separation_aligns_the_span_to_the_targets_without_a_walk(pbmc_pca, monkeypatch):
    """With exact targets the separation runs no walk on the graph (the lazy walk's 1/lambda_k
    sparse products took 40 % of a 20,000-point GrEASE fit, benchmarks/grease_separation.py):
    it aligns the span to the targets (walk length 0, the targets' own eigenvalues), and the
    result still picks the individual eigenvectors (test_grease_matches_exact_eigenvectors)."""
    walks = []
    original = grease_module.lazy_walk

    def spy(A, degree, Z, n_steps):
        walks.append(n_steps)
        return original(A, degree, Z, n_steps)

    monkeypatch.setattr(grease_module, "lazy_walk", spy)
    g = GrEASE(4, max_steps=50, random_state=0).fit(pbmc_pca)
    assert g.solver_ == "exact"
    assert walks == []
    A = g.affinity(Standardizer.fit(pbmc_pca).apply(pbmc_pca, torch.device("cpu")))
    lam, _ = exact_eigenpairs(A, 6, seed=0)
    assert g.separation_walk_steps_ == 0
    np.testing.assert_allclose(g.eigenvalues_, lam[1:5], rtol=1e-6)
    GrEASE(4, max_steps=5, solver="walk", random_state=0).fit(pbmc_pca)
    assert walks  # the walk solver's loss and separation walk


def test_span_loss_is_zero_on_any_mix_of_the_target_and_positive_otherwise():
    rng = np.random.default_rng(0)
    T = torch.as_tensor(rng.normal(size=(200, 4)))
    mix = torch.as_tensor(rng.normal(size=(4, 4)))
    assert float(span_loss(T @ mix, T)) < 1e-10
    assert float(span_loss(torch.cat([T @ mix, T[:, :1]], dim=1), T)) < 1e-10  # extra columns are free
    missing = span_loss(T[:, :3], T)  # the 4th column is missed: its share of |T|^2
    np.testing.assert_allclose(float(missing), float((T[:, 3] ** 2).sum() / (T**2).sum()), rtol=0.05)


def test_solver_auto_switches_to_the_walk_above_exact_max(pbmc_pca, monkeypatch):
    assert GrEASE(2, max_steps=5, random_state=0).fit(pbmc_pca).solver_ == "exact"
    monkeypatch.setattr(grease_module, "EXACT_MAX", 500)
    assert GrEASE(2, max_steps=5, random_state=0).fit(pbmc_pca).solver_ == "walk"
    assert GrEASE(2, max_steps=5, solver="exact", random_state=0).fit(pbmc_pca).solver_ == "exact"
    with pytest.raises(ValueError, match=r"`solver` must be one of 'auto', 'exact', 'walk'; got 'eigsh'"):
        GrEASE(2, solver="eigsh").fit(pbmc_pca)


def test_eigsh_failure_falls_back_to_the_walk_or_says_what_to_pass(pbmc_pca, monkeypatch):
    from scipy.sparse.linalg import ArpackNoConvergence

    def fail(*args, **kwargs):
        raise ArpackNoConvergence("no convergence", np.empty(0), np.empty((0, 0)))

    monkeypatch.setattr(grease_module, "exact_eigenpairs", fail)
    with pytest.warns(RuntimeWarning, match="trains with the walk objective instead"):
        g = GrEASE(2, max_steps=5, random_state=0).fit(pbmc_pca)
    assert g.solver_ == "walk"
    assert np.isfinite(g.transform(pbmc_pca)).all()
    with pytest.raises(RuntimeError, match=r"did not converge .* pass `solver='walk'`"):
        GrEASE(2, max_steps=5, solver="exact", random_state=0).fit(pbmc_pca)


def test_separation_builds_its_own_graph_when_it_does_not_take_the_whole_one(pbmc_pca, monkeypatch):
    """The fit's whole graph (exact solver) is reused only for a whole-graph separation: a
    random batch of all rows is a shuffled order, whose graph must be built for it."""
    calls = []
    original = GrEASE.affinity

    def spy(self, x_std):
        calls.append(x_std.shape[0])
        return original(self, x_std)

    monkeypatch.setattr(GrEASE, "affinity", spy)
    GrEASE(2, max_steps=5, solver="exact", random_state=0).fit(pbmc_pca)
    assert calls == [len(pbmc_pca)]  # whole-graph separation: the fit's graph again
    calls.clear()
    monkeypatch.setattr(grease_module, "FULL_SEPARATION_MAX", 100)
    GrEASE(2, max_steps=5, solver="exact", batch_size=2048, n_separation_batches=1, random_state=0).fit(pbmc_pca)
    assert calls == [len(pbmc_pca), len(pbmc_pca)]
