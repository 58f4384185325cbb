"""Scratch arrays kept between calls, one set per Python thread.

A scratch array lives only inside one call (the phase grid a compiled pass
copies its input into, for instance). NumPy allocates it with ``malloc``,
and glibc maps an allocation over its mmap threshold (at most 32 MiB) afresh
from the system and unmaps it when freed: every call then faults in (and
the kernel zeroes) every page of it, and the unmapping interrupts the other
threads to flush their address translations. On a 3-d layer's input
gradient, a 38 MiB grid, that system time measured 2-18 ms of a 28-53 ms
call at two threads, varying from call to call; with the allocation kept,
25-27 ms every call. Below the threshold the heap serves them, but glibc
gives the heap's top back to the system once more than its trim threshold
(twice the dynamic mmap threshold) is free there, so a call's few-MiB
temporaries, freed at the top, are faulted in again by the next call:
ResNet-18 layer3's Winograd tiles and products (15 MB each) 2,575 pages a
call (9.5 ms against 5.2 kept), layer4.0's strided 1x1 downsample 360 (2.3
ms against 1.2 at one thread), inception's 3 MiB phase grid about 800.

:func:`reused_empty` hands out such an array from a buffer the calling
thread keeps, by name, between calls. Arrays up to :data:`KEPT_BYTES` are
kept, and at most :data:`ALL_KEPT_BYTES` in all threads together (a Dask
worker's many threads each keep their own).
The array it returns is overwritten by the thread's next call for the same
name: a caller must neither return it nor keep it past its call.
"""

from __future__ import annotations

import threading
import weakref
from math import prod

import numpy as np

__all__ = ["reused_empty", "KEPT_BYTES", "ALL_KEPT_BYTES", "kept_bytes"]

#: The largest scratch array a thread keeps, per name: larger ones are allocated for their call alone.
KEPT_BYTES = 128 * 2**20
#: The most bytes all threads' buffers hold together: past it, a thread's array is allocated for its call alone.
ALL_KEPT_BYTES = 256 * 2**20

_kept = threading.local()
_held_lock = threading.Lock()
_held = [0]  # bytes of every thread's buffers now alive


def _release(size: int) -> None:
    """A kept buffer was freed (replaced, or its thread ended)."""
    with _held_lock:
        _held[0] -= size


def reused_empty(shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    """An uninitialized array of ``shape`` and ``dtype`` for use within the calling thread's current call: from
    the buffer the thread keeps for ``name`` where its size is at most :data:`KEPT_BYTES` (the buffer grows to
    the largest asked) and the threads' buffers stay within :data:`ALL_KEPT_BYTES`, else a new array.

    >>> a = reused_empty((64, 2**18), np.dtype(np.float32), "example")  # 64 MiB: kept
    >>> b = reused_empty((64, 2**18), np.dtype(np.float32), "example")
    >>> c = reused_empty((4, 4), np.dtype(np.float32), "example")  # smaller: the same buffer's start
    >>> np.shares_memory(a, b), np.shares_memory(a, c), reused_empty((2**26,), np.dtype(np.float32), "x").base
    (True, True, None)
    """
    dtype = np.dtype(dtype)
    size = prod(shape) * dtype.itemsize
    if size > KEPT_BYTES:
        return np.empty(shape, dtype=dtype)
    buffers = _kept.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size:
        buffers.pop(name, None)  # freed before the larger one is made: one of them held at a time
        del buffer
        with _held_lock:
            if _held[0] + size > ALL_KEPT_BYTES:
                return np.empty(shape, dtype=dtype)
            _held[0] += size
        buffer = buffers[name] = np.empty(size, dtype=np.uint8)  # NumPy aligns it for any dtype
        weakref.finalize(buffer, _release, size)
    return buffer[:size].view(dtype).reshape(shape)


def kept_bytes() -> int:
    """Bytes of the buffers the calling thread keeps."""
    return sum(buffer.size for buffer in _kept.__dict__.get("buffers", {}).values())
