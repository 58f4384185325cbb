"""Convolution algorithms behind one interface.

Every algorithm solves the same *valid* problem: the input is already padded
(by :func:`convolab._window.pad`) and the kernel already oriented (flipped or
not, decided once in :mod:`convolab._conv`). Each gets

- ``padded``: ``(N, C_in, *padded_size)`` in the accumulation dtype,
- ``kernel``: ``(C_out, C_in/groups, *kernel_size)`` in the same dtype,
- ``spec``: the frozen :class:`~convolab.spec.ConvSpec` (stride, dilation, groups),

and returns ``(N, C_out, *output_size)`` in that dtype. Each algorithm can say
why it cannot run a problem (:meth:`Algorithm.why_not`), so a caller asking for
one by name gets a reason rather than a wrong answer.

Axis legend used in the comments below: N batch, G groups, C input channels per
group, O output channels per group, P output positions (product of ``*out``),
K kernel taps (product of ``*kernel``).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor
import itertools
from math import gcd, prod
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import as_strided

from ._dtypes import all_finite, is_exact
from ._errors import fail
from ._settings import current_thread_count, current_workspace_limit
from ._window import pad, pad_adjoint, reverse_spatial, sliding_windows
from .winograd import supports as winograd_supports
from .winograd import winograd_conv
from .spec import ConvSpec, conv_spec

__all__ = ["Algorithm", "Direct", "Im2col", "Gemm", "Folded", "Shifted", "Depthwise", "Winograd", "FFT", "ALGORITHMS", "ALGORITHM_CHOICES",
           "check_algorithm_name", "select_algorithm"]


class Algorithm:
    """One way of computing a valid, pre-padded, pre-oriented convolution."""

    name: ClassVar[str]
    #: Whether one input value reaches outputs whose windows never read it (through a transform of a whole
    #: slab): an inf or NaN would spread, a large value would round every output. The planner keeps such
    #: algorithms from data where that shows (:class:`convolab.planner.DataTraits`).
    mixes_outputs: ClassVar[bool] = False

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """``None`` if this algorithm can run the problem, else the reason it cannot."""
        return None

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        raise NotImplementedError

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """Scratch memory beyond the padded input and the output, in bytes."""
        return 0


class Direct(Algorithm):
    """The textbook definition, one output element at a time.

    Each output element is the window it reads times the filter, elementwise,
    summed (a Hadamard product and a sum), which is the same number as the dot
    product of the unrolled window and the unrolled filter. Slow on purpose: it
    is the reference every other algorithm is tested against.
    """

    name = "direct"

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C_in, *out, *kernel)
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        channels_in, channels_out = spec.in_channels_per_group, spec.out_channels_per_group
        for index in np.ndindex(*spec.output_shape):
            n, c_out, *position = index
            group = c_out // channels_out
            window = windows[(n, slice(group * channels_in, (group + 1) * channels_in), *position)]  # (C, *kernel)
            out[index] = np.sum(window * kernel[c_out])
        return out


class Im2col(Algorithm):
    """Unroll every window into a row, then one matrix product per group.

    (Chellapilla, Puri and Simard, 2006.) The unrolled input has one row per
    output position and one column per (input channel, kernel tap); the filter
    matrix has one column per output channel. Groups become a batch of
    independent matrix products.
    """

    name = "im2col"

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        unrolled = unroll(padded, spec)  # (G, N*P, C*K)
        filters = filter_matrix(kernel, spec)  # (G, C*K, O)
        product = np.matmul(unrolled, filters)  # (G, N*P, O)
        return fold_product(product, spec)


def unroll(padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The im2col matrix of each group: ``(G, N*P, C*K)``, rows ordered (n, *out)."""
    n, groups, rank = spec.batch, spec.groups, spec.rank
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    windows = windows.reshape(n, groups, spec.in_channels_per_group, *windows.shape[2:])  # (N, G, C, *out, *kernel)
    out_axes = tuple(range(3, 3 + rank))
    kernel_axes = tuple(range(3 + rank, 3 + 2 * rank))
    windows = windows.transpose(1, 0, *out_axes, 2, *kernel_axes)  # (G, N, *out, C, *kernel)
    rows = n * prod(spec.output_size)
    return windows.reshape(groups, rows, spec.in_channels_per_group * prod(spec.kernel_size))  # copies


def filter_matrix(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The filters as matrices: ``(G, C*K, O)``, one column per output channel."""
    filters = kernel.reshape(spec.groups, spec.out_channels_per_group, -1)  # (G, O, C*K)
    return filters.transpose(0, 2, 1)  # (G, C*K, O)


def fold_product(product: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``(G, N*P, O)`` matrix-product result back to ``(N, G*O, *out)``."""
    rank = spec.rank
    out = product.reshape(spec.groups, spec.batch, *spec.output_size, spec.out_channels_per_group)  # (G, N, *out, O)
    out = out.transpose(1, 0, 1 + rank + 1, *range(2, 2 + rank))  # (N, G, O, *out)
    return np.ascontiguousarray(out.reshape(spec.output_shape))


class Gemm(Algorithm):
    """im2col for speed: columns copied contiguously, one large matrix product per block.

    The unrolled block is laid out ``(G, C*K, columns)`` so each output channel's
    row of the product is already in NC(spatial) order and no transpose follows.
    At stride 1, unless that wastes over 10% of the columns (see ``_gemm_wide``),
    the columns run over the *padded* grid ("wide" rows): the tap at
    offset ``j`` then reads one contiguous run of the flattened input, a memcpy
    per (channel, tap); the extra columns past each output row are cropped.
    Blocks go along the batch, then along the first output axis, so the unrolled
    block never exceeds the workspace limit (:func:`convolab.workspace_limit`).
    Small images in large batches unroll with the batch innermost (``_batch_inner``).
    A 1×1 kernel at stride 1 is a plain matrix product with no copy at all.
    """

    name = "gemm"

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        if _is_pointwise(spec):
            return 0
        return _block_bytes(_row_bytes(spec, itemsize), spec.batch * spec.output_size[0], prod(_grid(spec)))

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, o = spec.groups, spec.out_channels_per_group
        filters = kernel.reshape(groups, o, -1)  # (G, O, C*K)
        if _is_pointwise(spec):
            return _pointwise(padded, filters, spec)
        if _batch_inner(spec, padded.itemsize):
            columns = _batch_inner_columns(padded, spec)  # (G, C*K, P*N)
            product = np.matmul(filters, columns).reshape(groups, o, -1, spec.batch)  # (G, O, P, N)
            product = product.transpose(3, 0, 1, 2)  # (N, G, O, P)
            return np.ascontiguousarray(product).reshape(spec.output_shape)
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        for (n0, n1, r0, r1), columns, grid in _unrolled_blocks(padded, spec):
            product = np.matmul(filters, columns)  # (G, O, nb*rows*rest)
            product = product.reshape(groups, o, n1 - n0, r1 - r0, *grid)  # (G, O, nb, rows, *rest)
            product = product[(Ellipsis, *(slice(0, size) for size in spec.output_size[1:]))]
            product = product.transpose(2, 0, 1, *range(3, 3 + spec.rank))  # (nb, G, O, rows, *out_rest)
            out[n0:n1, :, r0:r1] = product.reshape(n1 - n0, spec.out_channels, r1 - r0, *spec.output_size[1:])
        return out

    def weight_grad(self, padded: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dk = g @ columns.T`` summed over the same blocks: ``(G*O, C, *kernel)``.

        With many positions each block's product is taken as ``columns @ g.T``,
        ``(C*K, O)``: the BLAS ran that 30-60% faster than ``g @ columns.T`` on
        ResNet's large images. The sum then needs one transposing copy, which on
        small images (few positions, many channels) costs more than it saves
        (see ``TRANSPOSED_PRODUCT_MIN_POSITIONS``).
        """
        groups, o = spec.groups, spec.out_channels_per_group
        if _is_pointwise(spec) and _per_sample_products_win(spec):
            return _pointwise_weight_grad(padded, grad_output, spec)
        # Wide rows give the extra columns a zero gradient, and 0 * inf is NaN: an input holding
        # inf or NaN takes the exact columns, so it reaches only the taps that really read it.
        wide = None if all_finite(padded) else False
        transposed = spec.batch * prod(spec.output_size) >= TRANSPOSED_PRODUCT_MIN_POSITIONS

        def product(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
            """``rows (G, O, positions)`` times ``columns (G, C*K, positions)``, in the sum's layout."""
            if transposed:
                return np.matmul(columns, rows.transpose(0, 2, 1))  # (G, C*K, O)
            return np.matmul(rows, columns.transpose(0, 2, 1))  # (G, O, C*K)

        if _batch_inner(spec, padded.itemsize):
            columns = _batch_inner_columns(padded, spec)  # (G, C*K, P*N)
            rows = grad_output.reshape(spec.batch, groups, o, -1).transpose(1, 2, 3, 0)  # (G, O, P, N)
            total = product(rows.reshape(groups, o, -1), columns)  # rows copied into the columns' (P, N) order
        else:
            taps = spec.in_channels_per_group * prod(spec.kernel_size)
            total = np.zeros((groups, taps, o) if transposed else (groups, o, taps), dtype=padded.dtype)
            for (n0, n1, r0, r1), columns, grid in _unrolled_blocks(padded, spec, wide=wide):
                block = grad_output[n0:n1, :, r0:r1]  # (nb, G*O, rows, *out_rest)
                block = block.reshape(n1 - n0, groups, o, r1 - r0, *spec.output_size[1:])
                block = block.transpose(1, 2, 0, *range(3, 3 + spec.rank))  # (G, O, nb, rows, *out_rest)
                if tuple(grid) != tuple(spec.output_size[1:]):  # wide rows: zero gradient on the extra columns
                    wide = np.zeros((*block.shape[:4], *grid), dtype=block.dtype)
                    wide[(Ellipsis, *(slice(0, size) for size in spec.output_size[1:]))] = block
                    block = wide
                total += product(block.reshape(groups, o, -1), columns)
        if transposed:
            total = np.ascontiguousarray(total.transpose(0, 2, 1))
        return total.reshape(spec.weight_shape)


#: Fewest output positions (batch times output size) for which gemm's weight gradient takes its
#: products as ``columns @ g.T``: each saves about a fifth of a product over ``positions`` but the
#: result's transposing copy costs a few ns per weight, even at ~2,500 positions (8 x 7x7 with
#: 512 channels measured 14 ms that way against 8 ms the other).
TRANSPOSED_PRODUCT_MIN_POSITIONS = 4096

#: Target size of one unrolled block: a quarter of a typical 32 MiB last-level cache.
CACHE_BLOCK_BYTES = 8 * 2**20


def _is_pointwise(spec: ConvSpec) -> bool:
    return all(k == 1 for k in spec.kernel_size)


#: Below this many output positions per sample, a 1×1 convolution regroups the batch into one
#: product: per-sample products that narrow run far from the BLAS's peak (7×7 ResNet-50 layers
#: measured 15-17% faster batch-wide; at 14×14 the regrouping copies cost more than they save).
POINTWISE_BATCH_WIDE_POSITIONS = 100


def _pointwise_positions(padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The input cells a 1×1 convolution reads, ``(N, G, C, positions)``: a view unless strided."""
    if any(s > 1 for s in spec.stride):
        padded = padded[(Ellipsis, *(slice(None, None, s) for s in spec.stride))]
    positions = prod(padded.shape[2:])  # explicit: with no input channels, -1 would be ambiguous
    return padded.reshape(spec.batch, spec.groups, spec.in_channels_per_group, positions)


def _pointwise(padded: np.ndarray, filters: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A 1×1 convolution: per sample, ``(G, O, C) @ (G, C, positions)``; only a stride copies.

    Small images go batch-wide instead: ``(G, O, C) @ (G, C, N*positions)``, one
    copy of the input into that order and one of the product back.
    """
    groups, c, o = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    positions = _pointwise_positions(padded, spec)  # (N, G, C, P)
    if spec.batch > 1 and positions.shape[-1] < POINTWISE_BATCH_WIDE_POSITIONS:
        batch_wide = positions.transpose(1, 2, 0, 3).reshape(groups, c, spec.batch * positions.shape[-1])  # a copy
        product = np.matmul(filters, batch_wide).reshape(groups, o, spec.batch, -1)  # (G, O, N, P)
        return np.ascontiguousarray(product.transpose(2, 0, 1, 3)).reshape(spec.output_shape)
    product = np.matmul(filters, positions)  # (N, G, O, P)
    return product.reshape(spec.output_shape)


def _per_sample_products_win(spec: ConvSpec) -> bool:
    """Whether a 1×1 weight gradient is cheaper per sample than as one product over the whole batch.

    Per sample, nothing is copied but ``N`` partial ``(O, C)`` results are summed;
    one product needs ``g`` and the input regrouped as ``(O, N*P)`` and ``(N*P, C)``
    first. Summing moves ``N*O*C`` values and regrouping ``N*P*(O + C)``; the
    smaller wins (large images per sample, small ones batch-wide: measured 1.5×
    faster per sample at 56×56 with 64 channels, 2× slower at 7×7 with 2048).
    """
    o, c = spec.out_channels_per_group, spec.in_channels_per_group
    return prod(spec.output_size) * (o + c) >= o * c


def _pointwise_weight_grad(padded: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A 1×1 convolution's weight gradient: per sample ``(G, O, P) @ (G, P, C)``, summed over the batch.

    Each product runs over all of a sample's positions, straight from ``g`` and
    the input (a transposed view; only a stride copies), with no unrolled columns.
    """
    positions = _pointwise_positions(padded, spec)  # (N, G, C, P)
    rows = grad_output.reshape(spec.batch, spec.groups, spec.out_channels_per_group, -1)  # (N, G, O, P)
    per_sample = np.matmul(rows, positions.transpose(0, 1, 3, 2))  # (N, G, O, C)
    return per_sample.sum(axis=0).reshape(spec.weight_shape)


def _wide(spec: ConvSpec) -> bool:
    """Stride 1 everywhere: every tap is a constant shift of the flattened padded input."""
    return all(s == 1 for s in spec.stride)


#: Most extra columns gemm accepts for contiguous copies, as a ratio of wide to real row positions.
WIDE_WASTE = 1.1


def _gemm_wide(spec: ConvSpec) -> bool:
    """Whether gemm's columns run over the padded grid: stride 1, and few wasted columns.

    Wide rows make each tap's copy one contiguous run but compute the
    ``padded - output`` extra columns of every row; on small images (7×7 padded
    to 9×9) that is 65% more work, and the exact (strided) copy wins.
    """
    waste = prod(spec.padded_size[1:]) / max(prod(spec.output_size[1:]), 1)
    return _wide(spec) and waste <= WIDE_WASTE


#: Output rows shorter than this make gemm's strided copies slow (a short inner loop per row).
SHORT_ROW = 16


def _batch_inner(spec: ConvSpec, itemsize: int) -> bool:
    """Whether gemm unrolls with the batch as the innermost axis: small images, many of them, all in one block.

    With 4×4 outputs the usual copy moves runs of 4 values; with the batch innermost
    every run is ``N`` values long (batch-inner copies measured 2-3× faster on
    (32, 16, 4, 4) inputs, the size of a small CNN's later layers). Only when the
    whole unrolled input fits one cache-sized block, so no blocking is needed.
    """
    if _is_pointwise(spec) or _gemm_wide(spec):
        return False
    row = spec.output_size[-1]
    unrolled = spec.in_channels * prod(spec.kernel_size) * prod(spec.output_size) * spec.batch * itemsize
    return row < SHORT_ROW and spec.batch >= 2 * row and unrolled <= min(CACHE_BLOCK_BYTES, current_workspace_limit())


def _batch_inner_columns(padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The unrolled input ``(G, C*K, P*N)`` with the batch innermost: one transpose, one strided copy."""
    groups, c, rank = spec.groups, spec.in_channels_per_group, spec.rank
    moved = np.ascontiguousarray(np.moveaxis(padded, 0, -1))  # (G*C, *padded, N)
    plane_strides = moved.strides[1:1 + rank]
    # View (G*C, *kernel, *out, N): tap j of output position p reads padded[p*s + j*d].
    view = np.lib.stride_tricks.as_strided(
        moved,
        shape=(moved.shape[0], *spec.kernel_size, *spec.output_size, spec.batch),
        strides=(moved.strides[0], *(st * d for st, d in zip(plane_strides, spec.dilation)),
                 *(st * s for st, s in zip(plane_strides, spec.stride)), moved.strides[-1]),
        writeable=False,
    )
    return np.ascontiguousarray(view).reshape(groups, c * prod(spec.kernel_size), -1)


#: An unrolled block holds at least this many columns (positions) where that takes more than
#: ``MIN_BLOCK_BYTES``: with deep columns (many channels times taps) a cache-sized block is too
#: narrow for the product's BLAS call to reach its peak (VGG's 512-channel 3x3 layer ran 12%
#: faster in 2048-column blocks of 36 MiB than in 8 MiB ones)...
BLOCK_COLUMNS = 2048
#: ... within these bounds on its bytes (the workspace limit comes on top). Below the lower one a
#: block is cache-sized, which suits shallow columns: the copy's writes are still cached when the
#: product reads them (smaller blocks measured faster on some layers, slower on folded's).
MIN_BLOCK_BYTES = CACHE_BLOCK_BYTES
MAX_BLOCK_BYTES = 64 * 2**20


def _rows_per_block(row_bytes: int, row_columns: int) -> int:
    """Rows of ``row_bytes`` (holding ``row_columns`` columns) in one unrolled block: at least one."""
    target = max(MIN_BLOCK_BYTES, row_bytes * BLOCK_COLUMNS // max(row_columns, 1))
    return max(1, min(current_workspace_limit(), MAX_BLOCK_BYTES, target) // max(row_bytes, 1))


def _block_bytes(per_row: int, rows: int, row_columns: int) -> int:
    """The largest block :func:`_unrolled_blocks` makes of ``rows`` rows of ``per_row`` bytes: as many as
    :func:`_rows_per_block` allows, never more than there are."""
    return per_row * min(rows, _rows_per_block(per_row, row_columns))


def _row_bytes(spec: ConvSpec, itemsize: int, wide: bool | None = None) -> int:
    """Bytes of unrolled columns for one sample and one index of the first output axis (``wide``: as in
    :func:`_unrolled_blocks`)."""
    return spec.in_channels * prod(spec.kernel_size) * prod(_grid(spec, wide)) * itemsize


def _unrolled_blocks(padded: np.ndarray, spec: ConvSpec, scratch_per_column: int = 0, wide: bool | None = None,
                     ) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]]:
    """Yield ``((n0, n1, r0, r1), columns, grid)`` blocks of the unrolled input.

    ``columns`` is ``(G, C*K, nb*rows*prod(grid))`` for samples ``n0:n1`` and first
    output axis ``r0:r1``; ``grid`` is the shape of the trailing positions of a
    row (the padded sizes when wide, else the output sizes). One buffer is reused.
    ``scratch_per_column``: bytes the caller keeps per column beside the block
    (its product), counted in the block's size. ``wide=False`` forces exact
    columns where :func:`_gemm_wide` would choose wide rows.
    """
    groups, c = spec.groups, spec.in_channels_per_group
    taps = prod(spec.kernel_size)
    wide = _gemm_wide(spec) and wide is not False
    grid = _grid(spec, wide)
    row_bytes = _row_bytes(spec, padded.itemsize, wide) + scratch_per_column * prod(grid)
    rows_fit = _rows_per_block(row_bytes, prod(grid))
    rows_total, batch = spec.output_size[0], spec.batch
    if rows_fit >= rows_total:
        samples = max(1, min(batch, rows_fit // rows_total))
        blocks = [(n, min(n + samples, batch), 0, rows_total) for n in range(0, batch, samples)]
    else:
        blocks = [(n, n + 1, r, min(r + rows_fit, rows_total)) for n in range(batch) for r in range(0, rows_total, rows_fit)]
    largest = max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in blocks) * prod(grid)
    buffer = np.empty(groups * c * taps * largest, dtype=padded.dtype)
    if wide:
        plane = prod(spec.padded_size[1:])  # positions in one row of the first axis
        flat = padded.reshape(batch, groups, c, prod(spec.padded_size))  # (N, G, C, T); explicit: C may be 0
        total = flat.shape[-1]
        strides = [prod(spec.padded_size[i + 1:]) for i in range(spec.rank)]
        offsets = [sum(j * d * st for j, d, st in zip(tap, spec.dilation, strides)) for tap in np.ndindex(*spec.kernel_size)]
    else:
        windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    for n0, n1, r0, r1 in blocks:
        nb, rows = n1 - n0, r1 - r0
        count = nb * rows * prod(grid)
        if wide:
            length = rows * plane
            columns = buffer[: groups * c * taps * count].reshape(groups, c, taps, nb, length)
            for t, offset in enumerate(offsets):
                start = r0 * plane + offset
                available = max(0, min(length, total - start))
                source = flat[n0:n1, :, :, start:start + available]  # (nb, G, C, available), contiguous runs
                columns[:, :, t, :, :available] = source.transpose(1, 2, 0, 3)
                if available < length:  # past the input's end: only cropped columns read these
                    columns[:, :, t, :, available:] = 0
        else:
            view = windows[n0:n1, :, r0:r1]  # (nb, G*C, rows, *out_rest, *kernel)
            view = view.reshape(nb, groups, c, *view.shape[2:])
            rank = spec.rank
            view = view.transpose(1, 2, *range(3 + rank, 3 + 2 * rank), 0, *range(3, 3 + rank))  # (G, C, *k, nb, rows, *rest)
            columns = buffer[: groups * c * taps * count].reshape(view.shape)
            np.copyto(columns, view)
        yield (n0, n1, r0, r1), columns.reshape(groups, c * taps, count), grid


class Folded(Algorithm):
    """gemm with the last kernel axis folded into the product's rows: a third of the copies for 3-tap kernels.

    A convolution sums over the last axis's taps ``f`` the products of the
    filters' slice ``w[..., f]`` with the input shifted ``f*d`` along that axis.
    So unroll only the other axes' taps (``C*K/K_L`` values per position, with
    every column of the padded last axis) and multiply once by the filters
    stacked along that axis, ``(K_L*O, C*K/K_L)``: row block ``f`` of the
    product, shifted left ``f*d`` columns, is tap ``f``'s share of the output,
    and the shares are added (within each row, so blocks of rows stay
    independent). Against gemm the copies shrink by ``K_L`` and the product
    gets ``K_L`` times more rows (faster BLAS when filters are few: a 3-d layer
    with 32 filters ran 1.5-2x faster), at the cost of the ``(K_L - 1)*d``
    columns computed past each row's end (gemm's wide rows compute them too)
    and ``K_L - 1`` additions over the output. Needs stride 1 along the last axis.
    """

    name = "folded"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if spec.stride[-1] != 1:
            return f"stride {spec.stride}: the folded taps need stride 1 along the last axis"
        if spec.kernel_size[-1] == 1:
            return f"kernel {spec.kernel_size}: one tap along the last axis leaves nothing to fold (that is gemm)"
        return None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        rest = _rest_spec(spec)
        per_row = _row_bytes(rest, itemsize) + _folded_product_bytes(spec, itemsize) * prod(_grid(rest))
        filters = prod(spec.weight_shape) * itemsize  # stacked along the last axis: a copy
        return _block_bytes(per_row, spec.batch * rest.output_size[0], prod(_grid(rest))) + filters

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, o, rank = spec.groups, spec.out_channels_per_group, spec.rank
        taps, reach = spec.kernel_size[-1], spec.dilation[-1]
        rest = _rest_spec(spec)
        filters = _folded_filters(kernel, spec)  # (G, K_L*O, C*K_rest)
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        grouped = out.reshape(spec.batch, groups, o, *spec.output_size)  # a view: results are written through it
        buffer = None
        for (n0, n1, r0, r1), columns, grid in _unrolled_blocks(padded, rest, _folded_product_bytes(spec, padded.itemsize)):
            if buffer is None:
                buffer = np.empty((groups, taps * o, columns.shape[-1]), dtype=padded.dtype)
            product = np.matmul(filters, columns, out=buffer[..., :columns.shape[-1]])
            shares = product.reshape(groups, taps, o, n1 - n0, r1 - r0, *grid)  # (G, K_L, O, nb, rows, *grid)
            if rank == 1:  # the folded axis is the blocked one: shares cross blocks
                for f in range(taps):
                    rows, source = _crossing_share(spec, f, r0, r1)
                    target = grouped[n0:n1, :, :, rows]
                    share = shares[:, f, :, :, source].transpose(2, 0, 1, 3)  # (nb, G, O, positions)
                    # Output x's f = 0 share comes first (its block is never later, and f = 0 goes
                    # first within a block): assign it, add the rest.
                    if f == 0:
                        np.copyto(target, share)
                    else:
                        np.add(target, share, out=target)
                continue
            # Add the shares up in the product's own layout (contiguous runs), then one copy into the output.
            total = shares[:, 0][_share(spec, 0)]
            for f in range(1, taps):
                total += shares[:, f][_share(spec, f * reach)]
            np.copyto(grouped[n0:n1, :, :, r0:r1], total.transpose(2, 0, 1, *range(3, 3 + rank)))
        return out

    def weight_grad(self, padded: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """The forward's fold in reverse: ``columns @ (K_L*O, positions).T`` summed over blocks, ``(G*O, C, *kernel)``.

        Row block ``f`` of the right factor is ``g`` moved right ``f*d`` columns
        (zero on the columns no output reads through tap ``f``), so one product
        with ``K_L*O`` columns gives every last-axis tap's gradient.
        """
        if not all_finite(padded):
            # Every tap's product reads every column, most times a zero of g: 0 * inf would be NaN.
            return Gemm().weight_grad(padded, grad_output, spec)  # exact columns for such inputs
        groups, o, c, rank = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group, spec.rank
        taps, reach = spec.kernel_size[-1], spec.dilation[-1]
        rest = _rest_spec(spec)
        total = np.zeros((groups, c * prod(rest.kernel_size), taps * o), dtype=padded.dtype)  # columns @ moved.T
        buffer = None
        for (n0, n1, r0, r1), columns, grid in _unrolled_blocks(padded, rest, _folded_product_bytes(spec, padded.itemsize)):
            if buffer is None:
                buffer = np.zeros(groups * taps * o * columns.shape[-1], dtype=padded.dtype)
            count = columns.shape[-1]
            moved = buffer[:groups * taps * o * count].reshape(groups, taps, o, n1 - n0, r1 - r0, *grid)
            if rank > 1:
                block = grad_output[n0:n1, :, r0:r1].reshape(n1 - n0, groups, o, r1 - r0, *spec.output_size[1:])
                block = block.transpose(1, 2, 0, *range(3, 3 + rank))  # (G, O, nb, rows, *out_rest)
            moved[...] = 0  # every cell outside a tap's share reads as zero
            for f in range(taps):
                if rank == 1:  # shares cross blocks
                    rows, source = _crossing_share(spec, f, r0, r1)
                    moved[:, f, :, :, source] = grad_output[n0:n1, :, rows].reshape(
                        n1 - n0, groups, o, -1).transpose(1, 2, 0, 3)
                else:
                    moved[:, f][_share(spec, f * reach)] = block
            total += np.matmul(columns, moved.reshape(groups, taps * o, count).transpose(0, 2, 1))
        grad = total.reshape(groups, c, prod(rest.kernel_size), taps, o).transpose(0, 4, 1, 2, 3)  # (G, O, C, K_rest, K_L)
        return np.ascontiguousarray(grad).reshape(spec.weight_shape)


def _share(spec: ConvSpec, shift: int) -> tuple[slice, ...]:
    """Where one last-axis tap's share of the output sits in a block of :class:`Folded`'s product (rank > 1).

    Indexes ``(G, O, nb, rows, *grid)``: the output's extent on the middle
    axes, and the last axis moved ``shift`` columns along.
    """
    middle = tuple(slice(0, size) for size in spec.output_size[1:-1])
    return (Ellipsis, *middle, slice(shift, shift + spec.output_size[-1]))


def _crossing_share(spec: ConvSpec, tap: int, r0: int, r1: int) -> tuple[slice, slice]:
    """In 1-d, the output positions tap ``tap``'s share of padded positions ``r0:r1`` lands on, and where it sits.

    Padded position ``r`` gives output ``r - tap*d``; only those in ``[0, output)`` exist.
    """
    shift = tap * spec.dilation[-1]
    low, high = max(r0, shift), min(r1, spec.output_size[-1] + shift)
    high = max(high, low)
    return slice(low - shift, high - shift), slice(low - r0, high - r0)


def _rest_spec(spec: ConvSpec) -> ConvSpec:
    """The problem :class:`Folded` unrolls: the padded input, one tap along the last axis (every column out)."""
    return dataclasses.replace(spec, input_size=spec.padded_size, padding=((0, 0),) * spec.rank,
                               kernel_size=(*spec.kernel_size[:-1], 1), dilation=(*spec.dilation[:-1], 1))


def _grid(spec: ConvSpec, wide: bool | None = None) -> tuple[int, ...]:
    """Trailing positions of one unrolled row: the padded sizes over wide rows, else the output's
    (``wide`` None: as :func:`_gemm_wide` chooses; see :func:`_unrolled_blocks`)."""
    return tuple(spec.padded_size[1:]) if (_gemm_wide(spec) if wide is None else wide) else tuple(spec.output_size[1:])


def _folded_filters(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``(G*O, C, *rest, K_L)`` filters as ``(G, K_L*O, C*K_rest)``: rows ordered (last-axis tap, filter)."""
    groups, o, c, taps = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group, spec.kernel_size[-1]
    depth = c * prod(spec.kernel_size[:-1])
    kernel = kernel.reshape(groups, o, depth, taps)
    return np.ascontiguousarray(kernel.transpose(0, 3, 1, 2)).reshape(groups, taps * o, depth)


def _folded_product_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes of :class:`Folded`'s product per unrolled column: ``K_L`` values per filter."""
    return spec.kernel_size[-1] * spec.out_channels * itemsize


class Shifted(Algorithm):
    """Implicit (shifted) GEMM: one matrix product per kernel tap, accumulated; nothing unrolled.

    Tap ``j`` of every window reads the padded input at ``o*s + j*d``. Split the
    padded input into its ``s`` phases per axis (residues mod the stride; no
    copy at stride 1): tap ``j`` then reads phase ``(j*d) mod s`` at ``o +
    (j*d) div s``, a constant shift. Over the flattened phase grid ("wide" rows,
    cropped at the end) that is one contiguous run per (channel, tap), so each
    tap is ``(G, O, C) @ (G, C, positions)`` straight from the input's memory.
    Memory: the phases (the input's size, only when strided) and the wide output.
    """

    name = "shifted"

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        phases = 0 if _wide(spec) else prod(spec.input_shape[:2]) * prod(_phase_size(spec)) * prod(spec.stride)
        wide_out = 2 * spec.batch * spec.out_channels * spec.output_size[0] * prod(_phase_size(spec)[1:])
        return (phases + wide_out) * itemsize

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, c, o = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
        grid = _PhaseGrid(padded, spec)
        phases = grid.phases.reshape(spec.batch, groups, c, *grid.phases.shape[2:])  # (N, G, C, S, T)
        weights = kernel.reshape(groups, o, c, -1)  # (G, O, C, K)
        accumulated = np.zeros((spec.batch, groups, o, grid.length), dtype=padded.dtype)  # (N, G, O, L)
        scratch = np.empty_like(accumulated[0])
        taps = list(grid.taps())
        for n in range(spec.batch):  # one sample at a time: its accumulator stays in cache across taps
            for t, (phase, offset, available) in enumerate(taps):
                source = phases[n, :, :, phase, offset:offset + available]  # (G, C, available): contiguous runs
                np.matmul(weights[..., t], source, out=scratch[..., :available])
                accumulated[n, ..., :available] += scratch[..., :available]  # beyond: only cropped columns
        return grid.crop(accumulated.reshape(spec.batch, spec.out_channels, grid.length))


def _phase_size(spec: ConvSpec) -> tuple[int, ...]:
    """Size of each stride phase of the padded input (the largest, residue 0): ``ceil(P / s)``."""
    return tuple(-(-p // s) for p, s in zip(spec.padded_size, spec.stride))


class _PhaseGrid:
    """The padded input as stride phases over a flattened grid, where every tap is a constant shift.

    ``phases`` is ``(N, C_in, S, T)``: ``S`` residues (product of the strides;
    1, and no copy, at stride 1) of ``T`` flattened positions each. Output
    position ``o`` reads, for tap ``j``, phase ``(j*d) mod s`` at ``o + (j*d) div s``;
    over "wide" rows (``length`` positions: the first output axis times the
    phase grid's trailing size) that is one contiguous run per tap.
    """

    def __init__(self, padded: np.ndarray, spec: ConvSpec):
        self.spec = spec
        self.size = _phase_size(spec)
        if _wide(spec):
            self.phases = padded.reshape(spec.batch, spec.in_channels, 1, -1)
        else:
            grid = np.zeros((spec.batch, spec.in_channels, *spec.stride, *self.size), dtype=padded.dtype)
            for residue in np.ndindex(*spec.stride):
                part = padded[(Ellipsis, *(slice(r, None, s) for r, s in zip(residue, spec.stride)))]
                grid[(slice(None), slice(None), *residue, *(slice(0, n) for n in part.shape[2:]))] = part
            self.phases = grid.reshape(spec.batch, spec.in_channels, prod(spec.stride), -1)
        self.strides = [prod(self.size[i + 1:]) for i in range(spec.rank)]
        self.length = spec.output_size[0] * self.strides[0]

    def taps(self) -> Iterator[tuple[int, int, int]]:
        """``(phase, offset, available)`` per kernel tap, row-major: where its run starts and how much exists."""
        spec, total = self.spec, self.phases.shape[-1]
        for tap in np.ndindex(*spec.kernel_size):
            reach = [j * d for j, d in zip(tap, spec.dilation)]
            phase = int(np.ravel_multi_index([r % s for r, s in zip(reach, spec.stride)], spec.stride))
            offset = sum((r // s) * st for r, s, st in zip(reach, spec.stride, self.strides))
            yield phase, offset, max(0, min(self.length, total - offset))

    def crop(self, wide: np.ndarray) -> np.ndarray:
        """``(N, C_out, length)`` over wide rows to ``(N, C_out, *output_size)``."""
        spec = self.spec
        wide = wide.reshape(spec.batch, spec.out_channels, spec.output_size[0], *self.size[1:])
        cropped = wide[(Ellipsis, *(slice(0, n) for n in spec.output_size[1:]))]
        return np.ascontiguousarray(cropped).reshape(spec.output_shape)


# --------------------------------------------------------------------------- depthwise
#
# Depthwise convolution (one input channel per group) and its two gradients.
# Nothing here is a matrix product over one tiny matrix per group: per block of
# (sample, groups), every kernel tap's run is copied into columns that stay in
# cache, and one product per channel does all of that channel's multiply-adds
# in a single fused pass of the BLAS. A block pads (and, at a stride, splits into
# phases) only its own channels, so no padded copy of the whole batch is made,
# and blocks are shared among threads (NumPy and the BLAS release the GIL).
#
# Axis legend: B groups in a block, C input channels per group (1 for depthwise;
# a few for the input gradient), M or O output channels per group (the channel
# multiplier), S stride phases, K kernel taps, L wide output positions.

#: Target bytes of one block's output (its wide rows). Larger blocks mean fewer,
#: longer NumPy calls (less time in Python and in handing the GIL between
#: threads); smaller ones keep the block's working set in cache. Measured best on
#: the MobileNet layers on the 2-core reference machine.
DEPTHWISE_BLOCK_BYTES = 512 * 2**10
#: Target bytes of one block's unrolled columns (every tap's run, side by side);
#: taller blocks go through them in chunks of output rows.
DEPTHWISE_COLUMN_BYTES = 8 * 2**20
#: Below this many multiply-adds a call runs on the calling thread alone: handing
#: blocks to other threads costs tens of microseconds.
DEPTHWISE_PARALLEL_WORK = 2**20
#: Threads the depthwise passes use (:func:`convolab._settings.current_thread_count`: a
#: ``thread_count`` block, ``CONVOLAB_THREADS``, the BLAS's variables, else the usable cores).
depthwise_threads = current_thread_count
#: One block of work: sample ``n``, groups ``g0:g1``.
_Job = tuple[int, int, int]

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
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convolab-depthwise")
            _pool_workers = workers
        return _pool


def _in_parallel(jobs: Sequence[_Job], make_worker: Callable[[], Callable[[_Job], None]], work: int) -> None:
    """Run every job exactly once, on up to :func:`depthwise_threads` threads.

    ``make_worker`` is called once per thread and returns the function that runs
    one job with that thread's scratch buffers. Jobs write disjoint parts of
    their outputs, so which thread runs which job changes no result. The
    calling thread works too; the others come from a shared pool.
    """
    threads = min(depthwise_threads(), len(jobs)) if work >= DEPTHWISE_PARALLEL_WORK else 1
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


class _DepthwiseLayout:
    """Where every kernel tap reads in a block's grid, how the grid is filled, and how work is blocked.

    Output position ``o`` reads, for tap ``j``, the padded input at ``o*s + j*d``.
    Laid out over "wide" rows (the grid's trailing sizes, cropped at the end),
    every tap is one contiguous run per channel, at a constant offset, and the
    taps that share a grid form a regular lattice of runs: one strided view.
    Each block (sample ``n``, channels ``c0:c1``) copies its channels into a
    grid buffer of one of two kinds:

    - direct (stride 1, zero padding, output no wider than the input on any
      trailing axis): the input as it is, with zeros before and after each
      channel (``lead`` and the slack past ``total``) for the rows the padding
      adds. A run that would cross the padding on a trailing axis wraps to the
      neighbouring row instead; those positions are the tap's ``masks`` and
      are zeroed. Where the output has the input's trailing sizes, nothing is
      cropped.
    - phases (otherwise): the padded input split into its ``s`` stride phases
      per axis (residues mod the stride), the padding as zeros; tap ``j`` reads
      phase ``(j*d) mod s`` at ``o + (j*d) div s``. Per axis, the taps of one
      phase are ``j0 + q*(s/g)`` (``g = gcd(s, d)``) and reach ``(j0*d) div s +
      q*(d/g)``: a lattice again.

    ``padding`` is what the blocks add around ``source``; an input already
    padded comes with none.
    """

    def __init__(self, spec: ConvSpec, itemsize: int, padding: Sequence[tuple[int, int]]):
        self.spec, self.itemsize = spec, itemsize
        rank = spec.rank
        source = tuple(p - low - high for p, (low, high) in zip(spec.padded_size, padding))
        self.direct = _wide(spec) and all(o <= x for o, x in zip(spec.output_size[1:], source[1:]))
        self.size = source if self.direct else _phase_size(spec)  # the grid's shape, per phase
        self.phases = 1 if self.direct else prod(spec.stride)
        self.row = prod(self.size[1:])  # wide positions per row of the first output axis
        self.total = prod(self.size)
        self.length = spec.output_size[0] * self.row
        self.in_place = tuple(self.size[1:]) == tuple(spec.output_size[1:])  # no cropped columns
        strides = [prod(self.size[i + 1:]) for i in range(rank)]
        # (phase, offset of tap 0, taps per axis, offset step per axis, kernel indices) per lattice
        self.classes: list[tuple[int, int, tuple[int, ...], tuple[int, ...], list[int]]] = []
        self.masks: list[tuple[int, int, slice]] = []  # (axis, tap index on it, output positions read from padding)
        self.parts: list[tuple[tuple[slice, ...], tuple[slice, ...]]] = []  # per phase: (grid cells, source samples)
        if self.direct:
            shifts = [[j * d - low for j in range(k)]  # read position o + shift, per axis and tap
                      for k, d, (low, _) in zip(spec.kernel_size, spec.dilation, padding)]
            first = sum(s[0] * st for s, st in zip(shifts, strides))
            last = sum(s[-1] * st for s, st in zip(shifts, strides))
            self.lead = max(0, -first)  # zeros before each channel: the rows above it
            self.classes.append((0, self.lead + first, tuple(spec.kernel_size),
                                 tuple(d * st for d, st in zip(spec.dilation, strides)),
                                 list(range(prod(spec.kernel_size)))))
            for axis in range(1, rank):
                out, extent = spec.output_size[axis], self.size[axis]
                for j, e in enumerate(shifts[axis]):
                    if e < 0:
                        self.masks.append((axis, j, slice(0, min(out, -e))))
                    if extent - e < out:
                        self.masks.append((axis, j, slice(max(0, extent - e), out)))
        else:
            self.lead, last = 0, 0
            for residue in np.ndindex(*spec.stride):
                starts, counts, steps = [], [], []
                for r, k, s, d, st in zip(residue, spec.kernel_size, spec.stride, spec.dilation, strides):
                    step = s // gcd(s, d)
                    j0 = next((j for j in range(min(k, step)) if (j * d) % s == r), None)
                    if j0 is None:
                        break
                    starts.append(j0)
                    counts.append(len(range(j0, k, step)))
                    steps.append((d // gcd(s, d)) * st)
                else:
                    base = sum((j * d // s) * st for j, d, s, st in zip(starts, spec.dilation, spec.stride, strides))
                    indices = [int(np.ravel_multi_index([j0 + q * (s // gcd(s, d)) for j0, q, s, d
                                                         in zip(starts, qs, spec.stride, spec.dilation)],
                                                        spec.kernel_size)) for qs in np.ndindex(*counts)]
                    self.classes.append((int(np.ravel_multi_index(residue, spec.stride)), base, tuple(counts),
                                         tuple(steps), indices))
                    last = max(last, base + sum((c - 1) * st for c, st in zip(counts, steps)))
                cells, samples = [], []
                for r, s, (low, _), extent in zip(residue, spec.stride, padding, source):
                    first_cell = max(0, -(-(low - r) // s))  # first u with r + s*u inside the source
                    stop = max(first_cell, -(-(low + extent - r) // s))  # past the last such u
                    begin = r + s * first_cell - low
                    cells.append(slice(first_cell, stop))
                    samples.append(slice(begin, begin + s * (stop - first_cell - 1) + 1, s) if stop > first_cell
                                   else slice(0, 0))
                self.parts.append((tuple(cells), tuple(samples)))
        # Room past the end so that every tap's run lies inside the grid, whole.
        self.stored = self.lead + max(self.total, last + self.length)
        self.work = prod(spec.output_shape) * spec.in_channels_per_group * prod(spec.kernel_size)  # multiply-adds
        self.order = [index for *_, indices in self.classes for index in indices]  # taps in column order

    def taps(self) -> Iterator[tuple[int, int, int, list[tuple[int, slice]]]]:
        """``(kernel index, phase, offset, masks)`` per tap: where its run starts in the grid."""
        for phase, base, counts, steps, indices in self.classes:
            for qs, index in zip(np.ndindex(*counts), indices):
                taps = np.unravel_index(index, self.spec.kernel_size)
                masks = [(axis, positions) for axis, j, positions in self.masks if taps[axis] == j]
                yield index, phase, base + sum(q * st for q, st in zip(qs, steps)), masks

    def blocks(self) -> tuple[list[_Job], int]:
        """The jobs ``(n, g0, g1)`` (sample, groups) and the most groups in one.

        Groups per block: as many as keep the block's wide rows near
        :data:`DEPTHWISE_BLOCK_BYTES`, fewer where that leaves too few blocks to
        share among the threads.
        """
        spec = self.spec
        per_group = max(spec.out_channels_per_group, spec.in_channels_per_group) * self.length * self.itemsize
        groups = max(1, min(spec.groups, DEPTHWISE_BLOCK_BYTES // max(per_group, 1)))
        wanted = 2 * depthwise_threads()  # enough blocks that the threads finish together
        parallel = self.work >= DEPTHWISE_PARALLEL_WORK
        if parallel and spec.batch * -(-spec.groups // groups) < wanted:
            groups = max(1, min(groups, spec.groups * spec.batch // wanted))
        jobs = [(n, g0, min(spec.groups, g0 + groups))
                for n in range(spec.batch) for g0 in range(0, spec.groups, groups)]
        return jobs, groups

    def chunk_rows(self, groups: int, taps: int) -> int:
        """Output rows per chunk, so that a block's unrolled columns stay near :data:`DEPTHWISE_COLUMN_BYTES`."""
        per_row = groups * self.spec.in_channels_per_group * taps * self.row * self.itemsize
        return max(1, min(self.spec.output_size[0], DEPTHWISE_COLUMN_BYTES // max(per_row, 1)))

    def grid_buffer(self, channels: int, dtype: np.dtype) -> np.ndarray:
        """Zeroed scratch for one block's grid, ``(B, S, stored)``.

        The cells no source sample lands on (padding, guards, a phase's short
        end) are never written by :meth:`grid`, so they keep these zeros.
        """
        return np.zeros((channels, self.phases, self.stored), dtype=dtype)

    def _phase(self, grid: np.ndarray, index: int) -> np.ndarray:
        """Phase ``index`` of a ``(B, S, stored)`` phase grid as ``(B, *size)``, a view."""
        return grid[:, index, :self.total].reshape(grid.shape[0], *self.size)

    def grid(self, source: np.ndarray, n: int, c0: int, c1: int, buffer: np.ndarray) -> np.ndarray:
        """Channels ``c0:c1`` of sample ``n`` copied into their ``(B, S, stored)`` grid."""
        grid = buffer[: c1 - c0]
        if self.direct:
            grid[:, 0, self.lead:self.lead + self.total] = source[n, c0:c1].reshape(c1 - c0, self.total)
            return grid
        for index, (cells, samples) in enumerate(self.parts):
            self._phase(grid, index)[(slice(None), *cells)] = source[(n, slice(c0, c1), *samples)]
        return grid

    def ungrid(self, grid: np.ndarray, target: np.ndarray) -> None:
        """The adjoint of :meth:`grid`: every source sample's cell back to ``target`` ``(B, *source)``.

        Each source sample has exactly one cell, so ``target`` is wholly
        written; what the padding cells hold is dropped.
        """
        if self.direct:
            target.reshape(grid.shape[0], self.total)[...] = grid[:, 0, self.lead:self.lead + self.total]
            return
        for index, (cells, samples) in enumerate(self.parts):
            target[(slice(None), *samples)] = self._phase(grid, index)[(slice(None), *cells)]

    def masked_columns(self, columns: np.ndarray, rows: int) -> list[np.ndarray]:
        """Views of unrolled ``columns`` ``(B, K, rows*row)`` at the samples a direct read wrapped: to be zeroed.

        Made once per buffer (see :class:`_Unroller`); they cover every tap at once.
        """
        if not self.masks:
            return []
        rank = self.spec.rank
        shaped = columns.reshape(columns.shape[0], *self.spec.kernel_size, rows, *self.size[1:])
        return [shaped[(slice(None), *(j if a == axis else slice(None) for a in range(rank)), slice(None),
                        *(positions if a == axis else slice(None) for a in range(1, rank)))]
                for axis, j, positions in self.masks]

    def clear_masks(self, masks: list[tuple[int, slice]], wide: np.ndarray) -> None:
        """Zero, in ``wide`` ``(B, M, count)``, one tap's products at positions its run wrapped."""
        if masks:
            shaped = wide.reshape(*wide.shape[:2], -1, *self.size[1:])
            for axis, positions in masks:
                shaped[(Ellipsis, *(positions if a == axis else slice(None) for a in range(1, self.spec.rank)))] = 0

    def crop(self, wide: np.ndarray, rows: int) -> np.ndarray:
        """``(B, M, rows*row)`` wide positions as ``(B*M, rows, *out_rest)``: the part that is real output."""
        shaped = wide.reshape(-1, rows, *self.size[1:])
        return shaped[(Ellipsis, *(slice(0, size) for size in self.spec.output_size[1:]))]

    def output_block(self, out: np.ndarray, n: int, c0: int, c1: int, r0: int, r1: int) -> np.ndarray | None:
        """The output's own memory for a block as ``(B, M, count)`` wide positions, if it has no cropped columns."""
        if not self.in_place:
            return None
        multiplier = self.spec.out_channels_per_group
        block = out[n, c0 * multiplier:c1 * multiplier, r0:r1]
        view = block.reshape(c1 - c0, multiplier, (r1 - r0) * self.row)  # a view where the rows are contiguous
        return view if np.may_share_memory(view, out) else None


def _offset_empty(shape: tuple[int, ...], dtype: np.dtype, other: np.ndarray) -> np.ndarray:
    """An empty array whose start lies half a page (2 KiB) past ``other``'s, modulo 4 KiB.

    Copying runs from ``other`` into it, a store and a later load that share
    their address bits below 4 KiB look dependent to the CPU ("4K aliasing");
    with power-of-two row widths every tap's copy would start that way and run
    several times slower. Half a page apart, none does.
    """
    item = np.dtype(dtype).itemsize
    raw = np.empty(prod(shape) + 4096 // item, dtype=dtype)
    shift = ((other.ctypes.data + 2048 - raw.ctypes.data) % 4096) // item
    return raw[shift:shift + prod(shape)].reshape(shape)


class _Unroller:
    """One thread's unrolled columns: its grid buffer, its columns, and the views between them, made once.

    A block's output rows go in chunks of :meth:`_DepthwiseLayout.chunk_rows`;
    for every chunk the same strided views (one per lattice, with a leading
    axis over the chunks) copy the runs into the same columns, so a chunk
    costs a few NumPy calls and no Python-side view building.
    """

    def __init__(self, layout: _DepthwiseLayout, groups: int, dtype: np.dtype):
        spec = layout.spec
        self.layout, self.per_group, self.taps = layout, spec.in_channels_per_group, len(layout.order)
        self.rows, self.chunk = spec.output_size[0], layout.chunk_rows(groups, self.taps)
        self.buffer = layout.grid_buffer(groups * self.per_group, dtype)  # (B*C, S, stored)
        self.columns = _offset_empty((groups, self.per_group * self.taps, self.chunk * layout.row), dtype, self.buffer)
        self._plans: dict[int, list[tuple[int, int, int, np.ndarray, list, list]]] = {}

    def _plan(self, size: int) -> list[tuple[int, int, int, np.ndarray, list, list]]:
        """For blocks of ``size`` groups: ``(first row, rows, chunks, columns, copies, masks)`` per chunk shape."""
        layout, channels = self.layout, size * self.per_group
        grid = self.buffer[:channels]
        item = grid.itemsize
        full, rest = divmod(self.rows, self.chunk)
        plan = []
        for first, rows, number in ((0, self.chunk, full), (full * self.chunk, rest, 1 if rest else 0)):
            if not number:
                continue
            count = rows * layout.row
            block = self.columns[:size, :, :count]  # (B, C*K, count)
            by_channel = block.reshape(channels, self.taps, count)  # a view: (B*C, K, count)
            copies, row = [], 0
            for phase, base, counts, steps, indices in layout.classes:
                # Chunk i's runs of this lattice; inside the grid, since stored covers the last tap's last run.
                runs = as_strided(grid[:, phase, first * layout.row + base:], shape=(number, channels, *counts, count),
                                  strides=(self.chunk * layout.row * item, grid.strides[0],
                                           *(step * item for step in steps), item), writeable=False)
                copies.append((by_channel[:, row:row + len(indices)].reshape(channels, *counts, count), runs))
                row += len(indices)
            plan.append((first, rows, number, block, copies, layout.masked_columns(by_channel, rows)))
        return plan

    def chunks(self, source: np.ndarray, n: int, g0: int, g1: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Copy groups ``g0:g1`` of sample ``n`` into the grid, then yield ``(r0, r1, columns)`` chunk by chunk.

        ``columns`` ``(B, C*K, (r1-r0)*row)`` holds the unrolled runs of output
        rows ``r0:r1`` until the next chunk is asked for.
        """
        self.layout.grid(source, n, g0 * self.per_group, g1 * self.per_group, self.buffer)
        plan = self._plans.get(g1 - g0)
        if plan is None:
            plan = self._plans[g1 - g0] = self._plan(g1 - g0)
        for first, rows, number, block, copies, masks in plan:
            for index in range(number):
                for destination, runs in copies:
                    np.copyto(destination, runs[index])
                for cells in masks:
                    cells[...] = 0
                r0 = first + index * rows
                yield r0, r0 + rows, block


def _zero_padded_source(x: np.ndarray, spec: ConvSpec) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """The array the blocks read and the zeros they add: ``x`` itself with zero padding, else ``x`` padded."""
    if spec.padding_mode == "zeros":
        return np.ascontiguousarray(x), spec.padding
    return np.ascontiguousarray(pad(x, spec.padding, spec.padding_mode)), tuple((0, 0) for _ in spec.padding)


class Depthwise(Algorithm):
    """Depthwise convolution (one input channel per group): a small matrix product per channel.

    For a block of channels (:class:`_DepthwiseLayout`), every tap's run over
    the wide rows is one contiguous stretch of the block's grid; copied side by
    side, the runs make ``(B, K, positions)`` columns, and ``(B, M, K) @ (B, K,
    positions)`` does all of a channel's multiply-adds in one fused pass of the
    BLAS. Unlike im2col over the whole input, the columns exist for one block
    at a time, sized to stay in cache (:data:`DEPTHWISE_BLOCK_BYTES`,
    :data:`DEPTHWISE_COLUMN_BYTES`); blocks are shared among
    :func:`depthwise_threads` threads. The gradients run on the same layout:
    :meth:`input_grad` is this forward on grad_output at stride 1 and the
    taps' runs written instead of read otherwise; :meth:`weight_grad` is the
    forward's columns times grad_output.
    """

    name = "depthwise"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if spec.in_channels_per_group != 1:
            return f"each group has {spec.in_channels_per_group} input channels; depthwise needs exactly 1"
        return None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        layout = _DepthwiseLayout(spec, itemsize, spec.padding)
        jobs, channels = layout.blocks()
        taps = prod(spec.kernel_size)
        rows = layout.chunk_rows(channels, taps) * layout.row
        per_thread = channels * (layout.phases * layout.stored + (taps + spec.out_channels_per_group) * rows) * itemsize
        return min(depthwise_threads(), len(jobs)) * per_thread

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return self._forward(np.ascontiguousarray(padded), tuple((0, 0) for _ in spec.padding), kernel, spec)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: the zeros are added block by block, in cache."""
        source, padding = _zero_padded_source(x, spec)
        return self._forward(source, padding, kernel, spec)

    def _forward(self, source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                 spec: ConvSpec) -> np.ndarray:
        """``y[n, g*O+o, p] = sum_{c, j} x_p[n, g*C+c, p*s + j*d] * k[g*O+o, c, j]``: one product per group.

        Runs for any ``C`` input channels per group (the input gradient needs a
        few); the columns of a group are ``(C*K, count)``, its product
        ``(O, C*K) @ (C*K, count)``.
        """
        layout = _DepthwiseLayout(spec, source.itemsize, padding)
        taps, dtype = len(layout.order), source.dtype
        per_group, multiplier = spec.in_channels_per_group, spec.out_channels_per_group
        weights = kernel.reshape(spec.groups, multiplier, per_group, -1)[..., layout.order]
        weights = np.ascontiguousarray(weights).reshape(spec.groups, multiplier, per_group * taps)  # (G, O, C*K)
        out = np.empty(spec.output_shape, dtype=dtype)
        jobs, groups = layout.blocks()

        def make_worker() -> Callable[[_Job], None]:
            unroller = _Unroller(layout, groups, dtype)
            wide = np.empty((groups, multiplier, unroller.chunk * layout.row), dtype=dtype)  # (B, O, count)

            def forward(job: _Job) -> None:
                n, g0, g1 = job
                for r0, r1, block in unroller.chunks(source, n, g0, g1):
                    direct = layout.output_block(out, n, g0, g1, r0, r1)  # the output itself, when not cropped
                    product = direct if direct is not None else wide[: g1 - g0, :, :block.shape[-1]]
                    np.matmul(weights[g0:g1], block, out=product)  # (B, O, C*K) @ (B, C*K, count)
                    if direct is None:
                        out[n, g0 * multiplier:g1 * multiplier, r0:r1] = layout.crop(product, r1 - r0)

            return forward

        _in_parallel(jobs, make_worker, layout.work)
        return out

    def input_grad(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """The gradient with respect to the input, ``(N, C_in, *input)``, for the oriented ``kernel``.

        At stride 1 it is a forward convolution (:meth:`_input_grad_full`); at
        other strides, where the padding outgrows the kernel, or where the
        kernel holds an inf or NaN (which the full correlation would multiply
        by its zero padding), the forward's passes transposed
        (:meth:`_input_grad_scatter`).
        """
        if _wide(spec) and all_finite(kernel):  # the full correlation would multiply an inf by its padding's zeros
            full = self._input_grad_full(grad_output, kernel, spec)
            if full is not None:
                return full
        return self._input_grad_scatter(grad_output, kernel, spec)

    def _input_grad_full(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray | None:
        """At stride 1: ``dx_p[q] = sum_{m, j} g[q - j*d] * k[m, j]``, a full correlation with the kernel reversed.

        grad_output, padded by the dilated kernel's extent less one (less the
        forward's zero padding, so that only the input's cells come out), is
        correlated with the reversed kernel; each group's ``M`` output channels
        become the ``M`` input channels of a group with one output (the
        forward's few-channels case). None where the forward's zero padding is
        wider than that, so that the cells would need cropping.
        """
        zeros = spec.padding_mode == "zeros"
        extents = [d * (k - 1) for k, d in zip(spec.kernel_size, spec.dilation)]
        lows = [(low if zeros else 0) for low, _ in spec.padding]
        highs = [(high if zeros else 0) for _, high in spec.padding]
        padding = tuple((e - low, e - high) for e, low, high in zip(extents, lows, highs))
        if min(min(pair) for pair in padding) < 0:
            return None
        groups, multiplier = spec.groups, spec.out_channels_per_group
        swapped = reverse_spatial(kernel.reshape(groups, multiplier, *spec.kernel_size), spec.rank)  # (G, M, *k)
        full = conv_spec(grad_output.shape, swapped.shape, padding=padding, dilation=spec.dilation, groups=groups,
                         op=spec.op)
        grad = self._forward(np.ascontiguousarray(grad_output), full.padding, swapped, full)  # (N, C_in, *size)
        return grad if zeros else pad_adjoint(grad, spec.padding, spec.padding_mode, spec.input_size)

    def _input_grad_scatter(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dx_p[n, c, o*s + j*d] += sum_m g[n, c*M+m, o] * k[c*M+m, 0, j]``: each tap's run written, not read.

        Per block, grad_output over the same wide rows (zero on the cropped
        columns) times the tap's weight (summed over the multiplier), its
        wrapped positions (and, with an inf or NaN in the kernel, its cropped
        columns) zeroed, is added into the zeroed grid at the tap's
        offset; the grid then goes back to the input (:meth:`_DepthwiseLayout.ungrid`,
        the transpose of padding and phasing). With a padding mode other than
        zeros the gradient is taken on the padded input and folded back by
        :func:`pad_adjoint`. Returns ``(N, C_in, *input)``.
        """
        zeros = spec.padding_mode == "zeros"
        padding = spec.padding if zeros else tuple((0, 0) for _ in spec.padding)
        layout = _DepthwiseLayout(spec, grad_output.itemsize, padding)
        dtype, multiplier = grad_output.dtype, spec.out_channels_per_group
        weights = kernel.reshape(spec.groups, multiplier, -1)  # (G, M, K)
        per_tap = np.ascontiguousarray(weights.transpose(2, 0, 1))[..., np.newaxis]  # (K, G, M, 1): scales a run
        summing = np.ascontiguousarray(weights.transpose(2, 0, 1))[:, :, np.newaxis, :]  # (K, G, 1, M): sum over M
        grad_output = np.ascontiguousarray(grad_output)
        grad = np.empty((spec.batch, spec.in_channels, *(spec.input_size if zeros else spec.padded_size)), dtype=dtype)
        jobs, channels = layout.blocks()
        taps = list(layout.taps())
        if not all_finite(kernel):  # the cropped columns' zeros times an inf would put NaN in real cells: clear them too
            cropped = [(axis, slice(out, size)) for axis, (out, size)
                       in enumerate(zip(spec.output_size, layout.size)) if axis and out < size]
            taps = [(index, phase, offset, masks + cropped) for index, phase, offset, masks in taps]

        def make_worker() -> Callable[[_Job], None]:
            buffer = layout.grid_buffer(channels, dtype)
            wide = np.zeros((channels, multiplier, layout.length), dtype=dtype)  # cropped columns stay zero
            scratch = np.empty((channels, 1, layout.length), dtype=dtype)

            def backward(job: _Job) -> None:
                n, c0, c1 = job
                block, grid, term = wide[: c1 - c0], buffer[: c1 - c0], scratch[: c1 - c0]
                g = layout.output_block(grad_output, n, c0, c1, 0, spec.output_size[0])  # a view if not cropped
                if g is None:
                    layout.crop(block, spec.output_size[0])[...] = grad_output[n, c0 * multiplier:c1 * multiplier]
                    g = block
                grid[...] = 0
                for index, phase, offset, masks in taps:
                    if multiplier == 1:
                        np.multiply(g, per_tap[index, c0:c1], out=term)
                    else:
                        np.matmul(summing[index, c0:c1], g, out=term)  # (B, 1, M) @ (B, M, L)
                    layout.clear_masks(masks, term)
                    region = grid[:, phase, offset:offset + layout.length]
                    np.add(region, term[:, 0], out=region)
                layout.ungrid(grid, grad[n, c0:c1])

            return backward

        _in_parallel(jobs, make_worker, layout.work)
        return grad if zeros else pad_adjoint(grad, spec.padding, spec.padding_mode, spec.input_size)

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dk[c*M+m, 0, j] = sum_{n, o} g[n, c*M+m, o] * x_p[n, c, o*s + j*d]``: a dot product per tap.

        Takes the unpadded input. Per block and chunk of rows, grad_output over
        the wide rows (zero on the cropped columns) against each tap's run:
        straight from the block's grid, ``(B, M, count) @ (B, count, 1)`` per
        tap, or, where direct runs wrap (masks), against the forward's
        unrolled columns with those samples zeroed, ``(B, K, count) @ (B,
        count, M)`` (measured faster there than zeroing copies of grad_output).
        Each block's sums get their own slot, added in a fixed order at the
        end, so the result does not depend on the threads. A block whose input
        holds an inf or NaN takes its real windows only (the cropped columns'
        zeros times an inf would be NaN on every tap). Returns ``(G*M, 1,
        *kernel)`` for the oriented kernel.
        """
        source, padding = _zero_padded_source(x, spec)
        layout = _DepthwiseLayout(spec, source.itemsize, padding)
        dtype, multiplier, taps = source.dtype, spec.out_channels_per_group, prod(spec.kernel_size)
        grad_output = np.ascontiguousarray(grad_output)
        jobs, groups = layout.blocks()
        partial = np.zeros((spec.batch, spec.groups, taps, multiplier), dtype=dtype)  # (N, G, K, M)
        runs = list(layout.taps())

        def make_worker() -> Callable[[_Job], None]:
            unroller = _Unroller(layout, groups, dtype) if layout.masks else None
            buffer = None if unroller else layout.grid_buffer(groups, dtype)
            chunk = unroller.chunk if unroller else layout.chunk_rows(groups, 1)
            wide = np.zeros((groups, multiplier, chunk * layout.row), dtype=dtype)  # cropped columns stay 0

            def grad_block(n: int, g0: int, g1: int, r0: int, r1: int) -> np.ndarray:
                g = layout.output_block(grad_output, n, g0, g1, r0, r1)  # grad_output itself, when not cropped
                if g is None:
                    g = wide[: g1 - g0, :, :(r1 - r0) * layout.row]
                    layout.crop(g, r1 - r0)[...] = grad_output[n, g0 * multiplier:g1 * multiplier, r0:r1]
                return g

            def weights(job: _Job) -> None:
                n, g0, g1 = job
                sums = partial[n, g0:g1]  # (B, K, M)
                if not all_finite(source[n, g0:g1]):  # the cropped columns would make an inf NaN on every tap (0 * inf)
                    windows = sliding_windows(pad(source[n, g0:g1], padding), spec.kernel_size, spec.stride,
                                              spec.dilation).reshape(g1 - g0, -1, taps)  # (B, P, K), only real windows
                    g = grad_output[n, g0 * multiplier:g1 * multiplier].reshape(g1 - g0, multiplier, -1)  # (B, M, P)
                    sums += np.matmul(windows.transpose(0, 2, 1), g.transpose(0, 2, 1))  # (B, K, M)
                    return
                if unroller is not None:  # masks come only with the direct grid, whose columns are in kernel order
                    for r0, r1, block in unroller.chunks(source, n, g0, g1):
                        sums += np.matmul(block, grad_block(n, g0, g1, r0, r1).transpose(0, 2, 1))  # (B, K, M)
                    return
                grid = layout.grid(source, n, g0, g1, buffer)  # (B, S, stored)
                for r0 in range(0, spec.output_size[0], chunk):
                    r1 = min(spec.output_size[0], r0 + chunk)
                    start, count = r0 * layout.row, (r1 - r0) * layout.row
                    g = grad_block(n, g0, g1, r0, r1)
                    for index, phase, offset, _ in runs:
                        run = grid[:, phase, start + offset:start + offset + count, np.newaxis]  # (B, count, 1)
                        sums[:, index] += np.matmul(g, run)[..., 0]  # (B, M)

            return weights

        _in_parallel(jobs, make_worker, layout.work)
        return np.ascontiguousarray(partial.sum(axis=0).transpose(0, 2, 1)).reshape(spec.weight_shape)


class Winograd(Algorithm):
    """Winograd's minimal filtering F(m^d, 3^d) for 3-tap (3×3, 3×3×3) stride-1 kernels.

    Each ``m``-wide output tile costs ``(m + 2)^d`` multiplications per (filter,
    channel) pair instead of ``(3m)^d``: 2.25× fewer for F(2×2, 3×3), 4× for
    F(4×4, 3×3) in 2-d, as batched matrix products over the transformed tiles.
    The transforms are generated and verified in :mod:`convolab.winograd`.
    Floating point only; the transforms add rounding (about 1e-6 relative in
    float32 for F(2), a few times that for F(4)).
    """

    mixes_outputs = True

    def __init__(self, tile: int):
        self.tile = tile
        self.name = f"winograd{tile}"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the transforms round"
        if np.dtype(dtype).kind == "c":
            return "complex inputs are not supported by the Winograd transforms here"
        return winograd_supports(spec)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        a = self.tile + 2
        tiles = prod(-(-o // self.tile) for o in spec.output_size)
        whole = 2 * a**spec.rank * spec.batch * tiles * (spec.in_channels + spec.out_channels) * itemsize
        return min(whole, current_workspace_limit())

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return winograd_conv(padded, kernel, spec, self.tile)


class FFT(Algorithm):
    """Products of Fourier transforms (``scipy.fft``), then every ``stride``-th sample.

    A valid correlation with kernel ``w`` is a circular convolution with the
    reversed kernel, read from offset ``k_eff - 1``; with a transform at least as
    long as the input slab, no wrapped-around sample lands in that range.
    Dilation spreads the kernel with zeros first. Never used for integers, whose
    results must be exact.

    Long inputs are cut into blocks along each axis where that is cheaper
    (overlap-save, the valid-output form of overlap-add): a block of ``B``
    outputs reads ``(B - 1) * stride + k_eff`` inputs, overlapping its neighbour
    by ``k_eff - stride``, and is transformed at a fast length chosen to minimize
    work per output (:func:`fft_block_plan`). The blocks are a strided view with
    one extra axis per blocked axis, so all of them go through one batched
    transform; they share the kernel's transform, and never need adding, even at
    stride > 1.

    The spectra stay within :func:`convolab.workspace_limit`: samples, then
    filters, are taken a few at a time (:class:`_FFTLayout`), and where even one
    sample's and one filter's spectra would not fit, the spatial blocks are
    made shorter. A problem whose smallest blocks still would not fit is refused.
    """

    name = "fft"
    mixes_outputs = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the FFT rounds"
        layout = _FFTLayout(spec, np.dtype(dtype))
        if not layout.fits:
            return (f"its smallest blocks need {layout.workspace_bytes / 2**20:.3g} MiB of spectra, over the workspace "
                    f"limit of {layout.limit / 2**20:.3g} MiB")
        return None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        return _FFTLayout(spec, np.dtype(f"f{itemsize}")).workspace_bytes

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        rank = spec.rank
        axes = tuple(range(-rank, 0))
        layout = _FFTLayout(spec, padded.dtype)
        if any(d > 1 for d in spec.dilation):
            spread = np.zeros((*kernel.shape[:2], *layout.extent), dtype=kernel.dtype)
            spread[(Ellipsis, *(slice(None, None, d) for d in spec.dilation))] = kernel
            kernel = spread
        complex_input = np.iscomplexobj(padded)
        forward = scipy.fft.fftn if complex_input else scipy.fft.rfftn
        inverse = scipy.fft.ifftn if complex_input else scipy.fft.irfftn
        groups, filters = spec.groups, spec.out_channels_per_group
        lengths = layout.lengths

        def kernel_spectra(o0: int, o1: int) -> np.ndarray:  # (G, o1-o0, C, *1 per blocked axis, *freq)
            chosen = kernel.reshape(groups, filters, *kernel.shape[1:])[:, o0:o1]
            spectra = forward(reverse_spatial(chosen, rank), s=lengths, axes=axes)
            return spectra.reshape(*spectra.shape[:3], *(1,) * rank, *spectra.shape[3:])  # broadcast over the blocks

        cached = kernel_spectra(0, filters) if layout.kernels_cached else None
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        rows_of_blocks = layout.block_counts[0]
        for n0 in range(0, spec.batch, layout.samples):
            n1 = min(spec.batch, n0 + layout.samples)
            for r0 in range(0, rows_of_blocks, layout.rows):
                r1 = min(rows_of_blocks, r0 + layout.rows)
                slab_hat = forward(layout.slabs(padded[n0:n1], r0, r1), s=lengths, axes=axes)  # (nb, G*C, rb, ..., *freq)
                slab_hat = slab_hat.reshape(n1 - n0, groups, spec.in_channels_per_group, *slab_hat.shape[2:])
                first, last = layout.output_rows(r0, r1)
                for o0 in range(0, filters, layout.filters):
                    o1 = min(filters, o0 + layout.filters)
                    kernel_hat = cached[:, o0:o1] if cached is not None else kernel_spectra(o0, o1)
                    product = np.einsum("ngc...,goc...->ngo...", slab_hat, kernel_hat)  # (nb, G, ob, rb, ..., *freq)
                    circular = inverse(product, s=lengths, axes=axes)  # (nb, G, ob, rb, *blocks, *lengths)
                    target = out[n0:n1].reshape(n1 - n0, groups, filters, *spec.output_size)[:, :, o0:o1, first:last]
                    target[...] = layout.valid_outputs(circular, last - first)
        return out


class _FFTLayout:
    """How the FFT cuts one problem so that its spectra fit the workspace limit.

    Per axis, ``block_outputs`` outputs per spatial block at transform length
    ``lengths`` (:func:`fft_block_plan`, or shorter where the limit asks).
    Each step transforms ``samples`` samples, ``rows`` blocks along the first
    axis (all blocks along the others), and takes ``filters`` filters per
    group at a time; the kernels' spectra are kept for every filter where they
    take at most half the limit (``kernels_cached``). Scratch per step: the
    slabs' spectra (and the slabs copied and zero-extended to the transform
    length on the way in, and a zero-extended copy of the samples where the last
    blocks reach past the input), the products, the inverse transforms' complex
    intermediate and real result, the valid outputs gathered out of the blocks,
    and the kernels' spectra (with their zero-extended copies).
    """

    def __init__(self, spec: ConvSpec, dtype: np.dtype):
        self.spec = spec
        self.limit = current_workspace_limit()
        self.real = np.dtype(dtype).kind != "c"
        self.itemsize = np.dtype(dtype).itemsize
        self.complex_itemsize = 2 * self.itemsize if self.real else self.itemsize
        self.extent = tuple(d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation))
        cap, previous, smallest = None, None, None
        while True:
            self.block_outputs, self.lengths = fft_block_plan(spec.padded_size, self.extent, spec.stride,
                                                              spec.output_size, max_length=cap)
            if self._choose_counts():
                return
            smallest = min(smallest or self.workspace_bytes, self.workspace_bytes)
            if self.lengths == previous or max(self.lengths) <= _FFT_SHORTEST:
                break  # the kernel allows no shorter blocks
            # Even one row of blocks of one sample with one filter is over the limit: shorter blocks.
            cap, previous = max(_FFT_SHORTEST, max(self.lengths) // 2), self.lengths
        self.workspace_bytes = smallest  # what the refusal reports: the least any blocking needs

    def _choose_counts(self) -> bool:
        spec = self.spec
        self.block_counts = tuple(-(-o // b) for o, b in zip(spec.output_size, self.block_outputs))
        self.reach = tuple((count * b - 1) * st + e for count, b, st, e in
                           zip(self.block_counts, self.block_outputs, spec.stride, self.extent))
        points = prod(self.lengths[:-1]) * (self.lengths[-1] // 2 + 1) if self.real else prod(self.lengths)
        spectrum, extended = points * self.complex_itemsize, prod(self.lengths) * self.itemsize
        row_blocks = prod(self.block_counts[1:])  # blocks in one row along the first axis
        grown = any(r > size for r, size in zip(self.reach, spec.padded_size))
        self.grows = grown
        # Bytes per (sample, row of blocks), per (sample, row, filter), per filter, and fixed per sample.
        per_row = spec.in_channels * row_blocks * (spectrum + 2 * extended)
        per_product = spec.groups * row_blocks * (2 * spectrum + extended + prod(self.block_outputs) * self.itemsize)
        per_kernel = spec.groups * spec.in_channels_per_group * (spectrum + 2 * extended)
        if grown:  # a row's input, copied into zeros that reach as far as its blocks
            step = self.block_outputs[0] * spec.stride[0]
            per_row += spec.in_channels * (step + self.extent[0]) * prod(self.reach[1:]) * self.itemsize
        per_sample = 0
        all_filters, all_rows, limit = spec.out_channels_per_group, self.block_counts[0], self.limit
        self.kernels_cached = all_filters * per_kernel <= limit // 2
        fixed_kernels, kernel_each = (all_filters * per_kernel, 0) if self.kernels_cached else (0, per_kernel)

        def total(samples: int, rows: int, filters: int) -> int:
            return (samples * (per_sample + rows * (per_row + filters * per_product))
                    + fixed_kernels + filters * kernel_each)

        samples, rows, filters = max(1, spec.batch), all_rows, all_filters
        if total(samples, rows, filters) > limit:  # fewer samples; then fewer filters; then fewer rows
            samples = max(1, (limit - total(0, rows, filters)) // max(1, total(1, rows, filters) - total(0, rows, filters)))
            if total(samples, rows, filters) > limit:
                filters = max(1, (limit - total(1, rows, 0)) // max(1, total(1, rows, 1) - total(1, rows, 0)))
                if total(samples, rows, filters) > limit:
                    rows = max(1, (limit - total(1, 0, 1)) // max(1, total(1, 1, 1) - total(1, 0, 1)))
        self.samples, self.rows, self.filters = samples, rows, filters
        self.workspace_bytes = total(samples, rows, filters)
        self.fits = self.workspace_bytes <= limit
        return self.fits

    def slabs(self, padded: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of the overlapping slabs of some samples: ``(nb, G*C, r1-r0, *blocks[1:], *slab)``.

        A view where the blocks stay inside the input. Every block is full:
        where the last blocks reach past the input, the rows' input is copied
        into zeros first; those zeros feed only outputs that
        :meth:`valid_outputs` crops.
        """
        spec = self.spec
        slab_sizes = [(b - 1) * st + e for b, st, e in zip(self.block_outputs, spec.stride, self.extent)]
        step = self.block_outputs[0] * spec.stride[0]
        start, stop = r0 * step, (r1 - 1) * step + slab_sizes[0]
        padded = padded[:, :, start:stop]
        if self.grows:
            grown = np.zeros((*padded.shape[:2], stop - start, *(max(r, size) for r, size in
                                                                   zip(self.reach[1:], spec.padded_size[1:]))),
                             dtype=padded.dtype)
            grown[(Ellipsis, *(slice(0, size) for size in padded.shape[2:]))] = padded
            padded = grown
        spatial_strides = padded.strides[2:]
        return np.lib.stride_tricks.as_strided(
            padded, shape=(*padded.shape[:2], r1 - r0, *self.block_counts[1:], *slab_sizes),
            strides=(*padded.strides[:2], *(b * st * step for b, st, step in zip(self.block_outputs, spec.stride,
                                                                                  spatial_strides)),
                     *spatial_strides),
            writeable=False)

    def output_rows(self, r0: int, r1: int) -> tuple[int, int]:
        """The outputs along the first axis that rows ``r0:r1`` of blocks give."""
        per_block, size = self.block_outputs[0], self.spec.output_size[0]
        return r0 * per_block, min(size, r1 * per_block)

    def valid_outputs(self, circular: np.ndarray, first_rows: int) -> np.ndarray:
        """The outputs in circular results ``(..., *blocks, *lengths)``: ``(..., first_rows, *output_size[1:])``."""
        spec, rank = self.spec, self.spec.rank
        valid = circular[(Ellipsis, *(slice(e - 1, e - 1 + (b - 1) * st + 1, st)
                                      for e, b, st in zip(self.extent, self.block_outputs, spec.stride)))]
        # (..., *blocks, *block_outputs) -> (..., blocks_1, outputs_1, blocks_2, ...) -> crop
        lead = valid.ndim - 2 * rank
        interleaved = valid.transpose(*range(lead), *itertools.chain.from_iterable(
            (lead + i, lead + rank + i) for i in range(rank)))
        full = interleaved.reshape(*valid.shape[:lead], *(count * b for count, b in zip(valid.shape[lead:lead + rank],
                                                                                     self.block_outputs)))
        return full[(Ellipsis, slice(0, first_rows), *(slice(0, o) for o in spec.output_size[1:]))]


#: Blocks are at least this long (a shorter transform costs more in call overhead than it saves).
FFT_MIN_BLOCK = 128
#: Blocking must save at least this fraction of the work per output to be worth its extra calls.
FFT_BLOCK_GAIN = 0.85
#: The shortest transform the workspace limit may ask for (below it, the calls' overhead dominates).
_FFT_SHORTEST = 16


def fft_block_plan(padded_size: tuple[int, ...], extent: tuple[int, ...], stride: tuple[int, ...],
                   output_size: tuple[int, ...], max_length: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per axis, how many outputs one FFT block yields and the transform length it uses.

    An axis is transformed whole (one block) unless a shorter fast length ``L``
    does less work per output: ``L log L / B`` with ``B = (L - k_eff) // stride + 1``
    outputs per block, at most :data:`FFT_BLOCK_GAIN` of the whole axis's.
    ``max_length`` (the workspace limit's) caps ``L`` where the kernel allows:
    a block must hold at least one output, ``L >= k_eff``.

    >>> fft_block_plan((100_000,), (501,), (1,), (99_500,))
    ((3550,), (4050,))
    >>> fft_block_plan((64, 64), (5, 5), (1, 1), (60, 60))  # short axes stay whole
    ((60, 60), (64, 64))
    >>> fft_block_plan((64, 64), (5, 5), (1, 1), (60, 60), max_length=32)
    ((28, 28), (32, 32))
    """
    blocks, lengths = [], []
    for size, e, st, o in zip(padded_size, extent, stride, output_size):
        whole = scipy.fft.next_fast_len(size, real=True)
        cap = whole if max_length is None else max(max_length, e)
        best_cost, best = whole * np.log2(max(whole, 2)) / max(o, 1) * FFT_BLOCK_GAIN, (o, whole)
        if whole > cap:
            best_cost, best = float("inf"), None
        length = scipy.fft.next_fast_len(max(min(FFT_MIN_BLOCK, cap), 2 * e if 2 * e <= cap else e), real=True)
        while length < whole and length <= cap:
            outputs = (length - e) // st + 1
            cost = length * np.log2(max(length, 2)) / outputs
            if cost < best_cost:
                best_cost, best = cost, (min(outputs, o), length)
            length = scipy.fft.next_fast_len(length + 1, real=True) if length < 4 * e else \
                scipy.fft.next_fast_len(2 * length, real=True)
        if best is None:  # no fast length fits under the cap: the cap itself
            best = (min((cap - e) // st + 1, o), cap)
        blocks.append(best[0])
        lengths.append(best[1])
    return tuple(blocks), tuple(lengths)


ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (Direct(), Im2col(), Gemm(), Folded(), Shifted(), Depthwise(), Winograd(2), Winograd(4), FFT())
}

#: Every value the ``algorithm`` argument accepts: the planner's two modes and each algorithm.
ALGORITHM_CHOICES = ("auto", "measure", *ALGORITHMS)


def check_algorithm_name(op: str, name: object) -> str:
    """``name`` if the ``algorithm`` argument accepts it, else a ValueError listing the choices."""
    if not isinstance(name, str) or name not in ALGORITHM_CHOICES:
        fail(ValueError, op, "algorithm", repr(name), f"must be one of {', '.join(map(repr, ALGORITHM_CHOICES))}")
    return name


def select_algorithm(name: str, spec: ConvSpec, dtype: np.dtype) -> Algorithm:
    """The algorithm called ``name``, checked against the problem (the planner handles "auto")."""
    algorithm = ALGORITHMS[check_algorithm_name(spec.op, name)]
    reason = algorithm.why_not(spec, dtype)
    if reason is not None:
        fail(ValueError, spec.op, "algorithm", repr(name), f"cannot run this problem: {reason}")
    return algorithm
