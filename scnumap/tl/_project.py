"""``scnumap.tl.project``: map query cells onto a reference NUMAP embedding."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from ..core._checks import check_bool
from ..core.correction import CompressionFormatError, QueryCorrection, ReferenceCompression
from ..core.mapping import CALIBRATION_NEIGHBORS, CalibrationFormatError, MappingCalibration, knn_distance_matrix
from ..core.model_io import ModelFormatError, model_from_dict
from ..core.numap import NUMAP
from ..core.projection import (
    BlockProjector,
    SampleSearch,
    cached_embedding_index,
    correction_statistics,
    dask_scheduler,
    project_dask,
    search_width,
)
from ..core.query_share import MIN_QUERY_CELLS, SAMPLE_SIZE, QueryShare
from ..core.recentring import Recentring
from ..core.reference_index import cached_index
from ..core.representation import Representation
from ..core.reranking import moved_neighbours
from ..core.threads import limited_threads, projection_threads
from ._representation import dense_block

#: Passes of the query correction, each assigning the query to the reference clusters from
#: its coordinates corrected by the previous ones (1 = Symphony's single pass).
CORRECTION_ROUNDS = 3

#: Default rows per projected block.
CHUNK_SIZE = 50_000

#: Largest query representation (bytes) held in memory between the passes over it
#: (correction, query sample, projection); a larger one is read again for each pass.
MAX_HELD_BYTES = 2 * 1024**3

#: Largest query (its representation in float64, bytes) whose corrected coordinates the
#: correction keeps between its rounds (:meth:`~scnumap.core.correction.QueryCorrection.add`).
MAX_KEPT_BYTES = 1024**3

#: Smallest graph for which ``sc.pp.neighbors`` searches with pynndescent (Euclidean: 8,192)
#: and stores each cell's own entry as an explicit distance 0, which format-3 calibrations
#: counted as a neighbour (radii too small: 9.6 % false Unknown instead of 1.1 % at atlas scale).
SELF_ENTRY_MIN_CELLS = 4096

#: Label of cells whose mapping score is below ``unknown_threshold``.
UNKNOWN = "Unknown"


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


def _load(adata_ref, key: str, load_X: bool, device="cpu") -> tuple[AnnData, dict, NUMAP, Representation]:
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
    model = model_from_dict(entry, device=device, where=where)
    if "representation" not in entry:
        raise ModelFormatError(f"`{where}` has no `representation` entry; the model is incomplete.")
    rep = Representation.from_dict(
        entry["representation"], n_features=model.n_features_in_, where=f"{where}/representation"
    )
    if rep.integrated and "correction" not in entry:
        raise ModelFormatError(
            f"`{where}` lacks a `correction` entry but its representation is integrated; the model is "
            "incomplete. Re-run `scnumap.tl.numap`."
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
    unknown_threshold: float | str | None = "auto",
    anchor: float | None = 2.0,
    recentre: bool = True,
    place_by_label: bool = True,
    batch_key: str | None = None,
    correct: bool = True,
    random_state: int | None = 0,
    chunk_size: int = CHUNK_SIZE,
    copy: bool = False,
) -> AnnData | None:
    """Project query cells into a reference NUMAP embedding, score them, transfer labels.

    The query must be in the same normalisation as the reference. How it enters the
    model depends on the space the reference was trained on:

    * ``X_pca`` from ``sc.pp.pca`` on the reference's ``X`` (the model stores the
      loadings): genes are matched by name and reordered, the query is centred on
      the **reference** mean and multiplied by the reference loadings. If the
      reference's ``X`` was standardised by ``sc.pp.scale`` (``var['mean']``,
      ``var['std']``; the model stores them, also for a model on ``X``), pass the
      query log-normalised and **unscaled**: its genes are first scaled with the
      reference's means and standard deviations and clipped at ±``max_value`` when the
      reference was; genes filled by ``missing_genes="zeros"`` get the scaled value 0,
      the reference mean (an unknown gene counts as average, not as unexpressed);
    * ``X``: genes are matched by name and reordered;
    * an ``X_pca`` that is not ``(X - mean) @ varm['PCs']`` (e.g. edited or from
      another tool): refused, unless ``query_pca_in_reference_basis=True`` says the
      query's ``obsm['X_pca']`` is in the reference's PCA basis;
    * another ``obsm`` key: ``adata_query.obsm[key]`` is used as is; it must be in the
      same space as the reference's (e.g. from the same trained model), with at least
      the reference's width when the model used its first columns, else equal width;
    * an integrated PCA (``tl.numap(adata_ref, batch_key=...)``, or a graph on
      ``X_pca_harmony``): genes → reference PCs as above, then Symphony's correction
      into the integrated space (each query batch of ``batch_key`` separately), written
      to ``adata_query.obsm[use_rep]`` (``'X_pca_harmony'``).

    By default the query is first corrected onto the reference's clusters (``correct``).
    In that space each query cell's nearest reference cells (and the other query cells)
    give its mapping score (how much it looks like reference cells, calibrated on the
    reference's own cells),
    its label probabilities (distance-weighted vote) and an anchor for its place in the
    embedding. The maths is in the documentation's method page ("Query mapping").

    Parameters
    ----------
    adata_query
        Query cells, in memory or backed (read in chunks of ``chunk_size`` rows), or with a
        dask array as ``X`` (or as the representation's ``obsm`` entry): then the
        projection runs as dask tasks, one per row chunk of that array, on the worker that
        holds it (a ``dask.distributed`` cluster when a client is active, else one chunk
        after the other in this process); see the documentation's method page
        ("Projecting atlases with dask"). Not modified except for the keys listed under
        Returns.
    adata_ref
        Reference AnnData after :func:`scnumap.tl.numap`, or the path of its ``.h5ad``
        (read selectively: ``uns``, ``obs``, the embedding and the representation; ``X``
        only when the model was trained on ``X``; the file is closed afterwards).
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
        Reference cells (≥ 1, typically 10–30) voting for each query cell's label and
        anchoring its placement.
    label_space
        ``"representation"`` (default: the vote runs in the space the model was trained
        on, e.g. PCA or genes) or ``"embedding"`` (the NUMAP coordinates).
    unknown_threshold
        Cells whose mapping score is below it get the label ``"Unknown"``. ``"auto"``
        (default) takes the model's calibrated value (0.015: 1.5 % of reference cells
        fall below it); a number in [0, 1] sets it; ``None`` never calls Unknown.
    anchor
        Keep each cell within ``anchor`` × the spread of its reference neighbours' 2-D
        positions around their weighted mean (typically 1–3); cells the network places
        further away (e.g. off the reference after a technology shift) are pulled onto
        that circle. ``None`` keeps the network's placement for every cell (but see
        ``recentre`` and ``place_by_label``).
    recentre
        Take the query's systematic displacement from its reference neighbours out of
        the network's placement, before the anchor: for each reference cell, the mean
        offset of the query cells (of the query sample) that have it among their
        ``n_neighbors`` nearest from those cells' mean position is compared with the
        reference cells' own mean offset there, and each query cell moves by the
        difference, averaged over its neighbours. A query from another batch or
        technology then spreads among the reference cells it resembles instead of lying
        beside them; the spread of the cells around that mean is kept. Needs at least
        50 query cells and a model of format 5 or later (a format-4 model is not
        recentred, as with ``False``: re-run :func:`scnumap.tl.numap`). Reference cells
        projected again keep their place.
    place_by_label
        With labels transferred (``obs``), keep each cell among reference cells of its
        label (the first column of ``obs``): a cell whose ``n_neighbors`` nearest reference
        cells in the embedding are mostly of another type is moved to its reference
        neighbours of its own type (within their spread around their weighted mean
        position, or onto that mean, or onto the nearest of them that lies among its
        type), so that the picture agrees with the transferred labels. Cells called
        Unknown keep their placement, and so do reference cells projected again (a query
        cell equal to a reference cell lies where the map puts that cell). ``False``: the
        placement does not depend on the labels. Not used with
        ``label_space="embedding"`` (the vote is then made in the embedding).
    batch_key
        Query ``obs`` column of its batches, each corrected separately (``None``: the
        query is one batch).
    correct
        Correct the query onto the reference before the label vote and the placement:
        Symphony's mixture-of-experts correction against the reference's soft clusters
        (stored by ``tl.numap`` for PCA-like representations), :data:`CORRECTION_ROUNDS`
        passes. For a plain reference the mapping score is still computed on the query as
        measured (the correction would pull a type the reference lacks onto reference
        clusters); for an integrated one everything uses the corrected coordinates.
        ``False`` maps the query as measured.
    random_state
        Seed of the samples that compute the query share of the mapping score (queries or
        references larger than 20,000 cells) and of its approximate kNN index.
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
    ``adata_query.obsm[use_rep]``
        Integrated references only: ``(n_query, n_pcs)`` float32 corrected PCA coordinates
        (``use_rep`` is the reference's, e.g. ``'X_pca_harmony'``).
    ``adata_query.obs[f'{name}_mapping_score']``
        Mapping score in (0, 1], float32: the share of reference cells that look less
        typical than the cell (a share ``t`` of the reference's own cells scores below
        ``t``); near 0 for cells unlike every reference cell. It joins the distance to the
        nearest reference cells (absolute and relative to their local spacing) with, for
        queries of 50 cells or more, how much the cell's neighbourhood is made of query
        cells only (a type the reference lacks): the same cell can score differently in
        another query.
    ``adata_query.obs[f'{col}_{name}']``
        Transferred label for each ``col`` in ``obs``: categorical with the reference
        column's categories (its sorted unique values if it is not categorical), plus
        ``"Unknown"`` unless ``unknown_threshold`` is ``None``. Reference cells without a
        label do not vote; a cell with no labelled neighbour gets NaN.
    ``adata_query.obs[f'{col}_{name}_confidence']``
        Probability of the transferred label (for Unknown cells: of the best class), float32.
    ``adata_query.obsm[f'{col}_{name}_probabilities']``
        ``pandas.DataFrame`` (query cells × reference categories) of class probabilities;
        rows sum to 1 (0 for a cell with no labelled neighbour).

    For a dask query the ``obsm`` entries are dask arrays, computed and held by the
    workers (``persist``) until written, e.g. with ``dask.array.to_zarr`` (keep the client
    open until then); the probabilities are then a dask array whose columns are the
    categories of ``obs[f'{col}_{name}']`` in order (without ``"Unknown"``). The ``obs``
    columns are gathered into this process.

    The query share of the mapping score is measured against a sample of at most
    20,000 query cells; whether the query mixes with the reference and the shift of its
    shares are read off that sample's own shares (for a query of up to 20,000 cells, the
    whole query), so that each chunk is scored on its own.
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
    _check_threshold(unknown_threshold)
    if anchor is not None and (isinstance(anchor, bool) or not isinstance(anchor, numbers.Real) or not anchor > 0):
        raise ValueError(f"`anchor` must be a number > 0 or None, got {anchor!r}.")
    switches = dict(query_pca_in_reference_basis=query_pca_in_reference_basis, recentre=recentre)
    switches.update(place_by_label=place_by_label, correct=correct, copy=copy)
    for name, value in switches.items():
        check_bool(value, name)
    columns = [obs] if isinstance(obs, str) else list(obs or [])
    adata_ref, entry, model, rep = _load(adata_ref, ref_key, True)
    for col in columns:
        if col not in adata_ref.obs:
            raise KeyError(f"`obs={col!r}` is not a column of the reference's obs ({list(adata_ref.obs.columns)}).")
    key = key_added or _default_key(ref_key)
    suffix = key.removeprefix("X_")
    ref_embedding = np.asarray(adata_ref.obsm[_embedding_key(adata_ref, ref_key)], dtype=np.float32)
    _check_pca_basis(rep, query_pca_in_reference_basis)
    if rep.scaled and rep.from_genes:
        _warn_if_scaled(adata_query)
    # small projections run on one thread: on a few cores, pools that wait for work in a spin
    # (torch, BLAS, scikit-learn) slow each other more than a second thread gains
    with limited_threads(projection_threads(adata_query.n_obs, adata_ref.n_obs), fit=False):
        query = _Query(adata_query, rep, missing_genes, max_missing_fraction, chunk_size)
        n_rows = adata_query.n_obs
        correction = None
        if correct and "correction" in entry:
            correction = _fit_correction(query, entry, batch_key, f"uns[{ref_key!r}]['model']/correction")
        elif batch_key is not None:
            raise ValueError(
                f"`batch_key` corrects the query's batches, and {'`correct=False`' if not correct else 'this model'} "
                "has no correction (models from scnumap before the query correction, or on genes); "
                "leave `batch_key=None`" + ("" if not correct else " or re-run `scnumap.tl.numap`") + "."
            )
        elif correct:
            logg.info("    no reference clusters in the model (on genes, or an older scnumap): query not corrected")
        elif rep.integrated:
            logg.info("    `correct=False`: the query's uncorrected PCs are mapped into the integrated space")
        # the mapping score is computed where the reference cells are: the integrated space for an
        # integrated reference, else the query as measured (the correction would pull a missing
        # type onto reference clusters and hide it)
        score_corrected = rep.integrated and correction is not None
        ref_space = _reference_space(adata_ref, rep)
        metric = adata_ref.uns[ref_key].get("params", {}).get("metric", "euclidean")
        calibration = _calibration(entry, ref_space, f"uns[{ref_key!r}]['model']/mapping", metric, ref_embedding)
        threshold = calibration.unknown_threshold if unknown_threshold == "auto" else unknown_threshold
        index = cached_index(ref_space, metric=calibration.metric)
        labels = [_labels(adata_ref.obs[col], col) for col in columns]
        vote_in_2d = bool(columns) and label_space == "embedding"
        by_label = bool(columns) and place_by_label and not vote_in_2d
        pool, position, sample, shift, searched_rows = _share_pool(
            query, correction if score_corrected else None, index, n_neighbors, calibration, random_state
        )
        recentring = None
        if recentre and calibration.offset is None:
            logg.info("    the model stores no reference offsets (an older scnumap): not recentred")
        elif recentre and searched_rows is not None:
            # the sample was searched where the blocks are searched unless it was scored as measured
            # and the blocks are corrected: then it is corrected (and searched) here
            same_space = correction is None or score_corrected
            block = searched_rows if same_space else correction.apply(searched_rows, np.flatnonzero(position >= 0))
            recentring, corrected_search, sample.placed = _recentring(
                block,
                index,
                model,
                ref_embedding,
                calibration,
                sample,
                n_neighbors,
                n_rows,
                measured=None if same_space else searched_rows,
            )
            if corrected_search is not None:
                sample.corrected = corrected_search  # the projection's corrected search of these rows
        projector = BlockProjector(
            model,
            index,
            calibration,
            ref_embedding,
            n_neighbors=n_neighbors,
            n_queries=n_rows,
            correction=None if correction is None else correction.correction,
            score_corrected=score_corrected,
            keep_corrected=rep.integrated,
            pool=pool,
            sample=sample,
            shift=shift,
            labels=tuple(codes for codes, _ in labels),
            n_categories=tuple(len(cats) for _, cats in labels),
            anchor=anchor,
            embedding_index=cached_embedding_index(ref_embedding, n_neighbors) if vote_in_2d else None,
            label_placement=cached_embedding_index(ref_embedding, n_neighbors) if by_label else None,
            unknown_threshold=threshold,
            recentring=recentring,
        )
        layout = projector.layout
        batches = correction.codes if correction is not None else np.zeros(n_rows, dtype=np.int64)
        if query.dask:
            # one task per chunk, on the worker holding it; the results stay there (persisted)
            packed = project_dask(query.dask_blocks(), projector, batches, position).persist(scheduler=query.scheduler)
        else:
            packed = np.empty((n_rows, layout.width), dtype=np.float32)
            for rows, raw in query.blocks():
                if raw.shape[1] != model.n_features_in_:
                    raise ValueError(
                        f"A query block has {raw.shape[1]} columns; the reference model takes {model.n_features_in_}."
                    )
                packed[rows] = projector(raw, batches[rows], position[rows], key=_block_key(rows, raw))
    # per-cell columns of obs are gathered; the wide results stay dask arrays for a dask query
    narrow = [layout.score, layout.moved] + [c for j in range(len(columns)) for c in layout.label(j)[:2]]
    narrow = _gathered([packed[:, c] for c in narrow], query.scheduler)
    score, n_anchored, n_by_label = narrow[0], int(np.sum(narrow[1] == 1)), int(np.sum(narrow[1] == 2))
    codes = [np.rint(narrow[2 + 2 * j]).astype(np.int64) for j in range(len(columns))]
    confidence = [narrow[3 + 2 * j] for j in range(len(columns))]
    embedding = _columns(packed, layout.embedding)
    corrected = _columns(packed, layout.corrected) if layout.n_corrected else None
    probabilities = [_columns(packed, layout.label(j)[2]) for j in range(len(columns))]
    unknown = score < threshold if threshold is not None else np.zeros(n_rows, dtype=bool)
    names = adata_query.obs_names
    results = {f"{suffix}_mapping_score": score}
    frames = {}
    for j, (col, (_, cats)) in enumerate(zip(columns, labels, strict=True)):
        results[f"{col}_{suffix}"] = _with_unknown(codes[j], cats, unknown if threshold is not None else None)
        results[f"{col}_{suffix}_confidence"] = confidence[j]
        frames[f"{col}_{suffix}_probabilities"] = (
            probabilities[j]  # a dask array: its columns are the categories, in order
            if query.dask
            else pd.DataFrame(probabilities[j], index=names, columns=pd.Index([str(c) for c in cats]))
        )
    # everything is computed and validated: only now write to the query
    adata_query = adata_query.copy() if copy else adata_query
    if key in adata_query.obsm:
        logg.info(f"    overwriting existing obsm[{key!r}]")
    adata_query.obsm[key] = embedding
    if corrected is not None:
        if rep.use_rep in adata_query.obsm:
            logg.info(f"    overwriting existing obsm[{rep.use_rep!r}] with the corrected coordinates")
        adata_query.obsm[rep.use_rep] = corrected
    for name, values in results.items():
        adata_query.obs[name] = values
    for name, frame in frames.items():
        adata_query.obsm[name] = frame
    if n_anchored:
        logg.info(f"    {n_anchored} of {n_rows} cells placed by their reference neighbours (anchor={anchor})")
    if n_by_label:
        logg.info(f"    {n_by_label} of {n_rows} cells moved among reference cells of their {columns[0]!r} label")
    if threshold is not None:
        logg.info(f"    {int(unknown.sum())} of {n_rows} cells with mapping score < {threshold:.3g}: Unknown")
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    {key!r} (adata.obsm)"
        + "".join(f"\n    {name!r} (adata.obs)" for name in results)
        + "".join(f"\n    {name!r} (adata.obsm)" for name in frames),
    )
    return adata_query if copy else None


def _gathered(columns: list, scheduler: str | None) -> list[np.ndarray]:
    """NumPy copies of result columns (computed together for a dask query)."""
    if columns and _is_dask(columns[0]):
        import dask

        columns = dask.compute(*columns, scheduler=scheduler)
    return [np.array(c, dtype=np.float32) for c in columns]


def _columns(packed, columns: slice):
    """Contiguous columns of the results (a lazy slice for a dask query)."""
    return packed[:, columns] if _is_dask(packed) else np.ascontiguousarray(packed[:, columns])


class _Correction:
    """The query's correction onto the reference, with each row's batch code."""

    def __init__(self, correction: QueryCorrection, codes: np.ndarray):
        self.correction, self.codes = correction, codes

    def apply(self, block: np.ndarray, rows) -> np.ndarray:
        return self.correction.apply(block, self.codes[rows], key=_block_key(rows, block))


def _block_key(rows, block: np.ndarray):
    """The key under which the correction keeps a block's coordinates between passes: its
    first and last row for a block of consecutive rows (every pass cuts the query the same
    way), ``None`` (nothing kept) for other rows."""
    return (rows.start, rows.start + block.shape[0]) if isinstance(rows, slice) else None


def _fit_correction(query: _Query, entry: dict, batch_key: str | None, where: str) -> _Correction:
    """Symphony's correction of the query, :data:`CORRECTION_ROUNDS` passes over its blocks
    (on the dask workers for a dask query: each block's sums, added here)."""
    adata, rep = query.adata, query.rep
    try:
        compression = ReferenceCompression.from_dict(entry["correction"], n_dims=rep.n_dims, where=where)
    except CompressionFormatError as err:
        raise ModelFormatError(str(err)) from None
    codes, n_batches = _batch_codes(adata, batch_key)
    correction = QueryCorrection(compression, n_batches)
    keep = query.hold and query.n_rows * rep.n_dims * 8 <= MAX_KEPT_BYTES
    for round_ in range(CORRECTION_ROUNDS):
        if round_:
            correction.next_round()
        if query.dask:
            correction.add_statistics(
                correction_statistics(query.dask_blocks(), correction, codes, scheduler=query.scheduler)
            )
            continue
        for rows, block in query.blocks():
            # a query held in memory is corrected in each round from what the last one kept
            correction.add(block, codes[rows], key=_block_key(rows, block) if keep else None)
    return _Correction(correction, codes)


def _batch_codes(adata: AnnData, batch_key: str | None) -> tuple[np.ndarray, int]:
    """Each query cell's batch code and the number of batches."""
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64), 1
    if batch_key not in adata.obs:
        raise KeyError(f"`batch_key={batch_key!r}` is not a column of the query's obs ({list(adata.obs.columns)}).")
    batches = pd.Categorical(adata.obs[batch_key])
    if np.any(batches.codes < 0):
        raise ValueError(f"`adata_query.obs[{batch_key!r}]` has missing values; give every cell a batch.")
    return np.asarray(batches.codes, dtype=np.int64), len(batches.categories)


def _share_pool(query: _Query, correction, index, n_neighbors: int, calibration: MappingCalibration, random_state):
    """The query share's pool (``None`` for a small query) and its sample's own search.

    The query's typical share, which decides whether query and reference mix and by how
    much the shares are shifted, is measured on the query sample (the whole query up to
    :data:`SAMPLE_SIZE` cells), so that every block can be scored on its own.

    Returns
    -------
    pool, position, sample, shift, searched_rows
        The :class:`QueryShare` (the reference ``index`` and a query sample, ``None`` when
        the query is small or does not mix with the reference), each query row's place in
        the query sample (-1: not in it), the sample's :class:`SampleSearch` (its nearest
        reference cells, as many as :func:`search_width` asks for, and shares), the
        shift of the shares and the sample's rows as searched (corrected when ``correction``
        is given; ``None`` for a small query).
    """
    n_rows = query.n_rows
    position = np.full(n_rows, -1, dtype=np.int64)
    if n_rows < MIN_QUERY_CELLS:
        logg.info(f"    {n_rows} query cells (< {MIN_QUERY_CELLS}): mapping score from distances alone")
        return None, position, None, 0.0, None
    rng = np.random.default_rng(random_state)
    query_rows = np.sort(rng.choice(n_rows, SAMPLE_SIZE, replace=False)) if n_rows > SAMPLE_SIZE else np.arange(n_rows)
    sample = query.rows(query_rows)
    if correction is not None:
        sample = correction.apply(sample, query_rows)
    seed = int(rng.integers(0, 2**31 - 1))
    width = search_width(n_neighbors, calibration, None)  # the pool adds its own k
    pool = QueryShare(index, sample, random_state=seed, n_queries=n_rows, search_width=width)
    position[query_rows] = np.arange(query_rows.size)
    distances, indices = pool.sample_search  # as many as search_width(n_neighbors, calibration, pool)
    shares = pool.sample_shares
    if not pool.mixes(shares):
        logg.info(
            "    query and reference cells do not mix (a batch or technology shift?): mapping score from "
            "distances alone; an integrated reference (`tl.numap(batch_key=...)`) can correct the query"
        )
        return None, position, SampleSearch(distances, indices, None), 0.0, sample
    pool.narrow()  # a large query's sample searched in two stages
    shift = pool.shift(shares)
    if shift > 0:
        logg.info(f"    the query's typical query share lies {shift:.2f} above the reference's: discounted")
    return pool, position, SampleSearch(distances, indices, shares), shift, sample


def _recentring(
    block: np.ndarray, index, model, ref_embedding, calibration, sample, n_neighbors: int, n_queries: int, *, measured
) -> tuple[Recentring, tuple[np.ndarray, np.ndarray] | None, np.ndarray]:
    """The :class:`Recentring` of the query sample ``block`` (in the blocks' space, corrected
    when they are), the sample's search when it was made here and the network's placement
    of ``block``, which the projection reuses for the sample's rows. ``sample`` is the sample's
    search; ``measured`` ``None`` when it was made in the blocks' space (then reused), else
    the sample's rows as measured, which ``sample`` searched: the corrected rows' neighbours
    are then found from that search (:func:`~scnumap.core.reranking.moved_neighbours`), and
    the projection reuses them for the sample's rows."""
    searched = None
    if measured is None:
        indices = sample.indices[:, :n_neighbors]
    else:
        searched = moved_neighbours(
            index, measured, block, sample.distances, sample.indices, n_neighbors, n_queries=n_queries
        )[:2]
        indices = searched[1]
    placed = model.transform_blocks([block], block.shape[0])
    return Recentring.from_sample(placed, indices, ref_embedding, calibration.offset), searched, placed


class _Query:
    """The query's representation, read block by block; held in memory after the first
    pass when it takes at most :data:`MAX_HELD_BYTES`, else read again for each pass.
    A query whose ``X`` (or representation ``obsm`` entry) is a dask array is not read
    here: :meth:`dask_blocks` is its representation as a dask array."""

    def __init__(self, adata: AnnData, rep: Representation, missing_genes, max_missing_fraction, chunk_size):
        self.adata, self.rep = adata, rep
        self.reading = (missing_genes, max_missing_fraction, chunk_size)
        self.n_rows = adata.n_obs
        self.dask = _is_dask(adata.X if rep.from_genes else adata.obsm.get(rep.use_rep))
        self.scheduler = dask_scheduler() if self.dask else None
        self.hold = self.n_rows * rep.n_dims * 4 <= MAX_HELD_BYTES
        self._held = None
        self._dask_blocks = None

    def blocks(self):
        """``(rows, block)`` pairs: a slice of query rows and their float32 representation."""
        chunk_size = self.reading[2]
        if self._held is not None:
            for start in range(0, self.n_rows, chunk_size):
                yield slice(start, start + chunk_size), self._held[start : start + chunk_size]
            return
        held = [] if self.hold else None
        start = 0
        for block in _query_blocks(self.adata, self.rep, *self.reading)[0]:
            if held is not None:
                held.append(block)
            yield slice(start, start + block.shape[0]), block
            start += block.shape[0]
        if held is not None:
            self._held = np.concatenate(held, axis=0) if len(held) > 1 else held[0]

    def dask_blocks(self):
        """The representation of a dask query: a lazy dask array chunked along rows (the
        source's row chunks), persisted (on the workers) when it takes at most
        :data:`MAX_HELD_BYTES`."""
        if self._dask_blocks is None:
            source, reader = _source(self.adata, self.rep, *self.reading[:2])
            if source.numblocks[1] > 1:
                source = source.rechunk({1: -1})
            blocks = source.map_blocks(
                reader,
                dtype=np.float32,
                chunks=(source.chunks[0], (self.rep.n_dims,)),
                meta=np.empty((0, 0), dtype=np.float32),
                token="scnumap-representation",
            )
            self._dask_blocks = blocks.persist(scheduler=self.scheduler) if self.hold else blocks
        return self._dask_blocks

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The representation of the sorted query ``rows``."""
        if self.dask:
            return np.asarray(self.dask_blocks()[rows].compute(scheduler=self.scheduler), dtype=np.float32)
        if self._held is None and self.hold:
            for _ in self.blocks():
                pass
        if self._held is not None:
            return self._held[rows]
        subset = self.adata if rows.size == self.n_rows else self.adata[rows]
        return np.concatenate(list(_query_blocks(subset, self.rep, *self.reading)[0]), axis=0)


def _is_dask(X) -> bool:
    return type(X).__module__.split(".")[0] == "dask"


def _warn_if_scaled(adata: AnnData) -> None:
    """A scaled reference scales the query itself: warn when the query looks scaled already."""
    first = adata.X[: min(adata.n_obs, 1000)]
    first = first.data if sp.issparse(first) else np.asarray(first)
    if first.size and np.nanmin(first) < 0:
        logg.warning(
            "the reference was scaled (`sc.pp.scale`) and the query has negative values: it looks scaled "
            "already, and `tl.project` scales it again with the reference's gene means and standard "
            "deviations. Pass the query in the reference's normalisation before scaling (e.g. log1p)."
        )


def _check_threshold(value) -> None:
    if value is None or (isinstance(value, str) and value == "auto"):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"`unknown_threshold` must be 'auto', None or a number in [0, 1], got {value!r}.")


def _calibration(entry: dict, ref_space, where: str, metric: str, embedding: np.ndarray) -> MappingCalibration:
    """The stored calibration, or one computed now: for models from scnumap before format 3,
    and for format-3 models of :data:`SELF_ENTRY_MIN_CELLS` cells or more, whose calibration
    may count each cell's own entry of a Scanpy graph (distance 0) as a neighbour."""
    n_reference = ref_space.shape[0]
    stale = int(entry["format_version"]) < 4 and n_reference >= SELF_ENTRY_MIN_CELLS
    if "mapping" in entry and "null_quantiles" not in entry["mapping"] and not stale:
        try:
            return MappingCalibration.from_dict(entry["mapping"], n_reference=n_reference, where=where)
        except CalibrationFormatError as err:
            raise ModelFormatError(str(err)) from None
    logg.info(
        "    the model's mapping calibration is from an older scnumap: calibrating on the reference now "
        "(re-run `scnumap.tl.numap` and save the reference to store a current one)"
    )
    return calibrate(cached_index(ref_space, metric=metric), CALIBRATION_NEIGHBORS, embedding)


def calibrate(index, n_neighbors: int, embedding: np.ndarray | None = None) -> MappingCalibration:
    """Calibration from the reference's own neighbours, found with ``index`` (self excluded;
    the search is kept with the index for the next projection), with the reference cells'
    offsets in ``embedding`` when given."""
    distances, indices = index.own_neighbors(np.arange(index.n_reference), n_neighbors + 1)
    return MappingCalibration.from_distances(
        knn_distance_matrix(indices, distances, exclude_self=True), metric=index.metric, embedding=embedding
    )


def _labels(values: pd.Series, col: str) -> tuple[np.ndarray, pd.Index]:
    """Reference label codes (-1 = no label) and categories; NaN is never a class."""
    labels = values.array if isinstance(values.dtype, pd.CategoricalDtype) else pd.Categorical(values)
    if not np.any(np.asarray(labels.codes) >= 0):
        raise ValueError(f"The reference's `obs[{col!r}]` has no label on any cell; pass a labelled column to `obs`.")
    return np.asarray(labels.codes, dtype=np.int64), labels.categories


def _with_unknown(codes: np.ndarray, categories: pd.Index, unknown: np.ndarray | None) -> pd.Categorical:
    if unknown is None:
        return pd.Categorical.from_codes(codes, categories=categories)
    if UNKNOWN in categories:
        logg.warning(
            f"The reference labels already have a category {UNKNOWN!r}; cells with a low mapping score join it. "
            "Rename that category to tell the two apart."
        )
        cats = categories
    else:
        cats = categories.append(pd.Index([UNKNOWN], dtype=object)) if len(categories) else pd.Index([UNKNOWN])
    codes = np.where(unknown, cats.get_loc(UNKNOWN), codes)
    return pd.Categorical.from_codes(codes, categories=cats)


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
    """An iterator of dense float32 representation blocks of the query, and the row count
    (the query read in the calling process; see :class:`_Reader`)."""
    source, reader = _source(adata, rep, missing_genes, max_missing_fraction)

    def blocks():
        for start in range(0, adata.n_obs, chunk_size):
            block = source[start : start + chunk_size]
            yield reader(block.compute() if hasattr(block, "compute") else block)

    return blocks(), adata.n_obs


def _source(adata: AnnData, rep: Representation, missing_genes: str, max_missing_fraction: float):
    """The query matrix the model's input is read from (``X`` or an ``obsm`` entry) and
    the :class:`_Reader` that turns its row blocks into the representation."""
    if rep.from_genes:
        columns, missing = _match_genes(adata, rep.var_names, missing_genes, max_missing_fraction)
        return adata.X, _Reader(rep, columns=columns, missing=missing)
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
    return X, _Reader(rep)


class _Reader:
    """Query row blocks → dense float32 blocks of the model's input space.

    Gene blocks follow the reference's preprocessing: for a reference scaled by
    ``sc.pp.scale``, ``clip((x - scale_mean) / scale_std, -scale_max, scale_max)`` as
    Scanpy computes it (both signs clipped, as with its default ``zero_center=True``),
    then ``(x - pca_mean) @ pca_loadings`` when the model is on the PCA. Missing genes
    (``missing_genes="zeros"``) are 0 in the space the reference's ``X`` is in: 0
    expression for an unscaled reference (as before), the reference mean (scaled value
    0) for a scaled one. An ``obsm`` block keeps its first ``n_dims`` columns. Holds
    plain arrays only, so that it can run on dask workers.
    """

    def __init__(self, rep: Representation, *, columns: np.ndarray | None = None, missing: np.ndarray | None = None):
        self.width = rep.n_dims
        self.from_genes = rep.from_genes
        if not self.from_genes:
            return
        present = ~missing
        self.columns, self.present, self.n_genes = columns[present], present, rep.var_names.shape[0]
        self.has_pca, self.scaled, self.scale_max = rep.has_pca, rep.scaled, rep.scale_max
        self.loadings, self.mean = rep.pca_loadings, rep.pca_mean
        if rep.scaled:
            self.scale_mean, self.scale_std = rep.scale_mean[present], rep.scale_std[present]
        if rep.has_pca and not rep.scaled:
            # sparse rows straight onto the PCs: (x - mean) @ L = x @ L - mean @ L, missing genes 0
            self.present_loadings = np.ascontiguousarray(self.loadings[present])
            self.offset = (self.mean @ self.loadings).astype(np.float32)

    def __call__(self, block) -> np.ndarray:
        if not self.from_genes:
            return _dense(block[:, : self.width])
        if sp.issparse(block) and self.has_pca and not self.scaled:
            block = sp.csr_matrix(block)[:, self.columns]
            _check_finite(block.data)
            return np.asarray(block.astype(np.float32) @ self.present_loadings - self.offset, dtype=np.float32)
        block = _dense(block)
        full = np.zeros((block.shape[0], self.n_genes), dtype=np.float32)
        values = block[:, self.columns]
        if self.scaled:
            values = (values - self.scale_mean) / self.scale_std
            if self.scale_max is not None:
                np.clip(values, -self.scale_max, self.scale_max, out=values)
        full[:, self.present] = values
        if self.has_pca:
            full = (full - self.mean) @ self.loadings
        return np.asarray(full, dtype=np.float32)


def _reference_space(adata_ref: AnnData, rep: Representation):
    """The reference cells in the model's input space: CSR float32 if sparse, else dense float32."""
    if not rep.from_genes or rep.has_pca:
        if rep.use_rep not in adata_ref.obsm:
            raise KeyError(
                f"The reference has no `obsm[{rep.use_rep!r}]`, the space its model was trained on, which the "
                "mapping score and label vote search; pass the reference as `tl.numap` left it."
            )
        X = adata_ref.obsm[rep.use_rep]
        X = X.to_numpy() if hasattr(X, "to_numpy") else X
        return np.asarray(X[:, : rep.n_dims], dtype=np.float32)
    X = adata_ref.X
    if X is None:
        raise ValueError(
            "The reference has no `X`, the gene space its model was trained on, which the mapping score and "
            "label vote search; pass the reference as `tl.numap` left it."
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
    _check_finite(block)
    return block


def _check_finite(values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError("The query contains NaN or infinite values; remove or impute them first.")
