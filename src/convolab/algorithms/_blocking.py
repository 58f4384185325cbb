"""Unrolled columns in blocks of bounded size: the layout gemm and folded share.

A block holds the unrolled input (one column per output position, one row per
input channel and kernel tap) for some samples and some indexes of the first
output axis, never more than the workspace limit
(:func:`convolab.workspace_limit`) allows. At stride 1 the columns may run over
the *padded* grid ("wide" rows, :func:`wide_rows`): each tap then reads one
contiguous run of the flattened input, and the extra columns are cropped.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Iterator

import numpy as np

from .._settings import current_workspace_limit
from .._window import sliding_windows
from ..spec import ConvSpec

#: Target size of one unrolled block: a quarter of a typical 32 MiB last-level cache.
CACHE_BLOCK_BYTES = 8 * 2**20


def stride_one(spec: ConvSpec) -> bool:
    """Stride 1 everywhere: every tap is a constant shift of the flattened padded input."""
    return all(s == 1 for s in spec.stride)


def phase_size(spec: ConvSpec) -> tuple[int, ...]:
    """Size of each stride phase of the padded input (the largest, residue 0): ``ceil(P / s)``."""
    return tuple(-(-p // s) for p, s in zip(spec.padded_size, spec.stride))


#: Most extra columns wide rows may add for their contiguous copies, as a ratio of wide to real row positions.
WIDE_WASTE = 1.1


def wide_rows(spec: ConvSpec) -> bool:
    """Whether unrolled columns run over the padded grid: stride 1, and few wasted columns.

    Wide rows make each tap's copy one contiguous run but compute the
    ``padded - output`` extra columns of every row; on small images (7×7 padded
    to 9×9) that is 65% more work, and the exact (strided) copy wins.
    """
    waste = prod(spec.padded_size[1:]) / max(prod(spec.output_size[1:]), 1)
    return stride_one(spec) and waste <= WIDE_WASTE


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


def rows_per_block(row_bytes: int, row_columns: int) -> int:
    """Rows of ``row_bytes`` (holding ``row_columns`` columns) in one unrolled block: at least one."""
    target = max(MIN_BLOCK_BYTES, row_bytes * BLOCK_COLUMNS // max(row_columns, 1))
    return max(1, min(current_workspace_limit(), MAX_BLOCK_BYTES, target) // max(row_bytes, 1))


def block_bytes(per_row: int, rows: int, row_columns: int) -> int:
    """The largest block :func:`unrolled_blocks` makes of ``rows`` rows of ``per_row`` bytes: as many as
    :func:`rows_per_block` allows, never more than there are."""
    return per_row * min(rows, rows_per_block(per_row, row_columns))


def unrolled_row_bytes(spec: ConvSpec, itemsize: int, wide: bool | None = None) -> int:
    """Bytes of unrolled columns for one sample and one index of the first output axis (``wide``: as in
    :func:`unrolled_blocks`)."""
    return spec.in_channels * prod(spec.kernel_size) * prod(row_grid(spec, wide)) * itemsize


def block_ranges(spec: ConvSpec, itemsize: int, wide: bool, scratch_per_column: int = 0,
                 ) -> tuple[list[tuple[int, int, int, int]], tuple[int, ...]]:
    """The blocks :func:`unrolled_blocks` makes, ``(n0, n1, r0, r1)`` (samples, indexes of the first output
    axis), and the trailing positions of a row (:func:`row_grid`): whole samples while one fits, else rows of
    one sample."""
    grid = row_grid(spec, wide)
    per_row = unrolled_row_bytes(spec, itemsize, wide) + scratch_per_column * prod(grid)
    rows_fit = rows_per_block(per_row, prod(grid))
    rows_total, batch = spec.output_size[0], spec.batch
    if rows_fit >= rows_total:
        samples = max(1, min(batch, rows_fit // rows_total))
        return [(n, min(n + samples, batch), 0, rows_total) for n in range(0, batch, samples)], grid
    return [(n, n + 1, r, min(r + rows_fit, rows_total)) for n in range(batch)
            for r in range(0, rows_total, rows_fit)], grid


def largest_block(blocks: list[tuple[int, int, int, int]], grid: tuple[int, ...]) -> int:
    """Columns of the largest of ``blocks`` (:func:`block_ranges`)."""
    return max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in blocks) * prod(grid)


def unrolled_blocks(padded: np.ndarray, spec: ConvSpec, scratch_per_column: int = 0, wide: bool | None = None,
                    ) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]]:
    """Yield ``((n0, n1, r0, r1), columns, grid)`` blocks of the unrolled input.

    ``columns`` is ``(G, C*K, nb*rows*prod(grid))`` for samples ``n0:n1`` and first
    output axis ``r0:r1``; ``grid`` is the shape of the trailing positions of a
    row (the padded sizes when wide, else the output sizes). One buffer is reused.
    ``scratch_per_column``: bytes the caller keeps per column beside the block
    (its product), counted in the block's size. ``wide=False`` forces exact
    columns where :func:`wide_rows` would choose wide rows.
    """
    groups, c = spec.groups, spec.in_channels_per_group
    taps = prod(spec.kernel_size)
    wide = wide_rows(spec) and wide is not False
    blocks, grid = block_ranges(spec, padded.itemsize, wide, scratch_per_column)
    batch = spec.batch
    buffer = np.empty(groups * c * taps * largest_block(blocks, grid), dtype=padded.dtype)
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


def row_grid(spec: ConvSpec, wide: bool | None = None) -> tuple[int, ...]:
    """Trailing positions of one unrolled row: the padded sizes over wide rows, else the output's
    (``wide`` None: as :func:`wide_rows` chooses; see :func:`unrolled_blocks`)."""
    return tuple(spec.padded_size[1:]) if (wide_rows(spec) if wide is None else wide) else tuple(spec.output_size[1:])


#: Output rows shorter than this make the usual copies slow (a short inner loop per row).
SHORT_ROW = 16


def batch_inner(spec: ConvSpec, itemsize: int) -> bool:
    """Whether the columns are unrolled with the batch as the innermost axis: small images, many of them, all in
    one block (gemm's forward and weight gradient, and the compiled col2im of the scatter input gradient).

    With 4×4 outputs the usual copy moves runs of 4 values; with the batch innermost
    every run is ``N`` values long (batch-inner copies measured 2-3× faster on
    (32, 16, 4, 4) inputs, the size of a small CNN's later layers). Only when the
    whole unrolled input fits one cache-sized block, so no blocking is needed.
    """
    return _batch_inner(spec, itemsize, current_workspace_limit())


@lru_cache(maxsize=1024)
def _batch_inner(spec: ConvSpec, itemsize: int, workspace_limit: int) -> bool:
    """:func:`batch_inner` under ``workspace_limit``, remembered: each pass of a layer asks it on every call."""
    if all(k == 1 for k in spec.kernel_size) or wide_rows(spec):
        return False
    row = spec.output_size[-1]
    unrolled = spec.in_channels * prod(spec.kernel_size) * prod(spec.output_size) * spec.batch * itemsize
    return row < SHORT_ROW and spec.batch >= 2 * row and unrolled <= min(CACHE_BLOCK_BYTES, workspace_limit)
