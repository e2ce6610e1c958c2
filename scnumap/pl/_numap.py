"""Plots: the NUMAP embedding (Scanpy style) and query cells over a reference.

Both functions follow :mod:`scanpy.pl`'s conventions: ``basis='numap'`` names
``obsm['X_numap']``, axes are labelled ``NUMAP1``/``NUMAP2``, ``show=False`` returns the
Axes (a list of Axes for several panels), and ``save`` writes the figure to
``scanpy.settings.figdir`` (``save=True`` → ``numap.png``, ``save='_x.png'`` →
``numap_x.png``; ``pl.project`` uses ``numap_project`` as the stem).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import to_hex

#: Space (inches) kept left of each panel for the next panel's y-axis label.
_YLABEL_INCHES = 0.45

#: How :func:`project` draws query cells labelled ``"Unknown"`` by :func:`scnumap.tl.project`:
#: white markers with a black edge, twice the area of the others, on top of them.
UNKNOWN_FACECOLOR = "#ffffff"
UNKNOWN_EDGECOLOR = "#000000"
UNKNOWN_SIZE_FACTOR = 2.0

#: Colour map of the mapping score (low = red, 1 = blue), unless ``cmap`` is given.
SCORE_CMAP = "RdYlBu"

#: Colour-bar label of a mapping-score column.
SCORE_LABEL = "mapping score"


def numap(adata: AnnData, *, basis: str = "numap", **kwargs):
    """Scatter plot of the NUMAP embedding: :func:`scanpy.pl.embedding` of ``obsm['X_numap']``.

    Axes are labelled ``NUMAP1``/``NUMAP2`` (``{BASIS}1``/``{BASIS}2`` for another
    ``basis``); with several panels, the space between them is widened so that each
    panel's legend stays clear of the next panel.

    Parameters
    ----------
    adata
        AnnData with ``obsm['X_numap']`` (or ``obsm['X_' + basis]``, or ``obsm[basis]``).
    basis
        Name of the embedding: the ``key_added`` of :func:`scnumap.tl.numap`, with or
        without the ``X_`` prefix (``'numap'`` and ``'X_numap'`` are the same).
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``wspace``, ...);
        ``show``, ``save`` and ``return_fig`` behave as in :func:`scanpy.pl.umap`.

    Returns
    -------
    With ``show=False``, the Axes (a list of Axes for several ``color`` panels); with
    ``return_fig=True``, the Figure; otherwise ``None``.
    """
    import scanpy as sc

    key = _obsm_key(adata, basis, "adata", "run `scnumap.tl.numap(adata)` first")
    show = kwargs.pop("show", None)
    save = kwargs.pop("save", None)
    return_fig = kwargs.pop("return_fig", False)
    axes = sc.pl.embedding(adata, basis=key, show=False, **kwargs)
    panels = axes if isinstance(axes, list) else [axes]
    if len(panels) > 1 and "wspace" not in kwargs:
        wspace = _wspace_for_legends(panels)
        if wspace is not None:
            plt.close(panels[0].figure)
            axes = sc.pl.embedding(adata, basis=key, show=False, wspace=wspace, **kwargs)
            panels = axes if isinstance(axes, list) else [axes]
    name = _basis_name(key)
    for ax in panels:
        ax.set_xlabel(f"{name}1")
        ax.set_ylabel(f"{name}2")
    fig = panels[0].figure
    _save_or_show(fig, name.lower(), save=save, show=show)
    if return_fig:
        return fig
    return None if _shown(show) else axes


def project(
    adata_query: AnnData,
    adata_ref: AnnData | str | Path,
    *,
    color: str | Sequence[str] | None = None,
    basis: str = "numap",
    ref_key: str = "numap",
    ref_color: str = "#d3d3d3",
    size: float | None = None,
    title: str | Sequence[str] | None = None,
    ncols: int = 3,
    cmap: str | None = None,
    ax: Axes | None = None,
    save: bool | str | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Query cells coloured over the reference cells in grey, one panel per ``color``.

    Categorical colours follow the reference: a query column ``c`` or a transferred
    column ``c_numap`` uses the palette of the reference's ``obs[c]``
    (``adata_ref.uns[f'{c}_colors']``, or Scanpy's default palette when that is absent),
    so that a label has the same colour in the reference and query plots. Cells labelled
    ``"Unknown"`` (by :func:`scnumap.tl.project`: mapping score below
    ``unknown_threshold``) are drawn on top as white markers with a black edge, twice the
    area of the others, with their own ``"Unknown"`` legend entry, last.

    The mapping score (``color='numap_mapping_score'``, any column ending in
    ``_mapping_score``) is drawn on a fixed 0–1 scale (colour map ``'RdYlBu'``: red = unlike
    the reference, blue = typical), lowest scores on top, with a colour bar labelled
    ``"mapping score"``.

    Parameters
    ----------
    adata_query
        Query after :func:`scnumap.tl.project` (``obsm['X_' + basis]``).
    adata_ref
        Reference after :func:`scnumap.tl.numap`, or the path of its ``.h5ad`` (the same
        inputs as :func:`scnumap.tl.project`).
    color
        Query ``obs`` column(s): labels, transferred labels, confidences, the mapping
        score (``'numap_mapping_score'``). ``None`` draws the query in one colour.
    basis
        Embedding in both objects: ``'numap'`` (or ``'X_numap'``) names ``obsm['X_numap']``.
    ref_key
        Key of the model in ``adata_ref.uns`` (used when ``adata_ref`` is a path).
    ref_color
        Colour of the reference cells.
    size
        Marker size (default scales with the number of cells).
    title
        Panel title(s).
    ncols
        Panels per row.
    cmap
        Colour map of continuous values (their colour bar is labelled with the column, or
        ``"mapping score"``). Default ``'viridis'``, and ``'RdYlBu'`` for the mapping score.
    ax
        Axes to draw a single panel into.
    save
        As in :mod:`scanpy.pl`: ``True`` writes ``figdir/numap_project.{format}``, a string
        is appended to the stem (``'_query.png'`` → ``figdir/numap_project_query.png``);
        ``figdir`` and the format are ``scanpy.settings.figdir`` and ``file_format_figs``.
    show
        Show the figure (default: ``scanpy.settings.autoshow``).
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    With ``show=False``, the Axes (a list of Axes for several panels); with
    ``return_fig=True``, the Figure; otherwise ``None``.
    """
    from ..tl._project import load_reference

    if not isinstance(adata_query, AnnData):
        raise TypeError(f"`adata_query` must be an AnnData, got {type(adata_query).__name__}.")
    if isinstance(adata_ref, str | Path):
        adata_ref, _, _ = load_reference(adata_ref, ref_key)
    elif not isinstance(adata_ref, AnnData):
        raise TypeError(f"`adata_ref` must be an AnnData or a path to .h5ad, got {type(adata_ref).__name__}.")
    query_key = _obsm_key(adata_query, basis, "adata_query", "run `scnumap.tl.project` first")
    ref_obsm_key = _obsm_key(adata_ref, basis, "adata_ref", "run `scnumap.tl.numap` first")
    keys = [color] if color is None or isinstance(color, str) else list(color)
    for key in keys:
        if key is not None and key not in adata_query.obs:
            fix = " Run `scnumap.tl.project(adata_query, adata_ref)` first." if _is_mapping_score(key) else ""
            raise KeyError(
                f"`color={key!r}` is not a column of the query's obs ({list(adata_query.obs.columns)}).{fix}"
            )
    titles = [title] if isinstance(title, str) else list(title) if title is not None else [None] * len(keys)
    if ax is not None and len(keys) > 1:
        raise ValueError(f"`ax` draws one panel, got {len(keys)} colors; pass one `color` or no `ax`.")
    ref_xy = np.asarray(adata_ref.obsm[ref_obsm_key])[:, :2]
    query_xy = np.asarray(adata_query.obsm[query_key])[:, :2]
    if ax is not None:
        fig, panels = ax.figure, [ax]
    else:
        n_cols = min(ncols, len(keys))
        n_rows = int(np.ceil(len(keys) / n_cols))
        fig, grid = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 4.6 * n_rows), squeeze=False)
        panels = list(grid.flat)
        for extra in panels[len(keys) :]:
            extra.set_visible(False)
        panels = panels[: len(keys)]
    s = size if size is not None else max(1.0, 12000 / (len(ref_xy) + len(query_xy)))
    name = _basis_name(query_key)
    for panel, key, panel_title in zip(panels, keys, titles):
        panel.scatter(ref_xy[:, 0], ref_xy[:, 1], s=s, c=ref_color, linewidths=0, rasterized=True, label="reference")
        if key is None:
            panel.scatter(*query_xy[:, :2].T, s=s, c="#d62728", linewidths=0, rasterized=True, label="query")
            panel.legend(loc="best", markerscale=3, frameon=False)
        else:
            _scatter_query(panel, fig, query_xy, adata_query, adata_ref, key, s, cmap)
        default_title = f"query: {SCORE_LABEL if _is_mapping_score(key) else key}" if key else "query over reference"
        panel.set_title(panel_title or default_title)
        panel.set_xlabel(f"{name}1")
        panel.set_ylabel(f"{name}2")
        panel.set_xticks([])
        panel.set_yticks([])
    if ax is None:
        fig.tight_layout()
    _save_or_show(fig, "numap_project", save=save, show=show)
    if return_fig:
        return fig
    if _shown(show):
        return None
    return panels[0] if len(panels) == 1 else panels


def _obsm_key(adata: AnnData, basis: str, name: str, fix: str) -> str:
    """``obsm`` key of ``basis``: the key itself or ``'X_' + basis`` (as :func:`scanpy.pl.embedding`)."""
    for key in (basis, f"X_{basis}"):
        if key in adata.obsm:
            return key
    raise KeyError(f"`{name}.obsm` has no {basis!r} or {'X_' + basis!r}; {fix}.")


def _basis_name(key: str) -> str:
    """Axis-label stem of an ``obsm`` key: ``'X_numap'`` → ``'NUMAP'``."""
    return key.removeprefix("X_").upper()


def _shown(show: bool | None) -> bool:
    import scanpy as sc

    return bool(sc.settings.autoshow if show is None else show)


def _save_or_show(fig, writekey: str, *, save: bool | str | None, show: bool | None) -> None:
    """Save to ``scanpy.settings.figdir`` and show, as :mod:`scanpy.pl` does."""
    import scanpy as sc

    ext = None
    if isinstance(save, str):
        for candidate in (".svg", ".pdf", ".png"):
            if save.endswith(candidate):
                ext, save = candidate[1:], save.removesuffix(candidate)
                break
        writekey, save = writekey + save, True
    if save:
        figdir = Path(sc.settings.figdir)
        figdir.mkdir(parents=True, exist_ok=True)
        path = figdir / f"{writekey}{sc.settings.plot_suffix}.{ext or sc.settings.file_format_figs}"
        sc.logging.warning(f"saving figure to file {path}")
        fig.savefig(path, dpi=plt.rcParams["savefig.dpi"], bbox_inches="tight")
    if _shown(show):
        plt.show()
    if save:
        plt.close(fig)


def _wspace_for_legends(panels: list[Axes]) -> float | None:
    """A grid ``wspace`` that keeps every legend clear of the next panel, or ``None`` if it already is."""
    fig = panels[0].figure
    renderer = fig.canvas.get_renderer()
    need = 0.0
    for panel in panels:
        legend = panel.get_legend()
        if legend is None:
            continue
        box = panel.get_window_extent(renderer)
        overhang = legend.get_window_extent(renderer).x1 - box.x1
        need = max(need, (overhang + _YLABEL_INCHES * fig.dpi) / box.width)
    spec = panels[0].get_subplotspec()
    current = spec.get_gridspec().wspace if spec is not None else None
    if need == 0.0 or current is None or need <= current:
        return None
    return float(need)


def _reference_column(adata_ref: AnnData, key: str) -> str | None:
    """The reference ``obs`` column behind a query column: ``key`` itself, or the longest ``c`` with ``key = c_...``."""
    if key in adata_ref.obs:
        return key
    matches = [c for c in adata_ref.obs.columns if key.startswith(f"{c}_")]
    return max(matches, key=len) if matches else None


def _default_palette(n: int) -> list[str]:
    """Scanpy's default colours for ``n`` categories (matplotlib's cycle, then default_20/28/102)."""
    from scanpy.plotting import palettes

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if n <= len(cycle):
        return list(cycle[:n])
    for palette in (palettes.default_20, palettes.default_28, palettes.default_102):
        if n <= len(palette):
            return list(palette[:n])
    return ["grey"] * n


def _category_colors(adata: AnnData, column: str) -> dict[str, str]:
    """Category → colour of ``adata.obs[column]``: its ``uns[column + '_colors']`` or Scanpy's default palette."""
    values = adata.obs[column]
    categories = (
        values.cat.categories
        if isinstance(values.dtype, pd.CategoricalDtype)
        else pd.Index(np.unique(values.astype(str)))
    )
    categories = [str(c) for c in categories]
    stored = adata.uns.get(f"{column}_colors")
    colors = (
        list(stored) if stored is not None and len(stored) >= len(categories) else _default_palette(len(categories))
    )
    return {cat: to_hex(colors[i]) for i, cat in enumerate(categories)}


def _is_mapping_score(key: str | None) -> bool:
    """Whether a query column is a mapping score of :func:`scnumap.tl.project` (``f'{name}_mapping_score'``)."""
    return key is not None and (key == "mapping_score" or key.endswith("_mapping_score"))


def _scatter_query(ax, fig, xy: np.ndarray, adata_query, adata_ref, key: str, s: float, cmap: str | None) -> None:
    from ..tl._project import UNKNOWN

    values = adata_query.obs[key]
    categorical = isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object or values.dtype == bool
    if not categorical:
        c = np.asarray(values, dtype=float)
        if _is_mapping_score(key):
            order = np.argsort(-c, kind="stable")  # the lowest scores on top
            style = dict(cmap=cmap or SCORE_CMAP, vmin=0.0, vmax=1.0)
            points = ax.scatter(*xy[order].T, s=s, c=c[order], linewidths=0, rasterized=True, **style)
            label = SCORE_LABEL
        else:
            points = ax.scatter(*xy.T, s=s, c=c, cmap=cmap or "viridis", linewidths=0, rasterized=True)
            label = key
        fig.colorbar(points, ax=ax, shrink=0.8).set_label(label)
        return
    base = _reference_column(adata_ref, key)
    colors = _category_colors(adata_ref, base) if base is not None else _category_colors(adata_query, key)
    colors.pop(UNKNOWN, None)  # always drawn as Unknown, below
    labels = np.asarray(values).astype(str)
    extra = [c for c in pd.unique(labels) if c not in colors and c != UNKNOWN]
    spare = [c for c in _default_palette(len(colors) + len(extra) + 20) if to_hex(c) not in colors.values()]
    spare = spare or ["grey"]
    colors.update({cat: to_hex(spare[i % len(spare)]) for i, cat in enumerate(extra)})
    for cat, color in colors.items():
        mask = labels == cat
        if mask.any():
            ax.scatter(*xy[mask].T, s=s, color=color, linewidths=0, rasterized=True, label=cat)
    unknown = labels == UNKNOWN
    if unknown.any():
        ax.scatter(
            *xy[unknown].T,
            s=s * UNKNOWN_SIZE_FACTOR,
            facecolors=UNKNOWN_FACECOLOR,
            edgecolors=UNKNOWN_EDGECOLOR,
            linewidths=0.5,
            rasterized=True,
            label=UNKNOWN,
            zorder=3,
        )
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False, fontsize=8)
