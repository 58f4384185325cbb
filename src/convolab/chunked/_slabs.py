"""Slabs: each output block's input, cut from the (virtually) padded array; and the padding's transpose.

Each block's slab is cut from the input *as if padded*: interior cells are
slices of the neighbouring chunks, and only a slab that crosses a true edge of
the array gets padding cells. Those are the eager :func:`convolab._window.pad`
applied to the positions themselves (``pad(arange(n))``, the source map), so a
reflected, replicated or symmetric cell copies its mirror near the same edge
and a circular one copies from the *far* edge, exactly as the eager op pads.
The slabs are laid end to end and rechunked so each is one chunk; one task per
output block then runs the eager op on its slab with no padding. A halo wider
than a chunk (small chunks, large dilation) just spans several chunks.

``dask.array.map_overlap`` is not used for the spatial axes: it grows every
chunk by one fixed depth per axis and trims it back, so each output block has
its input chunk's size, whereas a strided (or "valid", or "full") convolution's
output blocks are smaller or larger, and where each block's first window falls
on the stride grid differs from chunk to chunk; a depth larger than a chunk
makes it rechunk, which would move the stride alignment; and its ``boundary``
modes are dask's (its "reflect" is convolab's "symmetric"), not the eager
padding. The slab construction here uses the same primitives it does (slices
and concatenation) with the geometry of :mod:`convolab.chunked._blocks`.

The input gradient runs the other way: :func:`fold_padding` adds the gradient
that landed on padding cells onto the cells they copied (the transpose of the
padding, from the same source map), and :func:`scatter_cells` is the transpose
of :func:`take_cells`, the compact gather for huge padding or strides.
"""

from __future__ import annotations

import functools
from itertools import accumulate
from typing import Any, Sequence

import dask.array as da
import numpy as np
from dask.base import tokenize

from .._engine import compact_problem
from .._window import padded_sources
from ._blocks import AxisBlocks

__all__ = ["gather", "padded_slabs", "clipped_slabs", "fold_padding", "take_cells", "compact_input",
           "scatter_cells"]


def _slice(x: da.Array, axis: int, start: int, stop: int, reverse: bool = False) -> da.Array:
    index: list[slice] = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    piece = x[tuple(index)]
    if reverse:
        index[axis] = slice(None, None, -1)
        piece = piece[tuple(index)]
    return piece


def _source_map(size: int, padding: tuple[int, int], mode: str) -> np.ndarray:
    """For each cell of the padded axis, the input position it copies (``-1``: a constant cell).

    The eager padding applied to the positions themselves
    (:func:`convolab._window.padded_sources`), so the chunked padding is the
    eager one by construction (circular cells point to the far edge).
    """
    return padded_sources(size, padding, mode)


def _runs(source: np.ndarray) -> list[tuple[int, int, int]]:
    """Split a stretch of a source map into runs ``(first source, length, step)``.

    ``step`` is 1 (a slice), -1 (a reversed slice) or 0 (one cell repeated);
    ``first = -1`` is a run of constant cells. Only padding stretches come
    here, so the loop is over at most the padding's width.
    """
    runs, i, n = [], 0, len(source)
    while i < n:
        first, j = int(source[i]), i + 1
        if first < 0:
            while j < n and source[j] < 0:
                j += 1
            runs.append((-1, j - i, 0))
        else:
            step = int(source[j]) - first if j < n and source[j] >= 0 else 1
            if abs(step) <= 1:
                while j < n and source[j] >= 0 and source[j] - source[j - 1] == step:
                    j += 1
            runs.append((first, j - i, step if j - i > 1 else 1))
        i = j
    return runs


def _run_piece(x: da.Array, axis: int, first: int, length: int, step: int, fill: Any) -> da.Array:
    if first < 0:
        shape, chunks = list(x.shape), list(x.chunks)
        shape[axis], chunks[axis] = length, (length,)
        return da.full(tuple(shape), fill, dtype=x.dtype, chunks=tuple(chunks))
    if step == 1:
        return _slice(x, axis, first, first + length)
    if step == -1:
        return _slice(x, axis, first - length + 1, first + 1, reverse=True)
    return da.repeat(_slice(x, axis, first, first + 1), length, axis=axis)


def gather(x: da.Array, axis: int, padding: tuple[int, int], mode: str, fill: Any,
           ranges: Sequence[tuple[int, int]]) -> da.Array:
    """``x`` padded along ``axis``, then the stretches ``ranges`` (padded coordinates) end to end, one chunk each.

    The padded array is never built: interior cells are slices of ``x``, and
    padding cells (only in stretches that cross a true edge) are constant
    pieces or slices of ``x`` as the source map says.
    """
    low, size = padding[0], x.shape[axis]
    source = _source_map(size, padding, mode)
    pieces = []
    for start, stop in ranges:
        for a, b in ((start, min(stop, low)), (max(start, low), min(stop, low + size)), (max(start, low + size), stop)):
            if a >= b:
                continue
            if low <= a and b <= low + size:  # the input itself
                pieces.append(_slice(x, axis, a - low, b - low))
            else:
                pieces.extend(_run_piece(x, axis, *run, fill) for run in _runs(source[a:b]))
    joined = pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=axis)
    return joined.rechunk({axis: tuple(stop - start for start, stop in ranges)})


def padded_slabs(x: da.Array, grid: Sequence[AxisBlocks], mode: str, fill: Any) -> da.Array:
    """Every output block's input slab as one chunk: batch and channel chunks kept, spatial axes gathered."""
    for axis, blocks in enumerate(grid, start=2):
        low = blocks.padding[0]
        x = gather(x, axis, blocks.padding, mode, fill, [(a + low, b + low) for a, b in blocks.input_ranges])
    return x


def clipped_slabs(x: da.Array,
                  grid: Sequence[AxisBlocks]) -> tuple[da.Array, tuple[tuple[tuple[int, ...], ...], ...]]:
    """Every output block's slab cut to the input cells it holds, and per axis and block the padding cut off.

    For a kernel so large (after :func:`convolab.pooling._trim_kernel`) that its
    slabs would be mostly padding: the blocks then pool with that padding as
    their spec's own (never built), as the eager op does.
    """
    cut = []  # per axis and block: (low, high) cut off, and the block's output count
    for axis, blocks in enumerate(grid, start=2):
        size = blocks.input_size
        cut.append(tuple((max(0, -start), max(0, stop - size), count)
                         for (start, stop), count in zip(blocks.input_ranges, blocks.output_chunks)))
        inside = [(max(start, 0), min(stop, size)) for start, stop in blocks.input_ranges]
        x = gather(x, axis, (0, 0), "zeros", 0, inside)
    return x, tuple(cut)


def _fold_block(core: np.ndarray, start: np.ndarray, *pads: np.ndarray, axis: int,
                sources: tuple[np.ndarray, ...]) -> np.ndarray:
    """One input chunk's gradient plus the share of every padding cell that copied one of its cells."""
    first = int(start[0])  # the chunk's first input position along axis
    folded = np.moveaxis(core.copy(), axis, 0)  # (chunk along axis, ...)
    for pad_block, source in zip(pads, sources):
        mine = (source >= first) & (source < first + folded.shape[0])
        if mine.any():  # unbuffered: a replicated cell receives every copy's gradient
            np.add.at(folded, source[mine] - first, np.moveaxis(pad_block, axis, 0)[mine])
    return np.moveaxis(folded, 0, axis)


def fold_padding(grad_padded: da.Array, axis: int, blocks: AxisBlocks, mode: str) -> da.Array:
    """The transpose of the padding along ``axis``: keep the input's cells, add each padding cell onto its source.

    Padding copies input cells (or writes constants) into the border; its
    adjoint adds a border cell's gradient to the cell it copied, found with the
    same source map the forward used (a constant cell's gradient is dropped).
    The padding blocks are one chunk each along ``axis``; every input chunk
    reads them whole and picks the cells that copied its own (for
    ``"circular"``, the far edge's chunk picks the low padding).
    """
    (low, high), size = blocks.padding, blocks.input_size
    core = _slice(grad_padded, axis, low, low + size)
    if mode == "zeros" or not (low or high):
        return core
    source = _source_map(size, blocks.padding, mode)
    regions = [(a, b) for a, b in ((0, low), (low + size, low + size + high)) if a < b]
    block = functools.partial(_fold_block, axis=axis, sources=tuple(source[a:b] for a, b in regions))
    # Blockwise indices: the core's axes; each chunk's start along axis; the padding blocks with
    # axis contracted (a new index), so every block receives them whole.
    axes = tuple(range(core.ndim))
    starts = da.from_array(np.array(list(accumulate(core.chunks[axis][:-1], initial=0))), chunks=1)
    pads = [(_slice(grad_padded, axis, a, b), axes[:axis] + (core.ndim,) + axes[axis + 1:]) for a, b in regions]
    return da.blockwise(block, axes, core, axes, starts, (axis,), *(item for pair in pads for item in pair),
                        concatenate=True, align_arrays=False, dtype=core.dtype,
                        meta=np.empty((0,) * core.ndim, core.dtype),
                        name=f"fold-{tokenize(block, core, *(p for p, _ in pads))}")


def take_cells(x: da.Array, axis: int, source: np.ndarray) -> da.Array:
    """``x`` read along ``axis`` at the positions ``source`` (``-1``: a zero cell), as the eager compact gather.

    A zero cell is a zero, never ``0 * x``: NaN and inf in ``x`` do not reach it.
    """
    valid = source >= 0
    shape = list(x.shape)
    shape[axis] = len(source)
    if not valid.any():
        chunks = tuple(c if i != axis else -1 for i, c in enumerate(x.chunks))
        return da.zeros(tuple(shape), dtype=x.dtype, chunks=chunks)
    # A zero cell reads (then drops) the cell read before it, or the first read: in zero padding, where
    # the reads increase, the indices stay in order and the chunks few.
    before = np.maximum.accumulate(np.where(valid, source, -1))
    filled = np.where(valid, source, np.where(before < 0, source[valid][0], before))
    picked = x[(slice(None),) * axis + (filled,)]
    if valid.all():
        return picked
    keep = valid.reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return da.where(keep, picked, np.zeros((), dtype=x.dtype))


def compact_input(x: da.Array, spec: Any, algorithm: str) -> tuple[da.Array, Any]:
    """The batched ``x`` and ``spec``, or, where the eager ops would run on the cells the windows read, those.

    The same rule and index map as the eager ops (:func:`convolab._engine.compact_problem`):
    a huge padding (or a stride far past the kernel) is never sliced into slabs, and the
    blocks run the compact problem, unpadded, with its stride and dilation.
    """
    compact = compact_problem(spec, algorithm, x.dtype)
    if compact is None:
        return x, spec
    compact_spec, reads = compact
    for axis, source in enumerate(reads.sources, start=2):
        x = take_cells(x, axis, source)
    return x, compact_spec


def _scatter_block(grad: np.ndarray, start: np.ndarray, stop: np.ndarray, *, axis: int,
                   source: np.ndarray) -> np.ndarray:
    """The input cells ``[start, stop)`` along ``axis``: the sum of the compact cells that read each."""
    first, last = int(start[0]), int(stop[0])
    mine = (source >= first) & (source < last)
    moved = np.moveaxis(grad, axis, 0)  # (compact cells, ...)
    total = np.zeros((last - first, *moved.shape[1:]), dtype=grad.dtype)
    np.add.at(total, source[mine] - first, moved[mine])  # unbuffered: a cell read twice gets both shares
    return np.moveaxis(total, 0, axis)


def scatter_cells(grad: da.Array, axis: int, source: np.ndarray, chunks: tuple[int, ...]) -> da.Array:
    """The transpose of :func:`take_cells` along ``axis``: back on the input's cells, in ``chunks``.

    The compact axis is one chunk (it is short: that is why it was taken); each
    input chunk along ``axis`` reads it whole and keeps the cells mapped into it.
    """
    grad = grad.rechunk({axis: -1})
    edges = list(accumulate(chunks, initial=0))
    starts, stops = (da.from_array(np.array(a, dtype=np.int64), chunks=1) for a in (edges[:-1], edges[1:]))
    block = functools.partial(_scatter_block, axis=axis, source=source)
    axes = tuple(range(grad.ndim))
    contracted = axes[:axis] + (grad.ndim,) + axes[axis + 1:]
    return da.blockwise(block, axes, grad, contracted, starts, (axis,), stops, (axis,), concatenate=True,
                        adjust_chunks={axis: tuple(chunks)}, align_arrays=False, dtype=grad.dtype,
                        meta=np.empty((0,) * grad.ndim, grad.dtype),
                        name=f"scatter-{tokenize(block, grad, tuple(chunks))}")
