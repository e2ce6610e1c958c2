"""Real data from ../shared/data (skipped where the folder is absent, e.g. a user's clone)."""

import anndata
import numpy as np
import pytest
import scanpy as sc
from conftest import needs_shared_data

import scnumap
from scnumap.core import metrics


@pytest.fixture(scope="module")
def wang_xin():
    folder = needs_shared_data("pancreas_wang_xin_scclassify")
    ref = anndata.read_h5ad(folder / "wang_pancreas_subset.h5ad")
    query = anndata.read_h5ad(folder / "xin_pancreas_subset.h5ad")
    query = query[:, ref.var_names].copy()
    sc.pp.pca(ref, n_comps=30, random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)
    scnumap.tl.numap(ref, random_state=0)
    return ref, query


def test_wang_reference_to_xin_query_across_technologies(wang_xin):
    """Pancreas, Fluidigm C1 reference → SMARTer query (other lab, other technology).

    Measured with the defaults: labels 0.953 (``sc.tl.ingest`` 0.904); in the 2-D embedding,
    a kNN vote among the reference cells gives the query's type for 0.932 of the cells;
    reference trustworthiness 0.960."""
    ref, query = wang_xin
    query = query.copy()
    before = query.X.copy()
    scnumap.tl.project(query, ref, obs="cell_type")
    truth = query.obs["cell_type"].astype(str).to_numpy()
    assert np.mean(query.obs["cell_type_numap"].astype(str).to_numpy() == truth) >= 0.92
    # the embedding itself places query cells among reference cells of their type
    embedded = metrics.label_transfer_accuracy(
        ref.obsm["X_numap"], ref.obs["cell_type"].astype(str), query.obsm["X_numap"], truth
    )
    assert embedded >= 0.85
    assert (query.X != before).nnz == 0  # the query's data is left as it was
    assert metrics.trustworthiness(ref.obsm["X_pca"], ref.obsm["X_numap"]) >= 0.90
