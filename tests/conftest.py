"""Shared fixtures: small real data shipped with scanpy, and ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from settings import QUICK

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def needs_shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when the folder is absent (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (shared data sets are only beside the project checkout)")
    return path


@pytest.fixture(scope="session")
def pbmc():
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()


@pytest.fixture(scope="session")
def pbmc_pca(pbmc) -> np.ndarray:
    return np.asarray(pbmc.obsm["X_pca"], dtype=np.float32)


@pytest.fixture(scope="session")
def blobs() -> np.ndarray:
    """300 points in 3 well separated 10-D clusters (seeded generator)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(3, 10))
    return (centers[np.repeat(np.arange(3), 100)] + rng.normal(size=(300, 10))).astype(np.float32)


@pytest.fixture(scope="session")
def fitted_blobs(blobs):
    from scnumap import NUMAP

    return NUMAP(random_state=0, **QUICK).fit(blobs)


@pytest.fixture(scope="session")
def batched(pbmc):
    """pbmc68k_reduced with two reference batches (a gene-wise offset on one) and a query of two
    technologies (an offset on one): a function returning fresh copies of ``(ref, query, clean)``,
    ``clean`` being the query without its offset; the reference has a 20-component PCA."""
    import scanpy as sc

    ad = pbmc.copy()
    ad.X = np.nan_to_num(ad.X)
    rng = np.random.default_rng(0)
    ad.obs["batch"] = rng.choice(["a", "b"], ad.n_obs)
    offset = rng.normal(scale=0.5, size=ad.n_vars).astype(np.float32)
    ad.X = ad.X + offset * (ad.obs["batch"] == "b").to_numpy()[:, None]
    ref, query = ad[:500].copy(), ad[500:].copy()
    query.obs["tech"] = rng.choice(["x", "y"], query.n_obs)
    tech_offset = rng.normal(scale=0.6, size=ad.n_vars).astype(np.float32)
    clean = query.copy()
    query.X = query.X + tech_offset * (query.obs["tech"] == "y").to_numpy()[:, None]
    for a in (ref, query, clean):
        for key in ("X_pca", "X_umap"):
            a.obsm.pop(key, None)
        a.uns.pop("neighbors", None)
        for key in list(a.obsp):
            del a.obsp[key]
    sc.pp.pca(ref, n_comps=20, random_state=0)
    data = (ref, query, clean)
    return lambda: tuple(a.copy() for a in data)


def _pinned_torch_threads(n: int):
    """Run the test with ``n`` torch threads, restoring the count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def two_torch_threads():
    """The documented guarantee holds for a fixed thread count: pin it, restore it after."""
    yield from _pinned_torch_threads(2)


@pytest.fixture
def one_torch_thread():
    """One torch thread: CPU ops take their serial paths."""
    yield from _pinned_torch_threads(1)
