"""scnumap.tl.project on a dask query: one task per chunk, the same results as in memory.

A plain and a Harmony-integrated reference (pbmc68k_reduced, quick fits). The dask path runs
the correction's rounds, the projection, the mapping score and the label vote in tasks;
these tests compare every output with the in-memory path, in the calling process and on
a two-worker ``dask.distributed.LocalCluster`` (worker processes: everything is pickled).
"""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from settings import TINY

import scnumap
from scnumap.tl import _project

da = pytest.importorskip("dask.array")

#: Both paths run the same model, whatever its quality.
FAST = TINY | {"verbose": False}


@pytest.fixture(scope="module")
def references(batched):
    """A plain and an integrated reference (two batches, one offset), and a query with two technologies."""
    ref, query, _ = batched()
    plain = ref.copy()
    sc.pp.neighbors(plain, n_neighbors=15, random_state=0, method="gauss")
    scnumap.tl.numap(plain, random_state=0, **FAST)
    integrated = ref.copy()
    scnumap.tl.numap(integrated, batch_key="batch", random_state=0, **FAST)
    return {"plain": plain, "integrated": integrated}, query


def as_dask(query: anndata.AnnData, chunk: int = 64) -> anndata.AnnData:
    out = query.copy()
    out.X = da.from_array(np.asarray(query.X), chunks=(chunk, -1))
    return out


def assert_same(lazy: anndata.AnnData, eager: anndata.AnnData, keys=("X_numap",)):
    for key in keys:
        assert isinstance(lazy.obsm[key], da.Array)
        np.testing.assert_allclose(lazy.obsm[key].compute(), eager.obsm[key], rtol=1e-5, atol=1e-5)
    probabilities = lazy.obsm["bulk_labels_numap_probabilities"]
    assert isinstance(probabilities, da.Array)
    np.testing.assert_allclose(
        probabilities.compute(), eager.obsm["bulk_labels_numap_probabilities"].to_numpy(), atol=1e-6
    )
    for col in ("numap_mapping_score", "bulk_labels_numap_confidence"):
        np.testing.assert_allclose(lazy.obs[col], eager.obs[col], atol=1e-6)
    assert lazy.obs["bulk_labels_numap"].equals(eager.obs["bulk_labels_numap"])


@pytest.mark.parametrize("kind", ["plain", "integrated"])
@pytest.mark.parametrize("sample_size", [_project.SAMPLE_SIZE, 100])
def test_dask_query_equals_the_in_memory_query(references, kind, sample_size, monkeypatch):
    """Also with a query sample smaller than the query: chunks mix sampled and other rows, and
    the query share's shift comes from the sample in both paths."""
    monkeypatch.setattr(_project, "SAMPLE_SIZE", sample_size)
    refs, query = references
    ref = refs[kind]
    batch_key = "tech" if kind == "integrated" else None
    eager = scnumap.tl.project(query, ref, obs="bulk_labels", batch_key=batch_key, copy=True, chunk_size=64)
    before = query.copy()
    lazy_query = as_dask(query)
    lazy = scnumap.tl.project(lazy_query, ref, obs="bulk_labels", batch_key=batch_key, copy=True)
    keys = ("X_numap", "X_pca_harmony") if kind == "integrated" else ("X_numap",)
    assert_same(lazy, eager, keys)
    assert "X_numap" not in lazy_query.obsm  # copy=True left the dask query alone
    np.testing.assert_array_equal(query.X, before.X)


def test_dask_results_write_to_zarr_and_read_back(references, tmp_path):
    refs, query = references
    lazy = as_dask(query)
    scnumap.tl.project(lazy, refs["plain"], obs="bulk_labels")
    lazy.X = lazy.X.compute()
    lazy.write_zarr(tmp_path / "query.zarr")
    back = anndata.read_zarr(tmp_path / "query.zarr")
    np.testing.assert_allclose(back.obsm["X_numap"], lazy.obsm["X_numap"].compute())
    np.testing.assert_allclose(
        back.obsm["bulk_labels_numap_probabilities"], lazy.obsm["bulk_labels_numap_probabilities"]
    )
    assert back.obs["bulk_labels_numap"].equals(lazy.obs["bulk_labels_numap"])


def test_local_cluster_runs_every_chunk_on_the_workers(references, tmp_path):
    """A sparse query read lazily from zarr (anndata's reader) on two worker processes."""
    distributed = pytest.importorskip("dask.distributed")
    refs, query = references
    ref = refs["integrated"]
    stored = query.copy()
    stored.X = sp.csr_matrix(stored.X)
    eager = scnumap.tl.project(stored, ref, obs="bulk_labels", batch_key="tech", copy=True, chunk_size=64)
    stored.write_zarr(tmp_path / "query.zarr")
    import zarr

    lazy = anndata.AnnData(obs=stored.obs, var=stored.var)
    lazy.X = anndata.experimental.read_elem_lazy(zarr.open(tmp_path / "query.zarr")["X"], chunks=(64, query.n_vars))
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as stream,
    ):
        scnumap.tl.project(lazy, ref, obs="bulk_labels", batch_key="tech")
        assert_same(lazy, eager, ("X_numap", "X_pca_harmony"))
    workers = {t["worker"] for t in stream.data if "project_block" in str(t["key"])}
    assert len(workers) == 2  # the chunks ran on both workers


def test_without_a_cluster_the_chunks_run_one_after_the_other():
    """dask's thread pool would run chunks at once, each with every core's threads: not by default."""
    import dask

    from scnumap.core.projection import dask_scheduler

    assert dask_scheduler() == "synchronous"
    with dask.config.set(scheduler="threads"):
        assert dask_scheduler() is None  # the user's choice is kept


def test_dask_query_with_missing_genes_equals_the_in_memory_query(references):
    refs, query = references
    kept = query[:, query.var_names[3:]].copy()  # three reference genes missing
    eager = scnumap.tl.project(kept, refs["plain"], obs="bulk_labels", missing_genes="zeros", copy=True)
    lazy = scnumap.tl.project(as_dask(kept), refs["plain"], obs="bulk_labels", missing_genes="zeros", copy=True)
    assert_same(lazy, eager)


def test_a_dask_projected_query_plots_over_the_reference(references):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs, query = references
    lazy = as_dask(query)
    scnumap.tl.project(lazy, refs["plain"], obs="bulk_labels")
    ax = scnumap.pl.project(lazy, refs["plain"], color="numap_mapping_score", show=False)
    offsets = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    # the query's points are drawn where tl.project put them
    placed = lazy.obsm["X_numap"].compute()
    assert np.isin(placed[:, 0], offsets[:, 0]).all()
    plt.close("all")
