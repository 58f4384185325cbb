"""broadcast: the output channels in the vector lanes, each input value broadcast to them; no columns packed.

packed copies every window's values into columns before its register tiles
multiply them (17-21% of a strided 3x3 layer's time, one thread: ResNet-50
layer2.0 4.5-4.9 of 23-24 ms). Here the input is only zero-padded (one
copy of it, threaded, :func:`._kernels_direct.copy_phases`; none where the
problem has no padding), and a register tile of 14 output positions by 32
output channels (float32; 16 in float64) reads each window's values straight
from it, each broadcast to a vector of channels and multiplied by the
filters' vector for that term (:mod:`._kernels_broadcast`): 28 vector
multiply-adds per 16 loads, the oneDNN way of a direct convolution. The
filters are laid out once per call, a block of output channels' filters
term by term.

It runs only when asked for by name ("auto" never picks it): on one thread
its tiles sum at 50-55e9 multiply-adds a second, packed's rate or better,
but the same call measured 9.4 ms in one process and 12.5 in the next
(ResNet-18 layer2.0, packed 10.6-11.5), and at two threads it lost to
packed on every strided 3x3 layer of the suite. Its tiles read the input
from 64 to 512 planes per term loop (NCHW); the layout that keeps them on a
few cache lines (16 channels side by side, as oneDNN's) is the next step.
Measurements: ``docs/compiled.md``, "broadcast (session 19)".

Axis legend: N samples, G groups, C input channels and O output channels per
group, K = C x kernel taps.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

import numpy as np

from .._settings import current_workspace_limit
from ..spec import ConvSpec
from . import FillsZeroPadding
from ._compiled import kernels
from ._columns import compiled_columns_missing
from ._kernel_layout import filter_rows, rank3, shape3, steps3
from ._scratch import reused_empty
from ._threads import JOBS_PER_THREAD, run_jobs, threads_for

__all__ = ["Broadcast"]

#: Output positions of a register tile (:data:`._kernels_broadcast.TILE_POSITIONS`; that module imports Numba).
TILE_POSITIONS = 14

#: Bytes of the input one block of output rows reads, at most: half a core's L2 cache (1 MiB here).
ROWS_BYTES = 2**19


def _block(itemsize: int) -> int:
    """Output channels of one tile (:func:`._kernels_broadcast.block_channels`)."""
    return 32 if itemsize == 4 else 16


def _padded3(spec: ConvSpec, padding: tuple[tuple[int, int], ...],
             size3: tuple[int, ...] | None = None) -> tuple[int, int, int]:
    """The grid's ``(Dp, Hp, Wp)``: the input (``size3``, three axes: by default the spec's, else the array
    the kernel reads, which :meth:`Broadcast.run` takes already padded) after its low ``padding``, as far as a
    window or the input reaches."""
    size3 = shape3((1, 1, *spec.input_size))[2:] if size3 is None else size3
    out3 = shape3((1, 1, *spec.output_size))[2:]
    kernel3 = shape3((1, 1, *spec.kernel_size))[2:]
    lows = steps3(tuple(low for low, _ in padding), fill=0)
    strides, dilations = steps3(spec.stride), steps3(spec.dilation)
    return tuple(max(low + size, (out - 1) * stride + (k - 1) * dilation + 1)  # type: ignore[return-value]
                 for low, size, out, k, stride, dilation in zip(lows, size3, out3, kernel3, strides, dilations))


def _row_blocks(spec: ConvSpec, itemsize: int) -> int:
    """Blocks of output rows (every sample's rows ``(n, a, b)`` one after another) the jobs split: each block's
    share of the input within :data:`ROWS_BYTES` (so that it stays in the core's L2 cache while every block of
    output channels reads it), and at least :data:`JOBS_PER_THREAD` jobs a thread."""
    rows = spec.batch * prod(spec.output_size[:-1])
    padded = prod(_padded3(spec, spec.padding))
    row_bytes = spec.in_channels_per_group * padded * itemsize / max(1, prod(spec.output_size[:-1]))
    blocks = -(-rows // max(1, int(ROWS_BYTES // max(row_bytes, 1))))
    outer = spec.groups * -(-spec.out_channels_per_group // _block(itemsize))
    wanted = -(-JOBS_PER_THREAD * threads_for(spec.macs) // outer)
    return max(1, min(max(blocks, wanted), rows))


@lru_cache(maxsize=256)
def _offsets(spec: ConvSpec, padded3: tuple[int, int, int]) -> np.ndarray:
    """Term ``k``'s flat offset in the grid from a position's first cell, ``k`` over (input channel, taps) in C
    order."""
    kernel3 = shape3((1, 1, *spec.kernel_size))[2:]
    dd, dh, dw = steps3(spec.dilation)
    c, kd, kh, kw = np.meshgrid(np.arange(spec.in_channels_per_group), *(np.arange(k) for k in kernel3),
                                indexing="ij")
    depth, height, width = padded3
    offsets = ((c * depth + kd * dd) * height + kh * dh) * width + kw * dw
    offsets = offsets.reshape(-1).astype(np.int64)
    offsets.flags.writeable = False
    return offsets


def _grid_bytes(spec: ConvSpec, itemsize: int) -> int:
    """The zero-padded copy of the input, where the problem has padding (else the input is read in place)."""
    if not any(low or high for low, high in spec.padding) and spec.padding_mode == "zeros":
        return 0
    return spec.batch * spec.in_channels * prod(_padded3(spec, spec.padding)) * itemsize


class Broadcast(FillsZeroPadding):
    """A direct convolution with the output channels in the vector lanes and the input's values broadcast.

    Runs any groups, strides, dilations and padding (zero padding is
    written into a padded copy; other modes pad first), one to three
    spatial dimensions, float32 and float64. Forward only: its gradients are
    the planner's other passes.
    """

    name = "broadcast"
    automatic = False  # by name only: see the module's notes

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """Refuses other dtypes and ranks before it imports Numba; then whether Numba imports, and whether the
        padded copy fits the workspace limit."""
        why = compiled_columns_missing(spec, dtype)
        if why is not None:
            return why
        scratch, limit = self.workspace_bytes(spec, np.dtype(dtype).itemsize), current_workspace_limit()
        if scratch > limit:
            return (f"its scratch (the zero-padded input and the filters' layout: {scratch / 2**20:.3g} MiB) "
                    f"exceeds the workspace limit ({limit / 2**20:.3g} MiB)")
        return None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """The zero-padded input (where there is padding) and the filters laid out in blocks of output channels."""
        block = _block(itemsize)
        filters = spec.groups * -(-spec.out_channels_per_group // block) * block * spec.terms * itemsize
        padded = 0 if spec.padding_mode == "zeros" else spec.batch * spec.in_channels * prod(spec.padded_size) * itemsize
        return _grid_bytes(spec, itemsize) + filters + padded

    def _forward(self, source: np.ndarray, padding: tuple[tuple[int, int], ...], kernel: np.ndarray,
                 spec: ConvSpec) -> np.ndarray:
        """:func:`._kernels_broadcast.forward` on ``source`` ``(N, G*C, *size)`` zero-padded by ``padding`` (its
        low sides; the high sides as far as the windows read), in jobs of (group, block of output channels,
        block of output rows)."""
        if spec.macs == 0:  # no samples or no channels: nothing to sum (no channels: the sums are zero)
            return np.zeros(spec.output_shape, dtype=source.dtype)
        source = rank3(source)
        dtype, itemsize = source.dtype, source.itemsize
        block, groups, out_channels = _block(itemsize), spec.groups, spec.out_channels_per_group
        blocks = -(-out_channels // block)
        # (G, blocks, K, block): a block of output channels' filters term by term, zero past the group's last
        weights = np.empty(groups * blocks * spec.terms * block, dtype=dtype)
        rows = filter_rows(kernel, dtype)
        lay_out = kernels("broadcast").lay_out_filters
        run_jobs(groups * blocks, rows.size, lambda first, last, _: lay_out(rows, weights, first, last, out_channels,
                                                                           block), lambda: None)
        padded3 = _padded3(spec, padding, source.shape[2:])
        if padded3 == source.shape[2:]:
            grid = source
        else:  # the input zero-padded, in one threaded copy (the phase grid of stride 1)
            grid = reused_empty((*source.shape[:2], padded3[0], 1, 1, *padded3[1:]), dtype, "padded input")
            copy = kernels("direct").copy_phases
            lows = steps3(tuple(low for low, _ in padding), fill=0)
            run_jobs(source.shape[0] * source.shape[1], spec.macs,
                     lambda first, last, _: copy(source, grid, first, last, True, *lows), lambda: None)
        computed = np.empty(spec.output_shape, dtype=dtype)
        out3 = shape3((1, 1, *spec.output_size))[2:]
        row_blocks = _row_blocks(spec, itemsize)
        forward = kernels("broadcast").forward
        flat_grid, flat_weights, flat_out = grid.reshape(-1), weights, computed.reshape(-1)
        offsets = _offsets(spec, padded3)
        strides = steps3(spec.stride)
        run_jobs(groups * blocks * row_blocks, spec.macs,
                 lambda first, last, tile: forward(flat_grid, flat_weights, offsets, flat_out, tile, first, last,
                                                   groups, out_channels, row_blocks, out3, padded3, *strides),
                 lambda: np.empty(TILE_POSITIONS * block, dtype=dtype))
        return computed
