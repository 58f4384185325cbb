"""The convolution as matrices: the im2col pair whose product it is, and the one sparse matrix it is.

- :func:`im2col_matrices` gives the unrolled input and the filter matrix whose
  product is the convolution (built by the im2col algorithm's own unroll).
- :func:`conv_matrix` writes the whole convolution as one sparse matrix ``M``;
  its transpose is the input gradient (transposed convolution made concrete).

Axis legend used below: N batch, G groups, C input channels per group, O output
channels per group, P output positions (product of ``*out``), K kernel taps
(product of ``*kernel_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Sequence

import numpy as np
import scipy.sparse

from .._dtypes import compute_dtype, result_dtype
from .._engine import oriented_kernel
from .._errors import fail
from .._window import pad, sliding_windows
from ..algorithms import filter_matrix, fold_product, unroll
from ..functional import check_array, check_conv_arrays
from ..spec import ConvSpec, PaddingArg
from ._problem import checked_spec, frozen, padded_sources

__all__ = ["Im2colMatrices", "im2col_matrices", "conv_matrix"]


# -- im2col: the convolution as matrix products -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Im2colMatrices:
    """The im2col matrices of a convolution: ``output = fold(unrolled @ filters)``.

    ``unrolled`` has one row per output position ``(n, *out)`` (row-major) and
    one column per ``(c, *kernel tap)`` of the group's input channels;
    ``filters`` has the same rows' worth of columns as rows, and one column per
    output channel of the group. With ``groups == 1`` they are plain 2-D
    matrices ``(N*P, C_in*K)`` and ``(C_in*K, C_out)``; otherwise stacks
    ``(G, N*P, C*K)`` and ``(G, C*K, O)``. Entries are in the accumulation dtype
    (int64 for integers, float32 for float16).
    """

    unrolled: np.ndarray
    filters: np.ndarray
    spec: ConvSpec
    dtype: np.dtype

    @property
    def row_labels(self) -> tuple[tuple[int, ...], ...]:
        """``(n, *out)`` of each row of ``unrolled``."""
        return tuple(np.ndindex(self.spec.batch, *self.spec.output_size))

    @property
    def column_labels(self) -> tuple[tuple[int, ...], ...]:
        """``(c, *tap)`` of each column of ``unrolled`` (row of ``filters``), ``c`` counted within the group."""
        return tuple(np.ndindex(self.spec.in_channels_per_group, *self.spec.kernel_size))

    def product(self) -> np.ndarray:
        """``unrolled @ filters``: ``(N*P, C_out)``, or ``(G, N*P, O)`` with groups."""
        return np.matmul(self.unrolled, self.filters)

    def output(self) -> np.ndarray:
        """The product folded into the convolution's output (no bias), in its shape and result dtype."""
        spec = self.spec
        rows = spec.batch * prod(spec.output_size)
        product = self.product().reshape(spec.groups, rows, spec.out_channels_per_group)  # (G, N*P, O)
        out = fold_product(product, spec).astype(result_dtype(self.dtype), copy=False)  # (N, C_out, *out)
        return out if spec.batched else out[0]


def im2col_matrices(
    input: np.ndarray,
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Im2colMatrices:
    """The unrolled input and the filter matrix whose product is the convolution.

    Each row of the unrolled input is one window (what :func:`~convolab.trace` shows for
    that output position), laid out flat; each column of the filter matrix is
    one output channel's kernel, laid out the same way. Their product holds
    every output element, one output position per row.

    Parameters
    ----------
    input, weight, stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.conv`.

    Returns
    -------
    Im2colMatrices
        ``.unrolled``, ``.filters``, ``.product()`` and ``.output()``.

    Shape
    -----
    ``unrolled``: ``(N*P, C_in*K)``, ``filters``: ``(C_in*K, C_out)`` with one
    group; ``(G, N*P, C*K)`` and ``(G, C*K, O)`` with ``G`` groups, where
    ``P = prod(out)`` and ``K = prod(kernel_size)``.

    Examples
    --------
    >>> import numpy as np
    >>> m = im2col_matrices(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]))
    >>> m.unrolled
    array([[1, 2, 4, 5],
           [2, 3, 5, 6],
           [4, 5, 7, 8],
           [5, 6, 8, 9]])
    >>> m.filters.T
    array([[9, 8, 7, 6]])
    >>> m.product().ravel().tolist(), m.output().tolist()
    ([83, 113, 173, 203], [[[[83, 113], [173, 203]]]])
    """
    op = "im2col_matrices"
    check_array(op, "input", input)
    spec = checked_spec(op, input.shape, weight, stride, padding, dilation, groups, padding_mode, flip)
    check_conv_arrays(op, input, weight, None, spec)
    accumulate = compute_dtype(input.dtype)
    padded = pad(input.reshape(spec.input_shape).astype(accumulate, copy=False), spec.padding, spec.padding_mode)
    unrolled = unroll(padded, spec)  # (G, N*P, C*K)
    filters = filter_matrix(oriented_kernel(weight.astype(accumulate, copy=False), spec.flip), spec)  # (G, C*K, O)
    if spec.groups == 1:
        unrolled, filters = unrolled[0], filters[0]
    return Im2colMatrices(unrolled=frozen(unrolled), filters=frozen(filters), spec=spec, dtype=input.dtype)


# -- the convolution as one matrix ------------------------------------------------------------------


def conv_matrix(
    input_shape: Sequence[int],
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> scipy.sparse.csr_matrix:
    """The convolution as an explicit sparse matrix: ``conv(x).ravel() == M @ x.ravel()``.

    A convolution (without bias) is linear in its input, so it is a matrix.
    Row ``r`` is output element ``r`` (row-major over the output); its entries
    are the kernel taps, in the columns of the input samples its window reads.
    The matrix is built from index maps, never by convolving: the flat index of
    every input sample is padded with the convolution's padding mode and viewed
    through the same sliding windows, so a reflected, replicated or wrapped
    padding cell lands in the column of the sample it copies and a zero cell in
    no column at all. Where one window reads a sample twice (reflect padding of
    a short input), the two taps are summed.

    Its transpose is the input gradient: ``M.T @ grad_output.ravel()`` is
    :func:`convolab.grad.conv_input`, which is what a transposed convolution
    computes.

    Parameters
    ----------
    input_shape : tuple of int
        The input's shape, batched ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
    weight, stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.conv`.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical (duplicates summed, indices sorted), of the weight's
        accumulation dtype (int64 for integers, float32 for float16). Taps are
        stored even where the weight is zero, so the sparsity pattern shows
        which samples each output reads.

    Raises
    ------
    TypeError, ValueError
        As :func:`convolab.conv` for the shapes and arguments.

    Shape
    -----
    ``(prod(output_shape), prod(input_shape))``, with at most
    ``prod(output_shape) * C_in/groups * prod(kernel_size)`` stored entries.

    Examples
    --------
    >>> import numpy as np
    >>> M = conv_matrix((1, 1, 3), np.array([[[1, 2]]]), padding=1)
    >>> M.toarray()
    array([[2, 0, 0],
           [1, 2, 0],
           [0, 1, 2],
           [0, 0, 1]])
    >>> M @ np.array([1, 10, 100])
    array([  2,  21, 210, 100])
    >>> conv_matrix((1, 2), np.array([[[1, 10, 100]]]), padding=1, padding_mode="reflect").toarray()
    array([[ 10, 101],
           [101,  10]])
    """
    op = "conv_matrix"
    if not isinstance(input_shape, (tuple, list)) or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in input_shape):
        fail(TypeError, op, "input_shape", repr(input_shape), "must be a tuple of ints (a full shape)")
    spec = checked_spec(op, input_shape, weight, stride, padding, dilation, groups, padding_mode, flip)
    groups, c, o = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    taps, positions = c * prod(spec.kernel_size), prod(spec.output_size)
    # Columns: for every window cell, the flat index of the input sample it reads (-1: a zero).
    sources = padded_sources(spec.input_shape, spec)  # (N, C_in, *padded)
    windows = sliding_windows(sources, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    windows = windows.reshape(spec.batch, groups, c, positions, prod(spec.kernel_size))  # (N, G, C, P, K)
    windows = windows.transpose(0, 1, 3, 2, 4).reshape(spec.batch, groups, 1, positions, taps)  # (N, G, 1, P, C*K)
    # Values: output channel (g, o)'s oriented kernel, the same for every window.
    kernel = oriented_kernel(weight.astype(compute_dtype(weight.dtype), copy=False), spec.flip)
    values = kernel.reshape(1, groups, o, 1, taps)  # (1, G, O, 1, C*K)
    # Rows: output element (n, g*O + o, p), row-major.
    rows = np.arange(prod(spec.output_shape), dtype=np.int64).reshape(spec.batch, groups, o, positions, 1)
    shape = (spec.batch, groups, o, positions, taps)  # (N, G, O, P, C*K): one entry per product summed
    columns, values, rows = (np.broadcast_to(a, shape) for a in (windows, values, rows))
    read = columns >= 0  # zero-padding cells contribute nothing
    matrix = scipy.sparse.coo_matrix(
        (values[read], (rows[read], columns[read])), shape=(prod(spec.output_shape), prod(spec.input_shape)),
    ).tocsr()
    matrix.sum_duplicates()  # tocsr() already sums repeated (row, column) pairs; this also sorts, canonically
    return matrix
