"""``scnumap.tl.project``: map query cells onto a reference NUMAP embedding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from ..core.model_io import ModelFormatError, model_from_dict
from ..core.numap import NUMAP
from ..core.representation import Representation
from ._representation import dense_block

#: Default rows per projected block.
CHUNK_SIZE = 50_000

#: Largest number of vote counts (query rows × categories) held at once.
VOTE_BLOCK_VALUES = 1 << 22


def load_reference(
    adata_ref: AnnData | str | Path, key: str = "numap", *, load_X: bool = False
) -> tuple[AnnData, dict, NUMAP]:
    """The reference AnnData, its model entry and the rebuilt model, all validated.

    A path is read selectively and closed before returning: ``obs``, ``var``,
    ``uns[key]``, the ``uns['*_colors']`` palettes, the ``obsm`` embedding
    (``'X_numap'`` for ``key='numap'``, else ``key``) and the representation's ``obsm``
    key; ``X`` only when ``load_X`` and the model was trained on ``X``. Layers, ``obsp``
    and the other ``obsm`` entries are not read.

    Raises
    ------
    ModelFormatError
        (a ``ValueError``) if the model or its ``representation`` entry is malformed.
    """
    adata_ref, entry, model, _ = _load(adata_ref, key, load_X)
    return adata_ref, entry, model


def _load(adata_ref, key: str, load_X: bool) -> tuple[AnnData, dict, NUMAP, Representation]:
    if isinstance(adata_ref, str | Path):
        adata_ref = _read_reference(Path(adata_ref), key, load_X)
    if not isinstance(adata_ref, AnnData):
        raise TypeError(f"`adata_ref` must be an AnnData or a path to .h5ad, got {type(adata_ref).__name__}.")
    if key not in adata_ref.uns or "model" not in adata_ref.uns[key]:
        raise ValueError(
            f"The reference has no NUMAP model in `uns[{key!r}]['model']`; "
            f"run `scnumap.tl.numap(adata_ref{'' if key == 'numap' else f', key_added={key!r}'})` first."
        )
    entry = adata_ref.uns[key]["model"]
    where = f"uns[{key!r}]['model']"
    model = model_from_dict(entry, where=where)
    if "representation" not in entry:
        raise ModelFormatError(f"`{where}` has no `representation` entry; the model is incomplete.")
    rep = Representation.from_dict(
        entry["representation"], n_features=model.n_features_in_, where=f"{where}/representation"
    )
    return adata_ref, entry, model, rep


def _read_reference(path: Path, key: str, load_X: bool) -> AnnData:
    import h5py

    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem

    if not path.exists():
        raise FileNotFoundError(f"Reference file {str(path)!r} does not exist.")
    with h5py.File(path, "r") as f:
        if "uns" not in f or key not in f["uns"]:
            raise ValueError(
                f"The reference file {str(path)!r} has no NUMAP model in `uns[{key!r}]`; "
                f"run `scnumap.tl.numap(adata_ref{'' if key == 'numap' else f', key_added={key!r}'})` and save it."
            )
        uns = {key: read_elem(f["uns"][key])}
        uns.update({name: read_elem(f["uns"][name]) for name in f["uns"] if name.endswith("_colors")})
        rep = uns[key].get("model", {}).get("representation", {}) if isinstance(uns[key], dict) else {}
        use_rep = rep.get("use_rep") if isinstance(rep, dict) else None
        wanted = {_default_key(key), use_rep} - {None, "X"}
        obsm = {name: read_elem(f["obsm"][name]) for name in wanted if "obsm" in f and name in f["obsm"]}
        X = read_elem(f["X"]) if load_X and use_rep == "X" and "X" in f else None
        return AnnData(X=X, obs=read_elem(f["obs"]), var=read_elem(f["var"]), obsm=obsm, uns=uns)


def _default_key(ref_key: str) -> str:
    """The ``obsm`` key ``tl.numap(key_added=ref_key)`` writes."""
    return "X_numap" if ref_key == "numap" else ref_key


def project(
    adata_query: AnnData,
    adata_ref: AnnData | str | Path,
    *,
    obs: str | Sequence[str] | None = None,
    key_added: str | None = None,
    ref_key: str = "numap",
    missing_genes: str = "error",
    max_missing_fraction: float = 0.1,
    query_pca_in_reference_basis: bool = False,
    n_neighbors: int = 15,
    label_space: str = "representation",
    chunk_size: int = CHUNK_SIZE,
    copy: bool = False,
) -> AnnData | None:
    """Project query cells into a reference NUMAP embedding, with label transfer.

    The query must be in the same normalisation as the reference. How it enters the
    model depends on the space the reference was trained on:

    * ``X_pca`` from ``sc.pp.pca`` on the reference's ``X`` (the model stores the
      loadings): genes are matched by name and reordered, the query is centred on
      the **reference** mean and multiplied by the reference loadings;
    * ``X``: genes are matched by name and reordered;
    * an ``X_pca`` that is not ``(X - mean) @ varm['PCs']`` (e.g. edited or from
      another tool): refused, unless ``query_pca_in_reference_basis=True`` says the
      query's ``obsm['X_pca']`` is in the reference's PCA basis;
    * another ``obsm`` key: ``adata_query.obsm[key]`` is used as is; it must be in the
      same space as the reference's (e.g. from the same trained model), with at least
      the reference's width when the model used its first columns, else equal width.

    Parameters
    ----------
    adata_query
        Query cells (in memory, backed, or with a dask ``X``; read in chunks). Not
        modified except for the keys listed under Returns.
    adata_ref
        Reference AnnData after :func:`scnumap.tl.numap`, or the path of its ``.h5ad``
        (read selectively: ``uns``, ``obs``, the embedding and the representation; ``X``
        only for a label vote in ``X`` space; the file is closed afterwards).
    obs
        Reference ``obs`` column(s) whose labels are transferred.
    key_added
        ``obsm`` key of the query embedding; default the reference's embedding key
        (``'X_numap'`` for ``ref_key='numap'``, else ``ref_key``).
    ref_key
        Key of the model in ``adata_ref.uns`` (the ``key_added`` of ``tl.numap``).
    missing_genes
        ``"error"`` (default) or ``"zeros"``: fill reference genes absent from the
        query with zeros, allowed when at most ``max_missing_fraction`` are missing.
    max_missing_fraction
        Largest fraction (0–1) of reference genes that ``missing_genes="zeros"`` may fill.
    query_pca_in_reference_basis
        Use the query's own ``obsm['X_pca']`` for a reference whose ``X_pca`` cannot be
        rebuilt from its genes. Set it only when the query's ``X_pca`` was computed with
        the reference's loadings and mean; ignored when the reference stores its loadings.
    n_neighbors
        Reference cells (≥ 1) voting for each query cell's label.
    label_space
        ``"representation"`` (default: the kNN vote runs in the space the model was
        trained on, e.g. PCA or genes) or ``"embedding"`` (the NUMAP coordinates).
    chunk_size
        Query rows per block.
    copy
        Return a copy of the query instead of writing to it.

    Returns
    -------
    ``adata_query`` if ``copy`` else ``None``. With ``name = key_added.removeprefix('X_')``
    (``'numap'`` by default), sets

    ``adata_query.obsm[key_added]``
        ``(n_query, n_components)`` float32 coordinates.
    ``adata_query.obs[f'{col}_{name}']``
        Transferred label for each ``col`` in ``obs``: categorical with the reference
        column's categories (its sorted unique values if it is not categorical).
    ``adata_query.obs[f'{col}_{name}_confidence']``
        Fraction of the ``n_neighbors`` reference neighbours that agree (0–1).
    """
    start = logg.info("projecting onto the NUMAP reference")
    if not isinstance(adata_query, AnnData):
        raise TypeError(f"`adata_query` must be an AnnData, got {type(adata_query).__name__}.")
    if adata_query.n_obs == 0:
        raise ValueError("`adata_query` has no cells; pass a query with at least one cell.")
    if missing_genes not in ("error", "zeros"):
        raise ValueError(f"`missing_genes` must be 'error' or 'zeros', got {missing_genes!r}.")
    if label_space not in ("representation", "embedding"):
        raise ValueError(f"`label_space` must be 'representation' or 'embedding', got {label_space!r}.")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be an integer >= 1, got {n_neighbors!r}.")
    columns = [obs] if isinstance(obs, str) else list(obs or [])
    vote_in_rep = bool(columns) and label_space == "representation"
    adata_ref, _, model, rep = _load(adata_ref, ref_key, vote_in_rep)
    for col in columns:
        if col not in adata_ref.obs:
            raise KeyError(f"`obs={col!r}` is not a column of the reference's obs ({list(adata_ref.obs.columns)}).")
    key = key_added or _default_key(ref_key)
    suffix = key.removeprefix("X_")
    ref_embedding = adata_ref.obsm[_embedding_key(adata_ref, ref_key)] if columns and not vote_in_rep else None
    _check_pca_basis(rep, query_pca_in_reference_basis)
    blocks, n_rows = _query_blocks(adata_query, rep, missing_genes, max_missing_fraction, chunk_size)
    neighbors = _fit_neighbors(_reference_space(adata_ref, rep), n_neighbors) if vote_in_rep else None
    index_blocks: list[np.ndarray] = []

    def checked() -> Iterator[np.ndarray]:
        for block in blocks:
            if block.shape[1] != model.n_features_in_:
                raise ValueError(
                    f"A query block has {block.shape[1]} columns; the reference model takes {model.n_features_in_}."
                )
            if neighbors is not None:
                index_blocks.append(neighbors.kneighbors(block, return_distance=False))
            yield block

    embedding = model.transform_blocks(checked(), n_rows)
    labels = {}
    if columns:
        if vote_in_rep:
            index = np.concatenate(index_blocks)
        else:
            index = _fit_neighbors(ref_embedding, n_neighbors).kneighbors(embedding, return_distance=False)
        labels = vote_labels(index, adata_ref.obs[columns], suffix=suffix)
    # everything is computed and validated: only now write to the query
    adata_query = adata_query.copy() if copy else adata_query
    if key in adata_query.obsm:
        logg.info(f"    overwriting existing obsm[{key!r}]")
    adata_query.obsm[key] = embedding
    for name, values in labels.items():
        adata_query.obs[name] = values
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    {key!r} (adata.obsm)" + "".join(f"\n    {name!r} (adata.obs)" for name in labels),
    )
    return adata_query if copy else None


def _embedding_key(adata_ref: AnnData, ref_key: str) -> str:
    key = _default_key(ref_key)
    if key not in adata_ref.obsm:
        raise KeyError(f"The reference has no `obsm[{key!r}]`; re-run `scnumap.tl.numap` on it.")
    return key


def _check_pca_basis(rep: Representation, query_pca_in_reference_basis: bool) -> None:
    if rep.use_rep != "X_pca" or rep.has_pca or query_pca_in_reference_basis:
        return
    if rep.pca_mismatch is None or rep.pca_mismatch < 0:
        why = "cannot be rebuilt from its genes (no usable `varm['PCs']`)"
    else:
        why = f"is not `(X - mean) @ varm['PCs']` (relative mismatch {rep.pca_mismatch:.2g})"
    raise ValueError(
        f"The reference model was trained on an `obsm['X_pca']` that {why}, so the query's genes cannot be "
        "put in its basis, and the query's own `obsm['X_pca']` is in the basis of another PCA unless it was "
        "computed with the reference's loadings. Recompute the reference PCA with `sc.pp.pca(adata_ref)` "
        "(then `sc.pp.neighbors` and `scnumap.tl.numap`), or, if the query's `obsm['X_pca']` is in the "
        "reference's PCA basis, pass `query_pca_in_reference_basis=True`."
    )


def _query_blocks(adata: AnnData, rep: Representation, missing_genes: str, max_missing_fraction: float, chunk_size):
    """An iterator of dense float32 representation blocks of the query, and the row count."""
    n = adata.n_obs
    if rep.from_genes:
        genes = rep.var_names
        columns, missing = _match_genes(adata, genes, missing_genes, max_missing_fraction)
        loadings, mean = rep.pca_loadings, rep.pca_mean

        def gene_blocks():
            for start in range(0, n, chunk_size):
                block = _dense(adata.X[start : start + chunk_size])
                full = np.zeros((block.shape[0], genes.shape[0]), dtype=np.float32)
                full[:, ~missing] = block[:, columns[~missing]]
                if rep.has_pca:
                    full = (full - mean) @ loadings
                yield full

        return gene_blocks(), n
    use_rep = rep.use_rep
    if use_rep not in adata.obsm:
        raise ValueError(
            f"The model was trained on `obsm[{use_rep!r}]`, which the query lacks; compute it in the "
            "same space as the reference (or train the reference on X_pca from `sc.pp.pca` so genes can be used)."
        )
    X = adata.obsm[use_rep]
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    width = rep.n_dims
    prefix_ok = use_rep == "X_pca" or rep.truncated
    if X.shape[1] < width or (not prefix_ok and X.shape[1] != width):
        raise ValueError(
            f"The query's `obsm[{use_rep!r}]` has {X.shape[1]} columns; the reference model expects {width}"
            f"{' (or more: it uses the first ones)' if prefix_ok else ''}."
        )

    def obsm_blocks():
        for start in range(0, n, chunk_size):
            yield _dense(X[start : start + chunk_size, :width])

    return obsm_blocks(), n


def _reference_space(adata_ref: AnnData, rep: Representation):
    """The reference cells in the model's input space: CSR float32 if sparse, else dense float32."""
    if not rep.from_genes or rep.has_pca:
        if rep.use_rep not in adata_ref.obsm:
            raise KeyError(f"The reference has no `obsm[{rep.use_rep!r}]` for the label vote; pass the full reference.")
        X = adata_ref.obsm[rep.use_rep]
        X = X.to_numpy() if hasattr(X, "to_numpy") else X
        return np.asarray(X[:, : rep.n_dims], dtype=np.float32)
    X = adata_ref.X
    if X is None:
        raise ValueError(
            "The reference has no `X`, which the label vote in gene space needs; pass the full reference "
            "or `label_space='embedding'`."
        )
    if not np.array_equal(np.asarray(adata_ref.var_names, dtype=str), rep.var_names):
        raise ValueError("The reference's `var_names` differ from the genes its model was trained on.")
    if hasattr(X, "to_memory"):  # backed sparse
        X = X.to_memory()
    if hasattr(X, "compute"):  # dask
        X = X.compute()
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    return np.asarray(X, dtype=np.float32)


def _match_genes(adata: AnnData, genes: np.ndarray, missing_genes: str, max_missing_fraction: float):
    index = pd.Index(adata.var_names).get_indexer(genes)
    missing = index < 0
    n_missing = int(missing.sum())
    if n_missing:
        names = ", ".join(genes[missing][:10]) + (" ..." if n_missing > 10 else "")
        fraction = n_missing / genes.shape[0]
        if missing_genes == "error":
            raise ValueError(
                f"{n_missing} of the reference's {genes.shape[0]} genes are missing from the query: {names}. "
                "Check that both use the same gene identifiers; if only a few are missing, pass "
                "`missing_genes='zeros'` to fill them."
            )
        if fraction > max_missing_fraction:
            raise ValueError(
                f"{n_missing} of {genes.shape[0]} reference genes ({fraction:.0%}) are missing from the query "
                f"({names}), more than `max_missing_fraction={max_missing_fraction}` allows for "
                "`missing_genes='zeros'`."
            )
        logg.warning(f"{n_missing} reference genes missing from the query were filled with zeros: {names}")
    return index, missing


def _dense(block) -> np.ndarray:
    block = dense_block(block, np.float32)
    if not np.all(np.isfinite(block)):
        raise ValueError("The query contains NaN or infinite values; remove or impute them first.")
    return block


def _fit_neighbors(space, n_neighbors: int):
    from sklearn.neighbors import NearestNeighbors

    if not sp.issparse(space):
        space = np.asarray(space, dtype=np.float32)
    return NearestNeighbors(n_neighbors=min(n_neighbors, space.shape[0])).fit(space)


def transfer_labels(ref_space, ref_labels: pd.DataFrame, query_space, *, n_neighbors: int = 15, suffix="numap"):
    """kNN vote among reference cells (dense or scipy sparse spaces): label and agreement per query cell."""
    if not sp.issparse(query_space):
        query_space = np.asarray(query_space, dtype=np.float32)
    index = _fit_neighbors(ref_space, n_neighbors).kneighbors(query_space, return_distance=False)
    return vote_labels(index, ref_labels, suffix=suffix)


def vote_labels(index: np.ndarray, ref_labels: pd.DataFrame, *, suffix: str = "numap") -> dict:
    """Majority label among the reference cells ``index`` (``(n_query, k)``) of each query cell.

    Returns ``{f'{col}_{suffix}': Categorical, f'{col}_{suffix}_confidence': float32}`` per column;
    the categories are the reference column's (its sorted unique values if not categorical).
    Ties go to the first category; reference cells without a label do not vote.
    """
    n, k = index.shape
    out = {}
    for col in ref_labels.columns:
        values = ref_labels[col]
        labels = values.array if isinstance(values.dtype, pd.CategoricalDtype) else pd.Categorical(values)
        n_cat = max(len(labels.categories), 1)
        votes = np.asarray(labels.codes)[index]
        best = np.full(n, -1, dtype=np.int64)
        top = np.zeros(n, dtype=np.int64)
        step = max(1, VOTE_BLOCK_VALUES // n_cat)
        for s in range(0, n, step):
            v = votes[s : s + step]
            rows = np.broadcast_to(np.arange(v.shape[0])[:, None], v.shape)
            ok = v >= 0
            counts = np.bincount(rows[ok] * n_cat + v[ok], minlength=v.shape[0] * n_cat).reshape(-1, n_cat)
            top[s : s + step] = counts.max(axis=1)
            best[s : s + step] = np.where(top[s : s + step] > 0, counts.argmax(axis=1), -1)
        out[f"{col}_{suffix}"] = pd.Categorical.from_codes(best, dtype=labels.dtype)
        out[f"{col}_{suffix}_confidence"] = (top / k).astype(np.float32)
    return out
