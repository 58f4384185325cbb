"""The forward of the "compiled" algorithm with its sums held in registers: tiles of output channels x positions.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use (as :mod:`._kernels_direct`, whose phase grid and run tables it
reads).

:func:`._kernels_direct.forward` adds three taps at a time into sums that
live in memory, so it loads and stores every sum once per three taps: load
and store bound. Here a *tile* of sums, :data:`TILE_WIDE` (or
:data:`TILE_NARROW`) output channels by :data:`LANES` consecutive wide
positions, stays in vector registers while *every* tap of the group adds into
it, and is stored once. Per tap the inner loop loads :data:`LANES` inputs and
one weight per channel of the tile, then does ``channels x LANES`` multiply-adds:
LLVM keeps the tile's sums in registers because each channel's run of sums is
its own small stack array (:func:`_stack_run`), and vectorizes the loop over
positions (measured speed, and what bounds the rest: ``docs/compiled.md``).
Checked in the generated code (``inspect_asm``) on an AVX-512
Xeon: per tap two (float64: four) 512-bit loads, eight (four) broadcasts and
sixteen 512-bit FMAs, no spill; 86e9 multiply-adds per second on one thread
(float32), against about 20e9 for :func:`._kernels_direct.forward`.

The contract (the Python wrapper in :mod:`.compiled` lays the arrays out):

- ``flat``: the phase grid ``(N, G*C, D, SH, SW, Hq, Wq)`` of
  :mod:`._kernels_direct`, C-contiguous, as one flat array; the tap offsets
  ``offsets[t]`` are flat offsets from the grid cell of channel ``g*C``,
  depth ``od*sd``, phase ``(0, 0)``, position 0; ``channel_size`` and
  ``depth_size`` the flat steps of one channel and one depth;
- ``packed``: the weights ``(G*B, T, tile)``, ``B`` tiles per group, each
  tile's weights of one tap contiguous, zero for channels past the group's
  last (computed, never stored);
- ``runs``, ``first``, ``last``, ``scratch`` as in :mod:`._kernels_direct`
  (``wq`` positions per wide row); ``scratch`` holds
  ``(tiles_per_job * tile, run)`` sums;
- reads stay within each run's own positions, as the direct loop's: a run's
  last stretch is moved back to end with it, and a run shorter than
  :data:`LANES` is summed one position at a time;
- one dtype (float32 or float64), every array native byte order and writeable.

A tile's sums are in tap order, one multiply-add at a time (rounded once each
with ``contract``): the same terms as the direct sum, in another order. A
wide row's extra columns are computed and dropped, as in
:mod:`._kernels_direct`: each position's sum reads only its own window, so
an inf or NaN reaches exactly the outputs the direct sum gives it.

Axis legend: N samples, G groups, C input channels per group, T taps of one
group's filters, B tiles of output channels per group.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._kernels_direct import _add_4x1

__all__ = ["forward", "LANES", "TILE_WIDE", "TILE_NARROW"]

#: Consecutive positions of one tile (two float32 vectors of 512 bits, four float64 ones).
LANES = 32
#: Output channels of a tile: eight for float32 (sixteen vector sums of the 32 registers), four for float64
#: (sixteen too) and where a group has fewer than eight output channels.
TILE_WIDE, TILE_NARROW = 8, 4


@intrinsic
def _stack_run(typingctx, dtype):
    """A pointer to :data:`LANES` values of ``dtype`` in the function's stack frame: an array LLVM can keep in
    registers (a NumPy array lives on the heap, so its loads and stores stay)."""
    item = dtype.dtype

    def codegen(context, builder, signature, args):
        # LLVM's tuning for AVX-512 CPUs prefers 256-bit vectors, half of what the FMA units take: ask the
        # kernel calling this for 512-bit ones (a string attribute, which llvmlite's checked ``add`` does not
        # know; without AVX-512 the backend splits the vectors again). That reaches past llvmlite's API: where
        # its attribute set is built otherwise, the kernel keeps LLVM's default width rather than failing.
        for attribute in ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"'):
            try:
                set.add(builder.function.attributes, attribute)
            except TypeError:
                break
        return cgutils.alloca_once(builder, context.get_value_type(item), size=LANES)

    return types.CPointer(item)(dtype), codegen


@njit(cache=True, nogil=True, inline="always")
def _four_runs(kind):
    """Four runs of :data:`LANES` sums of dtype ``kind`` on the stack, zero."""
    s0, s1, s2, s3 = (carray(_stack_run(kind), LANES), carray(_stack_run(kind), LANES),
                      carray(_stack_run(kind), LANES), carray(_stack_run(kind), LANES))
    for m in range(LANES):
        s0[m] = s1[m] = s2[m] = s3[m] = 0
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, inline="always")
def _store(sums, row, column, run):
    """``sums[row, column:column+LANES] = run`` if ``sums`` has that row (a tile's channels past the job's last
    hold zero weights' sums). Plain stores at unsigned indices: Numba checks a signed index for wrapping
    around, and a slice's assignment costs as much as a short tap loop."""
    if row < sums.shape[0]:
        r, c = np.uint64(row), np.uint64(column)
        for m in range(LANES):
            sums[r, c + np.uint64(m)] = run[m]


@njit(cache=True, nogil=True, inline="always")
def _store_four(sums, row, column, s0, s1, s2, s3):
    """:func:`_store` for four channels' runs, rows ``row:row+4``."""
    _store(sums, row, column, s0)
    _store(sums, row + 1, column, s1)
    _store(sums, row + 2, column, s2)
    _store(sums, row + 3, column, s3)


@njit(cache=True, nogil=True, inline="always")
def _tile_8(flat, start, offsets, weights, sums, row, column):
    """``sums[row + o, column:column+LANES] = sum_t weights[t, o] * flat[start + offsets[t] + m]``, o < 8: the
    run of each tap loaded once for eight channels."""
    s0, s1, s2, s3 = _four_runs(flat.dtype)
    s4, s5, s6, s7 = _four_runs(flat.dtype)
    for t in range(offsets.shape[0]):
        run, w = flat[start + offsets[t]:start + offsets[t] + LANES], weights[t:t + 1].T  # (8, 1): one tap
        _add_4x1(s0, s1, s2, s3, run, w[:4], LANES)
        _add_4x1(s4, s5, s6, s7, run, w[4:], LANES)
    _store_four(sums, row, column, s0, s1, s2, s3)
    _store_four(sums, row + 4, column, s4, s5, s6, s7)


@njit(cache=True, nogil=True, inline="always")
def _tile_4(flat, start, offsets, weights, sums, row, column):
    """:func:`_tile_8` for four channels."""
    s0, s1, s2, s3 = _four_runs(flat.dtype)
    for t in range(offsets.shape[0]):
        _add_4x1(s0, s1, s2, s3, flat[start + offsets[t]:start + offsets[t] + LANES], weights[t:t + 1].T, LANES)
    _store_four(sums, row, column, s0, s1, s2, s3)


@njit(cache=True, nogil=True, inline="always")
def _short_run(flat, start, offsets, weights, sums, row, length):
    """A run shorter than :data:`LANES` positions, one sum at a time: ``sums[row + o, :length]``."""
    for o in range(min(weights.shape[1], sums.shape[0] - row)):
        for m in range(length):
            total = flat.dtype.type(0)
            for t in range(offsets.shape[0]):
                total += weights[t, o] * flat[start + offsets[t] + m]
            sums[row + o, m] = total


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward(flat, packed, out, scratch, offsets, runs, first, last, groups, tiles_per_group, tiles_per_job,
            channel_size, depth_size, wq, sd):
    """``out[n, g*O+o, p] = sum_{c, j} x_p[n, g*C+c, p*s + j*d] * kernel[g*O+o, c, j]``, for jobs ``first:last``.

    A job is (sample ``n``, group ``g``, ``tiles_per_job`` tiles of output
    channels). Per run of wide positions (``wq`` per wide row), each stretch
    of :data:`LANES` positions (the last one moved back to end with the run,
    recomputing a few) is computed tile after tile while its inputs are in
    the L1 cache, into ``scratch``; then the run's real columns are copied to
    ``out``.
    """
    out_per_group, tile = out.shape[1] // groups, packed.shape[2]
    channels_in = flat.shape[0] // (out.shape[0] * channel_size)
    jobs_per_group = -(-tiles_per_group // tiles_per_job)
    for job in range(first, last):
        n, rest = job // (groups * jobs_per_group), job % (groups * jobs_per_group)
        g, first_tile = rest // jobs_per_group, (rest % jobs_per_group) * tiles_per_job
        end_tile = min(first_tile + tiles_per_job, tiles_per_group)
        o0 = g * out_per_group + first_tile * tile
        o1 = min(g * out_per_group + end_tile * tile, (g + 1) * out_per_group)
        sums = scratch[:o1 - o0]
        channel_base = (n * channels_in + g * (channels_in // groups)) * channel_size
        for run in range(runs.shape[0]):
            od, r0, r1, w0, width = runs[run, 0], runs[run, 1], runs[run, 2], runs[run, 3], runs[run, 4]
            start = channel_base + od * sd * depth_size + r0 * wq + w0
            length = (r1 - r0 - 1) * wq + width
            if length < LANES:
                for b in range(first_tile, end_tile):
                    _short_run(flat, start, offsets, packed[g * tiles_per_group + b], sums,
                               (b - first_tile) * tile, length)
            column = 0
            while length >= LANES and column < length:
                column = min(column, length - LANES)
                for b in range(first_tile, end_tile):
                    weights, row = packed[g * tiles_per_group + b], (b - first_tile) * tile
                    if tile == TILE_WIDE:
                        _tile_8(flat, start + column, offsets, weights, sums, row, column)
                    else:
                        _tile_4(flat, start + column, offsets, weights, sums, row, column)
                column += LANES
            for o in range(o0, o1):  # plain loops: a slice's assignment may copy through a temporary
                for r in range(r0, r1):
                    to, at = np.uint64(w0), np.uint64((r - r0) * wq)
                    for w in range(np.uint64(width)):
                        out[n, o, od, r, to + w] = sums[o - o0, at + w]
