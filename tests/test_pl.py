import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex

import scnumap

LABEL_COLORS = [
    "#000080",
    "#ff00ff",
    "#008000",
    "#ffa500",
    "#800000",
    "#00ffff",
    "#808000",
    "#ff0000",
    "#0000ff",
    "#00ff00",
]


@pytest.fixture(scope="module")
def ref_query(pbmc):
    import scanpy as sc

    ref, query = pbmc[:500].copy(), pbmc[500:].copy()
    sc.pp.pca(ref, random_state=0)
    sc.pp.neighbors(ref)
    scnumap.tl.numap(ref, epochs=10, grease_steps=50, hidden=(32,))
    # a palette unlike any default, so the test sees whose colours are drawn
    ref.uns["bulk_labels_colors"] = LABEL_COLORS[: len(ref.obs["bulk_labels"].cat.categories)]
    scnumap.tl.project(query, ref, obs="bulk_labels")
    return ref, query


@pytest.fixture
def figdir(tmp_path):
    import scanpy as sc

    previous = sc.settings.figdir
    sc.settings.figdir = tmp_path
    yield tmp_path
    sc.settings.figdir = previous
    plt.close("all")


def _drawn(path) -> bool:
    img = mpimg.imread(path)
    return img.size > 0 and np.std(img[..., :3]) > 0.01


def test_pl_numap_saves_png_named_after_the_basis(ref_query, figdir):
    ref, _ = ref_query
    assert scnumap.pl.numap(ref, color="bulk_labels", save="_ref.png", show=False) is not None
    assert _drawn(figdir / "numap_ref.png")
    assert not list(figdir.glob("X_*"))


def test_pl_numap_axis_labels_and_basis_names(ref_query, figdir):
    ref, _ = ref_query
    for basis in ("numap", "X_numap"):
        ax = scnumap.pl.numap(ref, basis=basis, color="bulk_labels", show=False)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("NUMAP1", "NUMAP2")


def test_pl_numap_two_panels_keep_the_legend_clear_of_the_next_panel(ref_query, figdir):
    ref, _ = ref_query
    axes = scnumap.pl.numap(ref, color=["bulk_labels", "louvain"], show=False)
    assert isinstance(axes, list)
    assert len(axes) == 2
    fig = axes[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend_right = axes[0].get_legend().get_window_extent(renderer).x1
    next_panel_left = axes[1].get_tightbbox(renderer).x0  # includes its y-axis label
    assert legend_right < next_panel_left


def test_pl_project_accepts_a_path_and_returns_axes(ref_query, figdir):
    ref, query = ref_query
    path = figdir / "ref.h5ad"
    ref.write_h5ad(path)
    ax = scnumap.pl.project(query, path, color="bulk_labels_numap", show=False)
    assert isinstance(ax, matplotlib.axes.Axes)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("NUMAP1", "NUMAP2")
    axes = scnumap.pl.project(query, str(path), color=["bulk_labels", "bulk_labels_numap"], show=False)
    assert isinstance(axes, list)
    assert len(axes) == 2
    fig = scnumap.pl.project(query, ref, color="bulk_labels", basis="X_numap", show=False, return_fig=True)
    assert isinstance(fig, matplotlib.figure.Figure)


def test_pl_project_uses_the_reference_palette(ref_query, figdir):
    ref, query = ref_query
    expected = dict(zip(ref.obs["bulk_labels"].cat.categories, ref.uns["bulk_labels_colors"]))
    for column in ("bulk_labels", "bulk_labels_numap"):
        ax = scnumap.pl.project(query, ref, color=column, show=False)
        drawn = {
            c.get_label(): to_hex(c.get_facecolor()[0])
            for c in ax.collections
            if isinstance(c, PathCollection) and c.get_label() not in ("reference", "", "Unknown")
        }
        assert drawn
        assert drawn == {label: expected[label] for label in drawn}


def _collections(ax) -> dict:
    return {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}


def test_pl_project_draws_unknown_cells_distinctly(ref_query, figdir):
    ref, query = ref_query
    # a high threshold, so that a good share of the query is Unknown
    query = scnumap.tl.project(query, ref, obs="bulk_labels", unknown_threshold=0.9, copy=True)
    labels = query.obs["bulk_labels_numap"].astype(str).to_numpy()
    unknown = labels == "Unknown"
    assert 0 < unknown.sum() < query.n_obs
    ax = scnumap.pl.project(query, ref, color="bulk_labels_numap", show=False, save="_unknown.png")
    assert _drawn(figdir / "numap_project_unknown.png")
    drawn = _collections(ax)
    marker = drawn["Unknown"]
    np.testing.assert_allclose(marker.get_offsets(), query.obsm["X_numap"][unknown])
    assert {to_hex(c) for c in marker.get_facecolor()} == {"#ffffff"}
    assert {to_hex(c) for c in marker.get_edgecolor()} == {"#000000"}
    known = [c for label, c in drawn.items() if label not in ("reference", "Unknown")]
    assert known
    assert all(marker.get_zorder() > c.get_zorder() for c in known)
    assert marker.get_sizes()[0] > known[0].get_sizes()[0]
    assert sum(len(c.get_offsets()) for c in known) == (~unknown).sum()
    # the known categories keep the reference palette; Unknown is the last legend entry
    expected = dict(zip(ref.obs["bulk_labels"].cat.categories, ref.uns["bulk_labels_colors"]))
    assert {c.get_label(): to_hex(c.get_facecolor()[0]) for c in known} == {
        c.get_label(): expected[c.get_label()] for c in known
    }
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-1] == "Unknown"
    assert legend.count("Unknown") == 1


def test_pl_project_colours_query_by_mapping_score(ref_query, figdir):
    ref, query = ref_query
    score = query.obs["numap_mapping_score"].to_numpy()
    assert score.min() < score.max()
    fig = scnumap.pl.project(query, ref, color="numap_mapping_score", show=False, return_fig=True)
    ax = fig.axes[0]
    assert ax.get_title() == "query: mapping score"
    assert [a.get_ylabel() for a in fig.axes if a.get_label() == "<colorbar>"] == ["mapping score"]
    # the reference in grey beneath, the query above it on a fixed 0-1 scale, lowest scores on top
    assert len(ax.collections) == 2
    reference, points = ax.collections
    assert reference.get_label() == "reference"
    assert {to_hex(c) for c in reference.get_facecolor()} == {"#d3d3d3"}
    values = np.asarray(points.get_array())
    np.testing.assert_allclose(np.sort(values), np.sort(score))
    assert values[-1] == score.min()
    assert np.all(np.diff(values) <= 0)
    assert points.get_clim() == (0.0, 1.0)
    assert points.get_cmap().name == "RdYlBu"
    # a low score is drawn red, a score of 1 blue
    colors = points.to_rgba(np.array([0.0, 1.0]))
    assert colors[0][0] > colors[0][2]
    assert colors[1][2] > colors[1][0]
    scnumap.pl.project(query, ref, color="numap_mapping_score", save="_score.png", show=False)
    assert _drawn(figdir / "numap_project_score.png")


def test_pl_project_colourbar_labelled_and_file_named_like_scanpy(ref_query, figdir):
    ref, query = ref_query
    fig = scnumap.pl.project(
        query, ref, color=["bulk_labels_numap", "bulk_labels_numap_confidence"], show=False, return_fig=True
    )
    colorbar_labels = [a.get_ylabel() for a in fig.axes if a.get_label() == "<colorbar>"]
    assert colorbar_labels == ["bulk_labels_numap_confidence"]
    scnumap.pl.project(query, ref, color="bulk_labels_numap_confidence", save="_query.png", show=False)
    assert _drawn(figdir / "numap_project_query.png")


def test_pl_errors(ref_query, pbmc):
    ref, query = ref_query
    with pytest.raises(KeyError, match=r"run `scnumap\.tl\.numap"):
        scnumap.pl.numap(pbmc)
    with pytest.raises(KeyError, match="`color='nope'` is not a column"):
        scnumap.pl.project(query, ref, color="nope", show=False)
    with pytest.raises(KeyError, match=r"`color='numap_mapping_score'` is not .* Run `scnumap\.tl\.project"):
        scnumap.pl.project(pbmc[:5].copy(), ref, color="numap_mapping_score", basis="X_pca", show=False)
    with pytest.raises(TypeError, match=r"`adata_ref` must be an AnnData or a path to \.h5ad, got int"):
        scnumap.pl.project(query, 3, show=False)
    with pytest.raises(ValueError, match="`ax` draws one panel, got 2 colors"):
        scnumap.pl.project(query, ref, color=["bulk_labels", "louvain"], ax=plt.gca(), show=False)
