"""The compiled transforms of the Winograd algorithm: input tiles to the products' layout, products to the output.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use. The algorithm (:mod:`.winograd`) splits F(m, r) as NNPACK does: the
input transform ``B^T d B`` of every tile (``input_tiles``), one matrix
product per tile position on the BLAS (``(P, T, C) @ (P, C, O)``, in the
caller), and the output transform ``A^T M A`` (``output_tiles``). The two
transforms are the memory-bound loops: each reads its source once and writes
its result once (no padded copy), in blocks of tile rows sized by the caller to
stay in cache.

Every channel goes through the same transforms, so every step is a sum of
vectors over the channels (tens to hundreds long, contiguous: the loops
vectorize), tiles laid out channels last: the transformed tiles as ``(P, T,
C)``, the products as ``(P, T, O)``. Each output value is
stored once, from its channel vector, into the output. The caller lays the
input out channels last (``(N, D, H, W, C)``, zero-padded to whole tiles) in
one NumPy copy per block of samples, which transposes faster than a gather.

The transforms' matrices and tile sizes are compile-time constants of each
kernel (:func:`transforms` makes the kernels of one tile size, rank and
dtype, from the generated matrices): the loops over a tile's taps unroll and
the zero coefficients drop out (about a third of ``B^T``'s). Without that,
the loops could not keep the coefficients in registers (a store to the
output may, for all the compiler knows, change them) and ran 3x slower.

The contract both kernels share (the wrapper in :mod:`.winograd` lays the
arrays out):

- three spatial axes: a lower rank comes as rank 3 with leading unit axes,
  whose tile is 1 wide with the identity as its transform (no pass);
- every array C-contiguous, native byte order, writeable, the kernels' dtype;
- the tiles per sample ``tiles = (TD, TH, TW)``;
- a *tile row* is ``(n, td, th)``, numbered ``(n*TD + td)*TH + th``; a call
  handles tile rows ``row0 + first : row0 + last`` of the block that starts
  at ``row0``, whose tiles are numbered ``(row - row0)*TW + tw``;
- each tile row's cells are written by its job alone, so threads never share
  a cell; the scratch buffers are the calling thread's own.

Axis legend: N samples, C input channels, O output channels, P tile
positions, T tiles; ``(D, H, W)`` the input before padding, ``(OD, OH, OW)``
the output.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from numba import njit

from .winograd import winograd_matrices

__all__ = ["transforms"]


@njit(cache=True, nogil=True, inline="always")
def _tile_row(row, tiles):
    """Tile row ``row`` as ``(n, td, th)``."""
    per_sample = tiles[0] * tiles[1]
    return row // per_sample, row % per_sample // tiles[1], row % tiles[1]


@lru_cache(maxsize=None)
def transforms(m: int, rank: int, dtype: str) -> tuple[Callable, Callable]:
    """``(input_tiles, output_tiles)`` for F(m, 3) over ``rank`` axes in ``dtype`` ("float32" or "float64").

    Their matrices are the generated ones (:func:`.winograd.winograd_matrices`),
    rounded to ``dtype`` and bound as constants; missing leading axes are 1
    wide and skipped.
    """
    scalar = np.dtype(dtype).type
    a_t, _, b_t = winograd_matrices(m, 3)
    BT = tuple(tuple(scalar(value) for value in row) for row in b_t)  # noqa: N806 - the matrices' names
    AT = tuple(tuple(scalar(value) for value in row) for row in a_t)  # noqa: N806
    A = m + 2  # noqa: N806 - tile width and height, constants of the kernels
    AD, AH, MD, MH = (A if rank == 3 else 1), (A if rank >= 2 else 1), (m if rank == 3 else 1), (m if rank >= 2 else 1)  # noqa: N806,E501
    ZERO = scalar(0)  # noqa: N806

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def input_tiles(padded, transformed, tiles, row0, first, last, along_w, along_h):
        """``transformed[(s*AH + u)*A + v, (row - row0)*TW + tw, c] = sum_{k,i,j} BT[s][k] BT[u][i] BT[v][j] *
        padded[n, td*m + k, th*m + i, tw*m + j, c]`` (a missing axis: no sum) for the tile rows of jobs
        ``first:last``, ``padded`` the padded input channels last ``(N, D, H, W, C)``, large enough for
        every tile (zeros past the padded input).

        Scratch: ``along_w`` and ``along_h`` ``(AD, AH, A, C)``, one tile
        transformed along the last axis, and along the last two.
        """
        channels, tw_count = padded.shape[4], tiles[2]
        for job in range(first, last):
            n, td, th = _tile_row(row0 + job, tiles)
            for t in range(tw_count):
                column = job * tw_count + t
                for k in range(AD):
                    for i in range(AH):
                        window = padded[n, td * m + k if AD > 1 else 0, th * m + i if AH > 1 else 0,
                                        t * m:t * m + A]  # (A, C)
                        for v in range(A):
                            target = along_w[k, i, v]
                            for c in range(channels):
                                total = ZERO
                                for j in range(A):
                                    total += BT[v][j] * window[j, c]
                                target[c] = total
                for k in range(AD):
                    for u in range(AH):
                        for v in range(A):
                            target = along_h[k, u, v] if AD > 1 else transformed[u * A + v, column]
                            if AH > 1:
                                for c in range(channels):
                                    total = ZERO
                                    for i in range(AH):
                                        total += BT[u][i] * along_w[k, i, v, c]
                                    target[c] = total
                            else:
                                target[:] = along_w[k, u, v]
                if AD > 1:
                    for s in range(AD):
                        for u in range(AH):
                            for v in range(A):
                                target = transformed[(s * AH + u) * A + v, column]
                                for c in range(channels):
                                    total = ZERO
                                    for k in range(AD):
                                        total += BT[s][k] * along_h[k, u, v, c]
                                    target[c] = total

    @njit(cache=True, nogil=True, fastmath={"contract"})
    def output_tiles(products, out, tiles, row0, first, last, along_d, along_h, along_w):
        """``out[n, o, td*m + s, th*m + u, tw*m + v] = sum_{k,i,j} AT[s][k] AT[u][i] AT[v][j] *
        products[(k*AH + i)*A + j, (row - row0)*TW + tw, o]`` (a missing axis: no sum) for the tile rows of jobs
        ``first:last``, the cells past the output's end dropped.

        Scratch: ``along_d`` ``(MD, AH, A, O)``, ``along_h`` ``(MD, MH, A,
        O)``, ``along_w`` ``(MD, MH, m, O)``: one tile's products transformed
        along the first axis, the first two, all three.
        """
        channels, out_d, out_h, out_w = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
        tw_count = tiles[2]
        for job in range(first, last):
            n, td, th = _tile_row(row0 + job, tiles)
            for t in range(tw_count):
                column = job * tw_count + t
                if AD > 1:
                    for s in range(MD):
                        for i in range(AH):
                            for j in range(A):
                                target = along_d[s, i, j]
                                for c in range(channels):
                                    total = ZERO
                                    for k in range(AD):
                                        total += AT[s][k] * products[(k * AH + i) * A + j, column, c]
                                    target[c] = total
                for s in range(MD):
                    for u in range(MH):
                        for j in range(A):
                            target = along_h[s, u, j]
                            if AH > 1:
                                for c in range(channels):
                                    total = ZERO
                                    for i in range(AH):
                                        if AD > 1:
                                            total += AT[u][i] * along_d[s, i, j, c]
                                        else:
                                            total += AT[u][i] * products[i * A + j, column, c]
                                    target[c] = total
                            elif AD > 1:
                                target[:] = along_d[s, 0, j]
                            else:
                                target[:] = products[j, column]
                        for v in range(m):
                            target = along_w[s, u, v]
                            for c in range(channels):
                                total = ZERO
                                for j in range(A):
                                    total += AT[v][j] * along_h[s, u, j, c]
                                target[c] = total
                for s in range(min(MD, out_d - td * MD)):
                    for u in range(min(MH, out_h - th * MH)):
                        for v in range(min(m, out_w - t * m)):
                            values = along_w[s, u, v]
                            for o in range(channels):
                                out[n, o, td * MD + s, th * MH + u, t * m + v] = values[o]

    return input_tiles, output_tiles
