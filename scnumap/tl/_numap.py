"""``scnumap.tl.numap``: train NUMAP on a Scanpy neighbour graph."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from ..core import NUMAP
from ..core._checks import check_int
from ..core.graph import METRIC_ALIASES, SUPPORTED_METRICS, knn_search
from ..core.grease import min_samples
from ..core.mapping import CALIBRATION_NEIGHBORS, MappingCalibration, knn_distance_matrix
from ..core.model_io import model_to_dict
from ..core.numap import spectral_count
from ..core.threads import threads_from_n_jobs
from ._integrate import compress, integrate, integrated_rep
from ._representation import choose_representation, describe_representation

#: Widest representation whose soft clusters are stored for the query correction (PCA-like
#: spaces; not genes).
MAX_COMPRESSED_DIMS = 200


@threads_from_n_jobs
def numap(
    adata: AnnData,
    *,
    n_components: int = 2,
    min_dist: float = 0.5,
    spread: float = 1.0,
    densmap: bool = True,
    dens_lambda: float = 2.0,
    dens_frac: float = 0.3,
    dens_var_shift: float = 0.1,
    dens_subsample_size: int = 10000,
    epochs: int | None = None,
    lr: float = 3e-3,
    batch_size: int = 1024,
    negative_sample_rate: int = 5,
    n_spectral_components: int | None = 10,
    hidden: tuple[int, ...] = (128, 128),
    input_noise: float = 0.5,
    warm_start: bool = True,
    grease_steps: int | None = None,
    neighbors_key: str = "neighbors",
    batch_key: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
    random_state: int | None = 0,
    device: str = "auto",
    n_jobs: int | None = None,
    verbose: bool = True,
) -> AnnData | None:
    """Embed cells with NUMAP (generalisable UMAP + DensMAP) on the neighbour graph.

    Reuses ``adata.obsp`` from :func:`scanpy.pp.neighbors` and trains on the same
    representation (``use_rep``/``n_pcs`` of the neighbour parameters) with the graph's
    metric (``params['metric']``: Euclidean, Manhattan or cosine). With the default
    ``neighbors_key`` and no graph, one is built with scanpy's defaults.

    Parameters
    ----------
    adata
        Annotated data matrix.
    n_components
        Embedding dimension.
    min_dist, spread
        UMAP curve parameters (scanpy's defaults: 0.5 and 1.0).
    densmap
        Keep local densities (DensMAP). On by default here.
    dens_lambda
        Weight of the density term (0.1–2.0).
    dens_frac
        Fraction of training, from the end, with the density term.
    dens_var_shift
        Stabiliser of the embedding-radius variance.
    dens_subsample_size
        Vertices per step for the density term; up to this many cells, all of them
        (see :class:`scnumap.NUMAP`).
    epochs
        Passes over the graph edges; ``None`` picks a budget (see :class:`scnumap.NUMAP`).
    lr, batch_size, negative_sample_rate, n_spectral_components, hidden, input_noise, warm_start, grease_steps
        Training knobs of :class:`scnumap.NUMAP` (``warm_start``: on up to 5,000 cells, start
        the network from a UMAP layout of free coordinates and train 70 % of the UMAP steps;
        ``grease_steps=None``: 100 GrEASE steps in such a fit, GrEASE's default above;
        ``n_spectral_components=None``: one GrEASE coordinate per 100 cells, 10 to 40).
    neighbors_key
        Key of the neighbour results in ``adata.uns``.
    batch_key
        ``obs`` column of the reference's batches (donors, labs, technologies). The PCA
        (``obsm['X_pca']``, from ``sc.pp.pca``) is integrated with Harmony into
        ``obsm['X_pca_harmony']``, the neighbour graph is rebuilt there with the
        graph's settings, and the model keeps soft clusters of the integrated space so
        that :func:`scnumap.tl.project` corrects queries into it (Symphony's
        correction). A graph already built on ``obsm['X_pca_harmony']`` (e.g. after
        ``sc.external.pp.harmony_integrate``) is used as is, with or without
        ``batch_key``.
    key_added
        Store the embedding in ``obsm[key_added]`` and the model in ``uns[key_added]``
        instead of ``obsm['X_numap']`` and ``uns['numap']``.
    copy
        Return a copy instead of writing to ``adata``.
    random_state
        Seed. The same seed, data, machine, torch version and number of torch threads
        (``n_jobs``) give the same embedding; another thread count or device gives a
        different (equally good) one.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    n_jobs
        CPU threads of the whole call (neighbour search, integration, training): torch's,
        the BLAS/OpenMP pools' and numba's are set to ``n_jobs`` and restored afterwards
        (see :class:`scnumap.NUMAP`). ``-1``: all cores; ``None``: the cores other
        processes leave idle, measured once at the start (at least 1). A runtime setting,
        not stored in ``uns``.
    verbose
        Progress bars (``tqdm.auto``) for the GrEASE and NUMAP phases, shown once a phase
        has run a few seconds, in a notebook or a terminal (not when stderr goes to a file
        or a pipe); ``False`` hides them.

    Returns
    -------
    ``adata`` if ``copy`` else ``None``. Sets

    ``adata.obsm['X_numap' | key_added]``
        ``(n_obs, n_components)`` float32 embedding.
    ``adata.uns['numap' | key_added]``
        ``'params'`` (the settings) and ``'model'`` (format version, weights,
        standardisation and the representation, with PCA loadings, gene names and the
        reference mean when the representation is ``X_pca`` from ``adata.X``; and
        ``'mapping'``, the calibration of :func:`scnumap.tl.project`'s mapping score: each
        cell's local radius and ratio statistic from the graph's kNN distances, and its
        offset from its graph neighbours in the embedding, for the query's recentring).
    """
    import scanpy as sc

    start = logg.info("computing NUMAP")
    n_spectral = spectral_count(n_spectral_components, adata.n_obs, check_int(n_components, "n_components", minimum=1))
    min_cells = min_samples(n_spectral)
    if adata.n_obs < min_cells:
        raise ValueError(
            f"`adata` has {adata.n_obs} cells; NUMAP needs at least {min_cells} "
            f"(GrEASE's minimum for {n_spectral} spectral components): pass more cells."
        )
    adata = adata.copy() if copy else adata
    integration = None
    if batch_key is not None or integrated_rep(adata, neighbors_key) is not None:
        integration = integrate(adata, batch_key, neighbors_key=neighbors_key, random_state=random_state)
    if integration is None and neighbors_key not in adata.uns:
        if neighbors_key != "neighbors":
            raise KeyError(
                f"`neighbors_key={neighbors_key!r}` is not in `adata.uns` (keys: {list(adata.uns)}); "
                f"run `sc.pp.neighbors(adata, key_added={neighbors_key!r})` first or pass an existing key."
            )
        logg.info("    no neighbour graph found: running `sc.pp.neighbors` with its defaults")
        sc.pp.neighbors(adata, random_state=random_state)
    graph = integration.graph if integration is not None and integration.graph is not None else adata
    graph_key = "neighbors" if graph is not adata else neighbors_key
    neighbors = graph.uns[graph_key]
    conn_key = neighbors.get("connectivities_key", "connectivities")
    dist_key = neighbors.get("distances_key", "distances")
    if conn_key not in graph.obsp:
        raise KeyError(
            f"`adata.obsp[{conn_key!r}]` named by `adata.uns[{neighbors_key!r}]` is missing; re-run `sc.pp.neighbors`."
        )
    params = neighbors.get("params", {})
    if integration is not None:
        X, use_rep, n_dims = integration.coordinates, integration.use_rep, integration.n_dims
    else:
        n_pcs = params.get("n_pcs", None)
        X, use_rep, n_dims = choose_representation(adata, params.get("use_rep"), None if n_pcs is None else int(n_pcs))
    metric = _graph_metric(params.get("metric", "euclidean"), neighbors_key)
    model = NUMAP(
        n_components,
        min_dist=min_dist,
        spread=spread,
        densmap=densmap,
        dens_lambda=dens_lambda,
        dens_frac=dens_frac,
        dens_var_shift=dens_var_shift,
        dens_subsample_size=dens_subsample_size,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        negative_sample_rate=negative_sample_rate,
        n_spectral_components=n_spectral_components,
        hidden=hidden,
        input_noise=input_noise,
        warm_start=warm_start,
        grease_steps=grease_steps,
        metric=metric,
        device=device,
        n_jobs=n_jobs,
        random_state=random_state,
        verbose=bool(verbose),
    )
    model.fit(X, graph=graph.obsp[conn_key], knn_distances=graph.obsp.get(dist_key))
    if integration is not None:
        representation = _integrated_representation(adata, integration)
    else:
        representation = describe_representation(adata, X, use_rep, n_dims)
    if use_rep == "X_pca" and not bool(representation["has_pca"]):
        logg.warning(
            "`X_pca` is not `(adata.X - mean) @ adata.varm['PCs']`; `tl.project` will need the "
            "query's own `obsm['X_pca']` in the same space."
        )
    entry = model_to_dict(model)
    entry["representation"] = representation
    entry["mapping"] = _calibration(graph.obsp.get(dist_key), X, metric, random_state, model.embedding_).to_dict()
    if integration is not None:
        entry["correction"] = integration.compression.to_dict()
    elif not sp.issparse(X) and X.shape[1] <= MAX_COMPRESSED_DIMS:
        # the query-side correction of tl.project needs the reference's soft clusters
        entry["correction"] = compress(np.asarray(X, dtype=np.float64), random_state).to_dict()
    key_obsm = key_added or "X_numap"
    key_uns = key_added or "numap"
    for store, key in ((adata.obsm, key_obsm), (adata.uns, key_uns)):
        if key in store:
            logg.info(f"    overwriting existing {key!r}")
    # everything is computed: only now write to adata (no partial results on errors)
    if integration is not None and integration.graph is not None:
        if integration.use_rep in adata.obsm:
            logg.info(f"    overwriting existing obsm[{integration.use_rep!r}]")
        adata.obsm[integration.use_rep] = integration.coordinates
        _write_graph(adata, integration.graph, neighbors_key)
    adata.obsm[key_obsm] = model.embedding_
    adata.uns[key_uns] = {
        "params": {
            "n_components": n_components,
            "min_dist": min_dist,
            "spread": spread,
            "densmap": densmap,
            "dens_lambda": dens_lambda,
            "dens_frac": dens_frac,
            "dens_var_shift": dens_var_shift,
            "dens_subsample_size": dens_subsample_size,
            "epochs": -1 if epochs is None else int(epochs),
            "n_steps": int(model.n_steps_),
            "lr": lr,
            "batch_size": batch_size,
            "negative_sample_rate": negative_sample_rate,
            "n_spectral_components": -1 if n_spectral_components is None else int(n_spectral_components),
            "hidden": np.asarray(hidden, dtype=np.int64),
            "input_noise": input_noise,
            "warm_start": bool(warm_start),
            "grease_steps": -1 if grease_steps is None else int(grease_steps),
            "neighbors_key": neighbors_key,
            "batch_key": "" if batch_key is None else str(batch_key),
            "use_rep": use_rep,
            "metric": metric,
            "random_state": -1 if random_state is None else int(random_state),
        },
        "model": entry,
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    {key_obsm!r}, NUMAP coordinates (adata.obsm)\n    {key_uns!r}, params and model (adata.uns)",
    )
    return adata if copy else None


def _integrated_representation(adata: AnnData, integration) -> dict:
    """The PCA's loadings (genes → uncorrected PCs), marked as leading to the integrated space."""
    n_dims = integration.n_dims
    pca = adata.obsm["X_pca"] if "X_pca" in adata.obsm else None
    if pca is None or pca.shape[1] < n_dims:
        raise ValueError(
            f"The integrated `obsm[{integration.use_rep!r}]` has {n_dims} columns but `obsm['X_pca']` is missing or "
            "narrower; integrate the PCA of `sc.pp.pca(adata)` (e.g. `sc.external.pp.harmony_integrate(adata, key)`)."
        )
    rep = describe_representation(adata, np.asarray(pca)[:, :n_dims], "X_pca", n_dims)
    if not bool(rep["has_pca"]):
        raise ValueError(
            "`obsm['X_pca']` is not `(adata.X - mean) @ adata.varm['PCs']`, so query genes cannot be put in the "
            "PCA that was integrated. Run `sc.pp.pca(adata)` and integrate that PCA."
        )
    rep.pop("truncated", None)
    rep["use_rep"] = integration.use_rep
    rep["integrated"] = np.bool_(True)
    return rep


def _write_graph(adata: AnnData, light: AnnData, neighbors_key: str) -> None:
    """Copy the graph built on the integrated PCA into ``adata`` under ``neighbors_key``."""
    prefix = "" if neighbors_key == "neighbors" else f"{neighbors_key}_"
    conn_key, dist_key = f"{prefix}connectivities", f"{prefix}distances"
    if neighbors_key in adata.uns:
        logg.info(f"    replacing the neighbour graph `uns[{neighbors_key!r}]` by the one on the integrated PCA")
    adata.obsp[conn_key] = light.obsp["connectivities"]
    adata.obsp[dist_key] = light.obsp["distances"]
    uns = dict(light.uns["neighbors"])
    uns["connectivities_key"], uns["distances_key"] = conn_key, dist_key
    adata.uns[neighbors_key] = uns


def _calibration(distances, X, metric: str, random_state, embedding) -> MappingCalibration:
    """The mapping score's calibration from the graph's kNN distances (computed if absent), with
    the reference cells' offsets in ``embedding``."""
    if distances is None:
        logg.info("    no kNN distances in `obsp`: searching the reference's neighbours for the mapping score")
        indices, dists = knn_search(X, CALIBRATION_NEIGHBORS + 1, metric=metric, random_state=random_state)
        distances = knn_distance_matrix(indices, dists, exclude_self=True)
    return MappingCalibration.from_distances(distances, metric=metric, embedding=embedding)


def _graph_metric(metric, neighbors_key: str) -> str:
    """The neighbour graph's metric as NUMAP names it; a clear error for one it cannot follow."""
    name = METRIC_ALIASES.get(metric, metric) if isinstance(metric, str) else metric
    if name not in SUPPORTED_METRICS:
        raise ValueError(
            f"The neighbour graph `adata.uns[{neighbors_key!r}]` was built with metric={metric!r}; "
            f"NUMAP supports {SUPPORTED_METRICS}. Re-run `sc.pp.neighbors(adata, metric='euclidean')` "
            "(or 'cosine', 'manhattan') before `scnumap.tl.numap`."
        )
    return name
