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
