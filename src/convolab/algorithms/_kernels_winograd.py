"""The compiled transforms of the Winograd algorithm: input tiles to the products' layout, products to the output.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use. The algorithm (:mod:`.winograd`) splits F(m, r) as NNPACK does: the
input transform ``B^T d B`` of every tile (:func:`input_tiles`), one matrix
product per tile position on the BLAS (``(P, O, C) @ (P, C, T)``, in the
caller), and the output transform ``A^T M A`` (:func:`output_tiles`). The two
transforms are the memory-bound loops: each reads its source once and writes
its result once (no padded copy, no transposes), in blocks of tile rows sized by
the caller to stay in cache.

Every step is a sum of long contiguous vectors, so that the loops vectorize
(a tile is 4 or 6 values wide, and a row holds few tiles on small images):

- input: a tile row's input rows (zero-padded as they are copied) are
  combined along the first axes over the whole row; the combined rows are
  split into their ``m`` phases (``phase[r][q] = row[q*m + r]``), so that
  tap ``j`` of every tile of the row is the run ``phase[j % m][j // m:]``;
  once every row of the block is done, the last axis's transform is one
  sum of such runs per tile position, over all the block's tiles at once;
- output: the transform along each axis is a sum of runs over all the
  block's tiles; the results are stored at a stride of ``m`` into the output.

*Wide tile rows*: each tile row has ``TW + 1`` columns (``stride``), the last
one a spare whose runs read into the next row's phase (a tap ``j >= m`` of
the last tile reads ``q = TW``, inside the row). The spare column's values are
garbage that no output reads: the products treat columns independently, and
the output transform stores only the first ``TW`` of each row.

The contract both kernels share (the wrapper in :mod:`.winograd` lays the
arrays out):

- three spatial axes: a lower rank comes as rank 3 with leading unit axes,
  whose tile is 1 wide with the 1x1 identity as its transform;
- every array C-contiguous, native byte order, writeable, one dtype (float32 or float64);
- per axis ``(D, H, W)`` a transform matrix (``bt_*`` ``(a, a)`` for the
  input, ``at_*`` ``(m, a)`` for the output); the last axis is a real one
  (``2 <= m_w``, ``a_w <= 2 m_w``); the tiles per sample ``tiles = (TD, TH, TW)``;
- the source is the input before zero padding: ``lows`` are the zero cells
  added below it on each axis, and a tile reading past its end reads zeros;
- a *tile row* is ``(n, td, th)``, numbered ``(n*TD + td)*TH + th``; a call
  handles the block of tile rows from ``row0``, whose transformed tiles are
  ``(P, C, rows*(TW+1))`` with ``P = a_d*a_h*a_w`` tile positions, column
  ``(row - row0)*(TW+1) + tw``;
- ``first, last``: the channels this call transforms, for every tile row of
  the block (a channel's cells are written by its job alone, so threads never
  share a cell);
- the scratch buffers are the calling thread's own (shapes in each kernel).

Axis legend: N samples, C channels, P tile positions, T tiles; ``(D, H, W)``
the input before padding, ``(OD, OH, OW)`` the output.
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
def _axpy(target, coefficient, source, count):
    """``target[:count] += coefficient * source[:count]``, skipped for a zero coefficient."""
    if coefficient != 0:
        for q in range(count):
            target[q] += coefficient * source[q]


@njit(cache=True, nogil=True, fastmath={"contract"})
def input_tiles(source, transformed, bt_d, bt_h, bt_w, steps, lows, tiles, row0, first, last, rows_in, mixed,
                phases):
    """``transformed[(s*ah + u)*aw + v, c, col] = sum_{k,i,j} bt_d[s,k] bt_h[u,i] bt_w[v,j] * x_p[n, c, td*md + k,
    th*mh + i, tw*mw + j]`` for channels ``first:last`` (``x_p``: the source zero-padded by ``lows`` below and
    without end above; ``col = (row - row0)*(TW+1) + tw``).

    Scratch: ``rows_in`` ``(ad, ah, (TW+1)*mw)``, a tile row's input rows;
    ``mixed`` ``(ah + 1, (TW+1)*mw)``, those combined along the first axis
    (for one index of it), and the last row for one combined along the
    second; ``phases`` ``(ad, ah, mw, cols + 1)``, every tile row of the block
    combined along the first two axes and split into its phases.
    """
    depth, height, width = source.shape[2], source.shape[3], source.shape[4]
    ad, ah, aw = bt_d.shape[0], bt_h.shape[0], bt_w.shape[0]
    md, mh, mw = steps[0], steps[1], steps[2]
    low_d, low_h, low_w = lows[0], lows[1], lows[2]
    stride = tiles[2] + 1
    wide = stride * mw  # a padded row: every tile's reads, and the spare column's
    cols = transformed.shape[2]
    q0 = max(0, low_w)
    q1 = max(q0, min(wide, width + low_w))  # where the input row lands in the padded row
    combined = mixed[ah]
    for c in range(first, last):
        for r in range(cols // stride):
            n, td, th = _tile_row(row0 + r, tiles)
            for k in range(ad):
                z = td * md + k - low_d
                for i in range(ah):
                    h = th * mh + i - low_h
                    target = rows_in[k, i]
                    target[:] = 0
                    if 0 <= z < depth and 0 <= h < height:
                        target[q0:q1] = source[n, c, z, h, q0 - low_w:q1 - low_w]
            for s in range(ad):
                if ad > 1:  # along the first axis (in 2-d and 1-d, the identity: the rows as they are)
                    for i in range(ah):
                        target = mixed[i]
                        target[:] = 0
                        for k in range(ad):
                            _axpy(target, bt_d[s, k], rows_in[k, i], wide)
                for u in range(ah):  # along the second axis, then split into the phases of the last
                    combined[:] = 0
                    for i in range(ah):
                        _axpy(combined, bt_h[u, i], mixed[i] if ad > 1 else rows_in[0, i], wide)
                    for p in range(mw):
                        target = phases[s, u, p, r * stride:(r + 1) * stride]
                        for q in range(stride):
                            target[q] = combined[q * mw + p]
        for s in range(ad):
            for u in range(ah):
                for p in range(mw):
                    phases[s, u, p, cols] = 0  # read by the last spare column only
                for v in range(aw):  # along the last axis: tap j of every tile is a run of phase j % mw
                    target = transformed[(s * ah + u) * aw + v, c]
                    target[:] = 0
                    for j in range(aw):
                        _axpy(target, bt_w[v, j], phases[s, u, j % mw, j // mw:], cols)


@njit(cache=True, nogil=True, fastmath={"contract"})
def output_tiles(products, out, at_d, at_h, at_w, tiles, row0, first, last, along_d, along_h, along_w):
    """``out[n, o, td*md + s, th*mh + u, tw*mw + v] = sum_{k,i,j} at_d[s,k] at_h[u,i] at_w[v,j] *
    products[(k*ah + i)*aw + j, o, col]`` for output channels ``first:last``, the cells past the output's end
    dropped (``col = (row - row0)*(TW+1) + tw``, ``m* = at_*.shape[0]``).

    Scratch: ``along_d`` ``(md, ah, aw, cols)``, ``along_h`` ``(md, mh, aw,
    cols)``, ``along_w`` ``(md, mh, mw, cols)``: the products transformed
    along the first axis, the first two, all three.
    """
    out_d, out_h, out_w = out.shape[2], out.shape[3], out.shape[4]
    md, mh, mw = at_d.shape[0], at_h.shape[0], at_w.shape[0]
    ad, ah, aw = at_d.shape[1], at_h.shape[1], at_w.shape[1]
    stride = tiles[2] + 1
    cols = products.shape[2]
    for o in range(first, last):
        for s in range(md):
            for i in range(ah):
                for j in range(aw):
                    if ad > 1:
                        target = along_d[s, i, j, :cols]
                        target[:] = 0
                        for k in range(ad):
                            _axpy(target, at_d[s, k], products[(k * ah + i) * aw + j, o], cols)
            for u in range(mh):
                for j in range(aw):
                    target = along_h[s, u, j, :cols]
                    target[:] = 0
                    for i in range(ah):
                        if ad > 1:
                            _axpy(target, at_h[u, i], along_d[s, i, j], cols)
                        else:  # the first axis's identity: the products themselves
                            _axpy(target, at_h[u, i], products[i * aw + j, o], cols)
                for v in range(mw):
                    target = along_w[s, u, v, :cols]
                    target[:] = 0
                    for j in range(aw):
                        _axpy(target, at_w[v, j], along_h[s, u, j], cols)
        for r in range(cols // stride):
            n, td, th = _tile_row(row0 + r, tiles)
            for s in range(md):
                z = td * md + s
                if z >= out_d:
                    break
                for u in range(mh):
                    h = th * mh + u
                    if h >= out_h:
                        break
                    row = out[n, o, z, h]
                    for v in range(mw):
                        sums = along_w[s, u, v, r * stride:(r + 1) * stride]
                        for t in range(min(stride - 1, (out_w - v + mw - 1) // mw)):  # tiles whose column is inside
                            row[t * mw + v] = sums[t]
