"""The estimators' thread policy: ``n_jobs`` threads for torch, BLAS/OpenMP and numba, restored after.

NUMAP trains on small tensors (batches of a few thousand rows, layers of about 128
units), so a CPU fit gains little from many threads and loses much when torch's pool,
the BLAS/OpenMP pools and numba's pool compete with each other or with other jobs for
the same cores. :func:`limited_threads` sets all of them to ``n_jobs`` for the duration
of one call and restores every previous value afterwards, also when the call raises:
the user's global settings are never changed.

The default (``n_jobs=None`` in a fit) counts the cores that other processes leave idle
(:func:`free_cores`, Linux): on an idle 2-core machine a fit ran 1.3–1.5× faster on two
threads than on one, while next to one other busy process two threads made the same fit
2.4–3× slower than one (``benchmarks/threads.py``; ``benchmarks/RESULTS.md``). Calls nested in a
fit (GrEASE inside NUMAP, NUMAP inside ``tl.numap``, transforms during training) keep the
count chosen by the outermost call instead of measuring again.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator

import numpy as np
import torch

#: What ``n_jobs=None`` means in a fit: ``"auto"`` (:func:`free_cores`), an int (a
#: positive count, or ``-1`` for all cores), or ``None`` (torch's current thread count,
#: every pool left as it is: the behaviour before ``n_jobs`` existed). Transforms with
#: ``n_jobs=None`` never change a pool.
DEFAULT_N_JOBS: int | str | None = "auto"

#: Seconds over which :func:`free_cores` samples the machine's idle time. ``/proc/stat``
#: counts each core's time in ticks of 1/100 s: 0.05 s give 5 ticks per core, enough to
#: tell an idle core from one that another job keeps busy (a fit pays the wait once).
SAMPLE_SECONDS = 0.05

#: Query × reference cell pairs per thread of a projection (:func:`projection_threads`).
#: On an idle 2-core CPU (``benchmarks/projection_threads.py``, ``tl.project`` with labels,
#: warm, mean of 20 calls; exact reference searches by :mod:`~scnumap.core.exact_search`)
#: one thread took 0.42× the time of two on pbmc68k_reduced (211 × 489 cells), 0.63× on
#: pbmc4k (1,282 × 2,989), the same on CBMC (2,586 × 6,031) and at 2,000 × 10,000 synthetic
#: cells; two were faster from 4,000 × 10,000 (4e7 pairs: 1.21×) on.
PAIRS_PER_THREAD = 25_000_000

#: Thread counts in force, outermost first (calls nested in a fit reuse the last one).
_ACTIVE: list[int] = []


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def free_cores(seconds: float = SAMPLE_SECONDS) -> int:
    """Cores that other processes leave idle, at least 1.

    The share of CPU time over ``seconds`` (``/proc/stat``) that was idle or used by this
    process itself, times the machine's cores, rounded, at most :func:`available_cores`.
    This process's own time counts as free: right after a torch call its OpenMP threads
    spin for a moment, which is no other job's load (measured: a fit just after another
    one was given 1 thread of 2 on an idle machine). Where ``/proc/stat`` cannot be read
    (not Linux), :func:`available_cores`.
    """
    try:
        before, own_before = _cpu_times(), _own_ticks()
        time.sleep(seconds)
        after, own_after = _cpu_times(), _own_ticks()
    except (OSError, ValueError, IndexError):
        return available_cores()
    busy, idle = after[0] - before[0], after[1] - before[1]
    if busy + idle <= 0:
        return available_cores()
    own = min(max(0.0, own_after - own_before), busy)
    return max(1, min(available_cores(), round(after[2] * (idle + own) / (busy + idle))))


def _own_ticks() -> float:
    """CPU time of this process (all its threads) so far, in ``/proc/stat`` ticks."""
    times = os.times()
    return (times.user + times.system) * os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[int, int, int]:
    """Busy and idle jiffies of all CPUs together, and the number of CPUs (``/proc/stat``)."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    values = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    n_cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    idle = values[3] + values[4]
    return sum(values) - idle, idle, n_cpus


def projection_threads(n_queries: int, n_reference: int) -> int:
    """Threads for projecting ``n_queries`` cells onto ``n_reference`` reference cells.

    One thread per :data:`PAIRS_PER_THREAD` query × reference pairs (rounded, at least one),
    at most torch's current count. A projection alternates short torch, BLAS, scikit-learn
    and numba calls, and after each call a pool's threads keep a core busy for a moment
    waiting for more work (OpenMP's spin), which the next library's threads then wait for:
    on a small query a second thread costs more than it gains.
    """
    wanted = max(1, round(int(n_queries) * int(n_reference) / PAIRS_PER_THREAD))
    return min(wanted, torch.get_num_threads())


def resolve_n_jobs(n_jobs: int | None) -> int:
    """The thread count that ``n_jobs`` asks for.

    ``None`` inside a :func:`limited_threads` block is the count in force; else it follows
    :data:`DEFAULT_N_JOBS` (as shipped: :func:`free_cores`). ``-1`` means all available
    cores, a positive int itself.

    Raises
    ------
    ValueError
        For anything else (0, a value below -1, a bool, a float, a string), naming the value.
    """
    if n_jobs is None:
        if _ACTIVE:
            return _ACTIVE[-1]
        if DEFAULT_N_JOBS is None:
            return torch.get_num_threads()
        if isinstance(DEFAULT_N_JOBS, str) and DEFAULT_N_JOBS == "auto":
            return free_cores()
        return resolve_n_jobs(DEFAULT_N_JOBS)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or not (n_jobs >= 1 or n_jobs == -1):
        raise ValueError(
            f"`n_jobs` must be a positive int (a number of threads), -1 (all cores) or None "
            f"(the default), got {n_jobs!r}. Pass e.g. n_jobs=1 or n_jobs=-1."
        )
    return available_cores() if n_jobs == -1 else int(n_jobs)


@contextlib.contextmanager
def limited_threads(n_jobs: int | None, *, fit: bool = True) -> Iterator[int]:
    """Run the ``with`` block with ``n_jobs`` threads in torch, BLAS/OpenMP and numba.

    Sets ``torch.set_num_threads``, numba's ``set_num_threads`` (when numba is
    installed; clamped to ``numba.config.NUMBA_NUM_THREADS``) and the BLAS and OpenMP
    pools of every loaded library (``threadpoolctl.threadpool_limits``), then restores
    each previous value on exit, also on an exception. ``n_jobs=None`` inside another
    such block keeps its count; otherwise it follows :data:`DEFAULT_N_JOBS` for a fit and
    changes nothing for a transform (``fit=False``: milliseconds must not pay for a
    measurement). Inside a block that set the same count (and torch still has it), nothing
    is set again. Yields the thread count in force.

    Raises
    ------
    ValueError
        For an ``n_jobs`` that :func:`resolve_n_jobs` refuses, before anything changes.
    """
    if n_jobs is None and (_ACTIVE or not fit or DEFAULT_N_JOBS is None):
        yield _ACTIVE[-1] if _ACTIVE else torch.get_num_threads()
        return
    n = resolve_n_jobs(n_jobs)
    if _ACTIVE and _ACTIVE[-1] == n and torch.get_num_threads() == n:
        # an enclosing block set every pool to n already: threadpoolctl's scan of the loaded
        # libraries costs about 4 ms, some 5 % of a projection of about a thousand cells
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
        _ACTIVE.append(n)
        stack.callback(_ACTIVE.pop)
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
