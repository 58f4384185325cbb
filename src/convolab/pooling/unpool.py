"""Max unpooling: pooled maxima written back at their indices, zeros elsewhere; its gradient is a gather.

A partial inverse of max pooling (PyTorch's ``max_unpool``): the output size
is the pooling's input size recovered from kernel, stride and padding
(:func:`_unpool_size`), or one requested within a stride of it.
"""

from __future__ import annotations

from math import prod
from typing import Any, Sequence

import numpy as np

from .. import shapes
from .._checks import as_array, normalize_ints
from .._errors import fail
from .._fixed_rank import fixed_rank_ops
from ._docs import _MAX_UNPOOL_DOC, _MAX_UNPOOL_WORDS
from ._spec import _batch_input, _batched_grad_output, _normalize_stride, _rank_from_tuple, _unbatch

__all__ = ["max_unpool", "max_unpool1d", "max_unpool2d", "max_unpool3d"]


def _unpool_size(op: str, input_size: Sequence[int], kernel: tuple[int, ...], strides: tuple[int, ...],
                 pads: tuple[int, ...], output_size: Any) -> tuple[int, ...]:
    """PyTorch's rule: the default ``(in - 1) * stride - 2 * padding + kernel_size`` (the transposed
    convolution's output size), or a requested size strictly within ``stride`` of it (``rank`` or ``rank + 2``
    entries)."""
    rank = len(kernel)
    default = tuple(shapes.conv_transpose_output_size(size, k, s, (p, p))
                    for size, k, s, p in zip(input_size, kernel, strides, pads))
    if output_size is None:
        for dim, size in enumerate(default):
            if size < 0:
                fail(ValueError, op, "padding",
                     f"{pads} (the output size in spatial dimension {dim} would be {size})",
                     "must leave a non-negative output size (in - 1) * stride - 2 * padding + kernel_size")
        return default
    if not isinstance(output_size, (tuple, list)):
        fail(TypeError, op, "output_size", f"{output_size!r} of type {type(output_size).__name__}",
             f"must be None or a tuple of {rank} (or {rank + 2}) ints")
    requested = tuple(output_size)[2:] if len(output_size) == rank + 2 else tuple(output_size)
    if len(requested) != rank:
        fail(ValueError, op, "output_size", f"{tuple(output_size)!r} ({len(output_size)} values)",
             f"must have {rank} spatial sizes, or {rank + 2} entries (N, C, *spatial)")
    requested = normalize_ints(requested, rank, "output_size", op, minimum=0)
    for dim, (size, base, s) in enumerate(zip(requested, default, strides)):
        if not base - s < size < base + s:
            fail(ValueError, op, "output_size", f"{tuple(output_size)!r} ({size} in spatial dimension {dim})",
                 f"must be strictly between {base - s} and {base + s} in that dimension (the default size "
                 f"{base} plus or minus the stride {s})")
    return requested


def _unpool_args(op: str, rank: int | None, input: Any, indices: Any, kernel_size: Any, stride: Any,
                 padding: Any, output_size: Any) -> tuple[np.ndarray, np.ndarray, bool, tuple[int, ...]]:
    """Batched input and int64 indices, whether batched, and the output's spatial size."""
    rank = _rank_from_tuple(op, "kernel_size", kernel_size, rank)
    x, batched = _batch_input(op, input, rank)
    indices = as_array(op, "indices", indices)
    if indices.dtype.kind not in "iu":
        fail(TypeError, op, "indices", f"dtype {indices.dtype}", "must be an integer dtype")
    if indices.shape != input.shape:
        fail(ValueError, op, "indices", f"shape {indices.shape}", f"must have the input's shape {input.shape}")
    kernel = normalize_ints(kernel_size, rank, "kernel_size", op)
    strides = _normalize_stride(op, stride, kernel)
    pads = normalize_ints(padding, rank, "padding", op, minimum=0)
    size = _unpool_size(op, x.shape[2:], kernel, strides, pads, output_size)
    flat = (indices if batched else indices[np.newaxis]).astype(np.int64, copy=False)
    plane = prod(size)
    outside = (flat < 0) | (flat >= plane)
    if outside.any():
        fail(ValueError, op, "indices", f"{int(flat[outside][0])}",
             f"must lie in [0, {plane}), the flat positions of a {'x'.join(map(str, size))} output plane")
    return x, flat, batched, size


def _max_unpool_forward(x: np.ndarray, indices: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Zeros ``(N, C, *size)`` with each input value written at its flat index in its plane."""
    batch, channels = x.shape[:2]
    planes = np.zeros((batch * channels, prod(size)), dtype=x.dtype)  # (N * C, plane)
    rows = np.arange(batch * channels)[:, None]  # (N * C, 1)
    planes[rows, indices.reshape(batch * channels, -1)] = x.reshape(batch * channels, -1)  # repeats: last wins
    return planes.reshape(batch, channels, *size)


def _max_unpool_backward(grad_output: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The transpose of the scatter is a gather: ``grad_input[i] = grad_output[indices[i]]``, per plane."""
    batch, channels = indices.shape[:2]
    planes = grad_output.reshape(batch * channels, -1)  # (N * C, plane)
    rows = np.arange(batch * channels)[:, None]
    return planes[rows, indices.reshape(batch * channels, -1)].reshape(indices.shape)



def _max_unpool_op(
    op: str,
    rank: int | None,
    input: np.ndarray,
    indices: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
) -> np.ndarray:
    """The max unpooling ops (``op`` for ``rank`` spatial dimensions, ``None``: any)."""
    x, flat, batched, size = _unpool_args(op, rank, input, indices, kernel_size, stride, padding, output_size)
    return _unbatch(batched, _max_unpool_forward(x, flat, size))[0]


def _max_unpool_vjp(
    op: str,
    rank: int | None,
    input: np.ndarray,
    indices: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
) -> tuple[np.ndarray, Any]:
    """:func:`_max_unpool_op`'s output and pullback."""
    # out = scatter(x at indices); its pullback is the gather grad_output[indices].
    # indices are integers: their gradient is None.
    x, flat, batched, size = _unpool_args(op, rank, input, indices, kernel_size, stride, padding, output_size)
    output = _max_unpool_forward(x, flat, size)

    def pullback(grad_output: np.ndarray) -> tuple[np.ndarray, None]:
        batched_grad = _batched_grad_output(op, grad_output, output.shape[0 if batched else 1:], batched)
        return _unbatch(batched, _max_unpool_backward(batched_grad, flat))[0], None

    return _unbatch(batched, output)[0], pullback


max_unpool, max_unpool1d, max_unpool2d, max_unpool3d = fixed_rank_ops(
    _max_unpool_op, "max_unpool", _MAX_UNPOOL_DOC, words=_MAX_UNPOOL_WORDS, vjp=_max_unpool_vjp)
