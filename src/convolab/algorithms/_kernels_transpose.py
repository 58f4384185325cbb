"""The compiled tiled copy: a strided view of a kernel made contiguous for a matrix product.

The input gradient's full correlation runs the forward with the weight's input
and output channels swapped and its taps reversed, a view of the weight
(:func:`convolab._engine._input_grad_full`); a true convolution's kernel is a
reversed view too. gemm multiplies filters as contiguous rows, and NumPy's copy
of such a view walks it one short run of taps at a time, each read and write a
channel's worth of bytes apart. This copy goes tile by tile instead, so that
what a tile reads and writes stays in the first-level cache.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; its wrapper is :func:`._columns.contiguous_filters`.

The contract of :func:`copy_tiles`:

- ``source`` C-contiguous: the weight ``(B, A, K)`` whose view ``out`` copies
  with ``swapped`` (the first two axes exchanged), else ``(A, B, K)``;
  ``reversed_taps``: each run of ``K`` taps read backwards (the spatial axes
  reversed, flattened);
- ``out`` ``(A, B, K)`` C-contiguous and writeable, the same dtype (float32 or
  float64);
- ``first, last``: the tiles of rows (``TILE`` values of ``A`` each) this call
  writes; no other call writes them.

Axis legend: ``A`` the product's rows (filters), ``B`` its channels, ``K`` the
taps of one filter and channel.
"""

from __future__ import annotations

from numba import njit, uint64

from ._kernels_wgrad import SQUARE, _transpose_square  # sixteen by sixteen values transposed in registers

__all__ = ["copy_tiles", "transpose_columns", "TILE"]

#: Rows and channels of a tile: 16 x 16 runs of a 3x3 kernel's taps are 9 KiB of float32 each way.
TILE = 16


@njit(cache=True, nogil=True)
def copy_tiles(source, out, first, last, swapped, reversed_taps):
    """``out[a, b, k] = source[b, a, k']`` (``swapped``; else ``source[a, b, k']``), ``k' = K-1-k`` where
    ``reversed_taps`` (else ``k``), for the rows of tiles ``first:last``, tile by tile.

    Both arrays are addressed flat and unsigned, so that a run of taps costs no
    index checks.
    """
    rows, channels, taps = out.shape
    flat_source, flat = source.reshape(source.size), out.reshape(out.size)
    count = uint64(taps)
    for row0 in range(first * TILE, min(last * TILE, rows), TILE):
        row1 = min(row0 + TILE, rows)
        for channel0 in range(0, channels, TILE):
            channel1 = min(channel0 + TILE, channels)
            for a in range(row0, row1):
                for b in range(channel0, channel1):
                    write = uint64((a * channels + b) * taps)
                    read = uint64(((b * rows + a) if swapped else (a * channels + b)) * taps)
                    if reversed_taps:
                        read += count - uint64(1)
                        for k in range(count):
                            flat[write + k] = flat_source[read - k]
                    else:
                        for k in range(count):
                            flat[write + k] = flat_source[read + k]


@njit(cache=True, nogil=True)
def transpose_columns(source, out, first, last):
    """``out[c, r] = source[r, c]`` for the columns ``c`` of blocks ``first:last`` (:data:`SQUARE` columns each):
    ``source`` ``(R, C)`` and ``out`` ``(C, R)`` C-contiguous, one dtype. Whole squares of sixteen rows by
    sixteen columns go through registers (:func:`._kernels_wgrad._transpose_square`: NumPy's transposing copy
    of a small network's ``(32, 512)`` gradient cost 16-22 us, about 1 ns a value); the rows past the last whole
    square, and a last block narrower than a square, one value at a time."""
    rows, columns = source.shape
    flat_source, flat = source.reshape(source.size), out.reshape(out.size)
    whole_rows = rows - rows % SQUARE
    for block in range(first, last):
        c0 = block * SQUARE
        if c0 + SQUARE <= columns:
            for r0 in range(0, whole_rows, SQUARE):
                _transpose_square(flat_source, r0 * columns + c0, columns, flat, c0 * rows + r0, rows)
            for c in range(c0, c0 + SQUARE):
                for r in range(whole_rows, rows):
                    flat[c * rows + r] = flat_source[r * columns + c]
        else:
            for c in range(c0, columns):
                for r in range(rows):
                    flat[c * rows + r] = flat_source[r * columns + c]
