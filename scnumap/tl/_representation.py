"""Which matrix of an AnnData the model is trained on, and how to rebuild it for new cells.

The stored description (``uns[key]['model']['representation']``) is plain data:
``use_rep`` (``"X_pca"``, ``"X"`` or another ``obsm`` key), ``n_dims``, and for a PCA
representation computed from ``adata.X`` the reference gene names, the PCA loadings
and the reference per-gene mean, so that a query is centred on the **reference** mean.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

#: Relative mismatch above which X_pca is not taken as ``(X - mean) @ PCs``.
PCA_MATCH_TOLERANCE = 1e-3


def choose_representation(adata: AnnData, use_rep: str | None, n_pcs: int | None):
    """Resolve ``use_rep``/``n_pcs`` as ``sc.tl.umap`` does.

    Returns
    -------
    X, use_rep, n_dims
    """
    if use_rep is None:
        if "X_pca" in adata.obsm:
            use_rep = "X_pca"
        elif adata.n_vars < 50:
            use_rep = "X"
        else:
            raise ValueError(
                "No representation given and `adata.obsm['X_pca']` is missing; "
                "run `sc.pp.pca(adata)` first or pass `use_rep`."
            )
    if use_rep == "X":
        X = adata.X
    elif use_rep in adata.obsm:
        X = adata.obsm[use_rep]
    else:
        raise ValueError(
            f"`use_rep={use_rep!r}` is not in `adata.obsm` (keys: {list(adata.obsm)}); pass an existing key or 'X'."
        )
    if use_rep == "X_pca" and n_pcs is not None and n_pcs > 0:
        if n_pcs > X.shape[1]:
            raise ValueError(f"`n_pcs={n_pcs}` but `adata.obsm['X_pca']` has only {X.shape[1]} columns.")
        X = X[:, :n_pcs]
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    return X, use_rep, X.shape[1]


def describe_representation(adata: AnnData, X, use_rep: str, n_dims: int) -> dict:
    """Plain-data description of the representation, with PCA loadings and mean when usable."""
    info: dict = {"use_rep": use_rep, "n_dims": np.int64(n_dims), "has_pca": np.bool_(False)}
    if use_rep == "X":
        info["var_names"] = np.asarray(adata.var_names, dtype=str)
    if use_rep == "X_pca" and "PCs" in adata.varm and adata.X is not None:
        loadings = np.asarray(adata.varm["PCs"], dtype=np.float64)[:, :n_dims]
        used = np.any(loadings != 0, axis=1)
        mean = _column_mean(adata.X)[used]
        sample = np.arange(min(adata.n_obs, 2000))
        rebuilt = (dense_block(adata.X[sample][:, used]) - mean) @ loadings[used]
        target = np.asarray(X[sample], dtype=np.float64)
        mismatch = np.abs(rebuilt - target).max() / max(np.abs(target).max(), 1e-12)
        if np.isfinite(mismatch) and mismatch < PCA_MATCH_TOLERANCE:
            info.update(
                has_pca=np.bool_(True),
                var_names=np.asarray(adata.var_names[used], dtype=str),
                pca_loadings=loadings[used].astype(np.float32),
                pca_mean=mean.astype(np.float32),
            )
        else:
            info["pca_mismatch"] = np.float64(mismatch if np.isfinite(mismatch) else -1.0)
    return info


def _column_mean(X) -> np.ndarray:
    if sp.issparse(X):
        return np.asarray(X.mean(axis=0, dtype=np.float64)).ravel()
    return np.asarray(X, dtype=np.float64).mean(axis=0)


def dense_block(block, dtype=np.float64) -> np.ndarray:
    """A block of rows (numpy, scipy sparse, dask or h5py-backed) as a dense array."""
    if hasattr(block, "compute"):
        block = block.compute()
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=dtype)
