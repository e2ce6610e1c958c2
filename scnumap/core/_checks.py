"""Input validation shared by the public entry points.

Every check names the value it received and the fix, so a user never sees a
stack trace from deep inside torch or numpy.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

try:  # torch is a hard dependency, but keep the checks importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None


def as_matrix(X, *, name: str = "X"):
    """Return ``X`` as a float32 matrix that never writes to the caller's object.

    Parameters
    ----------
    X
        A numpy array, scipy sparse matrix/array or torch tensor of shape
        ``(n_samples, n_features)``; any integer or floating dtype.
    name
        Name used in error messages.

    Returns
    -------
    A C-contiguous ``float32`` numpy array, or a ``float32`` CSR matrix for sparse
    input. Input that already has that form (C-contiguous float32; float32 CSR with sorted,
    unique indices) is returned as a read-only view, not copied: at a million cells a copy
    costs gigabytes, and writing to the view raises. Anything else is converted into a
    new object. The caller's ``X`` is never modified.
    """
    if torch is not None and isinstance(X, torch.Tensor):
        X = X.detach().to("cpu").numpy()
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"`{name}` must be 2-D, got a sparse object of shape {X.shape}.")
        _check_dtype(X.dtype, name)
        if X.format == "csr" and X.dtype == np.float32 and X.has_canonical_format:
            out = sp.csr_matrix((_read_only(X.data), _read_only(X.indices), _read_only(X.indptr)), shape=X.shape)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
                out = sp.csr_matrix(X, dtype=np.float32, copy=True)
            out.sum_duplicates()
        values = out.data
    else:
        if not isinstance(X, np.ndarray):
            if hasattr(X, "__array__") or isinstance(X, list | tuple):
                X = np.asarray(X)
            else:
                raise TypeError(
                    f"`{name}` must be a numpy array, scipy sparse matrix or torch tensor, got {type(X).__name__}."
                )
        _check_dtype(X.dtype, name)
        if X.ndim == 1:
            raise ValueError(
                f"`{name}` must be 2-D (n_samples, n_features), got a 1-D array of shape {X.shape}. "
                "Use `X.reshape(1, -1)` for a single sample or `X.reshape(-1, 1)` for one feature."
            )
        if X.ndim != 2:
            raise ValueError(f"`{name}` must be 2-D (n_samples, n_features), got shape {X.shape}.")
        if X.dtype == np.float32 and X.flags.c_contiguous:
            out = _read_only(X)  # nothing in scnumap writes to its input: share it
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
                out = np.array(X, dtype=np.float32, order="C", copy=True)
        values = out
    if out.shape[0] == 0:
        raise ValueError(f"`{name}` has no samples (shape {out.shape}); pass at least one row.")
    if out.shape[1] == 0:
        raise ValueError(f"`{name}` has no features (shape {out.shape}); pass at least one column.")
    if not np.all(np.isfinite(values)):
        n_bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        source = X.data if sp.issparse(X) else X
        n_bad_source = int(np.size(source) - np.count_nonzero(np.isfinite(source)))
        if n_bad_source < n_bad:
            largest = float(np.max(np.abs(source[np.isfinite(source)])))
            raise ValueError(
                f"`{name}` has {n_bad - n_bad_source} value(s) too large for float32 (largest magnitude "
                f"{largest:.3g}, float32's limit {float(np.finfo(np.float32).max):.3g}). "
                "Rescale the data first, e.g. `np.log1p(X)` or divide by a constant."
            )
        raise ValueError(
            f"`{name}` contains {n_bad} NaN or infinite value(s). Remove or impute them first, e.g. `np.nan_to_num(X)`."
        )
    return out


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def _check_dtype(dtype, name: str) -> None:
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"`{name}` must hold numbers, got dtype {dtype}.")


def check_bool(value, name: str) -> bool:
    """Check that ``value`` is ``True`` or ``False`` (a Python or numpy bool)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Check that ``value`` is an integer in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value}.")
    return value


def check_float(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """Check that ``value`` is a finite real number in the given range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"`{name}` must be a finite number, got {value!r}.")
    value = float(value)
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise ValueError(f"`{name}` must be > {minimum}, got {value}.")
        if not strict_minimum and value < minimum:
            raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value}.")
    return value


def check_hidden(value, name: str = "hidden") -> tuple[int, ...]:
    """Check a tuple of hidden-layer widths."""
    try:
        widths = tuple(value)
    except TypeError:
        raise TypeError(f"`{name}` must be a sequence of positive integers, got {value!r}.") from None
    for width in widths:
        check_int(width, f"{name}[...]", minimum=1)
    return tuple(int(w) for w in widths)


def check_n_neighbors(n_neighbors: int, n_samples: int) -> int:
    """``n_neighbors`` must be at least 2 and smaller than the number of samples."""
    n_neighbors = check_int(n_neighbors, "n_neighbors", minimum=2)
    if n_neighbors >= n_samples:
        raise ValueError(
            f"`n_neighbors` must be < n_samples ({n_samples}), got {n_neighbors}. "
            f"Pass more samples or a smaller `n_neighbors` (e.g. {max(2, n_samples - 1)})."
        )
    return n_neighbors
