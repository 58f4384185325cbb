"""The tile products of the fused Winograd forward: one thread's block of transformed tiles times the filters.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use. :func:`.winograd.fused_winograd_conv` runs the whole Winograd
forward on the library's thread pool, one block of tiles per job: the input
transform of :mod:`._kernels_winograd` into the thread's own scratch, the
products here into its second scratch, the output transform straight into the
output. No step calls the BLAS, whose worker threads, spinning after each
product, took the cores from the transforms' threads (ResNet-18's 56x56
layer: 11.3 ms with the transforms on one thread and the BLAS on two, 13.5 ms
with both on two).

Per tile position the products are ``(T, C) @ (C, O)``: each of the block's
``T`` tiles has a channel vector of transformed inputs, and each position its
``(C, O)`` transformed filters. The sums are held in registers as a tile of
:data:`~._kernels_tiled.LANES` output channels (two float32 vectors of 512
bits, four float64 ones) by :data:`TILES_WIDE` tiles (:data:`TILES_NARROW`
for float64): per input channel the loop loads one run of filters, broadcasts
each tile's input value and does ``LANES x tiles`` multiply-adds, and each sum
is stored once, after its last channel (the approach of :mod:`._kernels_tiled`,
with the filters as the loaded run and the inputs broadcast).

The contract of :func:`tile_products` (the wrapper lays the arrays out):

- every array flat, C-contiguous, native byte order, writeable, of one dtype
  (float32 or float64);
- ``inputs`` ``(P, T, W_in)``: the block's transformed tiles, its group's
  channels at ``in_offset : in_offset + C``; the first ``tiles`` of each
  position are computed, a multiple of the tile count (tiles past the
  block's are computed from whatever their rows hold and never read);
- ``filters`` ``(P, C, O)`` of one group, followed by at least ``LANES``
  readable values (a last run of fewer than ``LANES`` filters reads past its
  row; those lanes are computed and dropped);
- ``products`` ``(P, T, W_out)``: the sums go to ``out_offset : out_offset + O``.

Each sum adds its ``C`` terms in channel order, one multiply-add at a time
(rounded once each with ``contract``): the terms of the BLAS's product, in
another order. Its inputs mix only within a tile (the transforms do), as in
the unfused path.

:func:`panel_products` computes the same sums from filters laid out in
panels, ``(P, R, C, LANES)`` (``R = ceil(O / LANES)``, the lanes past the
last filter zeros, nothing read past the end): each ``(C, LANES)`` run is one
contiguous stream, taken against every group of tiles in turn, where a run of
``(P, C, O)`` filters is ``C`` pieces ``4 O`` bytes apart, which the caches'
prefetchers lose at every page (512 channels, float32: 1.3-1.6x slower on
128-256 tiles).

Axis legend: P tile positions, T tiles of the block, C input channels, O
output channels of one group, R panels of LANES output channels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels_tiled import LANES, _add_4, _stack_run

__all__ = ["tile_products", "panel_products", "TILES_WIDE", "TILES_NARROW"]

#: Tiles whose sums a register tile holds: eight for float32 (sixteen 512-bit sums of the 32 registers), four for
#: float64 (sixteen too).
TILES_WIDE, TILES_NARROW = 8, 4


@njit(cache=True, nogil=True, inline="always")
def _zeros(kind):
    """A run of :data:`LANES` zeros of dtype ``kind`` on the stack."""
    run = _stack_run(kind)
    for m in range(LANES):
        run[m] = 0
    return run


@njit(cache=True, nogil=True, inline="always")
def _store_4(s0, s1, s2, s3, products, at, step, valid):
    """``products[at + k*step : ... + valid] = s_k[:valid]``, k < 4 (``products`` flat). Whole runs in one loop
    over the lanes, which LLVM writes as whole vectors (a loop per run, or a slice's, it unrolled into one store
    per value)."""
    if valid == LANES:
        for m in range(LANES):
            products[at + np.uint64(m)] = s0[m]
            products[at + step + np.uint64(m)] = s1[m]
            products[at + np.uint64(2) * step + np.uint64(m)] = s2[m]
            products[at + np.uint64(3) * step + np.uint64(m)] = s3[m]
    else:
        for m in range(valid):
            products[at + np.uint64(m)] = s0[m]
            products[at + step + np.uint64(m)] = s1[m]
            products[at + np.uint64(2) * step + np.uint64(m)] = s2[m]
            products[at + np.uint64(3) * step + np.uint64(m)] = s3[m]


@njit(cache=True, nogil=True, inline="always")
def _register_tile(inputs, filters, products, i_first, step, w_first, w_step, at, o_step, valid, channels,
                   tile_count):
    """One register tile: the sums of ``tile_count`` tiles (their channel vectors ``step`` apart from ``i_first``)
    times one run of :data:`LANES` filters (``w_step`` apart per channel from ``w_first``), over ``channels``,
    each stored once at ``at`` (``o_step`` apart per tile, ``valid`` lanes). Indices unsigned, arrays flat."""
    kind = inputs.dtype
    if tile_count == TILES_WIDE:
        s0, s1, s2, s3 = _zeros(kind), _zeros(kind), _zeros(kind), _zeros(kind)
        s4, s5, s6, s7 = _zeros(kind), _zeros(kind), _zeros(kind), _zeros(kind)
        for c in range(np.uint64(channels)):
            # eight tiles' inputs times one run of filters: LLVM loads the run once for both calls
            i_at, w_at = i_first + c, w_first + c * w_step
            _add_4(s0, s1, s2, s3, inputs[i_at], inputs[i_at + step], inputs[i_at + np.uint64(2) * step],
                   inputs[i_at + np.uint64(3) * step], filters, w_at)
            _add_4(s4, s5, s6, s7, inputs[i_at + np.uint64(4) * step], inputs[i_at + np.uint64(5) * step],
                   inputs[i_at + np.uint64(6) * step], inputs[i_at + np.uint64(7) * step], filters, w_at)
        _store_4(s4, s5, s6, s7, products, at + np.uint64(4) * o_step, o_step, valid)
    else:
        s0, s1, s2, s3 = _zeros(kind), _zeros(kind), _zeros(kind), _zeros(kind)
        for c in range(np.uint64(channels)):
            i_at = i_first + c
            _add_4(s0, s1, s2, s3, inputs[i_at], inputs[i_at + step], inputs[i_at + np.uint64(2) * step],
                   inputs[i_at + np.uint64(3) * step], filters, w_first + c * w_step)
    _store_4(s0, s1, s2, s3, products, at, o_step, valid)


@njit(cache=True, nogil=True, fastmath={"contract"}, _nrt=False)
def tile_products(inputs, filters, products, positions, tiles, channels, out_channels, in_width, in_offset,
                  out_width, out_offset, tile_count, block_tiles):
    """``products[p, t, out_offset + o] = sum_c inputs[p, t, in_offset + c] * filters[p, c, o]`` for every
    position ``p < positions``, tile ``t < tiles`` and filter ``o < out_channels`` (the module's contract),
    ``tile_count`` (:data:`TILES_WIDE` or :data:`TILES_NARROW`, a divisor of ``tiles``) tiles' runs at a time;
    ``block_tiles`` is ``T``, the tiles of the layout.

    Per position, each run of :data:`LANES` filters is taken against every
    group of tiles in turn, so the ``(C, LANES)`` filters it reads stay in
    the L1 cache while the tiles' inputs stream through.
    """
    step, o_step = np.uint64(in_width), np.uint64(out_width)
    for p in range(positions):
        for t0 in range(0, tiles, tile_count):
            for o0 in range(0, out_channels, LANES):
                w_first = np.uint64((p * channels) * out_channels + o0)
                i_first = np.uint64((p * block_tiles + t0) * in_width + in_offset)
                at = np.uint64((p * block_tiles + t0) * out_width + out_offset + o0)
                _register_tile(inputs, filters, products, i_first, step, w_first, np.uint64(out_channels), at,
                               o_step, min(LANES, out_channels - o0), channels, tile_count)


@njit(cache=True, nogil=True, fastmath={"contract"}, _nrt=False)
def panel_products(inputs, panels, products, positions, tiles, channels, out_channels, in_width, in_offset,
                   out_width, out_offset, tile_count, block_tiles):
    """:func:`tile_products`' sums, its contract but for the filters: ``panels`` ``(P, R, C, LANES)`` of one
    group, ``panels[p, o // LANES, c, o % LANES]`` the filter ``o``'s value, the lanes past ``O`` zeros.

    Per position, each panel is taken against every group of ``tile_count``
    tiles in turn: its ``(C, LANES)`` run, read front to back, stays in the
    L1 or L2 cache while the tiles' inputs stream through.
    """
    step, o_step, runs = np.uint64(in_width), np.uint64(out_width), (out_channels + LANES - 1) // LANES
    for p in range(positions):
        for run in range(runs):
            o0 = run * LANES
            w_first = np.uint64((p * runs + run) * channels * LANES)
            for t0 in range(0, tiles, tile_count):
                i_first = np.uint64((p * block_tiles + t0) * in_width + in_offset)
                at = np.uint64((p * block_tiles + t0) * out_width + out_offset + o0)
                _register_tile(inputs, panels, products, i_first, step, w_first, np.uint64(LANES), at, o_step,
                               min(LANES, out_channels - o0), channels, tile_count)
