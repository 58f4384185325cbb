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
input out channels last (``(N, D, H, W, C)``, zero-padded to whole tiles,
:func:`channels_last_rows`) per block of samples, which transposes faster than
a gather of the tiles' cells would.

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

In one and two dimensions the input transform is straight-line code instead
(:func:`_straight_input_tiles`, generated from the same matrices): per channel
it reads the tile's ``a^d`` values once into locals and writes every transformed
value once, the nonzero coefficients only, so the compiler vectorizes one loop
over a block of channels with no scratch passes between the axes (measured 3x
faster than the loops for F(4x4), 1.3x for F(2x2), 64 channels in float32). The
output transform is generated the same way (:func:`_straight_output_tiles`):
per tile and block of channels it reads the ``a^d`` products once and writes
the ``m^d`` outputs of the tile into a scratch block, from which each output
row of a group of neighbouring tiles is stored channel by channel (2x faster
than the loops for F(4x4), 1.3x for F(2x2): 2.2-2.6e9 products read per
second, one thread, 64-256 channels). In three dimensions a tile holds 216
values, more than such code keeps in registers, and the loops stay.

Axis legend: N samples, C input channels, O output channels, P tile
positions, T tiles; ``(D, H, W)`` the input before padding, ``(OD, OH, OW)``
the output.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from numba import njit, uint64

from ._kernels_wgrad import SQUARE, _transpose_square  # sixteen by sixteen values transposed in registers
from .winograd import STORE_TILES, winograd_matrices

__all__ = ["transforms", "dilated_transforms", "filter_transform", "filter_panels", "channels_last_rows"]


@njit(cache=True, nogil=True)
def channels_last_rows(source, target, first, r0, r1, low_d, low_h, low_w):
    """The layout the input transform reads: ``target[s, d, h, w, c] = source[first + s, c, d - low_d, h - low_h,
    w - low_w]`` where that cell is inside ``source``, zero elsewhere (the padding and the high tiles' reads),
    for the target's rows ``(s, d, h)`` numbered ``(s*D + d)*H + h`` in ``r0:r1``.

    ``source`` ``(N, C, D, H, W)`` and ``target`` ``(S, D', H', W', C)``, C-contiguous, one dtype; a row is
    written by its call alone. A row's source cells are ``C`` runs of ``W`` values, ``D*H*W`` apart: rows of
    at least :data:`SQUARE` values go sixteen channels by sixteen columns through registers, narrower ones
    a column at a time, its channels read ``D*H*W`` apart and written side by side. NumPy's transposing copies
    and fills, a few per row, took 0.6-0.9 ms of 8 x 512 x 7x7 to 8 x 64 x 56x56 inputs (two threads), 1.3-3.4x
    this loop's time.
    """
    channels, depth, height, width = source.shape[1], source.shape[2], source.shape[3], source.shape[4]
    rows_d, rows_h = target.shape[1], target.shape[2]
    plane = depth * height * width  # a channel's cells
    flat_source = source.reshape(source.size)
    whole_c, whole_w = channels - channels % SQUARE, width - width % SQUARE
    for r in range(r0, r1):
        s, d, h = r // (rows_d * rows_h), r // rows_h % rows_d, r % rows_h
        sd, sh = d - low_d, h - low_h
        row = target[s, d, h]  # (W', C)
        if sd < 0 or sd >= depth or sh < 0 or sh >= height:
            row[:, :] = 0
            continue
        row[:low_w, :] = 0
        row[low_w + width:, :] = 0
        flat_row = row.reshape(row.size)
        read = ((first + s) * channels * plane) + (sd * height + sh) * width  # channel 0's run
        if whole_w == 0:
            for w in range(width):
                write = (low_w + w) * channels
                for c in range(channels):
                    flat_row[write + c] = flat_source[read + c * plane + w]
            continue
        for c0 in range(0, whole_c, SQUARE):
            for w0 in range(0, whole_w, SQUARE):
                _transpose_square(flat_source, read + c0 * plane + w0, plane, flat_row, (low_w + w0) * channels + c0,
                                  channels)
            for c in range(c0, c0 + SQUARE):
                for w in range(whole_w, width):
                    flat_row[(low_w + w) * channels + c] = flat_source[read + c * plane + w]
        for c in range(whole_c, channels):
            for w in range(width):
                flat_row[(low_w + w) * channels + c] = flat_source[read + c * plane + w]


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
        O)``: one tile's products transformed along the first axis, the first
        two; ``along_w`` ``(STORE_TILES, MD, MH, m, O)``: a group of
        neighbouring tiles transformed along all three, then stored channel
        by channel, each output row's ``STORE_TILES * m`` cells in one run
        (tile by tile, every store went to another cache line, four values
        each, and the stores took most of the pass).
        """
        channels, out_d, out_h, out_w = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
        tw_count = tiles[2]
        for job in range(first, last):
            n, td, th = _tile_row(row0 + job, tiles)
            for t0 in range(0, tw_count, STORE_TILES):
                group = min(STORE_TILES, tw_count - t0)
                for g in range(group):
                    column = job * tw_count + t0 + g
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
                                target = along_w[g, s, u, v]
                                for c in range(channels):
                                    total = ZERO
                                    for j in range(A):
                                        total += AT[v][j] * along_h[s, u, j, c]
                                    target[c] = total
                first_w = t0 * m
                width = min(group * m, out_w - first_w)
                for s in range(min(MD, out_d - td * MD)):
                    for u in range(min(MH, out_h - th * MH)):
                        for o in range(channels):
                            for e in range(width):
                                out[n, o, td * MD + s, th * MH + u, first_w + e] = along_w[e // m, s, u, e % m, o]

    if rank <= 2:
        input_tiles, output_tiles = _straight_input_tiles(m, rank, dtype), _straight_output_tiles(m, rank, dtype)
    return input_tiles, output_tiles


@lru_cache(maxsize=None)
def dilated_transforms(m: int, rank: int, dtype: str) -> tuple[Callable, Callable]:
    """``(input_tiles, output_tiles)`` of :func:`transforms` (1 or 2 axes) for the phases of a stride-1 dilated
    problem (:mod:`.space_to_batch`), read from the samples and written to them in place: no split, no interleave.

    Each takes two more arguments after the scratch: ``dilation`` (int64, three axes, the first 1) and ``phases``
    (its product). The tile rows' samples are the phase samples ``n = s*phases + r_h*d_w + r_w``: phase ``(r_h,
    r_w)`` of sample ``s``. ``input_tiles`` reads ``padded`` (the samples themselves, padded and laid out
    channels last, ``d`` times a phase's cells per axis) at ``(r_h + d_h*i, r_w + d_w*j)`` for a phase's cell
    ``(i, j)``; ``output_tiles`` writes ``out`` (the dilated problem's output) at ``(r_h + d_h*u, r_w + d_w*v)``
    for a phase's output ``(u, v)``, those ``u < ceil((OH - r_h) / d_h)`` and ``v < ceil((OW - r_w) / d_w)``
    only (the phase's own outputs). With ``dilation`` all ones they are :func:`transforms`' kernels.
    """
    if rank == 3:
        raise ValueError("the dilated transforms are generated for 1 or 2 axes, got 3")
    return _straight_input_tiles(m, rank, dtype, True), _straight_output_tiles(m, rank, dtype, True)


#: Channels one pass of the straight-line input transform handles: its results go through a scratch block of
#: ``P * CHANNEL_BLOCK`` values (in the L1 cache), and the block's loop has a constant length, so that the
#: compiler can tell the scratch rows apart and vectorize it (8 and 16 measured slower, 64 no faster).
CHANNEL_BLOCK = 32


def _combination(coefficients: Sequence[float], names: Sequence[str]) -> str:
    """The expression ``sum(coefficient * name)`` over the nonzero coefficients, a ``1`` or ``-1`` as a plain sign
    (the rest as ``S(coefficient)``, ``S`` the kernel's scalar type)."""
    terms = []
    for coefficient, name in zip(coefficients, names):
        if coefficient == 0:
            continue
        factor = "" if abs(coefficient) == 1 else f"S({abs(float(coefficient))!r}) * "
        terms.append(("- " if coefficient < 0 else "+ ") + factor + name)
    text = " ".join(terms) or "+ S(0)"
    return text[2:] if text.startswith("+") else "-" + text[2:]


def _straight_transform_lines(m: int, rank: int, count: str) -> list[str]:
    """The body of the straight-line input transform's channel loop ``for c in range(count)``: load the tile's
    ``a^rank`` values of channel ``base + c``, apply ``B^T`` along each axis (the last first), store every
    result to ``scratch[p * CHANNEL_BLOCK + c]``."""
    _, _, b_t = winograd_matrices(m, 3)
    a = m + 2
    sizes = (a if rank == 3 else 1, a if rank >= 2 else 1, a)  # (AD, AH, A)
    cells = list(itertools.product(*(range(size) for size in sizes)))
    lines = [f"d_{k}_{i}_{j} = source[base + uint64({k} * step_d + {i} * step_h + {j} * step_w) + c]"
             for k, i, j in cells]
    names = {cell: "d_{}_{}_{}".format(*cell) for cell in cells}
    for axis in (2, 1, 0):
        if sizes[axis] == 1:
            continue
        along = {}
        for cell in cells:
            reads = [names[(*cell[:axis], q, *cell[axis + 1:])] for q in range(a)]
            along[cell] = "t{}_{}_{}_{}".format(axis, *cell)
            lines.append(f"{along[cell]} = {_combination(b_t[cell[axis]], reads)}")
        names = along
    lines += [f"scratch[uint64({p * CHANNEL_BLOCK}) + uint64(c)] = {names[cell]}" for p, cell in enumerate(cells)]
    return [f"for c in range({count}):"] + ["    " + line for line in lines]


def _straight_input_source(m: int, rank: int, name: str, dilated: bool = False) -> str:
    """The source of :func:`_straight_input_tiles`'s kernel ``name``: the contract of ``input_tiles`` (the
    scratch arguments unused); ``dilated``: :func:`dilated_transforms`' contract instead."""
    a = m + 2
    positions = a ** rank
    block = CHANNEL_BLOCK
    copy_out = [f"for p in range({positions}):",
                "    into = uint64(p * plane + column + c0)",
                "    for c in range(uint64(width)):",
                f"        target[into + c] = scratch[uint64(p * {block}) + c]"]
    full = _straight_transform_lines(m, rank, f"uint64({block})")
    rest = _straight_transform_lines(m, rank, "uint64(width)")
    if dilated:  # a phase ``(r_h, r_w)`` of a sample: its cells every ``d``-th of the sample's, from ``(r_h, r_w)``
        arguments = "along_w, along_h, dilation, phases"
        steps = "dilation[2] * channels, dilation[1] * width_in * channels, height * width_in * channels"
        corner = (f"n // phases * depth * step_d + (n % phases // dilation[2] * width_in + n % phases % dilation[2])"
                  f" * channels + th * {m if rank >= 2 else 0} * step_h")
    else:
        arguments = "along_w, along_h"
        steps = "channels, width_in * channels, height * width_in * channels"
        corner = (f"n * depth * step_d + td * {m if rank == 3 else 0} * step_d + th * {m if rank >= 2 else 0}"
                  " * step_h")
    head = f"""def {name}(padded, transformed, tiles, row0, first, last, {arguments}):
    depth, height, width_in, channels = padded.shape[1], padded.shape[2], padded.shape[3], padded.shape[4]
    source, target = padded.reshape(padded.size), transformed.reshape(transformed.size)
    scratch = np.empty({positions * block}, dtype=padded.dtype)
    step_w, step_h, step_d = {steps}
    plane, tw_count, per_sample = transformed.shape[1] * channels, tiles[2], tiles[0] * tiles[1]
    for job in range(first, last):
        row = row0 + job
        n, td, th = row // per_sample, row % per_sample // tiles[1], row % tiles[1]
        corner = {corner}
        for t in range(tw_count):
            column = (job * tw_count + t) * channels
            for c0 in range(0, channels, {block}):
                base = uint64(corner + t * {m} * step_w + c0)
                width = min({block}, channels - c0)
                if width == {block}:
"""
    indent = " " * 20
    body = [indent + line for line in full] + [" " * 16 + "else:"] + [indent + line for line in rest]
    return head + "\n".join(body + [" " * 16 + line for line in copy_out]) + "\n"


def _straight_input_tiles(m: int, rank: int, dtype: str, dilated: bool = False) -> Callable:
    """The input transform of F(m, 3) over ``rank`` (1 or 2) axes as generated straight-line code: the contract
    of ``input_tiles`` in :func:`transforms`.

    Per tile and block of :data:`CHANNEL_BLOCK` channels, one loop over the
    channels reads the tile's values into locals, applies ``B^T`` along each
    axis with its nonzero coefficients written out, and writes the results
    to a scratch block, copied to ``transformed`` row by row (the stores of
    one loop then have distances the compiler knows, and it vectorizes it).
    The source is compiled under this module's file name, so that Numba
    caches it with the module's other kernels; each tile size and rank has a
    kernel name of its own, so their caches never meet.
    """
    name = f"input_tiles_f{m}_{rank}d{'_dilated' if dilated else ''}"
    namespace = {"__name__": __name__, "np": np, "uint64": uint64, "S": np.dtype(dtype).type}
    exec(compile(_straight_input_source(m, rank, name, dilated), __file__, "exec"), namespace)  # noqa: S102
    return njit(cache=True, nogil=True, fastmath={"contract"})(namespace[name])


def _straight_output_lines(m: int, rank: int, count: str) -> list[str]:
    """The body of the straight-line output transform's channel loop ``for c in range(count)``: load the tile's
    ``a^rank`` products of channel ``o0 + c`` (``plane`` apart per position from ``at``), apply ``A^T`` along the
    height (the loops' order: the same sums) and then the width, store every output of the tile to
    ``stage[((u * STORE_TILES * m) + g * m + v) * CHANNEL_BLOCK + c]``: output row ``u``, column ``g*m + v`` of
    the group of tiles."""
    a_t, _, _ = winograd_matrices(m, 3)
    a = m + 2
    rows = a if rank >= 2 else 1
    cells = list(itertools.product(range(rows), range(a)))
    lines = [f"p_{i}_{j} = source[at + uint64({i * a + j} * plane) + c]" for i, j in cells]
    names = {cell: "p_{}_{}".format(*cell) for cell in cells}
    if rows > 1:  # along the height: (i, j) -> (u, j)
        names = {}
        for u, j in itertools.product(range(m), range(a)):
            names[(u, j)] = f"h_{u}_{j}"
            lines.append(f"h_{u}_{j} = {_combination(a_t[u], [f'p_{i}_{j}' for i in range(a)])}")
    out_rows = m if rows > 1 else 1
    for u, v in itertools.product(range(out_rows), range(m)):
        value = _combination(a_t[v], [names[(u, j)] for j in range(a)])
        lines.append(f"stage[group_at + uint64({(u * STORE_TILES * m + v) * CHANNEL_BLOCK}) + uint64(c)] = {value}")
    return [f"for c in range({count}):"] + ["    " + line for line in lines]


def _straight_output_source(m: int, rank: int, name: str, dilated: bool = False) -> str:
    """The source of :func:`_straight_output_tiles`'s kernel ``name``: the contract of ``output_tiles`` (the
    scratch arguments unused); ``dilated``: :func:`dilated_transforms`' contract instead."""
    block, store_width = CHANNEL_BLOCK, STORE_TILES * m
    out_rows = m if rank >= 2 else 1
    full = _straight_output_lines(m, rank, f"uint64({block})")
    rest = _straight_output_lines(m, rank, "uint64(width)")
    if dilated:  # phase (r_h, r_w) of sample n // phases: its outputs every d-th of the sample's, the rows and
        # columns it holds (ceil((out - r) / d)) kept
        arguments, step = "along_d, along_h, along_w, dilation, phases", "dilation[2]"
        place = f"""        sample, r_h, r_w = n // phases, n % phases // dilation[2], n % phases % dilation[2]
        kept_h = (out_h - r_h + dilation[1] - 1) // dilation[1]
        kept_w = (out_w - r_w + dilation[2] - 1) // dilation[2]
"""
        into = (f"uint64(sample * channels * out_plane + (r_h + dilation[1] * (th * {out_rows} + u)) * out_w + r_w"
                " + dilation[2] * first_w)")
    else:
        arguments, step, place = "along_d, along_h, along_w", "1", """        kept_h, kept_w = out_h, out_w
"""
        into = f"uint64(n * channels * out_plane + (th * {out_rows} + u) * out_w + first_w)"
    head = f"""def {name}(products, out, tiles, row0, first, last, {arguments}):
    channels, out_h, out_w = out.shape[1], out.shape[3], out.shape[4]
    source, target = products.reshape(products.size), out.reshape(out.size)
    stage = np.empty({STORE_TILES * store_width * out_rows * block}, dtype=products.dtype)
    plane, tw_count, out_plane = products.shape[1] * channels, tiles[2], out_h * out_w
    for job in range(first, last):
        n, th = (row0 + job) // tiles[1], (row0 + job) % tiles[1]
{place}        for t0 in range(0, tw_count, {STORE_TILES}):
            group = min({STORE_TILES}, tw_count - t0)
            first_w = t0 * {m}
            store = min(group * {m}, kept_w - first_w)
            for o0 in range(0, channels, {block}):
                width = min({block}, channels - o0)
                for g in range(group):
                    at = uint64((job * tw_count + t0 + g) * channels + o0)
                    group_at = uint64(g * {m * block})
                    if width == {block}:
"""
    indent = " " * 24
    body = [indent + line for line in full] + [" " * 20 + "else:"] + [indent + line for line in rest]
    stride = "uint64(e)" if step == "1" else f"uint64(e * {step})"
    store_lines = [f"for u in range(min({out_rows}, kept_h - th * {out_rows})):",
                   f"    into = {into}",
                   "    for o in range(width):",
                   "        row_at = into + uint64((o0 + o) * out_plane)",
                   "        for e in range(store):",
                   f"            target[row_at + {stride}] = stage[uint64((u * {store_width} + e) * {block} + o)]"]
    return head + "\n".join(body + [" " * 16 + line for line in store_lines]) + "\n"


def _straight_output_tiles(m: int, rank: int, dtype: str, dilated: bool = False) -> Callable:
    """The output transform of F(m, 3) over ``rank`` (1 or 2) axes as generated straight-line code: the contract
    of ``output_tiles`` in :func:`transforms`.

    Per group of :data:`~.winograd.STORE_TILES` neighbouring tiles and block
    of :data:`CHANNEL_BLOCK` channels, one loop over the channels per tile
    reads its products into locals and applies ``A^T`` along each axis with
    its nonzero coefficients written out, into a scratch block (in the L1
    cache); then each output row of the group is stored channel by channel,
    ``STORE_TILES * m`` cells in one run, as the loops store them. Compiled
    under this module's file name, one kernel name per tile size and rank
    (see :func:`_straight_input_tiles`).
    """
    name = f"output_tiles_f{m}_{rank}d{'_dilated' if dilated else ''}"
    namespace = {"__name__": __name__, "np": np, "uint64": uint64, "S": np.dtype(dtype).type}
    exec(compile(_straight_output_source(m, rank, name, dilated), __file__, "exec"), namespace)  # noqa: S102
    return njit(cache=True, nogil=True, fastmath={"contract"})(namespace[name])


#: Filters the straight-line filter transform handles in one loop of constant length (:func:`filter_transform`): the
#: compiler vectorizes it; the scratch rows are whole blocks long.
FILTER_BLOCK = 16
#: Channels whose filters' taps are gathered together: one contiguous run of ``FILTER_CHANNELS * 3^rank`` values
#: per filter, not a run of ``3^rank`` values from every filter once per channel.
FILTER_CHANNELS = 8


def _filter_lines(m: int, rank: int, load: str, store: str) -> list[str]:
    """The straight-line transform of one filter for 1 or 2 axes: its ``3^rank`` taps into locals (``load``
    formatted with the tap's number ``k``), ``G`` applied along each axis (the last first) with its nonzero
    coefficients written out, each of the ``a^rank`` results stored once (``store`` formatted with the
    position's number ``p``, row-major)."""
    _, g, _ = winograd_matrices(m, 3)
    a = m + 2
    taps = list(itertools.product(range(3), repeat=rank))
    names = {cell: "g_" + "_".join(map(str, cell)) for cell in taps}
    lines = [f"{names[cell]} = {load.format(k=k)}" for k, cell in enumerate(taps)]
    cells = taps
    for axis in reversed(range(rank)):  # axis by axis: taps (3) become positions (a)
        cells = [(*cell[:axis], q, *cell[axis + 1:]) for cell in cells if cell[axis] == 0 for q in range(a)]
        along = {}
        for cell in cells:
            reads = [names[(*cell[:axis], k, *cell[axis + 1:])] for k in range(3)]
            along[cell] = f"u{axis}_" + "_".join(map(str, cell))
            lines.append(f"{along[cell]} = {_combination(g[cell[axis]], reads)}")
        names = {**names, **along}
    positions = sorted(cells)  # row-major: the order of G ⊗ ... ⊗ G's rows
    return lines + [f"{store.format(p=p)} = {names[cell]}" for p, cell in enumerate(positions)]


def _straight_filter_source(m: int, rank: int, name: str, swapped: bool = False) -> str:
    """The source of :func:`filter_transform`'s kernel ``name`` for 1 or 2 axes (:func:`_filter_lines` per
    filter)."""
    block, count = FILTER_BLOCK, (m + 2)**rank
    lines = _filter_lines(m, rank, f"gathered[into_gathered + uint64({{k}} * {block}) + e]",
                         f"block[into_block + uint64({{p}} * {block}) + e]")
    body = "\n".join(" " * 20 + line for line in lines)
    into_gathered = f"r * per_channel + (chunk * uint64(taps) + k) * uint64({block}) + e"
    if swapped:  # weight (G, C, O, K), each filter's taps reversed: the rows' runs read in order
        shape = "channels, out_channels, taps"
        gather = f"""        start = uint64((g * channels + c0) * out_channels * taps)
        for r in range(uint64(rows)):
            for o in range(uint64(out_channels)):
                chunk, e = o // uint64({block}), o % uint64({block})
                for k in range(uint64(taps)):
                    gathered[{into_gathered}] = (
                        source[start + r * uint64(out_channels * taps) + o * uint64(taps) + uint64(taps - 1) - k])"""
    else:
        shape = "out_channels, channels, taps"
        gather = f"""        start = uint64((g * out_channels * channels + c0) * taps)
        for o in range(uint64(out_channels)):
            chunk, e = o // uint64({block}), o % uint64({block})
            for r in range(uint64(rows)):
                for k in range(uint64(taps)):
                    gathered[{into_gathered}] = (
                        source[start + o * uint64(channels * taps) + r * uint64(taps) + k])"""
    return f"""def {name}(weight, transformed, first, last, gathered, block):
    {shape} = weight.shape[1], weight.shape[2], weight.shape[3]
    source, target = weight.reshape(weight.size), transformed.reshape(transformed.size)
    plane, chunks = channels * out_channels, uint64(block.size // ({count} * {block}))
    per_channel = chunks * uint64(taps * {block})
    row0 = first
    while row0 < last:  # up to FILTER_CHANNELS rows of one group at a time
        g, c0 = row0 // channels, row0 % channels
        rows = min({FILTER_CHANNELS}, last - row0, channels - c0)
        row0 += rows
{gather}
        for r in range(rows):
            for chunk in range(chunks):
                into_gathered = uint64(r) * per_channel + chunk * uint64(taps * {block})
                into_block = chunk * uint64({count * block})
                for e in range(uint64({block})):
{body}
            into = uint64((g * {count} * channels + c0 + r) * out_channels)
            for p in range(uint64({count})):
                for chunk in range(chunks):
                    run = min(uint64({block}), uint64(out_channels) - chunk * uint64({block}))
                    into_p = into + p * uint64(plane) + chunk * uint64({block})
                    from_p = (chunk * uint64({count}) + p) * uint64({block})
                    if run == {block}:
                        for e in range(uint64({block})):
                            target[into_p + e] = block[from_p + e]
                    else:
                        for e in range(run):
                            target[into_p + e] = block[from_p + e]
"""


def _panel_filter_source(m: int, rank: int, name: str, lanes: int, swapped: bool, span: int, chunk: int) -> str:
    """The source of :func:`filter_panels`' kernel ``name`` (:func:`_filter_lines` per filter, ``lanes`` filters
    in one vectorized loop)."""
    count = (m + 2)**rank
    taps = 3**rank
    lines = _filter_lines(m, rank, f"gathered[uint64((cc * {taps} + {{k}}) * {lanes}) + e]",
                          f"block[uint64({{p}} * {span * lanes}) + at + e]")
    body = "\n".join(" " * 24 + line for line in lines)
    if swapped:  # lanes along the weight's channels, channels along its filters, taps reversed: contiguous runs
        gather = f"""                for cc in range(rows):
                    start = ((g * height + c0 + cc) * width + o0) * {taps}
                    for e in range(valid):
                        for k in range({taps}):
                            gathered[(cc * {taps} + k) * {lanes} + e] = source[start + e * {taps} + {taps - 1} - k]"""
    else:  # lanes along the filters, channels along their channels
        gather = f"""                for e in range(valid):
                    start = ((g * height + o0 + e) * width + c0) * {taps}
                    for cc in range(rows):
                        for k in range({taps}):
                            gathered[(cc * {taps} + k) * {lanes} + e] = source[start + cc * {taps} + k]"""
    return f"""def {name}(weight, panels, first, last, gathered, block):
    height, width = weight.shape[1], weight.shape[2]
    out_channels, channels = (width, height) if {swapped} else (height, width)
    runs = panels.shape[2]
    source, target = weight.reshape(weight.size), panels.reshape(panels.size)
    plane = uint64(runs * channels * {lanes})
    for job in range(first, last):
        g, run = job // runs, job % runs
        o0 = run * {lanes}
        valid = min({lanes}, out_channels - o0)
        for s0 in range(0, channels, {span}):  # a span of channels into block (P, span, lanes), then copied out
            span = min({span}, channels - s0)
            for c0 in range(s0, s0 + span, {chunk}):
                rows = min({chunk}, s0 + span - c0)
                if valid < {lanes}:  # the lanes past the last filter: zeros
                    for q in range(rows * {taps}):
                        for e in range(valid, {lanes}):
                            gathered[q * {lanes} + e] = 0
{gather}
                for cc in range(rows):
                    at = uint64((c0 - s0 + cc) * {lanes})
                    for e in range(uint64({lanes})):
{body}
            into = uint64(((g * {count} * runs + run) * channels + s0) * {lanes})
            for p in range(uint64({count})):  # each position's span of runs, contiguous in the panel: one copy
                for q in range(uint64(span * {lanes})):
                    target[into + p * plane + q] = block[p * uint64({span * lanes}) + q]
"""


@lru_cache(maxsize=None)
def filter_panels(m: int, rank: int, dtype: str, lanes: int, swapped: bool, span: int, chunk: int) -> Callable:
    """The filter transform of F(m, 3) over ``rank`` (1 or 2) axes in ``dtype``, into panels of ``lanes``
    filters: ``kernel(weight, panels, first, last, gathered)`` writes ``panels[g, p, r, c, e] = (G w G^T)[p]``
    of filter ``o = r*lanes + e`` of group ``g`` and its channel ``c`` (zeros for ``o`` past the last filter),
    for the jobs ``(g, r)`` numbered ``g*R + r`` in ``first:last``.

    ``weight`` ``(G, O, C, 3^rank)``, whose filter ``o``'s channel ``c`` is ``weight[g, o, c]``; with
    ``swapped`` (the full correlation of the input gradient) ``weight`` is ``(G, C, O, 3^rank)``, filter ``o``'s
    channel ``c`` is ``weight[g, c, o]`` reversed, so the transform reads the forward's weight as it is (no
    swapped, reversed copy). ``panels`` ``(G, P, R, C, lanes)``, ``R = ceil(O / lanes)``, and scratch
    ``gathered`` ``(chunk * 3^rank * lanes)`` and ``block`` ``(P * span * lanes)``, C-contiguous, of ``dtype``;
    each job writes its panels alone. ``span`` and ``chunk`` are compile-time constants of the kernel (as scratch
    sizes read at run time they cost the loops their vectorization: F(4) 9 -> 32 ms) and part of its name, so that
    Numba's cache never serves a kernel made for other sizes.

    Per job, ``chunk`` channels at a time: their taps gathered for the panel's filters (runs the
    weight holds contiguously), then per channel one loop over the ``lanes`` filters applies ``G`` as
    straight-line code into ``block`` (stores a known distance apart: the loop vectorizes); after every ``span``
    channels each tile position's ``span * lanes`` values are copied out as one run: the panels are written front
    to back, ``P`` streams.
    """
    if rank == 3:
        raise ValueError("filter panels are generated for 1 or 2 axes, got 3")
    name = f"filter_panels_f{m}_{rank}d_{lanes}_{span}_{chunk}{'_swapped' if swapped else ''}"
    namespace = {"__name__": __name__, "uint64": uint64, "S": np.dtype(dtype).type}
    exec(compile(_panel_filter_source(m, rank, name, lanes, swapped, span, chunk), __file__, "exec"), namespace)  # noqa: S102
    return njit(cache=True, nogil=True, fastmath={"contract"})(namespace[name])


@njit(cache=True, nogil=True, fastmath={"contract"})
def _loop_filter_tiles(weight, transform, transformed, first, last, gathered, block):
    """:func:`filter_transform`'s contract in three dimensions, with ``transform`` the ``(P, K)`` matrix ``G ⊗ G ⊗
    G`` as an argument: 216 results a filter are more than straight-line code keeps in registers."""
    out_channels, channels, taps = weight.shape[1], weight.shape[2], weight.shape[3]
    positions, width_most = transform.shape[0], gathered.shape[1]
    for row in range(first, last):
        g, c = row // channels, row % channels
        for o0 in range(0, out_channels, width_most):
            width = min(width_most, out_channels - o0)
            for e in range(width):
                for k in range(taps):
                    gathered[k, e] = weight[g, o0 + e, c, k]
            for p in range(positions):
                target = transformed[g, p, c, o0:o0 + width]
                for e in range(width):
                    target[e] = transform[p, 0] * gathered[0, e]
                for k in range(1, taps):
                    for e in range(width):
                        target[e] += transform[p, k] * gathered[k, e]


@lru_cache(maxsize=None)
def filter_transform(m: int, rank: int, dtype: str, swapped: bool = False) -> Callable:
    """The filter transform of F(m, 3) over ``rank`` axes in ``dtype``: ``kernel(weight, transformed, first, last,
    gathered, block)`` writes ``transformed[g, p, c, o] = (G g G^T)[p]`` of filter ``weight[g, o, c]`` for the rows
    ``(g, c)`` numbered ``g*C + c`` in ``first:last``.

    Contract: ``weight`` ``(G, O, C, 3^rank)`` and ``transformed`` ``(G, P, C, O)``, C-contiguous, of ``dtype``;
    scratch ``gathered`` ``(3^rank * W)`` and ``block`` ``(P * W)``, ``W`` the filters ``O`` rounded up to whole
    :data:`FILTER_BLOCK` (laid out by block of filters: ``(W / B, 3^rank, B)`` and ``(W / B, P, B)``), the
    calling thread's own, zero-filled once (the lanes past the last filter are computed and never stored). Per
    row ``(g, c)``: every filter's taps gathered from the weight's strided rows, the transform per block of
    filters as straight-line code from the generated ``G`` (1-2 axes; in 3-d a loop over ``G ⊗ G ⊗ G``), then
    each tile position's ``O`` results copied out as one run. Writing each block's 36 runs as it went, 16
    values each, 1 MiB apart for 512 channels, ran 4x slower, and scratch rows of ``W`` values 2 KiB apart 10x:
    rows a power of two apart share the caches' sets and evict each other. A row is written by its job alone.

    With ``swapped`` (1-2 axes), ``weight`` is ``(G, C, O, 3^rank)`` and filter ``o``'s channel ``c`` is
    ``weight[g, c, o]`` reversed (as :func:`filter_panels` reads it).
    """
    if swapped and rank == 3:
        raise ValueError("the swapped filter transform is generated for 1 or 2 axes, got 3")
    if rank == 3:
        _, g, _ = winograd_matrices(m, 3)
        transform = np.kron(np.kron(g, g), g).astype(dtype)

        def loops(weight, transformed, first, last, gathered, block):
            _loop_filter_tiles(weight, transform, transformed, first, last, gathered[:weight.shape[3] * FILTER_BLOCK]
                               .reshape(weight.shape[3], FILTER_BLOCK), block)

        return loops
    name = f"filter_tiles_f{m}_{rank}d{'_swapped' if swapped else ''}"
    namespace = {"__name__": __name__, "uint64": uint64, "S": np.dtype(dtype).type}
    exec(compile(_straight_filter_source(m, rank, name, swapped), __file__, "exec"), namespace)  # noqa: S102
    return njit(cache=True, nogil=True, fastmath={"contract"})(namespace[name])
