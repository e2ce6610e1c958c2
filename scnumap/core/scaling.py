"""Standardisation of the input: centre on the training mean, divide by one global scale.

One global scale (the root-mean-square of the centred training data) keeps the
relative weight of the features: per-feature standardisation of PCA input inflates
the noise components (docs/method.md, "Input scaling"). The statistics are computed on
the training data in row chunks with float64 accumulators (no full-size copy of the
input), stored, and reused unchanged in ``transform``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

#: Values (rows x features) per chunk when the statistics are accumulated: 8 MiB of float64.
STATISTICS_CHUNK_VALUES = 2**20


def column_mean(X, block_values: int = STATISTICS_CHUNK_VALUES) -> np.ndarray:
    """Float64 column means of ``X`` (numpy, scipy sparse, dask or backed), read in row blocks
    of at most ``block_values`` values."""
    n_obs, n_vars = X.shape
    rows = max(1, block_values // max(n_vars, 1))
    total = np.zeros(n_vars, dtype=np.float64)
    for start in range(0, n_obs, rows):
        block = X[start : start + rows]
        if hasattr(block, "compute"):
            block = block.compute()
        if sp.issparse(block):
            total += np.asarray(block.sum(axis=0, dtype=np.float64)).ravel()
        else:
            total += np.asarray(block).sum(axis=0, dtype=np.float64)
    return total / max(n_obs, 1)


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / scale`` with training statistics."""

    mean: np.ndarray  # (n_features,) float32
    scale: float

    @classmethod
    def fit(cls, X) -> Standardizer:
        """Mean and global scale of ``X`` (dense or sparse ``(n_samples, n_features)``).

        Two passes over row chunks of at most ``STATISTICS_CHUNK_VALUES`` values: the mean,
        then the centred sum of squares (dense; sparse input uses the sum of squares minus
        ``n * mean**2``, which keeps the zeros implicit), both accumulated in float64.
        """
        n, p = X.shape
        rows = max(1, STATISTICS_CHUNK_VALUES // max(1, p))
        mean = column_mean(X, STATISTICS_CHUNK_VALUES)
        centred_sq = 0.0
        for start in range(0, n, rows):
            block = X[start : start + rows]
            if sp.issparse(block):
                block = sp.csr_matrix(block, dtype=np.float64)
                centred_sq += float(block.multiply(block).sum())
            else:
                block = block.astype(np.float64)
                block -= mean
                block *= block
                centred_sq += float(block.sum())
        if sp.issparse(X):
            centred_sq -= n * float(mean @ mean)
        scale = float(np.sqrt(max(centred_sq, 0.0) / (n * p)))
        if not np.isfinite(scale) or scale <= 0:
            scale = 1.0  # all samples identical: nothing to scale
        return cls(mean.astype(np.float32), scale)

    def rows(self, X, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Standardised rows ``X[start:stop]`` as a float32 tensor on ``device``."""
        block = X[start:stop]
        return self.apply(block, device)

    def apply(self, block, device: torch.device) -> torch.Tensor:
        """Standardised ``block`` (dense or sparse rows) as a new float32 tensor on ``device``."""
        if sp.issparse(block):
            block = block.toarray()
        with warnings.catch_warnings():  # a read-only input (as_matrix's view) is only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            x = torch.as_tensor(np.asarray(block, dtype=np.float32), device=device)
        mean = torch.as_tensor(self.mean, device=device)
        return (x - mean) / self.scale
