"""The NUMAP embedding network on top of the spectral coordinates.

``f(x) = g([x, S(x)]) + c · S(x)[:, :n_components]``: the MLP ``g`` sees the
standardised input and its GrEASE coordinates ``S(x)``; its last layer starts at
zero, so training starts from the (scaled) spectral layout and learns a correction.
With ``use_data=False``, ``g`` sees ``S(x)`` alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import mlp

#: Scale of the spectral residual: unit-variance spectral columns → a UMAP-sized layout.
RESIDUAL_SCALE = 3.0


class Encoder(nn.Module):
    """``g([x, s]) + RESIDUAL_SCALE * s[:, :n_components]`` on rows ``[x_std, s]``."""

    def __init__(
        self, n_features: int, n_spectral: int, n_components: int, hidden: tuple[int, ...], use_data: bool = True
    ):
        super().__init__()
        if n_spectral < n_components:
            raise ValueError(f"`n_spectral_components` ({n_spectral}) must be >= `n_components` ({n_components}).")
        self.n_features = n_features
        self.n_spectral = n_spectral
        self.n_components = n_components
        self.use_data = use_data
        self.body = mlp(n_features + n_spectral if use_data else n_spectral, hidden, n_components)

    def zero_last_layer(self) -> None:
        last = self.body[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        s = rows[:, self.n_features :]
        inputs = rows if self.use_data else s
        return self.body(inputs) + RESIDUAL_SCALE * s[:, : self.n_components]
