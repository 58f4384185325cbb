"""The compiled weight gradient: every filter tap's dot product with grad_output, over runs of the phase grid.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use (see :mod:`._kernels_direct` for the compilation and threading rules
every kernel module shares).

``dk[g*O+o, t] = sum_{n, m} g[n, g*O+o, m] * x_t[n, m]``: tap ``t`` of a
group's filters reads, over a run of wide output positions ``m``, one
contiguous run of its phase plane (:mod:`._kernels_direct`'s layout and
tables), so the sum is a dot product of two rows and no column matrix is made.
Per run, *all* the group's grad_output rows are laid out in ``scratch`` (in
the L2 cache); each block of four taps' runs is copied below them (in the L1
cache), and meets them four output channels at a time: sixteen sums in
registers, each value loaded serving four of them. Every row of ``scratch``
starts on a cache line and is padded with zeros to a multiple of
:data:`LANES` values, so that the inner loop's vector loads are aligned (a
tap's run starts anywhere in its plane, and a 512-bit load across two cache
lines ran the loop 1.6x slower) and the loop has no remainder. The input is
read once per pass, not once per block of output channels.

Contract (besides :mod:`._kernels_direct`'s: three spatial axes, C-contiguous,
native byte order, writeable, one dtype, float32 or float64; the input padded
and split into phases by its ``copy_phases``; grad_output at its exact size;
the ``taps`` and ``runs`` tables):

- ``taps`` padded to a multiple of :data:`TAP_BLOCK` rows (the caller repeats
  a real tap: those columns of ``partial`` are sums it drops), so that every
  tap goes through the blocked loop;
- ``partial`` ``(S, G*O, T)``, ``T`` the padded tap count: one slice per *slot*, a contiguous range of the
  ``N * len(runs)`` pairs (sample, run); a job is (slot, group) and writes its
  group's rows of its slot's slice only, so threads never share a cell and the
  caller sums the slots in a fixed order;
- ``scratch`` ``(O + TAP_BLOCK, P)``, ``P`` a multiple of :data:`LANES` at
  least the longest run, its first value on a cache line: the calling
  thread's own.

Axis legend: N samples, G groups, O output channels per group, T taps of one
group's filters (``C*KD*KH*KW``), S slots.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types, uint64
from numba.extending import intrinsic

from ._kernels_direct import _run
from ._kernels_tiled import LANES as TILE_CHANNELS
from ._kernels_tiled import _add_4, _stack_run, wide_vectors

__all__ = ["weight_grad", "weight_grad_tiled", "transposed_rows", "OUT_BLOCK", "TAP_BLOCK", "LANES", "TILE_CHANNELS",
           "SQUARE"]

#: Output channels and taps one pass of the inner loop handles.
OUT_BLOCK, TAP_BLOCK = 4, 4
#: The rows of ``scratch`` start at multiples of this many values, and every inner loop runs over a multiple of
#: it (the rows padded with zeros): 64 bytes of float32, one cache line and one 512-bit vector.
LANES = 16
#: The side of the squares :func:`_channels_last` transposes in registers: sixteen channels by sixteen positions
#: (a 512-bit float32 vector per row).
SQUARE = 16


@njit(cache=True, nogil=True, inline="always")
def _dots_4x4(sums, o, t, g0, g1, g2, g3, s0, s1, s2, s3, length):
    """``sums[o+i, t+j] += dot(g_i, s_j)`` over ``length`` positions: four output channels, four taps."""
    t00 = t01 = t02 = t03 = t10 = t11 = t12 = t13 = g0.dtype.type(0)
    t20 = t21 = t22 = t23 = t30 = t31 = t32 = t33 = g0.dtype.type(0)
    for m in range(length):  # sixteen sums in registers: each value loaded serves four of them
        v0, v1, v2, v3 = s0[m], s1[m], s2[m], s3[m]
        a0, a1, a2, a3 = g0[m], g1[m], g2[m], g3[m]
        t00, t01, t02, t03 = t00 + a0 * v0, t01 + a0 * v1, t02 + a0 * v2, t03 + a0 * v3
        t10, t11, t12, t13 = t10 + a1 * v0, t11 + a1 * v1, t12 + a1 * v2, t13 + a1 * v3
        t20, t21, t22, t23 = t20 + a2 * v0, t21 + a2 * v1, t22 + a2 * v2, t23 + a2 * v3
        t30, t31, t32, t33 = t30 + a3 * v0, t31 + a3 * v1, t32 + a3 * v2, t33 + a3 * v3
    for i, row in enumerate(((t00, t01, t02, t03), (t10, t11, t12, t13), (t20, t21, t22, t23),
                             (t30, t31, t32, t33))):
        for j in range(TAP_BLOCK):
            sums[o + i, t + j] += row[j]


@njit(cache=True, nogil=True, inline="always")
def _dots_1x4(sums, o, t, g0, s0, s1, s2, s3, length):
    """``sums[o, t+j] += dot(g0, s_j)``: one output channel (depthwise, or a group's last few), four taps."""
    t0 = t1 = t2 = t3 = g0.dtype.type(0)
    for m in range(length):
        a0 = g0[m]
        t0, t1, t2, t3 = t0 + a0 * s0[m], t1 + a0 * s1[m], t2 + a0 * s2[m], t3 + a0 * s3[m]
    sums[o, t] += t0
    sums[o, t + 1] += t1
    sums[o, t + 2] += t2
    sums[o, t + 3] += t3


@njit(cache=True, nogil=True, inline="always")
def _aligned_run(flat, n, channel, z, taps, t, start, length, padded, target):
    """Tap ``t``'s run (:func:`._kernels_direct._run`) copied to ``target[:length]``, zero up to ``padded``."""
    source = _run(flat, n, channel, z, taps, t, start, length)
    for m in range(uint64(length)):  # unsigned: no wraparound test per value, so that the loops vectorize
        target[m] = source[m]
    for m in range(uint64(length), uint64(padded)):
        target[m] = 0
    return target[:padded]


@njit(cache=True, nogil=True, inline="always")
def _wide_rows(grad_output, n, o0, o1, od, r0, r1, w0, width, wq, padded, scratch):
    """grad_output's rows ``r0:r1`` (columns ``w0:w0+width``) of channels ``o0:o1`` as wide rows of ``wq``
    positions in ``scratch``, zero on the extra columns and up to ``padded``: :func:`._kernels_direct._wide`,
    by plain loops (a row's slice and its assignment cost as much as copying a short row)."""
    plane = grad_output.shape[3] * grad_output.shape[4]
    rows = grad_output.reshape(grad_output.shape[0], grad_output.shape[1], grad_output.shape[2] * plane)
    for o in range(o0, o1):
        source, target = rows[n, o], scratch[o - o0]
        position = uint64(0)
        for r in range(r0, r1):
            read = uint64(od * plane + r * grad_output.shape[4] + w0)
            for i in range(uint64(width)):
                target[position + i] = source[read + i]
            end = position + uint64(wq if r + 1 < r1 else width)
            for i in range(position + uint64(width), end):
                target[i] = 0
            position = end
        for i in range(position, uint64(padded)):
            target[i] = 0


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def weight_grad(grid, grad_output, partial, scratch, taps, runs, first, last, groups, sd):
    """``partial[s, g*O+o, t] = sum_{(n, run) in s} sum_m grad_output[n, g*O+o, m] * x_t[n, m]`` for jobs
    ``first:last``, a job being (slot ``s``, group ``g``).

    Per (sample, run), the group's grad_output rows go to ``scratch`` as wide
    rows (zero on the extra columns: where a sum came out inf or NaN the
    caller asks again for one row per run, so that no zero meets one), padded with
    zeros to a multiple of :data:`LANES`; then for each block of four taps,
    their runs are copied below them (so that every vector load of the inner
    loop is aligned: a tap's run starts anywhere in its plane, and a load
    across two cache lines measured 1.6x slower), and every block of four
    output channels takes its sixteen dot products. Each dot product is summed
    in any order (``reassoc``, so that it vectorizes: an inf or NaN still
    gives the direct sum's inf or NaN, in every order).
    """
    wide_vectors(grid.dtype)
    samples, channels, wq = grid.shape[0], grid.shape[1] // groups, grid.shape[6]
    slots, out_per_group, tap_count = partial.shape[0], partial.shape[1] // groups, taps.shape[0]
    pairs = samples * runs.shape[0]
    flat = grid.reshape(*grid.shape[:5], grid.shape[5] * wq)
    for job in range(first, last):
        s, g = job // groups, job % groups
        o0 = g * out_per_group
        sums = partial[s, o0:o0 + out_per_group]
        sums[:] = 0
        for pair in range(s * pairs // slots, (s + 1) * pairs // slots):
            n, run = pair // runs.shape[0], pair % runs.shape[0]
            od, r0, r1, w0, width = runs[run, 0], runs[run, 1], runs[run, 2], runs[run, 3], runs[run, 4]
            start, length = r0 * wq + w0, (r1 - r0 - 1) * wq + width
            padded = -(-length // LANES) * LANES
            _wide_rows(grad_output, n, o0, o0 + out_per_group, od, r0, r1, w0, width, wq, padded, scratch)
            z = od * sd
            for t in range(0, tap_count, TAP_BLOCK):
                s0 = _aligned_run(flat, n, g * channels, z, taps, t, start, length, padded, scratch[out_per_group])
                s1 = _aligned_run(flat, n, g * channels, z, taps, t + 1, start, length, padded,
                                  scratch[out_per_group + 1])
                s2 = _aligned_run(flat, n, g * channels, z, taps, t + 2, start, length, padded,
                                  scratch[out_per_group + 2])
                s3 = _aligned_run(flat, n, g * channels, z, taps, t + 3, start, length, padded,
                                  scratch[out_per_group + 3])
                o = 0
                while o + OUT_BLOCK <= out_per_group:
                    _dots_4x4(sums, o, t, scratch[o], scratch[o + 1], scratch[o + 2], scratch[o + 3],
                              s0, s1, s2, s3, padded)
                    o += OUT_BLOCK
                for o in range(o, out_per_group):  # the last few channels, one at a time
                    _dots_1x4(sums, o, t, scratch[o], s0, s1, s2, s3, padded)


@njit(cache=True, nogil=True, inline="always")
def _load_sums(sums, at):
    """A run of :data:`TILE_CHANNELS` sums on the stack (kept in registers), loaded from the flat ``sums``."""
    run = _stack_run(sums)
    source = sums[at:at + TILE_CHANNELS]
    for lane in range(TILE_CHANNELS):
        run[lane] = source[lane]
    return run


@njit(cache=True, nogil=True, inline="always")
def _load_four(sums, at):
    """Four taps' runs of sums (:func:`_load_sums`), the first at ``at``."""
    return (_load_sums(sums, at), _load_sums(sums, at + TILE_CHANNELS), _load_sums(sums, at + 2 * TILE_CHANNELS),
            _load_sums(sums, at + 3 * TILE_CHANNELS))


@njit(cache=True, nogil=True, inline="always")
def _store_sums(run, sums, at):
    """``sums[at:at+TILE_CHANNELS] = run`` (``sums`` flat), through a slice so that LLVM writes whole vectors."""
    target = sums[at:at + TILE_CHANNELS]
    for lane in range(TILE_CHANNELS):
        target[lane] = run[lane]


@njit(cache=True, nogil=True, inline="always")
def _store_four(a0, a1, a2, a3, sums, at):
    """Four taps' runs of sums back to ``sums`` (:func:`_store_sums`), the first at ``at``."""
    _store_sums(a0, sums, at)
    _store_sums(a1, sums, at + TILE_CHANNELS)
    _store_sums(a2, sums, at + 2 * TILE_CHANNELS)
    _store_sums(a3, sums, at + 3 * TILE_CHANNELS)


@njit(cache=True, nogil=True, inline="always")
def _starts_four(base, offsets, t):
    """Where taps ``t:t+4`` read a run's first position in the flat grid: unsigned (no wraparound tests)."""
    return (uint64(base + offsets[t]), uint64(base + offsets[t + 1]), uint64(base + offsets[t + 2]),
            uint64(base + offsets[t + 3]))


@njit(cache=True, nogil=True, inline="always")
def _tile_4(flat, base, offsets, t, rows, sums, row_count, width, wq):
    """Taps ``t:t+4`` into one tile of output channels, over one run: ``sums[t+j, lane] += sum_{r, w}
    flat[base + offsets[t+j] + r*wq + w] * rows[(r*width + w)*TILE_CHANNELS + lane]``."""
    a0, a1, a2, a3 = _load_four(sums, t * TILE_CHANNELS)
    x0, x1, x2, x3 = _starts_four(base, offsets, t)
    at = uint64(0)
    for r in range(uint64(row_count)):
        line = r * uint64(wq)
        for w in range(line, line + uint64(width)):
            _add_4(a0, a1, a2, a3, flat[x0 + w], flat[x1 + w], flat[x2 + w], flat[x3 + w], rows, at)
            at += uint64(TILE_CHANNELS)
    _store_four(a0, a1, a2, a3, sums, t * TILE_CHANNELS)


@njit(cache=True, nogil=True, inline="always")
def _tile_8(flat, base, offsets, t, rows, sums, row_count, width, wq):
    """:func:`_tile_4` for taps ``t:t+8``: each position's grad_output values loaded once for eight taps."""
    a0, a1, a2, a3 = _load_four(sums, t * TILE_CHANNELS)
    a4, a5, a6, a7 = _load_four(sums, (t + 4) * TILE_CHANNELS)
    x0, x1, x2, x3 = _starts_four(base, offsets, t)
    x4, x5, x6, x7 = _starts_four(base, offsets, t + 4)
    at = uint64(0)
    for r in range(uint64(row_count)):
        line = r * uint64(wq)
        for w in range(line, line + uint64(width)):
            _add_4(a0, a1, a2, a3, flat[x0 + w], flat[x1 + w], flat[x2 + w], flat[x3 + w], rows, at)
            _add_4(a4, a5, a6, a7, flat[x4 + w], flat[x5 + w], flat[x6 + w], flat[x7 + w], rows, at)
            at += uint64(TILE_CHANNELS)
    _store_four(a0, a1, a2, a3, sums, t * TILE_CHANNELS)
    _store_four(a4, a5, a6, a7, sums, (t + 4) * TILE_CHANNELS)


def _swap_masks(half: int) -> tuple[ir.Constant, ir.Constant]:
    """The two shuffles of one step of :func:`_transpose_square` on a pair of rows ``(a, b)``: of each ``2*half``
    values, the first row keeps ``a``'s first ``half`` and takes ``b``'s first ``half``; the second takes
    ``a``'s last ``half`` and keeps ``b``'s last ``half`` (``b``'s values are numbered from :data:`SQUARE`)."""
    first = [j if j & half == 0 else SQUARE + j - half for j in range(SQUARE)]
    second = [j + half if j & half == 0 else SQUARE + j for j in range(SQUARE)]
    index = ir.IntType(32)
    return tuple(ir.Constant(ir.VectorType(index, SQUARE), [ir.Constant(index, j) for j in mask])
                 for mask in (first, second))


def transposed_rows(builder, rows: list) -> list:
    """The :data:`SQUARE` LLVM vectors ``rows`` (each of :data:`SQUARE` values) transposed: row ``i`` of the
    result holds value ``i`` of every row, in four steps of :func:`_swap_masks` (the code of
    :func:`_transpose_square`, and of :mod:`._kernels_broadcast`'s tiles before their stores)."""
    rows = list(rows)
    for half in (8, 4, 2, 1):
        first_mask, second_mask = _swap_masks(half)
        for i in range(SQUARE):
            if i & half == 0:
                a, b = rows[i], rows[i + half]
                rows[i], rows[i + half] = (builder.shuffle_vector(a, b, first_mask),
                                           builder.shuffle_vector(a, b, second_mask))
    return rows


@intrinsic
def _transpose_square(typingctx, source, read, pitch, target, write, target_pitch):
    """``target[write + i*target_pitch + j] = source[read + j*pitch + i]`` for ``i, j < SQUARE``: sixteen rows of
    sixteen values (one per channel, ``pitch`` apart) loaded as vectors, transposed in registers and stored as
    sixteen rows of ``target`` (one per position; :data:`TILE_CHANNELS` apart here, and in
    :mod:`._kernels_depthwise` one position's 16 channels side by side, or back). Steps of half 8, 4, 2 and 1 each swap, in every pair of rows
    ``half`` apart, the upper block of ``half`` values of the first row with the lower one of the second: after
    the four, row ``i`` holds column ``i``. A gather per position, or a value at a time, cost 1.2 cycles a
    value, as much as the sums on a 3-channel stem. No bounds are checked: the caller reads inside ``source``
    and writes inside ``target``."""
    if not (isinstance(source, types.Array) and isinstance(target, types.Array) and source.dtype == target.dtype):
        return None

    def codegen(context, builder, signature, args):
        source_type, read_type, pitch_type, target_type, write_type, target_pitch_type = signature.args
        intp = context.get_value_type(types.intp)
        data_in = context.make_array(source_type)(context, builder, args[0]).data
        data_out = context.make_array(target_type)(context, builder, args[3]).data
        read, pitch, write, target_pitch = (
            context.cast(builder, value, kind, types.intp)
            for value, kind in ((args[1], read_type), (args[2], pitch_type), (args[4], write_type),
                                (args[5], target_pitch_type)))
        vector = ir.VectorType(context.get_value_type(source_type.dtype), SQUARE).as_pointer()
        rows = [builder.load(builder.bitcast(builder.gep(data_in, [builder.add(read, builder.mul(pitch, ir.Constant(
            intp, j)))]), vector), align=1) for j in range(SQUARE)]
        rows = transposed_rows(builder, rows)
        for i, row in enumerate(rows):
            at = builder.add(write, builder.mul(target_pitch, ir.Constant(intp, i)))
            builder.store(row, builder.bitcast(builder.gep(data_out, [at]), vector), align=1)
        return context.get_dummy_value()

    return types.none(source, read, pitch, target, write, target_pitch), codegen


@njit(cache=True, nogil=True, inline="always")
def _channels_last(grad_output, n, o0, lanes, od, r0, r1, w0, width, wq, rows):
    """grad_output's positions of one run (rows ``r0:r1``, columns ``w0:w0+width``) for the ``lanes`` channels
    from ``o0`` of one tile, transposed into the flat ``rows`` ``(positions, TILE_CHANNELS)``: a position's
    channels side by side, zero past the tile's last real channel. With ``wq > 0``, as wide rows of ``wq``
    positions, zero on the extra columns. Sixteen positions of sixteen channels at a time, transposed in
    registers (:func:`_transpose_square`); a row's last few positions, and the lanes past a part-filled tile's
    last whole square, a value at a time (position by position, so that the writes run on: a channel at a
    time wrote one value per cache line of ``rows``)."""
    channel_size = grad_output.shape[2] * grad_output.shape[3] * grad_output.shape[4]
    plane, out_w = grad_output.shape[3] * grad_output.shape[4], grad_output.shape[4]
    values = grad_output.reshape(-1)
    first = uint64((n * grad_output.shape[1] + o0) * channel_size + od * plane + w0)
    squared = lanes // SQUARE * SQUARE  # the tile's lanes that whole squares cover
    at = uint64(0)
    for r in range(r0, r1):
        line = first + uint64(r * out_w)
        start = uint64(0)
        while start + uint64(SQUARE) <= uint64(width):
            for lane in range(0, squared, SQUARE):
                _transpose_square(values, line + start + uint64(lane * channel_size), channel_size, rows,
                                  at + uint64(lane), TILE_CHANNELS)
            for i in range(uint64(SQUARE)):  # the lanes past the squares, a value at a time
                for lane in range(uint64(squared), uint64(lanes)):
                    rows[at + i * uint64(TILE_CHANNELS) + lane] = values[line + start + i
                                                                         + lane * uint64(channel_size)]
                for lane in range(uint64(lanes), uint64(TILE_CHANNELS)):
                    rows[at + i * uint64(TILE_CHANNELS) + lane] = 0
            at += uint64(SQUARE * TILE_CHANNELS)
            start += uint64(SQUARE)
        for w in range(start, uint64(width)):  # the row's last few positions, a value at a time
            for lane in range(uint64(lanes)):
                rows[at + lane] = values[line + w + lane * uint64(channel_size)]
            for lane in range(uint64(lanes), uint64(TILE_CHANNELS)):
                rows[at + lane] = 0
            at += uint64(TILE_CHANNELS)
        if wq > 0 and r + 1 < r1:  # a wide row's extra columns
            for i in range(uint64((wq - width) * TILE_CHANNELS)):
                rows[at + i] = 0
            at += uint64((wq - width) * TILE_CHANNELS)


@njit(cache=True, nogil=True, fastmath={"contract"}, _nrt=False)
def weight_grad_tiled(flat, grad_output, partial, rows, offsets, runs, first, last, groups, channel_size,
                      depth_size, wq, sd, tap_block, wide):
    """``partial[s, g, b, t, lane] = sum_{(n, run) in s} sum_p grad_output[n, g*O + b*TILE_CHANNELS + lane, p]
    * x_t[n, p]`` for jobs ``first:last``, a job being (slot ``s``, group ``g``, tile ``b``): GEMM-style, with
    no horizontal sums.

    Per (sample, run), the tile's grad_output values of the run are
    transposed into ``rows`` (a position's channels side by side: one
    run's, in the L1 cache while every block of taps reads them); then for
    each block of ``tap_block`` (4 or 8; ``partial``'s taps, a multiple of
    :data:`TAP_BLOCK`, end in a block of 4 where eight would pass them) taps, the block's sums stay in
    registers while every position of the run adds into them: one vector
    load of the tile's grad_output values, one broadcast input value per tap,
    and a multiply-add per tap and vector. The sums are stored in
    ``partial`` between runs. With ``wide``, a run of several rows is one loop
    over wide rows of ``wq`` positions (the extra columns' grad_output zero:
    short rows cost a loop each otherwise); the caller keeps those sums only
    where all are finite, since an extra column's inf or NaN times that zero
    would reach a sum the direct sum keeps finite, and asks again without
    ``wide`` otherwise: then only a run's real positions are read.
    """
    samples, out_per_group = grad_output.shape[0], grad_output.shape[1] // groups
    slots, tiles, taps = partial.shape[0], partial.shape[2], partial.shape[3]
    channels_in = flat.shape[0] // (samples * channel_size)
    pairs = samples * runs.shape[0]
    for job in range(first, last):
        s, g, b = job // (groups * tiles), job // tiles % groups, job % tiles
        o0 = g * out_per_group + b * TILE_CHANNELS
        lanes = min(TILE_CHANNELS, out_per_group - b * TILE_CHANNELS)
        sums = partial[s, g, b].reshape(-1)
        for i in range(sums.shape[0]):
            sums[i] = 0
        for pair in range(s * pairs // slots, (s + 1) * pairs // slots):
            n, run = pair // runs.shape[0], pair % runs.shape[0]
            od, r0, r1, w0, width = runs[run, 0], runs[run, 1], runs[run, 2], runs[run, 3], runs[run, 4]
            _channels_last(grad_output, n, o0, lanes, od, r0, r1, w0, width, wq if wide else 0, rows)
            base = ((n * channels_in + g * (channels_in // groups)) * channel_size + od * sd * depth_size
                    + r0 * wq + w0)
            # wide: the run as one line of wide positions (the extra columns' grad_output is zero)
            line_count, line_length = (1, (r1 - r0 - 1) * wq + width) if wide else (r1 - r0, width)
            t = 0
            while t < taps:  # blocks of tap_block, the last four taps (of eight: 27 taps padded to 28, not 32) of 4
                if tap_block == 8 and t + 8 <= taps:
                    _tile_8(flat, base, offsets, t, rows, sums, line_count, line_length, wq)
                    t += 8
                else:
                    _tile_4(flat, base, offsets, t, rows, sums, line_count, line_length, wq)
                    t += TAP_BLOCK
