"""broadcast: the output channels in the vector lanes, each input value broadcast to them; no columns packed.

packed copies every window's values into columns before its register tiles
multiply them (17-21% of a strided 3x3 layer's time, one thread: ResNet-50
layer2.0 4.5-4.9 of 23-24 ms). Here a job copies only the input rows its
outputs read, 16 channels side by side (a transpose of the rows, with the
zero padding), into the thread's grid, and a register tile of 14 output
positions by 32 output channels (float32; 16 in float64) reads each window's
values from it, each broadcast to a vector of channels and multiplied by the
filters' vector for that term (:mod:`._kernels_broadcast`): 28 vector
multiply-adds per 16 loads, the oneDNN way of a direct convolution. The
filters are laid out once per call, a block of output channels' filters term
by term.

Measured (session 19, float32, two threads, median wall ms against packed and
PyTorch): ResNet-18 layer2.0's 3x3 s2 4.7 (packed 5.7, PyTorch 4.7),
layer3.0's 4.8 (5.8, 5.6); ResNet-50 layer2.0's 9.2-9.8 (11.7-13.4, 9.1-10.1),
layer3.0's 9.5 (11.8, 10.5); the 1-d dilated audio layer 16.5 (compiled 24.9).
On ResNet's 7x7 outputs (two-row tiles) it measured 4.8-9.4 ms against gemm's
5.4-10.6, but "auto" keeps gemm there: gemm's estimates for those layers are
25-27% below its measured times. More: ``docs/compiled.md``, "broadcast: the
output channels in the vector lanes (session 19)".

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
from ._rates import THREAD_GAIN
from ._threads import JOBS_PER_THREAD, run_jobs, threads_for

__all__ = ["Broadcast"]

#: Output positions of a register tile, and input channels side by side in a job's grid
#: (:data:`._kernels_broadcast.TILE_POSITIONS` and ``LANE_CHANNELS``; that module imports Numba).
TILE_POSITIONS, LANE_CHANNELS = 14, 16

# The cost model (:meth:`Broadcast.estimate`), in one thread's seconds like the other algorithms'.
#: Fixed cost of a call: the filters' layout started, the jobs handed out.
CALL_OVERHEAD = 30e-6
#: Multiply-adds per second of the register tiles, float32 (float64: half as many).
MAC_RATE = 55.7e9
#: Two-row tiles (rows of 7 to 13 outputs, a job's odd last row in tiles of one row's 7) sum this much slower
#: (ResNet's 7x7 layers, one thread: 8.7-8.9, 17.3-17.4 and 17.9-18.3 ms against 8.3, 16.6 and 16.6 at the
#: one-row rate; 1.23 when the odd row was paired with the one before, recomputing it).
PAIR_SLOWDOWN = 1.05
#: Rows narrower than 7 outputs are summed one position at a time, this many times slower.
NARROW_SLOWDOWN = 20
#: Seconds per value a job's grid is filled with (16 channels side by side, transposed from the planes).
FILL_COST = 0.30e-9
#: Seconds per output value stored (transposed in registers, one masked store per channel and row).
STORE_COST = 0.67e-9

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


def _lanes(spec: ConvSpec) -> int:
    """A group's input channels in a job's grid: whole blocks of :data:`LANE_CHANNELS` (the last one's extra
    lanes zero)."""
    return -(-spec.in_channels_per_group // LANE_CHANNELS) * LANE_CHANNELS


def _window(spec: ConvSpec, padded_h: int, row0: int, row1: int) -> tuple[int, int, int, int]:
    """The padded input rows a sample's output rows ``row0:row1`` (``(a, b)`` one after another) read: ``(z0,
    depth, h0, height)``; every row of each depth where they span more than one."""
    out3 = shape3((1, 1, *spec.output_size))[2:]
    kernel3 = shape3((1, 1, *spec.kernel_size))[2:]
    strides, dilations = steps3(spec.stride), steps3(spec.dilation)
    (a0, b0), (a1, b1) = divmod(row0, out3[1]), divmod(row1 - 1, out3[1])
    depth = (a1 - a0) * strides[0] + (kernel3[0] - 1) * dilations[0] + 1
    if a0 != a1:
        return a0 * strides[0], depth, 0, padded_h
    return a0 * strides[0], depth, b0 * strides[1], (b1 - b0) * strides[1] + (kernel3[1] - 1) * dilations[1] + 1


@lru_cache(maxsize=256)
def _windows(spec: ConvSpec, padded: tuple[int, int, int], itemsize: int, threads: int) -> np.ndarray:
    """``(R, 6)``: per block of a sample's output rows, its first and last row and :func:`_window`. The fewest
    blocks whose grid (16 channels side by side, :func:`._kernels_broadcast._fill_grid`) stays within
    :data:`ROWS_BYTES`, with at least :data:`JOBS_PER_THREAD` jobs for each of ``threads`` where the rows allow."""
    rows = prod(spec.output_size[:-1])
    lanes = _lanes(spec)
    wanted = -(-JOBS_PER_THREAD * threads // max(1, spec.batch * spec.groups))

    def table(blocks: int) -> list[tuple[int, ...]]:
        bounds = [(r * rows // blocks, (r + 1) * rows // blocks) for r in range(blocks)]
        return [(r0, r1, *_window(spec, padded[1], r0, r1)) for r0, r1 in bounds if r1 > r0]

    blocks = max(1, min(rows, wanted))
    while blocks < rows and max(depth * height for *_, depth, _, height in table(blocks)) * padded[2] * lanes \
            * itemsize > ROWS_BYTES:
        blocks += 1
    windows = np.array(table(blocks), dtype=np.int64).reshape(-1, 6)
    windows.flags.writeable = False
    return windows


def _grid_values(windows: np.ndarray, spec: ConvSpec, wp: int) -> int:
    """Values of one job's grid at most: 16 channels side by side over its widest window."""
    lanes = _lanes(spec)
    return int((windows[:, 3] * windows[:, 5]).max()) * wp * lanes if len(windows) else 0


class Broadcast(FillsZeroPadding):
    """A direct convolution with the output channels in the vector lanes and the input's values broadcast.

    Runs any groups, strides, dilations and padding (zero padding is
    written as each job copies its rows; other modes pad first), one to three
    spatial dimensions, float32 and float64. Forward only: its gradients are
    the planner's other passes.
    """

    name = "broadcast"
    automatic = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """Refuses other dtypes and ranks before it imports Numba; then whether Numba imports, and whether the
        threads' grids and the laid-out filters fit the workspace limit."""
        why = compiled_columns_missing(spec, dtype)
        if why is not None:
            return why
        scratch, limit = self.workspace_bytes(spec, np.dtype(dtype).itemsize), current_workspace_limit()
        if scratch > limit:
            return (f"its scratch (the threads' grids and the filters' layout: {scratch / 2**20:.3g} MiB) "
                    f"exceeds the workspace limit ({limit / 2**20:.3g} MiB)")
        return None

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """One thread's seconds (as the other estimates), more where the jobs are too few for the threads: the
        tiles' multiply-adds over the positions they compute (a row's last tile moved back) and whole blocks of output channels at :data:`MAC_RATE` (two-row tiles
        :data:`PAIR_SLOWDOWN` slower, rows narrower than 7 :data:`NARROW_SLOWDOWN`), the jobs' grids at
        :data:`FILL_COST` a value and the outputs at :data:`STORE_COST`.

        Fitted in session 19 (least squares on the relative error) to one thread's CPU time, min of 5, on 23
        float32 layers of the suite (strided, dilated, 1-d, 3-d, stems, grouped, depthwise, 5x5, VGG conv1_1 and
        conv3_1): within 10% but the stems (15% over) and wav2vec's first layer (19% under); the two-row tiles'
        slowdown refitted on ResNet's three 7x7 layers."""
        macs = spec.macs
        if macs == 0:
            return CALL_OVERHEAD
        itemsize = np.dtype(dtype).itemsize
        block = _block(itemsize)
        width, rows = spec.output_size[-1], spec.batch * prod(spec.output_size[:-1])
        if width >= TILE_POSITIONS:
            positions = rows * -(-width // TILE_POSITIONS) * TILE_POSITIONS
        elif 2 * width >= TILE_POSITIONS:
            positions = PAIR_SLOWDOWN * rows * -(-2 * width // TILE_POSITIONS) * TILE_POSITIONS // 2
        else:
            positions = NARROW_SLOWDOWN * rows * width
        channels = spec.groups * -(-spec.out_channels_per_group // block) * block
        padded3 = _padded3(spec, spec.padding)
        windows = _windows(spec, padded3, itemsize, threads_for(spec.macs))
        lanes = _lanes(spec)
        filled = spec.batch * spec.groups * int((windows[:, 3] * windows[:, 5]).sum()) * padded3[2] * lanes
        seconds = (positions * spec.terms * channels * itemsize / 4 / MAC_RATE + filled * FILL_COST
                   + prod(spec.output_shape) * STORE_COST)
        available = threads_for(macs)
        threads = min(available, spec.batch * spec.groups * len(windows))
        return CALL_OVERHEAD + seconds * (1 + THREAD_GAIN * (available - 1)) / (1 + THREAD_GAIN * (threads - 1))

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """Each thread's grid (a job's input rows, 16 channels side by side) and the filters laid out in blocks of
        output channels; the input's padded copy for a padding mode other than zeros."""
        block = _block(itemsize)
        filters = spec.groups * -(-spec.out_channels_per_group // block) * block * spec.terms * itemsize
        padded3 = _padded3(spec, spec.padding)
        grid = _grid_values(_windows(spec, padded3, itemsize, threads_for(spec.macs)), spec, padded3[2]) * itemsize
        padded = (0 if spec.padding_mode == "zeros"
                  else spec.batch * spec.in_channels * prod(spec.padded_size) * itemsize)
        return threads_for(spec.macs) * grid + filters + padded

    def _forward(self, source: np.ndarray, padding: tuple[tuple[int, int], ...], kernel: np.ndarray,
                 spec: ConvSpec) -> np.ndarray:
        """:func:`._kernels_broadcast.forward` on ``source`` ``(N, G*C, *size)`` zero-padded by ``padding`` (its
        low sides; the high sides as far as the windows read), in jobs of (sample, group, block of output rows)."""
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
        windows = _windows(spec, padded3, itemsize, threads_for(spec.macs))
        grid_values = _grid_values(windows, spec, padded3[2])
        computed = np.empty(spec.output_shape, dtype=dtype)
        out3 = shape3((1, 1, *spec.output_size))[2:]
        kernel3 = shape3((1, 1, *spec.kernel_size))[2:]
        lows = steps3(tuple(low for low, _ in padding), fill=0)
        forward = kernels("broadcast").forward
        flat_out = computed.reshape(-1)
        strides, dilations = steps3(spec.stride), steps3(spec.dilation)
        run_jobs(spec.batch * groups * len(windows), spec.macs,
                 lambda first, last, scratch: forward(source, weights, flat_out, *scratch, first, last, groups,
                                                      out_channels, windows, out3, source.shape[2:], kernel3,
                                                      strides, dilations, lows, padded3[2]),
                 lambda: (np.empty(grid_values, dtype=dtype), np.empty(spec.terms, dtype=np.int64),
                          np.empty(TILE_POSITIONS * block, dtype=dtype)))
        return computed
