"""Query-side correction (core/correction.py): Symphony's mixture of linear experts."""

import numpy as np
import pytest

from scnumap.core.correction import CompressionFormatError, QueryCorrection, ReferenceCompression
from scnumap.tl._integrate import compress


def _reference(rng, n=600, d=5, k=4):
    centres = 8.0 * np.eye(d)[:k] + 2.0  # distinct directions, away from the origin
    labels = rng.integers(0, k, n)
    Z = centres[labels] + rng.normal(size=(n, d))
    R = np.full((k, n), 0.02 / (k - 1))
    R[labels, np.arange(n)] = 0.98
    return ReferenceCompression.from_harmony(Z, R, 0.1), centres


def test_from_harmony_keeps_sums_sizes_and_unit_centroids():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(50, 3))
    R = rng.dirichlet(np.ones(4), size=50).T
    comp = ReferenceCompression.from_harmony(Z, R, [0.1, 0.2, 0.1, 0.3])
    np.testing.assert_allclose(comp.sums, R @ Z)
    np.testing.assert_allclose(comp.sizes, R.sum(axis=1))
    np.testing.assert_allclose(np.linalg.norm(comp.centroids, axis=1), 1.0)
    np.testing.assert_allclose(comp.assign(Z).sum(axis=0), 1.0)


def test_correction_removes_a_known_offset_and_keeps_structure():
    rng = np.random.default_rng(1)
    comp, centres = _reference(rng)
    labels = rng.integers(0, 4, 400)
    clean = centres[labels] + rng.normal(size=(400, 5))
    offset = np.array([1.5, -1.0, 0.5, 0.0, 1.0])
    batches = rng.integers(0, 2, 400)
    X = clean + offset * (batches == 1)[:, None]
    corr = QueryCorrection(comp, n_batches=2)
    corr.add(X, batches)
    out = corr.apply(X, batches)
    before = np.abs((X - clean)[batches == 1].mean(axis=0) - 0).max()
    after = np.abs((out - clean)[batches == 1].mean(axis=0)).max()
    assert before > 1.4
    assert after < 0.25  # 0.19 measured: ridge and soft assignment leave a little
    # the offset-free batch is barely moved, and cell types stay apart
    assert np.abs(out[batches == 0] - clean[batches == 0]).mean() < 0.25
    nearest = np.argmin(((out[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == labels) > 0.95


def test_blockwise_accumulation_equals_one_pass_and_a_direct_ridge_fit():
    rng = np.random.default_rng(2)
    comp, centres = _reference(rng)
    X = centres[rng.integers(0, 4, 300)] + rng.normal(size=(300, 5)) + 0.7
    batches = rng.integers(0, 3, 300)
    whole = QueryCorrection(comp, n_batches=3, ridge=0.5)
    whole.add(X, batches)
    parts = QueryCorrection(comp, n_batches=3, ridge=0.5)
    for start in range(0, 300, 64):
        parts.add(X[start : start + 64], batches[start : start + 64])
    np.testing.assert_allclose(parts.weights(), whole.weights(), rtol=1e-8, atol=1e-10)
    # cluster 0 by weighted least squares with the reference as an intercept-only pseudo-row
    R = comp.assign(X)[0]
    phi = np.zeros((300, 4))
    phi[:, 0] = 1.0
    phi[np.arange(300), batches + 1] = 1.0
    rows = np.vstack([np.sqrt(R)[:, None] * phi, np.sqrt(comp.sizes[0]) * np.eye(4)[:1], np.sqrt(0.5) * np.eye(4)[1:]])
    targets = np.vstack([np.sqrt(R)[:, None] * X, comp.sums[0] / np.sqrt(comp.sizes[0]), np.zeros((3, 5))])
    W = np.linalg.lstsq(rows, targets, rcond=None)[0]
    np.testing.assert_allclose(whole.weights()[0, 1:], W[1:], rtol=1e-6, atol=1e-8)
    assert np.all(whole.weights()[:, 0] == 0)


def test_equals_symphonypy_on_the_same_harmony_state():
    symphonypy = pytest.importorskip("symphonypy")  # the benchmark extra
    import scanpy as sc

    rng = np.random.default_rng(0)
    ad = sc.datasets.pbmc68k_reduced()
    ad.X = np.nan_to_num(ad.X)
    ad.obs["batch"] = rng.choice(["a", "b"], ad.n_obs)
    ref, query = ad[:500].copy(), ad[500:].copy()
    query.obs["qbatch"] = rng.choice(["x", "y"], query.n_obs)
    query.X = query.X + 0.3 * (query.obs["qbatch"].to_numpy() == "x")[:, None]
    sc.pp.pca(ref, n_comps=20)
    ref.var["mean"], ref.var["std"] = ref.X.mean(0), 1.0
    symphonypy.pp.harmony_integrate(ref, key="batch", verbose=False)
    query.uns["log1p"] = {}
    symphonypy.tl.map_embedding(query, ref, key="qbatch", use_genes_column=None)
    h = ref.uns["harmony"]
    comp = ReferenceCompression.from_harmony(ref.obsm["X_pca_harmony"], h["R"], h["sigma"])
    X = query.obsm["X_pca_reference"]
    codes = (query.obs["qbatch"] == "y").to_numpy().astype(int)
    corr = QueryCorrection(comp, n_batches=2)
    corr.add(X, codes)
    # float32 round-off of symphonypy's arrays; the shifts themselves are ~5
    np.testing.assert_allclose(corr.apply(X, codes), query.obsm["X_pca_harmony"], atol=1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("sums"), "expected"),
        (lambda e: e.__setitem__("sigma", -e["sigma"]), "sigma` must be > 0"),
        (lambda e: e.__setitem__("sums", e["sums"][:, :2]), "sums` must have shape"),
        (lambda e: e.__setitem__("centroids", 2 * e["centroids"]), "unit-length"),
        (lambda e: e["centroids"].__setitem__((0, 0), np.nan), "finite"),
    ],
)
def test_tampered_compression_is_refused(change, message):
    comp, _ = _reference(np.random.default_rng(3))
    entry = comp.to_dict()
    change(entry)
    with pytest.raises(CompressionFormatError, match=message):
        ReferenceCompression.from_dict(entry, n_dims=5)


def test_round_trip_and_bad_batch_codes():
    comp, _ = _reference(np.random.default_rng(4))
    again = ReferenceCompression.from_dict(comp.to_dict(), n_dims=5)
    np.testing.assert_array_equal(again.sums, comp.sums)
    corr = QueryCorrection(again, n_batches=2)
    with pytest.raises(ValueError, match="Batch codes must lie in 0 … 1"):
        corr.add(np.ones((3, 5)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="`n_batches` must be >= 1"):
        QueryCorrection(again, n_batches=0)


def test_rounds_reassign_the_query_from_its_corrected_coordinates():
    """Round t assigns the query to the clusters from its coordinates after rounds 1 … t-1 and
    regresses on the query as measured (by hand: a fresh one-round correction per round, with
    the assignment taken from the previous corrected coordinates)."""
    rng = np.random.default_rng(0)
    Z_ref = np.vstack([rng.normal(c, 0.3, size=(60, 3)) for c in ((0, 0, 2), (2, 0, 0), (0, 2, 0))])
    compression = compress(Z_ref, 0)
    X = Z_ref[::3] + np.array([0.4, -0.2, 0.1])  # a shifted query
    codes = np.zeros(X.shape[0], dtype=np.int64)
    correction = QueryCorrection(compression, 1)
    correction.add(X, codes)
    one = correction.apply(X, codes)
    correction.next_round()
    correction.add(X, codes)
    two = correction.apply(X, codes)
    # by hand: round 2's terms from the assignment of `one`, applied with that assignment
    R = compression.assign(one.astype(np.float64))
    phi = np.ones((X.shape[0], 2))
    A = np.einsum("kn,np,nq->kpq", R, phi, phi)
    B = np.einsum("kn,np,nd->kpd", R, phi, X)
    A[:, 0, 0] += compression.sizes
    A[:, 1, 1] += 1.0  # ridge on the batch term
    B[:, 0, :] += compression.sums
    W = np.linalg.solve(A, B)
    expected = X - np.einsum("kn,kd->nd", R, W[:, 1, :])
    np.testing.assert_allclose(two, expected, atol=1e-5)
    assert np.abs(two - Z_ref[::3]).mean() < np.abs(one - Z_ref[::3]).mean() <= np.abs(X - Z_ref[::3]).mean()
    fresh = QueryCorrection(compression, 1)
    with pytest.raises(RuntimeError, match="needs query rows"):
        fresh.next_round()


def test_keyed_blocks_give_the_same_correction_with_fewer_assignments(monkeypatch):
    """Blocks added under a key are corrected round after round from what the last round
    kept: bit for bit the unkeyed result, with 6 soft assignments per block over three rounds
    and the final correction instead of 9; a key that names rows of another shape is not used."""
    rng = np.random.default_rng(3)
    comp, centres = _reference(rng)
    X = centres[rng.integers(0, 4, 300)] + rng.normal(size=(300, 5)) + 0.7
    batches = rng.integers(0, 2, 300)
    blocks = [slice(start, start + 100) for start in range(0, 300, 100)]
    calls = []
    assign = ReferenceCompression.assign
    monkeypatch.setattr(ReferenceCompression, "assign", lambda self, Y: calls.append(len(Y)) or assign(self, Y))

    def corrected(keyed: bool) -> np.ndarray:
        corr = QueryCorrection(comp, n_batches=2)
        for round_ in range(3):
            if round_:
                corr.next_round()
            for rows in blocks:
                corr.add(X[rows], batches[rows], key=(rows.start, rows.stop) if keyed else None)
        out = [corr.apply(X[rows], batches[rows], key=(rows.start, rows.stop) if keyed else None) for rows in blocks]
        assert not corr._kept  # apply lets go of what it used
        return np.concatenate(out)

    plain = corrected(False)
    n_plain, calls[:] = len(calls), []
    keyed = corrected(True)
    np.testing.assert_array_equal(keyed, plain)
    assert (n_plain, len(calls)) == (3 * 9, 3 * 6)
    corr = QueryCorrection(comp, n_batches=2)
    corr.add(X[:100], batches[:100], key="a")
    corr.next_round()
    corr.add(X[:100], batches[:100], key="a")
    kept_for_other_rows = corr.apply(X[:50], batches[:50], key="a")  # "a" kept 100 rows: not used
    np.testing.assert_array_equal(kept_for_other_rows, corr.apply(X[:50], batches[:50]))
