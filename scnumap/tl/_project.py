"""``scnumap.tl.project``: map query cells onto a reference NUMAP embedding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from ..core.model_io import ModelFormatError, model_from_dict
from ..core.numap import NUMAP
from ._representation import choose_representation, dense_block

#: Default rows per projected block.
CHUNK_SIZE = 50_000


def load_reference(adata_ref: AnnData | str | Path, key: str = "numap") -> tuple[AnnData, dict, NUMAP]:
    """The reference AnnData (read from ``.h5ad`` if a path), its model entry and the rebuilt model."""
    if isinstance(adata_ref, str | Path):
        import anndata

        path = Path(adata_ref)
        if not path.exists():
            raise FileNotFoundError(f"Reference file {str(path)!r} does not exist.")
        adata_ref = anndata.read_h5ad(path)
    if not isinstance(adata_ref, AnnData):
        raise TypeError(f"`adata_ref` must be an AnnData or a path to .h5ad, got {type(adata_ref).__name__}.")
    if key not in adata_ref.uns or "model" not in adata_ref.uns[key]:
        raise ValueError(
            f"The reference has no NUMAP model in `uns[{key!r}]['model']`; "
            f"run `scnumap.tl.numap(adata_ref{'' if key == 'numap' else f', key_added={key!r}'})` first."
        )
    entry = adata_ref.uns[key]["model"]
    model = model_from_dict(entry, where=f"uns[{key!r}]['model']")
    if "representation" not in entry:
        raise ModelFormatError(f"`uns[{key!r}]['model']` has no `representation` entry; the model is incomplete.")
    return adata_ref, entry, model


def project(
    adata_query: AnnData,
    adata_ref: AnnData | str | Path,
    *,
    obs: str | Sequence[str] | None = None,
    key_added: str | None = None,
    ref_key: str = "numap",
    missing_genes: str = "error",
    max_missing_fraction: float = 0.1,
    n_neighbors: int = 15,
    label_space: str = "representation",
    chunk_size: int = CHUNK_SIZE,
    copy: bool = False,
) -> AnnData | None:
    """Project query cells into a reference NUMAP embedding, with label transfer.

    The query must be in the same normalisation as the reference. For a PCA
    representation, genes are matched by name and reordered, the query is centred
    on the **reference** mean and multiplied by the reference loadings; for another
    representation, ``adata_query.obsm[use_rep]`` must exist with the reference's width.

    Parameters
    ----------
    adata_query
        Query cells (in memory, backed, or with a dask ``X``; read in chunks).
    adata_ref
        Reference AnnData after :func:`scnumap.tl.numap`, or the path of its ``.h5ad``.
    obs
        Reference ``obs`` column(s) whose labels are transferred.
    key_added
        Name of the query embedding (default ``'X_numap'``).
    ref_key
        Key of the model in ``adata_ref.uns`` (the ``key_added`` of ``tl.numap``).
    missing_genes
        ``"error"`` (default) or ``"zeros"``: fill reference genes absent from the
        query with zeros, allowed when at most ``max_missing_fraction`` are missing.
    max_missing_fraction
        Largest fraction of reference genes that ``missing_genes="zeros"`` may fill.
    n_neighbors
        Reference cells voting for each query cell's label.
    label_space
        ``"representation"`` (default: the kNN vote runs in the space the model was
        trained on, e.g. PCA) or ``"embedding"`` (the 2-D NUMAP coordinates).
    chunk_size
        Query rows per block.
    copy
        Return a copy of the query instead of writing to it.

    Returns
    -------
    ``adata_query`` if ``copy`` else ``None``. Sets

    ``adata_query.obsm['X_numap' | key_added]``
        ``(n_query, n_components)`` float32 coordinates.
    ``adata_query.obs[f'{col}_numap']``
        Transferred label for each ``col`` in ``obs`` (categorical).
    ``adata_query.obs[f'{col}_numap_confidence']``
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
    columns = [obs] if isinstance(obs, str) else list(obs or [])
    adata_ref, entry, model = load_reference(adata_ref, ref_key)
    for col in columns:
        if col not in adata_ref.obs:
            raise KeyError(f"`obs={col!r}` is not a column of the reference's obs ({list(adata_ref.obs.columns)}).")
    rep = entry["representation"]
    blocks, n_rows = _query_blocks(adata_query, rep, missing_genes, max_missing_fraction, chunk_size)
    rep_blocks: list[np.ndarray] = []
    keep_rep = bool(columns) and label_space == "representation"

    def tee() -> Iterator[np.ndarray]:
        for block in blocks:
            if keep_rep:
                rep_blocks.append(block)
            yield block

    embedding = model.transform_blocks(tee(), n_rows)
    labels = {}
    if columns:
        if label_space == "representation":
            ref_space, _, _ = choose_representation(adata_ref, str(rep["use_rep"]), int(rep["n_dims"]))
            query_space = np.concatenate(rep_blocks) if rep_blocks else np.empty((0, 0))
        else:
            ref_key_obsm = _embedding_key(adata_ref, ref_key)
            ref_space, query_space = adata_ref.obsm[ref_key_obsm], embedding
        labels = transfer_labels(ref_space, adata_ref.obs[columns], query_space, n_neighbors=n_neighbors)
    adata_query = adata_query.copy() if copy else adata_query
    key = key_added or "X_numap"
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
    key = "X_numap" if ref_key == "numap" else ref_key
    if key not in adata_ref.obsm:
        raise KeyError(f"The reference has no `obsm[{key!r}]`; re-run `scnumap.tl.numap` on it.")
    return key


def _query_blocks(adata: AnnData, rep: dict, missing_genes: str, max_missing_fraction: float, chunk_size: int):
    """An iterator of dense float32 representation blocks of the query, and the row count."""
    use_rep = str(rep["use_rep"])
    n = adata.n_obs
    if use_rep == "X" or bool(rep.get("has_pca", False)):
        genes = np.asarray(rep["var_names"]).astype(str)
        columns, missing = _match_genes(adata, genes, missing_genes, max_missing_fraction)
        loadings = np.asarray(rep["pca_loadings"], dtype=np.float32) if bool(rep.get("has_pca", False)) else None
        mean = np.asarray(rep["pca_mean"], dtype=np.float32) if loadings is not None else None

        def gene_blocks():
            for start in range(0, n, chunk_size):
                block = _dense(adata.X[start : start + chunk_size])
                full = np.zeros((block.shape[0], genes.shape[0]), dtype=np.float32)
                full[:, ~missing] = block[:, columns[~missing]]
                if loadings is not None:
                    full = (full - mean) @ loadings
                yield full

        return gene_blocks(), n
    if use_rep not in adata.obsm:
        raise ValueError(
            f"The model was trained on `obsm[{use_rep!r}]`, which the query lacks; compute it in the "
            "same space as the reference (or train the reference on X_pca from `sc.pp.pca` so genes can be used)."
        )
    X = adata.obsm[use_rep]
    width = int(rep["n_dims"])
    if X.shape[1] < width or (use_rep != "X_pca" and X.shape[1] != width):
        raise ValueError(
            f"The query's `obsm[{use_rep!r}]` has {X.shape[1]} columns; the reference model expects {width}."
        )

    def obsm_blocks():
        for start in range(0, n, chunk_size):
            yield _dense(X[start : start + chunk_size, :width])

    return obsm_blocks(), n


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


def transfer_labels(ref_space, ref_labels: pd.DataFrame, query_space, *, n_neighbors: int = 15) -> dict:
    """kNN vote among reference cells: transferred label and agreement per query cell."""
    from sklearn.neighbors import NearestNeighbors

    ref_space = np.asarray(ref_space, dtype=np.float32)
    k = min(n_neighbors, ref_space.shape[0])
    nn = NearestNeighbors(n_neighbors=k).fit(ref_space)
    _, idx = nn.kneighbors(np.asarray(query_space, dtype=np.float32))
    out = {}
    for col in ref_labels.columns:
        codes, uniques = pd.factorize(ref_labels[col].astype(str), sort=True)
        votes = codes[idx]
        counts = np.stack([(votes == c).sum(axis=1) for c in range(len(uniques))], axis=1)
        best = counts.argmax(axis=1)
        out[f"{col}_numap"] = pd.Categorical.from_codes(best, categories=uniques)
        out[f"{col}_numap_confidence"] = (counts.max(axis=1) / k).astype(np.float32)
    return out
