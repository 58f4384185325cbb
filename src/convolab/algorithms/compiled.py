"""compiled: the direct sum as compiled loops (Numba), for the layers that are not one big matrix product.

Depthwise and grouped layers with few channels per group, small-channel stems,
strided, dilated and 3-d layers spend most of a NumPy path's time copying
(unrolled columns, padded grids) for products too small for the BLAS to reach
its rate. A plain loop over the sum reads the padded input where it lies (split
into its stride phases at a stride); compiled, it runs at the speed of the cache, or, where a group has
four or more output channels, at the FMA units' (sums held in registers across all taps:
:mod:`._kernels_tiled`). The other loops live in :mod:`._kernels_direct` (imported, with Numba, only on first use:
:mod:`._compiled`); this module lays the arrays out for them, shares their
jobs among threads (:func:`._threads.in_parallel`), and holds the cost model.

Axis legend: N samples, G groups, C input channels per group, O output
channels per group, K kernel taps.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import NamedTuple, Sequence

import numpy as np

from .._dtypes import all_finite
from .._settings import current_workspace_limit
from .._window import pad_adjoint, reverse_spatial
from ..spec import ConvSpec, conv_spec
from . import Algorithm, Formulation
from . import _wgrad_compiled as wgrad  # the weight gradient's wrapper and cost model
from ._compiled import kernels, numba_missing
from ._input_grad import FullOrScatter, channels_swapped, full_padding
from ._kernel_layout import KERNEL_RANK, filter_rows, rank3, shape3, steps3
from ._rates import THREAD_GAIN
from ._scratch import reused_empty
from ._threads import COMPILED_PARALLEL_WORK, run_jobs, threads_for
from .depthwise import _zero_padded_source

__all__ = ["Compiled", "COMPILED_PARALLEL_WORK", "OUT_BLOCK"]

#: Output channels one job of the forward (and of the weight gradient) computes, and taps read together: the
#: inner loops add into four channels' sums from three taps at once (as in :mod:`._kernels_direct`, which
#: cannot be imported here before Numba is wanted).
OUT_BLOCK, TAP_BLOCK = 4, 3
#: Output channels of one register tile of the tiled forward (:mod:`._kernels_tiled`), wide (float32) or
#: narrow (float64, or a group with fewer channels), and the most channels one of its jobs computes (their
#: tiles reuse each stretch of input while it is in the L1 cache).
TILE_WIDE, TILE_NARROW, TILED_BLOCK = 8, 4, 64
#: Positions of a tile (:data:`._kernels_tiled.LANES`).
LANES = 32
#: Bytes of one thread's scratch sums (a run of wide positions per channel): within the L1 cache...
SCRATCH_BYTES = 32 * 2**10
#: ... and positions per run: at most this many (the runs the taps read stay in the L2 cache), ...
MOST_POSITIONS = 2048
#: ... at least this many (a shorter run spends its time starting the loop).
LEAST_POSITIONS = 64
# The cost model (:meth:`Compiled.estimate`), fitted to forward timings against today's algorithms on the
# layer classes of issue 15 (see the estimate), in the reference machine's seconds like theirs.
#: Fixed cost of a call: the layout's tables, the jobs handed out, the kernel's dispatch...
CALL_OVERHEAD = 22e-6
#: ... and of the tiled forward's (the weights packed by tile, the grid copied, two hand-outs of jobs):
#: measured 86 us against gemm's 26 on a (1, 8, 2, 2) x (8, 8, 1, 1) layer, 138 against 103 on
#: (1, 32, 4, 4) x (16, 32, 3, 3), so that tiny layers (a digits CNN's) stay with the NumPy paths.
TILED_CALL_OVERHEAD = 100e-6
#: Loads and stores of float32 values per second that the inner loops issue on one thread (float64: half as
#: many values, in vectors of the same width).
CACHE_RATE = 20e9
#: Seconds to start one inner loop (a run of one tap group for one block of channels).
LOOP_COST = 36e-9
#: Bytes per second of the kernel's passes over memory: the grid read once per block of output channels, the
#: output written...
MEMORY_RATE = 16e9
#: ... and of the phase grid's copy (the input padded, and split at a stride: strided reads).
GRID_COPY_RATE = 3.6e9
#: The tiled forward (:mod:`._kernels_tiled`): multiply-adds per second of one thread, float32 (float64: half),
#: tile channels past a group's last and recomputed positions included; the seconds of each pass of a tile
#: over a stretch and a block of taps (its sums zeroed or loaded, stored: about a hundred cycles, held there);
#: and the seconds of each input line a tile's stretch reads (one per input channel, kernel row and column phase
#: its taps use: the taps along a row at stride 1 share their cache lines, so a 5x5 or 1-d k 9 layer pays less
#: per multiply-add than a 3x3 one, a stride-2 layer, whose taps alternate between two phases, more).
#: Session 8 fitted the first two on 23 layers (the ratio to the fastest other algorithm's estimate); session 9
#: refitted the rate with the line term (least squares on the logarithm of the measured time, one thread,
#: CPU time, min of 5, on 17 layers: 3x3 at stride 2, dilated 2 and 6, 5x5 with 32-192 channels, 1-d k 9,
#: 3-d, stems 3x3-7x7, grouped with 8 channels per group, 7x7 images): the rms error fell from 0.136 to 0.113,
#: the 5x5 and k 9 layers from 15-27% over to 4-16%.
TILED_MAC_RATE, STRETCH_COST, LINE_COST = 83e9, 30e-9, 2.25e-9


def _block_for(count: int, outer: int, work: int, most: int) -> int:
    """Channels per job out of ``count`` (at most ``most``), with ``outer`` jobs per channel block: fewer
    where that is needed for two jobs per thread."""
    wanted = 2 * threads_for(work)
    block = min(count, most)
    while block > 1 and outer * -(-count // block) < wanted:
        block = -(-block // 2)
    return block


def _tile_for(out_per_group: int, itemsize: int) -> int:
    """Output channels per register tile of :mod:`._kernels_tiled` (8 for float32, else 4), or 0 where a group
    has fewer than 4 output channels (most of a tile would be zeros: :mod:`._kernels_direct` runs those)."""
    if out_per_group < TILE_NARROW:
        return 0
    return TILE_WIDE if itemsize == 4 and out_per_group >= TILE_WIDE else TILE_NARROW


def _positions(itemsize: int, scratch_rows: int) -> int:
    """Wide positions in one run: ``scratch_rows`` channels' sums within :data:`SCRATCH_BYTES`, within bounds."""
    return min(MOST_POSITIONS, max(LEAST_POSITIONS, SCRATCH_BYTES // (max(scratch_rows, 1) * itemsize)))


def _tap_groups(rows: int, kw_size: int) -> list[tuple[int, int]]:
    """``(first tap, count)`` for ``rows`` rows of ``kw_size`` taps along the last axis: three taps where three
    are left in the row (read together by the inner loops), else one."""
    groups = []
    for row in range(rows):
        kw = 0
        while kw < kw_size:
            count = TAP_BLOCK if kw + TAP_BLOCK <= kw_size else 1
            groups.append((row * kw_size + kw, count))
            kw += count
    return groups


class _Layout:
    """How the kernels see a problem (:mod:`._kernels_direct`): the phase grid, the taps, the runs.

    The grid is the padded input with its last two axes split into their
    stride phases (a view at stride 1). Each tap reads one contiguous run of
    its phase plane per run of output positions: ``rows`` wide rows of ``wq``
    positions, or ``cols`` positions of one row where rows are long, so that
    ``scratch_rows`` channels' sums of one run stay within
    :data:`SCRATCH_BYTES`. ``wide=False``: one row per run, no extra columns
    (where an inf or NaN would meet their zeros).

    ``shared_padding``: the zero padding ``(low, high)`` the grid's copy adds
    along the last axis, where its rows may share it (stride 1 along that
    axis, wide rows): a row's high padding is then the next row's low padding,
    its pitch ``Wq`` the padded width less ``min(low, high)`` (a window that
    reads past its row's end reads the next row's low zeros; a last row per
    plane of zeros gives the plane's last row one), and each wide row computes
    that many fewer extra columns: 2 instead of 4 of a 5x5 layer's 32 at 28x28,
    6 instead of 12 of ASPP's (d6) 45.
    """

    def __init__(self, spec: ConvSpec, itemsize: int, scratch_rows: int, wide: bool = True,
                 shared_padding: tuple[int, int] | None = None):
        self.spec, self._key = spec, (spec, itemsize, scratch_rows, wide, shared_padding)
        depth, height, width = shape3((1, 1, *spec.padded_size))[2:]
        self.depth_stride, sh, sw = steps3(spec.stride)
        out_d, out_h, out_w = shape3((1, 1, *spec.output_size))[2:]
        self.split = (sh, sw) != (1, 1)
        positions = _positions(itemsize, scratch_rows)
        # only where a run holds several wide rows (where a run is part of one row, there are no extra columns
        # to save, and the plane's extra row would be a copy of the whole row's zeros)
        several_rows = wide and min(out_h, positions // -(-width // sw)) > 1
        shared = min(shared_padding) if shared_padding and sw == 1 and several_rows else 0
        # (D, SH, SW, Hq, Wq), with a row of zeros per plane where rows share their padding
        self.grid = (depth, sh, sw, -(-height // sh) + (shared > 0), -(-width // sw) - shared)
        self.rows = max(1, min(out_h, positions // self.grid[-1])) if wide else 1
        self.cols = out_w if self.rows > 1 else min(out_w, positions)
        self.run_count = out_d * -(-out_h // self.rows) * -(-out_w // self.cols)
        self.scratch_shape = (max(scratch_rows, 1), (self.rows - 1) * self.grid[-1] + self.cols)

    def tables(self, depth_inner: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(taps, tap_groups, runs)`` as the kernels take them (see :mod:`._kernels_direct`), made once per
        layout: building them in Python cost more than a small layer's whole kernel (about 0.1 ms of 0.3 ms on
        a 4x4 image). The kernels only read them; nothing else may write them.

        The runs go depth after depth, or, ``depth_inner``, band of rows after band, each band through every
        output depth (:attr:`_Tiling.band_order`)."""
        return _tables(*self._key, depth_inner)

    def run_bounds(self, depth_inner: bool, blocks: int) -> np.ndarray:
        """The first run of each of ``blocks`` blocks of the runs (:meth:`tables`), and the count: blocks of about
        as many wide positions each (a band's last rows may be a short run), remembered like the tables."""
        return _run_bounds(*self._key, depth_inner, blocks)

    def _build_tables(self, depth_inner: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spec, wq = self.spec, self.grid[-1]
        _, sh, sw = steps3(spec.stride)
        dd, dh, dw = steps3(spec.dilation)
        kd_size, kh_size, kw_size = shape3((1, 1, *spec.kernel_size))[2:]
        out_d, out_h, out_w = shape3((1, 1, *spec.output_size))[2:]
        # (c, kd*dd, rh, rw, offset in the phase plane) per tap, taps in the kernel's C order
        taps = np.array([(c, kd * dd, kh * dh % sh, kw * dw % sw, (kh * dh // sh) * wq + kw * dw // sw)
                         for c in range(spec.in_channels_per_group) for kd in range(kd_size)
                         for kh in range(kh_size) for kw in range(kw_size)], dtype=np.int64)
        tap_groups = np.array(_tap_groups(len(taps) // kw_size, kw_size), dtype=np.int64)
        rows, cols = self.rows, self.cols
        # (od, r0, r1, w0, width) per run
        runs = np.array([(od, r0, min(out_h, r0 + rows), w0, min(cols, out_w - w0)) for od in range(out_d)
                         for r0 in range(0, out_h, rows) for w0 in range(0, out_w, cols)], dtype=np.int64)
        if depth_inner:  # (r0, w0, od): a stable sort keeps each band's depths in order
            runs = runs[np.lexsort((runs[:, 0], runs[:, 3], runs[:, 1]))]
        return taps, tap_groups, runs

    def grid_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """The phase grid's bytes where it is a copy (a stride along the last two axes, or padding: the input
        padded as it is copied, :meth:`to_grid`), else 0 (the input is read in place)."""
        copied = self.split or any(low or high for low, high in spec.padding)
        return spec.batch * spec.in_channels * prod(self.grid) * itemsize if copied else 0

    def to_grid(self, source: np.ndarray, padding: Sequence[tuple[int, int]], work: int) -> np.ndarray:
        """The phase grid ``(N, C, D, SH, SW, Hq, Wq)`` of ``source`` ``(N, C, D, H, W)`` zero-padded by
        ``padding`` (per spatial axis): ``source`` itself where that is the padded input at stride 1, else a
        copy, padded and split in one threaded pass (:func:`._kernels_direct.copy_phases`, flat and unsigned:
        at 2 threads 0.84 against NumPy's strided copies' 0.95 ms for a (8, 64, 56, 56) input padded by 1, 0.57
        against 1.02 ms for a 224x224 stem at stride 2, 2.0 against 2.9 ms for a 3-d (2, 32, 16, 64, 64)). The
        copy writes the padding's zeros too, so the grid is allocated empty: one pass over it fewer (one thread,
        the stem's (8, 3) planes at stride 2: 0.55 -> 0.40 ms; (8, 64, 56, 56) padded by 1: 0.76 -> 0.64 ms)."""
        lows = steps3(tuple(low for low, _ in padding), fill=0)
        if not self.split and not any(low or high for low, high in padding):
            return source.reshape(*source.shape[:3], 1, 1, *source.shape[3:])
        # copy_phases writes every cell; the grid lives only in this call, so it reuses the thread's. Fresh, a
        # few-MiB grid was faulted in on every call where malloc gave its pages back (inception's 5x5 layer)
        grid = reused_empty((*source.shape[:2], *self.grid), source.dtype, "phase grid")
        self._copy(source, grid, True, lows, work)
        return grid

    def from_grid(self, grid: np.ndarray, shape: tuple[int, ...], padding: Sequence[tuple[int, int]],
                  work: int) -> np.ndarray:
        """The array ``shape`` ``(N, C, D, H, W)`` inside ``padding`` of the phase grid ``grid`` (the transpose of
        :meth:`to_grid`: the padding's cells dropped)."""
        if not self.split and not any(low or high for low, high in padding):
            return grid.reshape(shape)
        array = np.empty(shape, dtype=grid.dtype)
        self._copy(array, grid, False, steps3(tuple(low for low, _ in padding), fill=0), work)
        return array

    @staticmethod
    def _copy(array: np.ndarray, grid: np.ndarray, split: bool, lows: tuple[int, ...], work: int) -> None:
        copy = kernels("direct").copy_phases
        run_jobs(array.shape[0] * array.shape[1], work,
                  lambda first, last, _: copy(array, grid, first, last, split, *lows), lambda: None)


@lru_cache(maxsize=512)
def _tables(spec: ConvSpec, itemsize: int, scratch_rows: int, wide: bool,
            shared_padding: tuple[int, int] | None, depth_inner: bool) -> tuple[np.ndarray, ...]:
    """:meth:`_Layout.tables` of the layout these arguments make, remembered (the layout is a pure function of
    them)."""
    return _Layout(spec, itemsize, scratch_rows, wide, shared_padding)._build_tables(depth_inner)


def _cost_terms(spec: ConvSpec, itemsize: int) -> tuple[float, int, int, int, float]:
    """What :meth:`Compiled.estimate` charges for: the inner loops' loads and stores (in float32 values: a
    float64 counts twice), the inner loops started, the bytes the kernel passes over in memory, the bytes of
    the phase grid's copy, and the threads' speedup."""
    work, out_per_group = spec.macs, spec.out_channels_per_group
    block = _block_for(out_per_group, spec.batch * spec.groups, work, OUT_BLOCK)
    full, rest = divmod(out_per_group, block)
    blocks = [block] * full + ([rest] if rest else [])  # the output-channel blocks of one group
    in_fours = sum(OUT_BLOCK * (b // OUT_BLOCK) for b in blocks) / out_per_group
    kw_size = spec.kernel_size[-1]
    in_threes = TAP_BLOCK * (kw_size // TAP_BLOCK) / kw_size
    per_mac = (in_fours * (in_threes * 11 / 12 + (1 - in_threes) * 9 / 4)
               + (1 - in_fours) * (in_threes * 5 / 3 + (1 - in_threes) * 3))
    layout = _Layout(spec, itemsize, block)
    rows, out_w = layout.rows, spec.output_size[-1]
    waste = ((rows - 1) * layout.grid[-1] + out_w) / (rows * out_w)  # a wide row's extra columns
    taps = spec.terms
    tap_groups = taps // kw_size * (kw_size // TAP_BLOCK + kw_size % TAP_BLOCK)
    loops = spec.batch * spec.groups * layout.run_count * tap_groups * sum(b // OUT_BLOCK + b % OUT_BLOCK
                                                                            for b in blocks)
    grid = spec.batch * spec.in_channels * prod(layout.grid) * itemsize
    copied = grid if layout.split or any(map(any, spec.padding)) else 0  # written by copy_phases
    moved = grid * len(blocks) + prod(spec.output_shape) * itemsize
    threads = min(threads_for(work), spec.batch * spec.groups * len(blocks))
    return work * waste * per_mac * itemsize / 4, loops, moved, copied, 1 + THREAD_GAIN * (threads - 1)


def _source_padding(spec: ConvSpec) -> tuple[tuple[int, int], ...]:
    """The zero padding the forward's phase grid adds to its source (:func:`.depthwise._zero_padded_source`): the
    spec's, where that is zeros; else none (the source comes padded)."""
    return spec.padding if spec.padding_mode == "zeros" else ((0, 0),) * spec.rank


#: The bytes of input planes one output depth's windows read above which the tiled forward's runs go band of
#: rows after band through every depth (:attr:`_Tiling.band_order`), not depth after depth: three quarters of
#: the L2 cache here. Measured in-process, alternating (4 samples, 3x3x3, 16 or 32 -> 32 channels): 5-7% faster
#: from 0.93 MiB (32 channels at 48x48) to 3.55 MiB of planes, the same at 0.44 MiB, 5% slower at 0.40 MiB (8
#: channels at 64x64, whose planes of every depth fit the cache); a 3-d U-Net layer's forward (2 samples, 32
#: channels at 64x64, 1.6 MiB) at two threads, with the split by runs: 40-41 -> 27-28 ms a call, in a slow phase
#: of the machine (docs/compiled.md).
BAND_ORDER_BYTES = 768 * 2**10


#: Outputs of the tiled forward this large or larger, of at most so many terms per output value, are written with
#: non-temporal stores, which write a cache line without reading it first and leave it out of the cache. At
#: 8 MiB an output is far beyond the L2 caches (1 MiB a core here), so a next pass reads it from memory anyway;
#: with few terms (the 3-channel stems: 27-147) the output's writes are what bounds the layer. The copy of
#: 12.8 MB from a scratch in the cache, one thread: 0.93 -> 0.45 ms. Two threads, alternating processes, the
#: median of 15 calls in three runs each: MobileNet's 3x3 stem (27 terms) 1.15-1.21 -> 0.95-1.05 ms, the 5x5 (75)
#: 2.64-2.92 -> 2.63-2.82, the 7x7 (147) 5.32-5.95 -> 4.92-6.01; the 3-d U-Net layers (432 and 864 terms)
#: 5-7% slower, hence the bound on the terms.
STREAM_OUTPUT_BYTES, STREAM_MOST_TERMS = 8 * 2**20, 192


class _Tiling(NamedTuple):
    """How the tiled forward splits a problem (:func:`_tiling`)."""

    #: Tiles of output channels per group.
    tiles_per_group: int
    #: Tiles per job.
    tiles_per_job: int
    #: Blocks of runs (bands of output positions, through every depth) per (sample, group, tiles): jobs that
    #: read their own part of the grid, where splitting the channels would have each job read all of it.
    run_blocks: int
    #: The layout.
    layout: _Layout
    #: Whether the runs go band of rows after band, each band through every output depth (``depth_inner``
    #: of :meth:`_Layout.tables`), where one output depth's windows read more than :data:`BAND_ORDER_BYTES`
    #: of input planes: a band's planes then stay in the L2 cache for the next depths, which read them again.
    band_order: bool

    @property
    def jobs(self) -> int:
        """Jobs per (sample, group)."""
        return -(-self.tiles_per_group // self.tiles_per_job) * self.run_blocks

    @property
    def whole(self) -> bool:
        """Whether each job computes a whole (sample, group): all its channels, all its positions."""
        return self.tiles_per_job >= self.tiles_per_group and self.run_blocks == 1


def _tiling(spec: ConvSpec, itemsize: int, tile: int, padding: Sequence[tuple[int, int]] | None = None) -> _Tiling:
    """How the tiled forward splits a problem: tiles of ``tile`` output channels, at most :data:`TILED_BLOCK`
    channels per job; where (sample, group) jobs are fewer than two per thread, blocks of runs first (each
    job reads a part of the grid once: a 3-d U-Net layer's 2 samples, 32 -> 32 channels, split by channels read
    each sample's 10 MiB grid twice), then, where the runs are too few, fewer tiles per job. The layout's runs
    are as long as one tile's sums allow (the scratch is written once per stretch, so it need not stay in the
    L1 cache, and a run under LANES positions is summed one position at a time), its rows sharing the zero
    ``padding`` the grid's copy adds (the spec's, where that is zeros; see :class:`_Layout`)."""
    work, out_per_group, outer = spec.macs, spec.out_channels_per_group, spec.batch * spec.groups
    padding = _source_padding(spec) if padding is None else padding
    layout = _Layout(spec, itemsize, tile, shared_padding=padding[-1])
    tiles_per_group = -(-out_per_group // tile)
    tiles_per_job = max(1, -(-min(out_per_group, TILED_BLOCK) // tile))
    jobs = outer * -(-tiles_per_group // tiles_per_job)  # none where the batch is empty
    run_blocks = max(1, min(layout.run_count, -(-2 * threads_for(work) // jobs))) if jobs else 1
    if jobs * run_blocks < 2 * threads_for(work):  # too few runs: fewer channels per job too
        tiles_per_job = -(-_block_for(out_per_group, outer * run_blocks, work, TILED_BLOCK) // tile)
    kd_size = shape3((1, 1, *spec.kernel_size))[2]
    window = spec.in_channels_per_group * kd_size * prod(layout.grid[1:]) * itemsize  # one output depth's planes
    band_order = kd_size > 1 and window > BAND_ORDER_BYTES
    return _Tiling(tiles_per_group, tiles_per_job, run_blocks, layout, band_order)


@lru_cache(maxsize=512)
def _run_bounds(spec: ConvSpec, itemsize: int, scratch_rows: int, wide: bool, shared_padding: tuple[int, int] | None,
                depth_inner: bool, blocks: int) -> np.ndarray:
    """:meth:`_Layout.run_bounds` of the layout these arguments make."""
    layout = _Layout(spec, itemsize, scratch_rows, wide, shared_padding)
    runs, wq = layout.tables(depth_inner)[2], layout.grid[-1]
    ends = np.cumsum((runs[:, 2] - runs[:, 1] - 1) * wq + runs[:, 4])
    total = ends[-1] if len(ends) else 0
    # block k ends before the run in which (k + 1) / blocks of the positions are reached (with it, where it ends there)
    cuts = np.searchsorted(ends, total * np.arange(1, blocks) / blocks, side="right")
    return np.array([0, *np.minimum(cuts, len(runs)), len(runs)], dtype=np.int64)


#: The bytes of the phase grid of one (sample, group) that each job of the tiled forward copies into its thread's
#: own stage, read there from the cache, rather than the whole grid copied first, written to memory and read back:
#: at most this many (within the L2 cache, with the output's lines passing through it), ...
STAGE_BYTES = 768 * 2**10
#: ... and at least this many: per-job copies of small stages measured slower than one pass over the whole grid
#: (one thread, session 13, staged inside :func:`._kernels_tiled.forward`: ResNeXt's (8, 64, 7, 7) in 8 groups
#: 0.11 -> 0.18 ms with 2.6 KiB stages, (8, 256, 28, 28) in 32 groups 2.1 -> 2.3 ms with 29 KiB), where the
#: 3-channel 224x224 stems' 613 KiB stages made them 5-8% faster and a 3 -> 64 decoder's 202 KiB at 128x128
#: changed nothing; none smaller was measured.
STAGE_LEAST_BYTES = 128 * 2**10


def _stage_shape(spec: ConvSpec, itemsize: int, layout: _Layout, padding: Sequence[tuple[int, int]],
                 whole: bool) -> tuple[int, ...]:
    """The tiled forward's stage, one (sample, group)'s phase grid ``(1, C, *grid)``, where each job copies the
    planes it reads into its thread's own: where the grid is a copy at all (a stride, or the source's zero
    ``padding``), the stage's bytes are within :data:`STAGE_LEAST_BYTES` and :data:`STAGE_BYTES`, and, in one
    group, each job computes all the output channels at all the positions (``whole``,
    :attr:`_Tiling.whole`), so that no two jobs copy the same planes; else ``(0,) * 7`` (the whole grid copied
    first)."""
    shape = (1, spec.in_channels_per_group, *layout.grid)
    copied = layout.split or any(low or high for low, high in padding)
    fits = STAGE_LEAST_BYTES <= prod(shape) * itemsize <= STAGE_BYTES
    return shape if spec.groups == 1 and whole and copied and fits else (0,) * len(shape)


def _tiled_terms(spec: ConvSpec, itemsize: int, tile: int) -> tuple[float, int, int, int, int]:
    """What :func:`_tiled_cost` charges for: the multiply-adds (in float32's: a float64 one counts twice), the
    (tile, stretch) passes, the bytes passed over in memory and copied into the phase grid, and
    the (tile, stretch, input line) reads (:data:`LINE_COST`)."""
    tiling = _tiling(spec, itemsize, tile)
    tiles_per_group, tiles_per_job, layout = tiling.tiles_per_group, tiling.tiles_per_job, tiling.layout
    out_d, out_h, out_w = shape3((1, 1, *spec.output_size))[2:]
    # the runs of one depth: full ones, and a last one with the rows (or columns) left
    full_runs, rest = divmod(out_h, layout.rows) if layout.rows > 1 else divmod(out_w, layout.cols)
    run_lengths = [(layout.rows - 1) * layout.grid[-1] + out_w if layout.rows > 1 else layout.cols] * full_runs
    if rest:
        run_lengths.append((rest - 1) * layout.grid[-1] + out_w if layout.rows > 1 else rest)
    if layout.rows == 1:  # runs within one row: as many in every row
        run_lengths *= out_h
    # a run shorter than a stretch is summed one position at a time, as slowly as a stretch per position
    positions = sum(-(-length // LANES) * LANES if length >= LANES else length * LANES for length in run_lengths)
    stretches = sum(-(-length // LANES) for length in run_lengths)
    tiles = spec.batch * spec.groups * tiles_per_group * out_d
    taps = spec.terms
    grid = spec.batch * spec.in_channels * prod(layout.grid) * itemsize
    copied = grid if layout.split or any(map(any, spec.padding)) else 0
    kd_size, kh_size, kw_size = shape3((1, 1, *spec.kernel_size))[2:]
    lines = spec.in_channels_per_group * kd_size * kh_size * min(kw_size, steps3(spec.stride)[-1])  # per stretch
    return (tiles * positions * tile * taps * itemsize / 4, tiles * stretches,
            grid * -(-tiles_per_group // tiles_per_job) + prod(spec.output_shape) * itemsize, copied,
            tiles * stretches * lines)


def _tiled_cost(spec: ConvSpec, itemsize: int, tile: int) -> float:
    """What :meth:`Compiled.estimate` charges the tiled forward (:mod:`._kernels_tiled`) in one thread's seconds:
    every tile's multiply-adds (the zero channels and a run's recomputed end included) at
    :data:`TILED_MAC_RATE`; :data:`STRETCH_COST` per (tile, stretch); :data:`LINE_COST` per input line a
    tile's stretch reads; the grid's reads (once per block of channels) and the output's writes at
    :data:`MEMORY_RATE`, and the grid's copy at :data:`GRID_COPY_RATE`."""
    macs, passes, moved, copied, lines = _tiled_terms(spec, itemsize, tile)
    return (macs / TILED_MAC_RATE + passes * STRETCH_COST + lines * LINE_COST + moved / MEMORY_RATE
            + copied / GRID_COPY_RATE)


class Compiled(FullOrScatter, Algorithm):
    """The direct sum, compiled: per output row, every input channel and tap adds into a few channels' rows.

    Runs any groups (depthwise and few channels per group are what it is for),
    strides and dilations, one to three spatial dimensions, float32 and
    float64. Its own passes: the input gradient as its forward on grad_output
    (stride 1: a full correlation with the kernel reversed) or as the forward's
    windows written back (each window's gradient added where it was read), and
    the weight gradient as dot products of each tap's runs with grad_output's rows (:mod:`._kernels_wgrad`).
    """

    name = "compiled"
    passes = frozenset({"forward", "input_grad", "weight_grad"})
    automatic = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """Refuses other dtypes, ranks and a phase grid over the workspace limit before it imports Numba; then
        whether Numba imports."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            return f"compiled kernels run float32 and float64 only, not {dtype} (the NumPy paths do)"
        if spec.rank > KERNEL_RANK:
            return f"compiled kernels run 1 to {KERNEL_RANK} spatial dimensions, not {spec.rank}"
        grid = _Layout(spec, dtype.itemsize, OUT_BLOCK).grid_bytes(spec, dtype.itemsize)
        tile = _tile_for(spec.out_channels_per_group, dtype.itemsize)
        if tile:  # the tiles' rows may share their padding: a row more per plane, each narrower
            grid = max(grid, _tiling(spec, dtype.itemsize, tile).layout.grid_bytes(spec, dtype.itemsize))
        limit = current_workspace_limit()
        if grid > limit:
            return f"its phase grid (the input padded, split at a stride: {grid / 2**20:.3g} MiB) exceeds the " \
                   f"workspace limit ({limit / 2**20:.3g} MiB)"
        return numba_missing()

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """With four or more output channels per group, the register tiles' cost (:func:`_tiled_cost`, one
        thread's, more where the jobs are too few for the threads); else the inner loops' loads and stores at
        the cache's rate, the loops' starts, and the passes over memory.

        Per multiply-add an inner loop loads and stores ``11/12`` values where
        it adds three taps into four output channels, ``9/4`` with one tap,
        ``5/3`` into one channel (depthwise) from three taps, and ``3`` with
        one: those values at :data:`CACHE_RATE`, over every wide position (a
        wide row's extra columns included). Each inner loop costs
        :data:`LOOP_COST` to start (short rows, many small groups); the grid's
        reads (once per block of output channels) and the output's writes go
        at :data:`MEMORY_RATE`, the phase grid's copy at
        :data:`GRID_COPY_RATE`. Jobs are shared among threads, each past the
        first counted at :data:`~convolab.algorithms._rates.THREAD_GAIN`.

        The constants were fitted (least squares on the logarithm) so that, on
        32 forward problems (depthwise 3x3 and 5x5 at stride 1 and 2, grouped
        with 4 and 8 channels per group, stems, dilated, 3-d, 1-d, dense 3x3
        and 1x1, tiny) in float32 and float64, the ratio of this estimate to
        the estimate of the algorithm "auto" chose before follows the ratio of
        their measured times on a 2-core Xeon (this project's machine at the
        time, itself noisy within about 30%). The clear cases come out as
        measured: depthwise at stride 1 and 5x5, grouped with few channels per
        group, small depthwise layers go to this algorithm (measured 0.3-0.8
        of the time of depthwise or folded); dense layers, 1x1, 3-d and 1-d
        with tens of channels stay with folded or gemm (measured 1.2-8x
        slower here). Near parity (0.9-1.3: depthwise at stride 2, 7x7 stems,
        tiny problems) either may win.
        """
        if spec.macs == 0:  # no channels, or an empty batch: nothing but the call
            return CALL_OVERHEAD
        tile = _tile_for(spec.out_channels_per_group, dtype.itemsize)
        if tile and spec.groups == 1 and prod(spec.kernel_size) == 1:
            # One tap: the layer is one matrix product, the BLAS's own ground (ResNet-50's 1x1 128 -> 512 at
            # 28x28: gemm 0.6x PyTorch, the tiles 2.1x, on estimates within 2% of each other).
            return float("inf")
        if tile:
            # One thread's seconds, like the others' estimates, which do not change with the threads (theirs
            # share out their work as this one's jobs do): only too few jobs for the threads cost more here.
            available = threads_for(spec.macs)
            threads = min(available, spec.batch * spec.groups * _tiling(spec, dtype.itemsize, tile).jobs)
            return TILED_CALL_OVERHEAD + _tiled_cost(spec, dtype.itemsize, tile) * (
                (1 + THREAD_GAIN * (available - 1)) / (1 + THREAD_GAIN * (threads - 1)))
        values, loops, moved, copied, speedup = _cost_terms(spec, dtype.itemsize)
        return CALL_OVERHEAD + (values / CACHE_RATE + loops * LOOP_COST + moved / MEMORY_RATE
                                + copied / GRID_COPY_RATE) / speedup

    def pass_estimate(self, name: str, spec: ConvSpec, dtype: np.dtype) -> float | None:
        """Its weight gradient's seconds (:func:`._wgrad_compiled.weight_grad_seconds`)."""
        return wgrad.weight_grad_seconds(spec, dtype.itemsize) if name == "weight_grad" else None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """The phase grid (the padded input split into its phases, at a stride along the last two axes), and
        each thread's scratch sums (with the register tiles, also the weights laid out by tile, and where they
        stage each sample's grid, :func:`_stage_shape`, one stage per thread instead of the whole grid)."""
        work, out_per_group = spec.macs, spec.out_channels_per_group
        tile = _tile_for(out_per_group, itemsize)
        if tile:
            tiling = _tiling(spec, itemsize, tile)
            layout = tiling.layout
            threads = min(threads_for(work), spec.batch * spec.groups * tiling.jobs)
            packed = spec.groups * tiling.tiles_per_group * tile * spec.terms
            scratch = tiling.tiles_per_job * tile * layout.scratch_shape[1]  # a run's sums
            stage = prod(_stage_shape(spec, itemsize, layout, _source_padding(spec), tiling.whole))  # or the grid:
            grid = 0 if stage else layout.grid_bytes(spec, itemsize)
            return grid + (threads * (scratch + stage) + packed) * itemsize
        block = _block_for(out_per_group, spec.batch * spec.groups, work, OUT_BLOCK)
        layout = _Layout(spec, itemsize, block)
        threads = min(threads_for(work), spec.batch * spec.groups * -(-out_per_group // max(block, 1)))
        return layout.grid_bytes(spec, itemsize) + threads * prod(layout.scratch_shape) * itemsize

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return self._forward(padded, ((0, 0),) * spec.rank, kernel, spec)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: zero padding is added as the phase grid is made."""
        return self._forward(*_zero_padded_source(x, spec), kernel, spec)

    def _forward(self, source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                 spec: ConvSpec) -> np.ndarray:
        """:func:`._kernels_direct.forward` on ``source`` ``(N, G*C, *size)`` zero-padded by ``padding`` to the
        padded input, in jobs of (sample, group, block of :data:`OUT_BLOCK` output channels)."""
        groups, work = spec.groups, spec.macs
        source = rank3(source)
        filters = filter_rows(kernel, source.dtype)
        tile = _tile_for(spec.out_channels_per_group, source.dtype.itemsize)
        if tile:
            return self._forward_tiled(source, padding, filters, spec, tile)
        block = _block_for(spec.out_channels_per_group, spec.batch * groups, work, OUT_BLOCK)
        layout = _Layout(spec, source.itemsize, block)
        grid = layout.to_grid(source, padding, work)
        out = np.empty(spec.output_shape, dtype=source.dtype)
        out3 = out.reshape(shape3(out.shape))
        forward, tables = kernels("direct").forward, layout.tables()
        run_jobs(spec.batch * groups * -(-spec.out_channels_per_group // block), work,
                  lambda first, last, scratch: forward(grid, filters, out3, scratch, *tables, first, last, groups,
                                                       block, layout.depth_stride),
                  lambda: np.empty(layout.scratch_shape, dtype=source.dtype))
        return out

    @staticmethod
    def _forward_tiled(source: np.ndarray, padding: Sequence[tuple[int, int]], filters: np.ndarray,
                       spec: ConvSpec, tile: int) -> np.ndarray:
        """:func:`._kernels_tiled.forward`: :meth:`_forward` with tiles of ``tile`` output channels by
        :data:`LANES` positions held in registers, in jobs of (sample, group, block of tiles, block of runs:
        :func:`_tiling`); where
        :func:`_stage_shape` allows, :func:`._kernels_tiled.forward_staged`, in jobs of one sample, each copying
        its sample's phase grid into its thread's stage (the 3x3 stem at 224x224, one thread: 1.51 -> 1.39 ms)."""
        groups, out_per_group, work = spec.groups, spec.out_channels_per_group, spec.macs
        tiling = _tiling(spec, source.itemsize, tile, padding)
        tiles_per_group, tiles_per_job, layout = tiling.tiles_per_group, tiling.tiles_per_job, tiling.layout
        scratch_shape = (tiles_per_job * tile, layout.scratch_shape[1])
        stage_shape = _stage_shape(spec, source.itemsize, layout, padding, tiling.whole)
        # (G*O, T) -> (G, B, tile, T), the channels past the group's last zero -> (G*B, T, tile)
        packed = np.zeros((groups, tiles_per_group * tile, filters.shape[1]), dtype=filters.dtype)
        packed[:, :out_per_group] = filters.reshape(groups, out_per_group, -1)
        packed = np.ascontiguousarray(packed.reshape(groups * tiles_per_group, tile, -1).transpose(0, 2, 1))
        depth, sh, sw, hq, wq = layout.grid
        depth_size = sh * sw * hq * wq
        taps, _, runs = layout.tables(depth_inner=tiling.band_order)
        run_bounds = layout.run_bounds(tiling.band_order, tiling.run_blocks)
        # (c, kd*dd, rh, rw, offset) -> the tap's flat offset from channel g*C, depth od*sd, phase (0, 0)
        offsets = taps[:, 0] * depth * depth_size + taps[:, 1] * depth_size + (taps[:, 2] * sw + taps[:, 3]) * hq * wq \
            + taps[:, 4]
        out = np.empty(spec.output_shape, dtype=source.dtype)
        out3 = out.reshape(shape3(out.shape))
        tiled, stream = kernels("tiled"), out.nbytes >= STREAM_OUTPUT_BYTES and spec.terms <= STREAM_MOST_TERMS

        if stage_shape[0]:  # each sample's planes copied by its job into the thread's stage: no grid
            lows = steps3(tuple(low for low, _ in padding), fill=0)
            run_jobs(spec.batch, work,
                      lambda first, last, own: tiled.forward_staged(source, own[1], packed, out3, own[0], offsets,
                                                                    runs, run_bounds, first, last, tiles_per_group,
                                                                    depth * depth_size, depth_size, wq,
                                                                    layout.depth_stride, *lows, stream),
                      lambda: (np.empty(scratch_shape, dtype=source.dtype),
                               np.empty(stage_shape, dtype=source.dtype)))
            return out
        flat = layout.to_grid(source, padding, work).reshape(-1)
        run_jobs(spec.batch * groups * tiling.jobs, work,
                  lambda first, last, sums: tiled.forward(flat, packed, out3, sums, offsets, runs, run_bounds, first,
                                                          last, groups, tiles_per_group, tiles_per_job,
                                                          depth * depth_size, depth_size, wq, layout.depth_stride,
                                                          stream),
                  lambda: np.empty(scratch_shape, dtype=source.dtype))
        return out

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        """The input gradient as its forward on grad_output ("full") at stride 1 with a finite weight where the
        padding fits the kernel, else as the windows written back ("scatter"); the weight gradient as one
        dot product per filter tap and output channel (:mod:`._kernels_wgrad`).

        It declines the scatter where a group has four or more output
        channels (where its forward runs the register tiles: stems,
        transposed layers' gradients), unless asked for by name: there the
        generic scatter (columns by the BLAS, the compiled col2im) measured
        1.4-2.2x faster (one thread: 17 against 24 ms on a 5x5 stem, 33
        against 63 ms on a 7x7 stem, 6.1 against 13.1 ms for a 64 -> 3
        transposed layer's gradient). Otherwise it declines neither: on the
        layers where "auto" picked its forward before the tiles, both passes
        measured faster than the passes the planner would run instead
        (gemm's weight gradient, the generic "full" and "scatter"), by
        1.1-3x, except depthwise's own weight gradient at stride 2 (1.1-1.2x
        faster than this one), which the planner runs only under depthwise's
        forward; with the tiles, its weight gradient measured 1.1-2x faster
        than gemm's or folded's on stems, 3-d and 1-d layers.
        """
        if name == "weight_grad":
            return Formulation("a dot product per filter tap and output channel, read in place from the input",
                               "compiled loops")
        own = super().pass_formulation(name, spec, dtype, finite=finite, asked=asked)  # FullOrScatter's
        if (not asked and isinstance(own, Formulation) and dict(own.options)["formulation"] == "scatter"
                and _tile_for(spec.out_channels_per_group, np.dtype(dtype).itemsize)):
            return "with four or more output channels per group, the windows written back by its memory-bound " \
                   "loop measured slower than the scatter through the BLAS and the compiled col2im"
        return own

    def _input_grad_full(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """At stride 1: ``dx_p[n, g*C+c, q] = sum_{o, j} g[n, g*O+o, q - j*d] * k[g*O+o, c, j]``, the forward on
        grad_output padded by the dilated kernel's extent less one, with the kernel reversed and each group's
        input and output channels swapped. With zero padding the forward's padding is taken off that
        (:func:`._input_grad.full_padding`), so only the input's cells are computed; otherwise the gradient on
        the padded input is folded back by :func:`pad_adjoint`."""
        swapped = reverse_spatial(channels_swapped(kernel, spec), spec.rank)  # (G*C, O, *k)
        full = conv_spec(grad_output.shape, swapped.shape, padding=full_padding(spec), dilation=spec.dilation,
                         groups=spec.groups, op=spec.op)
        grad = self._forward(grad_output, full.padding, swapped, full)  # (N, G*C, *input or *padded)
        return grad if spec.padding_mode == "zeros" else pad_adjoint(grad, spec.padding, spec.padding_mode,
                                                                     spec.input_size)

    def _input_grad_scatter(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dx_p[n, g*C+c, p*s + j*d] += sum_o g[n, g*O+o, p] * k[g*O+o, c, j]``
        (:func:`._kernels_direct.input_grad_scatter`) into the phase grid, in jobs of (sample, group, block of
        input channels); then the grid merged back and the transpose of the padding (:func:`pad_adjoint`:
        cropped, or folded back onto its sources). A kernel holding an inf or NaN takes one row per run, so
        that no zero of a wide row's extra columns meets it."""
        groups, channels, work = spec.groups, spec.in_channels_per_group, spec.macs
        grad_output = rank3(grad_output)
        filters = filter_rows(kernel, grad_output.dtype)
        layout = _Layout(spec, grad_output.itemsize, spec.out_channels_per_group, wide=all_finite(filters))
        taps, _, runs = layout.tables()
        block = _block_for(channels, spec.batch * groups, work, channels)
        grid = np.empty((spec.batch, spec.in_channels, *layout.grid), dtype=grad_output.dtype)
        scatter = kernels("direct").input_grad_scatter
        run_jobs(spec.batch * groups * -(-channels // block), work,
                  lambda first, last, scratch: scatter(grad_output, filters, grid, scratch, taps, runs, first, last,
                                                       groups, block, layout.depth_stride),
                  lambda: np.empty(layout.scratch_shape, dtype=grad_output.dtype))
        if spec.padding_mode == "zeros":  # the input's cells straight from the grid
            grad = layout.from_grid(grid, shape3(spec.input_shape), spec.padding, work)
            return grad.reshape(spec.input_shape)
        grad_padded = layout.from_grid(grid, shape3((spec.batch, spec.in_channels, *spec.padded_size)),
                                       ((0, 0),) * spec.rank, work)
        return pad_adjoint(grad_padded.reshape(spec.batch, spec.in_channels, *spec.padded_size), spec.padding,
                           spec.padding_mode, spec.input_size)

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dk[g*O+o, c, j] = sum_{n, p} g[n, g*O+o, p] * x_p[n, g*C+c, p*s + j*d]``
        (:func:`._wgrad_compiled.compiled_weight_grad`). ``(G*O, C, *kernel)``."""
        return wgrad.compiled_weight_grad(x, grad_output, spec)
