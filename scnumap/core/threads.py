"""The estimators' thread policy: ``n_jobs`` threads for torch, BLAS/OpenMP and numba, restored after.

NUMAP trains on small tensors (batches of a few thousand rows, layers of about 128
units), so a CPU fit gains little from many threads and loses much when torch's pool,
the BLAS/OpenMP pools and numba's pool compete with each other or with other jobs for
the same cores. :func:`limited_threads` sets all of them to ``n_jobs`` for the duration
of one call and restores every previous value afterwards, also when the call raises:
the user's global settings are never changed.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import numpy as np
import torch

#: What ``n_jobs=None`` means. ``None``: torch's current thread count
#: (``torch.get_num_threads()``), and :func:`limited_threads` leaves every pool as it is
#: (the behaviour before ``n_jobs`` existed). An int (a positive count, or ``-1`` for all
#: cores) makes that the default of every estimator and of ``scnumap.tl.numap``.
DEFAULT_N_JOBS: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_n_jobs(n_jobs: int | None) -> int:
    """The thread count that ``n_jobs`` asks for.

    ``None`` follows :data:`DEFAULT_N_JOBS` (as shipped: torch's current thread count),
    ``-1`` means all available cores, a positive int itself.

    Raises
    ------
    ValueError
        For anything else (0, a value below -1, a bool, a float, a string), naming the value.
    """
    if n_jobs is None:
        return torch.get_num_threads() if DEFAULT_N_JOBS is None else resolve_n_jobs(DEFAULT_N_JOBS)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or not (n_jobs >= 1 or n_jobs == -1):
        raise ValueError(
            f"`n_jobs` must be a positive int (a number of threads), -1 (all cores) or None "
            f"(the default), got {n_jobs!r}. Pass e.g. n_jobs=1 or n_jobs=-1."
        )
    return available_cores() if n_jobs == -1 else int(n_jobs)


@contextlib.contextmanager
def limited_threads(n_jobs: int | None) -> Iterator[int]:
    """Run the ``with`` block with ``n_jobs`` threads in torch, BLAS/OpenMP and numba.

    Sets ``torch.set_num_threads``, numba's ``set_num_threads`` (when numba is
    installed; clamped to ``numba.config.NUMBA_NUM_THREADS``) and the BLAS and OpenMP
    pools of every loaded library (``threadpoolctl.threadpool_limits``), then restores
    each previous value on exit, also on an exception. ``n_jobs=None`` with
    :data:`DEFAULT_N_JOBS` ``None`` changes nothing. Yields the thread count in force.

    Raises
    ------
    ValueError
        For an ``n_jobs`` that :func:`resolve_n_jobs` refuses, before anything changes.
    """
    n = resolve_n_jobs(n_jobs)
    if n_jobs is None and DEFAULT_N_JOBS is None:
        yield n
        return
    with contextlib.ExitStack() as stack:
        before = torch.get_num_threads()
        stack.callback(torch.set_num_threads, before)
        torch.set_num_threads(n)
        numba = _numba()
        if numba is not None:  # before threadpoolctl: launching numba's layer may load an OpenMP library
            numba_before = numba.get_num_threads()
            stack.callback(numba.set_num_threads, numba_before)
            numba.set_num_threads(min(n, int(numba.config.NUMBA_NUM_THREADS)))
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(limits=n))
        yield n


def _numba():
    """The numba module, or ``None`` when numba is not installed."""
    try:
        import numba
    except ImportError:
        return None
    return numba


def threads_from_n_jobs(func):
    """Run ``func`` (a function with a keyword argument ``n_jobs``) inside :func:`limited_threads`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with limited_threads(kwargs.get("n_jobs")):
            return func(*args, **kwargs)

    return wrapper
