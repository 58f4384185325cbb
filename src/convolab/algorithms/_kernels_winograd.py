"""The compiled transforms of the Winograd algorithm: input tiles to the products' layout, products to the output.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use. The algorithm (:mod:`.winograd`) splits F(m, r) as NNPACK does: the
input transform ``B^T d B`` of every tile (:func:`input_tiles`), one matrix
product per tile position on the BLAS (``(P, T, C) @ (P, C, O)``, in the
caller), and the output transform ``A^T M A`` (:func:`output_tiles`). The two
transforms are the memory-bound loops: each reads its source once and writes
its result once (no padded copy), in blocks of tile rows sized by the caller to
stay in cache.

Every channel goes through the same transforms, so every step is a sum of
vectors over the channels (tens to hundreds long, contiguous: the loops
vectorize), tiles are laid out channels last: the transformed tiles as
``(P, T, C)``, the products as ``(P, T, O)``. A tile row's input rows are
gathered once into that layout (``band``, zero padding included), and each
output value is stored once, from its channel vector, into the output.

The contract both kernels share (the wrapper in :mod:`.winograd` lays the
arrays out):

- three spatial axes: a lower rank comes as rank 3 with leading unit axes,
  whose tile is 1 wide with the 1x1 identity as its transform;
- every array C-contiguous, native byte order, writeable, one dtype (float32 or float64);
- per axis ``(D, H, W)`` a transform matrix (``bt_*`` ``(a, a)`` for the
  input, ``at_*`` ``(m, a)`` for the output); the tiles per sample
  ``tiles = (TD, TH, TW)``;
- the source is the input before zero padding: ``lows`` are the zero cells
  added below it on each axis, and a tile reading past its end reads zeros;
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

from numba import njit

__all__ = ["input_tiles", "output_tiles"]


@njit(cache=True, nogil=True, inline="always")
def _tile_row(row, tiles):
    """Tile row ``row`` as ``(n, td, th)``."""
    per_sample = tiles[0] * tiles[1]
    return row // per_sample, row % per_sample // tiles[1], row % tiles[1]


@njit(cache=True, nogil=True, inline="always")
def _combine(target, matrix, row, vectors, first, step):
    """``target[:] = sum_j matrix[row, j] * vectors[first + j*step]``, zero coefficients skipped (``vectors``:
    rows of channels, so that every vector is contiguous)."""
    target[:] = 0
    for j in range(matrix.shape[1]):
        coefficient = matrix[row, j]
        if coefficient != 0:
            source = vectors[first + j * step]
            for c in range(target.shape[0]):
                target[c] += coefficient * source[c]


@njit(cache=True, nogil=True, fastmath={"contract"})
def input_tiles(source, transformed, bt_d, bt_h, bt_w, steps, lows, tiles, row0, first, last, band, along_w,
                along_h):
    """``transformed[(s*ah + u)*aw + v, (row - row0)*TW + tw, c] = sum_{k,i,j} bt_d[s,k] bt_h[u,i] bt_w[v,j] *
    x_p[n, c, td*md + k, th*mh + i, tw*mw + j]`` for the tile rows of jobs ``first:last`` (``x_p``: the source
    zero-padded by ``lows`` below and without end above).

    Scratch: ``band`` ``(ad, ah, (TW-1)*mw + aw, C)``, a tile row's input
    rows, channels last; ``along_w`` ``(ad, ah, aw, C)`` and ``along_h``
    ``(ad, ah, aw, C)``, one tile transformed along the last axis, and along
    the last two.
    """
    channels, depth, height, width = source.shape[1], source.shape[2], source.shape[3], source.shape[4]
    ad, ah, aw = bt_d.shape[0], bt_h.shape[0], bt_w.shape[0]
    md, mh, mw = steps[0], steps[1], steps[2]
    low_d, low_h, low_w = lows[0], lows[1], lows[2]
    tw_count, wide = tiles[2], band.shape[2]
    q0, q1 = max(0, low_w), max(max(0, low_w), min(wide, width + low_w))  # where an input row lands in the band
    by_tile_w = along_w.reshape(ad * ah * aw, channels)
    by_tile_h = along_h.reshape(ad * ah * aw, channels)
    positions = transformed.reshape(transformed.shape[0] * transformed.shape[1], channels)
    tile_count = transformed.shape[1]
    for job in range(first, last):
        n, td, th = _tile_row(row0 + job, tiles)
        for k in range(ad):
            z = td * md + k - low_d
            for i in range(ah):
                h = th * mh + i - low_h
                rows = band[k, i]
                rows[:] = 0
                if 0 <= z < depth and 0 <= h < height:
                    for c in range(channels):  # to channels last: each input value read once per band
                        plane_row = source[n, c, z, h]
                        for q in range(q0, q1):
                            rows[q, c] = plane_row[q - low_w]
        for t in range(tw_count):
            column = job * tw_count + t
            for k in range(ad):
                for i in range(ah):
                    for v in range(aw):
                        _combine(along_w[k, i, v], bt_w, v, band[k, i], t * mw, 1)
            for k in range(ad):
                for u in range(ah):
                    for v in range(aw):
                        _combine(along_h[k, u, v], bt_h, u, by_tile_w, k * ah * aw + v, aw)
            for s in range(ad):
                for u in range(ah):
                    for v in range(aw):
                        _combine(positions[((s * ah + u) * aw + v) * tile_count + column], bt_d, s, by_tile_h,
                                 u * aw + v, ah * aw)


@njit(cache=True, nogil=True, fastmath={"contract"})
def output_tiles(products, out, at_d, at_h, at_w, tiles, row0, first, last, along_d, along_h, along_w):
    """``out[n, o, td*md + s, th*mh + u, tw*mw + v] = sum_{k,i,j} at_d[s,k] at_h[u,i] at_w[v,j] *
    products[(k*ah + i)*aw + j, (row - row0)*TW + tw, o]`` for the tile rows of jobs ``first:last``, the cells
    past the output's end dropped (``m* = at_*.shape[0]``).

    Scratch: ``along_d`` ``(md, ah, aw, O)``, ``along_h`` ``(md, mh, aw,
    O)``, ``along_w`` ``(md, mh, mw, O)``: one tile's products transformed
    along the first axis, the first two, all three.
    """
    channels, out_d, out_h, out_w = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    md, mh, mw = at_d.shape[0], at_h.shape[0], at_w.shape[0]
    ad, ah, aw = at_d.shape[1], at_h.shape[1], at_w.shape[1]
    tw_count, tile_count = tiles[2], products.shape[1]
    positions = products.reshape(products.shape[0] * tile_count, channels)
    by_tile_d = along_d.reshape(md * ah * aw, channels)
    by_tile_h = along_h.reshape(md * mh * aw, channels)
    for job in range(first, last):
        n, td, th = _tile_row(row0 + job, tiles)
        for t in range(tw_count):
            column = job * tw_count + t
            for s in range(md):
                for i in range(ah):
                    for j in range(aw):
                        _combine(along_d[s, i, j], at_d, s, positions, (i * aw + j) * tile_count + column,
                                 ah * aw * tile_count)
            for s in range(md):
                for u in range(mh):
                    for j in range(aw):
                        _combine(along_h[s, u, j], at_h, u, by_tile_d, s * ah * aw + j, aw)
                    for v in range(mw):
                        _combine(along_w[s, u, v], at_w, v, by_tile_h, (s * mh + u) * aw, 1)
            for s in range(min(md, out_d - td * md)):
                for u in range(min(mh, out_h - th * mh)):
                    for v in range(min(mw, out_w - t * mw)):
                        values = along_w[s, u, v]
                        for o in range(channels):
                            out[n, o, td * md + s, th * mh + u, t * mw + v] = values[o]
