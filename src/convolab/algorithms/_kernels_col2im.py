"""The compiled col2im: every window's gradient added back into the input cell it read (the unroll's adjoint).

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrapper that lays the arrays out and shares the jobs among
threads is :func:`._columns.add_columns`.

The contract of :func:`add_columns`:

- three spatial axes: lower ranks come as rank 3 with leading unit axes;
- ``columns`` flat: rows of ``OD*OH*OW`` values, the gradient of each
  window's tap ``(kd, kh, kw)`` at every output position of sample ``n`` and
  channel ``c``, the row ``c*channel_rows + j*tap_rows + n*sample_rows`` (``j``
  the tap's index in C order), as one matrix product lays them out: over a
  block of samples ``(C, K, N, P)`` (``(G, C*K, O) @ (G, O, N*P)``), or per
  sample ``(N, C, K, P)``, reshaped, no copy;
- ``out`` ``(N, C, D, H, W)``: the gradient of the input padded by ``lows``
  on the low side, cropped to ``(D, H, W)`` (the padded cells past that are
  dropped: zero padding's gradient). With ``lows`` zero and ``out`` the padded
  size it is the padded input's gradient, which the caller folds back onto a
  padding mode's sources;
- every array C-contiguous, native byte order, writeable, one dtype (float32
  or float64); ``out``'s contents on entry do not matter: each plane is zeroed
  before it is summed into;
- ``first, last``: the planes this call writes, counted channel by channel
  (``c*N + n``); no other call writes them, so threads never share a cell.

Each cell's sum starts at zero and adds its taps in the kernel's C order, one
term per tap (a tap reads a cell from at most one output position), exactly as
:func:`convolab._window.add_windows` adds its strided slices: the results are
the same bits. No ``fastmath``, so that the additions stay in that order.

Axis legend: N samples, C input channels (all groups), ``K*`` kernel taps,
``O*`` output positions, ``(D, H, W)`` the gradient's extent; ``s*`` stride,
``d*`` dilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from ._kernels_unroll import tap_cells, window_starts

__all__ = ["add_columns", "add_planes", "add_batch_inner"]


@njit(cache=True, nogil=True, inline="always")
def _inside(offset, step, size, count):
    """The range ``[first, last)`` of the ``count`` positions ``i`` with ``0 <= i*step + offset < size``."""
    first = 0 if offset >= 0 else (-offset + step - 1) // step
    last = 0 if size - 1 - offset < 0 else min(count, (size - 1 - offset) // step + 1)
    return first, max(first, last)


@njit(cache=True, nogil=True)
def _three_taps_at_stride_2(width, ow_size, low_w, tap_step):
    """How :func:`add_columns` adds a row's three taps along the row at stride 2, dilation 1 in one pass.

    In the padded row (``u = w + low_w``) an even cell ``u = 2q`` takes tap 0 of output ``q``, then tap 2 of
    output ``q - 1``; an odd cell ``2q + 1`` tap 1 of output ``q``: each cell its taps in the kernel's order,
    as one tap at a time adds them, so the same bits. Returns ``first, last``, the ``q`` whose two cells and
    three outputs all lie inside the row (one step of a loop over pairs of cells each, which reads each tap's
    row and each cell once, where a tap at a time made three strided passes), and the edges' additions in
    order: the cell each adds to and the value it reads, from the row's first cell and its tap 0's first
    value (``tap_step`` between taps)."""
    first = max(1, (low_w + 1) // 2)
    last = max(first, min(ow_size - 1, (width - 2 + low_w) // 2) + 1)
    cells, reads = [], []
    for q in range(ow_size + 1):
        if first <= q < last:
            continue
        w = 2 * q - low_w
        if 0 <= w < width:
            if q < ow_size:
                cells.append(w)
                reads.append(q)
            if q >= 1:
                cells.append(w)
                reads.append(2 * tap_step + q - 1)
        if 0 <= w + 1 < width and q < ow_size:
            cells.append(w + 1)
            reads.append(tap_step + q)
    edge_cells, edge_reads = np.empty(len(cells), dtype=np.int64), np.empty(len(reads), dtype=np.int64)
    for e in range(len(cells)):
        edge_cells[e], edge_reads[e] = cells[e], reads[e]
    return first, last, edge_cells, edge_reads


@njit(cache=True, nogil=True)
def add_columns(columns, out, first, last, kernel_size, out_size, channel_rows, tap_rows, sample_rows,
                sd, sh, sw, dd, dh, dw, low_d, low_h, low_w):
    """``out[n, c, z, h, w] = sum_{j, p : p*s + j*d - low = (z, h, w)} columns[row(c, j, n), p]``, for planes
    ``first:last``: each window's tap added into the cell it read, taps in C order.

    Both arrays are addressed flat, so that a short row of outputs costs a few
    integer operations besides its additions. At stride 2 with three taps
    along the row (dilation 1: ResNet's downsampling 3x3) a row's three taps
    are added in one pass over pairs of cells (:func:`_three_taps_at_stride_2`);
    at stride 2 with other tap counts (DCGAN's 4, a stem's 7) taps ``kw`` and
    ``kw + 1`` go in one loop (:func:`_add_tap_pair`).
    """
    samples, channels = out.shape[0], out.shape[1]
    depth, height, width = out.shape[2], out.shape[3], out.shape[4]
    kd_size, kh_size, kw_size = kernel_size
    od_size, oh_size, ow_size = out_size
    flat = out.reshape(out.size)
    positions, volume = od_size * oh_size * ow_size, depth * height * width
    pairs = sw == 2 and kw_size == 3 and dw == 1  # ResNet's stride-2 3x3: a row's three taps at once
    tap_step = tap_rows * positions
    if pairs:
        pair0, pair1, edge_cells, edge_reads = _three_taps_at_stride_2(width, ow_size, low_w, tap_step)
    else:
        pair0, pair1, edge_cells, edge_reads = 0, 0, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    for plane in range(first, last):
        # planes channel by channel, so that a job over a block's product reads one stretch of it
        c, n = plane // samples, plane % samples
        target = (n * channels + c) * volume  # the plane's first cell in flat
        flat[target:target + volume] = 0
        row = c * channel_rows + n * sample_rows  # the row of tap 0; each tap's is tap_rows further
        for kd in range(kd_size):
            od0, od1 = _inside(kd * dd - low_d, sd, depth, od_size)
            for kh in range(kh_size):
                oh0, oh1 = _inside(kh * dh - low_h, sh, height, oh_size)
                if pairs:
                    for od in range(od0, od1):
                        z = od * sd + kd * dd - low_d
                        for oh in range(oh0, oh1):
                            start = target + (z * height + oh * sh + kh * dh - low_h) * width
                            read = row * positions + (od * oh_size + oh) * ow_size
                            for e in range(len(edge_cells)):  # the row's edges: a tap or a cell outside
                                flat[uint64(start + edge_cells[e])] += columns[uint64(read + edge_reads[e])]
                            # between them, pairs of cells: even ones take taps 0 and 2, odd ones tap 1
                            cell, tap0 = uint64(start + 2 * pair0 - low_w), uint64(read + pair0)
                            tap1, tap2 = tap0 + uint64(tap_step), tap0 + uint64(2 * tap_step - 1)
                            for i in range(uint64(pair1 - pair0)):
                                at = cell + uint64(2) * i
                                flat[at] = (flat[at] + columns[tap0 + i]) + columns[tap2 + i]
                                flat[at + uint64(1)] += columns[tap1 + i]
                    row += 3 * tap_rows
                    continue
                kw = 0
                while kw < kw_size:
                    ow0, ow1 = _inside(kw * dw - low_w, sw, width, ow_size)
                    if sw == 2 and dw == 1 and kw + 1 < kw_size:
                        # taps kw and kw + 1 write the even and the odd cells of a row (or the odd and the even):
                        # one loop over both, their stores side by side, where one tap's strided stores alone do
                        # not vectorize; each cell still takes its taps in C order (the two never meet a cell)
                        _add_tap_pair(columns, flat, target, row, tap_rows, positions, od0, od1, oh0, oh1, ow0, ow1,
                                      kw, sd, sh, dd, dh, kd, kh, low_d, low_h, low_w, height, width, oh_size,
                                      ow_size)
                        row += 2 * tap_rows
                        kw += 2
                        continue
                    for od in range(od0, od1):
                        z = od * sd + kd * dd - low_d
                        for oh in range(oh0, oh1):
                            h = oh * sh + kh * dh - low_h
                            write = uint64(target + (z * height + h) * width + ow0 * sw + kw * dw - low_w)
                            read = uint64(row * positions + (od * oh_size + oh) * ow_size + ow0)
                            # indexed unsigned (no wraparound test per value, so that the loops vectorize)
                            count = uint64(ow1 - ow0)
                            if sw == 1:  # the common strides as constants
                                for i in range(count):
                                    flat[write + i] += columns[read + i]
                            elif sw == 2:
                                for i in range(count):
                                    flat[write + uint64(2) * i] += columns[read + i]
                            else:
                                for i in range(count):
                                    flat[write + uint64(sw) * i] += columns[read + i]
                    row += tap_rows
                    kw += 1


@njit(cache=True, nogil=True, inline="always")
def _add_tap_pair(columns, flat, target, row, tap_rows, positions, od0, od1, oh0, oh1, ow0, ow1, kw, sd, sh, dd, dh,
                  kd, kh, low_d, low_h, low_w, height, width, oh_size, ow_size):
    """:func:`add_columns`' taps ``kw`` and ``kw + 1`` at stride 2 along the last axis (dilation 1): tap ``kw``'s
    outputs ``ow0:ow1`` land on cells ``2*ow + kw - low_w``, the next tap's one cell further; where both have an
    output they are added in one loop, two neighbouring cells a step, the rest one by one."""
    pw0, pw1 = _inside(kw + 1 - low_w, 2, width, ow_size)  # the second tap's outputs
    both0, both1 = max(ow0, pw0), min(ow1, pw1)
    both1 = max(both0, both1)
    for od in range(od0, od1):
        z = od * sd + kd * dd - low_d
        for oh in range(oh0, oh1):
            h = oh * sh + kh * dh - low_h
            base = target + (z * height + h) * width + kw - low_w  # cell of output 0 of tap kw (may be outside)
            first = row * positions + (od * oh_size + oh) * ow_size  # tap kw's output 0
            second = first + tap_rows * positions
            for ow in range(ow0, min(both0, ow1)):
                flat[base + 2 * ow] += columns[first + ow]
            for ow in range(pw0, min(both0, pw1)):
                flat[base + 2 * ow + 1] += columns[second + ow]
            write = uint64(base + 2 * both0)
            read_first, read_second = uint64(first + both0), uint64(second + both0)
            for i in range(uint64(both1 - both0)):
                flat[write + uint64(2) * i] += columns[read_first + i]
                flat[write + uint64(2) * i + uint64(1)] += columns[read_second + i]
            for ow in range(max(both1, ow0), ow1):
                flat[base + 2 * ow] += columns[first + ow]
            for ow in range(max(both1, pw0), pw1):
                flat[base + 2 * ow + 1] += columns[second + ow]


@njit(cache=True, nogil=True)
def add_planes(columns, out, plane, first, last, kernel_size, out_size, channel_rows, tap_rows, sample_rows,
               sd, sh, sw, dd, dh, dw, low_d, low_h, low_w):
    """:func:`add_columns` for short rows, plane by plane through a scratch plane: the same sums, in the same
    order, without a loop per row.

    ``plane`` is this thread's scratch ``(PD, PH, PW)``, overwritten: per axis
    at least as long as the windows reach, ``(O-1)*s + (K-1)*d + 1``, and as
    ``low + size`` (the gradient's cells, padded by ``lows`` on the low side).
    Every tap of every window then lands inside it, so each tap is one loop
    over the plane's output positions with no bounds, through a table of where
    each position's window starts (made once per call); the cells of ``out``
    are copied out of it after. A cell's sum starts at zero and takes its taps
    in the kernel's C order, as in :func:`add_columns`; the sums that land on
    zero padding's cells are dropped with the scratch.
    """
    samples, channels = out.shape[0], out.shape[1]
    depth, height, width = out.shape[2], out.shape[3], out.shape[4]
    kd_size, kh_size, kw_size = kernel_size
    od_size, oh_size, ow_size = out_size
    pd, ph, pw = plane.shape[0], plane.shape[1], plane.shape[2]
    flat, sums = out.reshape(out.size), plane.reshape(plane.size)
    positions, volume, cells = od_size * oh_size * ow_size, depth * height * width, pd * ph * pw
    starts = window_starts(od_size, oh_size, ow_size, sd, sh, sw, ph, pw)  # where each window starts
    zero = sums.dtype.type(0)
    for job in range(first, last):
        # planes channel by channel, so that a job over a block's product reads one stretch of it
        c, n = job // samples, job % samples
        for cell in range(cells):
            sums[cell] = zero
        row = c * channel_rows + n * sample_rows  # the row of tap 0; each tap's is tap_rows further
        for kd in range(kd_size):
            for kh in range(kh_size):
                for kw in range(kw_size):
                    tap = uint64((kd * dd * ph + kh * dh) * pw + kw * dw)  # the tap's offset in the scratch
                    read = uint64(row * positions)
                    for p in range(positions):
                        sums[tap + starts[p]] += columns[read + uint64(p)]
                    row += tap_rows
        target = (n * channels + c) * volume  # the plane's first cell in flat
        for z in range(depth):
            for h in range(height):
                source = ((z + low_d) * ph + h + low_h) * pw + low_w
                write = target + (z * height + h) * width
                for w in range(width):
                    flat[write + w] = sums[source + w]


@njit(cache=True, nogil=True)
def add_batch_inner(columns, out, scratch, first, last, sd, sh, sw, dd, dh, dw, low_d, low_h, low_w):
    """:func:`add_columns` for columns with the batch innermost (the adjoint of
    :func:`._kernels_unroll.unroll_batch_inner`), for the channels ``first:last``: the same sums, in the same
    order, each tap one run of ``N`` additions.

    ``columns`` ``(C, KD, KH, KW, A, B, E, N)``; ``out`` ``(N, C, D, H, W)``
    as in :func:`add_columns`; ``scratch`` this thread's ``(PD, PH, PW, N)``,
    overwritten, as :func:`add_planes`' plane is sized (as far as the windows
    reach, and the gradient's cells padded by the ``lows``) with the samples
    innermost. A cell's sum starts at zero and takes its taps in the kernel's
    C order; the cells of ``out`` are copied out of the scratch after.
    """
    samples, channels = out.shape[0], out.shape[1]
    depth, height, width = out.shape[2], out.shape[3], out.shape[4]
    ph, pw = scratch.shape[1], scratch.shape[2]
    flat, sums, flat_out = columns.reshape(columns.size), scratch.reshape(scratch.size), out.reshape(out.size)
    cells = tap_cells(columns.shape[1:7], sd, sh, sw, dd, dh, dw, ph, pw)
    volume = depth * height * width
    sample_step = uint64(channels * volume)
    zero = scratch.dtype.type(0)
    for c in range(first, last):
        for i in range(sums.size):
            sums[i] = zero
        position = uint64(c * cells.size * samples)
        for cell in cells:  # each tap's windows, the taps in C order
            write = cell * uint64(samples)
            for n in range(samples):
                sums[write + uint64(n)] += flat[position + uint64(n)]
            position += uint64(samples)
        for z in range(depth):
            for h in range(height):
                for w in range(width):
                    read = uint64((((z + low_d) * ph + h + low_h) * pw + w + low_w) * samples)
                    write = uint64(c * volume + (z * height + h) * width + w)
                    for n in range(samples):
                        flat_out[write + uint64(n) * sample_step] = sums[read + uint64(n)]
