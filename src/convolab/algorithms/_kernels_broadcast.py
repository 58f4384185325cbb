"""The "broadcast" forward: output channels in the vector lanes, each input value broadcast across them.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrapper that pads the input, lays out the filters and shares
the jobs among threads is :mod:`.broadcast`.

A *tile* is :data:`TILE_POSITIONS` output positions by :data:`VECTORS` vectors
of output channels (float32: two vectors of 16 channels; float64: one LLVM
vector of 16, two registers): 28 vector sums, held in registers for the whole
sum over the taps (:func:`_tile_sums`, an LLVM intrinsic). Per term ``k``
(input channel, tap) it loads the tile's filters for ``k`` (its vectors of
output channels, contiguous in the laid-out filters) and, per position, one
input value straight from the zero-padded input, broadcast to a vector:
28 multiply-adds per 16 loads, and no columns packed. The positions of a tile
are one output row's :data:`TILE_POSITIONS` consecutive ones, or two rows'
:data:`PAIR_POSITIONS` (rows of 7 to 13 outputs: ResNet's 7x7); along a row they
read the input ``sw`` apart, so that at strides 1 and 2 (literal) every
broadcast's address is one register plus a constant. A row's last tile is
moved back to end with it, and an odd last row is paired with the one before
(both recomputed, stored alike). Rows narrower than :data:`PAIR_POSITIONS`
are summed one position at a time (:func:`_narrow_tile`).

The sums are stored into the thread's tile scratch, ``(positions, channels)``,
then into the output's planes, a row of the tile's positions per channel.

The contract of :func:`forward`:

- ``grid`` ``(N, G*C, Dp, Hp, Wp)``: the input zero-padded (by its low sides,
  and at the high sides as far as the windows read), C-contiguous, flat;
- ``weights`` ``(G, blocks, K, block)``: per group and block of ``block``
  output channels, term ``k``'s filters of the block (zero past the group's
  last channel: computed, never stored), flat;
- ``offsets[k]``: term ``k``'s flat offset from a position's first input cell
  (``(c*Dp + kd*dd)*Hp*Wp + kh*dh*Wp + kw*dw``);
- ``out`` ``(N, G*O, A, B, E)`` flat; ``tile`` the thread's scratch of
  ``TILE_POSITIONS * block`` values;
- a job is (block of output rows, group, block of output channels): the rows
  ``(n, a, b)`` of every sample one after another, split evenly.

Each sum adds its ``K`` terms in ``k`` order, one multiply-add at a time: the
direct sum's terms, padding's zeros included, so an inf or NaN reaches exactly
the outputs the direct sum gives it.

Axis legend: N samples, G groups, C input channels and O output channels of
one group, K = C x taps; ``(A, B, E)`` the output, ``(Dp, Hp, Wp)`` the padded
input; ``s*`` stride, ``d*`` dilation.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._kernels_moves import VECTOR_VALUES, _run_pointer
from ._kernels_tiled import _ask_for_512_bit_vectors
from ._kernels_wgrad import SQUARE, _transpose_square  # sixteen by sixteen values transposed in registers

__all__ = ["forward", "lay_out_filters", "TILE_POSITIONS", "PAIR_POSITIONS", "block_channels"]

#: Positions of a one-row tile: 14 x 2 vector sums, two filter vectors and a broadcast fill the 32 registers.
TILE_POSITIONS = 14
#: Positions per row of a two-row tile (rows of 7 to 13 outputs).
PAIR_POSITIONS = TILE_POSITIONS // 2


def block_channels(itemsize: int) -> int:
    """Output channels of one tile: two float32 vectors of 16, or one float64 LLVM vector of 16 (two registers)."""
    return 2 * VECTOR_VALUES if itemsize == 4 else VECTOR_VALUES


@intrinsic
def _tile_sums(typingctx, grid, x_at, offsets, terms, weights, w_at, tile, row_step, sw, columns, rows):
    """``tile[(r*columns + q)*block + o] = sum_{k < terms} weights[w_at + k*block + o] * grid[x_at + r*row_step +
    q*sw + offsets[k]]`` for ``r < rows``, ``q < columns`` and the tile's :func:`block_channels` channels ``o``:
    the sums in LLVM vectors kept in registers through the loop over ``k``, each input value loaded once and
    broadcast, the filters' vectors loaded once per ``k``. ``columns`` and ``rows`` literal; ``sw`` literal (a
    constant displacement per position) or not."""
    if not (isinstance(columns, types.IntegerLiteral) and isinstance(rows, types.IntegerLiteral)):
        return None
    count_q, count_r = columns.literal_value, rows.literal_value
    literal_step = sw.literal_value if isinstance(sw, types.IntegerLiteral) else None

    def codegen(context, builder, signature, args):
        _ask_for_512_bit_vectors(builder)
        item = context.get_value_type(signature.args[0].dtype)
        itemsize = context.get_abi_sizeof(item)
        vectors = 2 if itemsize == 4 else 1
        block = VECTOR_VALUES * vectors
        vector = ir.VectorType(item, VECTOR_VALUES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v{VECTOR_VALUES}f{8 * itemsize}")
        intp = ir.IntType(64)
        x_first, term_count, w_first, step = (context.cast(builder, args[i], signature.args[i], types.intp)
                                              for i in (1, 3, 5, 7))
        along = (ir.Constant(intp, literal_step) if literal_step is not None
                 else context.cast(builder, args[8], signature.args[8], types.intp))
        grid_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        offset_data = context.make_array(signature.args[2])(context, builder, args[2]).data
        count = count_q * count_r * vectors
        held = cgutils.alloca_once(builder, vector, size=count)  # promoted to registers by LLVM
        for i in range(count):
            builder.store(ir.Constant(vector, None), builder.gep(held, [ir.Constant(intp, i)]))
        # each position's displacement from the term's first cell: hoisted out of the loop by LLVM
        displacements = [builder.add(builder.mul(step, ir.Constant(intp, r)),
                                     builder.mul(along, ir.Constant(intp, q)))
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
        for i in range(count):
            builder.store(builder.load(builder.gep(held, [ir.Constant(intp, i)])),
                          _run_pointer(context, builder, signature.args[6], args[6],
                                       ir.Constant(intp, i * VECTOR_VALUES)), align=itemsize)
        return context.get_dummy_value()

    return types.none(grid, x_at, offsets, terms, weights, w_at, tile, row_step, sw, columns, rows), codegen


@njit(cache=True, nogil=True, inline="always")
def _row_tile(grid, x_at, offsets, terms, weights, w_at, tile, sw):
    """:func:`_tile_sums` of one row's :data:`TILE_POSITIONS` positions, ``sw`` a literal at strides 1 and 2."""
    if sw == 1:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, tile, 0, 1, 14, 1)
    elif sw == 2:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, tile, 0, 2, 14, 1)
    else:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, tile, 0, sw, 14, 1)


@njit(cache=True, nogil=True, inline="always")
def _pair_tile(grid, x_at, offsets, terms, weights, w_at, tile, row_step, sw):
    """:func:`_tile_sums` of two rows' :data:`PAIR_POSITIONS` positions, the second ``row_step`` after the first."""
    if sw == 1:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, tile, row_step, 1, 7, 2)
    elif sw == 2:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, tile, row_step, 2, 7, 2)
    else:
        _tile_sums(grid, x_at, offsets, terms, weights, w_at, tile, row_step, sw, 7, 2)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _narrow_tile(grid, x_at, offsets, terms, weights, w_at, tile, sw, columns, block):
    """The sums of :func:`_tile_sums` for one row of ``columns`` positions, one position at a time."""
    for q in range(columns):
        for o in range(block):
            tile[q * block + o] = 0
        for k in range(terms):
            value = grid[x_at + q * sw + offsets[k]]
            at = w_at + k * block
            for o in range(block):
                tile[q * block + o] += weights[at + o] * value


@njit(cache=True, nogil=True, inline="always")
def _store(tile, out, out_at, plane, channels, block, columns, row):
    """Tile row ``row``'s ``columns`` positions of the first ``channels`` channels into the output's planes: a
    channel's run from ``out_at`` on, ``plane`` apart."""
    for o in range(channels):
        at, read = out_at + o * plane, row * columns * block + o
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
def _row_starts(row, sample_rows, b_size, e_size, channels, channel0, padded3, padded_plane, sd, sh, groups, g,
                out_channels, o_first, plane):
    """Output row ``row`` (``(n, a, b)`` of all samples' rows): the flat index of its first position's first
    input cell (channel ``channel0``) in the grid, and of its first output (channel ``o_first`` of group ``g``)."""
    n, rest = row // sample_rows, row % sample_rows
    a, b = rest // b_size, rest % b_size
    x_at = ((n * channels + channel0) * padded3[0] + a * sd) * padded_plane + b * sh * padded3[2]
    o_at = ((n * groups + g) * out_channels + o_first) * plane + (a * b_size + b) * e_size
    return x_at, o_at


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward(grid, weights, offsets, out, tile, first, last, groups, out_channels, row_blocks, out3, padded3,
            sd, sh, sw):
    """The convolution of jobs ``first:last`` (the module's contract). Job ``(r*G + g)*blocks + b`` sums group
    ``g``'s block ``b`` of output channels over block ``r`` of the output rows of every sample (a row ``(n, a,
    b)`` is ``E`` outputs; the blocks split the rows evenly): consecutive jobs read the same rows of the input,
    which stay in the core's cache while the blocks of filters stream. ``out3`` ``(A, B, E)``, ``padded3``
    ``(Dp, Hp, Wp)``."""
    block = tile.size // TILE_POSITIONS
    terms = offsets.size
    blocks = weights.size // (groups * terms * block)
    samples = out.size // (groups * out_channels * out3[0] * out3[1] * out3[2])
    a_size, b_size, e_size = out3
    channels = grid.size // (samples * padded3[0] * padded3[1] * padded3[2])  # G*C
    plane, padded_plane = a_size * b_size * e_size, padded3[1] * padded3[2]
    sample_rows = a_size * b_size
    all_rows = samples * sample_rows
    pair = e_size < TILE_POSITIONS and e_size >= PAIR_POSITIONS
    for job in range(first, last):
        r, outer = job // (groups * blocks), job % (groups * blocks)
        g, b = outer // blocks, outer % blocks
        row0, row1 = r * all_rows // row_blocks, (r + 1) * all_rows // row_blocks
        if row1 == row0:
            continue
        kept = min(block, out_channels - b * block)  # the block's channels inside the group
        w_at = (g * blocks + b) * terms * block
        channel0 = g * (channels // groups)
        row = row0
        while row < row1:
            if pair:  # two rows a tile; an odd last row pairs with the one before it (or itself, alone)
                row = min(row, max(row0, row1 - 2))
                rows_here = min(2, row1 - row)
            else:
                rows_here = 1
            x0, o0 = _row_starts(row, sample_rows, b_size, e_size, channels, channel0, padded3, padded_plane, sd, sh,
                                 groups, g, out_channels, b * block, plane)
            if pair:
                x1, o1 = _row_starts(row + rows_here - 1, sample_rows, b_size, e_size, channels, channel0, padded3,
                                     padded_plane, sd, sh, groups, g, out_channels, b * block, plane)
                e = 0
                while e < e_size:
                    e = min(e, e_size - PAIR_POSITIONS)
                    _pair_tile(grid, x0 + e * sw, offsets, terms, weights, w_at, tile, x1 - x0, sw)
                    _store(tile, out, o0 + e, plane, kept, block, PAIR_POSITIONS, 0)
                    if rows_here == 2:
                        _store(tile, out, o1 + e, plane, kept, block, PAIR_POSITIONS, 1)
                    e += PAIR_POSITIONS
                row += 2
                continue
            e = 0
            while e < e_size:
                if e_size >= TILE_POSITIONS:
                    e = min(e, e_size - TILE_POSITIONS)
                    _row_tile(grid, x0 + e * sw, offsets, terms, weights, w_at, tile, sw)
                    _store(tile, out, o0 + e, plane, kept, block, TILE_POSITIONS, 0)
                    e += TILE_POSITIONS
                else:
                    _narrow_tile(grid, x0, offsets, terms, weights, w_at, tile, sw, e_size, block)
                    _store(tile, out, o0, plane, kept, block, e_size, 0)
                    e = e_size
            row += 1
