"""Plots: the NUMAP embedding (Scanpy style) and query cells over a reference."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData


def numap(adata: AnnData, *, basis: str = "numap", **kwargs):
    """Scatter plot of the NUMAP embedding: :func:`scanpy.pl.embedding` with ``basis='numap'``.

    Parameters
    ----------
    adata
        AnnData with ``obsm['X_numap']`` (or ``obsm['X_' + basis]``).
    basis
        Name of the embedding (the ``key_added`` of :func:`scnumap.tl.numap`, without ``X_``).
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``show``, ``save``, ...).
    """
    import scanpy as sc

    key = basis if basis in adata.obsm else f"X_{basis}"
    if key not in adata.obsm:
        raise KeyError(f"`adata.obsm` has no {key!r}; run `scnumap.tl.numap(adata)` first.")
    return sc.pl.embedding(adata, basis=key, **kwargs)


def project(
    adata_query: AnnData,
    adata_ref: AnnData,
    *,
    color: str | Sequence[str] | None = None,
    basis: str = "X_numap",
    ref_color: str = "#d3d3d3",
    size: float | None = None,
    title: str | Sequence[str] | None = None,
    ncols: int = 3,
    cmap: str = "viridis",
    save: str | None = None,
    show: bool | None = None,
):
    """Query cells coloured over the reference cells in grey, one panel per ``color``.

    Parameters
    ----------
    adata_query
        Query after :func:`scnumap.tl.project` (``obsm[basis]``).
    adata_ref
        Reference after :func:`scnumap.tl.numap`.
    color
        Query ``obs`` column(s): labels, transferred labels, confidences. ``None`` draws
        the query in one colour.
    basis
        ``obsm`` key of the coordinates in both objects.
    ref_color
        Colour of the reference cells.
    size
        Marker size (default scales with the number of cells).
    title
        Panel title(s).
    ncols
        Panels per row.
    cmap
        Colour map of continuous values.
    save
        File to save the figure to (e.g. ``'query.png'``).
    show
        Show the figure; default: when not saving.

    Returns
    -------
    The matplotlib figure if ``show`` is false, else ``None``.
    """
    for name, ad in (("adata_query", adata_query), ("adata_ref", adata_ref)):
        if basis not in ad.obsm:
            raise KeyError(f"`{name}.obsm` has no {basis!r}; run `scnumap.tl.numap`/`tl.project` first.")
    keys = [color] if color is None or isinstance(color, str) else list(color)
    for key in keys:
        if key is not None and key not in adata_query.obs:
            raise KeyError(f"`color={key!r}` is not a column of the query's obs ({list(adata_query.obs.columns)}).")
    titles = [title] if isinstance(title, str) else list(title) if title is not None else [None] * len(keys)
    ref_xy = np.asarray(adata_ref.obsm[basis])[:, :2]
    query_xy = np.asarray(adata_query.obsm[basis])[:, :2]
    n_panels = len(keys)
    n_cols = min(ncols, n_panels)
    n_rows = int(np.ceil(n_panels / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 4.6 * n_rows), squeeze=False)
    s = size if size is not None else max(1.0, 12000 / (len(ref_xy) + len(query_xy)))
    for ax, key, panel_title in zip(axes.flat, keys, titles):
        ax.scatter(ref_xy[:, 0], ref_xy[:, 1], s=s, c=ref_color, linewidths=0, rasterized=True, label="reference")
        values = adata_query.obs[key] if key is not None else None
        _scatter_query(ax, fig, query_xy, values, s, cmap, _reference_categories(adata_ref, key))
        ax.set_title(panel_title or (f"query: {key}" if key else "query over reference"))
        ax.set_xlabel(f"{basis.removeprefix('X_').upper()}1")
        ax.set_ylabel(f"{basis.removeprefix('X_').upper()}2")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show or (show is None and save is None):
        plt.show()
        return None
    return fig


def _reference_categories(adata_ref: AnnData, key: str | None) -> list[str] | None:
    """Categories of the reference column behind ``key`` (``'x'`` or ``'x_numap'``), for shared colours."""
    if key is None:
        return None
    base = key.removesuffix("_numap")
    if base in adata_ref.obs:
        return [str(c) for c in pd.Categorical(adata_ref.obs[base].astype(str)).categories]
    return None


def _scatter_query(ax, fig, xy: np.ndarray, values, s: float, cmap: str, categories=None) -> None:
    if values is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=s, c="#d62728", linewidths=0, rasterized=True, label="query")
        ax.legend(loc="best", markerscale=3, frameon=False)
        return
    if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object or values.dtype == bool:
        values = pd.Categorical(np.asarray(values).astype(str))
        order = list(categories or [])
        order += [c for c in values.categories if c not in order]
        palette = plt.get_cmap("tab20" if len(order) > 10 else "tab10")
        for i, cat in enumerate(order):
            if cat not in values.categories:
                continue
            mask = np.asarray(values == cat)
            ax.scatter(
                xy[mask, 0],
                xy[mask, 1],
                s=s,
                color=palette(i % palette.N),
                linewidths=0,
                rasterized=True,
                label=str(cat),
            )
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False, fontsize=8)
    else:
        points = ax.scatter(
            xy[:, 0], xy[:, 1], s=s, c=np.asarray(values, dtype=float), cmap=cmap, linewidths=0, rasterized=True
        )
        fig.colorbar(points, ax=ax, shrink=0.8)
