import numpy as np
import torch

from scnumap.core.sampling import EdgeSampler


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
