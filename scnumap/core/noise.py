"""Input noise on edge heads, scaled to each cell's neighbourhood: the regulariser that
makes new points land among their neighbours.

A held-out cell sits about one neighbour distance from the training cells around it, so
the network should map inputs perturbed by that much to the same place. The noise on
vertex ``i`` is isotropic Gaussian with expected norm ``input_noise * r_i``, where ``r_i``
is the root weighted mean squared distance to its graph neighbours: small in dense
regions (local detail kept), large in sparse ones. The head's spectral coordinates are
recomputed from the perturbed input by the (frozen) GrEASE network, so the network sees
inputs like those of a new cell. docs/method.md has the measurements.

The radius is Euclidean whatever the graph's metric, on purpose: the noise is an
isotropic Gaussian in the (standardised) input space the network reads, so its size has
to be compared with Euclidean lengths in that space. A cosine distance has no unit there
(it ignores each row's length), while the Euclidean length of a cosine graph's edges is
exactly how far, in the network's input, a neighbour lies.
"""

from __future__ import annotations

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
