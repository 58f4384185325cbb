"""The "broadcast" forward: output channels in the vector lanes, each input value broadcast across them.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrapper that lays out the filters, splits the jobs and shares
them among threads is :mod:`.broadcast`.

A job is one sample's group and block of output rows. It first copies the
input rows those outputs read into the thread's *grid*, :data:`LANE_CHANNELS`
input channels side by side (a position's 16 channels in one 64-byte line;
zero padding written as it copies: :func:`_fill_grid`), so that a tile's reads
of one channel block stay on a few cache lines. Then, per block of output
channels, *tiles* of :data:`TILE_POSITIONS` output positions by
:func:`block_channels` output channels (float32: two vectors of 16; float64:
one LLVM vector of 16, two registers): 28 vector sums held in registers for
the whole sum over the terms (:func:`_tile_sums`, an LLVM intrinsic). Per term
``k`` (input channel, tap) it loads the tile's filters (its vectors of output
channels, contiguous in the laid-out filters) and, per position, one input
value from the grid, broadcast to a vector: 28 multiply-adds per 16 loads, and
no columns packed. The sums are then transposed in registers and each output
channel's run of positions stored with one masked store per row: no scratch
in between (a tile stored through a scratch, then copied out one value at a
time, measured 9.4 or 12.5 ms for the same call from process to process).

A tile's positions are one output row's :data:`TILE_POSITIONS` consecutive
ones, or two rows' :data:`PAIR_POSITIONS` (rows of 7 to 13 outputs: ResNet's
7x7); along a row they read the grid ``sw`` positions apart, so that at
strides 1 and 2 (literal) every broadcast's address is one register plus a
constant. A row's last tile is moved back to end with it (those positions
recomputed, stored alike), and a job's odd last row of two-row tiles takes
tiles of its 7 alone (:func:`_half_tile`). Rows narrower
than :data:`PAIR_POSITIONS` are summed one position at a time
(:func:`_narrow_tile`, through the thread's tile scratch).

The contract of :func:`forward`:

- ``x`` ``(N, G*C, D, H, W)``: the input before its zero padding (low sides
  ``lows``; the high sides as far as the windows read), C-contiguous;
- ``weights`` ``(G, blocks, K, block)`` flat: per group and block of
  ``block`` output channels, term ``k``'s filters of the block (zero past the
  group's last channel: computed, never stored; :func:`lay_out_filters`);
- ``out`` ``(N, G*O, A, B, E)`` flat; the scratch: ``grid`` (the largest
  job's window, 16 channels side by side), ``offsets`` (``K`` int64) and
  ``tile`` (``TILE_POSITIONS * block`` values), the thread's own;
- ``windows[r]``: block ``r`` of a sample's output rows ``(a, b)``: its first
  and last row and the padded input rows it reads, ``(z0, depth, h0,
  height)``.

Each sum adds its ``K`` terms in (channel, tap) order, one multiply-add at a
time: the direct sum's terms, padding's zeros included, so an inf or NaN
reaches exactly the outputs the direct sum gives it; and one tile computes a
position whichever thread runs it, so the bits do not depend on the threads.

Axis legend: N samples, G groups, C input channels and O output channels of
one group, K = C x taps; ``(A, B, E)`` the output, ``(D, H, W)`` the input;
``s*`` stride, ``d*`` dilation.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._kernels_moves import VECTOR_VALUES, _run_pointer
from ._kernels_tiled import _ask_for_512_bit_vectors
from ._kernels_wgrad import SQUARE, _transpose_square, transposed_rows  # sixteen by sixteen values transposed

__all__ = ["forward", "lay_out_filters", "TILE_POSITIONS", "PAIR_POSITIONS", "LANE_CHANNELS",
           "block_channels"]

#: Positions of a one-row tile: 14 x 2 vector sums, two filter vectors and a broadcast fill the 32 registers.
TILE_POSITIONS = 14
#: Positions per row of a two-row tile (rows of 7 to 13 outputs).
PAIR_POSITIONS = TILE_POSITIONS // 2
#: Input channels side by side in a job's grid: one 16-value square of :func:`._kernels_wgrad._transpose_square`.
LANE_CHANNELS = SQUARE


def block_channels(itemsize: int) -> int:
    """Output channels of one tile: two float32 vectors of 16, or one float64 LLVM vector of 16 (two registers)."""
    return 2 * VECTOR_VALUES if itemsize == 4 else VECTOR_VALUES


def _pointer_suffix(values: int, bits: int) -> str:
    """The pointer part of an overloaded intrinsic's name for a pointer to ``values`` floats of ``bits``: ``p0``
    where LLVM's pointers are opaque (LLVM 17 on, Numba 0.61 on), else the pointee spelled out."""
    from llvmlite import binding
    return "p0" if binding.llvm_version_info[0] >= 17 else f"p0v{values}f{bits}"


@intrinsic
def _tile_sums(typingctx, grid, x_at, offsets, terms, weights, w_at, out, out_at, second_at, plane, kept, row_step,
               along, columns, rows):
    """``out[at_r + o*plane + q] = sum_{k < terms} weights[w_at + k*block + o] * grid[x_at + r*row_step + q*along +
    offsets[k]]`` for ``r < rows``, ``q < columns`` and ``o < kept`` of the tile's :func:`block_channels`
    channels, ``at_0 = out_at`` and ``at_1 = second_at``. The sums in LLVM vectors kept in registers through the
    loop over ``k``, each input value loaded once and broadcast, the filters' vectors loaded once per ``k``;
    then each 16 channels' vectors (one per position) transposed in registers (as
    :func:`._kernels_wgrad._transpose_square`) and a channel's positions stored with one masked store per
    row: nothing else in ``out`` is read or written. ``columns`` and ``rows`` literal; ``along`` literal (a
    constant displacement per position) or not."""
    if not (isinstance(columns, types.IntegerLiteral) and isinstance(rows, types.IntegerLiteral)):
        return None
    count_q, count_r = columns.literal_value, rows.literal_value
    literal_step = along.literal_value if isinstance(along, types.IntegerLiteral) else None
    if count_q * count_r > SQUARE:
        return None

    def codegen(context, builder, signature, args):
        _ask_for_512_bit_vectors(builder)
        item = context.get_value_type(signature.args[0].dtype)
        itemsize = context.get_abi_sizeof(item)
        vectors = 2 if itemsize == 4 else 1
        block = VECTOR_VALUES * vectors
        vector = ir.VectorType(item, VECTOR_VALUES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v{VECTOR_VALUES}f{8 * itemsize}")
        lanes_mask = ir.VectorType(ir.IntType(1), VECTOR_VALUES)
        masked_store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), ir.IntType(32), lanes_mask]),
            f"llvm.masked.store.v{VECTOR_VALUES}f{8 * itemsize}.{_pointer_suffix(VECTOR_VALUES, 8 * itemsize)}")
        intp = ir.IntType(64)
        x_first, term_count, w_first, first_out, second_out, plane_size, kept_channels, step = (
            context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 3, 5, 7, 8, 9, 10, 11))
        step_along = (ir.Constant(intp, literal_step) if literal_step is not None
                      else context.cast(builder, args[12], signature.args[12], types.intp))
        grid_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        offset_data = context.make_array(signature.args[2])(context, builder, args[2]).data
        out_data = context.make_array(signature.args[6])(context, builder, args[6]).data
        positions = count_q * count_r
        count = positions * vectors
        held = cgutils.alloca_once(builder, vector, size=count)  # promoted to registers by LLVM
        for i in range(count):
            builder.store(ir.Constant(vector, None), builder.gep(held, [ir.Constant(intp, i)]))
        # each position's displacement from the term's first cell: hoisted out of the loop by LLVM
        displacements = [builder.add(builder.mul(step, ir.Constant(intp, r)),
                                     builder.mul(step_along, ir.Constant(intp, q)))
                         for r in range(count_r) for q in range(count_q)]
        splat = ir.Constant(ir.VectorType(ir.IntType(32), VECTOR_VALUES), None)
        with cgutils.for_range(builder, term_count) as loop:
            k = loop.index
            first = builder.add(x_first, builder.load(builder.gep(offset_data, [k])))
            w_at_k = builder.add(w_first, builder.mul(k, ir.Constant(intp, block)))
            filters = [builder.load(_run_pointer(context, builder, signature.args[4], args[4],
                                                 builder.add(w_at_k, ir.Constant(intp, v * VECTOR_VALUES))),
                                    align=itemsize) for v in range(vectors)]
            totals = [builder.load(builder.gep(held, [ir.Constant(intp, i)])) for i in range(count)]
            for j, displacement in enumerate(displacements):
                value = builder.load(builder.gep(grid_data, [builder.add(first, displacement)]))
                value = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(ir.IntType(32), 0))
                value = builder.shuffle_vector(value, value, splat)
                for v in range(vectors):
                    totals[j * vectors + v] = builder.call(fma, [filters[v], value, totals[j * vectors + v]])
            for i in range(count):
                builder.store(totals[i], builder.gep(held, [ir.Constant(intp, i)]))
        totals = [builder.load(builder.gep(held, [ir.Constant(intp, i)])) for i in range(count)]
        # per row of the tile: its lanes, and the output index lane 0 lands on (lanes before it are masked off)
        row_masks = [ir.Constant(lanes_mask, [r * count_q <= m < (r + 1) * count_q for m in range(VECTOR_VALUES)])
                     for r in range(count_r)]
        row_firsts = [builder.sub(at, ir.Constant(intp, r * count_q)) for r, at in enumerate((first_out, second_out)[
            :count_r])]
        for v in range(vectors):
            square = [totals[j * vectors + v] for j in range(positions)]
            square += [ir.Constant(vector, None)] * (SQUARE - positions)
            square = transposed_rows(builder, square)
            for i in range(SQUARE):  # square[i]: channel v*16 + i at every position
                channel = v * VECTOR_VALUES + i
                with builder.if_then(builder.icmp_signed("<", ir.Constant(intp, channel), kept_channels)):
                    at_channel = builder.mul(plane_size, ir.Constant(intp, channel))
                    for r in range(count_r):
                        pointer = builder.gep(out_data, [builder.add(row_firsts[r], at_channel)])
                        builder.call(masked_store, [square[i], builder.bitcast(pointer, vector.as_pointer()),
                                                    ir.Constant(ir.IntType(32), itemsize), row_masks[r]])
        return context.get_dummy_value()

    return (types.none(grid, x_at, offsets, terms, weights, w_at, out, out_at, second_at, plane, kept, row_step,
                       along, columns, rows), codegen)


# One dispatcher per tile shape: the intrinsic takes its shape as literals, and a jitted function passes a constant
# argument on as a plain integer (numba.literally there forced literal dispatch onto forward's tuple arguments,
# which failed).
@njit(cache=True, nogil=True, inline="always")
def _row_tile(grid, x_at, offsets, terms, weights, w_at, out, out_at, plane, kept, sw):
    """:func:`_tile_sums` of one row's :data:`TILE_POSITIONS` positions, ``sw`` input positions apart (a
    literal step at strides 1 and 2)."""
    if sw == 1:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, out_at, plane, kept, 0, LANE_CHANNELS,
                   14, 1)
    elif sw == 2:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, out_at, plane, kept, 0,
                   2 * LANE_CHANNELS, 14, 1)
    else:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, out_at, plane, kept, 0,
                   sw * LANE_CHANNELS, 14, 1)


@njit(cache=True, nogil=True, inline="always")
def _pair_tile(grid, x_at, offsets, terms, weights, w_at, out, out_at, second_at, plane, kept, row_step, sw):
    """:func:`_tile_sums` of two rows' :data:`PAIR_POSITIONS` positions, the second ``row_step`` after the first
    in the grid and stored from ``second_at`` in the output."""
    if sw == 1:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, second_at, plane, kept, row_step,
                   LANE_CHANNELS, 7, 2)
    elif sw == 2:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, second_at, plane, kept, row_step,
                   2 * LANE_CHANNELS, 7, 2)
    else:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, second_at, plane, kept, row_step,
                   sw * LANE_CHANNELS, 7, 2)


@njit(cache=True, nogil=True, inline="always")
def _half_tile(grid, x_at, offsets, terms, weights, w_at, out, out_at, plane, kept, sw):
    """:func:`_tile_sums` of one row's :data:`PAIR_POSITIONS` positions (a two-row job's odd last row: half the
    sums a term, where pairing it with the row before recomputed that row, 8 rows' work for ResNet's 7)."""
    if sw == 1:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, out_at, plane, kept, 0, LANE_CHANNELS,
                   7, 1)
    elif sw == 2:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, out_at, plane, kept, 0,
                   2 * LANE_CHANNELS, 7, 1)
    else:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, out, out_at, out_at, plane, kept, 0,
                   sw * LANE_CHANNELS, 7, 1)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _narrow_tile(grid, x_at, offsets, terms, weights, w_at, tile, sw, columns, block):
    """The sums of :func:`_tile_sums` for one row of ``columns`` positions, one position at a time."""
    for q in range(columns):
        for o in range(block):
            tile[q * block + o] = 0
        for k in range(terms):
            value = grid[x_at + q * sw * LANE_CHANNELS + offsets[k]]
            at = w_at + k * block
            for o in range(block):
                tile[q * block + o] += weights[at + o] * value


@njit(cache=True, nogil=True, inline="always")
def _store(tile, out, out_at, plane, channels, block, columns):
    """A narrow tile's ``columns`` positions of the first ``channels`` channels into the output's planes: a
    channel's run from ``out_at`` on, ``plane`` apart."""
    for o in range(channels):
        at, read = out_at + o * plane, o
        for q in range(columns):
            out[at + q] = tile[read + q * block]


@njit(cache=True, nogil=True)
def lay_out_filters(rows, weights, first, last, out_channels, block):
    """``weights[(g*blocks + b)*K*block + k*block + o] = rows[g*O + b*block + o, k]`` (zero where ``b*block + o >=
    O``) for the blocks ``first:last`` (``g*blocks + b``) of output channels: the filters ``rows`` ``(G*O, K)``
    laid out for :func:`forward`, sixteen channels by sixteen terms transposed in registers at a time
    (:func:`._kernels_wgrad._transpose_square`: the same 9.4 MB of ResNet-50 layer4.0's filters took 3.5 ms
    as NumPy's strided copy), the edges one value at a time."""
    terms = rows.shape[1]
    flat_rows, blocks = rows.reshape(rows.size), -(-out_channels // block)
    for outer in range(first, last):
        g, b = outer // blocks, outer % blocks
        write = outer * terms * block
        for part in range(0, block, SQUARE):
            o0 = b * block + part  # the part's first channel within the group
            kept = max(0, min(SQUARE, out_channels - o0))
            read = (g * out_channels + o0) * terms
            k = 0
            if kept == SQUARE:
                while k + SQUARE <= terms:
                    _transpose_square(flat_rows, read + k, terms, weights, write + k * block + part, block)
                    k += SQUARE
            for kk in range(k, terms):
                for o in range(SQUARE):
                    weights[write + kk * block + part + o] = flat_rows[read + o * terms + kk] if o < kept else 0


@njit(cache=True, nogil=True, inline="always")
def _fill_row(x, read, plane, grid, write, width, low_w, wp, channels):
    """One input row of ``channels`` (at most 16) planes, ``plane`` apart from ``x[read]`` on, into the grid row
    at ``write``, a position's :data:`LANE_CHANNELS` channels side by side: ``low_w`` positions of zeros, the
    row's ``width``, then zeros to ``wp`` positions; lanes past ``channels`` zero. Sixteen positions of sixteen
    whole channels at a time transposed in registers (the row's last square moved back to end with it), else
    one value at a time."""
    for i in range(low_w * LANE_CHANNELS):
        grid[write + i] = 0
    if channels == LANE_CHANNELS and width >= SQUARE:
        column = 0
        while column < width:
            column = min(column, width - SQUARE)
            _transpose_square(x, read + column, plane, grid, write + (low_w + column) * LANE_CHANNELS,
                              LANE_CHANNELS)
            column += SQUARE
    else:
        for column in range(width):
            at = write + (low_w + column) * LANE_CHANNELS
            for c in range(LANE_CHANNELS):
                grid[at + c] = x[read + c * plane + column] if c < channels else 0
    for i in range((low_w + width) * LANE_CHANNELS, wp * LANE_CHANNELS):
        grid[write + i] = 0


@njit(cache=True, nogil=True)
def _fill_grid(x, grid, first_plane, channels, size3, z0, depth, h0, height, lows, wp):
    """The grid of one job: the input's planes ``first_plane:first_plane + channels`` (flat ``x``, planes of
    ``size3`` ``(D, H, W)``), padded rows ``z0:z0 + depth`` by ``h0:h0 + height`` (rows outside the input, and
    the padding along the row, zero), as ``(channels / 16, depth, height, wp, 16)``."""
    d_size, h_size, w_size = size3
    plane = d_size * h_size * w_size
    row_values = wp * LANE_CHANNELS
    for block in range(-(-channels // LANE_CHANNELS)):
        here = min(LANE_CHANNELS, channels - block * LANE_CHANNELS)
        for zi in range(depth):
            z = z0 + zi - lows[0]
            for hi in range(height):
                h = h0 + hi - lows[1]
                write = ((block * depth + zi) * height + hi) * row_values
                if z < 0 or z >= d_size or h < 0 or h >= h_size:
                    for i in range(row_values):
                        grid[write + i] = 0
                else:
                    read = (first_plane + block * LANE_CHANNELS) * plane + (z * h_size + h) * w_size
                    _fill_row(x, read, plane, grid, write, w_size, lows[2], wp, here)


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward(x, weights, out, grid, offsets, tile, first, last, groups, out_channels, windows, out3, size3,
            kernel3, strides, dilations, lows, wp):
    """The convolution of jobs ``first:last`` (the module's contract). Job ``(n*G + g)*R + r`` fills the
    thread's ``grid`` with the input rows that block ``r`` of sample ``n``'s output rows ``(a, b)`` read (group
    ``g``'s channels, 16 side by side: :func:`_fill_grid`), then sums every block of output channels over those
    rows. ``windows[r]``: the block's first and last output rows and its padded input rows ``(z0, depth, h0,
    height)``. ``out3`` ``(A, B, E)``, ``size3`` the input's ``(D, H, W)``; ``wp`` the padded row's
    positions."""
    block = tile.size // TILE_POSITIONS
    channels = x.shape[1] // groups
    taps = kernel3[0] * kernel3[1] * kernel3[2]
    terms = channels * taps
    blocks = -(-out_channels // block)
    a_size, b_size, e_size = out3
    plane = a_size * b_size * e_size
    sd, sh, sw = strides
    dd, dh, dw = dilations
    flat_x = x.reshape(x.size)
    pair = e_size < TILE_POSITIONS and e_size >= PAIR_POSITIONS
    row_values = wp * LANE_CHANNELS
    row_blocks = windows.shape[0]
    for job in range(first, last):
        outer, r = job // row_blocks, job % row_blocks
        n, g = outer // groups, outer % groups
        row0, row1, z0, depth, h0, height = windows[r]
        _fill_grid(flat_x, grid, n * x.shape[1] + g * channels, channels, size3, z0, depth, h0, height, lows, wp)
        k = 0  # term (c, kd, kh, kw)'s cell from a position's first: channel c's block, depth, row and lane
        for c in range(channels):
            for kd in range(kernel3[0]):
                for kh in range(kernel3[1]):
                    for kw in range(kernel3[2]):
                        offsets[k] = ((((c // LANE_CHANNELS) * depth + kd * dd) * height + kh * dh) * wp
                                      + kw * dw) * LANE_CHANNELS + c % LANE_CHANNELS
                        k += 1
        for b in range(blocks):
            kept = min(block, out_channels - b * block)
            w_at = (g * blocks + b) * terms * block
            o_first = ((n * groups + g) * out_channels + b * block) * plane
            row = row0
            while row < row1:
                a, bb = row // b_size, row % b_size
                x0 = ((a * sd - z0) * height + bb * sh - h0) * row_values
                o0 = o_first + row * e_size
                if pair and row + 1 < row1:  # two rows a tile
                    a1, b1 = (row + 1) // b_size, (row + 1) % b_size
                    x1 = ((a1 * sd - z0) * height + b1 * sh - h0) * row_values
                    e = 0
                    while e < e_size:
                        e = min(e, e_size - PAIR_POSITIONS)
                        _pair_tile(grid, x0 + e * sw * LANE_CHANNELS, offsets, terms, weights, w_at, out, o0 + e,
                                   o0 + e_size + e, plane, kept, x1 - x0, sw)
                        e += PAIR_POSITIONS
                    row += 2
                    continue
                if pair:  # an odd last row: tiles of one row's PAIR_POSITIONS
                    e = 0
                    while e < e_size:
                        e = min(e, e_size - PAIR_POSITIONS)
                        _half_tile(grid, x0 + e * sw * LANE_CHANNELS, offsets, terms, weights, w_at, out, o0 + e,
                                   plane, kept, sw)
                        e += PAIR_POSITIONS
                    row += 1
                    continue
                e = 0
                while e < e_size:
                    if e_size >= TILE_POSITIONS:
                        e = min(e, e_size - TILE_POSITIONS)
                        _row_tile(grid, x0 + e * sw * LANE_CHANNELS, offsets, terms, weights, w_at, out, o0 + e,
                                  plane, kept, sw)
                        e += TILE_POSITIONS
                    else:
                        _narrow_tile(grid, x0, offsets, terms, weights, w_at, tile, sw, e_size, block)
                        _store(tile, out, o0, plane, kept, block, e_size)
                        e = e_size
                row += 1
