"""The thread pool the algorithms share, running independent jobs on it, and keeping small products off the BLAS's
threads.

NumPy and the BLAS release the GIL, so blocks of work that write disjoint parts
of an output run in parallel on plain threads. How many threads a call uses is
the caller's decision (:func:`convolab._settings.current_thread_count`, and
whether the work is large enough to be worth handing out). The BLAS decides
its own threads per product, by size alone: :func:`small_matmul` keeps a small
product on the calling thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from .._settings import current_thread_count

__all__ = ["in_parallel", "run_jobs", "threads_for", "COMPILED_PARALLEL_WORK", "JOBS_PER_THREAD", "small_matmul",
           "BLAS_THREADED_MACS", "BLAS_THREADED_MACS_CONTIGUOUS", "SMALL_PRODUCT_MACS"]

Job = TypeVar("Job")

_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()
#: The pool threads' native ids, each with the caller's CPU and thread count it was last set for
#: (:func:`_keep_helpers_off`; None before the first time).
_helpers: dict[int, tuple[int, int] | None] = {}
_helpers_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there, and its lock may have been copied held."""
    global _pool, _pool_workers, _pool_lock, _helpers_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()
    _helpers.clear()
    _helpers_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_pool)


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool: a new one when more workers are wanted than it has."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convolab")
            _pool_workers = workers
            with _helpers_lock:  # the old pool's threads end, and their ids may be given to other threads
                _helpers.clear()
        return _pool


def _current_cpu() -> Callable[[], int] | None:
    """glibc's ``sched_getcpu`` (the CPU the calling thread runs on) where threads' CPUs can be set (Linux), else
    None."""
    global _getcpu
    if _getcpu is None:
        _getcpu = False
        if hasattr(os, "sched_setaffinity"):
            try:
                import ctypes  # NumPy has imported it already

                function = ctypes.PyDLL(None).sched_getcpu  # PyDLL: a call this short keeps the GIL
                function.restype, function.argtypes = ctypes.c_int, []
                if function() >= 0:
                    _getcpu = function
            except (OSError, AttributeError):  # a C library without sched_getcpu
                pass
    return _getcpu or None


_getcpu: Callable[[], int] | bool | None = None


def _keep_helpers_off(cpu: int, threads: int) -> None:
    """Let the pool's threads run anywhere the caller may, except on ``cpu``, the caller's CPU, where the
    caller may use at least ``threads`` CPUs (else anywhere it may).

    On this project's VM the kernel often wakes a pool thread on the CPU of
    the thread that woke it, and leaves it there: the call's two threads then
    share one core, and a sub-millisecond layer takes twice as long (in some
    runs of 60 calls, half of them; docs/compiled.md, "Two threads on one CPU").
    A thread's affinity is only changed when the caller has moved (or asks for
    another number of threads) since the last call, so most calls make no
    system call.
    """
    setting = (cpu, threads)
    with _helpers_lock:
        stale = [helper for helper, kept in _helpers.items() if kept != setting]
        if not stale:
            return
        allowed = os.sched_getaffinity(0)  # never empty, and with threads >= 2 CPUs never empty less one
        if threads <= len(allowed):
            allowed = allowed - {cpu}
        for helper in stale:
            try:
                os.sched_setaffinity(helper, allowed)
                _helpers[helper] = setting
            except OSError:  # the thread has ended, or the caller's affinity forbids it
                del _helpers[helper]


def _hold_caller(cpu: int, threads: int) -> bool:
    """Keep the calling thread on ``cpu`` for the call, where its helpers are kept off it
    (:func:`_keep_helpers_off`), until :func:`_release_caller` gives it the CPUs it may use now; whether it did.

    The helpers are moved off the CPU the caller is on when the call begins, but the kernel may move the caller
    during the call, onto the helpers' CPU: in the bench's blocks of a few hundred calls, ResNet-18 layer2.0's
    1x1 downsample then ran 1.3 ms a call for a whole block where 0.8 is usual, and ResNet-50 layer3's 1x1
    expansion 8.4 ms where 4.4 is (docs/compiled.md, "One-thread products on the pool").
    """
    try:
        allowed = os.sched_getaffinity(0)
        if threads > len(allowed) or cpu not in allowed:  # the helpers may run anywhere (_keep_helpers_off)
            return False
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    _holding.allowed = allowed
    return True


def _release_caller() -> None:
    """Let the calling thread run on the CPUs :func:`_hold_caller` found again."""
    allowed = _holding.__dict__.pop("allowed")
    try:
        os.sched_setaffinity(0, allowed)
    except OSError:  # the CPUs were taken away meanwhile (a container's limit changed): the kernel's choice stays
        pass


#: On a thread :func:`_hold_caller` holds, ``allowed``: the CPUs it gives back (empty elsewhere).
_holding = threading.local()


def _register_helper(pool: ThreadPoolExecutor) -> None:
    """Called on a thread of ``pool``: :func:`_keep_helpers_off` may move it from its next call on, unless the
    pool has been replaced (its threads end, and their ids may be given to other threads)."""
    me = threading.get_native_id()
    if me in _helpers:
        return
    with _pool_lock:
        if pool is not _pool:
            return
        with _helpers_lock:
            _helpers.setdefault(me, None)


def in_parallel(jobs: Sequence[Job], make_worker: Callable[[], Callable[[Job], None]], threads: int) -> None:
    """Run every job exactly once, on up to ``threads`` threads (never more than there are jobs).

    ``make_worker`` is called once per thread and returns the function that runs
    one job with that thread's scratch buffers. Jobs write disjoint parts of
    their outputs, so which thread runs which job changes no result. The
    calling thread works too; the others come from a shared pool.
    """
    threads = min(threads, len(jobs))
    if threads <= 1:
        run_job = make_worker()
        for job in jobs:
            run_job(job)
        return
    pending = iter(jobs)
    lock = threading.Lock()

    def drain() -> None:
        if steered and threading.get_ident() != caller:
            _register_helper(pool)
        run_job = make_worker()
        while True:
            with lock:
                job = next(pending, None)
            if job is None:
                return
            run_job(job)

    caller, getcpu, pool = threading.get_ident(), _current_cpu(), _thread_pool(threads - 1)
    # Not from a pool thread (a job of an outer call): its own CPUs are already narrowed, and the outer caller's
    # helpers are set from the outer call. Nor from a job the outer caller runs itself, which it holds on its CPU:
    # its CPUs are then that one alone, and the helpers were set for it.
    steered = getcpu is not None and threading.get_native_id() not in _helpers and not _holding.__dict__
    held = False
    if steered:
        cpu = getcpu()
        _keep_helpers_off(cpu, threads)
        held = _hold_caller(cpu, threads)
    futures = [pool.submit(drain) for _ in range(threads - 1)]
    try:
        drain()
    finally:  # never return, or raise, while another thread still writes the outputs
        # A helper that has not started finds no job left: cancelled, it is not waited for. On a loaded machine
        # (or inside a job of an outer call, whose pool thread is this one) it may not start for milliseconds.
        errors = [None if future.cancel() else future.exception() for future in futures]
        if held:
            _release_caller()
    for error in errors:
        if error is not None:
            raise error


#: Below this many multiply-adds a compiled pass runs on the calling thread alone (handing out jobs costs tens
#: of microseconds).
COMPILED_PARALLEL_WORK = 2**18
#: Jobs per thread: enough that threads finish together though jobs differ in length.
JOBS_PER_THREAD = 4


def threads_for(work: int) -> int:
    """Threads for a compiled pass of ``work`` multiply-adds: one below :data:`COMPILED_PARALLEL_WORK`, else
    :func:`convolab._settings.current_thread_count`."""
    return current_thread_count() if work >= COMPILED_PARALLEL_WORK else 1


def run_jobs(jobs: int, work: int, call: Callable[[int, int, Any], None], scratch: Callable[[], Any]) -> None:
    """``call(first, last, scratch)`` over jobs ``0:jobs`` in contiguous ranges, shared among
    :func:`threads_for` ``(work)`` threads.

    Each range is one call of a compiled kernel (which releases the GIL); each
    thread makes its own scratch once. With more than one thread the jobs are
    cut into :data:`JOBS_PER_THREAD` ranges a thread; with one, they are one call.
    """
    threads = min(threads_for(work), jobs)
    if threads <= 1:  # all on the calling thread in one call: a small layer's pass costs microseconds
        call(0, jobs, scratch())
        return
    pieces = min(jobs, threads * JOBS_PER_THREAD)
    ranges = [(jobs * i // pieces, jobs * (i + 1) // pieces) for i in range(pieces)]

    def make_worker() -> Callable[[tuple[int, int]], None]:
        own = scratch()
        return lambda piece: call(piece[0], piece[1], own)

    in_parallel(ranges, make_worker, threads)


#: OpenBLAS (NumPy's BLAS) hands a product of this many multiply-adds or more to its threads: measured with
#: 0.3.31 here, (32, 144) @ (144, 192) stayed on the calling thread and (32, 144) @ (144, 224), 1.03 million,
#: woke a worker; older releases split from 2**19. A woken worker then spins for about 50 ms waiting for more
#: work, holding a core: a small network's training step (the digits CNN's second convolution, 2.4 million)
#: woke it every step, and on a machine whose other core was busy the two threads fought over one core (an
#: epoch measured 1.1-2.3 s on two BLAS threads, against 0.12-0.34 s on one).
BLAS_THREADED_MACS = 2**19
#: ... where both operands are C-contiguous matrices (no transposed view): OpenBLAS 0.3.31's small-matrix
#: kernels keep such products on one thread up to about a million (slices of 7 * 2**17 measured on one thread
#: in float32 and float64: process CPU time equal to wall time), where a transposed operand woke a worker from
#: 0.66 million ((32, 512) @ (512, 40) with the right one a transposed view). The digits CNN's forward product
#: took 28 us as such slices, 34 below 2**19.
BLAS_THREADED_MACS_CONTIGUOUS = 7 * 2**17
#: Products below this many multiply-adds (about 40-80 us on one thread) run in pieces below
#: :data:`BLAS_THREADED_MACS`: a second BLAS thread would save at most half of that, measured 9 us of 45 on
#: (32, 144) @ (144, 512), while the pieces cost 0-10 us more than one call.
SMALL_PRODUCT_MACS = 2**22


def small_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for ``a`` ``(..., M, K)`` and ``b`` ``(..., K, N)``, on the calling thread where it
    is small.

    Below :data:`SMALL_PRODUCT_MACS` multiply-adds per matrix the product is
    taken in slices of the wider of ``M`` and ``N``, each below
    :data:`BLAS_THREADED_MACS` (:data:`BLAS_THREADED_MACS_CONTIGUOUS` where
    both operands are C-contiguous), so that the BLAS keeps every slice on the
    calling thread; each output's sum runs over the same ``K`` terms as in one product.

    >>> a, b = np.arange(6.).reshape(2, 3), np.arange(12.).reshape(3, 4)
    >>> bool((small_matmul(a, b) == a @ b).all())
    True
    >>> a, b, out = np.ones((2, 64, 64)), np.ones((2, 64, 200)), np.empty((2, 64, 200))  # 819,200: sliced
    >>> small_matmul(a, b, out=out) is out and bool((out == a @ b).all())
    True
    """
    if a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    rows, inner, columns = a.shape[-2], a.shape[-1], b.shape[-1]
    macs = rows * inner * columns
    if not BLAS_THREADED_MACS <= macs < SMALL_PRODUCT_MACS:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), rows, columns), np.result_type(a, b))
    contiguous = a.flags.c_contiguous and b.flags.c_contiguous
    most = (BLAS_THREADED_MACS_CONTIGUOUS if contiguous else BLAS_THREADED_MACS) - 1  # per slice
    if columns >= rows:  # slices of b's columns: each (M, K) @ (K, step) below the BLAS's threshold
        step = _slice_width(most // (rows * inner))
        for first in range(0, columns, step):
            np.matmul(a, b[..., first:first + step], out=out[..., first:first + step])
    else:  # slices of a's rows
        step = _slice_width(most // (inner * columns))
        for first in range(0, rows, step):
            np.matmul(a[..., first:first + step, :], b, out=out[..., first:first + step, :])
    return out


#: :func:`small_matmul`'s slices are whole multiples of this many rows or columns where that gives up at most a
#: quarter of the widest: the BLAS's kernels take 16 at a time, and a slice of 113 columns ran (32, 144) @
#: (144, 512) in 35 us where 112 took 32 (float64: 85 against 70 on (144, 32) @ (32, 512)); but 31 columns
#: took 30 us where 16 took 41.
SLICE_MULTIPLE = 16


def _slice_width(most: int) -> int:
    """The slice of at most ``most`` rows or columns (at least one): a multiple of :data:`SLICE_MULTIPLE` where
    one is at least three quarters of ``most``, else ``most``."""
    whole = most - most % SLICE_MULTIPLE
    return whole if 4 * whole >= 3 * most and whole > 0 else max(1, most)
