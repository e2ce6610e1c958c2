"""Which matrix of an AnnData the model is trained on, and how to rebuild it for new cells.

The choice follows Scanpy's own rule (``scanpy.tools._utils._choose_representation``,
used by ``sc.pp.neighbors`` and ``sc.tl.umap``), so the network trains on the space
the neighbour graph was built on. The stored description
(``uns[key]['model']['representation']``) is the plain data of
:class:`scnumap.core.representation.Representation`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scanpy import settings

from ..core import scaling
from ..core.representation import Representation

#: Relative mismatch above which X_pca is not taken as ``(X - mean) @ PCs``.
PCA_MATCH_TOLERANCE = 1e-3

#: Largest number of values in one block of rows read to compute column means.
BLOCK_VALUES = 1 << 24


def choose_representation(adata: AnnData, use_rep: str | None, n_pcs: int | None):
    """Resolve ``use_rep``/``n_pcs`` as ``sc.pp.neighbors`` and ``sc.tl.umap`` do.

    * ``use_rep=None, n_pcs=0``: ``adata.X``;
    * ``use_rep=None``: ``adata.X`` when ``adata.n_vars <= sc.settings.N_PCS`` (50),
      else the first ``n_pcs`` columns of ``obsm['X_pca']`` (all when ``n_pcs`` is None);
    * an ``obsm`` key: its first ``n_pcs`` columns (all when ``n_pcs`` is None);
    * ``"X"``: ``adata.X`` (``n_pcs`` ignored).

    Where Scanpy would run ``sc.pp.pca`` itself (no ``X_pca``, more than 50 genes),
    this raises instead: the graph was then built on a PCA that is not in ``adata``.

    Returns
    -------
    X, use_rep, n_dims
        The matrix (not copied), the resolved key (``"X"``, ``"X_pca"`` or the given
        one) and its number of columns.
    """
    if use_rep is None and n_pcs == 0:
        use_rep = "X"
    if use_rep is None:
        if adata.n_vars <= settings.N_PCS:
            use_rep, n_pcs = "X", None
        elif "X_pca" in adata.obsm:
            use_rep = "X_pca"
        else:
            raise ValueError(
                f"`adata` has {adata.n_vars} genes (> {settings.N_PCS}) and no `obsm['X_pca']`, the representation "
                "Scanpy uses then. Run `sc.pp.pca(adata)` (or `sc.pp.neighbors(adata)`, which computes it) first, "
                "or pass `use_rep='X'` to `sc.pp.neighbors` to use all genes."
            )
    if use_rep in adata.obsm:
        X = adata.obsm[use_rep]
        if hasattr(X, "to_numpy"):
            X = X.to_numpy()
        if n_pcs is not None:
            if not 1 <= n_pcs <= X.shape[1]:
                raise ValueError(
                    f"`n_pcs={n_pcs}` but `adata.obsm[{use_rep!r}]` has {X.shape[1]} columns; "
                    f"pass 1 <= n_pcs <= {X.shape[1]} (or rerun `sc.pp.pca` with more `n_comps`)."
                )
            X = X[:, :n_pcs]
    elif use_rep == "X":
        X = adata.X
        if X is None:
            raise ValueError("`use_rep='X'` but `adata.X` is None; pass an AnnData with a data matrix.")
    else:
        raise ValueError(
            f"`use_rep={use_rep!r}` is not in `adata.obsm` (keys: {list(adata.obsm)}); pass an existing key or 'X'."
        )
    return X, use_rep, X.shape[1]


def describe_representation(adata: AnnData, X, use_rep: str, n_dims: int) -> dict:
    """Plain-data description of the representation, with PCA loadings and mean when usable."""
    truncated = use_rep != "X" and use_rep in adata.obsm and adata.obsm[use_rep].shape[1] > n_dims
    if use_rep == "X":
        return Representation("X", n_dims, var_names=np.asarray(adata.var_names, dtype=str)).to_dict()
    if use_rep != "X_pca":
        return Representation(use_rep, n_dims, truncated=truncated).to_dict()
    mismatch = -1.0
    PCs = adata.varm["PCs"] if "PCs" in adata.varm else None
    if PCs is not None and adata.X is not None and PCs.shape[1] >= n_dims:
        loadings = np.asarray(PCs, dtype=np.float64)[:, :n_dims]
        used = np.any(loadings != 0, axis=1)
        mean = column_mean(adata.X)[used]
        sample = np.arange(min(adata.n_obs, 2000))
        rebuilt = (dense_block(adata.X[sample][:, used]) - mean) @ loadings[used]
        target = np.asarray(X[sample], dtype=np.float64)
        found = np.abs(rebuilt - target).max() / max(np.abs(target).max(), 1e-12)
        if np.isfinite(found) and found < PCA_MATCH_TOLERANCE:
            return Representation(
                "X_pca",
                n_dims,
                has_pca=True,
                var_names=np.asarray(adata.var_names[used], dtype=str),
                pca_loadings=loadings[used].astype(np.float32),
                pca_mean=mean.astype(np.float32),
                truncated=truncated,
            ).to_dict()
        mismatch = float(found) if np.isfinite(found) else -1.0
    return Representation("X_pca", n_dims, pca_mismatch=mismatch, truncated=truncated).to_dict()


def column_mean(X) -> np.ndarray:
    """Float64 column means of ``X`` (numpy, scipy sparse, dask or backed), read in row blocks."""
    return scaling.column_mean(X, BLOCK_VALUES)


def dense_block(block, dtype=np.float64) -> np.ndarray:
    """A block of rows (numpy, scipy sparse, dask or h5py-backed) as a dense array."""
    if hasattr(block, "compute"):
        block = block.compute()
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=dtype)
