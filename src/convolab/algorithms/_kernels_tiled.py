"""The forward of the "compiled" algorithm with its sums held in registers: tiles of output channels x positions.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use (as :mod:`._kernels_direct`, whose phase grid and run tables it
reads).

:func:`._kernels_direct.forward` adds three taps at a time into sums that
live in memory, so it loads and stores every sum once per three taps: load
and store bound. Here a *tile* of sums, :data:`TILE_WIDE` (or
:data:`TILE_NARROW`) output channels by :data:`LANES` consecutive wide
positions, stays in vector registers while every tap of the group adds into
it, and is stored once. Per tap the inner loop loads :data:`LANES` inputs and
one weight per channel of the tile, then does ``channels x LANES`` multiply-adds:
LLVM keeps the tile's sums in registers because each channel's run of sums is
its own small stack array (:func:`_stack_run`), and vectorizes the loop over
positions (measured speed, and what bounds the rest: ``docs/compiled.md``).
Checked in the generated code (``inspect_asm``) on an AVX-512
Xeon: per tap two (float64: four) 512-bit loads, eight (four) broadcasts,
sixteen 512-bit FMAs and four instructions of loop and offset, no spill;
86e9-125e9 multiply-adds per second on one thread (float32), against about
20e9 for :func:`._kernels_direct.forward`.

The contract (the Python wrapper in :mod:`.compiled` lays the arrays out):

- ``flat``: the phase grid ``(N, G*C, D, SH, SW, Hq, Wq)`` of
  :mod:`._kernels_direct`, C-contiguous, as one flat array; the tap offsets
  ``offsets[t]`` are flat offsets from the grid cell of channel ``g*C``,
  depth ``od*sd``, phase ``(0, 0)``, position 0; ``channel_size`` and
  ``depth_size`` the flat steps of one channel and one depth; where the
  wrapper's rows share their zero padding, ``Wq`` is narrower than the padded
  row (a window that reads past its row's end reads the next row's low zeros,
  or the plane's extra zero row);
- ``packed``: the weights ``(G*B, T, tile)``, ``B`` tiles per group, each
  tile's weights of one tap contiguous, zero for channels past the group's
  last (computed, never stored);
- ``runs``, ``first``, ``last``, ``scratch`` as in :mod:`._kernels_direct`
  (``wq`` positions per wide row); ``scratch`` holds
  ``(tiles_per_job * tile, run)`` sums; ``run_bounds`` the first run of
  each block of runs (and the count), jobs taking one block each;
- reads stay within each run's own positions, as the direct loop's: a run's
  last stretch is moved back to end with it, and a run shorter than
  :data:`LANES` is summed one position at a time;
- one dtype (float32 or float64), every array native byte order and writeable.

A tile's sums are in tap order, one multiply-add at a time (rounded once each
with ``contract``): the same terms as the direct sum, in another order, and
the same bits whichever job computes a position.

The kernel runs without Numba's runtime (``_nrt=False``): it allocates
nothing, and its views carry no reference counts, whose calls and atomic adds
per tile cost as much as a short tap loop and kept LLVM from vectorizing the
sums' loads and stores. A
wide row's extra columns are computed and dropped, as in
:mod:`._kernels_direct`: each position's sum reads only its own window, so
an inf or NaN reaches exactly the outputs the direct sum gives it.

Axis legend: N samples, G groups, C input channels per group, T taps of one
group's filters, B tiles of output channels per group.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array
from llvmlite import ir

from ._kernels_direct import stage_planes
from ._kernels_moves import VECTOR_VALUES, _run_pointer


__all__ = ["forward", "forward_staged", "wide_vectors", "LANES", "TILE_WIDE", "TILE_NARROW"]

#: Consecutive positions of one tile (two float32 vectors of 512 bits, four float64 ones).
LANES = 32
#: Output channels of a tile: eight for float32 (sixteen vector sums of the 32 registers), four for float64
#: (sixteen too) and where a group has fewer than eight output channels.
TILE_WIDE, TILE_NARROW = 8, 4


def _ask_for_512_bit_vectors(builder) -> None:
    """Ask LLVM for 512-bit vectors in the kernel being built. Its tuning for AVX-512 CPUs prefers 256-bit ones,
    half of what the FMA units take. A string attribute, which llvmlite's checked ``add`` does not know; without
    AVX-512 the backend splits the vectors again. That reaches past llvmlite's API: where its attribute set is
    built otherwise, the kernel keeps LLVM's default width rather than failing."""
    for attribute in ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"'):
        try:
            set.add(builder.function.attributes, attribute)
        except TypeError:
            break


@intrinsic
def wide_vectors(typingctx, dtype):
    """Called at the top of a kernel (any value as ``dtype``): LLVM then vectorizes it with 512-bit vectors."""

    def codegen(context, builder, signature, args):
        _ask_for_512_bit_vectors(builder)
        return context.get_dummy_value()

    return types.none(dtype), codegen


@intrinsic
def _stack_run(typingctx, dtype):
    """An array of :data:`LANES` values of ``dtype`` in the function's stack frame, whose kernel it also asks for
    512-bit vectors (as :func:`wide_vectors` does): one LLVM can keep in registers (a NumPy array lives on the heap, so its loads and stores stay). It has no reference count (nor
    needs one: the kernel runs without Numba's runtime, whose counts cost a call and an atomic add per view)."""
    item = dtype.dtype
    run_type = types.Array(item, 1, "C")

    def codegen(context, builder, signature, args):
        _ask_for_512_bit_vectors(builder)
        data = cgutils.alloca_once(builder, context.get_value_type(item), size=LANES)
        run = context.make_array(run_type)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_value_type(item)))
        populate_array(run, data=data, shape=[context.get_constant(types.intp, LANES)], strides=[itemsize],
                       itemsize=itemsize, meminfo=None)
        return run._getvalue()

    return run_type(dtype), codegen


@intrinsic
def _line_offset(typingctx, array):
    """The byte offset of ``array``'s first value within its 64-byte cache line."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.urem(builder.ptrtoint(data, ir.IntType(64)), ir.Constant(ir.IntType(64), 64))

    return types.uint64(array), codegen


@intrinsic
def _stream(typingctx, dst, to, src, read):
    """``dst[to:to + 16] = src[read:read + 16]`` (:data:`VECTOR_VALUES`), ``dst[to]`` at the start of a cache line: one unaligned load,
    stores that bypass the cache (non-temporal: the line is written without first being read)."""

    def codegen(context, builder, signature, args):
        source = _run_pointer(context, builder, signature.args[2], args[2], args[3])
        value = builder.load(source, align=signature.args[2].dtype.bitwidth // 8)
        store = builder.store(value, _run_pointer(context, builder, signature.args[0], args[0], args[1]), align=64)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.none(dst, to, src, read), codegen


@intrinsic
def _fence(typingctx):
    """A full memory fence (``mfence``): the non-temporal stores before it are visible to every thread after it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@njit(cache=True, nogil=True, inline="always")
def _store_row(target, at, source, read, width, stream, line_offset):
    """``target[at:at + width] = source[read:read + width]`` (flat arrays, indices unsigned); where ``stream``,
    the whole cache lines of ``target`` with non-temporal stores (``line_offset``: the byte offset of
    ``target[0]`` within its line; a ``target`` whose values are not aligned to their size has none)."""
    done, width = np.uint64(0), np.uint64(width)
    if stream and line_offset % np.uint64(target.itemsize) == 0:
        per_line = np.uint64(64 // target.itemsize)
        done = min(width, (per_line - (line_offset // np.uint64(target.itemsize) + at) % per_line) % per_line)
        for w in range(done):
            target[at + w] = source[read + w]
        while done + np.uint64(VECTOR_VALUES) <= width:
            _stream(target, at + done, source, read + done)
            done += np.uint64(VECTOR_VALUES)
    for w in range(done, width):
        target[at + w] = source[read + w]


@njit(cache=True, nogil=True, inline="always")
def _begin(kind):
    """A run of :data:`LANES` zero sums of dtype ``kind`` on the stack."""
    run = _stack_run(kind)
    for m in range(LANES):
        run[m] = 0
    return run


@njit(cache=True, nogil=True, inline="always")
def _begin_four(kind):
    """:func:`_begin` for four channels' runs."""
    return _begin(kind), _begin(kind), _begin(kind), _begin(kind)


@njit(cache=True, nogil=True, inline="always")
def _end(run, target, at, keep):
    """``target[at:at+LANES] = run`` (``target`` flat) where ``keep`` (a tile's channels past the job's last hold
    zero weights' sums): through a slice, as the tap loop reads, so that LLVM writes whole vectors."""
    if keep:
        to = target[at:at + LANES]
        for m in range(LANES):
            to[m] = run[m]


@njit(cache=True, nogil=True, inline="always")
def _end_four(s0, s1, s2, s3, sums, rows, row, column):
    """Four channels' runs, rows ``row:row+4``, to the flat ``sums`` ``(rows, run)`` at ``column``."""
    width = sums.shape[0] // rows
    at = row * width + column
    _end(s0, sums, at, row < rows)
    _end(s1, sums, at + width, row + 1 < rows)
    _end(s2, sums, at + 2 * width, row + 2 < rows)
    _end(s3, sums, at + 3 * width, row + 3 < rows)


@njit(cache=True, nogil=True, inline="always")
def _add_4(s0, s1, s2, s3, v0, v1, v2, v3, run, at):
    """``s_i[m] += v_i * run[at + m]``, i < 4, m < :data:`LANES`: four values, each broadcast, times one run.
    The step of every register tile: this module's forward (four channels' weights times one tap's inputs), the
    fused Winograd's (four tiles' inputs times one channel's filters) and the weight gradient's (four taps' inputs
    times one position's grad_output). ``at`` unsigned, into a flat array (no views): a signed index is checked
    for wrapping around and a slice clamped, which made the tap loop issue three instructions per multiply-add,
    more than the FMA units take."""
    for m in range(LANES):
        v = run[at + np.uint64(m)]
        s0[m] += v0 * v
        s1[m] += v1 * v
        s2[m] += v2 * v
        s3[m] += v3 * v


@njit(cache=True, nogil=True, inline="always")
def _tile_8(flat, start, offsets, packed, taps, tile_index, sums, rows, row, column):
    """``sums[row + o, column:column+LANES] = sum_t packed[tile_index, t, o] * flat[start + offsets[t] + m]`` over
    every tap, o < 8: the run of each tap loaded once for eight channels. ``sums`` ``(rows, run)`` comes flat.
    Each run written out plainly: a tuple of runs, or a view made per tile, cost reference counts and kept LLVM
    from vectorizing the sums' loads and stores (about a short tap loop's time per tile)."""
    s0, s1, s2, s3 = _begin_four(flat.dtype)
    s4, s5, s6, s7 = _begin_four(flat.dtype)
    base, first_weight = np.uint64(start), np.uint64(tile_index * taps * TILE_WIDE)
    for t in range(np.uint64(taps)):
        at, w = base + np.uint64(offsets[t]), first_weight + t * np.uint64(TILE_WIDE)
        _add_4(s0, s1, s2, s3, packed[w], packed[w + np.uint64(1)], packed[w + np.uint64(2)],
               packed[w + np.uint64(3)], flat, at)
        _add_4(s4, s5, s6, s7, packed[w + np.uint64(4)], packed[w + np.uint64(5)], packed[w + np.uint64(6)],
               packed[w + np.uint64(7)], flat, at)
    _end_four(s0, s1, s2, s3, sums, rows, row, column)
    _end_four(s4, s5, s6, s7, sums, rows, row + 4, column)


@njit(cache=True, nogil=True, inline="always")
def _tile_4(flat, start, offsets, packed, taps, tile_index, sums, rows, row, column):
    """:func:`_tile_8` for four channels."""
    s0, s1, s2, s3 = _begin_four(flat.dtype)
    base, first_weight = np.uint64(start), np.uint64(tile_index * taps * TILE_NARROW)
    for t in range(np.uint64(taps)):
        w = first_weight + t * np.uint64(TILE_NARROW)
        _add_4(s0, s1, s2, s3, packed[w], packed[w + np.uint64(1)], packed[w + np.uint64(2)],
               packed[w + np.uint64(3)], flat, base + np.uint64(offsets[t]))
    _end_four(s0, s1, s2, s3, sums, rows, row, column)


@njit(cache=True, nogil=True, inline="always")
def _short_run(flat, start, offsets, weights, sums, row, length):
    """A run shorter than :data:`LANES` positions, one sum at a time: ``sums[row + o, :length]``."""
    for o in range(min(weights.shape[1], sums.shape[0] - row)):
        for m in range(length):
            total = flat.dtype.type(0)
            for t in range(offsets.shape[0]):
                total += weights[t, o] * flat[start + offsets[t] + m]
            sums[row + o, m] = total


@njit(cache=True, nogil=True, fastmath={"contract"}, _nrt=False)
def forward(flat, packed, out, scratch, offsets, runs, run_bounds, first, last, groups, tiles_per_group,
            tiles_per_job, channel_size, depth_size, wq, sd, stream):
    """``out[n, g*O+o, p] = sum_{c, j} x_p[n, g*C+c, p*s + j*d] * kernel[g*O+o, c, j]``, for jobs ``first:last``.

    A job is (sample ``n``, group ``g``, ``tiles_per_job`` tiles of output
    channels, block ``b`` of runs: ``runs[run_bounds[b]:run_bounds[b + 1]]``).
    Per run of wide positions (``wq`` per wide row), each stretch
    of :data:`LANES` positions (the last one moved back to end with the run,
    recomputing a few) is computed tile after tile, each tile over every tap
    (its input lines read again from the L2 cache by the next tile), into
    ``scratch``; then the run's real columns are copied to ``out``
    (C-contiguous), where ``stream`` with non-temporal stores.
    """
    out_per_group, taps, tile = out.shape[1] // groups, packed.shape[1], packed.shape[2]
    packed_flat, out_flat = packed.reshape(-1), out.reshape(-1)  # once: a reshape is a call into Numba's helpers
    line_offset = _line_offset(out_flat)
    out_d, out_h, out_w = out.shape[2], out.shape[3], out.shape[4]
    channels_in = flat.shape[0] // (out.shape[0] * channel_size)
    run_blocks = run_bounds.shape[0] - 1
    jobs_per_group = -(-tiles_per_group // tiles_per_job) * run_blocks
    for job in range(first, last):
        n, rest = job // (groups * jobs_per_group), job % (groups * jobs_per_group)
        g, rest = rest // jobs_per_group, rest % jobs_per_group
        first_tile, block = (rest // run_blocks) * tiles_per_job, rest % run_blocks
        end_tile = min(first_tile + tiles_per_job, tiles_per_group)
        o0 = g * out_per_group + first_tile * tile
        o1 = min(g * out_per_group + end_tile * tile, (g + 1) * out_per_group)
        sums = scratch[:o1 - o0]
        sums_flat = sums.reshape(-1)
        channel_base = (n * channels_in + g * (channels_in // groups)) * channel_size
        for run in range(run_bounds[block], run_bounds[block + 1]):
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
                    tile_index, row = g * tiles_per_group + b, (b - first_tile) * tile
                    if tile == TILE_WIDE:
                        _tile_8(flat, start + column, offsets, packed_flat, taps, tile_index, sums_flat, o1 - o0, row,
                                column)
                    else:
                        _tile_4(flat, start + column, offsets, packed_flat, taps, tile_index, sums_flat, o1 - o0, row,
                                column)
                column += LANES
            for o in range(o0, o1):  # flat, unsigned: a slice's assignment may copy through a temporary, and
                for r in range(r0, r1):  # five indices per value kept LLVM from vectorizing
                    at = (((n * out.shape[1] + o) * out_d + od) * out_h + r) * out_w + w0
                    _store_row(out_flat, np.uint64(at), sums_flat, np.uint64((o - o0) * sums.shape[1] + (r - r0) * wq),
                               width, stream, line_offset)
    if stream:
        _fence()


@njit(cache=True, nogil=True, _nrt=False)
def forward_staged(source, stage, packed, out, scratch, offsets, runs, run_bounds, first, last, tiles_per_group,
                   channel_size, depth_size, wq, sd, low_d, low_h, low_w, stream):
    """:func:`forward` for one group, each job a whole sample's channels and runs (``run_bounds`` one block),
    without the phase grid of the whole input: each job first copies its sample's planes of ``source`` (the
    input before its zero padding by the lows, rank 3) into the thread's own ``stage`` (``(1, C, D, SH, SW, Hq,
    Wq)``, :func:`._kernels_direct.stage_planes`), whose tiles then read it from the cache, rather than the whole
    grid written to memory first and read back."""
    stage_flat = stage.reshape(-1)
    for n in range(first, last):
        stage_planes(source, stage, n * source.shape[1], low_d, low_h, low_w)
        forward(stage_flat, packed, out[n:n + 1], scratch, offsets, runs, run_bounds, 0, 1, 1, tiles_per_group,
                tiles_per_group, channel_size, depth_size, wq, sd, stream)
