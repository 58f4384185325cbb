"""The compiled unroll: im2col's columns written straight from the input before padding (pad + unroll fused).

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

from numba import njit

__all__ = ["unroll"]


@njit(cache=True, nogil=True, inline="always")
def _cell(row, source_w, padded):
    """The value padded cell ``padded`` of a row holds: the input cell its table names, or zero."""
    column = source_w[padded]
    return row[column] if column >= 0 else row.dtype.type(0)


@njit(cache=True, nogil=True)
def unroll(x, columns, first, last, n0, origin_d, origin_h, origin_w, sd, sh, sw, dd, dh, dw, source_d, source_h,
           source_w, low_w):
    """``columns[c, kd, kh, kw, n, a, b, e] = x_p[n0 + n, c, (origin_d + a)*sd + kd*dd, (origin_h + b)*sh + kh*dh,
    (origin_w + e)*sw + kw*dw]`` (``x_p``: ``x`` padded as the tables say), for jobs ``first:last``."""
    kd_size, kh_size, kw_size = columns.shape[1], columns.shape[2], columns.shape[3]
    samples, a_size, b_size, e_size = columns.shape[4], columns.shape[5], columns.shape[6], columns.shape[7]
    width = x.shape[4]
    for job in range(first, last):
        c, kd, kh = job // (kd_size * kh_size), job // kh_size % kd_size, job % kh_size
        for kw in range(kw_size):
            offset = origin_w * sw + kw * dw - low_w  # the input column position e = 0 reads, if inside
            # e0:e1, the positions that read inside the input (0 <= offset + e*sw < width)
            e0 = 0 if offset >= 0 else min(e_size, (-offset + sw - 1) // sw)
            e1 = max(e0, 0 if width - 1 - offset < 0 else min(e_size, (width - 1 - offset) // sw + 1))
            for n in range(samples):
                for a in range(a_size):
                    z = source_d[(origin_d + a) * sd + kd * dd]
                    for b in range(b_size):
                        h = source_h[(origin_h + b) * sh + kh * dh]
                        target = columns[c, kd, kh, kw, n, a, b]
                        if z < 0 or h < 0:  # a row of zero padding
                            target[:] = 0
                            continue
                        row = x[n0 + n, c, z, h]
                        for e in range(e0):
                            target[e] = _cell(row, source_w, (origin_w + e) * sw + kw * dw)
                        if sw == 1:  # the common strides as constants, so that the copy vectorizes
                            target[e0:e1] = row[offset + e0:offset + e1]
                        elif sw == 2:
                            for e in range(e0, e1):
                                target[e] = row[offset + 2 * e]
                        else:
                            for e in range(e0, e1):
                                target[e] = row[offset + sw * e]
                        for e in range(e1, e_size):
                            target[e] = _cell(row, source_w, (origin_w + e) * sw + kw * dw)
