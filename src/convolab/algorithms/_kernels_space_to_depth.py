"""The compiled space-to-depth copies: one sample's windows as columns, and columns back as its cells.

Where no two windows overlap (every axis's kernel no longer than its stride,
undilated), a window's taps are a block of cells that no other window reads:
unrolling is a copy that moves each cell once (a reshape and a transpose, no
duplication), and its adjoint is the reverse copy (no additions).

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrappers that lay the arrays out are in :mod:`.space_to_depth`.

The contract of :func:`move_windows`:

- three spatial axes: lower ranks come as rank 3 with leading unit axes
  (kernel 1, stride 1 there);
- ``x`` ``(N, C, D, H, W)``: the cells, the input already padded (nobody pads here) or its gradient;
- ``columns`` ``(C, KD, KH, KW, A, B, E)``: sample ``n``'s columns, as the
  product ``(G, C/G*K, A*B*E)`` reads them; window ``(a, b, e)``'s tap
  ``(kd, kh, kw)`` is cell ``(a*sd + kd, b*sh + kh, e*sw + kw)``, with
  ``K* <= s*`` on every axis;
- every array C-contiguous, native byte order, writeable, one dtype (float32
  or float64);
- ``first, last``: the channels this call copies; calls for other channels
  touch none of its cells (the channels could be split among threads).

Copies are exact: no arithmetic, so the columns hold the input's values bit
for bit, and the gradient's cells the columns' (zero where no window reads).

Axis legend: N samples, C channels (all groups), ``K*`` kernel taps,
``(A, B, E)`` output positions, ``(D, H, W)`` the (padded) input; ``s*`` stride.
"""

from __future__ import annotations

from numba import njit, uint64

__all__ = ["move_windows"]


@njit(cache=True, nogil=True, inline="always")
def _split_row(row, targets, kw_size, step, e_size):
    """``targets[kw, e] = row[e*step + kw]`` for ``kw < kw_size``, ``e < e_size``: one input row dealt out
    to its taps' rows. With ``step`` a constant at the call, the strided reads vectorize."""
    for kw in range(kw_size):
        target = targets[kw]
        for e in range(uint64(e_size)):
            target[e] = row[e * step + uint64(kw)]


@njit(cache=True, nogil=True, inline="always")
def _join_row(sources, row, kw_size, step, e_size):
    """``row[e*step + kw] = sources[kw, e]``: the adjoint of :func:`_split_row`."""
    for kw in range(kw_size):
        source = sources[kw]
        for e in range(uint64(e_size)):
            row[e * step + uint64(kw)] = source[e]


@njit(cache=True, nogil=True, inline="always")
def _move_row(row, taps, to_columns, kw_size, step, e_size):
    """One cell row to (``to_columns``) or from its ``KW`` column rows ``taps`` ``(KW, E)``."""
    if to_columns:
        _split_row(row, taps, kw_size, step, e_size)
    else:
        _join_row(taps, row, kw_size, step, e_size)


@njit(cache=True, nogil=True)
def move_windows(x, columns, n, first, last, sd, sh, sw, to_columns, covered):
    """With ``to_columns``, ``columns[c, kd, kh, kw, a, b, e] = x[n, c, a*sd + kd, b*sh + kh, e*sw + kw]``;
    else the reverse, every other cell of sample ``n``'s planes zero (the adjoint: each cell is one window's
    tap or none, so nothing adds), for channels ``first:last``. Each cell row is read (or written) once, in
    order, and dealt out to (or gathered from) the ``KW`` column rows it feeds.

    ``covered``: the windows tile the planes exactly (kernel = stride, no cell left over), so writing the
    cells needs no zeroing first.
    """
    kd_size, kh_size, kw_size = columns.shape[1], columns.shape[2], columns.shape[3]
    a_size, b_size, e_size = columns.shape[4], columns.shape[5], columns.shape[6]
    for c in range(first, last):
        if not (to_columns or covered):
            x[n, c] = 0
        for kd in range(kd_size):
            for a in range(a_size):
                for kh in range(kh_size):
                    for b in range(b_size):
                        row = x[n, c, a * sd + kd, b * sh + kh]
                        taps = columns[c, kd, kh, :, a, b]  # (KW, E)
                        if sw == 2 and kw_size == 2:  # U-Net's 2x2 stride 2 as constants
                            _move_row(row, taps, to_columns, 2, uint64(2), e_size)
                        elif sw == 2:
                            _move_row(row, taps, to_columns, kw_size, uint64(2), e_size)
                        else:
                            _move_row(row, taps, to_columns, kw_size, uint64(sw), e_size)
