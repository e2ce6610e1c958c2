"""Standardisation of the input: centre on the training mean, divide by one global scale.

One global scale (the root-mean-square of the centred training data) keeps the
relative weight of the features: per-feature standardisation of PCA input inflates
the noise components (ALGORITHM.md section 8). The statistics are computed on the
training data, stored, and reused unchanged in ``transform``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / scale`` with training statistics."""

    mean: np.ndarray  # (n_features,) float32
    scale: float

    @classmethod
    def fit(cls, X) -> Standardizer:
        mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
        if sp.issparse(X):
            sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
        else:
            sq = np.mean(np.asarray(X, dtype=np.float64) ** 2, axis=0)
        var = np.maximum(sq - mean**2, 0.0).sum()
        scale = float(np.sqrt(var / X.shape[1]))
        if not np.isfinite(scale) or scale <= 0:
            scale = 1.0  # all samples identical: nothing to scale
        return cls(mean.astype(np.float32), scale)

    def rows(self, X, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Standardised rows ``X[start:stop]`` as a float32 tensor on ``device``."""
        block = X[start:stop]
        return self.apply(block, device)

    def apply(self, block, device: torch.device) -> torch.Tensor:
        if sp.issparse(block):
            block = block.toarray()
        x = torch.as_tensor(np.asarray(block, dtype=np.float32), device=device)
        mean = torch.as_tensor(self.mean, device=device)
        return (x - mean) / self.scale
