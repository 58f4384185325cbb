"""Adaptive pooling: average and max pooling to a fixed output size, whatever the input size.

Window ``o`` of an axis spans ``[floor(o * in / out), ceil((o + 1) * in / out))``
(:func:`_adaptive_bounds`). Adaptive windows are not equally spaced, so no
single strided view describes them; they are reduced one spatial axis at a
time: as an average pooling where the windows tile the axis, else by a 0/1
window matrix (average) or from a table of window positions (maximum; a box's
row-major-first argmax is separable too, and follows the tie rule of
:mod:`convolab.pooling`).
"""

from __future__ import annotations

from functools import lru_cache, reduce
from math import prod
from typing import Any, Sequence

import numpy as np

from .._errors import fail
from .._checks import check_flag, normalize_ints
from .._fixed_rank import fixed_rank_ops
from .._geometry import WindowGeometry
from ._docs import _ADAPTIVE_AVG_WORDS, _ADAPTIVE_DOC, _ADAPTIVE_MAX_WORDS
from ._spec import _batch_input, _batched_grad_output, _rank_from_tuple, _split_values_cotangent, _unbatch
from ._windows import _keep_max, _plane_strides, _reduce_axis, _scatter_to_planes
from .average import _as_divisor, _average_dtypes

__all__ = [
    "adaptive_avg_pool", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
]


def _adaptive_bounds(input_size: int, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Window ``o`` spans ``[floor(o * in / out), ceil((o + 1) * in / out))``, in integer arithmetic.

    >>> _adaptive_bounds(5, 3)
    (array([0, 1, 3]), array([2, 4, 5]))
    """
    o = np.arange(output_size)
    return (o * input_size) // output_size, -((-(o + 1) * input_size) // output_size)


def _adaptive_table(input_size: int, output_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``(out, width)`` of each window's taps, their validity, and each window's length.

    Windows are padded to the widest, ``width``; the extra taps repeat the
    window's last position (so any gather stays in range) and are marked invalid.
    """
    start, end = _adaptive_bounds(input_size, output_size)
    length = end - start  # (out,), each >= 1
    width = int(length.max(initial=0))
    position = start[:, None] + np.arange(width)[None, :]  # (out, width)
    valid = position < end[:, None]
    return np.minimum(position, end[:, None] - 1), valid, length


def _normalize_output_size(op: str, output_size: Any, rank: int, input_size: Sequence[int]) -> tuple[int, ...]:
    """An int or ``rank`` entries, each an int ``>= 0`` or ``None`` (keep that input size)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == rank:
        output_size = tuple(size if item is None else item for item, size in zip(output_size, input_size))
    return normalize_ints(output_size, rank, "output_size", op, minimum=0)


def _adaptive_args(op: str, rank: int | None, input: Any, output_size: Any) -> tuple[np.ndarray, bool, tuple[int, ...]]:
    rank = _rank_from_tuple(op, "output_size", output_size, rank)
    x, batched = _batch_input(op, input, rank)
    input_size = x.shape[2:]
    for dim, size in enumerate(input_size):
        if size == 0:
            fail(ValueError, op, "input", f"shape {input.shape} (spatial dimension {dim} is empty)",
                 "must have non-empty spatial dimensions")
    return x, batched, _normalize_output_size(op, output_size, rank, input_size)


#: Up to this many outputs along an axis, an adaptive average is a dense 0/1 matrix product
#: (one BLAS call, ``in * out`` multiply-adds per line); beyond, a sparse one (``in``-ish per line).
_DENSE_ADAPTIVE_OUTPUTS = 64


@lru_cache(maxsize=256)
def _adaptive_matrix(input_size: int, output_size: int, dtype: np.dtype) -> Any:
    """``(out, in)``: 1 where input ``i`` is in window ``o``; a read-only array, or scipy.sparse CSR if large.

    >>> _adaptive_matrix(5, 3, np.dtype(np.float64))
    array([[1., 1., 0., 0., 0.],
           [0., 1., 1., 1., 0.],
           [0., 0., 0., 1., 1.]])
    """
    start, end = _adaptive_bounds(input_size, output_size)
    position = np.arange(input_size)
    member = (position >= start[:, None]) & (position < end[:, None])  # (out, in)
    if output_size > _DENSE_ADAPTIVE_OUTPUTS:
        import scipy.sparse

        return scipy.sparse.csr_array(member.astype(dtype))
    matrix = member.astype(dtype)
    matrix.setflags(write=False)  # shared between calls
    return matrix


def _along_axis(y: np.ndarray, matrix: Any, axis: int) -> np.ndarray:
    """``y`` with its ``axis`` (length ``in``) replaced by ``matrix @ y`` along it (length ``out``)."""
    moved = np.moveaxis(y, axis, -1)  # (..., in); the reshape copies unless axis is last
    lines = moved.reshape(prod(moved.shape[:-1]), moved.shape[-1])  # (lines, in)
    if isinstance(matrix, np.ndarray):
        with np.errstate(invalid="ignore"):
            result = lines @ matrix.T  # (lines, out)
        if not np.isfinite(result).all():
            # An inf or NaN of y makes its own windows non-finite, but the dense product also multiplies
            # it by the 0s of every other window (0 * inf is NaN): redo it with the 1s alone.
            import scipy.sparse

            result = np.asarray((scipy.sparse.csr_array(matrix) @ lines.T).T)
    else:
        result = np.asarray((matrix @ lines.T).T)
    return np.moveaxis(result.reshape(*moved.shape[:-1], matrix.shape[0]), -1, axis)


@lru_cache(maxsize=256)
def _adaptive_areas(input_size: tuple[int, ...], output_size: tuple[int, ...]) -> Any:
    """The number of inputs in each window (the product of its lengths): an int if all equal, else ``(*out)``."""
    lengths = [np.subtract(*reversed(_adaptive_bounds(size, out))) for size, out in zip(input_size, output_size)]
    areas = reduce(np.multiply.outer, lengths, np.array(1))
    if areas.size and np.all(areas == areas.flat[0]):
        return int(areas.flat[0])  # a Python int divides without promoting float32
    areas.setflags(write=False)  # shared between calls
    return areas


def _adaptive_avg_forward(x: np.ndarray, output_size: tuple[int, ...]) -> np.ndarray:
    """Separable: each spatial axis summed over its windows, then divided by the window's area.

    Per axis: equal sizes mean one-element windows (skipped). A leading axis
    whose windows tile it (``out`` divides ``in``) is an average pooling's sum,
    kernel and stride ``in // out``, over whole rows; these go first, as they
    need no copy. Then the last axis, through its 0/1 window matrix: one matrix
    product over contiguous lines (strided slices would read each cache line
    once per tap). Other leading axes take their matrix last, when the array is
    smallest. Global pooling (every output size 1) is one matrix-vector product.
    """
    accumulate, returned = _average_dtypes(x.dtype)
    y = x.astype(accumulate, copy=False)  # (N, C, *in), becoming (N, C, *out) axis by axis
    if all(out == 1 for out in output_size):
        planes = y.reshape(*y.shape[:2], prod(y.shape[2:]))  # (N, C, plane)
        y = (planes @ np.ones(planes.shape[-1], dtype=accumulate)).reshape(*y.shape[:2], *output_size)
    else:
        pooled = [axis for axis in range(2, x.ndim) if x.shape[axis] != output_size[axis - 2]]
        tiled = [axis for axis in pooled if axis < x.ndim - 1 and output_size[axis - 2]
                 and x.shape[axis] % output_size[axis - 2] == 0]
        for axis in tiled + [axis for axis in reversed(pooled) if axis not in tiled]:
            size, out = y.shape[axis], output_size[axis - 2]
            if axis in tiled:
                width = size // out  # tiling windows: an average pooling's, kernel = stride = width
                taps = WindowGeometry((size,), (width,), (width,), (1,), ((0, 0),)).axis_taps(0, whole_first=True)
                y = _reduce_axis(y, axis, taps, out, np.add, 0, accumulate)
            else:
                y = _along_axis(y, _adaptive_matrix(size, out, accumulate), axis)
    averaged = np.divide(y, _as_divisor(_adaptive_areas(x.shape[2:], output_size), accumulate))
    return averaged.astype(returned, copy=False)


def _adaptive_avg_backward(grad_output: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Transpose of the forward: divide by the area, then spread each axis back with its window matrix.

    Where ``out`` divides ``in`` the windows tile the axis, so the transpose is a
    repeat of each gradient over its window.
    """
    accumulate, _ = _average_dtypes(grad_output.dtype)
    areas = _as_divisor(_adaptive_areas(tuple(input_size), grad_output.shape[2:]), accumulate)
    g = np.divide(grad_output, areas, dtype=accumulate)  # (N, C, *out), becoming (N, C, *in)
    for axis in reversed(range(2, g.ndim)):
        size, out = input_size[axis - 2], g.shape[axis]
        if size == out:
            continue
        if out and size % out == 0:
            g = np.repeat(g, size // out, axis=axis)
        else:
            g = _along_axis(g, _adaptive_matrix(size, out, accumulate).T, axis)
    return np.ascontiguousarray(g, dtype=grad_output.dtype)


def _adaptive_max_forward(x: np.ndarray, output_size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Values and flat plane indices ``(N, C, *out)``, reducing the last spatial axis first.

    A box's row-major-first maximum is separable: reduce W keeping each row's
    first maximum and its index, then H keeping the first row whose maximum is
    largest, and so on outward, carrying the flat index of the chosen element.
    The tie and NaN rules are those of :func:`_keep_max`, as for ``max_pool``.
    """
    strides = _plane_strides(x.shape[2:])
    values, carried = x, None  # carried: flat-index contribution of the axes already reduced
    for axis in reversed(range(2, x.ndim)):
        out = output_size[axis - 2]
        position, valid, _ = _adaptive_table(x.shape[axis], out)
        trailing = values.ndim - axis - 1
        reduced_shape = values.shape[:axis] + (out,) + values.shape[axis + 1:]
        best = np.zeros(reduced_shape, dtype=x.dtype)
        best_index = np.full(reduced_shape, -1, dtype=np.int64)
        for tap in range(position.shape[1]):
            at = position[:, tap]  # (out,)
            candidate = np.take(values, at, axis=axis)
            index = at.reshape((out,) + (1,) * trailing) * strides[axis - 2]  # broadcasts like candidate
            if carried is not None:
                index = index + np.take(carried, at, axis=axis)
            tap_valid = valid[:, tap].reshape((out,) + (1,) * trailing)
            _keep_max(best, best_index, candidate, index, tap_valid)
        values, carried = best, best_index
    return values, carried



def _adaptive_avg_pool_op(op: str, rank: int | None, input: np.ndarray, output_size: Any) -> np.ndarray:
    """The adaptive average pooling ops (``op`` for ``rank`` spatial dimensions, ``None``: any)."""
    x, batched, size = _adaptive_args(op, rank, input, output_size)
    return _unbatch(batched, _adaptive_avg_forward(x, size))[0]


def _adaptive_avg_pool_vjp(op: str, rank: int | None, input: np.ndarray, output_size: Any) -> tuple[np.ndarray, Any]:
    """:func:`_adaptive_avg_pool_op`'s output and pullback."""
    # Linear and separable: per axis, out[o] = sum over window o of x / length[o];
    # the pullback applies each axis' transpose (_adaptive_avg_backward).
    x, batched, size = _adaptive_args(op, rank, input, output_size)
    output = _adaptive_avg_forward(x, size)

    def pullback(grad_output: np.ndarray) -> tuple[np.ndarray]:
        batched_grad = _batched_grad_output(op, grad_output, output.shape[0 if batched else 1:], batched)
        return _unbatch(batched, _adaptive_avg_backward(batched_grad, x.shape[2:]))

    return _unbatch(batched, output)[0], pullback


def _adaptive_max(op: str, rank: int | None, input: Any, output_size: Any,
                  return_indices: Any) -> tuple[np.ndarray, np.ndarray, bool, bool, tuple[int, ...]]:
    """Batched values and indices, whether batched, the checked flag, and the input's spatial size."""
    return_indices = check_flag(return_indices, "return_indices", op)
    x, batched, size = _adaptive_args(op, rank, input, output_size)
    values, indices = _adaptive_max_forward(x, size)
    return values, indices, batched, return_indices, x.shape[2:]


def _adaptive_max_pool_op(op: str, rank: int | None, input: np.ndarray, output_size: Any,
                          return_indices: bool = False) -> Any:
    """The adaptive max pooling ops (``op`` for ``rank`` spatial dimensions, ``None``: any)."""
    values, indices, batched, return_indices, _ = _adaptive_max(op, rank, input, output_size, return_indices)
    values, indices = _unbatch(batched, values, indices)
    return (values, indices) if return_indices else values


def _adaptive_max_pool_vjp(op: str, rank: int | None, input: np.ndarray, output_size: Any,
                           return_indices: bool = False) -> tuple[Any, Any]:
    """:func:`_adaptive_max_pool_op`'s output and pullback."""
    # As for max_pool: the pullback adds grad_output[o] at the selected index[o].
    values, indices, batched, return_indices, input_size = _adaptive_max(op, rank, input, output_size,
                                                                         return_indices)

    def pullback(grad_output: Any) -> tuple[np.ndarray]:
        if return_indices:
            grad_output = _split_values_cotangent(op, grad_output)
        batched_grad = _batched_grad_output(op, grad_output, values.shape[0 if batched else 1:], batched)
        return _unbatch(batched, _scatter_to_planes(batched_grad, indices, input_size))

    caller_values, caller_indices = _unbatch(batched, values, indices)
    return ((caller_values, caller_indices) if return_indices else caller_values), pullback


adaptive_avg_pool, adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d = fixed_rank_ops(
    _adaptive_avg_pool_op, "adaptive_avg_pool", _ADAPTIVE_DOC, words=_ADAPTIVE_AVG_WORDS, vjp=_adaptive_avg_pool_vjp)
adaptive_max_pool, adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d = fixed_rank_ops(
    _adaptive_max_pool_op, "adaptive_max_pool", _ADAPTIVE_DOC, words=_ADAPTIVE_MAX_WORDS, vjp=_adaptive_max_pool_vjp)
