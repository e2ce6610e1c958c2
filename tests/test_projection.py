"""scnumap.core.projection: the reference's 2-D index, kept per reference."""

from collections import OrderedDict

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from scnumap.core import projection
from scnumap.core.projection import cached_embedding_index


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.setattr(projection, "_EMBEDDING_CACHE", OrderedDict())


def test_the_2d_index_is_built_once_per_reference(empty_cache):
    coords = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    index = cached_embedding_index(coords, 15)
    radius = index.radius
    assert cached_embedding_index(coords.copy(), 15) is index  # the same values: the same index
    assert cached_embedding_index(coords, 15).radius is radius  # its own search is not made again
    assert cached_embedding_index(coords, 10) is not index  # another neighbour count
    moved = coords.copy()
    moved[0] += 1.0
    assert cached_embedding_index(moved, 15) is not index


def test_the_cached_index_keeps_its_own_copy_of_the_coordinates(empty_cache):
    coords = np.random.default_rng(1).normal(size=(200, 2))  # float64, as obsm often holds
    index = cached_embedding_index(coords, 15)
    want = NearestNeighbors(n_neighbors=16).fit(coords).kneighbors(n_neighbors=15)[0].mean(axis=1)
    coords[:] = 0.0  # the caller edits its array in place afterwards
    np.testing.assert_allclose(index.radius, want, rtol=1e-5)
    _, found = index.query(np.array([[0.0, 0.0]], np.float32), 3)
    assert found.shape == (1, 3)


def test_the_cache_holds_the_last_references_only(empty_cache):
    rng = np.random.default_rng(2)
    sets = [rng.normal(size=(50, 2)).astype(np.float32) for _ in range(projection.CACHE_SIZE + 1)]
    first = cached_embedding_index(sets[0], 15)
    for coords in sets[1:]:
        cached_embedding_index(coords, 15)
    assert len(projection._EMBEDDING_CACHE) == projection.CACHE_SIZE
    assert cached_embedding_index(sets[0], 15) is not first  # evicted, built again
