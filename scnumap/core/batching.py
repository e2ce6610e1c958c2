"""Rows of the training data, dense or sparse, fetched in batches on the device."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .scaling import Standardizer

#: Dense training matrices up to this many bytes live on the device whole.
DEVICE_TABLE_MAX_BYTES = 4 * 1024**3

#: Rows standardised at a time while the device table is filled.
TABLE_CHUNK_ROWS = 16384


class RowTable:
    """Standardised training rows, gathered by index.

    Dense data that fits is standardised once and kept on the device; sparse or
    very large data stays on the host and each batch is densified on demand.
    """

    def __init__(self, X, standardizer: Standardizer, device: torch.device, extra=None):
        self.device = device
        self.n_obs = X.shape[0]
        self._extra = extra  # optional (n, k) tensor on device appended to every row
        n_bytes = X.shape[0] * X.shape[1] * 4
        if not sp.issparse(X) and n_bytes <= DEVICE_TABLE_MAX_BYTES:
            # one allocation, filled in chunks: no full-size temporaries on the way
            width = X.shape[1] + (0 if extra is None else extra.shape[1])
            table = torch.empty(self.n_obs, width, device=device)
            for start, stop in chunks(self.n_obs, TABLE_CHUNK_ROWS):
                table[start:stop, : X.shape[1]] = standardizer.rows(X, start, stop, device)
            if extra is not None:
                table[:, X.shape[1] :] = extra
            self._table = table
            self._host = None
        else:
            self._table = None
            self._host = sp.csr_matrix(X) if sp.issparse(X) else X
            self._standardizer = standardizer

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        if self._table is not None:
            return self._table[index]
        idx = index.detach().cpu().numpy()
        rows = self._standardizer.apply(self._host[idx], self.device)
        if self._extra is not None:
            rows = torch.cat([rows, self._extra[index]], dim=1)
        return rows


def random_rows(n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``size`` distinct random row indices (all rows, shuffled, if ``size >= n``)."""
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return perm[: min(size, n)].to(device)


def take_rows(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``y[index]`` (any index shape) by ``index_select``, whose gradient (``index_add_``) sums
    repeated rows in a fixed order; plain indexing's does not on several CPU threads, so two
    runs with the same seed would differ."""
    return torch.index_select(y, 0, index.reshape(-1)).view(*index.shape, *y.shape[1:])


def chunks(n: int, chunk_size: int):
    """``(start, stop)`` pairs covering ``range(n)``."""
    for start in range(0, n, chunk_size):
        yield start, min(n, start + chunk_size)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float32, copy=False)
