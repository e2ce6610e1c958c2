import numpy as np
import torch

from scnumap.core.sampling import EdgeSampler, alias_table


def test_edges_drawn_in_proportion_to_weight():
    heads = np.array([0, 1, 2, 3])
    tails = np.array([1, 2, 3, 0])
    weights = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    sampler = EdgeSampler(heads, tails, weights, torch.device("cpu"))
    h, t = sampler.sample(200_000, torch.Generator().manual_seed(0))
    freq = np.bincount(h.numpy(), minlength=4) / 200_000
    np.testing.assert_allclose(freq, weights, atol=0.005)
    np.testing.assert_array_equal(t.numpy(), tails[h.numpy()])


def test_sampling_is_seeded():
    sampler = EdgeSampler(np.arange(5), np.arange(5), np.ones(5, dtype=np.float32), torch.device("cpu"))
    a = sampler.sample(50, torch.Generator().manual_seed(3))[0]
    b = sampler.sample(50, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


def test_alias_table_gives_each_column_its_exact_share():
    """Kept share plus the shares aliased to it = weight / total, on skewed weights (one
    column holding most of the mass, zeros, tiny values) where rounds must hand a large's
    excess on."""
    rng = np.random.default_rng(0)
    for weights in (
        rng.random(5000),
        rng.random(50) ** 8,
        np.r_[1e6, np.ones(999)],
        np.r_[np.zeros(5), np.ones(3)],
        rng.exponential(size=20_000),
    ):
        keep, alias = alias_table(weights)
        n = weights.shape[0]
        assert np.all((keep >= 0) & (keep <= 1))
        assert np.all((alias >= 0) & (alias < n))
        share = (keep + np.bincount(alias, 1.0 - keep, minlength=n)) / n
        np.testing.assert_allclose(share, weights / weights.sum(), rtol=0, atol=1e-12)
