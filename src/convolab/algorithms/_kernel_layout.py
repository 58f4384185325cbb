"""The array layout every compiled kernel takes: three spatial axes, C-contiguous, native, writeable.

The kernels (the ``_kernels_*`` modules, compiled by Numba) are written once
for three spatial axes; a 1-d or 2-d problem comes to them with leading unit
axes (:func:`shape3`, :func:`rank3`), and its per-axis strides, dilations and
paddings with a step of 1 or a padding of 0 on the axes it lacks
(:func:`steps3`). Their arrays are C-contiguous, in native byte order and
writeable (:func:`as_kernels_take`): Numba compiles a kernel once per array
type, and any other layout would be another type.

Every wrapper that calls a kernel lays its arrays out through these; the
job runner that shares a kernel's jobs among threads is in :mod:`._threads`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KERNEL_RANK", "shape3", "steps3", "as_kernels_take", "rank3", "filter_rows"]

#: Every kernel works on three spatial axes.
KERNEL_RANK = 3


def shape3(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(A, B, *spatial)`` as ``(A, B, 1, ..., *spatial)``: three spatial axes.

    >>> shape3((8, 3, 32, 32))
    (8, 3, 1, 32, 32)
    """
    return (*shape[:2], *(1,) * (KERNEL_RANK + 2 - len(shape)), *shape[2:])


def steps3(values: tuple[int, ...], fill: int = 1) -> tuple[int, ...]:
    """Per-axis strides, dilations (or, with ``fill=0``, paddings) as the kernels' three: a missing axis steps
    by 1 (is not padded).

    >>> steps3((2, 2)), steps3((3,), fill=0)
    ((1, 2, 2), (0, 0, 3))
    """
    return (fill,) * (KERNEL_RANK - len(values)) + tuple(values)


def as_kernels_take(a: np.ndarray) -> np.ndarray:
    """``a`` as the kernels' contract has it: C-contiguous, in native byte order, and writeable (Numba would
    compile every kernel again for a read-only array, so one is copied), a view where it already is."""
    flags = a.flags
    if flags.c_contiguous and flags.writeable and a.dtype.isnative:
        return a  # the usual case, without np.require's checks (1.2 us, a dozen calls in a small network's step)
    return np.require(a, dtype=a.dtype.newbyteorder("="), requirements=["C_CONTIGUOUS", "WRITEABLE"])


def rank3(a: np.ndarray) -> np.ndarray:
    """``a`` with three spatial axes (:func:`shape3`), laid out as the kernels take it."""
    return as_kernels_take(a).reshape(shape3(a.shape))


def filter_rows(kernel: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The kernel ``(C_out, C, *k)`` in ``dtype`` as the kernels take it: ``(C_out, T)``, one filter a row,
    its taps in C order.

    >>> filter_rows(np.ones((4, 2, 3, 3), dtype=np.float64), np.dtype(np.float32)).shape
    (4, 18)
    """
    return as_kernels_take(kernel.astype(dtype, copy=False)).reshape(kernel.shape[0], -1)
