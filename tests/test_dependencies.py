"""Why pyproject.toml pins ``pynndescent<0.7``: Scanpy (<= 1.11.5, the newest on the index) cannot
read the ``csr_array`` graph that pynndescent 0.7.0 returns. With pynndescent 0.7.0 installed,
``sc.pp.neighbors`` on more than 8,192 cells (where Scanpy switches from an exact search to
pynndescent) raises ``AttributeError: 'csr_array' object has no attribute 'getnnz'``, and so
does ``scnumap.tl.numap`` on an AnnData without a graph. This test fails when the pin is dropped
while Scanpy still has that bug; delete the pin (and this test) once a Scanpy release reads it."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_scanpy_neighbors_above_8192_cells_with_the_installed_pynndescent():
    import anndata
    import scanpy as sc

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5.0, size=(10, 10))
    X = (centers[rng.integers(0, 10, 8500)] + rng.normal(size=(8500, 10))).astype(np.float32)
    adata = anndata.AnnData(X)
    sc.pp.neighbors(adata, n_neighbors=15, use_rep="X", random_state=0)  # pynndescent above 8,192 cells
    connectivities = adata.obsp["connectivities"]
    assert connectivities.shape == (8500, 8500)
    assert connectivities.nnz > 8500
