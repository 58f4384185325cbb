"""Max pooling by compiled loops: the windows' maxima with their indices, and the gradient's scatter.

The NumPy engines of :mod:`._windows` make several whole-array passes per
kernel tap to find a window's first maximum (a running ``np.maximum``, then an
``np.equal`` and a product per tap for the index), and ``np.add.at`` scatters
the gradient one element at a time through a generic loop. One compiled pass
per plane does each (:mod:`convolab.algorithms._kernels_pool`): it reads every
tap once and writes each value and index once. The results are the same:
the same tie rule and NaN rule, and the same sums in the same order.

These run only where :func:`compiled_pool_missing` says they can (float32 and
float64, one to three spatial dimensions, Numba importable); the callers keep
their NumPy paths otherwise.
"""

from __future__ import annotations

from math import prod
from typing import Sequence

import numpy as np

from ..algorithms._compiled import kernels, numba_missing
from ..algorithms._kernel_layout import KERNEL_RANK, as_kernels_take, shape3, steps3
from ..algorithms._threads import run_jobs
from ._spec import PoolSpec

__all__ = ["compiled_pool_missing", "max_pool_compiled", "max_pool_table_compiled", "max_pool_grad_compiled",
           "scatter_compiled"]


def compiled_pool_missing(dtype: np.dtype, rank: int) -> str | None:
    """None if the compiled max pooling can run ``rank`` spatial dimensions in ``dtype``, else why not.

    Numba is imported (by :func:`convolab.algorithms._compiled.numba_missing`)
    only after the cheaper refusals.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        return f"compiled kernels run float32 and float64 only, not {dtype}"
    if rank > KERNEL_RANK:
        return f"compiled kernels run 1 to {KERNEL_RANK} spatial dimensions, not {rank}"
    return numba_missing()


def max_pool_compiled(x: np.ndarray, spec: PoolSpec,
                      with_indices: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`convolab.pooling.max._max_pool_forward` by :func:`._kernels_pool.max_pool_planes`.

    ``x`` ``(N, C, *in)``; returns values and (with ``with_indices``, else None)
    flat plane indices, both ``(N, C, *out)``. Planes are shared among threads.
    """
    planes = spec.batch * spec.channels
    source = as_kernels_take(x).reshape(shape3((1, planes, *spec.input_size))[1:])  # (P, D, H, W)
    out_shape = shape3((1, planes, *spec.output_size))[1:]  # (P, OD, OH, OW)
    values = np.empty(out_shape, dtype=source.dtype)
    indices = np.empty(out_shape if with_indices else (1, 1, 1, 1), dtype=np.int64)
    geometry = spec.geometry
    kernel3, stride3 = steps3(geometry.kernel_size), steps3(geometry.stride)
    dilation3, low3 = steps3(geometry.dilation), steps3(geometry.low, fill=0)
    run = kernels("pool").max_pool_planes
    run_jobs(planes, values.size * prod(geometry.kernel_size),
              lambda first, last, _: run(source, values, indices, with_indices, first, last, *kernel3, *stride3,
                                         *dilation3, *low3),
              lambda: None)
    return (values.reshape(spec.output_shape),
            indices.reshape(spec.output_shape) if with_indices else None)


def max_pool_table_compiled(planes: np.ndarray, gather: np.ndarray, spec: PoolSpec,
                            windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The gathered engine's values and indices (:func:`convolab.pooling.max._max_pool_gathered`) by
    :func:`._kernels_pool.max_pool_table`, one pass over the window table on the calling thread (the problems
    are small): ``planes`` ``(N*C, plane)``, ``gather`` the table's ``(taps, outputs)``; where no window reaches
    padding, the table's ``windows`` ``(outputs, taps)``, by :func:`._kernels_pool.max_pool_inner_windows`; and
    where 2x2 windows at stride 2 tile the planes, by :func:`._kernels_pool.max_pool_pairs`."""
    planes = as_kernels_take(planes)
    values = np.empty((planes.shape[0], gather.shape[1]), dtype=planes.dtype)
    indices = np.empty(values.shape, dtype=np.int64)
    if _tiling_pairs(spec):  # the common 2x2 pool at stride 2: pairs along the rows, then rows of pairs
        count, half = planes.shape[0], planes.size // 2
        kernels("pool").max_pool_pairs(planes.reshape(count, *spec.input_size), values.reshape(count, *spec.output_size),
                                       indices.reshape(count, *spec.output_size), np.empty(half, planes.dtype),
                                       np.empty(half, np.int64))
    elif windows is not None:  # no padding to skip: window by window
        kernels("pool").max_pool_inner_windows(planes, windows, values, indices)
    else:
        kernels("pool").max_pool_table(planes, gather, values, indices)
    return values.reshape(spec.output_shape), indices.reshape(spec.output_shape)


def _tiling_pairs(spec: PoolSpec) -> bool:
    """Whether :func:`._kernels_pool.max_pool_pairs` runs ``spec``: 2-d, 2x2 windows at stride 2, undilated and
    unpadded, tiling an input of even height and width (so ``ceil_mode`` adds no window)."""
    return (spec.rank == 2 and spec.kernel_size == (2, 2) and spec.stride == (2, 2) and spec.dilation == (1, 1)
            and spec.padding == ((0, 0), (0, 0)) and spec.input_size[0] % 2 == 0 and spec.input_size[1] % 2 == 0)


def max_pool_grad_compiled(x: np.ndarray, grad_output: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """The max pooling input gradient in one pass (:func:`._kernels_pool.max_pool_grad_planes`): each window's
    maximum found and its gradient added there, ``(N, C, *in)`` in ``grad_output``'s dtype; the same as the
    argmax then :func:`scatter_compiled`, without writing the values and indices."""
    planes = spec.batch * spec.channels
    source = as_kernels_take(x).reshape(shape3((1, planes, *spec.input_size))[1:])  # (P, D, H, W)
    grad = as_kernels_take(grad_output).reshape(shape3((1, planes, *spec.output_size))[1:])  # (P, OD, OH, OW)
    out = np.empty((planes, prod(spec.input_size)), dtype=grad.dtype)  # (P, V); each plane zeroed by the kernel
    geometry = spec.geometry
    steps = (*steps3(geometry.kernel_size), *steps3(geometry.stride), *steps3(geometry.dilation),
             *steps3(geometry.low, fill=0))
    width = grad.shape[-1]
    run = kernels("pool").max_pool_grad_planes
    run_jobs(planes, grad.size * prod(geometry.kernel_size),
              lambda first, last, scratch: run(source, grad, out, scratch[0], scratch[1], first, last, *steps),
              lambda: (np.empty(width, dtype=source.dtype), np.empty(width, dtype=np.int64)))
    return out.reshape(spec.input_shape)


def scatter_compiled(grad_output: np.ndarray, indices: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """:func:`._windows._scatter_to_planes` by :func:`._kernels_pool.scatter_planes`: ``(N, C, *input_size)``
    in ``grad_output``'s dtype. ``indices`` must be max pooling's own (each in its plane)."""
    batch, channels = indices.shape[:2]
    planes, plane, outputs = batch * channels, prod(input_size), prod(indices.shape[2:])
    grad = as_kernels_take(grad_output).reshape(planes, outputs)  # (P, O)
    flat_indices = as_kernels_take(indices).reshape(planes, outputs)  # (P, O)
    out = np.empty((planes, plane), dtype=grad.dtype)  # (P, V); each plane zeroed by the kernel
    run = kernels("pool").scatter_planes
    run_jobs(planes, grad.size, lambda first, last, _: run(grad, flat_indices, out, first, last), lambda: None)
    return out.reshape(batch, channels, *input_size)
