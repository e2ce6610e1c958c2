"""``scnumap.tl.extend``: add new cells to a trained NUMAP map without moving the old ones."""

from __future__ import annotations

import copy
import numbers
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from ..core._checks import check_bool
from ..core.correction import ReferenceCompression
from ..core.device import resolve_device
from ..core.model_io import model_to_dict
from ..core.numap import HOLD
from ..core.threads import threads_from_n_jobs
from ._integrate import compress
from ._numap import MAX_COMPRESSED_DIMS, _calibration
from ._project import CHUNK_SIZE, _default_key, _fit_correction, _load, _Query, _reference_space
from ._representation import neighbour_graph

#: ``obs`` column of the union that says in which release each cell joined the map
#: (0: the first fit, 1: the first extension, ...).
RELEASE_KEY = "numap_release"

#: Settings of ``uns[key]['params']`` that the fine-tuning takes from the first fit.
TRAINING_PARAMS = (
    "min_dist",
    "spread",
    "densmap",
    "dens_lambda",
    "dens_frac",
    "dens_var_shift",
    "dens_subsample_size",
    "lr",
    "batch_size",
    "negative_sample_rate",
    "input_noise",
)


@threads_from_n_jobs
def extend(
    adata_ref: AnnData | str | Path,
    adata_new: AnnData,
    *,
    key: str = "numap",
    hold: float = HOLD,
    release: bool = True,
    batch_key: str | None = None,
    missing_genes: str = "error",
    max_missing_fraction: float = 0.1,
    random_state: int | None = 0,
    device: str = "auto",
    n_jobs: int | None = None,
    verbose: bool = True,
) -> AnnData:
    """Grow a reference: add new cells to its NUMAP map, keeping the old cells where they are.

    The new cells are put in the reference's representation (genes → reference PCs as
    :func:`scnumap.tl.project` does, then the stored correction for an integrated
    reference), the neighbour graph of all cells is built with the reference graph's
    settings, and the network is fine-tuned from its stored weights with the UMAP (and
    DensMAP, if the reference used it) loss on the union plus a term that holds the old
    cells at their coordinates and one that pulls the cells of a new type towards a place
    found for them first by a UMAP layout of the new cells with the old ones fixed
    (:meth:`scnumap.NUMAP.extend`). New cells of known types land among them; a type the
    reference lacked gets room of its own. Takes about 30 % of a fit's time on the union;
    GrEASE is not refitted.

    Parameters
    ----------
    adata_ref
        Reference after :func:`scnumap.tl.numap` (or a previous ``extend``), or the path of
        its ``.h5ad``. Never modified.
    adata_new
        The cells to add, in the reference's normalisation (as a query of
        :func:`scnumap.tl.project`): the reference genes (matched by name), or its
        ``obsm`` representation when the model was not trained on genes or their PCA.
        Never modified.
    key
        Key of the model in ``adata_ref.uns`` (``tl.numap``'s ``key_added``; the embedding
        is ``obsm['X_numap']`` for ``'numap'``, else ``obsm[key]``).
    hold
        Weight of the term that keeps the old cells in place (typically 0.1–100): larger
        moves them less and gives new cells less room. With the default the old cells
        moved by 0.5–0.7 % of the map's extent (median) in the benchmarks (documentation:
        method, "Growing a reference").
    release
        Hold each old cell in proportion to how little the new cells entered its
        neighbourhood: old cells whose neighbours are mostly new (next to a type the map
        did not have) may move to make room for it. ``False`` holds every old cell alike.
    batch_key
        ``obs`` column of ``adata_new``'s batches, each corrected separately onto an
        integrated reference (``tl.numap(batch_key=...)``).
    missing_genes, max_missing_fraction
        As in :func:`scnumap.tl.project`: ``"zeros"`` fills up to that fraction of
        reference genes absent from ``adata_new``.
    random_state
        Seed of the graph search and the fine-tuning.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    n_jobs
        CPU threads of the call (see :func:`scnumap.tl.numap`).
    verbose
        Progress bar of the fine-tuning.

    Returns
    -------
    A new AnnData with the reference's cells followed by the new ones:

    ``X``
        The reference's ``X`` and the new cells' values of its genes (when the reference
        has ``X``; genes filled by ``missing_genes="zeros"`` are 0). ``var``, ``varm`` and
        the ``uns['pca']`` summary are the reference's; layers are not carried.
    ``obs``
        Both ``obs`` tables (columns outer-joined) and ``obs['numap_release']``, an ordered
        categorical of integers: 0 for the cells of the first fit, ``n`` for those added by
        the ``n``-th extension (colour by it to see the releases).
    ``obsm['X_numap' | key]``
        The embedding of all cells; the old cells' coordinates move by at most a small
        tolerance (``RESULTS.md`` measures it).
    ``obsm[use_rep]``
        The representation of all cells (e.g. ``'X_pca'``; for an integrated reference the
        corrected ``'X_pca_harmony'`` and the uncorrected ``'X_pca'``).
    ``obsp``, ``uns['neighbors']``
        The neighbour graph of the union (the reference's ``neighbors_key``).
    ``uns[key]``
        ``'params'`` (the first fit's settings plus ``'extensions'``: per extension the
        cells before, cells added, training steps, ``hold`` and ``release``) and the updated
        ``'model'`` (weights, the mapping score's calibration on the union; the query
        correction's clusters recomputed on the union, or, for an integrated reference,
        kept). :func:`scnumap.tl.project` maps further queries onto it as before.
    """
    start = logg.info("extending the NUMAP reference")
    if isinstance(adata_ref, str | Path):
        path = Path(adata_ref)
        if not path.exists():
            raise FileNotFoundError(f"Reference file {str(path)!r} does not exist.")
        adata_ref = anndata.read_h5ad(path)
    if not isinstance(adata_new, AnnData):
        raise TypeError(f"`adata_new` must be an AnnData, got {type(adata_new).__name__}.")
    if adata_new.n_obs == 0:
        raise ValueError("`adata_new` has no cells; pass at least one cell to add.")
    if isinstance(hold, bool) or not isinstance(hold, numbers.Real) or not hold > 0:
        raise ValueError(f"`hold` must be a number > 0, got {hold!r}.")
    release = check_bool(release, "release")
    if missing_genes not in ("error", "zeros"):
        raise ValueError(f"`missing_genes` must be 'error' or 'zeros', got {missing_genes!r}.")
    _, entry, model, rep = _load(adata_ref, key, True, device=resolve_device(device))
    shared = adata_ref.obs_names.intersection(adata_new.obs_names)
    if len(shared):
        raise ValueError(
            f"{len(shared)} cell names of `adata_new` are already in the reference (e.g. {list(shared[:3])}); "
            "give the new cells unique names, e.g. `adata_new.obs_names = adata_new.obs_names + '-new'`."
        )
    params = copy.deepcopy(dict(adata_ref.uns[key].get("params", {})))  # the union shares no array with the reference
    embedding_key = _default_key(key)
    if embedding_key not in adata_ref.obsm:
        raise KeyError(f"The reference has no `obsm[{embedding_key!r}]`; re-run `scnumap.tl.numap` on it.")
    positions = np.asarray(adata_ref.obsm[embedding_key], dtype=np.float32)

    # the new cells in the reference's space (corrected onto an integrated reference)
    query = _Query(adata_new, rep, missing_genes, max_missing_fraction, CHUNK_SIZE)
    raw = np.concatenate([block for _, block in query.blocks()], axis=0)
    if rep.integrated:
        correction = _fit_correction(query, entry, batch_key, f"uns[{key!r}]['model']/correction")
        new_space = np.concatenate([correction.apply(block, rows) for rows, block in query.blocks()], axis=0)
    elif batch_key is not None:
        raise ValueError(
            "`batch_key` corrects the new cells onto an integrated reference, and this reference is not integrated "
            "(`tl.numap(adata_ref, batch_key=...)` makes one); leave `batch_key=None`."
        )
    else:
        new_space = raw
    ref_space = _reference_space(adata_ref, rep)
    union_space = (
        sp.vstack([ref_space, sp.csr_matrix(new_space)], format="csr")
        if sp.issparse(ref_space)
        else np.concatenate([ref_space, new_space.astype(np.float32)], axis=0)
    )

    # the neighbour graph of the union, with the reference graph's settings
    neighbors_key = str(params.get("neighbors_key", "neighbors"))
    graph_params = adata_ref.uns.get(neighbors_key, {}).get("params", {}) if neighbors_key in adata_ref.uns else {}
    n_neighbors = int(np.ravel(graph_params.get("n_neighbors", 15))[0])
    metric = str(params.get("metric", "euclidean"))
    logg.info(f"    building the neighbour graph of the union ({n_neighbors} neighbours, {metric})")
    graph = neighbour_graph(union_space, rep.use_rep, n_neighbors, metric, random_state)

    # fine-tune the stored network on the union
    for name in TRAINING_PARAMS:
        if name in params:
            setattr(model, name, np.asarray(params[name]).item())
    epochs = int(np.asarray(params.get("epochs", -1)).item())
    model.epochs = None if epochs < 0 else epochs
    model.metric, model.n_neighbors = metric, n_neighbors
    model.random_state, model.n_jobs, model.verbose = random_state, n_jobs, bool(verbose)
    logg.info(
        f"    fine-tuning on {positions.shape[0]} reference and {adata_new.n_obs} new cells "
        f"(hold={hold:g}, release={release})"
    )
    graph_matrices = graph.obsp["connectivities"], graph.obsp["distances"]
    model.extend(union_space, positions, *graph_matrices, hold=float(hold), release=release)

    new_entry = model_to_dict(model)
    new_entry["representation"] = copy.deepcopy(entry["representation"])
    new_entry["mapping"] = _calibration(
        graph.obsp["distances"], union_space, metric, random_state, model.embedding_
    ).to_dict()
    if rep.integrated:
        new_entry["correction"] = copy.deepcopy(entry["correction"])
    elif "correction" in entry and not sp.issparse(union_space) and union_space.shape[1] <= MAX_COMPRESSED_DIMS:
        # the k-means of the union starts from the reference's clusters
        where = f"uns[{key!r}]['model']/correction"
        previous = ReferenceCompression.from_dict(entry["correction"], n_dims=union_space.shape[1], where=where)
        union_rows = np.asarray(union_space, dtype=np.float64)
        new_entry["correction"] = compress(union_rows, random_state, previous=previous.centroids).to_dict()
    params["extensions"] = _history(params.get("extensions"), positions.shape[0], adata_new.n_obs, model, hold, release)
    union = _union(adata_ref, adata_new, rep, union_space, raw)
    union.obsm[embedding_key] = model.embedding_
    prefix = "" if neighbors_key == "neighbors" else f"{neighbors_key}_"
    union.obsp[f"{prefix}connectivities"] = graph.obsp["connectivities"]
    union.obsp[f"{prefix}distances"] = graph.obsp["distances"]
    neighbours = dict(graph.uns["neighbors"])
    neighbours["connectivities_key"], neighbours["distances_key"] = f"{prefix}connectivities", f"{prefix}distances"
    union.uns[neighbors_key] = neighbours
    union.uns[key] = {"params": params, "model": new_entry}
    moved = np.linalg.norm(model.embedding_[: positions.shape[0]] - positions, axis=1)
    extent = float(np.max(np.ptp(positions, axis=0))) or 1.0
    logg.info(
        f"    reference cells moved by {np.median(moved) / extent:.2%} (median) and "
        f"{np.quantile(moved, 0.95) / extent:.2%} (95th percentile) of the map's extent",
    )
    logg.info("    finished", time=start, deep=f"returned an AnnData of {union.n_obs} cells")
    return union


def _history(previous, n_before: int, n_added: int, model, hold: float, release: bool) -> dict:
    """``params['extensions']``: one entry per extension in each array (``release`` as 0/1;
    0 for extensions recorded before it existed, which held every cell alike)."""
    rows = {
        "n_obs_before": n_before,
        "n_obs_added": n_added,
        "n_steps": model.n_steps_,
        "hold": hold,
        "release": int(release),
    }
    previous = previous if isinstance(previous, dict) else {}
    n_previous = len(np.atleast_1d(previous.get("n_obs_before", [])))
    history = {}
    for name, value in rows.items():
        old = np.asarray(previous[name]) if name in previous else np.zeros(n_previous)
        dtype = np.float64 if name == "hold" else np.int64
        history[name] = np.append(old.astype(dtype), np.asarray(value, dtype=dtype))
    return history


def _union(adata_ref, adata_new, rep, union_space, raw) -> AnnData:
    """The AnnData of the reference's cells followed by the new ones (no embedding, no graph yet)."""
    new_X = _aligned_X(adata_ref, adata_new, rep)
    var = adata_ref.var.copy()
    parts = [
        AnnData(X=adata_ref.X if new_X is not None else None, obs=adata_ref.obs.copy(), var=var),
        AnnData(X=new_X, obs=adata_new.obs.copy(), var=var),
    ]
    union = anndata.concat(parts, join="outer", merge="first")
    union.var = var
    for name, value in adata_ref.varm.items():
        union.varm[name] = value.copy()
    if "pca" in adata_ref.uns:
        union.uns["pca"] = copy.deepcopy(adata_ref.uns["pca"])
    before = (
        np.asarray(adata_ref.obs[RELEASE_KEY], dtype=np.int64)
        if RELEASE_KEY in adata_ref.obs
        else np.zeros(adata_ref.n_obs, dtype=np.int64)
    )
    release = int(before.max(initial=0)) + 1
    values = np.concatenate([before, np.full(adata_new.n_obs, release, dtype=np.int64)])
    union.obs[RELEASE_KEY] = pd.Categorical(values, categories=np.arange(release + 1), ordered=True)
    if not rep.from_genes or rep.has_pca:
        union.obsm[rep.use_rep] = np.asarray(union_space, dtype=np.float32)
    if rep.integrated and "X_pca" in adata_ref.obsm:
        ref_pca = np.asarray(adata_ref.obsm["X_pca"], dtype=np.float32)[:, : raw.shape[1]]
        union.obsm["X_pca"] = np.concatenate([ref_pca, raw.astype(np.float32)], axis=0)
    _palettes(adata_ref, union)
    return union


def _aligned_X(adata_ref: AnnData, adata_new: AnnData, rep) -> np.ndarray | sp.spmatrix | None:
    """``adata_new.X`` on the reference's genes, in the reference's ``X`` format (None without them)."""
    if adata_ref.X is None or adata_new.X is None:
        return None
    genes = np.asarray(adata_ref.var_names, dtype=str)
    index = pd.Index(adata_new.var_names).get_indexer(genes)
    present = index >= 0
    if not present.all() and not rep.from_genes:
        logg.info("    `adata_new` lacks some reference genes: the union has no `X` (the model is not on genes)")
        return None
    X = adata_new.X
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    if hasattr(X, "compute"):
        X = X.compute()
    # one sparse product picks and orders the columns; absent genes stay 0
    pick = sp.csr_matrix(
        (np.ones(int(present.sum()), dtype=np.float32), (index[present], np.flatnonzero(present))),
        shape=(adata_new.n_vars, genes.shape[0]),
    )
    aligned = sp.csr_matrix(X) @ pick
    dtype = adata_ref.X.dtype
    return aligned.astype(dtype) if sp.issparse(adata_ref.X) else aligned.toarray().astype(dtype)


def _palettes(adata_ref: AnnData, union: AnnData) -> None:
    """The reference's ``uns['*_colors']``, extended to categories the new cells bring."""
    from scanpy.plotting.palettes import default_102

    for name in adata_ref.uns:
        col = name.removesuffix("_colors")
        if not name.endswith("_colors") or col not in adata_ref.obs or col not in union.obs:
            continue
        old = adata_ref.obs[col]
        if not isinstance(old.dtype, pd.CategoricalDtype) or len(adata_ref.uns[name]) != len(old.cat.categories):
            continue
        colours = dict(zip(old.cat.categories, adata_ref.uns[name], strict=True))
        values = union.obs[col]
        if not isinstance(values.dtype, pd.CategoricalDtype):
            union.obs[col] = values = values.astype("category")
        spare = iter([c for c in default_102 if c not in set(colours.values())])
        union.uns[name] = np.asarray([colours.get(c) or next(spare) for c in values.cat.categories], dtype=object)
