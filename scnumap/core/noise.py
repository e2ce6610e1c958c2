"""Input noise on edge heads, scaled to each cell's neighbourhood: the regulariser that
makes new points land among their neighbours.

A held-out cell sits about one neighbour distance from the training cells around it, so
the network should map inputs perturbed by that much to the same place. The noise on
vertex ``i`` is isotropic Gaussian with expected norm ``input_noise * r_i``, where ``r_i``
is the root weighted mean squared distance to its graph neighbours: small in dense
regions (local detail kept), large in sparse ones. The head's spectral coordinates are
recomputed from the perturbed input by the (frozen) GrEASE network, so the network sees
inputs like those of a new cell. A fit's whole-graph steps perturb every end of an edge
instead, from rows kept from step to step (:class:`StandingNoise`). docs/method.md has the
measurements.

The radius is Euclidean whatever the graph's metric, on purpose: the noise is an
isotropic Gaussian in the (standardised) input space the network reads, so its size has
to be compared with Euclidean lengths in that space. A cosine distance has no unit there
(it ignores each row's length), while the Euclidean length of a cosine graph's edges is
exactly how far, in the network's input, a neighbour lies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .graph import mean_squared_edge_length


def neighbourhood_radius(heads: np.ndarray, lengths: np.ndarray, weights: np.ndarray, n_obs: int) -> np.ndarray:
    """``r_i = sqrt(sum_e w_e d_e^2 / sum_e w_e)`` over the edges ``e`` leaving vertex ``i``,
    from the edges' Euclidean lengths ``d_e`` in the input space."""
    return np.sqrt(mean_squared_edge_length(heads, lengths, weights, n_obs))


@dataclass
class HeadNoise:
    """Perturb the data part of table rows and recompute their spectral part.

    Attributes
    ----------
    sigma
        ``(n_obs,)`` per-coordinate standard deviation of each vertex's noise (standardised units).
    spectral
        Standardised input → spectral coordinates (the fitted GrEASE's ``embed``).
    n_features
        Width of the data part of a row; the spectral part follows it.
    """

    sigma: torch.Tensor
    spectral: Callable[[torch.Tensor], torch.Tensor]
    n_features: int

    @classmethod
    def from_radius(
        cls, radius: np.ndarray, *, relative: float, scale: float, n_features: int, spectral, device
    ) -> HeadNoise:
        """Noise of expected norm ``relative * radius[i]`` on vertex ``i`` (``radius`` in input
        units, ``scale``: the standardiser's)."""
        sigma = relative * (radius / scale) / np.sqrt(n_features)
        return cls(torch.as_tensor(sigma, dtype=torch.float32, device=device), spectral, n_features)

    def __call__(self, rows: torch.Tensor, vertices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = rows[:, : self.n_features]
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        x = x + self.sigma[vertices][:, None] * noise
        with torch.no_grad():
            s = self.spectral(x)
        return torch.cat([x, s], dim=1)

    def scaled(self, factor: float) -> HeadNoise:
        """The same noise with every vertex's standard deviation times ``factor``."""
        return dataclasses.replace(self, sigma=self.sigma * float(factor))


#: A fit's whole-graph step draws the noise of ``1 / NOISE_REFRESH`` of the vertices again
#: (:class:`StandingNoise`): each vertex keeps a draw for this many steps on average.
#: Recomputing the spectral part of every perturbed row (a pass of the GrEASE network) was
#: about a third of a step on 700 cells; benchmarks/small_fits.py (1,000-cell samples of six
#: sets, two passes): kNN preservation 0.419 and held-out transfer 0.839 against 0.421 and
#: 0.840 with a new draw for every vertex at every step, training 2.39 s against 3.03 s.
NOISE_REFRESH = 8

#: When the tails and negatives of an edge are read from the perturbed rows too (a fit's
#: whole-graph steps, :data:`~scnumap.core.train.ONE_PASS`) the noise is this fraction of
#: the heads-only noise: both ends of an edge then move, and the difference of their
#: perturbations keeps the variance the head's alone had.
BOTH_ENDS_SCALE = 1.0 / math.sqrt(2.0)


class StandingNoise:
    """Perturbed rows of every vertex, kept from step to step: :meth:`step` draws the noise of
    every vertex at the first call and of a random ``1 / refresh`` of them at each later one.

    Parameters
    ----------
    noise
        The noise of one vertex (:class:`HeadNoise`).
    rows
        ``(n_obs, width)`` table rows of every vertex, in order.
    refresh
        Each vertex keeps a draw for this many steps on average (1: a new draw for every
        vertex at every step, the same draws as ``noise(rows, arange(n_obs), generator)``).
    both_ends
        Whether the steps read every end of an edge from these rows (recorded for the
        training loop).
    """

    def __init__(self, noise: HeadNoise, rows: torch.Tensor, *, refresh: int = NOISE_REFRESH, both_ends: bool = False):
        self.noise = noise
        self.rows = rows
        self.refresh = int(refresh)
        self.both_ends = bool(both_ends)
        self.vertices = torch.arange(rows.shape[0], device=rows.device)
        self.current: torch.Tensor | None = None

    def step(self, generator: torch.Generator) -> torch.Tensor:
        """The perturbed rows of every vertex for one step (``(n_obs, width)``)."""
        if self.current is None or self.refresh <= 1:
            self.current = self.noise(self.rows, self.vertices, generator)
            return self.current
        n = self.rows.shape[0]
        order = torch.randperm(n, generator=generator, device=generator.device).to(self.rows.device)
        fresh = order[: -(-n // self.refresh)]
        self.current[fresh] = self.noise(self.rows[fresh], fresh, generator)
        return self.current
