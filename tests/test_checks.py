import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scnumap.core._checks import as_matrix, check_n_neighbors


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_])
def test_as_matrix_dtypes_give_float32_copy(dtype):
    X = (np.arange(12).reshape(4, 3) % 2).astype(dtype)
    before = X.copy()
    out = as_matrix(X)
    assert out.dtype == np.float32
    assert not np.shares_memory(out, X)
    out[:] = 7
    np.testing.assert_array_equal(X, before)


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


def test_as_matrix_rejects_float64_overflowing_float32():
    with pytest.raises(ValueError, match="too large for float32"):
        as_matrix(np.full((2, 2), 1e300))


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
