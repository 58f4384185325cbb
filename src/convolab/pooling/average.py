"""Average pooling: each window's sum over PyTorch's divisor, and its transpose as the input gradient.

The window sums come from the separable reduction of
:mod:`convolab.pooling._windows` (padding adds nothing) and the gradient from
its transpose; the references on the window view of the zero-padded input sit
beside them. Integers are averaged in float64 and float16 in float32
(:func:`_average_dtypes`, shared with adaptive average pooling).
"""

from __future__ import annotations

from functools import lru_cache, reduce
from typing import Any

import numpy as np

from .._checks import check_divisor, check_flag
from .._fixed_rank import fixed_rank_ops
from .._window import add_windows, pad, pad_adjoint, sliding_windows
from ._docs import _AVG_POOL_DOC, _AVG_POOL_INPUT_DOC, _AVG_POOL_INPUT_WORDS, _AVG_POOL_WORDS
from ._spec import PoolSpec, _batch_input, _batched_grad_output, _cached_pool_spec, _rank_from_tuple, _unbatch
from ._windows import _reduce_windows, _spread_windows

__all__ = [
    "avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "avg_pool_input", "avg_pool1d_input", "avg_pool2d_input", "avg_pool3d_input",
]


def _average_dtypes(dtype: np.dtype) -> tuple[np.dtype, np.dtype]:
    """``(accumulated in, returned as)`` for averaging: float16 in float32; integers in and as float64.

    Both in native byte order (ufuncs take none in ``dtype=``).
    """
    dtype = dtype.newbyteorder("=")
    if dtype.kind in "iu":
        return np.dtype(np.float64), np.dtype(np.float64)
    if dtype == np.float16:
        return np.dtype(np.float32), dtype
    return dtype, dtype


def _avg_divisor(spec: PoolSpec, count_include_pad: bool, divisor_override: int | None) -> Any:
    """What each window's sum is divided by: an int, or a read-only int array ``(*out)``.

    PyTorch's rule, per dimension, for the window starting at ``start = o * stride - pad``:
    it is clipped to ``end = min(start + k, in + pad)`` (so a ``ceil_mode`` window
    never counts cells past the nominal padding); ``count_include_pad`` counts
    ``end - start``, otherwise only the input cells ``min(end, in) - max(start, 0)``.
    The divisor is the product over dimensions; an int where every window has the same.
    """
    if divisor_override is not None:
        return divisor_override
    return _window_counts(spec.input_size, spec.kernel_size, spec.stride, tuple(low for low, _ in spec.padding),
                          spec.output_size, count_include_pad)


@lru_cache(maxsize=256)
def _window_counts(input_size: tuple[int, ...], kernel_size: tuple[int, ...], stride: tuple[int, ...],
                   low: tuple[int, ...], output_size: tuple[int, ...], count_include_pad: bool) -> Any:
    """:func:`_avg_divisor`'s counts for one geometry, cached."""
    counts = []
    for size, k, s, pad, out in zip(input_size, kernel_size, stride, low, output_size):
        start = np.arange(out) * s - pad  # (out,)
        end = np.minimum(start + k, size + pad)
        counts.append(end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0))
    divisor = reduce(np.multiply.outer, counts)  # (*out)
    if divisor.size and np.all(divisor == divisor.flat[0]):
        return int(divisor.flat[0])  # a Python int divides without promoting float32
    divisor.setflags(write=False)  # shared between calls
    return divisor


def _avg_args(op: str, rank: int | None, input: Any, kernel_size: Any, stride: Any, padding: Any,
              ceil_mode: Any, count_include_pad: Any, divisor_override: Any) -> tuple[np.ndarray, PoolSpec, Any]:
    """Batched input, spec and divisor of an average pooling."""
    rank = _rank_from_tuple(op, "kernel_size", kernel_size, rank)
    x, _ = _batch_input(op, input, rank)
    spec = _cached_pool_spec(input.shape, kernel_size, stride, padding, 1, ceil_mode, op, rank)
    count_include_pad = check_flag(count_include_pad, "count_include_pad", op)
    divisor = _avg_divisor(spec, count_include_pad, check_divisor(op, divisor_override))
    return x, spec, divisor


def _as_divisor(divisor: Any, dtype: np.dtype) -> Any:
    """An int stays (Python ints do not promote); an array becomes ``dtype``, so float32 stays float32."""
    return divisor if isinstance(divisor, int) else divisor.astype(dtype)


def _avg_pool_forward(x: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """Window sums (:func:`_reduce_windows`, padding adds nothing), divided: ``(N, C, *out)``."""
    accumulate, returned = _average_dtypes(x.dtype)
    sums = _reduce_windows(x, spec, np.add, 0, accumulate)  # (N, C, *out)
    np.divide(sums, _as_divisor(divisor, accumulate), out=sums)
    return sums.astype(returned, copy=False)


def _avg_pool_backward(grad_output: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """``grad_input`` ``(N, C, *in)`` of an average pooling, in ``grad_output``'s dtype.

    out[o] = sum_j x[o * s + j - pad] / divisor[o] is linear, so x[i] receives
    grad_output[o] / divisor[o] from every window o that reads it: the
    transpose of the window sum (:func:`_spread_windows`).
    """
    accumulate, _ = _average_dtypes(grad_output.dtype)
    scaled = np.divide(grad_output, _as_divisor(divisor, accumulate), dtype=accumulate)  # (N, C, *out)
    return _spread_windows(scaled, spec, accumulate).astype(grad_output.dtype, copy=False)


def _avg_pool_reference(x: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """:func:`_avg_pool_forward` on the window view of the zero-padded input: slow, obviously right."""
    accumulate, returned = _average_dtypes(x.dtype)
    padded = pad(x.astype(accumulate, copy=False), spec.window_padding)  # (N, C, *in + padding), zeros
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C, *out, *k)
    sums = windows.sum(axis=tuple(range(-spec.rank, 0)))  # (N, C, *out)
    return (sums / divisor).astype(returned, copy=False)


def _avg_pool_backward_reference(grad_output: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """:func:`_avg_pool_backward` as the window primitive's transpose: slow, obviously right.

    Every tap of a window gets the same share ``grad_output[o] / divisor[o]``;
    ``add_windows`` adds them back where they were read, and the padding's
    transpose crops.
    """
    accumulate, _ = _average_dtypes(grad_output.dtype)
    scaled = grad_output.astype(accumulate, copy=False) / divisor  # (N, C, *out)
    # Every tap of a window gets the same share: a broadcast view, no copy.
    per_tap = np.broadcast_to(scaled[(..., *([np.newaxis] * spec.rank))], (*scaled.shape, *spec.kernel_size))
    padded_size = [size + low + high for size, (low, high) in zip(spec.input_size, spec.window_padding)]
    grad_padded = add_windows(per_tap, padded_size, spec.stride, spec.dilation)  # (N, C, *in + padding)
    return pad_adjoint(grad_padded, spec.window_padding, "zeros", spec.input_size).astype(grad_output.dtype)



def _avg_pool_op(
    op: str,
    rank: int | None,
    input: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """The average pooling ops (``op`` for ``rank`` spatial dimensions, ``None``: any); docs: ``_AVG_POOL_DOC``."""
    x, spec, divisor = _avg_args(op, rank, input, kernel_size, stride, padding, ceil_mode,
                                 count_include_pad, divisor_override)
    return _unbatch(spec.batched, _avg_pool_forward(x, spec, divisor))[0]


def _avg_pool_vjp(
    op: str,
    rank: int | None,
    input: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> tuple[np.ndarray, Any]:
    """:func:`_avg_pool_op`'s output and pullback."""
    # Average pooling is linear; its pullback is its transpose (_avg_pool_backward).
    x, spec, divisor = _avg_args(op, rank, input, kernel_size, stride, padding, ceil_mode,
                                 count_include_pad, divisor_override)

    def pullback(grad_output: np.ndarray) -> tuple[np.ndarray]:
        batched_grad = _batched_grad_output(op, grad_output, spec.caller_output_shape, spec.batched)
        return _unbatch(spec.batched, _avg_pool_backward(batched_grad, spec, divisor))

    return _unbatch(spec.batched, _avg_pool_forward(x, spec, divisor))[0], pullback


def _avg_pool_input_op(
    op: str,
    rank: int | None,
    grad_output: np.ndarray,
    input: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """The average pooling input gradients (``op`` is ``avg_pool2d_input`` and so on)."""
    _, spec, divisor = _avg_args(op, rank, input, kernel_size, stride, padding, ceil_mode,
                                 count_include_pad, divisor_override)
    batched_grad = _batched_grad_output(op, grad_output, spec.caller_output_shape, spec.batched)
    return _unbatch(spec.batched, _avg_pool_backward(batched_grad, spec, divisor))[0]


avg_pool, avg_pool1d, avg_pool2d, avg_pool3d = fixed_rank_ops(
    _avg_pool_op, "avg_pool", _AVG_POOL_DOC, words=_AVG_POOL_WORDS, vjp=_avg_pool_vjp)
avg_pool_input, avg_pool1d_input, avg_pool2d_input, avg_pool3d_input = fixed_rank_ops(
    _avg_pool_input_op, "avg_pool", _AVG_POOL_INPUT_DOC, suffix="_input", words=_AVG_POOL_INPUT_WORDS)
