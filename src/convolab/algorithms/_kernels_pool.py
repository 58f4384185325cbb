"""The compiled max pooling: each window's maximum with its flat index, and the gradient's scatter back.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrappers that lay the arrays out and share the planes among
threads are in :mod:`convolab.pooling._compiled_windows`.

The contract of both kernels:

- three spatial axes: lower ranks come as rank 3 with leading unit axes
  (kernel 1, stride 1, dilation 1, no padding there);
- planes: the ``(n, c)`` pairs flattened, ``x`` ``(P, D, H, W)``; every array
  C-contiguous, native byte order, writeable; ``x`` and ``values`` one dtype,
  ``grad`` and ``out`` one dtype (float32 or float64), indices int64;
- nobody pads: a window's taps are cut to those inside the input (padding
  never wins a maximum), so the caller passes the low padding only; the
  output size is the caller's (``ceil_mode``'s last window may hang past the
  input: its outside taps are cut the same way). Every window must hold at
  least one input cell (:func:`convolab.pooling.pool_spec` guarantees it);
- ``first, last``: the planes this call writes; no other call writes them,
  so threads never share a cell.

The tie rule is PyTorch's, as :func:`convolab.pooling._windows._keep_max`
has it: taps in row-major window order, the first taken, a later one only if
strictly greater, or NaN (so the last NaN wins). The scatter adds a plane's
gradients in output order, as ``np.add.at`` does: the same sums in the same
order, the same bits. No ``fastmath``: it would drop the NaN tests.

Axis legend: P planes (``n*C + c``), ``(D, H, W)`` input, ``(OD, OH, OW)``
output, ``K*`` kernel taps; ``s*`` stride, ``d*`` dilation, ``low_*`` low padding.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from ._kernels_col2im import _inside

__all__ = ["max_pool_planes", "max_pool_grad_planes", "scatter_planes", "max_pool_table", "max_pool_inner_windows",
           "max_pool_pairs"]


@njit(cache=True, nogil=True, inline="always")
def _keep_max_run(row, best, best_index, with_indices, ow0, ow1, step, offset, row_start):
    """One tap over a row of windows ``ow0:ow1``: it reads ``row[ow*step + offset]``, and replaces
    ``best[ow]`` where it is the first tap (``best_index < 0``), strictly greater, or NaN.

    Branch-free selects, indexed unsigned (no wraparound test per value), so that the loop vectorizes.
    """
    for ow in range(uint64(ow0), uint64(ow1)):
        w = ow * step + offset
        value = row[w]
        kept = best[ow]
        if with_indices:
            kept_index = best_index[ow]
            take = (kept_index < 0) | (value > kept) | (value != value)  # value != value: NaN
            best[ow] = value if take else kept
            best_index[ow] = row_start + w if take else kept_index
        else:
            best[ow] = value if (value > kept) | (value != value) else kept


@njit(cache=True, nogil=True, inline="always")
def _window_max(row, base, kw_size, dw):
    """The maximum of ``row[base + kw*dw]`` over ``kw < kw_size``: the first kept, a later one if strictly
    greater or NaN (the tie rule)."""
    kept = row[base]
    for kw in range(1, kw_size):
        value = row[base + uint64(kw * dw)]
        kept = value if (value > kept) | (value != value) else kept  # value != value: NaN
    return kept


@njit(cache=True, nogil=True, inline="always")
def _max_windows_run(row, best, first_row, ow0, ow1, step, start, kw_size, dw):
    """Values only, windows ``ow0:ow1`` whose taps are all in ``row``: each window's taps over this row in
    registers (:func:`_window_max`), then folded into ``best[ow]`` by the same rule, or stored there for the
    windows' ``first_row``.

    Window ``ow`` reads ``row[ow*step + start + kw*dw]``. With ``step``, ``kw_size`` and ``dw`` constants at
    the call, LLVM unrolls the taps and vectorizes along the windows: one pass over ``best`` instead of one
    per tap. The two loops are separate so that each vectorizes (a branch on ``first_row`` inside measured
    1.7x slower).
    """
    if first_row:
        for ow in range(uint64(ow0), uint64(ow1)):
            best[ow] = _window_max(row, ow * step + start, kw_size, dw)
    else:
        for ow in range(uint64(ow0), uint64(ow1)):
            kept, earlier = _window_max(row, ow * step + start, kw_size, dw), best[ow]
            best[ow] = kept if (kept > earlier) | (kept != kept) else earlier


@njit(cache=True, nogil=True, inline="always")
def _max_windows_of_row(row, best, first_row, kw_size, sw, dw, low_w, ow0, ow1):
    """:func:`_max_windows_run` for windows ``ow0:ow1``, the common strides and kernel widths (undilated) as
    constants: with any of the three a runtime value, the loop measured 2.5x slower (no vectorized loads)."""
    start = uint64(-low_w)  # wraps below zero: ow*sw + start is in the row for ow >= ow0
    if dw == 1 and sw == 1 and kw_size == 2:
        _max_windows_run(row, best, first_row, ow0, ow1, uint64(1), start, 2, 1)
    elif dw == 1 and sw == 1 and kw_size == 3:
        _max_windows_run(row, best, first_row, ow0, ow1, uint64(1), start, 3, 1)
    elif dw == 1 and sw == 2 and kw_size == 2:
        _max_windows_run(row, best, first_row, ow0, ow1, uint64(2), start, 2, 1)
    elif dw == 1 and sw == 2 and kw_size == 3:
        _max_windows_run(row, best, first_row, ow0, ow1, uint64(2), start, 3, 1)
    else:
        _max_windows_run(row, best, first_row, ow0, ow1, uint64(sw), start, kw_size, dw)


@njit(cache=True, nogil=True, inline="always")
def _row_of_windows(x, plane, od, oh, best, best_index, with_indices, kd_size, kh_size, kw_size, sd, sh, sw,
                    dd, dh, dw, low_d, low_h, low_w):
    """The maxima of the windows ``(od, oh, :)`` of ``plane`` into ``best`` ``(OW,)`` and, with
    ``with_indices``, their flat indices into ``best_index`` ``(OW,)``.

    The row keeps its running maxima in place while the taps pass over it in window order, each tap
    one strided run along an input row. For values alone, the windows whose taps all lie in the input row
    take each row's taps at once (:func:`_max_windows_of_row`; row by row in window order, so the same tie
    and NaN rule), and only the edge windows go tap by tap.
    """
    depth, height, width = x.shape[1], x.shape[2], x.shape[3]
    ow_size = best.shape[0]
    start_d = od * sd - low_d
    kd0, kd1 = _inside(start_d, dd, depth, kd_size)
    start_h = oh * sh - low_h
    kh0, kh1 = _inside(start_h, dh, height, kh_size)
    inner0, inner1 = 0, 0  # windows taken whole by _max_windows_of_row: none with indices
    if not with_indices:
        inner0 = _inside(-low_w, sw, width, ow_size)[0]
        inner1 = max(inner0, _inside((kw_size - 1) * dw - low_w, sw, width, ow_size)[1])
    # Never kept over a first tap, even an input's -inf: best_index < 0 then. The whole windows' first row
    # stores its maxima instead (a fill of the whole row measured a quarter of the 1-d pool's time).
    best[:inner0] = -np.inf
    best[inner1:] = -np.inf
    best_index[:] = -1
    for kd in range(kd0, kd1):
        z = start_d + kd * dd
        for kh in range(kh0, kh1):
            h = start_h + kh * dh
            row = x[plane, z, h]  # (W,)
            row_start = uint64((z * height + h) * width)
            if inner1 > inner0:
                _max_windows_of_row(row, best, kd == kd0 and kh == kh0, kw_size, sw, dw, low_w, inner0, inner1)
            for kw in range(kw_size):
                offset = kw * dw - low_w
                ow0, ow1 = _inside(offset, sw, width, ow_size)
                if inner1 > inner0:  # the edges only: [ow0, inner0) here, [inner1, ow1) below
                    if ow1 > inner1:
                        _keep_max_run(row, best, best_index, with_indices, inner1, ow1, uint64(sw),
                                      uint64(offset), row_start)
                    ow1 = min(ow1, inner0)
                start = uint64(offset)  # wraps below zero: ow*step + start is in the row for ow >= ow0
                if sw == 1:  # the common strides as constants
                    _keep_max_run(row, best, best_index, with_indices, ow0, ow1, uint64(1), start, row_start)
                elif sw == 2:
                    _keep_max_run(row, best, best_index, with_indices, ow0, ow1, uint64(2), start, row_start)
                else:
                    _keep_max_run(row, best, best_index, with_indices, ow0, ow1, uint64(sw), start, row_start)


@njit(cache=True, nogil=True)
def max_pool_planes(x, values, indices, with_indices, first, last, kd_size, kh_size, kw_size, sd, sh, sw,
                    dd, dh, dw, low_d, low_h, low_w):
    """``values[p, o]``: the maximum of window ``o`` of plane ``p``, for planes ``first:last``; with
    ``with_indices``, ``indices[p, o]`` its flat index ``(z*H + h)*W + w`` in the plane (else ``indices``
    is not touched: any int64 array with three spatial axes).

    Window ``o`` reads ``o*s + k*d - low`` along each axis, its taps cut to the input.
    """
    for plane in range(first, last):
        for od in range(values.shape[1]):
            for oh in range(values.shape[2]):
                best_index = indices[plane, od, oh] if with_indices else indices[0, 0, 0]
                _row_of_windows(x, plane, od, oh, values[plane, od, oh], best_index, with_indices, kd_size,
                                kh_size, kw_size, sd, sh, sw, dd, dh, dw, low_d, low_h, low_w)


@njit(cache=True, nogil=True)
def max_pool_grad_planes(x, grad, out, best, best_index, first, last, kd_size, kh_size, kw_size, sd, sh, sw,
                         dd, dh, dw, low_d, low_h, low_w):
    """``out[p] = 0``, then ``grad[p, o]`` added at the flat index of window ``o``'s maximum, over the
    outputs in order, for planes ``first:last``: the forward's argmax and the scatter fused, no index kept.

    ``grad`` is ``(P, OD, OH, OW)``, ``out`` ``(P, D*H*W)``; ``best`` (``x``'s dtype) and ``best_index``
    (int64) are ``(OW,)`` scratch, the calling thread's own.
    """
    for plane in range(first, last):
        target = out[plane]
        target[:] = 0
        for od in range(grad.shape[1]):
            for oh in range(grad.shape[2]):
                _row_of_windows(x, plane, od, oh, best, best_index, True, kd_size, kh_size, kw_size, sd, sh, sw,
                                dd, dh, dw, low_d, low_h, low_w)
                row = grad[plane, od, oh]
                for ow in range(row.shape[0]):
                    target[best_index[ow]] += row[ow]


@njit(cache=True, nogil=True)
def scatter_planes(grad, indices, out, first, last):
    """``out[p] = 0``, then ``out[p, indices[p, o]] += grad[p, o]`` over the outputs ``o`` in order, for planes
    ``first:last``.

    ``grad`` and ``indices`` are ``(P, O)``, ``out`` ``(P, V)``; every index is in ``[0, V)`` (the caller's:
    max pooling's own, never a user's).
    """
    outputs = grad.shape[1]
    for plane in range(first, last):
        out[plane, :] = 0
        for o in range(outputs):
            out[plane, indices[plane, o]] += grad[plane, o]


@njit(cache=True, nogil=True)
def max_pool_table(planes, gather, values, indices):
    """Small problems' max pooling by the window table: ``values[p, o]`` the maximum of window ``o`` of plane
    ``p`` and ``indices[p, o]`` its flat index in the plane, the tie rule above, over every plane.

    ``planes`` ``(P, V)``; ``gather`` ``(T, O)`` (:func:`convolab.pooling._windows._window_table`: tap ``t`` of
    window ``o`` reads cell ``gather[t, o]``, ``V`` for padding, which is skipped); ``values`` ``(P, O)`` in the
    planes' dtype and ``indices`` ``(P, O)`` int64, written. No per-row set-up, so it stays fast where
    :func:`max_pool_planes`'s rows are a few windows long.
    """
    plane_size = planes.shape[1]
    taps, outputs = gather.shape
    for p in range(planes.shape[0]):
        for o in range(outputs):
            # One window in registers; branch-free selects (as _keep_max_run): a mispredicted branch per tap
            # cost more than the tap.
            kept, kept_index = planes[p, 0], -1
            for t in range(taps):
                cell = gather[t, o]
                inside = cell < plane_size  # padding never wins
                value = planes[p, cell if inside else 0]
                take = inside & ((kept_index < 0) | (value > kept) | (value != value))  # value != value: NaN
                kept = value if take else kept
                kept_index = cell if take else kept_index
            values[p, o] = kept
            indices[p, o] = kept_index


@njit(cache=True, nogil=True, inline="always")
def _later_tap(kept, kept_index, value, index):
    """The tie rule for the next tap in window order: it replaces the kept one where strictly greater or NaN."""
    take = (value > kept) | (value != value)  # value != value: NaN
    return (value if take else kept), (index if take else kept_index)


@njit(cache=True, nogil=True)
def max_pool_inner_windows(planes, windows, values, indices):
    """:func:`max_pool_table` where no window reaches padding: ``windows`` ``(O, T)`` int64, C-contiguous, the
    plane index each tap reads, every one inside the plane (``T >= 1``); each window's taps read together, its
    first tap taken without a test.

    Window by window with the taps in a row of the table, not tap by tap: 1.3-2.6x faster than
    :func:`max_pool_table` on the digits CNN's two pools; four taps (a 2x2 window, the common pool) are
    unrolled, which halves the first pool's time again.
    """
    outputs, taps = windows.shape
    for p in range(planes.shape[0]):
        row = planes[p]
        for o in range(outputs):
            cells = windows[o]
            kept_index = cells[0]
            kept = row[kept_index]
            if taps == 4:
                kept, kept_index = _later_tap(kept, kept_index, row[cells[1]], cells[1])
                kept, kept_index = _later_tap(kept, kept_index, row[cells[2]], cells[2])
                kept, kept_index = _later_tap(kept, kept_index, row[cells[3]], cells[3])
            else:
                for t in range(1, taps):
                    kept, kept_index = _later_tap(kept, kept_index, row[cells[t]], cells[t])
            values[p, o] = kept
            indices[p, o] = kept_index


@njit(cache=True, nogil=True)
def max_pool_pairs(x, values, indices, pair_values, pair_indices):
    """:func:`max_pool_inner_windows` for 2x2 windows at stride 2 that tile the planes: ``x`` ``(P, H, W)``, ``H``
    and ``W`` even; ``values`` and ``indices`` ``(P, H/2, W/2)``; ``pair_values`` and ``pair_indices`` scratch of
    ``x.size // 2`` values (``x``'s dtype, int64).

    In two steps, each a select per output without a branch to mispredict (one
    window's taps compared in turn cost a mispredicted branch or so a window on
    random data: 32 -> 13 us on the digits CNN's first pool). First the pairs
    along the rows, one loop over the whole array (``W`` is even, so its pairs are
    ``x.flat[2q], x.flat[2q+1]``); then each window's upper pair against its
    lower. The tie rule is the taps' in turn: a pair keeps its first value unless
    the second is strictly greater or NaN, and the window its upper pair's unless
    the lower pair's is strictly greater or NaN; so the first maximum wins, or the
    last NaN, as tap by tap.
    """
    planes, height, width = x.shape
    out_width = width // 2
    flat = x.reshape(x.size)
    for q in range(pair_values.size):
        first, second = flat[2 * q], flat[2 * q + 1]
        take = (second > first) | (second != second)  # second != second: NaN
        pair_values[q] = second if take else first
        pair_indices[q] = 2 * q + np.int64(take)
    flat_values, flat_indices = values.reshape(values.size), indices.reshape(indices.size)
    rows_per_plane, plane = height // 2, height * width
    for row in range(planes * rows_per_plane):
        upper, out = 2 * row * out_width, row * out_width
        lower = upper + out_width
        start = (row // rows_per_plane) * plane  # the plane's first cell: indices count from it
        for j in range(out_width):
            kept, candidate = pair_values[upper + j], pair_values[lower + j]
            take = (candidate > kept) | (candidate != candidate)
            flat_values[out + j] = candidate if take else kept
            flat_indices[out + j] = (pair_indices[lower + j] if take else pair_indices[upper + j]) - start
