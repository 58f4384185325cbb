"""The thread pool the algorithms share, and running independent jobs on it.

NumPy and the BLAS release the GIL, so blocks of work that write disjoint parts
of an output run in parallel on plain threads. How many threads a call uses is
the caller's decision (:func:`convolab._settings.current_thread_count`, and
whether the work is large enough to be worth handing out).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

__all__ = ["in_parallel"]

Job = TypeVar("Job")

_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there, and its lock may have been copied held."""
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_pool)


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool: a new one when more workers are wanted than it has."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convolab")
            _pool_workers = workers
        return _pool


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
        run_job = make_worker()
        while True:
            with lock:
                job = next(pending, None)
            if job is None:
                return
            run_job(job)

    futures = [_thread_pool(threads - 1).submit(drain) for _ in range(threads - 1)]
    try:
        drain()
    finally:  # never return, or raise, while another thread still writes the outputs
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error
