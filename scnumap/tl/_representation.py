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
from scanpy import logging as logg
from scanpy import settings

from ..core import scaling
from ..core.representation import Representation

#: Relative mismatch above which X_pca is not taken as ``(X - mean) @ PCs``.
PCA_MATCH_TOLERANCE = 1e-3

#: Largest number of values in one block of rows read to compute column means.
BLOCK_VALUES = 1 << 24

#: ``X`` counts as the output of ``sc.pp.scale`` when at least this share of its checked
#: genes (not constant, never at the clip value) have column mean and standard deviation
#: within ``SCALED_TOLERANCE`` of 0 and 1.
SCALED_SHARE = 0.9

#: Allowed distance of a scaled gene's column mean from 0 and standard deviation from 1.
SCALED_TOLERANCE = 0.1


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
    """Plain-data description of the representation, with PCA loadings and mean when usable.

    For genes (``X``, or ``X_pca`` with loadings) it also holds the ``sc.pp.scale``
    statistics when ``X`` is that function's output (see :func:`reference_scaling`).
    """
    truncated = use_rep != "X" and use_rep in adata.obsm and adata.obsm[use_rep].shape[1] > n_dims
    if use_rep == "X":
        scale = reference_scaling(adata, np.ones(adata.n_vars, dtype=bool))
        return Representation("X", n_dims, var_names=np.asarray(adata.var_names, dtype=str), **scale).to_dict()
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
                **reference_scaling(adata, used),
            ).to_dict()
        mismatch = float(found) if np.isfinite(found) else -1.0
    return Representation("X_pca", n_dims, pca_mismatch=mismatch, truncated=truncated).to_dict()


def reference_scaling(adata: AnnData, used: np.ndarray) -> dict:
    """The ``sc.pp.scale`` statistics of the genes ``used`` (a mask of ``var``), if ``X`` holds its output.

    ``sc.pp.scale`` stores each gene's mean and standard deviation in ``var['mean']`` and
    ``var['std']`` (1 for constant genes) and leaves ``X = clip((X - mean) / std, -v, v)``
    (the clipping only with ``max_value=v``). A query in the reference's unscaled
    genes must go through the same transform before the PCA, so they are returned as
    ``scale_mean``, ``scale_std`` (float32; a std of 0 is taken as 1, as Scanpy
    does) and ``scale_max``.

    ``X`` is taken as scaled when, of the used genes that are neither constant nor at the
    clip value, at least ``SCALED_SHARE`` (90 %) have a column mean within
    ``SCALED_TOLERANCE`` (0.1) of 0 and a standard deviation (ddof 1, as Scanpy) within
    0.1 of 1. On the cells ``sc.pp.scale`` saw, these are 0 and 1 up to rounding (< 1e-5);
    the slack accepts a reference whose cells were subset after scaling (e.g. a removed
    cluster; a random 70 % keeps 99 % of the genes within it), while log-normalised genes
    (non-negative, each with its own mean and spread) essentially never pass. Clipped
    genes are left out: clipping shifts their mean and shrinks their spread.

    The clip value is inferred from ``X``: ``sc.pp.scale(max_value=v)`` leaves
    ``X.max() == v`` exactly when it clipped anything, so the maximum is taken as the clip
    value when it is a whole number, when ``X.min() == -X.max()``, or when several genes
    reach it (except at ``(n - 1) / sqrt(n)``, the largest z-score ``n`` cells allow, which
    every gene seen in one cell reaches). Otherwise no ``scale_max`` is stored and the
    query is not clipped: a clip that changed no reference value cannot be seen, and
    leaving it out changes nothing for query cells within the reference's range.

    Returns
    -------
    dict
        ``scale_mean``, ``scale_std`` and ``scale_max`` (``None`` when not clipped) to pass
        to :class:`~scnumap.core.representation.Representation`, or ``{}`` when ``var`` has
        no ``mean``/``std`` columns or ``X`` does not look scaled (logged).
    """
    if "mean" not in adata.var or "std" not in adata.var or adata.X is None:
        return {}
    why = _not_scaled(adata, used)
    if why is None:
        stats = column_statistics(adata.X)
        clip = _clip_value(stats, adata.n_obs)
        why = _scaled_badly(stats, used, clip)
    if why is not None:
        logg.warning(
            f"`adata.var` has `mean` and `std` columns (as `sc.pp.scale` leaves) but {why}; `tl.project` will "
            "not scale the query. If `X` is `sc.pp.scale`'s output, run `sc.pp.scale` on the reference cells "
            "themselves (then `sc.pp.pca`, `sc.pp.neighbors`); if the columns are left over, drop them."
        )
        return {}
    std = adata.var["std"].to_numpy(dtype=np.float64)[used]
    scale = {
        "scale_mean": adata.var["mean"].to_numpy(dtype=np.float64)[used].astype(np.float32),
        "scale_std": np.where(std > 0, std, 1.0).astype(np.float32),
        "scale_max": clip,
    }
    clipped = f", clipped to ±{clip:g}" if clip is not None else ""
    logg.info(
        "    `X` was scaled by `sc.pp.scale`: `tl.project` will scale the query with the reference's gene means "
        f"and standard deviations (`var['mean']`, `var['std']`){clipped}"
    )
    return scale


def _not_scaled(adata: AnnData, used: np.ndarray) -> str | None:
    """Why ``var['mean']``/``var['std']`` of the genes ``used`` cannot be scaling statistics, or ``None``."""
    mean = _numeric(adata.var["mean"])
    std = _numeric(adata.var["std"])
    if mean is None or std is None:
        return "they are not numeric"
    mean, std = mean[used], std[used]
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        return "they hold NaN or infinite values"
    if np.any(std < 0):
        return "`var['std']` has negative values"
    if adata.n_obs < 2:
        return "one cell cannot show whether `X` is scaled"
    return None


def _numeric(column) -> np.ndarray | None:
    """A ``var`` column as float64, or ``None`` if it is not numeric."""
    values = np.asarray(column)
    if values.dtype.kind not in "fiub":
        return None
    return values.astype(np.float64)


def _clip_value(stats: dict, n_obs: int) -> float | None:
    """``max_value`` of ``sc.pp.scale`` when its clipping is visible in ``X`` (see ``reference_scaling``)."""
    top = float(stats["max"].max())
    if not np.isfinite(top) or top <= 0:
        return None
    bound = (n_obs - 1) / np.sqrt(n_obs)
    repeated = int(np.sum(stats["max"] == top)) >= 2 and abs(top - bound) > 1e-5 * bound
    if top == round(top) or float(stats["min"].min()) == -top or repeated:
        return top
    return None


def _scaled_badly(stats: dict, used: np.ndarray, clip: float | None) -> str | None:
    """Why ``X``'s column statistics are not those of ``sc.pp.scale``'s output, or ``None``."""
    checked = used & (stats["std"] > 1e-6)
    if clip is not None:
        checked &= (stats["max"] < clip) & (stats["min"] > -clip)
    n_checked = int(checked.sum())
    if n_checked == 0:
        return "`X` has no non-constant, unclipped gene to check that it is scaled"
    centred = np.abs(stats["mean"][checked]) <= SCALED_TOLERANCE
    unit = np.abs(stats["std"][checked] - 1) <= SCALED_TOLERANCE
    share = float(np.mean(centred & unit))
    if share >= SCALED_SHARE:
        return None
    if float(np.mean(unit)) >= SCALED_SHARE:
        return (
            f"`X` looks scaled without centring (`sc.pp.scale(zero_center=False)`: {float(np.mean(centred)):.0%} of "
            f"{n_checked} genes have column mean within {SCALED_TOLERANCE} of 0), which `tl.project` does not reproduce"
        )
    return (
        f"`X` does not look scaled: {share:.0%} of its {n_checked} non-constant, unclipped genes have column mean "
        f"within {SCALED_TOLERANCE} of 0 and standard deviation within {SCALED_TOLERANCE} of 1 "
        f"({SCALED_SHARE:.0%} needed)"
    )


def column_statistics(X) -> dict:
    """Float64 column ``mean``, ``std`` (ddof 1), ``max`` and ``min`` of ``X``, read in row blocks."""
    n_obs, n_vars = X.shape
    rows = max(1, BLOCK_VALUES // max(n_vars, 1))
    total = np.zeros(n_vars)
    squares = np.zeros(n_vars)
    top = np.full(n_vars, -np.inf)
    bottom = np.full(n_vars, np.inf)
    for start in range(0, n_obs, rows):
        block = dense_block(X[start : start + rows])
        total += block.sum(axis=0)
        squares += np.einsum("ij,ij->j", block, block)
        np.maximum(top, block.max(axis=0), out=top)
        np.minimum(bottom, block.min(axis=0), out=bottom)
    mean = total / n_obs
    var = np.maximum(squares - n_obs * mean**2, 0.0) / max(n_obs - 1, 1)
    return {"mean": mean, "std": np.sqrt(var), "max": top, "min": bottom}


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


def neighbour_graph(space, use_rep: str, n_neighbors: int, metric: str, random_state) -> AnnData:
    """``sc.pp.neighbors`` of the rows of ``space`` in a light AnnData (``uns['neighbors']``, ``obsp``).

    ``space`` is stored as ``X`` when ``use_rep`` is ``"X"``, else as ``obsm[use_rep]``, so
    the graph's parameters name the representation it was built on.
    """
    import pandas as pd
    import scanpy as sc

    obs = pd.DataFrame(index=np.arange(space.shape[0]).astype(str))
    light = AnnData(X=space, obs=obs) if use_rep == "X" else AnnData(obs=obs, obsm={use_rep: space})
    sc.pp.neighbors(light, use_rep=use_rep, n_neighbors=n_neighbors, metric=metric, random_state=random_state)
    return light
