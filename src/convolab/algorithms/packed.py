"""packed: gemm's columns and products without the BLAS, a block of output positions per job of the thread pool.

gemm unrolls a block of the input into columns, then asks the BLAS for one
product. At two threads the BLAS's worker threads spin after each product and
take a core from the pool's copies (ResNet-18 layer2.0's stride-2 3x3: 7.3 ms
wall, 14.8 ms of CPU, against 11.5 ms on one thread with a one-thread BLAS),
and its thread count is the process's, not a call's. Here each job of the
pool (:func:`._threads.in_parallel`) packs the columns of one block of output
positions into its thread's own scratch, chunk of input channels by chunk,
sized to stay in the L2 cache, and multiplies them by the filters with
register tiles (:mod:`._kernels_packed`: the tiles of
:func:`._kernels_winograd_fused.tile_products`, resumed from the output for a
chunk after the first), storing each tile of sums straight into the output's
rows: nothing spins, nothing is transposed, and the columns never leave the
core's cache. Measured speed, what bounds it and when "auto" picks it:
``docs/compiled.md``, "packed".

Axis legend: N samples, G groups, C input channels and O output channels per
group, K = C x kernel taps, T output positions of one block.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

import numpy as np

from .._dtypes import all_finite
from .._settings import current_workspace_limit
from ..spec import ConvSpec
from . import FillsZeroPadding
from ._compiled import kernels
from ._columns import compiled_columns_missing
from ._kernel_layout import as_kernels_take, filter_rows, rank3, shape3, steps3
from ._rates import THREAD_GAIN, results_seconds
from ._threads import run_jobs, threads_for
from .compiled import LANES

__all__ = ["Packed", "BLOCK_BYTES"]

#: Rows of columns (input channel x tap) one chunk packs: a register tile's filter rows for the chunk (eight rows
#: of float32, four of float64: 32 KiB) stay in the L1 cache (48 KiB) while it takes every panel of the block.
#: Fewer chunks, fewer passes over the output's sums (one thread, CPU, min of 7, against 512 rows: ASPP -4.5%,
#: ResNet-50 layer4.0 -6%, layer3.0 and DeepLab -2 to -3%, the rest alike or better; 1536 rows no better).
CHUNK_ROWS = 1024
#: Bytes of one chunk's packed columns (``chunk rows x T``): half a core's L2 cache (2 MiB here), beside the
#: filters' rows the tiles stream (one thread, CPU, min of 7: ASPP 41.1 ms at 512 KiB, 39.7 at 1 MiB, 41.7 at
#: 1.5 MiB; the strided 3x3 layers alike within 2%).
BLOCK_BYTES = 2**20
#: Lanes a sample's last run of :data:`LANES` leaves unused, as a share of its positions, from which a block spans
#: samples (ResNet's 14x14 outputs: 14%, 7x7: 31%; ASPP's 33x33: 3%): a run that reaches into the next sample
#: stores those lanes in its plane.
SPAN_WASTE = 0.05


# The cost model (:meth:`Packed.estimate`), in one thread's seconds like the other algorithms'.
#: Fixed cost of a call: the layout, the jobs handed out, the kernel's dispatch (measured 70-80 us for 4x4 and
#: 2x2 images at batch 1, where gemm took 37-58).
CALL_OVERHEAD = 60e-6
#: Multiply-adds per second of the register tiles, float32 (float64: half as many).
MAC_RATE = 63e9
#: The channels left over after the tiles (``O mod 4``) are summed this many times slower.
TAIL_SLOWDOWN = 8
#: Seconds per piece of an output row the packing copies for every tap along the row (its bounds, its loops'
#: starts: short rows cost more per value).
PIECE_COST = 22e-9


def _chunk_channels(spec: ConvSpec) -> int:
    """Input channels per chunk: whole channels' taps within :data:`CHUNK_ROWS` rows (at least one channel), as
    many in every chunk as can be (64 channels of 3x3 taps: two chunks of 32, not 56 and 8)."""
    channels = max(1, spec.in_channels_per_group)  # no channels: nothing is packed, one empty chunk
    most = max(1, min(channels, CHUNK_ROWS // max(prod(spec.kernel_size), 1)))
    return -(-channels // -(-channels // most))


def _layout(spec: ConvSpec, itemsize: int) -> tuple[bool, int, int]:
    """``(spans, blocks, block)``: whether a job's block spans samples (where a sample's last run of
    :data:`LANES` would leave at least :data:`SPAN_WASTE` of its positions' lanes unused), how many blocks split
    the runs of a sample's (or all samples') positions evenly, and the most positions in one. A block holds the
    most whole runs whose chunk of columns fits :data:`BLOCK_BYTES` (at least one run); more blocks where that
    leaves too few jobs for two per thread, or a count of jobs the threads cannot share evenly (ResNet-50
    layer3.0's 49 runs at two threads: 8 blocks, not 7, of which one thread would run 4)."""
    positions = prod(spec.output_size)
    limit = current_workspace_limit()
    spans = spec.batch > 1 and -(-positions // LANES) * LANES - positions >= SPAN_WASTE * positions
    span = positions * spec.batch if spans else positions
    runs = -(-span // LANES)
    outer = spec.groups * (1 if spans else spec.batch)  # jobs per block
    rows = _chunk_channels(spec) * prod(spec.kernel_size)
    # each thread's columns within its share of cl.workspace_limit too (why_not refuses where one run does not fit)
    budget = min(BLOCK_BYTES, limit // threads_for(spec.macs) - LANES * itemsize)
    blocks = -(-runs // max(1, budget // max(rows * itemsize, 1) // LANES))
    threads = threads_for(spec.macs)
    if outer * blocks < 2 * threads:
        blocks = max(1, min(runs, -(-2 * threads // max(outer, 1))))
    while outer * blocks % threads and blocks < runs:
        blocks += 1
    # whole runs (the last one's lanes past the positions are computed and dropped), but for fewer positions
    return spans, blocks, -(-runs // blocks) * LANES if span >= LANES else max(span, 1)


def _block_positions(spec: ConvSpec, itemsize: int) -> int:
    """Output positions per job at most (``T``): :func:`_layout`'s block."""
    return _layout(spec, itemsize)[2]


@lru_cache(maxsize=256)
def _live_share(spec: ConvSpec) -> float:
    """The share of the register tiles' rows a sample's panels sum where every weight is finite: per panel of
    :data:`LANES` positions, the leading taps ``(kd, kh)`` from the first whose row lies inside the input for
    one of the panel's output rows to the last (:func:`._kernels_packed.live_taps`, here for all panels at
    once); 1 where the padding is filled by another mode than zeros (the kernel then reads a padded copy)."""
    if spec.padding_mode != "zeros" or spec.macs == 0:
        return 1.0
    out3 = shape3((1, 1, *spec.output_size))[2:]
    kernel3 = shape3((1, 1, *spec.kernel_size))[2:]
    size3 = shape3((1, 1, *spec.input_size))[2:]
    strides, dilations = steps3(spec.stride), steps3(spec.dilation)
    lows = steps3(tuple(low for low, _ in spec.padding), fill=0)

    def inside(axis: int, outputs: np.ndarray) -> np.ndarray:
        """``(outputs, taps)``: whether each tap's input index along a leading ``axis`` lies inside the input."""
        index = (outputs[:, None] * strides[axis] + np.arange(kernel3[axis]) * dilations[axis] - lows[axis])
        return (index >= 0) & (index < size3[axis])

    rows = np.arange(out3[0] * out3[1])  # the output rows (a, b), one per row of E positions
    live = (inside(0, rows // out3[1])[:, :, None] & inside(1, rows % out3[1])[:, None, :]).reshape(len(rows), -1)
    order = np.arange(live.shape[1])
    first = np.where(live, order, live.shape[1]).min(axis=1)
    last = np.where(live, order, -1).max(axis=1)
    positions = len(rows) * out3[2]
    starts = np.arange(0, positions, LANES)
    top, bottom = starts // out3[2], (np.minimum(starts + LANES, positions) - 1) // out3[2]
    lo, hi = np.full(len(starts), live.shape[1]), np.full(len(starts), -1)
    for step in range(int((bottom - top).max()) + 1):  # every row a panel touches
        row = np.minimum(top + step, bottom)
        lo, hi = np.minimum(lo, first[row]), np.maximum(hi, last[row])
    return float(np.maximum(hi - lo + 1, 0).mean() / live.shape[1])


def _columns_bytes(spec: ConvSpec, itemsize: int) -> int:
    """The threads' scratch: each one's packed columns for one block (and a run of lanes past them)."""
    spans, blocks, block = _layout(spec, itemsize)
    jobs = spec.groups * (1 if spans else spec.batch) * blocks
    threads = max(1, min(threads_for(spec.macs), jobs))
    return threads * (_chunk_channels(spec) * prod(spec.kernel_size) * block + LANES) * itemsize


class Packed(FillsZeroPadding):
    """gemm's columns and products in one compiled job per block of output positions, on the library's threads.

    Runs any groups, strides, dilations, padding (zero padding is filled as
    the columns are packed; other modes pad first), one to three spatial
    dimensions, float32 and float64. Forward only: its gradients are the
    planner's other passes (the "full" input gradient is a forward, which
    this algorithm may serve).
    """

    name = "packed"
    automatic = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """Refuses other dtypes and ranks before it imports Numba; then whether Numba imports, and whether the
        threads' packed columns fit the workspace limit."""
        why = compiled_columns_missing(spec, dtype)
        if why is not None:
            return why
        columns, limit = _columns_bytes(spec, np.dtype(dtype).itemsize), current_workspace_limit()
        if columns > limit:
            return (f"its scratch (packed columns, a block per thread: "
                    f"{columns / 2**20:.3g} MiB) exceeds the workspace limit "
                    f"({limit / 2**20:.3g} MiB)")
        return None

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """One thread's seconds (as the other estimates), more where the jobs are too few for the threads: the
        register tiles' multiply-adds over whole runs of :data:`LANES` positions (a sample's last, narrower
        panel costs a whole run, unless blocks span samples: :func:`_layout`; the ``O mod 4`` channels left
        over go at an eighth of the rate; the leading taps a panel leaves out, :func:`_live_share`, cost
        nothing) at :data:`MAC_RATE`; every piece of an output row the packing copies (per input channel and
        leading taps: each output row and each panel boundary starts one, for every tap along the row) at
        :data:`PIECE_COST`; the output's writes past a core's cache
        (:func:`~convolab.algorithms._rates.results_seconds`: VGG conv1_1's 103 MB of output).

        The constants were refitted in session 11 (least squares on the
        logarithm, two runs) to one thread's CPU time, min of 5, on 21 float32
        layers (3x3 at stride 2 with 64-512 channels, dilated 2 and 6, 3x3 at
        stride 1 on 56x56 to 7x7, 5x5, stems 3x3 and 5x5, VGG conv1_1, 1-d k 10
        stride 5, 1x1 at stride 2, 3-d, and 4x4 and 8x8 images) on the shared
        2-core machine: rms error of the logarithm 0.18, the 3x3 and 5x5
        layers within 10% (the 1-d layer 1.9x and VGG conv1_1 at batch 1 1.5x
        over: the results' term, shared with gemm). A term per packed value
        fitted to nothing beside the pieces'. A 1x1 kernel at stride 1 is left
        to gemm, whose product reads the input as its columns.
        """
        macs = spec.macs
        if macs == 0:
            return CALL_OVERHEAD
        if prod(spec.kernel_size) == 1 and all(s == 1 for s in spec.stride):
            # gemm's product reads the input itself as its columns, where this copies them (ResNet-50's 1x1
            # layers, one thread: 1.15-1.4x gemm's time)
            return float("inf")
        itemsize = dtype.itemsize
        spans, blocks, _ = _layout(spec, itemsize)
        positions = prod(spec.output_size) * (spec.batch if spans else 1)
        outer = spec.groups * (1 if spans else spec.batch)
        runs = outer * -(-positions // LANES)  # the register tiles' runs, all jobs
        out_per_group = spec.out_channels_per_group
        tiled, tail = out_per_group - out_per_group % 4, out_per_group % 4
        rows = spec.terms  # K
        tile_macs = runs * LANES * rows * (tiled + TAIL_SLOWDOWN * tail) * _live_share(spec)
        out3 = shape3((1, 1, *spec.output_size))[2:]
        pieces = rows // spec.kernel_size[-1] * (spec.batch * spec.groups * out3[0] * out3[1] + runs)
        output_bytes = prod(spec.output_shape) * itemsize
        seconds = tile_macs * itemsize / 4 / MAC_RATE + pieces * PIECE_COST + results_seconds(output_bytes)
        available = threads_for(macs)
        threads = min(available, outer * blocks)
        return CALL_OVERHEAD + seconds * (1 + THREAD_GAIN * (available - 1)) / (1 + THREAD_GAIN * (threads - 1))

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """Each thread's packed columns (one block), and the input's padded copy for a padding mode other than
        zeros."""
        padded = 0 if spec.padding_mode == "zeros" else spec.batch * spec.in_channels * prod(spec.padded_size) * itemsize
        return _columns_bytes(spec, itemsize) + padded

    def _forward(self, source: np.ndarray, padding: tuple[tuple[int, int], ...], kernel: np.ndarray,
                 spec: ConvSpec) -> np.ndarray:
        """:func:`._kernels_packed.forward` on ``source`` ``(N, G*C, *size)``, zero-padded by ``padding`` (its
        low sides given; the high ones are where the windows read past it), in jobs of (sample, group, block of
        positions)."""
        if spec.macs == 0:  # no samples or no channels: nothing to sum (no channels: the sums are zero)
            return np.zeros(spec.output_shape, dtype=source.dtype)
        source = rank3(source)
        weights = filter_rows(kernel, source.dtype)  # (G*O, K)
        spans, blocks, block = _layout(spec, source.itemsize)
        chunk = _chunk_channels(spec)
        computed = np.empty(spec.output_shape, dtype=source.dtype)
        out3 = shape3((1, 1, *spec.output_size))[2:]
        kernel3 = shape3((1, 1, *spec.kernel_size))[2:]
        lows = steps3(tuple(low for low, _ in padding), fill=0)
        # padding's zeros are left out of a panel's sums only where no weight is inf or NaN (0 x inf is NaN)
        skip = _live_share(spec) < 1 and all_finite(weights)
        forward = kernels("packed").forward
        flat = computed.reshape(-1)
        run_jobs(spec.groups * (1 if spans else spec.batch) * blocks, spec.macs,
                  lambda first, last, col: forward(source, weights, flat, out3, col, first, last, spec.groups, spans,
                                                   blocks, chunk, kernel3, *steps3(spec.stride),
                                                   *steps3(spec.dilation), *lows, skip),
                  lambda: np.empty(chunk * prod(spec.kernel_size) * block + LANES, dtype=source.dtype))
        return computed
