"""The "packed" forward: per job, one block of output positions' columns packed into the thread's scratch, then
multiplied by the filters in registers, with no BLAS.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrapper that sizes the blocks and shares the jobs among threads
is :mod:`.packed`.

A job is one group and a block of ``T`` consecutive output positions of one
sample (the output's axes flattened, so a block may start or end mid-row), or,
where a sample's positions are too few for whole runs of :data:`LANES` (7x7 and
14x14 outputs), of all samples one after another, so that a panel spans
samples and computes no lanes it drops (a run of sums that reaches into the
next sample stores those lanes in that sample's plane).
Chunk by chunk of input channels, it packs the block's columns ``col[k, t]``
(``k``: input channel and tap) into its scratch as panels of :data:`LANES`
positions (:func:`pack`: the zero padding, stride and dilation done as it
copies), then adds ``sum_k w[g*O + o, k] * col[k, t]`` into the output with
register tiles (:func:`tile_sums`), which store their sums
straight into the output's rows: no transposing copy, no product's result
moved. The tiles are :func:`._kernels_winograd_fused.tile_products`' (the
filters' rows broadcast, a run of the panel loaded) with one difference: a
chunk after the first resumes from the sums the one before stored, which that
function, storing fresh sums, does not do. A chunk's panels (at most
:data:`~.packed.CHUNK_ROWS` rows by ``T``) are sized by the wrapper to stay in
the core's L2 cache while every tile of output channels reads them.

The contract of :func:`forward`:

- three spatial axes: lower ranks come as rank 3 with leading unit axes;
- ``x`` ``(N, G*C, D, H, W)``: the input *before* its zero padding, whose low
  sides are ``low_d, low_h, low_w`` (the high sides: whatever the windows
  reach past the input reads zero);
- ``weights`` ``(G*O, K)`` with ``K = C*KD*KH*KW``, taps in C order;
- ``out`` flat: ``(N, G*O, A, B, E)``, written where the jobs say;
- ``col``: the thread's scratch, at least ``chunk * KD*KH*KW * block +
  LANES`` values (one chunk's panels; a last panel of fewer than ``LANES``
  positions is read as whole runs, past its end: those lanes are computed and
  dropped);
- every array C-contiguous, native byte order, writeable, of one dtype
  (float32 or float64); ``first, last``: the jobs this call computes.

Each sum adds its ``K`` terms in (channel, tap) order, one multiply-add at a
time (rounded once each with ``contract``): the direct sum's terms, padding's
zeros included (left out only where every weight is finite), so an inf or NaN
reaches exactly the outputs the direct sum gives it.

Axis legend: N samples, G groups, C input channels and O output channels of
one group, K = C x taps, T positions of one block; ``(A, B, E)`` the output,
``(D, H, W)`` the input; ``s*`` stride, ``d*`` dilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from ._kernels_moves import copy_run
from ._kernels_tiled import LANES, _add_4, _stack_run, wide_vectors
from ._kernels_winograd_fused import TILES_NARROW, TILES_WIDE

__all__ = ["forward", "live_taps", "pack", "tile_sums"]


@njit(cache=True, nogil=True, inline="always")
def _zero(col, to, count):
    """``col[to:to + count] = 0`` (``to`` unsigned: no test per value for a negative index)."""
    for i in range(uint64(count)):
        col[to + i] = 0


@njit(cache=True, nogil=True)
def pack(x, col, channel0, channels, p0, p1, kernel3, out3, sd, sh, sw, dd, dh, dw, low_d, low_h, low_w):
    """The block of positions ``p0:p1`` packed as panels: ``col[(t // LANES) * K * LANES + k * width + t % LANES] =
    x_p[n, channel0 + c, a*sd + kd*dd, b*sh + kh*dh, e*sw + kw*dw]`` for ``k = ((c*KD + kd)*KH + kh)*KW + kw`` and
    the ``t``-th position ``(n, a, b, e)`` of the block (``x_p``: ``x`` zero-padded; ``width`` :data:`LANES`, or
    in the last panel the positions left); ``kernel3`` ``(KD, KH, KW)``, ``out3`` ``(A, B, E)``; positions
    count the samples' ``(A, B, E)`` one after another, so a block may span samples.

    Per (channel, kd, kh) the block is walked one output row (or the part of
    it in one panel) at a time, and each tap along the row copies its part:
    zeros where the window lies in the padding, a strided copy inside.
    """
    depth, height, width = x.shape[2], x.shape[3], x.shape[4]
    kd_size, kh_size, kw_size = kernel3
    b_size, e_size = out3[1], out3[2]
    flat_x, count = x.reshape(x.size), p1 - p0
    taps = channels * kd_size * kh_size * kw_size
    full = count // LANES * LANES  # positions in whole panels; the rest make the last, narrower one
    wide_vectors(col)
    a_size, sample = out3[0], out3[0] * b_size * e_size
    n_first, a_first = p0 // sample, p0 % sample // (b_size * e_size)  # where p0 lies
    b_first, e_first = p0 // e_size % b_size, p0 % e_size
    # per tap along the row: e_lo:e_hi, the positions whose reads lie inside the row (0 <= offset + e*sw < width)
    e_lo, e_hi = np.empty(kw_size, dtype=np.int64), np.empty(kw_size, dtype=np.int64)
    for kw in range(kw_size):
        offset = kw * dw - low_w  # the input column position e = 0 reads
        e_lo[kw] = 0 if offset >= 0 else min(e_size, (-offset + sw - 1) // sw)
        e_hi[kw] = max(e_lo[kw], 0 if width - 1 - offset < 0 else min(e_size, (width - 1 - offset) // sw + 1))
    k = 0  # the row of the first tap along the row (kw = 0)
    for c in range(channels):
        for kd in range(kd_size):
            for kh in range(kh_size):
                n, a, b, e, t = n_first, a_first, b_first, e_first, 0
                while t < count:
                    # this output row's positions in the block, within one panel, for every tap along the row
                    if t < full:
                        length = min(count - t, e_size - e, LANES - t % LANES)
                        write, step = t // LANES * taps * LANES + k * LANES + t % LANES, LANES
                    else:
                        length = min(count - t, e_size - e)
                        write, step = full * taps + k * (count - full) + t - full, count - full
                    z, h = a * sd + kd * dd - low_d, b * sh + kh * dh - low_h
                    if z < 0 or z >= depth or h < 0 or h >= height:  # a row of zero padding
                        for kw in range(kw_size):
                            _zero(col, uint64(write + kw * step), length)
                    else:
                        plane = ((n * x.shape[1]) + channel0 + c) * depth * height * width
                        row = plane + (z * height + h) * width - low_w
                        for kw in range(kw_size):
                            lo = min(max(e, e_lo[kw]), e + length)
                            hi = max(min(e + length, e_hi[kw]), lo)
                            at = write + kw * step - e
                            _zero(col, uint64(at + e), lo - e)
                            # the inside, indexed unsigned (no wraparound test per value: the loops vectorize)
                            copy_run(col, uint64(at + lo), flat_x, uint64(row + kw * dw + lo * sw), hi - lo, sw)
                            _zero(col, uint64(at + hi), e + length - hi)
                    t += length
                    e += length
                    if e == e_size:
                        e, b = 0, b + 1
                        if b == b_size:
                            a, b = a + 1, 0
                            if a == a_size:
                                n, a = n + 1, 0
                k += kw_size


@njit(cache=True, nogil=True, inline="always")
def _resume(kind, out, at, valid, resume, offset, positions, jump):
    """A run of :data:`LANES` sums of dtype ``kind`` on the stack: the ``valid`` sums an earlier block of channels
    left in the flat ``out`` where ``resume``, else (and past ``valid``) zeros. Lane ``m`` is at ``at + m``, and
    ``jump`` further for every sample it has passed into (the run's first position is ``offset`` into a sample
    of ``positions``)."""
    run = _stack_run(kind)
    split = positions - offset  # the lanes left in the run's first sample
    if resume and valid == LANES and split >= LANES:  # one loop, which LLVM writes as vectors
        for m in range(LANES):
            run[m] = out[at + np.uint64(m)]
    elif resume and valid == LANES and positions >= LANES:  # into the next sample only: one loop per sample
        for m in range(LANES):
            if m < split:
                run[m] = out[at + np.uint64(m)]
        for m in range(LANES):
            if m >= split:
                run[m] = out[at + np.uint64(jump) + np.uint64(m)]
    else:
        for m in range(LANES):
            run[m] = 0
        if resume:
            read, position = at, offset
            for m in range(valid):
                run[m] = out[read]
                read, position = read + np.uint64(1), position + 1
                if position == positions:  # the next sample's plane of this channel
                    read, position = read + np.uint64(jump), 0
    return run


@njit(cache=True, nogil=True, inline="always")
def _keep(run, out, at, valid, offset, positions, jump):
    """``run[:valid]`` stored into the flat ``out`` where :func:`_resume` reads it; a whole run within one sample
    as vectors."""
    split = positions - offset
    if valid == LANES and split >= LANES:
        for m in range(LANES):
            out[at + np.uint64(m)] = run[m]
    elif valid == LANES and positions >= LANES:
        for m in range(LANES):
            if m < split:
                out[at + np.uint64(m)] = run[m]
        for m in range(LANES):
            if m >= split:
                out[at + np.uint64(jump) + np.uint64(m)] = run[m]
    else:
        write, position = at, offset
        for m in range(valid):
            out[write] = run[m]
            write, position = write + np.uint64(1), position + 1
            if position == positions:
                write, position = write + np.uint64(jump), 0


@njit(cache=True, nogil=True, fastmath={"contract"}, _nrt=False)
def tile_sums(weights, w_at, row_step, panel, panel_at, width, runs, run_step, count, out, o_at, out_step, rows,
              resume, offset, positions, jump):
    """``out[o_at + r*out_step + m + jump*((offset + m) // positions)] (+)= sum_{i < runs, k < count}
    weights[w_at + r*row_step + i*run_step + k] * panel[panel_at + (i*run_step + k)*width + m]`` for ``r < rows``
    (:data:`~._kernels_winograd_fused.TILES_WIDE` or :data:`~._kernels_winograd_fused.TILES_NARROW`) and ``m <
    width``, added to what ``out`` holds where ``resume``: one register tile of ``rows`` channels by
    :data:`LANES` positions (a panel narrower than that is read past its end; those lanes are dropped). Every
    array flat; the sums in ``(i, k)`` order, one multiply-add at a time. A chunk's rows are one run (``runs``
    1, ``count`` its rows), or per channel the run of taps that read inside the input (``runs`` its channels,
    ``run_step`` the taps of one). A run whose positions reach into the next samples (blocks that span samples:
    its first is ``offset`` into a sample of ``positions``) stores those lanes ``jump`` further per sample
    passed: that sample's plane of the same channel."""
    kind, step = panel.dtype, np.uint64(row_step)
    w_first, p_first, o_first = np.uint64(w_at), np.uint64(panel_at), np.uint64(o_at)
    o_step = np.uint64(out_step)
    s0 = _resume(kind, out, o_first, width, resume, offset, positions, jump)
    s1 = _resume(kind, out, o_first + o_step, width, resume, offset, positions, jump)
    s2 = _resume(kind, out, o_first + np.uint64(2) * o_step, width, resume, offset, positions, jump)
    s3 = _resume(kind, out, o_first + np.uint64(3) * o_step, width, resume, offset, positions, jump)
    if rows == TILES_WIDE:
        s4 = _resume(kind, out, o_first + np.uint64(4) * o_step, width, resume, offset, positions, jump)
        s5 = _resume(kind, out, o_first + np.uint64(5) * o_step, width, resume, offset, positions, jump)
        s6 = _resume(kind, out, o_first + np.uint64(6) * o_step, width, resume, offset, positions, jump)
        s7 = _resume(kind, out, o_first + np.uint64(7) * o_step, width, resume, offset, positions, jump)
        for i in range(np.uint64(runs)):
            run = i * np.uint64(run_step)
            for k in range(run, run + np.uint64(count)):
                # eight channels' weights times one run of the panel: LLVM loads the run once for both calls
                w, at = w_first + k, p_first + k * np.uint64(width)
                _add_4(s0, s1, s2, s3, weights[w], weights[w + step], weights[w + np.uint64(2) * step],
                       weights[w + np.uint64(3) * step], panel, at)
                _add_4(s4, s5, s6, s7, weights[w + np.uint64(4) * step], weights[w + np.uint64(5) * step],
                       weights[w + np.uint64(6) * step], weights[w + np.uint64(7) * step], panel, at)
        _keep(s4, out, o_first + np.uint64(4) * o_step, width, offset, positions, jump)
        _keep(s5, out, o_first + np.uint64(5) * o_step, width, offset, positions, jump)
        _keep(s6, out, o_first + np.uint64(6) * o_step, width, offset, positions, jump)
        _keep(s7, out, o_first + np.uint64(7) * o_step, width, offset, positions, jump)
    else:
        for i in range(np.uint64(runs)):
            run = i * np.uint64(run_step)
            for k in range(run, run + np.uint64(count)):
                w = w_first + k
                _add_4(s0, s1, s2, s3, weights[w], weights[w + step], weights[w + np.uint64(2) * step],
                       weights[w + np.uint64(3) * step], panel, p_first + k * np.uint64(width))
    _keep(s0, out, o_first, width, offset, positions, jump)
    _keep(s1, out, o_first + o_step, width, offset, positions, jump)
    _keep(s2, out, o_first + np.uint64(2) * o_step, width, offset, positions, jump)
    _keep(s3, out, o_first + np.uint64(3) * o_step, width, offset, positions, jump)


@njit(cache=True, nogil=True)
def live_taps(r0, r1, out3, kernel3, depth, height, sd, sh, dd, dh, low_d, low_h):
    """The taps ``tap_lo:tap_hi`` (in C order) that a panel of positions ``r0:r1`` (the samples' positions one
    after another) needs: from the first leading tap ``(kd, kh)`` whose row lies inside the input for one of the
    panel's output rows to the last, with every tap along the row (``(0, 0)`` where every row of every tap lies
    in the padding). Outside that range each of its rows reads zero padding only."""
    kd_size, kh_size, kw_size = kernel3
    a_size, b_size, e_size = out3
    first, last = kd_size * kh_size, -1
    for q in range(r0 // e_size, (r1 - 1) // e_size + 1):  # the output rows (n, a, b) the panel touches
        a, b = q // b_size % a_size, q % b_size
        for kd in range(kd_size):
            z = a * sd + kd * dd - low_d
            if 0 <= z < depth:
                for kh in range(kh_size):
                    h = b * sh + kh * dh - low_h
                    if 0 <= h < height:
                        first, last = min(first, kd * kh_size + kh), max(last, kd * kh_size + kh)
    if last < first:
        return 0, 0
    return first * kw_size, (last + 1) * kw_size


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward(x, weights, out, out3, col, first, last, groups, spans, blocks, chunk, kernel3, sd, sh, sw, dd, dh, dw,
            low_d, low_h, low_w, skip):
    """The convolution of jobs ``first:last`` (the module's contract, but ``out`` flat): where ``spans``, job
    ``g*blocks + b`` computes block ``b`` of group ``g``'s positions of every sample, one after another; else
    job ``(n*G + g)*blocks + b`` block ``b`` of sample ``n``'s positions; ``out`` is ``(N, G*O, A, B, E)``
    either way. The blocks split the runs of :data:`LANES` positions evenly
    (a block ``b`` starts at run ``b * runs // blocks``); ``kernel3`` ``(KD, KH, KW)``, ``out3`` ``(A, B, E)``.

    The group's input channels go ``chunk`` at a time: their columns packed
    as panels (:func:`pack`), then each tile of output channels
    (:data:`~._kernels_winograd_fused.TILES_WIDE` at a time in float32, then
    :data:`~._kernels_winograd_fused.TILES_NARROW`) takes every panel in turn
    (:func:`tile_sums`) while its filters' rows for the chunk stay in the L1
    cache, adding to the sums the chunks before stored in the output. The
    last ``O mod 4`` channels, too few for a tile, are summed one filter row
    at a time.

    Where ``skip`` (the wrapper's promise that every weight is finite), a
    tile leaves out of a panel's sums the leading taps whose rows lie in the
    padding for all of its positions (:func:`live_taps`: ASPP's dilation 6
    on 33x33 rows, 12% of the terms): zeros times finite weights add
    nothing. Otherwise every term is summed, as the direct sum does (an inf
    weight times a padding zero is NaN).
    """
    out_channels, taps = weights.shape[0] // groups, weights.shape[1]
    channels, samples = x.shape[1] // groups, x.shape[0]
    kernel_taps = kernel3[0] * kernel3[1] * kernel3[2]
    positions = out3[0] * out3[1] * out3[2]
    span = positions * samples if spans else positions  # the positions a job's blocks split
    runs = -(-span // LANES)
    flat_w = weights.reshape(weights.size)
    wide = TILES_WIDE if col.itemsize == 4 else TILES_NARROW
    # out[n, g*O + o, p] for the q-th position (n, p) of all samples, q = n*P + p, lies at
    # (g*O + o)*P + q + n*jump: a sample's plane of every channel before the next sample's
    jump = (weights.shape[0] - 1) * positions
    for job in range(first, last):
        outer, b = job // blocks, job % blocks
        p0, p1 = b * runs // blocks * LANES, min(span, (b + 1) * runs // blocks * LANES)
        if spans:  # block b of group g's positions of every sample
            g = outer
        else:  # block b of sample n's positions
            n, g = outer // groups, outer % groups
            p0, p1 = p0 + n * positions, p1 + n * positions
        o_first, o_step = g * out_channels * positions, positions
        panels = -(-(p1 - p0) // LANES)
        tap_lo, tap_hi = np.zeros(panels, dtype=np.int64), np.full(panels, kernel_taps, dtype=np.int64)
        if skip:
            for j in range(panels):
                r0 = p0 + j * LANES
                tap_lo[j], tap_hi[j] = live_taps(r0, min(p1, r0 + LANES), out3, kernel3, x.shape[2], x.shape[3],
                                                 sd, sh, dd, dh, low_d, low_h)
        for c0 in range(0, channels, chunk):
            chunk_channels = min(chunk, channels - c0)
            count = chunk_channels * kernel_taps  # the chunk's rows of columns
            pack(x, col, g * channels + c0, chunk_channels, p0, p1, kernel3, out3, sd, sh, sw, dd, dh, dw, low_d,
                 low_h, low_w)
            row0 = 0
            for tile_count in (wide, TILES_NARROW):
                rows = (out_channels - row0) // tile_count * tile_count
                for t0 in range(row0, row0 + rows, tile_count):
                    w_at = (g * out_channels + t0) * taps + c0 * kernel_taps
                    o_at = o_first + t0 * o_step
                    for r0 in range(p0, p1, LANES):
                        width, panel = min(LANES, p1 - r0), (r0 - p0) * count
                        at = o_at + r0 + r0 // positions * jump  # the run's first position, in its sample's plane
                        lo, hi = tap_lo[(r0 - p0) // LANES], tap_hi[(r0 - p0) // LANES]
                        if lo == 0 and hi == kernel_taps:  # the chunk's rows in one run
                            tile_sums(flat_w, w_at, taps, col, panel, width, 1, count, count, out, at, o_step,
                                      tile_count, c0 > 0, r0 % positions, positions, jump)
                        else:  # per channel, its taps lo:hi
                            tile_sums(flat_w, w_at + lo, taps, col, panel + lo * width, width, chunk_channels,
                                      kernel_taps, hi - lo, out, at, o_step, tile_count, c0 > 0, r0 % positions,
                                      positions, jump)
                row0 += rows
            for o in range(row0, out_channels):  # too few channels left for a tile
                w_at = (g * out_channels + o) * taps + c0 * kernel_taps
                o_at = o_first + o * o_step
                for r0 in range(p0, p1, LANES):
                    width, panel = min(LANES, p1 - r0), (r0 - p0) * count
                    at, offset = o_at + r0 + r0 // positions * jump, r0 % positions
                    if c0 == 0:  # a position's place: jump further per sample passed
                        for t in range(width):
                            out[at + t + (offset + t) // positions * jump] = 0
                    for k in range(count):
                        weight = flat_w[w_at + k]
                        for t in range(width):
                            out[at + t + (offset + t) // positions * jump] += weight * col[panel + k * width + t]
