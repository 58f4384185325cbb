"""``unfold`` (im2col) and ``fold`` (col2im), in any number of spatial dimensions.

``unfold`` lays every sliding window out as a column; ``fold`` adds columns back
into their windows. They are each other's transpose:
``<unfold(x), y> == <x, fold(y)>``. PyTorch offers both for 2-d only; here they
take the rank from ``kernel_size``.
"""

from __future__ import annotations

from math import prod
from typing import Any, Sequence

import numpy as np

from ._errors import fail
from ._geometry import WindowGeometry, window_geometry
from ._vjp import defines_vjp
from ._window import add_windows, check_fits_in_memory, compact_reads, pad, pad_adjoint, sliding_windows
from .functional import check_array
from .spec import normalize_ints

__all__ = ["unfold", "fold"]


def _rank(kernel_size: Any, output_size: Any = None) -> int:
    for value in (kernel_size, output_size):
        if isinstance(value, (tuple, list)):
            return len(value)
    return 2  # a bare int means 2-d, as in PyTorch


def _window_geometry(op: str, spatial: Sequence[int], kernel_size: Any, dilation: Any, padding: Any,
                     stride: Any) -> WindowGeometry:
    """The windows over ``spatial``, checked (padding as ints or (low, high) pairs; no padding strings)."""
    return window_geometry(op, spatial, kernel_size, stride=stride, padding=padding, dilation=dilation,
                           strings=False)


def unfold(input: np.ndarray, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> np.ndarray:
    """Every sliding window as a column: ``(N, C, *spatial) -> (N, C*K, L)``.

    Row ``c*K + j`` holds channel ``c`` at kernel tap ``j`` (taps row-major), column
    ``l`` is the ``l``-th window (row-major over the output grid), as PyTorch's
    ``unfold``. The rank is ``len(kernel_size)`` (an int means 2-d).

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
    kernel_size, dilation, stride : int or tuple of int
    padding : int, tuple of int, or tuple of (low, high) pairs
        Zero padding.

    Returns
    -------
    numpy.ndarray
        ``(N, C * prod(kernel_size), L)``, ``L`` the number of windows.

    Shape
    -----
    ``L = prod_i floor((in_i + lo_i + hi_i - dilation_i*(k_i - 1) - 1) / stride_i) + 1``.

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> cl.unfold(np.arange(1, 10).reshape(1, 1, 3, 3), 2)
    array([[[1, 2, 4, 5],
            [2, 3, 5, 6],
            [4, 5, 7, 8],
            [5, 6, 8, 9]]])
    """
    op = "unfold"
    input = check_array(op, "input", input)
    rank = _rank(kernel_size)
    if input.ndim not in (rank + 1, rank + 2):
        fail(ValueError, op, "input", f"shape {input.shape}", f"must have {rank + 2} dimensions (N, C, *spatial) "
             f"or {rank + 1} unbatched, for kernel_size of {rank} dimensions")
    batched = input.ndim == rank + 2
    x = input if batched else input[np.newaxis]
    geometry = _window_geometry(op, x.shape[2:], kernel_size, dilation, padding, stride)
    kernel, dilations, pads, strides = geometry.kernel_size, geometry.dilation, geometry.padding, geometry.stride
    blocks = geometry.output_size
    n, c = x.shape[:2]
    check_fits_in_memory(op, "output", (n, c * prod(kernel), prod(blocks)), x.dtype,
                         lambda: f"padding={pads}, stride={strides} and dilation={dilations} for an input of spatial "
                                 f"size {x.shape[2:]} and a kernel of {kernel}")
    reads = compact_reads(x.shape[2:], pads, "zeros", kernel, strides, dilations)
    if reads is None:
        windows = sliding_windows(pad(x, pads), kernel, strides, dilations)  # (N, C, *blocks, *kernel)
    else:  # padding far wider than the windows reach: only the cells they read (convolab._window)
        windows = sliding_windows(reads.gather(x), kernel, reads.stride, reads.dilation)
    windows = windows.transpose(0, 1, *range(2 + rank, 2 + 2 * rank), *range(2, 2 + rank))  # (N, C, *kernel, *blocks)
    columns = windows.reshape(n, c * prod(kernel), prod(blocks))
    return columns if batched else columns[0]


def fold(
    input: np.ndarray, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
) -> np.ndarray:
    """Add columns back into their windows: ``(N, C*K, L) -> (N, C, *output_size)``.

    The transpose of :func:`unfold` with the same arguments (overlapping cells
    are summed, so ``fold(unfold(x))`` is ``x`` times how many windows cover each
    cell). The rank is ``len(output_size)`` or ``len(kernel_size)``.

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C * prod(kernel_size), L)`` or unbatched ``(C * prod(kernel_size), L)``.
    output_size : int or tuple of int
        Spatial size of the result.
    kernel_size, dilation, padding, stride
        As in :func:`unfold`.

    Returns
    -------
    numpy.ndarray
        ``(N, C, *output_size)``.

    Shape
    -----
    ``L`` must equal the number of windows :func:`unfold` finds in ``output_size``.

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> cl.fold(np.ones((1, 4, 4)), (3, 3), 2)
    array([[[[1., 2., 1.],
             [2., 4., 2.],
             [1., 2., 1.]]]])
    """
    op = "fold"
    input = check_array(op, "input", input)
    rank = _rank(kernel_size, output_size)
    size = normalize_ints(output_size, rank, "output_size", op)
    geometry = _window_geometry(op, size, kernel_size, dilation, padding, stride)
    kernel, dilations, pads, strides = geometry.kernel_size, geometry.dilation, geometry.padding, geometry.stride
    if input.ndim not in (2, 3):
        fail(ValueError, op, "input", f"shape {input.shape}", "must be (N, C*prod(kernel_size), L) or unbatched 2-D")
    batched = input.ndim == 3
    columns = input if batched else input[np.newaxis]
    n, rows, count = columns.shape
    taps = prod(kernel)
    if rows % taps:
        fail(ValueError, op, "input", f"{rows} rows (shape {input.shape})",
             f"must have a multiple of prod(kernel_size)={taps} rows")
    blocks = geometry.output_size
    if count != prod(blocks):
        fail(ValueError, op, "input", f"{count} columns (shape {input.shape})",
             f"must have one column per window, {prod(blocks)} for output_size={size} ({blocks} windows)")
    c = rows // taps
    windows = columns.reshape(n, c, *kernel, *blocks)  # (N, C, *kernel, *blocks)
    windows = windows.transpose(0, 1, *range(2 + rank, 2 + 2 * rank), *range(2, 2 + rank))  # (N, C, *blocks, *kernel)
    check_fits_in_memory(op, "output", (n, c, *size), input.dtype,
                         lambda: f"output_size={size} with stride={strides} and {count} columns")
    reads = compact_reads(size, pads, "zeros", kernel, strides, dilations)
    if reads is None:
        out = pad_adjoint(add_windows(windows, geometry.padded_size, strides, dilations), pads, "zeros", size)
    else:  # the transpose of unfold's compact gather
        out = reads.scatter(add_windows(windows, reads.input_size, reads.stride, reads.dilation), size)
    return out if batched else out[0]


@defines_vjp(unfold)
def _unfold_vjp(input, kernel_size, dilation=1, padding=0, stride=1):
    out = unfold(input, kernel_size, dilation, padding, stride)
    rank = _rank(kernel_size)

    def pullback(grad_output):
        return (fold(grad_output, input.shape[-rank:], kernel_size, dilation, padding, stride),)

    return out, pullback


@defines_vjp(fold)
def _fold_vjp(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    out = fold(input, output_size, kernel_size, dilation, padding, stride)

    def pullback(grad_output):
        return (unfold(grad_output, _kernel_like(kernel_size, output_size), dilation, padding, stride),)

    return out, pullback


def _kernel_like(kernel_size: Any, output_size: Any) -> Any:
    """``kernel_size`` spelled with the rank of ``output_size``, so ``unfold`` infers the same rank."""
    if isinstance(kernel_size, (tuple, list)):
        return kernel_size
    return (kernel_size,) * _rank(kernel_size, output_size)
