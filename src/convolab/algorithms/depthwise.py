"""depthwise: one input channel per group, forward and both gradients, blocked in cache and threaded.

Two paths run the same passes. Where Numba imports and the problem is float32
or float64 with one or two spatial dimensions (:func:`compiled_missing`), the
compiled kernels of :mod:`._kernels_depthwise` do, through the wrappers of
:mod:`._depthwise_compiled`: a job is one (sample, group), its plane padded
and split into stride phases in the thread's own grid, every tap one
contiguous run over the plane's wide rows, the sums held in registers over
all taps (at stride 1, for whole blocks of 16 channels with small planes,
the forward holds 16 channels in the vector lanes instead: every load
aligned). Single-threaded, they took 0.1-1.05 of PyTorch's time on every
pass of the benchmark's depthwise layers but EfficientNet's 5x5 240-channel
forward (1.2 before the channels went into the lanes; ``docs/compiled.md``).

Otherwise (integers, float16, complex, 3-d, Numba missing) the NumPy path runs.
Nothing there is a matrix product over one tiny matrix per group: per block of
(sample, groups), every kernel tap's run is copied into columns that stay in
cache, and one product per channel does all of that channel's multiply-adds
in a single fused pass of the BLAS. A block pads (and, at a stride, splits into
phases) only its own channels, so no padded copy of the whole batch is made,
and blocks are shared among threads (NumPy and the BLAS release the GIL).

Axis legend: B groups in a block, C input channels per group (1 for depthwise;
a few for the input gradient), M or O output channels per group (the channel
multiplier), S stride phases, K kernel taps, L wide output positions.
"""

from __future__ import annotations

from math import gcd, prod
from typing import Callable, Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._dtypes import all_finite
from .._settings import current_thread_count
from .._window import pad, pad_adjoint, reverse_spatial, sliding_windows
from ..spec import ConvSpec, conv_spec
from . import Algorithm, Formulation
from ._blocking import phase_size, stride_one
from ._depthwise_compiled import (compiled_forward, compiled_input_grad, compiled_missing,
                                  compiled_weight_grad, lanes_workspace_bytes, planes_for,
                                  takes_lanes)
from ._input_grad import FullOrScatter, full_padding
from ._rates import COPY_RATE, THREAD_GAIN
from ._threads import in_parallel

__all__ = ["Depthwise", "depthwise_threads", "DEPTHWISE_BLOCK_BYTES", "DEPTHWISE_COLUMN_BYTES",
           "DEPTHWISE_PARALLEL_WORK"]

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

#: Fixed cost of a call (Python and NumPy dispatch).
CALL_OVERHEAD = 40e-6
#: Bytes of unrolled columns per second on one thread (each copied, then read by the product)...
COLUMN_RATE = 16e9
#: ... and the Python and NumPy calls per block and chunk of rows.
BLOCK_COST = 25e-6


def _threads(work: int) -> int:
    """Threads for a pass of ``work`` multiply-adds: one below :data:`DEPTHWISE_PARALLEL_WORK`."""
    return depthwise_threads() if work >= DEPTHWISE_PARALLEL_WORK else 1


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
        self.direct = stride_one(spec) and all(o <= x for o, x in zip(spec.output_size[1:], source[1:]))
        self.size = source if self.direct else phase_size(spec)  # the grid's shape, per phase
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
        self.work = spec.macs  # multiply-adds
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
        self._copy_lists: dict[int, list[tuple[int, int, int, np.ndarray, list, list]]] = {}

    def _copy_list(self, size: int) -> list[tuple[int, int, int, np.ndarray, list, list]]:
        """For blocks of ``size`` groups: ``(first row, rows, chunks, columns, copies, masks)`` per chunk shape."""
        layout, channels = self.layout, size * self.per_group
        grid = self.buffer[:channels]
        item = grid.itemsize
        full, rest = divmod(self.rows, self.chunk)
        copy_list = []
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
            copy_list.append((first, rows, number, block, copies, layout.masked_columns(by_channel, rows)))
        return copy_list

    def chunks(self, source: np.ndarray, n: int, g0: int, g1: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Copy groups ``g0:g1`` of sample ``n`` into the grid, then yield ``(r0, r1, columns)`` chunk by chunk.

        ``columns`` ``(B, C*K, (r1-r0)*row)`` holds the unrolled runs of output
        rows ``r0:r1`` until the next chunk is asked for.
        """
        self.layout.grid(source, n, g0 * self.per_group, g1 * self.per_group, self.buffer)
        copy_list = self._copy_lists.get(g1 - g0)
        if copy_list is None:
            copy_list = self._copy_lists[g1 - g0] = self._copy_list(g1 - g0)
        for first, rows, number, block, copies, masks in copy_list:
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


class Depthwise(FullOrScatter, Algorithm):
    """Depthwise convolution (one input channel per group): compiled plane loops, or a small matrix product
    per channel.

    Where :func:`compiled_missing` says None, every pass runs the compiled
    kernels (:mod:`._depthwise_compiled`: :func:`compiled_forward`, :func:`compiled_input_grad`,
    :func:`compiled_weight_grad`; the "full" input gradient is the compiled
    forward on grad_output). Otherwise, for a block of channels (:class:`_DepthwiseLayout`), every tap's run over
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
    passes = frozenset({"forward", "input_grad", "weight_grad"})
    automatic = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if spec.in_channels_per_group != 1:
            return f"each group has {spec.in_channels_per_group} input channels; depthwise needs exactly 1"
        return None

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """From the blocks it would actually run: per block of channels, the grid copy (the input, padded and
        split into stride phases, or as it is at stride 1), then every tap's run copied into columns and
        read back by a small product per channel; blocks shared among threads (each past the first counted
        at :data:`~convolab.algorithms._rates.THREAD_GAIN`)."""
        if compiled_missing(spec, dtype) is None:
            return planes_for(spec, spec.padding).seconds(dtype.itemsize)
        layout = _DepthwiseLayout(spec, dtype.itemsize, spec.padding)
        jobs, groups = layout.blocks()
        taps = prod(spec.kernel_size)
        chunks = -(-spec.output_size[0] // layout.chunk_rows(groups, taps))
        multiplier = spec.out_channels_per_group
        columns = taps * spec.batch * spec.groups * layout.length * dtype.itemsize * (1 + (multiplier - 1) / 4)
        grid = spec.batch * spec.in_channels * layout.phases * layout.stored * dtype.itemsize
        work = (columns / COLUMN_RATE + len(jobs) * chunks * BLOCK_COST
                + grid / COPY_RATE["contiguous" if layout.direct else "strided"])
        if not layout.in_place:  # the wide rows' real columns copied out
            work += prod(spec.output_shape) * dtype.itemsize / COPY_RATE["strided"]
        threads = min(depthwise_threads(), len(jobs)) if layout.work >= DEPTHWISE_PARALLEL_WORK else 1
        return CALL_OVERHEAD + work / (1 + THREAD_GAIN * (threads - 1))

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        if compiled_missing(spec, np.dtype(f"f{itemsize}")) is None:
            if takes_lanes(spec, spec.padding, itemsize):
                return lanes_workspace_bytes(spec, spec.padding, itemsize)
            planes = planes_for(spec, spec.padding)
            return planes.threads() * planes.scratch_bytes(itemsize)
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
        if compiled_missing(spec, source.dtype) is None:
            return compiled_forward(source, padding, kernel, spec)
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

        in_parallel(jobs, make_worker, _threads(layout.work))
        return out

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        """Both gradients run on the forward's blocked, threaded layout; the input gradient as a full
        correlation (:meth:`_input_grad_full`) at stride 1 with a finite kernel where the padding fits
        the kernel, else as the forward's passes transposed (:meth:`_input_grad_scatter`)."""
        if name == "weight_grad":
            return Formulation("every tap's run against grad_output", "blocked and threaded like the forward")
        return super().pass_formulation(name, spec, dtype, finite=finite, asked=asked)  # FullOrScatter's

    def _input_grad_full(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """At stride 1: ``dx_p[q] = sum_{m, j} g[q - j*d] * k[m, j]``, a full correlation with the kernel reversed.

        grad_output, padded by the dilated kernel's extent less one (less the
        forward's zero padding, so that only the input's cells come out, see
        :func:`._input_grad.full_padding`), is correlated with the reversed kernel; each
        group's ``M`` output channels become the ``M`` input channels of a
        group with one output (the forward's few-channels case).
        """
        zeros = spec.padding_mode == "zeros"
        padding = full_padding(spec)
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
        if compiled_missing(spec, grad_output.dtype) is None:
            return compiled_input_grad(grad_output, kernel, spec)
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

        in_parallel(jobs, make_worker, _threads(layout.work))
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
        if compiled_missing(spec, x.dtype) is None:
            return compiled_weight_grad(source, padding, grad_output, spec)
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

        in_parallel(jobs, make_worker, _threads(layout.work))
        return np.ascontiguousarray(partial.sum(axis=0).transpose(0, 2, 1)).reshape(spec.weight_shape)
