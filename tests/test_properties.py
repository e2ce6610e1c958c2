"""Property-based tests (hypothesis) of NUMAP.transform and tl.project over shapes,
dtypes and sparse formats: shape, finiteness, determinism, input untouched."""

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scnumap

FORMATS = ["dense", "csr", "csc", "coo"]
DTYPES = [np.float16, np.float32, np.float64, np.int32]


def _make(values: np.ndarray, fmt: str, dtype):
    if fmt != "dense" and dtype == np.float16:
        dtype = np.float32  # scipy.sparse has no float16
    values = values.astype(dtype)
    return values if fmt == "dense" else sp.coo_matrix(values).asformat(fmt)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_rows=st.integers(1, 40),
    fmt=st.sampled_from(FORMATS),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_transform_properties(fitted_blobs, n_rows, fmt, dtype, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(scale=5, size=(n_rows, 10))
    values[rng.random(values.shape) < 0.3] = 0
    X = _make(values, fmt, dtype)
    before = X.copy()
    a = fitted_blobs.transform(X)
    assert a.shape == (n_rows, 2)
    assert a.dtype == np.float32
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, fitted_blobs.transform(X))
    if sp.issparse(X):
        assert (X != before).nnz == 0
    else:
        np.testing.assert_array_equal(X, before)


@pytest.fixture(scope="module")
def small_reference(pbmc):
    import scanpy as sc

    ref = pbmc[:400].copy()
    ref.X = np.nan_to_num(ref.X)
    sc.pp.pca(ref, n_comps=20, random_state=0)
    sc.pp.neighbors(ref, random_state=0)
    scnumap.tl.numap(ref, epochs=3, grease_steps=30, hidden=(16,), densmap=False)
    return ref


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_cells=st.integers(1, 30),
    fmt=st.sampled_from(FORMATS),
    dtype=st.sampled_from(DTYPES[1:]),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_project_properties(small_reference, n_cells, fmt, dtype, chunk, seed):
    ref = small_reference
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, ref.n_obs, n_cells)
    X = np.asarray(ref.X[rows])
    query = anndata.AnnData(_make(X, fmt if fmt != "coo" else "csr", dtype))
    query.var_names = ref.var_names
    before = query.X.copy()
    scnumap.tl.project(query, ref, obs="bulk_labels", chunk_size=chunk, correct=False)
    out = query.obsm["X_numap"]
    assert out.shape == (n_cells, 2)
    assert np.all(np.isfinite(out))
    again = scnumap.tl.project(query, ref, obs="bulk_labels", copy=True, correct=False)
    np.testing.assert_allclose(again.obsm["X_numap"], out, atol=1e-4)
    # the correction reads the query once per round: chunking must not change it
    in_chunks = scnumap.tl.project(query, ref, copy=True, chunk_size=chunk)
    whole = scnumap.tl.project(query, ref, copy=True)
    np.testing.assert_allclose(in_chunks.obsm["X_numap"], whole.obsm["X_numap"], atol=1e-4)
    if sp.issparse(before):
        assert (query.X != before).nnz == 0
    else:
        np.testing.assert_array_equal(query.X, before)
    if dtype == np.float32 or dtype == np.float64:
        np.testing.assert_allclose(out, ref.obsm["X_numap"][rows], atol=1e-3)


def test_project_dask_backed_query(small_reference):
    da = pytest.importorskip("dask.array")
    ref = small_reference
    X = np.asarray(ref.X, dtype=np.float32)
    query = anndata.AnnData(da.from_array(X, chunks=(64, X.shape[1])))
    query.var_names = ref.var_names
    scnumap.tl.project(query, ref, obs="bulk_labels", chunk_size=100, correct=False)
    np.testing.assert_allclose(query.obsm["X_numap"], ref.obsm["X_numap"], atol=1e-3)
    assert isinstance(query.X, da.Array)  # never loaded whole into the AnnData


def test_project_backed_query(small_reference, tmp_path):
    ref = small_reference
    ref.write_h5ad(tmp_path / "q.h5ad")
    query = anndata.read_h5ad(tmp_path / "q.h5ad", backed="r")
    scnumap.tl.project(query, ref, chunk_size=128, correct=False)
    np.testing.assert_allclose(query.obsm["X_numap"], ref.obsm["X_numap"], atol=1e-3)
