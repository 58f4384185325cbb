"""compiled's weight gradient: the wrapper that lays the arrays out for :mod:`._kernels_wgrad`, and its cost model.

:class:`.compiled.Compiled` runs its weight-gradient pass here: the input is
padded and split into its stride phases (:class:`.compiled._Layout`, shared
with the forward), grad_output and the taps' runs are read by the kernel, and
the jobs are shared among threads (:func:`._threads.run_jobs`).
:func:`weight_grad_seconds` is the pass's estimate that the planner weighs
against gemm's.

The kernels are imported through the lazy seam (:func:`._compiled.kernels`),
so importing this module imports no Numba.

Axis legend: N samples, G groups, C input channels per group, O output
channels per group, T taps of one group's filters, S slots.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Callable

import numpy as np

from ..spec import ConvSpec
from . import compiled as compiled_support  # the layout and job runner the compiled kernels share
from ._compiled import kernels
from ._kernel_layout import rank3
from ._threads import JOBS_PER_THREAD, run_jobs, threads_for
from .depthwise import _zero_padded_source

__all__ = ["compiled_weight_grad", "weight_grad_seconds", "dots_weight_grad", "tiled_weight_grad",
           "dots_weight_grad_seconds", "tiled_weight_grad_seconds", "WGRAD_TAP_BLOCK", "WGRAD_LANES"]

#: The weight gradient's multiply-adds per second (float32; float64 half as many) and the seconds of each of its
#: inner loops (sixteen horizontal sums at its end): fitted, like the forward's, to the ratio of its measured
#: times to gemm's weight gradient on 37 layers (:func:`weight_grad_seconds`), ...
WGRAD_MAC_RATE, WGRAD_LOOP_COST = 94e9, 43e-9
#: ... and the float32 values per second it copies into its scratch (grad_output's rows, the taps' runs).
WGRAD_COPY_RATE = 6.6e9

#: The weight gradient's runs: the eight rows its inner loop reads (four taps', four channels') fit
#: :data:`.compiled.SCRATCH_BYTES` (in the L1 cache: the inner loop alone ran 1,024 float32 positions 2x faster
#: than 2,048, which spill it; the whole pass on a stem about 10% faster), and all of a group's grad_output rows
#: at most this many bytes (in the L2 cache).
WGRAD_ROWS, WGRAD_SCRATCH_BYTES = 8, 512 * 2**10
#: Taps the weight gradient's inner loop reads together, and the values its rows are padded to a multiple of
#: (as :mod:`._kernels_wgrad`'s TAP_BLOCK and LANES).
WGRAD_TAP_BLOCK, WGRAD_LANES = 4, 16
#: Bytes of a cache line: the weight gradient's scratch rows start on one.
CACHE_LINE = 64
#: The tiled weight gradient (:func:`._kernels_wgrad.weight_grad_tiled`): output channels of one tile (the
#: vector lanes its sums run along: two float32 vectors of 512 bits, four float64 ones), ...
TILE_CHANNELS = 32
#: ... and the rows its runs are laid out for (a float32 run of about 512 positions: its transposed
#: grad_output, 64 KiB per tile, stays in the L2 cache while every block of taps reads it).
TILED_RUN_ROWS = 16
#: Its cost model (:func:`tiled_weight_grad_seconds`): multiply-adds per second (float32), seconds per loop of
#: a tile and a block of taps over a run, and values of grad_output transposed per second (2x the 9e9 fitted
#: with a value at a time: the kernel's transposing part, without its sums, measured 2.0x faster in squares of
#: sixteen on a 3x3 stem, 2.6x on a 64 -> 3 decoder's gradient).
TILED_WGRAD_MAC_RATE, TILED_WGRAD_LOOP_COST, TRANSPOSE_RATE = 68e9, 33e-9, 18e9


def _tiled_tap_block(itemsize: int) -> int:
    """Taps whose sums the tiled weight gradient holds in registers at once: eight tiles' worth of float32
    vectors (16 of the 32 registers), four of float64."""
    return 8 if itemsize == 4 else 4


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose first value starts a cache line (:data:`CACHE_LINE`)."""
    itemsize = np.dtype(dtype).itemsize
    buffer = np.empty(prod(shape) * itemsize + CACHE_LINE, dtype=np.uint8)
    skip = -buffer.ctypes.data % CACHE_LINE
    return buffer[skip:skip + prod(shape) * itemsize].view(dtype).reshape(shape)


def _wgrad_run_rows(out_per_group: int) -> int:
    """The rows :func:`.compiled._positions` fits a weight-gradient run to (:data:`WGRAD_ROWS`, more with many
    channels)."""
    return max(WGRAD_ROWS, -(-out_per_group * compiled_support.SCRATCH_BYTES // WGRAD_SCRATCH_BYTES))


def _wgrad_cost_terms(spec: ConvSpec, itemsize: int) -> tuple[float, int, float, int]:
    """What :func:`weight_grad_seconds` charges the weight gradient for: the multiply-adds (in float32
    values: a float64 counts twice; over every run as the kernel pads it, wide and to whole vectors, and the
    taps padded to a multiple of four), the inner loops started (each ends in sixteen horizontal sums), the
    values the kernel copies into its scratch (per run grad_output's rows once, each block of taps' runs),
    and the bytes of the phase grid's copy."""
    out_per_group, taps = spec.out_channels_per_group, spec.terms
    layout = compiled_support._Layout(spec, itemsize, _wgrad_run_rows(out_per_group))
    _, runs = layout.tables()[1:]
    lengths = (runs[:, 2] - runs[:, 1] - 1) * layout.grid[-1] + runs[:, 4]
    positions = int((-(-lengths // WGRAD_LANES) * WGRAD_LANES).sum())  # one sample's, padded
    padded_taps = -(-taps // WGRAD_TAP_BLOCK) * WGRAD_TAP_BLOCK
    scale = spec.batch * spec.groups * positions * itemsize / 4
    values = scale * out_per_group * padded_taps
    loops = (spec.batch * len(runs) * spec.groups * (padded_taps // WGRAD_TAP_BLOCK)
             * -(-out_per_group // compiled_support.OUT_BLOCK))
    grid = spec.batch * spec.in_channels * prod(layout.grid) * itemsize
    copied = grid if layout.split or any(map(any, spec.padding)) else 0  # to_grid copies then
    return values, loops, scale * (out_per_group + padded_taps), copied


def _tiled_layout(spec: ConvSpec, itemsize: int) -> compiled_support._Layout:
    """The tiled weight gradient's layout: runs of :data:`TILED_RUN_ROWS` float32 rows' worth, its wide rows
    sharing the zero padding the grid's copy adds along the last axis (a row's high padding the next row's
    low: 30 instead of 32 positions per row of a 5x5 layer at 28x28, 39 instead of 45 of ASPP's, which multiply
    grad_output's zeros)."""
    return compiled_support._Layout(spec, itemsize, TILED_RUN_ROWS * 4 // itemsize,
                                    shared_padding=compiled_support._source_padding(spec)[-1])


def _tiled_cost_terms(spec: ConvSpec, itemsize: int) -> tuple[float, int, float, int]:
    """What :func:`tiled_weight_grad_seconds` charges for: the multiply-adds (in float32's: a float64 one counts
    twice; every tile's :data:`TILE_CHANNELS` channels, the taps padded to a multiple of four, every wide position of
    a run), the (run, tile, block of taps) loops, the values of grad_output transposed, and the bytes of the
    phase grid's copy."""
    out_per_group, taps = spec.out_channels_per_group, spec.terms
    layout = _tiled_layout(spec, itemsize)
    runs = layout.tables()[2]
    positions = int(((runs[:, 2] - runs[:, 1] - 1) * layout.grid[-1] + runs[:, 4]).sum())  # one sample's, wide
    tap_block = _tiled_tap_block(itemsize)
    padded_taps = -(-taps // WGRAD_TAP_BLOCK) * WGRAD_TAP_BLOCK
    channels = -(-out_per_group // TILE_CHANNELS) * TILE_CHANNELS
    blocks = -(-padded_taps // tap_block)  # of tap_block taps, the last perhaps of four
    scale = spec.batch * spec.groups * itemsize / 4
    loops = spec.batch * len(runs) * spec.groups * channels // TILE_CHANNELS * blocks
    grid = spec.batch * spec.in_channels * prod(layout.grid) * itemsize
    copied = grid if layout.split or any(map(any, spec.padding)) else 0  # to_grid copies then
    return scale * positions * channels * padded_taps, loops, scale * positions * channels, copied


def tiled_weight_grad_seconds(spec: ConvSpec, itemsize: int) -> float:
    """:func:`tiled_weight_grad`'s seconds: the multiply-adds at :data:`TILED_WGRAD_MAC_RATE`,
    :data:`TILED_WGRAD_LOOP_COST` per loop (its sums loaded and stored), the transposed values at
    :data:`TRANSPOSE_RATE` and the phase grid's copy at :data:`.compiled.GRID_COPY_RATE`."""
    if spec.macs == 0:
        return compiled_support.CALL_OVERHEAD
    macs, loops, transposed, copied = _tiled_cost_terms(spec, itemsize)
    return (compiled_support.CALL_OVERHEAD + macs / TILED_WGRAD_MAC_RATE + loops * TILED_WGRAD_LOOP_COST
            + transposed / TRANSPOSE_RATE + copied / compiled_support.GRID_COPY_RATE)


def dots_weight_grad_seconds(spec: ConvSpec, itemsize: int) -> float:
    """:func:`dots_weight_grad`'s seconds: the multiply-adds at :data:`WGRAD_MAC_RATE` (every wide position,
    runs padded to whole vectors, the taps to a multiple of four), :data:`WGRAD_LOOP_COST` per inner loop, the
    values copied into its scratch at :data:`WGRAD_COPY_RATE` and the phase grid's copy at
    :data:`.compiled.GRID_COPY_RATE`: one thread's seconds, as gemm's (both passes share out their work; on
    more than one thread gemm's is charged more, for its product on the BLAS's threads beside the pool's
    unroll: :meth:`.gemm.Gemm.pass_estimate`).

    The three constants were fitted (least squares on the logarithm) to the ratio of this pass's measured
    time to gemm's weight gradient on the benchmark's 37 convolution layers below 1.5e9 multiply-adds that
    are not depthwise (stems, ResNet-18/50's 3x3, strided and 1x1 layers, VGG's first, grouped, dilated,
    decoders, 1-d), in float32, one thread, CPU time (the shared 2-core machine's wall clock was too
    noisy); the fit's residual is 0.24 in the logarithm (27%). Measured against gemm's (estimated):
    0.35-0.55 on wav2vec's first layer, ResNeXt's 8-channel groups, 3x3 and 5x5 stems and VGG's first layer
    (0.36-0.89), 0.66-0.80 on the 7x7 stem, a 64 -> 3 decoder, a 1-d k=9 layer, a 5x5 96-channel layer and
    ResNet-18's 56x56 3x3 layer (0.56-0.91); near parity on 3x3 stride-2 layers at 56x56 (0.99-1.03;
    0.84-0.85); 1.4-5.5x on dilated, 1x1 and layers of 14x14 or 7x7 positions with 256 to 512 channels
    (1.1-6.1), where short runs padded to whole vectors and few positions per loop cost most. The planner
    takes it in gemm's place only below 0.96 of gemm's estimate (:data:`convolab.planner.CHEAPER_PASS_MARGIN`:
    at 0.92-0.95 it measured 12-25% faster than gemm on 3x3 layers of 28x28-112x112 positions, session 12).
    """
    if spec.macs == 0:
        return compiled_support.CALL_OVERHEAD
    values, loops, scratch, copied = _wgrad_cost_terms(spec, itemsize)
    return (compiled_support.CALL_OVERHEAD + values / WGRAD_MAC_RATE + loops * WGRAD_LOOP_COST
            + scratch / WGRAD_COPY_RATE + copied / compiled_support.GRID_COPY_RATE)


def _wide_unless_not_finite(weight_grad: Callable[[bool], np.ndarray]) -> np.ndarray:
    """``weight_grad(wide)`` over wide rows (``True``: each run one loop over several rows, their extra columns'
    grad_output zero), taken again over the real positions alone (``False``) where a sum is not finite.

    A wide run multiplies the input of a row's extra columns by zeros, and an
    inf or NaN there would make a sum NaN that the direct sum keeps finite.
    Every sum is finite only where every value it read was (an inf or NaN
    read gives an inf or NaN sum in any order), so then no extra column held
    one, and the wide sums are the direct sum's up to the order. Else the
    real positions' sums give the direct sum's pattern. That costs a second
    pass on such data only, where a look at the whole input (for finiteness,
    before the pass) cost a fifth of a 3-channel stem's pass."""
    sums = weight_grad(True)
    return sums if np.isfinite(sums).all() else weight_grad(False)


def dots_weight_grad(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dk[g*O+o, c, j] = sum_{n, p} g[n, g*O+o, p] * x_p[n, g*C+c, p*s + j*d]``
    (:func:`._kernels_wgrad.weight_grad`: dot products) on the input before padding, in jobs of (slot, group): a slot is a
    range of (sample, run of positions) pairs and sums into its own slice, and the slices are added in a
    fixed order, so the result does not depend on the threads. Over wide rows unless a sum is not finite
    (:func:`_wide_unless_not_finite`). ``(G*O, C, *kernel)``."""
    return _wide_unless_not_finite(lambda wide: _dots(x, grad_output, spec, wide))


def _dots(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec, wide: bool) -> np.ndarray:
    """:func:`dots_weight_grad` over wide rows or (``wide=False``) one row per run."""
    groups, out_per_group, work = spec.groups, spec.out_channels_per_group, spec.macs
    source, padding = _zero_padded_source(x, spec)
    source = rank3(source)
    grad_output = rank3(grad_output.astype(source.dtype, copy=False))
    layout = compiled_support._Layout(spec, source.itemsize, _wgrad_run_rows(out_per_group), wide=wide)
    grid = layout.to_grid(source, padding, work)
    taps, _, runs = layout.tables()
    tap_count = len(taps)
    taps = taps[np.minimum(np.arange(-(-tap_count // WGRAD_TAP_BLOCK) * WGRAD_TAP_BLOCK), tap_count - 1)]
    jobs_wanted = JOBS_PER_THREAD * threads_for(work)
    slots = min(spec.batch * len(runs), max(1, -(-jobs_wanted // groups)))
    partial = np.empty((slots, spec.out_channels, len(taps)), dtype=source.dtype)  # (S, G*O, T padded)
    weight_grad = kernels("wgrad").weight_grad
    # per thread: the group's grad_output rows, then a block of taps' runs; rows of whole cache lines
    scratch_shape = (out_per_group + WGRAD_TAP_BLOCK, -(-layout.scratch_shape[1] // WGRAD_LANES) * WGRAD_LANES)
    run_jobs(slots * groups, work,
                               lambda first, last, scratch: weight_grad(grid, grad_output, partial, scratch, taps,
                                                                        runs, first, last, groups, layout.depth_stride),
                               lambda: _aligned_empty(scratch_shape, source.dtype))
    return partial.sum(axis=0)[:, :tap_count].reshape(spec.weight_shape)


def tiled_weight_grad(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dk[g*O+o, c, j]`` as :func:`dots_weight_grad`, by :func:`._kernels_wgrad.weight_grad_tiled`: tiles
    of :data:`TILE_CHANNELS` output channels by a block of taps held in registers over each run's positions
    (grad_output transposed per run, a position's channels side by side). Over wide rows unless a sum is not
    finite (:func:`_wide_unless_not_finite`). ``(G*O, C, *kernel)``."""
    if spec.macs == 0:  # an empty batch, or no positions: nothing to sum
        return np.zeros(spec.weight_shape, dtype=np.result_type(x.dtype, grad_output.dtype))
    return _wide_unless_not_finite(lambda wide: _tiled(x, grad_output, spec, wide))


def _tiled(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec, wide: bool) -> np.ndarray:
    """:func:`tiled_weight_grad` over wide rows or (``wide=False``) a run's real positions alone."""
    groups, out_per_group, work = spec.groups, spec.out_channels_per_group, spec.macs
    source, padding = _zero_padded_source(x, spec)
    source = rank3(source)
    grad_output = rank3(grad_output.astype(source.dtype, copy=False))
    layout = _tiled_layout(spec, source.itemsize)
    grid = layout.to_grid(source, padding, work)
    taps, _, runs = layout.tables()
    depth, sh, sw, hq, wq = layout.grid
    depth_size = sh * sw * hq * wq
    # (c, kd*dd, rh, rw, offset) -> the tap's flat offset from channel g*C, depth od*sd, phase (0, 0)
    offsets = (taps[:, 0] * depth * depth_size + taps[:, 1] * depth_size + (taps[:, 2] * sw + taps[:, 3]) * hq * wq
               + taps[:, 4])
    tap_block = _tiled_tap_block(source.itemsize)
    tap_count = len(offsets)
    # padded to whole blocks of four (a real tap repeated: sums dropped below); the kernel ends in one where eight
    # would pass the last tap
    offsets = offsets[np.minimum(np.arange(-(-tap_count // WGRAD_TAP_BLOCK) * WGRAD_TAP_BLOCK), tap_count - 1)]
    tiles = -(-out_per_group // TILE_CHANNELS)
    jobs_wanted = JOBS_PER_THREAD * threads_for(work)
    slots = min(spec.batch * len(runs), max(1, -(-jobs_wanted // (groups * tiles))))
    partial = np.empty((slots, groups, tiles, len(offsets), TILE_CHANNELS), dtype=source.dtype)
    capacity = int(((runs[:, 2] - runs[:, 1]) * wq).max())  # wide positions of the longest run
    weight_grad = kernels("wgrad").weight_grad_tiled
    flat = grid.reshape(-1)
    run_jobs(slots * groups * tiles, work,
                               lambda first, last, rows: weight_grad(flat, grad_output, partial, rows, offsets, runs,
                                                                     first, last, groups, depth * depth_size,
                                                                     depth_size, wq, layout.depth_stride, tap_block,
                                                                     wide),
                               lambda: np.empty(capacity * TILE_CHANNELS, dtype=source.dtype))
    # (S, G, B, T padded, lanes) -> (G, B*lanes, T): the channels past the group's last and padded taps dropped
    summed = partial.sum(axis=0).transpose(0, 1, 3, 2).reshape(groups, tiles * TILE_CHANNELS, -1)
    return np.ascontiguousarray(summed[:, :out_per_group, :tap_count]).reshape(spec.weight_shape)


def _takes_tiles(spec: ConvSpec, itemsize: int) -> bool:
    """Whether the tiled kernel may run ``spec`` in this dtype: float32 only (its cost model was fitted there; in
    float64, four taps per block, it measured 1.05-1.2x the dot products' time on ResNet-18's 56x56 layer and
    inception's 5x5, 0.9x on a 3x3 stem); not with under half a tile of output channels per group (most
    of each tile's sums would be zeros: ResNeXt's 4 and 8 per group measured 1.8-2.3x slower than the dot
    products), nor a dense layer with one tap, one matrix product and the BLAS's own ground (ResNet's 1x1
    layers measured 0.9-2x gemm's time, most of them slower, on estimates within 15% of it)."""
    one_product = spec.groups == 1 and prod(spec.kernel_size) == 1
    return itemsize == 4 and 2 * spec.out_channels_per_group >= TILE_CHANNELS and not one_product


@lru_cache(maxsize=1024)
def _kernel_choice(spec: ConvSpec, itemsize: int) -> tuple[bool, float]:
    """Whether the tiled kernel runs ``spec`` (else the dot products), and the seconds of the one that does:
    remembered per problem, since each estimate lays out the runs (a tenth of a millisecond a call, against a
    stem's 2 ms pass). Both estimates are pure functions of their arguments."""
    dots = dots_weight_grad_seconds(spec, itemsize)
    if _takes_tiles(spec, itemsize):
        tiled = tiled_weight_grad_seconds(spec, itemsize)
        if tiled < dots:
            return True, tiled
    return False, dots


def weight_grad_seconds(spec: ConvSpec, itemsize: int) -> float:
    """compiled's weight gradient's seconds: the faster kernel's, as :func:`compiled_weight_grad` picks it."""
    return _kernel_choice(spec, itemsize)[1]


def compiled_weight_grad(x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``dk[g*O+o, c, j] = sum_{n, p} g[n, g*O+o, p] * x_p[n, g*C+c, p*s + j*d]``, ``(G*O, C, *kernel)``, by
    the kernel estimated faster: the register tiles (:func:`tiled_weight_grad`) or the dot products
    (:func:`dots_weight_grad`)."""
    tiled, _ = _kernel_choice(spec, x.dtype.itemsize)  # float32 or float64: the planner gives this pass no other
    return tiled_weight_grad(x, grad_output, spec) if tiled else dots_weight_grad(x, grad_output, spec)
