import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scnumap.core._checks import as_matrix, check_n_neighbors


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.float64, np.bool_])
def test_as_matrix_dtypes_give_float32_copy(dtype):
    X = (np.arange(12).reshape(4, 3) % 2).astype(dtype)
    before = X.copy()
    out = as_matrix(X)
    assert out.dtype == np.float32
    assert not np.shares_memory(out, X)
    out[:] = 7
    np.testing.assert_array_equal(X, before)


def test_as_matrix_shares_float32_input_read_only():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = as_matrix(X)
    assert np.shares_memory(out, X)  # no copy of data already in the right form
    with pytest.raises(ValueError, match="read-only"):
        out[0, 0] = 7
    assert X.flags.writeable  # the caller's array keeps its flags
    X_f = np.asfortranarray(X)
    assert not np.shares_memory(as_matrix(X_f), X_f)  # a layout change needs a copy


def test_as_matrix_shares_canonical_float32_csr_read_only():
    X = sp.random(6, 5, density=0.5, format="csr", dtype=np.float32, random_state=0)
    out = as_matrix(X)
    assert np.shares_memory(out.data, X.data)
    with pytest.raises(ValueError, match="read-only"):
        out.data[0] = 7
    assert X.data.flags.writeable
    dup = sp.csr_matrix((np.ones(2, np.float32), np.array([1, 1]), np.array([0, 2, 2])), shape=(2, 3))
    summed = as_matrix(dup)  # duplicates are summed in a copy
    assert summed[0, 1] == 2
    assert dup.nnz == 2


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_as_matrix_sparse_formats_become_csr(fmt):
    X = sp.random(5, 4, density=0.5, format=fmt, random_state=0)
    out = as_matrix(X)
    assert sp.isspmatrix_csr(out)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.toarray(), X.toarray(), rtol=1e-6)


def test_as_matrix_torch_tensor():
    t = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    out = as_matrix(t)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, t.numpy())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_as_matrix_rejects_non_finite(bad):
    X = np.ones((3, 2))
    X[1, 1] = bad
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        as_matrix(X)


@pytest.mark.parametrize("sparse", [False, True])
def test_as_matrix_reports_float32_overflow_without_a_numpy_warning(sparse):
    X = np.ones((2, 2))
    X[0, 1] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" would fail here
        with pytest.raises(ValueError, match=r"1 value\(s\) too large for float32 \(largest magnitude 1e\+300"):
            as_matrix(sp.csr_matrix(X) if sparse else X)


def test_as_matrix_shape_errors():
    with pytest.raises(ValueError, match="1-D array"):
        as_matrix(np.ones(3))
    with pytest.raises(ValueError, match="no samples"):
        as_matrix(np.ones((0, 3)))
    with pytest.raises(ValueError, match="no features"):
        as_matrix(np.ones((3, 0)))
    with pytest.raises(TypeError, match="must hold numbers"):
        as_matrix(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="numpy array, scipy sparse"):
        as_matrix(object())


def test_check_n_neighbors_names_value_and_fix():
    with pytest.raises(ValueError, match=r"`n_neighbors` must be < n_samples \(10\), got 15"):
        check_n_neighbors(15, 10)
