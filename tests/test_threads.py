"""The thread policy: ``n_jobs`` threads for torch, BLAS/OpenMP and numba inside a call, restored after."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from settings import QUICK
from threadpoolctl import threadpool_info, threadpool_limits

from scnumap import NUMAP, GrEASE
from scnumap.core import numap as numap_module
from scnumap.core import threads
from scnumap.core.model_io import model_from_dict, model_to_dict
from scnumap.core.threads import limited_threads, resolve_n_jobs

numba = pytest.importorskip("numba")


def pools() -> dict:
    """Thread count of every BLAS/OpenMP library threadpoolctl sees, by file."""
    return {info["filepath"]: info["num_threads"] for info in threadpool_info()}


def state() -> tuple:
    return torch.get_num_threads(), numba.get_num_threads(), pools()


@pytest.fixture
def user_threads():
    """A user's own settings, all 2 threads (numba: at most its maximum); restored after the test."""
    torch_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(2)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(limits=2):
        yield state()
    numba.set_num_threads(numba_before)
    torch.set_num_threads(torch_before)


def assert_all_one() -> None:
    assert torch.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    counts = pools()
    assert counts, "threadpoolctl sees no BLAS/OpenMP library"
    assert set(counts.values()) == {1}, counts


def test_limited_threads_sets_every_pool_and_restores_it(user_threads):
    assert user_threads[0] == 2
    assert set(user_threads[2].values()) == {2}
    with limited_threads(1) as n:
        assert n == 1
        assert_all_one()
    assert state() == user_threads


def test_limited_threads_restores_after_an_exception(user_threads):
    def fail():
        with limited_threads(1):
            assert_all_one()
            raise RuntimeError("inside the block")

    with pytest.raises(RuntimeError, match="inside the block"):
        fail()
    assert state() == user_threads


def test_numba_is_clamped_to_its_maximum_and_restored(user_threads):
    most = int(numba.config.NUMBA_NUM_THREADS)
    with limited_threads(most + 3):
        assert torch.get_num_threads() == most + 3
        assert numba.get_num_threads() == most
    assert state() == user_threads


def test_none_in_a_fit_takes_the_free_cores_and_nested_calls_keep_them(user_threads, monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    assert resolve_n_jobs(None) == 1
    with limited_threads(None) as n:
        assert n == 1
        assert_all_one()
        monkeypatch.setattr(threads, "free_cores", lambda: pytest.fail("measured again inside a fit"))
        with limited_threads(None) as inner:  # e.g. GrEASE inside NUMAP, NUMAP inside tl.numap
            assert inner == 1
            assert_all_one()
        assert resolve_n_jobs(None) == 1
    assert state() == user_threads


def test_a_nested_block_with_the_same_count_sets_nothing_again(user_threads, monkeypatch):
    with limited_threads(1):
        monkeypatch.setattr("threadpoolctl.threadpool_limits", lambda **_: pytest.fail("pools set again"))
        with limited_threads(1) as inner:  # e.g. a projection's blocks inside tl.project
            assert inner == 1
            assert_all_one()
        assert_all_one()
        monkeypatch.undo()
        torch.set_num_threads(2)  # changed inside the block: a nested block sets the pools again
        with limited_threads(1):
            assert_all_one()
        assert torch.get_num_threads() == 2
    assert state() == user_threads


def test_none_in_a_transform_or_with_the_default_off_changes_nothing(user_threads, monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: pytest.fail("a transform must not measure"))
    with limited_threads(None, fit=False) as n:
        assert n == 2  # torch's current count
        assert state() == user_threads
    monkeypatch.setattr(threads, "DEFAULT_N_JOBS", None)
    assert resolve_n_jobs(None) == 2
    with limited_threads(None) as n:
        assert n == 2
        assert state() == user_threads
    monkeypatch.setattr(threads, "DEFAULT_N_JOBS", 1)
    with limited_threads(None):
        assert_all_one()
    assert state() == user_threads


@pytest.mark.parametrize(
    ("busy", "idle", "expected"),
    [(0, 200, 2), (100, 100, 1), (60, 140, 1), (190, 10, 1), (0, 0, 2)],
)
def test_free_cores_counts_the_idle_share_of_the_machine(monkeypatch, busy, idle, expected):
    """Two CPUs; jiffies over the sample: all idle → 2, one busy → 1, never below 1."""
    samples = iter([(1000, 1000, 2), (1000 + busy, 1000 + idle, 2)])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "_own_ticks", lambda: 50.0)  # this process idle
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.free_cores(seconds=0) == expected


@pytest.mark.parametrize(("busy", "own", "expected"), [(100, 100, 2), (100, 60, 2), (200, 100, 1), (100, 0, 1)])
def test_free_cores_counts_this_processes_own_load_as_free(monkeypatch, busy, own, expected):
    """Two CPUs, 200 jiffies: the busy time of this process's own (spinning) threads is not another job's."""
    samples = iter([(1000, 1000, 2), (1000 + busy, 1000 + 200 - busy, 2)])
    ticks = iter([500.0, 500.0 + own])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "_own_ticks", lambda: next(ticks))
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.free_cores(seconds=0) == expected


def test_own_ticks_grow_with_this_processes_work():
    start = threads._own_ticks()
    deadline = time.perf_counter() + 0.2
    while time.perf_counter() < deadline:
        pass
    assert threads._own_ticks() - start >= 0.1 * os.sysconf("SC_CLK_TCK")


def test_free_cores_without_proc_stat_is_every_core(monkeypatch):
    def unreadable():
        raise OSError("no /proc/stat")

    monkeypatch.setattr(threads, "_cpu_times", unreadable)
    assert threads.free_cores(seconds=0) == threads.available_cores()
    if os.path.exists("/proc/stat"):
        monkeypatch.undo()
        assert 1 <= threads.free_cores(seconds=0.05) <= threads.available_cores()


def test_estimators_refuse_a_bad_n_jobs_before_fitting(blobs, fitted_blobs):
    with pytest.raises(ValueError, match=r"`n_jobs` must be .* got 0\."):
        NUMAP(n_jobs=0, **QUICK).fit(blobs)
    with pytest.raises(ValueError, match=r"`n_jobs` must be .* got 'all'\."):
        GrEASE(3, n_jobs="all").fit(blobs)
    model = model_from_dict(model_to_dict(fitted_blobs))
    model.n_jobs = -3
    with pytest.raises(ValueError, match=r"`n_jobs` must be .* got -3\."):
        model.transform(blobs)


def test_fit_and_transform_run_with_n_jobs_and_leave_user_settings(blobs, user_threads, monkeypatch):
    seen = {}
    train, separate = numap_module.train_embedding, GrEASE._separate

    def spy_train(*args, **kwargs):
        seen["train"] = state()
        return train(*args, **kwargs)

    def spy_separate(self, *args, **kwargs):
        seen["grease"] = state()
        return separate(self, *args, **kwargs)

    monkeypatch.setattr(numap_module, "train_embedding", spy_train)
    monkeypatch.setattr(GrEASE, "_separate", spy_separate)
    model = NUMAP(n_jobs=1, random_state=0, **QUICK).fit(blobs)
    for phase in ("train", "grease"):
        assert seen[phase][:2] == (1, 1), phase
        assert set(seen[phase][2].values()) == {1}, phase
    assert state() == user_threads
    assert model.grease_.n_jobs == 1

    embed = model.grease_.embed

    def spy_embed(x):
        seen["transform"] = state()
        return embed(x)

    monkeypatch.setattr(model.grease_, "embed", spy_embed)
    model.transform(blobs[:5])
    assert seen["transform"][:2] == (1, 1)
    model.grease_.transform(blobs[:5])  # GrEASE.transform: its own n_jobs
    assert seen["transform"][:2] == (1, 1)
    assert state() == user_threads


def test_n_jobs_gives_what_the_same_global_thread_count_gives(blobs, user_threads):
    """The docstring's promise: same seed, data, machine and thread count, same embedding;
    n_jobs=1 is the same as torch.set_num_threads(1)."""
    a = NUMAP(n_jobs=1, random_state=3, **QUICK).fit_transform(blobs)
    b = NUMAP(n_jobs=1, random_state=3, **QUICK).fit_transform(blobs)
    np.testing.assert_array_equal(a, b)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    with limited_threads(None, fit=False):  # nothing set: torch's current count, 1
        assert torch.get_num_threads() == 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threads, "DEFAULT_N_JOBS", None)  # n_jobs=None: torch's current count
        c = NUMAP(random_state=3, **QUICK).fit_transform(blobs)
    np.testing.assert_array_equal(a, c)


def test_loaded_model_has_no_n_jobs_and_transforms(blobs, fitted_blobs):
    model = model_from_dict(model_to_dict(fitted_blobs))
    assert model.n_jobs is None
    np.testing.assert_allclose(model.transform(blobs[:10]), fitted_blobs.transform(blobs[:10]), atol=1e-5)


def test_tl_numap_passes_n_jobs_and_restores(pbmc, user_threads, monkeypatch):
    import scnumap
    import scnumap.tl._numap as tl_numap

    fitted = []

    class Recording(NUMAP):
        def fit(self, *args, **kwargs):
            fitted.append((self, state()))
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(tl_numap, "NUMAP", Recording)
    ad = pbmc.copy()
    with pytest.raises(ValueError, match=r"`n_jobs` must be .* got 0\."):
        scnumap.tl.numap(ad, n_jobs=0, **QUICK)
    assert "X_numap" not in ad.obsm
    assert not fitted
    scnumap.tl.numap(ad, n_jobs=1, **QUICK)
    model, inside = fitted[0]
    assert model.n_jobs == 1
    assert inside[:2] == (1, 1)  # the whole call runs with n_jobs, not only the fit
    assert "n_jobs" not in ad.uns["numap"]["params"]  # a runtime setting
    assert state() == user_threads


def test_projection_threads_grow_with_the_work_up_to_torchs_count(user_threads, monkeypatch):
    monkeypatch.setattr(threads, "PAIRS_PER_THREAD", 1000)
    assert threads.projection_threads(10, 10) == 1  # 100 pairs: less than one thread's share
    assert threads.projection_threads(40, 40) == 2  # 1,600 pairs: rounded to two
    assert threads.projection_threads(10**6, 10**6) == 2  # never above torch's count
    torch.set_num_threads(1)
    assert threads.projection_threads(10**6, 10**6) == 1


def test_a_small_projection_runs_on_one_thread_and_restores_the_users(pbmc, user_threads, monkeypatch):
    import scnumap
    from scnumap.core.projection import BlockProjector

    ref = pbmc[:400].copy()
    query = pbmc[400:].copy()
    scnumap.tl.numap(ref, **QUICK)
    project = BlockProjector._project
    inside = []

    def recorded(self, *args, **kwargs):
        inside.append(state())
        return project(self, *args, **kwargs)

    monkeypatch.setattr(BlockProjector, "_project", recorded)
    scnumap.tl.project(query, ref, obs="bulk_labels", query_pca_in_reference_basis=True)
    assert inside
    assert all(s[0] == 1 and s[1] == 1 and set(s[2].values()) == {1} for s in inside)
    assert state() == user_threads
    monkeypatch.setattr(threads, "PAIRS_PER_THREAD", 1)  # every projection is large
    inside.clear()
    scnumap.tl.project(query, ref, obs="bulk_labels", query_pca_in_reference_basis=True)
    assert inside
    assert all(s[0] == 2 for s in inside)
    assert state() == user_threads
