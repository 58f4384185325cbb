"""The compiled unroll: im2col's columns written straight from the input before padding (pad + unroll fused).

Two loops write the same columns: :func:`unroll` copies row by row from the
input, for images of any size; :func:`unroll_planes`, for small images, pads
one sample's channel into a scratch plane and copies every tap's windows from
it, which costs no edge arithmetic per row (a 4x4 output is rows of 4 values).
A third, :func:`unroll_batch_inner`, writes them in another order, the batch
innermost, for many small images: every copy is then a run of ``N`` values.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrapper that lays the arrays out, makes the tables and shares
the jobs among threads is :func:`._columns.unrolled_blocks_unpadded`.

The contract of :func:`unroll`:

- three spatial axes: lower ranks come as rank 3 with leading unit axes;
- ``x`` ``(N, C, D, H, W)``: the input *before* padding;
- ``columns`` ``(C, KD, KH, KW, nb, A, B, E)``: one block of the unrolled
  input, as gemm and folded multiply it (``(G, C/G*K, nb*A*B*E)`` reshaped):
  samples ``n0:n0+nb`` and output positions ``origin + (a, b, e)``;
- ``source_d, source_h, source_w``: per padded cell of each axis, the input
  position it copies, ``-1`` for a zero
  (:func:`convolab._window.padded_sources`: every padding mode's map);
  ``low_w`` the last axis's low padding. Inside the input a padded cell
  ``p`` copies ``p - low``, so the tables are read only at the edges;
- every array C-contiguous, native byte order; ``columns`` writeable;
  ``x`` and ``columns`` of one dtype (float32 or float64), the tables int64;
- ``first, last``: the jobs (``(c*KD + kd)*KH + kh``) this call writes; each
  writes its own rows of ``columns``, so threads never share a cell.

Copies are exact: the columns hold the same values as the padded input's
windows (:func:`convolab._window.sliding_windows`), zeros as zeros (never
``0 * x``).

Axis legend: N samples, C input channels (all groups), ``K*`` kernel taps,
``(A, B, E)`` the block's output positions, ``(D, H, W)`` the input; ``s*``
stride, ``d*`` dilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

__all__ = ["unroll", "unroll_planes", "unroll_batch_inner", "window_starts", "tap_cells"]


@njit(cache=True, nogil=True, inline="always")
def window_starts(a_size, b_size, e_size, sd, sh, sw, ph, pw):
    """Per output position ``(a, b, e)``, C order: the cell of a plane ``(*, ph, pw)`` (flat) where its window's
    first tap lies, ``((a*sd)*ph + b*sh)*pw + e*sw``."""
    starts = np.empty(a_size * b_size * e_size, dtype=np.uint64)
    for a in range(a_size):
        for b in range(b_size):
            for e in range(e_size):
                starts[(a * b_size + b) * e_size + e] = ((a * sd) * ph + b * sh) * pw + e * sw
    return starts


@njit(cache=True, nogil=True, inline="always")
def tap_cells(sizes, sd, sh, sw, dd, dh, dw, ph, pw):
    """Per kernel tap and output position ``(kd, kh, kw, a, b, e)`` (``sizes``), C order: the cell of a padded
    plane ``(*, ph, pw)`` (flat) that the tap reads there, ``((a*sd + kd*dd)*ph + b*sh + kh*dh)*pw + e*sw + kw*dw``."""
    kd_size, kh_size, kw_size, a_size, b_size, e_size = sizes
    cells = np.empty(kd_size * kh_size * kw_size * a_size * b_size * e_size, dtype=np.uint64)
    i = 0
    for kd in range(kd_size):
        for kh in range(kh_size):
            for kw in range(kw_size):
                for a in range(a_size):
                    for b in range(b_size):
                        for e in range(e_size):
                            cells[i] = ((a * sd + kd * dd) * ph + b * sh + kh * dh) * pw + e * sw + kw * dw
                            i += 1
    return cells


@njit(cache=True, nogil=True, inline="always")
def _cell(flat, start, source_w, padded):
    """The value padded cell ``padded`` of the row at ``flat[start:]`` holds: the input cell its table names,
    or zero."""
    column = source_w[padded]
    return flat[start + column] if column >= 0 else flat.dtype.type(0)


@njit(cache=True, nogil=True)
def unroll(x, columns, first, last, n0, origin_d, origin_h, origin_w, sd, sh, sw, dd, dh, dw, source_d, source_h,
           source_w, low_w):
    """``columns[c, kd, kh, kw, n, a, b, e] = x_p[n0 + n, c, (origin_d + a)*sd + kd*dd, (origin_h + b)*sh + kh*dh,
    (origin_w + e)*sw + kw*dw]`` (``x_p``: ``x`` padded as the tables say), for jobs ``first:last``.

    A job's rows ``(kw, n, a, b)`` are one contiguous stretch of ``columns``,
    written in order; both arrays are addressed flat, so that a short row
    costs a few integer operations besides its copy.
    """
    channels, depth, height, width = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    kd_size, kh_size, kw_size = columns.shape[1], columns.shape[2], columns.shape[3]
    samples, a_size, b_size, e_size = columns.shape[4], columns.shape[5], columns.shape[6], columns.shape[7]
    flat_x, flat = x.reshape(x.size), columns.reshape(columns.size)
    plane, volume = height * width, depth * height * width
    for job in range(first, last):
        c, kd, kh = job // (kd_size * kh_size), job // kh_size % kd_size, job % kh_size
        position = job * kw_size * samples * a_size * b_size * e_size  # the job's first row
        for kw in range(kw_size):
            offset = origin_w * sw + kw * dw - low_w  # the input column position e = 0 reads, if inside
            # e0:e1, the positions that read inside the input (0 <= offset + e*sw < width)
            e0 = 0 if offset >= 0 else min(e_size, (-offset + sw - 1) // sw)
            e1 = max(e0, 0 if width - 1 - offset < 0 else min(e_size, (width - 1 - offset) // sw + 1))
            for n in range(samples):
                sample = ((n0 + n) * channels + c) * volume
                for a in range(a_size):
                    z = source_d[(origin_d + a) * sd + kd * dd]
                    for b in range(b_size):
                        h = source_h[(origin_h + b) * sh + kh * dh]
                        if z < 0 or h < 0:  # a row of zero padding
                            flat[position:position + e_size] = 0
                            position += e_size
                            continue
                        row = sample + z * plane + h * width  # the input row's first cell in flat_x
                        for e in range(e0):
                            flat[position + e] = _cell(flat_x, row, source_w, (origin_w + e) * sw + kw * dw)
                        # the inside, indexed unsigned (no wraparound test per value, so that the loops vectorize)
                        write, read, count = uint64(position + e0), uint64(row + offset + sw * e0), uint64(e1 - e0)
                        if sw == 1:  # the common strides as constants
                            for i in range(count):
                                flat[write + i] = flat_x[read + i]
                        elif sw == 2:
                            for i in range(count):
                                flat[write + i] = flat_x[read + uint64(2) * i]
                        else:
                            for i in range(count):
                                flat[write + i] = flat_x[read + uint64(sw) * i]
                        for e in range(e1, e_size):
                            flat[position + e] = _cell(flat_x, row, source_w, (origin_w + e) * sw + kw * dw)
                        position += e_size


@njit(cache=True, nogil=True)
def unroll_planes(x, columns, plane, first, last, n0, sd, sh, sw, dd, dh, dw, source_d, source_h, source_w):
    """``columns[c, kd, kh, kw, n, a, b, e] = x_p[n0 + n, c, a*sd + kd*dd, b*sh + kh*dh, e*sw + kw*dw]``, for jobs
    ``first:last``, job ``c*nb + n`` one plane (sample, channel).

    The contract is :func:`unroll`'s with whole planes: ``columns``
    ``(C, KD, KH, KW, nb, A, B, E)`` holds every output position of samples
    ``n0:n0+nb``; ``plane`` is this thread's scratch, ``(len(source_d),
    len(source_h), len(source_w))``, the padded plane, overwritten. Each
    plane is padded into it (the tables say which input cell, or zero, each
    padded cell holds), then every tap's windows are copied out of it.

    Small planes make short loops, and a loop's setup costs more than a few
    copies: so two tables, made once per call, turn each into one loop: the
    input cell (or -1) of every padded cell, and where in the padded plane
    every output position's window starts.
    """
    channels, depth, height, width = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    samples = columns.shape[4]
    kd_size, kh_size, kw_size = columns.shape[1], columns.shape[2], columns.shape[3]
    a_size, b_size, e_size = columns.shape[5], columns.shape[6], columns.shape[7]
    pd, ph, pw = plane.shape[0], plane.shape[1], plane.shape[2]
    flat_x, flat, padded = x.reshape(x.size), columns.reshape(columns.size), plane.reshape(plane.size)
    cells, window = pd * ph * pw, a_size * b_size * e_size
    sources = np.empty(cells, dtype=np.int64)  # per padded cell: its input cell in the plane, -1 for a zero
    for i in range(pd):
        for j in range(ph):
            for k in range(pw):
                z, h, w = source_d[i], source_h[j], source_w[k]
                sources[(i * ph + j) * pw + k] = (z * height + h) * width + w if z >= 0 and h >= 0 and w >= 0 else -1
    starts = window_starts(a_size, b_size, e_size, sd, sh, sw, ph, pw)
    zero = plane.dtype.type(0)
    for job in range(first, last):
        c, n = job // samples, job % samples
        sample = ((n0 + n) * channels + c) * depth * height * width  # the plane's first cell in flat_x
        for cell in range(cells):
            source = sources[cell]
            padded[cell] = flat_x[sample + source] if source >= 0 else zero
        for kd in range(kd_size):
            for kh in range(kh_size):
                for kw in range(kw_size):
                    tap = uint64((kd * dd * ph + kh * dh) * pw + kw * dw)  # the tap's offset in the padded plane
                    position = uint64(((((c * kd_size + kd) * kh_size + kh) * kw_size + kw) * samples + n) * window)
                    for p in range(window):
                        flat[position + uint64(p)] = padded[tap + starts[p]]


@njit(cache=True, nogil=True)
def unroll_batch_inner(x, columns, scratch, first, last, sd, sh, sw, dd, dh, dw, source_d, source_h, source_w):
    """``columns[c, kd, kh, kw, a, b, e, n] = x_p[n, c, a*sd + kd*dd, b*sh + kh*dh, e*sw + kw*dw]`` for the
    channels ``first:last``: :func:`unroll`'s columns with the batch innermost, every sample at once.

    ``columns`` ``(C, KD, KH, KW, A, B, E, N)`` (a product's ``(G, C/G*K, P*N)``
    reshaped); ``scratch`` this thread's ``(PD, PH, PW, N)``, overwritten: the
    channel's padded planes, the samples innermost (the tables say which input
    cell, or zero, each padded cell holds). Each window's tap is then one run of
    ``N`` values in the scratch and in the columns: small images whose rows are
    a few values long copy in runs as long as the batch (the digits CNN's 4x4
    layer: 27 -> 9 us against :func:`unroll_planes`).
    """
    samples, channels = x.shape[0], x.shape[1]
    depth, height, width = x.shape[2], x.shape[3], x.shape[4]
    pd, ph, pw = scratch.shape[0], scratch.shape[1], scratch.shape[2]
    flat_x, flat, padded = x.reshape(x.size), columns.reshape(columns.size), scratch.reshape(scratch.size)
    cells = tap_cells(columns.shape[1:7], sd, sh, sw, dd, dh, dw, ph, pw)
    volume = depth * height * width
    sample_step = uint64(channels * volume)
    zero = scratch.dtype.type(0)
    for c in range(first, last):
        for i in range(pd):
            for j in range(ph):
                for k in range(pw):
                    z, h, w = source_d[i], source_h[j], source_w[k]
                    target = uint64(((i * ph + j) * pw + k) * samples)
                    if z >= 0 and h >= 0 and w >= 0:
                        read = uint64(c * volume + (z * height + h) * width + w)
                        for n in range(samples):
                            padded[target + uint64(n)] = flat_x[read + uint64(n) * sample_step]
                    else:
                        for n in range(samples):
                            padded[target + uint64(n)] = zero
        position = uint64(c * cells.size * samples)
        for cell in cells:  # each tap's windows, the taps in C order
            read = cell * uint64(samples)
            for n in range(samples):
                flat[position + uint64(n)] = padded[read + uint64(n)]
            position += uint64(samples)
