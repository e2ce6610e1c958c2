import numpy as np
import torch

from scnumap.core.graph import build_graph, edge_distances
from scnumap.core.noise import HeadNoise, StandingNoise, neighbourhood_radius


def test_neighbourhood_radius_is_the_weighted_rms_edge_length(blobs):
    heads, tails, weights = build_graph(blobs, 10).edges()
    r = neighbourhood_radius(heads, edge_distances(blobs, heads, tails), weights, len(blobs))
    for i in (0, 57, 299):
        e = heads == i
        d2 = np.sum((blobs[heads[e]] - blobs[tails[e]]) ** 2, axis=1)
        assert e.sum() >= 9  # every vertex has its neighbours' edges
        np.testing.assert_allclose(r[i], np.sqrt(np.sum(weights[e] * d2) / np.sum(weights[e])), rtol=1e-5)


def _spectral(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.sum(dim=1), x[:, 0] ** 2], dim=1)


def test_head_noise_scales_with_each_vertex_and_recomputes_the_spectral_part():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 50, generator=gen)
    rows = torch.cat([x, _spectral(x)], dim=1)
    sigma = torch.tensor([0.0, 0.01, 0.1, 1.0])
    noise = HeadNoise(sigma, _spectral, n_features=50)
    vertices = torch.tensor([0, 1, 2, 3])
    out = noise(rows, vertices, gen)
    torch.testing.assert_close(out[0], rows[0])  # zero noise: the row is unchanged
    torch.testing.assert_close(out[:, 50:], _spectral(out[:, :50]))  # spectral part follows the input
    norms = torch.linalg.norm(out[:, :50] - x, dim=1)
    # expected norm sigma * sqrt(50) (chi distribution with 50 dof: within ±30 %)
    ratio = norms[1:] / (sigma[1:] * np.sqrt(50))
    assert torch.all((ratio > 0.7) & (ratio < 1.3))


def test_head_noise_from_radius_has_the_requested_relative_size(blobs):
    heads, tails, weights = build_graph(blobs, 10).edges()
    radius = neighbourhood_radius(heads, edge_distances(blobs, heads, tails), weights, len(blobs))
    noise = HeadNoise.from_radius(
        radius, relative=0.5, scale=2.0, n_features=blobs.shape[1], spectral=_spectral, device=torch.device("cpu")
    )
    np.testing.assert_allclose(noise.sigma.numpy() * np.sqrt(blobs.shape[1]), 0.5 * radius / 2.0, rtol=1e-5)


def _rows(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 50, generator=torch.Generator().manual_seed(seed))
    return torch.cat([x, _spectral(x)], dim=1)


def test_scaled_noise_scales_every_sigma_and_leaves_the_original():
    noise = HeadNoise(torch.tensor([0.1, 0.4]), _spectral, n_features=50)
    half = noise.scaled(0.5)
    torch.testing.assert_close(half.sigma, torch.tensor([0.05, 0.2]))
    torch.testing.assert_close(noise.sigma, torch.tensor([0.1, 0.4]))
    assert half.spectral is noise.spectral
    assert half.n_features == 50


def test_standing_noise_refreshed_every_step_is_head_noise_of_every_row():
    rows = _rows(30)
    noise = HeadNoise(torch.full((30,), 0.2), _spectral, n_features=50)
    standing = StandingNoise(noise, rows, refresh=1)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        torch.testing.assert_close(standing.step(gen_a), noise(rows, torch.arange(30), gen_b))


def test_standing_noise_draws_a_share_of_the_rows_again_per_step():
    """First step: every row perturbed; later steps: exactly ``ceil(n / refresh)`` rows get a
    new draw (their spectral part recomputed), the others keep theirs; every row comes round."""
    n, refresh = 100, 8
    rows = _rows(n)
    standing = StandingNoise(HeadNoise(torch.full((n,), 0.2), _spectral, n_features=50), rows, refresh=refresh)
    gen = torch.Generator().manual_seed(0)
    before = standing.step(gen).clone()
    assert torch.all((before[:, :50] - rows[:, :50]).abs().sum(dim=1) > 0)
    drawn = torch.zeros(n, dtype=torch.bool)
    for _ in range(60):
        after = standing.step(gen).clone()
        changed = (after != before).any(dim=1)
        assert int(changed.sum()) == -(-n // refresh)
        torch.testing.assert_close(after[:, 50:], _spectral(after[:, :50]))
        drawn |= changed
        before = after
    assert drawn.all()
