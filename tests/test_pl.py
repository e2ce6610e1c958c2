import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pytest

import scnumap


@pytest.fixture(scope="module")
def ref_query(pbmc):
    ref, query = pbmc[:500].copy(), pbmc[500:].copy()
    import scanpy as sc

    sc.pp.neighbors(ref)
    scnumap.tl.numap(ref, epochs=10, grease_steps=50, hidden=(32,))
    scnumap.tl.project(query, ref, obs="bulk_labels")
    return ref, query


def _drawn(path) -> bool:
    img = mpimg.imread(path)
    return img.size > 0 and np.std(img[..., :3]) > 0.01


def test_pl_numap_saves_png(ref_query, tmp_path):
    ref, _ = ref_query
    ax = scnumap.pl.numap(ref, color="bulk_labels", show=False)
    ax.figure.savefig(tmp_path / "numap.png")
    assert _drawn(tmp_path / "numap.png")


def test_pl_project_saves_png(ref_query, tmp_path):
    ref, query = ref_query
    fig = scnumap.pl.project(
        query,
        ref,
        color=["bulk_labels", "bulk_labels_numap", "bulk_labels_numap_confidence"],
        save=str(tmp_path / "project.png"),
        show=False,
    )
    assert len(fig.axes) >= 3
    assert _drawn(tmp_path / "project.png")


def test_pl_errors(ref_query, pbmc):
    ref, query = ref_query
    with pytest.raises(KeyError, match=r"run `scnumap\.tl\.numap"):
        scnumap.pl.numap(pbmc)
    with pytest.raises(KeyError, match="`color='nope'` is not a column"):
        scnumap.pl.project(query, ref, color="nope", show=False)
