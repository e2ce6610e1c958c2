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


#: ``index_add_`` on the CPU switches to a parallel path above this many added values, and
#: on rows as narrow as an embedding's (2 values) that path is several times slower than the
#: serial one: adding 40,960 rows of 2 took 1.8 ms on 2 threads against 0.3 ms serially
#: (torch 2.13, measured alone). :func:`add_rows` adds in blocks below it.
SERIAL_ADD_VALUES = 32768


def take_rows(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``y[index]`` (any index shape) whose gradient sums repeated rows in a fixed order (by
    :func:`add_rows`); plain indexing's does not on several CPU threads, so two runs with the
    same seed would differ."""
    return _TakeRows.apply(y, index.reshape(-1)).view(*index.shape, *y.shape[1:])


def add_rows(out: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out.index_add_(0, index, values)``, on the CPU in blocks of at most
    :data:`SERIAL_ADD_VALUES` values (the same sums, in the same order); returns ``out``."""
    if out.device.type != "cpu":
        return out.index_add_(0, index, values)
    step = max(1, SERIAL_ADD_VALUES // max(1, values[:1].numel()))
    for start in range(0, index.shape[0], step):
        out.index_add_(0, index[start : start + step], values[start : start + step])
    return out


def bin_sums(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """``(n,)`` sums of ``values[k]`` into bin ``index[k]``, added in the order of ``index`` on
    the CPU (``scatter_add_`` of one axis runs on one thread: two runs agree to the bit; so
    does ``torch.bincount``, but it first scans the index for its range, which costs more
    than the sums on a step's sizes) and by ``index_add_`` elsewhere (deterministic where
    torch is asked to be)."""
    if values.device.type == "cpu":
        return values.new_zeros(n).scatter_add_(0, index, values)
    return values.new_zeros(n).index_add_(0, index, values)


class _TakeRows(torch.autograd.Function):
    """``index_select`` along rows whose backward adds the gradient with :func:`add_rows`."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.n_rows = y.shape[0]
        return torch.index_select(y, 0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.n_rows, *grad.shape[1:]))
        return add_rows(out, index, grad), None


def chunks(n: int, chunk_size: int):
    """``(start, stop)`` pairs covering ``range(n)``."""
    for start in range(0, n, chunk_size):
        yield start, min(n, start + chunk_size)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float32, copy=False)
