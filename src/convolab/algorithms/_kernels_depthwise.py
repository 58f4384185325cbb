"""The compiled loops of the "depthwise" algorithm: a few channels per group, one plane at a time, in cache.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrappers that lay the arrays out and share the jobs among
threads are in :mod:`._depthwise_compiled`.

A job is one (sample, group): its ``C`` input planes (1 for a depthwise
forward, the channel multiplier for its "full" input gradient) are copied into
the calling thread's *plane grid* ``(C, SH*SW, Hq*Wq)``, the padded planes
split into their stride phases (``grid[c, rh*SW + rw, u*Wq + v] =
padded[c, u*SH + rh, v*SW + rw]``, :func:`_copy`), small enough to stay in the
L1 or L2 cache. Tap ``(c, kh, kw)`` reads phase ``(kh*dh mod SH, kw*dw mod
SW)`` from offset ``(kh*dh div SH)*Wq + kw*dw div SW``: over *wide* rows (output
position ``m = oh*Wq + ow`` for every ``ow < Wq``) each tap's reads for the
whole plane are one contiguous run of ``(OH-1)*Wq + OW`` values. The forward
(and the input gradient, as a gather) sums stretch after stretch of wide
positions with the sums in registers while every tap adds its run
(:func:`_plane_sums`; measured about 30e9 multiply-adds per second on one
thread, float32). The wide rows' extra columns are computed and dropped: in
the forward they are sums of their own; in the gradients, where an extra
column's zero could meet an inf or NaN, the weight gradient sums a plane
whose sums come out non-finite again over the real columns only, and a
kernel holding an inf or NaN takes the scatter over real columns.

The contract every kernel shares:

- two spatial axes: one-dimensional problems come as ``H = 1``;
- every array C-contiguous, native byte order, writeable, one dtype (float32
  or float64); the kernel as ``(G*O, T)``, its taps ``t`` in C order of
  ``(c, kh, kw)``;
- ``taps`` ``(T, 3)``: per tap, its input channel in the group, phase
  ``rh*SW + rw`` and offset in the phase plane;
- the input (and grad_output) unpadded, as they are: the kernels pad (zeros)
  as they fill the grid; the grid's padding cells are zero on entry and never
  written (the wrapper allocates it zeroed for each call, and only data cells
  change), except by :func:`input_grad`, which sums every cell of its planes
  and reads back only the data cells;
- ``first, last``: the jobs ``(n, g) = divmod(job, G)`` this call runs; each
  writes a part of the result no other job writes, so threads never share a
  cell.

:func:`forward_lanes` (stride 1, one output channel per input channel, whole
blocks of 16 channels) holds a block's 16 channels in the vector lanes
instead: every tap's loads are whole, aligned vectors. It inlines
:mod:`._kernels_wgrad`'s ``_transpose_square`` (as every kernel here inlines
:mod:`._kernels_tiled`'s stack runs), and Numba's on-disk cache checks only
this file: after changing either, test with an empty ``NUMBA_CACHE_DIR``.

Axis legend: N samples, G groups, C input channels per group, O output
channels per group, T taps of one filter (``C*KH*KW``); ``(H, W)`` input,
``(OH, OW)`` output, ``(Hq, Wq)`` a phase plane; ``s*`` stride, ``d*``
dilation.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._kernels_moves import VECTOR_VALUES, _run_pointer
from ._kernels_tiled import LANES, _ask_for_512_bit_vectors, _stack_run  # sums held in registers, in 512-bit vectors
from ._kernels_wgrad import SQUARE, _transpose_square  # sixteen by sixteen values transposed in registers

__all__ = ["forward", "forward_lanes", "input_grad", "input_grad_scatter", "weight_grad", "STRETCH",
           "CHANNEL_BLOCK", "POSITION_BLOCK"]

#: Wide positions the forward's sums hold in registers at once: four runs of :data:`LANES` (eight 512-bit
#: vectors of float32, sixteen of float64), so that eight or more multiply-adds are under way per tap.
STRETCH = 4 * LANES
#: Channels a job of :func:`forward_lanes` holds side by side (one 512-bit vector of float32), and the output
#: positions one of its blocks sums in registers (four stack runs of two positions' channels).
CHANNEL_BLOCK, POSITION_BLOCK = SQUARE, 8
#: Positions of a row one call of :func:`_row_sums` holds in registers: sixteen vectors of float32 (eight of
#: float64: sixteen vectors too). A row's last positions go :data:`POSITION_BLOCK` at a time.
ROW_POSITIONS = 16
#: Kernel widths :func:`_row_sums` is built for (one version each: the taps along a row unrolled); others, and
#: a dilation along the row, take :func:`_position_block`.
ROW_TAPS = (3, 5, 7)
#: Bytes of grad_output's wide rows the weight gradient's dot products take at once.
DOTS_CHUNK_BYTES = 8 * 2**10


@njit(cache=True, nogil=True, inline="always")
def _dot(g0, s0, length):
    """``dot(g0, s0)`` over ``length`` positions."""
    total = g0.dtype.type(0)
    for m in range(length):
        total += g0[m] * s0[m]
    return total


@njit(cache=True, nogil=True, inline="always")
def _pairs(row, cells, phase0, phase1, first, to_grid):
    """At stride 2 along the row: its columns from ``first`` on into the cells from ``phase0`` and ``phase1`` on
    (``to_grid``), or back, one pair at a time (the two phases' loads or stores interleave, so that the loop
    vectorizes)."""
    width = row.shape[0]
    pairs = (width - first) // 2
    if to_grid:
        for i in range(pairs):
            cells[phase0 + np.uint64(i)] = row[first + 2 * i]
            cells[phase1 + np.uint64(i)] = row[first + 2 * i + 1]
        if (width - first) % 2:  # the last column, in phase 0
            cells[phase0 + np.uint64(pairs)] = row[width - 1]
    else:
        for i in range(pairs):
            row[first + 2 * i] = cells[phase0 + np.uint64(i)]
            row[first + 2 * i + 1] = cells[phase1 + np.uint64(i)]
        if (width - first) % 2:
            row[width - 1] = cells[phase0 + np.uint64(pairs)]


@njit(cache=True, nogil=True, inline="always")
def _copy(plane, phases, sh, sw, low_h, low_w, wq, to_grid):
    """``grid[(h + low_h) % SH * SW + (w + low_w) % SW, (h + low_h) // SH * Wq + (w + low_w) // SW] =
    plane[h, w]`` (``to_grid``): one plane zero-padded by the lows and split into phases, the other cells left
    as they are; else the other way round, the padding's cells dropped.

    ``phases`` is one channel's grid ``(SH*SW, stored)``, indexed as one
    flat run at unsigned positions (no check for wrapping around); rows step
    through their phases without a division, and each column stride has its
    own row loop. (Each of these measured 1.5-5x faster for the copy, as did
    taking ``stored`` from the grid's shape rather than dividing the flat
    run's length.)
    """
    cells, stored = phases.reshape(-1), phases.shape[1]
    if sw == 1:
        _rows_stride_1(plane, cells, stored, sh, low_h, low_w, wq, to_grid)
    elif sw == 2:
        _rows_stride_2(plane, cells, stored, sh, low_h, low_w, wq, to_grid)
    else:
        _rows_strided(plane, cells, stored, sh, sw, low_h, low_w, wq, to_grid)


@njit(cache=True, nogil=True, inline="always")
def _rows_stride_1(plane, cells, stored, sh, low_h, low_w, wq, to_grid):
    """:func:`_copy` at column stride 1."""
    height, width = plane.shape
    rh, u = low_h % sh, low_h // sh  # row 0's phase and row in it, then one step per row
    for h in range(height):
        row, at = plane[h], np.uint64(rh * stored + u * wq + low_w)
        if to_grid:
            for w in range(width):
                cells[at + np.uint64(w)] = row[w]
        else:
            for w in range(width):
                row[w] = cells[at + np.uint64(w)]
        rh += 1
        if rh == sh:
            rh, u = 0, u + 1


@njit(cache=True, nogil=True, inline="always")
def _rows_stride_2(plane, cells, stored, sh, low_h, low_w, wq, to_grid):
    """:func:`_copy` at column stride 2."""
    height, width = plane.shape
    first = low_w % 2  # the first column in phase 0; one before it (odd padding) is in phase 1
    rh, u = low_h % sh, low_h // sh
    for h in range(height):
        row = plane[h]
        phase0 = np.uint64((rh * 2) * stored + u * wq + (first + low_w) // 2)  # the first pair's cell, per phase
        _pairs(row, cells, phase0, phase0 + np.uint64(stored), first, to_grid)
        rh += 1
        if rh == sh:
            rh, u = 0, u + 1
    if first and width:  # column 0 in phase 1, before the first pair; in a loop of its own (in the one above,
        rh, u = low_h % sh, low_h // sh  # its store measured to keep the pairs' loop 4x slower)
        for h in range(height):
            cell = np.uint64((rh * 2 + 1) * stored + u * wq + (first + low_w) // 2 - 1)
            if to_grid:
                cells[cell] = plane[h, 0]
            else:
                plane[h, 0] = cells[cell]
            rh += 1
            if rh == sh:
                rh, u = 0, u + 1


@njit(cache=True, nogil=True, inline="always")
def _rows_strided(plane, cells, stored, sh, sw, low_h, low_w, wq, to_grid):
    """:func:`_copy` at any other column stride, phase after phase of each row."""
    height, width = plane.shape
    rh, u = low_h % sh, low_h // sh
    for h in range(height):
        row = plane[h]
        for rw in range(sw):
            w0 = (rw - low_w) % sw  # the first column of the row that lands in phase rw
            count = (width - w0 + sw - 1) // sw
            at = (rh * sw + rw) * stored + u * wq + (w0 + low_w) // sw
            if to_grid:
                for i in range(count):
                    cells[np.uint64(at + i)] = row[w0 + i * sw]
            else:
                for i in range(count):
                    row[w0 + i * sw] = cells[np.uint64(at + i)]
        rh += 1
        if rh == sh:
            rh, u = 0, u + 1


@njit(cache=True, nogil=True, inline="always")
def _zero(s0, s1, s2, s3):
    """Four stack runs of :data:`LANES` sums set to zero."""
    for m in range(LANES):
        s0[m] = s1[m] = s2[m] = s3[m] = 0


@njit(cache=True, nogil=True, inline="always")
def _store(sums, column, run):
    """``sums[column:column+LANES] = run``: plain stores at unsigned indices (Numba checks a signed index for
    wrapping around). The position counts in unsigned integers too: with a signed ``m`` converted per store,
    LLVM took the vectors apart and stored the sums one at a time, with shuffles (about 150 instructions
    per stretch, more than a 3x3 kernel's whole tap loop); now it writes two 512-bit vectors per run."""
    c = np.uint64(column)
    for m in range(np.uint64(LANES)):
        sums[c + m] = run[m]


@njit(cache=True, nogil=True, inline="always")
def _stretch(flat, offsets, weights, sums, start, column):
    """``sums[column + m] = sum_t weights[t] * flat[start + column + offsets[t] + m]`` for ``m <``
    :data:`STRETCH`: four runs of :data:`LANES` sums held in registers while every tap adds into them."""
    s0, s1, s2, s3 = _stack_run(flat.dtype), _stack_run(flat.dtype), _stack_run(flat.dtype), _stack_run(flat.dtype)
    _zero(s0, s1, s2, s3)
    for t in range(offsets.shape[0]):  # unsigned flat indices, not a slice per tap (2-9% faster, one thread)
        at, weight = np.uint64(start + column + offsets[t]), weights[t]
        for m in range(LANES):
            s0[m] += weight * flat[at + np.uint64(m)]
            s1[m] += weight * flat[at + np.uint64(LANES + m)]
            s2[m] += weight * flat[at + np.uint64(2 * LANES + m)]
            s3[m] += weight * flat[at + np.uint64(3 * LANES + m)]
    _store(sums, column, s0)
    _store(sums, column + LANES, s1)
    _store(sums, column + 2 * LANES, s2)
    _store(sums, column + 3 * LANES, s3)


@njit(cache=True, nogil=True, inline="always")
def _lanes(flat, offsets, weights, sums, start, column):
    """:func:`_stretch` for one run of :data:`LANES` sums (a run shorter than :data:`STRETCH`)."""
    s0 = _stack_run(flat.dtype)
    for m in range(LANES):
        s0[m] = 0
    # LANES, as a trip count LLVM cannot see: with the constant it unrolled the loop in full before vectorizing,
    # and the unrolled sums stayed scalar (32 vfmadd231ss per tap; now two 512-bit ones). Unsigned flat indices,
    # not a slice per tap: (8, 1152, 7, 7) 5x5 planes 6.6 -> 4.2 ms, one thread
    lanes = np.uint64(min(LANES, sums.shape[0] - column))
    for t in range(offsets.shape[0]):
        at, weight = np.uint64(start + column + offsets[t]), weights[t]
        for m in range(lanes):
            s0[m] += weight * flat[at + m]
    _store(sums, column, s0)


@njit(cache=True, nogil=True, inline="always")
def _plane_sums(flat, offsets, weights, sums, start, length):
    """``sums[m] = sum_t weights[t] * flat[start + offsets[t] + m]`` for ``m < length``: stretch by stretch,
    the last one moved back to end with the run (recomputing a few sums), positions one at a time where the
    run is shorter than :data:`LANES`."""
    step = STRETCH if length >= STRETCH else LANES
    if length < LANES:
        for m in range(length):
            total = flat.dtype.type(0)
            for t in range(offsets.shape[0]):
                total += weights[t] * flat[start + offsets[t] + m]
            sums[m] = total
        return
    column = 0
    while column < length:
        column = min(column, length - step)
        if step == STRETCH:
            _stretch(flat, offsets, weights, sums, start, column)
        else:
            _lanes(flat, offsets, weights, sums, start, column)
        column += step


@njit(cache=True, nogil=True, inline="always")
def _crop(sums, plane, r0, r1, wq, out_w):
    """Output rows ``r0:r1`` of a flat ``plane`` ``(OH*OW,)`` from their wide rows in ``sums``: the real
    columns only, at unsigned positions (as :func:`_copy`)."""
    for oh in range(r0, r1):
        at, wide = np.uint64(oh * out_w), np.uint64((oh - r0) * wq)
        for ow in range(out_w):
            plane[at + np.uint64(ow)] = sums[wide + np.uint64(ow)]


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward(x, kernel, out, grid, sums, taps, first, last, groups, sh, sw, low_h, low_w, wq, chunk):
    """``out[n, g*O+o, p] = sum_{c, j} x_p[n, g*C+c, p*s + j*d] * kernel[g*O+o, (c, j)]`` for jobs
    ``first:last``.

    Per job the group's planes go into ``grid``; per output channel and
    chunk of ``chunk`` output rows, stretch after stretch of :data:`STRETCH`
    wide positions, the sums stay in registers while every tap adds its run
    into them (one load and one multiply-add per tap and position, tap after
    tap, rounded once each with ``contract``), and are stored once into
    ``sums`` (the chunk's wide rows, the thread's own, sized for the L1
    cache); the chunk's real columns are then copied to ``out``. A chunk of
    one row has no extra columns: its sums are stored straight into ``out``
    (a 1-d layer's (8, 256, 4000) k 9: 11.0 -> 7.1 ms, one thread). Each
    position's sum reads only its own window, so the extra columns' sums
    never reach an inf or NaN of a real one.
    """
    channels, out_h, out_w = x.shape[1] // groups, out.shape[2], out.shape[3]
    out_per_group = out.shape[1] // groups
    flat = grid.reshape(-1)  # the grid as one run, each tap a flat offset in it
    offsets = (taps[:, 0] * grid.shape[1] + taps[:, 1]) * grid.shape[2] + taps[:, 2]
    for job in range(first, last):
        n, g = job // groups, job % groups
        for c in range(channels):
            _copy(x[n, g * channels + c], grid[c], sh, sw, low_h, low_w, wq, True)
        for o in range(g * out_per_group, (g + 1) * out_per_group):
            weights = kernel[o]
            for r0 in range(0, out_h, chunk):
                r1 = min(out_h, r0 + chunk)
                if r1 - r0 == 1:  # one row (a 1-d problem's): its run is its real columns, summed into place
                    _plane_sums(flat, offsets, weights, out[n, o, r0], r0 * wq, out_w)
                else:
                    _plane_sums(flat, offsets, weights, sums, r0 * wq, (r1 - r0 - 1) * wq + out_w)
                    _crop(sums, out[n, o].reshape(-1), r0, r1, wq, out_w)


@njit(cache=True, nogil=True, inline="always")
def _wide(plane, wide, wq):
    """``plane`` ``(OH, OW)`` laid out as wide rows in ``wide``; its extra columns are left as they are (zero)."""
    out_h, out_w = plane.shape
    for oh in range(out_h):
        row, at = plane[oh], np.uint64(oh * wq)  # unsigned: no check for wrapping around (as in _copy)
        for ow in range(out_w):
            wide[at + np.uint64(ow)] = row[ow]


@njit(cache=True, nogil=True, inline="always")
def _dots3(g, s0, s1, s2, length):
    """``(dot(g, s0), dot(g, s1), dot(g, s2))`` over ``length`` positions."""
    t0 = t1 = t2 = g.dtype.type(0)
    for m in range(length):
        v = g[m]
        t0 += v * s0[m]
        t1 += v * s1[m]
        t2 += v * s2[m]
    return t0, t1, t2


@njit(cache=True, nogil=True, inline="always")
def _plane_dots(sums, g, grid, taps, wq, out_w, rows, wide):
    """``sums[t] = sum_p g[p] * run_t[p]`` per tap: over the wide rows (``wide``), in chunks of rows whose
    grad_output and three runs fit the L1 cache (:data:`DOTS_CHUNK_BYTES` each: the 112x112 planes' whole
    runs, from the L2 cache, measured about half as fast), or row by row over the real columns only."""
    count = taps.shape[0]
    for t in range(count):
        sums[t] = 0
    step = max(1, DOTS_CHUNK_BYTES // (wq * g.itemsize)) if wide else 1
    for r0 in range(0, rows, step):
        start, length = r0 * wq, (min(rows, r0 + step) - r0 - 1) * wq + out_w
        g_run = g[start:start + length]
        t = 0
        while t + 3 <= count:
            o0, o1, o2 = start + taps[t, 2], start + taps[t + 1, 2], start + taps[t + 2, 2]
            d0, d1, d2 = _dots3(g_run, grid[taps[t, 0], taps[t, 1], o0:o0 + length],
                                grid[taps[t + 1, 0], taps[t + 1, 1], o1:o1 + length],
                                grid[taps[t + 2, 0], taps[t + 2, 1], o2:o2 + length], length)
            sums[t] += d0
            sums[t + 1] += d1
            sums[t + 2] += d2
            t += 3
        for t in range(t, count):
            o0 = start + taps[t, 2]
            sums[t] += _dot(g_run, grid[taps[t, 0], taps[t, 1], o0:o0 + length], length)


@njit(cache=True, nogil=True, inline="always")
def _finite(values):
    """Whether every value is finite: a loop, where ``np.isfinite`` would allocate an array per call."""
    for value in values:
        if not np.isfinite(value):
            return False
    return True


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def weight_grad(x, grad_output, partial, grid, wide, taps, first, last, groups, sh, sw, low_h, low_w, wq):
    """``partial[n, g*O+o, t] = sum_p grad_output[n, g*O+o, p] * x_p[n, g*C+c, p*s + j*d]`` (tap ``t`` is
    ``(c, j)``) for jobs ``first:last``; the caller sums over ``n`` in a fixed order.

    Per job the group's planes go into ``grid``; per output channel its
    grad_output plane goes into ``wide`` (wide rows, the extra columns zero),
    and each tap's sum is one dot product with its run, summed in any order
    (``reassoc``, so that it vectorizes). A channel whose sums are not all
    finite is summed again over the real columns only, so that an extra
    column's zero never meets an inf or NaN: the result keeps the direct sum's
    inf and NaN.
    """
    channels, out_h, out_w = x.shape[1] // groups, grad_output.shape[2], grad_output.shape[3]
    out_per_group = grad_output.shape[1] // groups
    for job in range(first, last):
        n, g = job // groups, job % groups
        for c in range(channels):
            _copy(x[n, g * channels + c], grid[c], sh, sw, low_h, low_w, wq, True)
        for o in range(g * out_per_group, (g + 1) * out_per_group):
            sums = partial[n, o]
            _wide(grad_output[n, o], wide, wq)
            _plane_dots(sums, wide, grid, taps, wq, out_w, out_h, True)
            if not _finite(sums):
                _plane_dots(sums, wide, grid, taps, wq, out_w, out_h, False)


@njit(cache=True, nogil=True, inline="always")
def _scatter(grid, g, taps, kernel_row, channel, wq, out_w, rows):
    """``grid[c, run_t] += kernel_row[t] * g`` for channel ``channel``'s taps, row by row over the real columns
    only."""
    for oh in range(rows):
        start = oh * wq
        g_run = g[start:start + out_w]
        for t in range(taps.shape[0]):
            if taps[t, 0] != channel:
                continue
            weight, offset = kernel_row[t], start + taps[t, 2]
            target = grid[channel, taps[t, 1], offset:offset + out_w]
            for m in range(out_w):
                target[m] += weight * g_run[m]


@njit(cache=True, nogil=True, fastmath={"contract"})
def input_grad_scatter(grad_output, kernel, grad, grid, wide, taps, first, last, groups, sh, sw, low_h, low_w,
                       wq):
    """``dx_p[n, g*C+c, p*s + j*d] += sum_o grad_output[n, g*O+o, p] * kernel[g*O+o, (c, j)]`` for jobs
    ``first:last``: each window's gradient added back where the forward read it, for a kernel holding an inf
    or NaN (:func:`input_grad` otherwise).

    Per job the group's planes of the padded input's gradient are summed in
    ``grid`` (zeroed first), each output channel's grad_output plane laid out
    in ``wide`` and added, times each tap's weight, into the run the tap read,
    over the real columns only (an extra column's zero times an inf would be
    a NaN in a real cell); then the data cells go to ``grad`` (the padding's
    are dropped).
    """
    channels, out_h, out_w = grad.shape[1] // groups, grad_output.shape[2], grad_output.shape[3]
    out_per_group = grad_output.shape[1] // groups
    for job in range(first, last):
        n, g = job // groups, job % groups
        grid[:channels] = 0
        for o in range(g * out_per_group, (g + 1) * out_per_group):
            _wide(grad_output[n, o], wide, wq)
            for c in range(channels):
                _scatter(grid, wide, taps, kernel[o], c, wq, out_w, out_h)
        for c in range(channels):
            _copy(grad[n, g * channels + c], grid[c], sh, sw, low_h, low_w, wq, False)


@njit(cache=True, nogil=True)
def _gather_terms(taps, phases, planes, out_per_group, plane_size, lead):
    """The input gradient's terms ``(o, t)`` grouped by the grid plane ``c*SH*SW + phase`` they add into:
    ``(terms (E, 2), offsets (E,), starts (planes + 1,))``. Term ``e`` of plane ``k`` (``starts[k] <= e <
    starts[k+1]``) reads output channel ``o``'s wide rows, laid out ``plane_size`` apart after ``lead`` zeros,
    at ``offsets[e]`` past the position it adds into."""
    count = taps.shape[0]
    terms = np.empty((out_per_group * count, 2), dtype=np.int64)
    offsets = np.empty(out_per_group * count, dtype=np.int64)
    starts = np.empty(planes + 1, dtype=np.int64)
    e = 0
    for k in range(planes):
        starts[k] = e
        for o in range(out_per_group):
            for t in range(count):
                if taps[t, 0] * phases + taps[t, 1] == k:
                    terms[e, 0], terms[e, 1] = o, t
                    offsets[e] = o * plane_size + lead - taps[t, 2]
                    e += 1
    starts[planes] = e
    return terms, offsets, starts


@njit(cache=True, nogil=True, fastmath={"contract"})
def input_grad(grad_output, kernel, grad, grid, wide, taps, first, last, groups, sh, sw, low_h, low_w, wq):
    """``dx_p[n, g*C+c, q] = sum_{o, j: p*s + j*d = q} grad_output[n, g*O+o, p] * kernel[g*O+o, (c, j)]`` for
    jobs ``first:last``, for a finite kernel.

    The scatter of each window's gradient turned into a gather: tap ``t``
    read phase plane cell ``m + offset_t`` for wide position ``m``, so phase
    cell ``q`` takes ``kernel[o, t] * wide_o[q - offset_t]`` from every tap
    of its phase. Per job, each output channel's grad_output plane goes into
    ``wide`` as wide rows after ``lead`` (the largest tap offset) zeros, its
    extra columns and the rest zero; then every phase plane of the grid is
    summed as the forward sums an output plane (:func:`_plane_sums`, sums in
    registers over all of its terms), and the data cells go to ``grad``.
    Each cell takes the same products as the scatter's, and zeros: extra
    columns' and the leading ones, which the finite kernel keeps zero.
    ``wide`` holds ``O`` planes of ``stored + lead`` values.
    """
    channels, out_per_group = grad.shape[1] // groups, grad_output.shape[1] // groups
    phases, stored = grid.shape[1], grid.shape[2]
    planes = channels * phases
    lead = np.max(taps[:, 2])
    plane_size = wide.shape[0] // out_per_group
    rows = (grad.shape[2] - 1 + low_h) // sh + 1  # phase rows that hold data cells
    terms, offsets, starts = _gather_terms(taps, phases, planes, out_per_group, plane_size, lead)
    weights = np.empty(terms.shape[0], dtype=kernel.dtype)
    cells = grid.reshape(-1)
    for job in range(first, last):
        n, g = job // groups, job % groups
        for o in range(out_per_group):
            _wide(grad_output[n, g * out_per_group + o], wide[o * plane_size + lead:], wq)
        for e in range(terms.shape[0]):
            weights[e] = kernel[g * out_per_group + terms[e, 0], terms[e, 1]]
        for k in range(planes):
            e0, e1 = starts[k], starts[k + 1]
            _plane_sums(wide, offsets[e0:e1], weights[e0:e1], cells[k * stored:], 0, rows * wq)
        for c in range(channels):
            _copy(grad[n, g * channels + c], grid[c], sh, sw, low_h, low_w, wq, False)


@njit(cache=True, nogil=True, inline="always")
def _lanes_from_planes(values, first, plane, lanes):
    """``lanes[p*16 + c] = values[first + c*plane + p]``: 16 planes of ``plane`` values each (``plane`` apart
    in the flat ``values``) with a position's 16 channels side by side, sixteen positions at a time in
    registers (:func:`._kernels_wgrad._transpose_square`), the last few a value at a time."""
    p = 0
    while p + SQUARE <= plane:
        _transpose_square(values, np.uint64(first + p), plane, lanes, np.uint64(p * CHANNEL_BLOCK), CHANNEL_BLOCK)
        p += SQUARE
    for q in range(p, plane):
        for c in range(CHANNEL_BLOCK):
            lanes[np.uint64(q * CHANNEL_BLOCK + c)] = values[np.uint64(first + c * plane + q)]


@njit(cache=True, nogil=True, inline="always")
def _planes_from_lanes(lanes, plane, values, first):
    """The inverse of :func:`_lanes_from_planes`: ``values[first + c*plane + p] = lanes[p*16 + c]``."""
    p = 0
    while p + SQUARE <= plane:
        _transpose_square(lanes, np.uint64(p * CHANNEL_BLOCK), CHANNEL_BLOCK, values, np.uint64(first + p), plane)
        p += SQUARE
    for q in range(p, plane):
        for c in range(CHANNEL_BLOCK):
            values[np.uint64(first + c * plane + q)] = lanes[np.uint64(q * CHANNEL_BLOCK + c)]


@njit(cache=True, nogil=True, inline="always")
def _position_block(grid, weights, first_weight, sums, read, write, taps_h, taps_w, row_step, column_step):
    """``sums[write + i*16 + c] = sum_{kh, kw} weights[t, c] * grid[read + kh*row_step + kw*column_step + i*16
    + c]`` for :data:`POSITION_BLOCK` positions ``i`` and 16 channels ``c`` (``t = kh*taps_w + kw``, from
    ``first_weight`` in the flat ``weights``, whose run of :data:`LANES` holds a tap's 16 weights twice): four
    stack runs of two positions' channels held in registers while every tap adds its eight aligned vectors."""
    s0, s1, s2, s3 = _stack_run(grid.dtype), _stack_run(grid.dtype), _stack_run(grid.dtype), _stack_run(grid.dtype)
    _zero(s0, s1, s2, s3)
    t = np.uint64(first_weight)
    for kh in range(taps_h):
        row = np.uint64(read + kh * row_step)
        for kw in range(taps_w):
            at = row + np.uint64(kw * column_step)
            for m in range(LANES):
                weight = weights[t + np.uint64(m)]
                s0[m] += weight * grid[at + np.uint64(m)]
                s1[m] += weight * grid[at + np.uint64(LANES + m)]
                s2[m] += weight * grid[at + np.uint64(2 * LANES + m)]
                s3[m] += weight * grid[at + np.uint64(3 * LANES + m)]
            t += np.uint64(LANES)
    _store(sums, write, s0)
    _store(sums, write + LANES, s1)
    _store(sums, write + 2 * LANES, s2)
    _store(sums, write + 3 * LANES, s3)


@intrinsic
def _row_sums(typingctx, grid, read, weights, first_weight, sums, write, taps_h, row_step, taps_w, positions):
    """``sums[write + i*16 + c] = sum_{kh, kw} weights[first_weight + (kh*taps_w + kw)*LANES + c] * grid[read +
    kh*row_step + (i + kw)*16 + c]`` for ``i < positions`` and 16 channels ``c``: :func:`_position_block` at
    dilation 1 along the row, ``taps_w`` and ``positions`` literal integers. Per row of taps it loads each of
    the ``positions + taps_w - 1`` input vectors once and adds it into every position whose window holds it
    (the sums in LLVM vectors, in registers), where :func:`_position_block` loads one per tap and position (a
    5x5 kernel: 25 loads per 16 positions' row of taps against 85, and the weights once, not twice). Each sum
    adds its taps in ``(kh, kw)`` order, as :func:`_position_block`'s. ``grid`` and ``sums`` are read and written
    in whole aligned 64-byte lines (their offsets multiples of 16 values from aligned arrays); the weights'
    runs may start anywhere."""
    if not (isinstance(taps_w, types.IntegerLiteral) and isinstance(positions, types.IntegerLiteral)):
        return None
    width, count = taps_w.literal_value, positions.literal_value

    def codegen(context, builder, signature, args):
        _ask_for_512_bit_vectors(builder)
        item = context.get_value_type(signature.args[0].dtype)
        itemsize = context.get_abi_sizeof(item)
        vector = ir.VectorType(item, VECTOR_VALUES)  # a position's 16 channels (CHANNEL_BLOCK), as _run_pointer's
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v{VECTOR_VALUES}f{8 * itemsize}")
        intp = ir.IntType(64)
        read, first, write, rows, step = (context.cast(builder, args[i], signature.args[i], types.intp)
                                          for i in (1, 3, 5, 6, 7))

        def at(position: int, value, offset: int):
            """A pointer to argument ``position``'s 16 values from ``value + offset`` on."""
            return _run_pointer(context, builder, signature.args[position], args[position],
                                builder.add(value, ir.Constant(intp, offset)))

        held = cgutils.alloca_once(builder, vector, size=count)  # promoted to registers by LLVM
        for i in range(count):
            builder.store(ir.Constant(vector, None), builder.gep(held, [ir.Constant(intp, i)]))
        with cgutils.for_range(builder, rows) as loop:
            row = builder.add(read, builder.mul(loop.index, step))
            run = builder.add(first, builder.mul(loop.index, ir.Constant(intp, width * LANES)))
            tap_weights = [builder.load(at(2, run, kw * LANES), align=itemsize) for kw in range(width)]
            totals = [builder.load(builder.gep(held, [ir.Constant(intp, i)])) for i in range(count)]
            for column in range(count + width - 1):
                value = builder.load(at(0, row, column * CHANNEL_BLOCK), align=64)
                for kw in range(width):
                    if 0 <= column - kw < count:
                        totals[column - kw] = builder.call(fma, [tap_weights[kw], value, totals[column - kw]])
            for i in range(count):
                builder.store(totals[i], builder.gep(held, [ir.Constant(intp, i)]))
        for i in range(count):
            builder.store(builder.load(builder.gep(held, [ir.Constant(intp, i)])),
                          at(4, write, i * CHANNEL_BLOCK), align=64)
        return context.get_dummy_value()

    return types.none(grid, read, weights, first_weight, sums, write, taps_h, row_step, taps_w, positions), codegen


@njit(cache=True, nogil=True, inline="always")
def _row_block(grid, weights, first_weight, sums, read, write, taps_h, taps_w, row_step, wide):
    """:func:`_row_sums` of :data:`ROW_POSITIONS` positions where ``wide``, else of :data:`POSITION_BLOCK`, for
    a kernel width of :data:`ROW_TAPS` (the literal each version needs)."""
    if taps_w == 3:
        if wide:
            _row_sums(grid, read, weights, first_weight, sums, write, taps_h, row_step, 3, 16)
        else:
            _row_sums(grid, read, weights, first_weight, sums, write, taps_h, row_step, 3, 8)
    elif taps_w == 5:
        if wide:
            _row_sums(grid, read, weights, first_weight, sums, write, taps_h, row_step, 5, 16)
        else:
            _row_sums(grid, read, weights, first_weight, sums, write, taps_h, row_step, 5, 8)
    elif wide:
        _row_sums(grid, read, weights, first_weight, sums, write, taps_h, row_step, 7, 16)
    else:
        _row_sums(grid, read, weights, first_weight, sums, write, taps_h, row_step, 7, 8)


@njit(cache=True, nogil=True, inline="always")
def _lanes_into_grid(values, first, height, width, grid, low_h, low_w, wp, staging):
    """The 16 planes ``(H, W)`` from ``values[first]`` on (``H*W`` apart) into ``grid``, a position's 16 channels
    side by side, at row ``h + low_h``, column ``w + low_w`` of rows ``wp`` wide. Rows of at least 16 values are
    transposed square by square straight into the grid (a row's last square moved back to end with it);
    shorter ones through ``staging`` (:func:`_lanes_from_planes`), then copied row by row."""
    plane = height * width
    if width >= SQUARE:
        for h in range(height):
            column = 0
            while column < width:
                column = min(column, width - SQUARE)
                _transpose_square(values, np.uint64(first + h * width + column), plane, grid,
                                  np.uint64(((h + low_h) * wp + low_w + column) * CHANNEL_BLOCK), CHANNEL_BLOCK)
                column += SQUARE
        return
    _lanes_from_planes(values, first, plane, staging)
    for h in range(height):
        at, read = np.uint64(((h + low_h) * wp + low_w) * CHANNEL_BLOCK), np.uint64(h * width * CHANNEL_BLOCK)
        for i in range(np.uint64(width * CHANNEL_BLOCK)):
            grid[at + i] = staging[read + i]


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward_lanes(x, weights, out, grid, sums, first, last, low_h, low_w, wp, taps_h, taps_w, dh, dw):
    """``out[n, c, oh, ow] = sum_{kh, kw} x_p[n, c, oh + kh*dh, ow + kw*dw] * k[c, kh, kw]`` at stride 1, one
    output channel per input channel, for jobs ``first:last``, a job being (sample ``n``, block ``b`` of
    :data:`CHANNEL_BLOCK` channels): the channels in the vector lanes.

    The block's planes go, transposed (a position's 16 channels side by
    side), into ``grid`` ``(Hp*Wp*16,)``, zero-padded by the lows (its
    padding cells zero on entry, never written: :func:`_lanes_into_grid`).
    Each block of output positions of a row is summed with its sums in
    registers, every load a whole, aligned vector (the plane loops of
    :func:`forward` load across two cache lines nearly every time): for
    kernel widths of :data:`ROW_TAPS` at dilation 1 along the row,
    :data:`ROW_POSITIONS` positions at a time (float32) that share each
    input vector among the taps that read it (:func:`_row_sums`), else
    :data:`POSITION_BLOCK` at a time (:func:`_position_block`); a row's last
    block is moved back to end with it. The sums go to ``sums``
    ``(OH*OW*16,)``, then transposed back into the output. The same
    products as :func:`forward`'s, added in the same (tap) order.
    ``weights`` ``(channels // 16, T, LANES)``: tap ``t``'s weights of the
    block's 16 channels, twice. The input and the output planes need at
    least :data:`POSITION_BLOCK` output columns.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    blocks, plane, out_plane = channels // CHANNEL_BLOCK, height * width, out_h * out_w
    values, results, flat_weights = x.reshape(-1), out.reshape(-1), weights.reshape(-1)
    taps = taps_h * taps_w
    rows = dw == 1 and taps_w in ROW_TAPS  # the widths _row_block has a _row_sums for
    # float32: sixteen positions a block; float64's vectors hold half a position's channels
    most = ROW_POSITIONS if rows and x.itemsize == 4 else POSITION_BLOCK
    for job in range(first, last):
        n, b = job // blocks, job % blocks
        first_value = (n * channels + b * CHANNEL_BLOCK) * plane
        _lanes_into_grid(values, first_value, height, width, grid, low_h, low_w, wp, sums)
        for oh in range(out_h):
            ow = 0
            while ow < out_w:
                wide = out_w - ow >= most and most == ROW_POSITIONS
                ow = ow if wide else min(ow, out_w - POSITION_BLOCK)
                read, write = (oh * wp + ow) * CHANNEL_BLOCK, (oh * out_w + ow) * CHANNEL_BLOCK
                if rows:
                    _row_block(grid, flat_weights, b * taps * LANES, sums, read, write, taps_h, taps_w,
                               dh * wp * CHANNEL_BLOCK, wide)
                else:
                    _position_block(grid, flat_weights, b * taps * LANES, sums, read, write, taps_h, taps_w,
                                    dh * wp * CHANNEL_BLOCK, dw * CHANNEL_BLOCK)
                ow += ROW_POSITIONS if wide else POSITION_BLOCK
        _planes_from_lanes(sums, out_plane, results, (n * channels + b * CHANNEL_BLOCK) * out_plane)
