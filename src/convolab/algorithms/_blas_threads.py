"""NumPy's BLAS held to one thread while the pool's threads run products of their own.

OpenBLAS (NumPy's BLAS in its wheels) hands a large product to its own worker
threads, which convolab cannot steer: on this project's VM the kernel often
puts a woken worker on the caller's CPU, and a sub-millisecond layer then runs
at one thread's speed plus the handoff (docs/compiled.md, "One-thread products
on the pool"). Where a pass splits its products among the pool's threads
itself (gemm's 1x1 kernels, :mod:`.gemm`), it holds the BLAS to one thread for
the call, so that each product stays on the pool thread that asked for it.

The BLAS's thread count is one setting for the whole process. While any call
holds it (:func:`one_blas_thread`), the BLAS runs one thread for every caller;
the last call to leave restores the count it found. The count is read and set
through OpenBLAS's own functions, found in the library NumPy's wheel ships
(``numpy.libs``); another BLAS (MKL, Accelerate, a system OpenBLAS) is not
controlled, and :func:`blas_thread_control` says so, so the passes keep their
products on the BLAS's threads there.
"""

from __future__ import annotations

import glob
import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

__all__ = ["blas_thread_control", "one_blas_thread"]

#: The set and get functions' names in OpenBLAS builds: the 64-bit-integer build NumPy's wheels ship (with the
#: ``scipy_`` prefix since scipy-openblas 0.3.27), then older and plain builds.
_FUNCTION_NAMES = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)

_control: tuple[Callable[[int], None], Callable[[], int]] | str | None = None
_lock = threading.Lock()
#: Calls holding the BLAS at one thread, and the count the first of them found.
_holders = 0
_restore_to = 1


def _find_control() -> tuple[Callable[[int], None], Callable[[], int]] | str:
    """OpenBLAS's set and get functions for its thread count, or why they are not available."""
    libraries = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    found = sorted(glob.glob(os.path.join(libraries, "*openblas*")))
    if not found:
        return f"NumPy's BLAS is not the OpenBLAS of its wheel (no OpenBLAS in {libraries})"
    try:
        import ctypes  # NumPy has imported it already

        library = ctypes.CDLL(found[0])  # the copy NumPy loaded: the same path gives the same handle
    except OSError as error:
        return f"NumPy's OpenBLAS could not be opened: {error}"
    for set_name, get_name in _FUNCTION_NAMES:
        setter, getter = getattr(library, set_name, None), getattr(library, get_name, None)
        if setter is not None and getter is not None:
            setter.restype, getter.restype = None, ctypes.c_int
            setter.argtypes, getter.argtypes = [ctypes.c_int], []
            if getter() >= 1:
                return setter, getter
    return "NumPy's OpenBLAS has no function to set its thread count"


def blas_thread_control() -> str | None:
    """None where :func:`one_blas_thread` can hold NumPy's BLAS to one thread, else why not (found once)."""
    global _control
    if _control is None:
        with _lock:
            if _control is None:
                _control = _find_control()
    return _control if isinstance(_control, str) else None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """NumPy's BLAS on one thread inside the block, for every thread of the process; the count it had is
    restored when the last block that holds it ends. Nothing changes where :func:`blas_thread_control` says
    why not."""
    global _holders, _restore_to
    if blas_thread_control() is not None:
        yield
        return
    setter, getter = _control  # type: ignore[misc]
    with _lock:
        if _holders == 0:
            _restore_to = getter()
            if _restore_to != 1:
                setter(1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _restore_to != 1:
                setter(_restore_to)


def _after_fork_in_child() -> None:
    """In a forked child: the calls that held the BLAS do not exist there, so the count they found comes back."""
    global _holders, _lock
    _lock = threading.Lock()  # it may have been copied held
    if _holders and not isinstance(_control, str) and _control is not None and _restore_to != 1:
        _control[0](_restore_to)
    _holders = 0


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
