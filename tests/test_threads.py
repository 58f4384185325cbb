"""``_threads``: ``in_parallel``'s hand-out of jobs, ``run_jobs``' ranges of them, and ``small_matmul``'s slices
(equal to one product).

Tolerance: each output sums the same ``K`` terms as ``np.matmul``'s, but the BLAS
may order a slice's sums differently from the whole product's (its blocking
follows the matrix sizes), so results agree to a few units in the last place
(rtol 1e-5 float32, 1e-12 float64).
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import _threads
from convolab.algorithms._threads import (BLAS_THREADED_MACS, COMPILED_PARALLEL_WORK, JOBS_PER_THREAD,
                                          SMALL_PRODUCT_MACS, in_parallel, run_jobs, small_matmul)

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}

# (batch shape of a, M, K, N): sliced by columns, by rows, batched, and outside the sliced range on both sides
SHAPES = [((), 32, 144, 512), ((1,), 32, 144, 512), ((1,), 144, 512, 32), ((2,), 120, 32, 512),
          ((), 32, 512, 144), ((), 16, 9, 64), ((), 300, 200, 100)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, m, k, n", SHAPES)
def test_equals_one_product(dtype, batch, m, k, n):
    rng = np.random.default_rng(m * n)
    a = rng.standard_normal((*batch, m, k)).astype(dtype)
    b = rng.standard_normal((*batch, k, n)).astype(dtype)
    expected = np.matmul(a, b)
    actual = small_matmul(a, b)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * k)


def test_sizes_cover_the_slicing():
    """The shapes above reach both branches and both sides of the sliced range."""
    macs = [m * k * n for _, m, k, n in SHAPES]
    assert min(macs) < BLAS_THREADED_MACS and max(macs) >= SMALL_PRODUCT_MACS
    assert any(BLAS_THREADED_MACS <= x < SMALL_PRODUCT_MACS for x in macs)


def test_transposed_views_and_mixed_dtypes():
    """Operands as the callers pass them (transposed views), and NumPy's type promotion."""
    rng = np.random.default_rng(0)
    columns = rng.standard_normal((1, 144, 512)).astype(np.float32)
    rows = rng.standard_normal((1, 32, 512))  # float64
    for a, b in ((rows.astype(np.float32), columns.transpose(0, 2, 1)), (columns, rows.transpose(0, 2, 1))):
        expected = np.matmul(a, b)
        actual = small_matmul(a, b)
        assert actual.dtype == expected.dtype
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-3)


def test_inputs_not_modified_and_vectors_passed_through():
    a, b = np.ones((64, 128)), np.ones((128, 100))
    before = a.copy(), b.copy()
    small_matmul(a, b)
    assert (a == before[0]).all() and (b == before[1]).all()
    np.testing.assert_array_equal(small_matmul(np.ones(3), np.ones((3, 2))), np.ones(3) @ np.ones((3, 2)))


def test_in_parallel_runs_every_job_once_even_nested():
    """A job that itself hands out jobs: with one pool thread busy running the outer job, the inner call's helper
    cannot start; it is cancelled rather than waited for, and the caller runs every job itself."""
    done, lock = [], threading.Lock()

    def inner_worker():
        def run(job):
            with lock:
                done.append(("inner", job))
        return run

    def outer_worker():
        def run(job):
            in_parallel([1, 2, 3], inner_worker, 2)
            with lock:
                done.append(("outer", job))
        return run

    in_parallel([1, 2], outer_worker, 2)
    assert sorted(done) == sorted([("inner", j) for j in (1, 2, 3)] * 2 + [("outer", 1), ("outer", 2)])


def test_in_parallel_raises_a_jobs_error():
    def worker():
        def run(job):
            if job == 3:
                raise ValueError("job 3")
        return run

    with pytest.raises(ValueError, match="job 3"):
        in_parallel(list(range(6)), worker, 2)


def _affinities_in_parallel(threads: int) -> tuple[set[int], list[set[int]]]:
    """``threads`` jobs that wait for each other, so that each thread runs one: the caller's CPUs, and each pool
    thread's."""
    all_started, caller, helpers = threading.Barrier(threads, timeout=10), threading.get_ident(), []
    seen = {}

    def worker():
        def run(job):
            all_started.wait()
            if threading.get_ident() == caller:
                seen["caller"] = os.sched_getaffinity(0)
            else:
                helpers.append(os.sched_getaffinity(0))
        return run

    in_parallel(list(range(threads)), worker, threads)
    return seen["caller"], helpers


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or _threads._current_cpu() is None, reason="needs Linux's affinities and two CPUs")
def test_pool_threads_are_kept_off_the_callers_cpu(monkeypatch):
    """The kernel may wake a pool thread on its caller's CPU and leave both there; the pool keeps its threads off
    the CPU the caller runs on (here a fixed one), within the CPUs the caller may use, and moves them again when
    the caller moves; not where the caller asks for more threads than it may use CPUs. The caller stays on its
    CPU for the call, and may use all of its CPUs again after it."""
    allowed = os.sched_getaffinity(0)
    first, second = sorted(allowed)[:2]
    more_than_cpus = len(allowed) + 1
    cpu = [first]
    # A pool of its own: other tests' pools may have threads that never ran a job here, and are not known.
    monkeypatch.setattr(_threads, "_pool", None)
    monkeypatch.setattr(_threads, "_pool_workers", 0)
    monkeypatch.setattr(_threads, "_helpers", {})
    monkeypatch.setattr(_threads, "_getcpu", lambda: cpu[0])
    try:
        _affinities_in_parallel(more_than_cpus)  # every pool thread starts, and is known from its first job on
        assert len(_threads._helpers) == more_than_cpus - 1
        caller, helpers = _affinities_in_parallel(2)
        assert helpers == [allowed - {first}] and caller == {first}
        assert os.sched_getaffinity(0) == allowed
        assert all(os.sched_getaffinity(helper) == allowed - {first} for helper in _threads._helpers)
        cpu[0] = second
        assert _affinities_in_parallel(2) == ({second}, [allowed - {second}])
        assert _affinities_in_parallel(more_than_cpus) == (allowed, [allowed] * (more_than_cpus - 1))
        cpu[0] = first
        assert _affinities_in_parallel(2) == ({first}, [allowed - {first}])
        assert os.sched_getaffinity(0) == allowed
        monkeypatch.setattr(_threads, "_getcpu", False)  # no sched_getcpu: the threads are left where they are
        assert _affinities_in_parallel(2) == (allowed, [allowed - {first}])
    finally:
        _threads._pool.shutdown(wait=True)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or _threads._current_cpu() is None, reason="needs Linux's affinities and two CPUs")
def test_the_caller_gets_its_cpus_back_when_a_job_fails(monkeypatch):
    allowed = os.sched_getaffinity(0)
    monkeypatch.setattr(_threads, "_getcpu", lambda: min(allowed))

    def worker():
        def run(job):
            assert os.sched_getaffinity(0) == {min(allowed)} or threading.get_ident() != caller
            if job == 1:
                raise ValueError("job 1")
        return run

    caller = threading.get_ident()
    with pytest.raises(ValueError, match="job 1"):
        in_parallel(list(range(4)), worker, 2)
    assert os.sched_getaffinity(0) == allowed


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or _threads._current_cpu() is None, reason="needs Linux's affinities and two CPUs")
def test_a_call_from_a_job_the_held_caller_runs_moves_no_thread(monkeypatch):
    """The caller runs jobs too, and a job may hand out jobs of its own; the caller is then held on its CPU, so the
    nested call must not steer the helpers by the caller's narrowed CPUs (nor hold it again)."""
    allowed = os.sched_getaffinity(0)
    monkeypatch.setattr(_threads, "_getcpu", lambda: min(allowed))
    caller, seen, both_started = threading.get_ident(), [], threading.Barrier(2, timeout=10)

    def inner_worker():
        return lambda job: None

    def outer_worker():
        def run(job):
            both_started.wait()  # each thread runs one outer job: the caller surely runs one
            if threading.get_ident() == caller:
                with monkeypatch.context() as inside:
                    inside.setattr(_threads, "_keep_helpers_off", lambda cpu, threads: seen.append("steered"))
                    inside.setattr(_threads, "_hold_caller", lambda cpu, threads: seen.append("held"))
                    in_parallel([1, 2, 3], inner_worker, 2)
                seen.append(os.sched_getaffinity(0))
        return run

    in_parallel([1, 2], outer_worker, 2)
    assert seen == [{min(allowed)}]  # the caller's job ran held, and its nested call moved nothing
    assert os.sched_getaffinity(0) == allowed and not _threads._holding.__dict__


def test_slices_are_whole_multiples_of_the_blas_kernels_width_where_that_costs_little():
    from convolab.algorithms._threads import SLICE_MULTIPLE, _slice_width
    assert [_slice_width(most) for most in (0, 1, 15, 16, 17, 31, 113, 199, 56)] == [1, 1, 15, 16, 16, 31, 112, 192, 48]
    assert SLICE_MULTIPLE == 16


@pytest.mark.parametrize("work, pieces", [(COMPILED_PARALLEL_WORK, 3 * JOBS_PER_THREAD),
                                         (COMPILED_PARALLEL_WORK - 1, 1)])
def test_run_jobs_covers_every_job_once_in_ranges(work, pieces):
    """Enough work: ``JOBS_PER_THREAD`` contiguous ranges a thread, each thread's scratch made once; too little:
    one range, on the calling thread."""
    ranges, scratch_threads = [], []

    def scratch():
        scratch_threads.append(threading.get_ident())
        return np.empty(1)

    with cl.thread_count(3):
        run_jobs(50, work, lambda first, last, own: ranges.append((first, last)), scratch)
    ranges.sort()
    assert len(ranges) == pieces and ranges[0][0] == 0 and ranges[-1][1] == 50
    assert all(previous[1] == following[0] for previous, following in zip(ranges, ranges[1:]))
    assert 1 <= len(scratch_threads) == len(set(scratch_threads)) <= (3 if pieces > 1 else 1)
