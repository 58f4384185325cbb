"""Convolutions and pooling on Dask arrays, chunk by chunk, on one machine or a cluster.

``import convolab.dask`` (the core never imports dask; install the extra with
``pip install 'convolab[dask]'``). Every op here takes a ``dask.array.Array``
and returns a lazy one whose computed value equals the eager op's
(:func:`convolab.conv`, :func:`convolab.correlate`, :func:`convolab.max_pool`...)
on the whole array. Each chunk is computed by the eager op itself, so dtypes,
exact integers and argument rules are the core's.

How a chunked convolution is computed
-------------------------------------
Per spatial axis, :func:`plan_axis` turns the input's chunks into output chunks
with pure integer arithmetic. Output ``p`` reads the padded cells
``p*s .. p*s + k_eff - 1`` (``k_eff = d*(k-1) + 1``); it belongs to the input
chunk holding its window's centre, so an input chunk boundary becomes an output
boundary divided by the stride (rounded up): output blocks start on the stride
grid, and each reads its own chunk plus a halo of about ``k_eff / 2`` cells
from each neighbour (the receptive field), or padding at a true edge::

    padded input     | lo |   chunk 0   |   chunk 1   |  chunk 2  | hi |
    output block 1               [halo|   chunk 1   |halo)
                                  ^ p0*s, on the stride grid

Each block's slab is cut from the input *as if padded*: interior cells are
slices of the neighbouring chunks, and only a slab that crosses a true edge of
the array gets padding cells. Those are the eager :func:`convolab._window.pad`
applied to the positions themselves (``pad(arange(n))``), so a reflected,
replicated or symmetric cell copies its mirror near the same edge and a
circular one copies from the *far* edge, exactly as the eager op pads. The
slabs are laid end to end and rechunked so each is one chunk; one task per
output block then runs the eager op on its slab with no padding. A halo wider
than a chunk (small chunks, large dilation) just spans several chunks.

``dask.array.map_overlap`` is not used for the spatial axes: it grows every
chunk by one fixed depth per axis and trims it back, so each output block has
its input chunk's size, whereas a strided (or "valid", or "full") convolution's
output blocks are smaller or larger, and where each block's first window falls
on the stride grid differs from chunk to chunk; a depth larger than a chunk
makes it rechunk, which would move the stride alignment; and its ``boundary``
modes are dask's (its "reflect" is convolab's "symmetric"), not the eager
padding. The slab construction above uses the same primitives it does (slices
and concatenation) with the geometry computed here. Chunks along the batch axis
ride along unchanged: with one chunk per spatial axis and no padding the op is
a ``map_blocks`` over the batch chunks.

Channels are never split: a convolution's output channel reads every input
channel of its group, so the channel axis is rechunked to one chunk (chunk
along batch and spatial axes instead). Pooling never mixes channels and keeps
the input's channel chunks.

Weights, biases and ``correlate``'s second array may be NumPy arrays or small
dask arrays; either becomes one task that every block depends on, so each
worker receives it once rather than once per block.

Gradients: :func:`conv_weight` computes each block's share of the weight
gradient from its slab (batch and spatial blocks alike) and sums the shares
with dask's tree reduction. :func:`conv_input` computes the gradient one block
of the padded input at a time (each gathers the ``grad_output`` rows whose
windows reach it), then folds the padding blocks' gradient back onto the input
cells they copied (the transpose of the padding, from the same source map), and
returns it chunked like the input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import reduce
from itertools import accumulate, pairwise
from math import isnan, prod
from typing import Any, Callable, Sequence

import numpy as np

try:  # absolute imports: this is the dask package, not this module
    import dask
    import dask.array as da
    from dask.base import tokenize
except ImportError as error:  # pragma: no cover - only without the extra
    raise ImportError("convolab.dask needs dask: pip install 'convolab[dask]'") from error

from . import functional as _functional
from . import grad as _grad
from . import pooling as _pooling
from . import shapes
from ._engine import compact_problem, describe_geometry
from ._dtypes import check_exact_range, compute_dtype, is_exact, result_dtype
from ._errors import fail
from ._window import check_fits_in_memory, padded_sources
from .signal import convolve as _eager_convolve
from .signal import correlate as _eager_correlate
from .spec import PaddingArg, check_flag, conv_spec, normalize_ints, normalize_padding, normalize_shape

__all__ = [
    "AxisPlan",
    "plan_axis",
    "plan_chunks",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "correlate",
    "convolve",
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "conv_input",
    "conv1d_input",
    "conv2d_input",
    "conv3d_input",
    "conv_weight",
    "conv1d_weight",
    "conv2d_weight",
    "conv3d_weight",
]

# ---------------------------------------------------------------------------
# Chunk geometry: pure integers, no arrays
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis of a chunked input maps to output chunks, forward and backward.

    Positions are input coordinates: ``-1`` is the last cell of the low
    padding, ``input_size`` the first of the high padding.

    Attributes
    ----------
    input_chunks : tuple of int
        The input's chunk sizes along this axis.
    kernel_size, stride, dilation : int
        The window along this axis.
    padding : (int, int)
        ``(low, high)`` padding.
    output_chunks : tuple of int
        Output chunk sizes; block ``i`` holds outputs ``output_offsets[i] ..``.
    input_ranges : tuple of (int, int)
        Per output block, the input cells ``[start, stop)`` its windows read,
        ``(p1 - p0 - 1) * stride + k_eff`` long; ``start`` is on the stride grid.
    grad_chunks : tuple of int
        The padded input as ``[low padding] + input chunks + [high padding]``
        (a padding entry only where it is non-zero): the blocks of the input
        gradient before the padding's share is folded back.
    grad_output_ranges : tuple of (int, int) or None
        Per ``grad_chunks`` block, the outputs ``[p0, p1)`` whose windows reach
        it; ``None`` where no window does (its gradient is zero).
    """

    input_chunks: tuple[int, ...]
    kernel_size: int
    stride: int
    padding: tuple[int, int]
    dilation: int
    output_chunks: tuple[int, ...]
    input_ranges: tuple[tuple[int, int], ...]
    grad_chunks: tuple[int, ...]
    grad_output_ranges: tuple[tuple[int, int] | None, ...]

    @property
    def input_size(self) -> int:
        return sum(self.input_chunks)

    @property
    def output_size(self) -> int:
        return sum(self.output_chunks)

    @property
    def extent(self) -> int:
        """The dilated kernel's extent ``k_eff = dilation * (kernel_size - 1) + 1``."""
        return shapes.dilated_kernel_size(self.kernel_size, self.dilation)

    @property
    def halo(self) -> tuple[int, int]:
        """At most how many cells a block reads before and after its own input chunk.

        A window reaches ``(k_eff - 1) // 2`` cells before its anchor and the rest after.
        """
        before = (self.extent - 1) // 2
        return before, self.extent - 1 - before

    @property
    def output_offsets(self) -> tuple[int, ...]:
        """Index of each output block's first output."""
        return tuple(accumulate(self.output_chunks[:-1], initial=0))

    @property
    def grad_offsets(self) -> tuple[int, ...]:
        """Padded position of each ``grad_chunks`` block's first cell."""
        return tuple(accumulate(self.grad_chunks[:-1], initial=0))


def _padding_pair(op: str, padding: Any) -> tuple[int, int]:
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return normalize_padding((tuple(padding),), 1, op)[0]
    if isinstance(padding, str):
        fail(TypeError, op, "padding", repr(padding), "must be an int or a (low, high) pair of ints")
    return normalize_padding(padding, 1, op)[0]


def plan_axis(
    input_chunks: Sequence[int],
    kernel_size: int,
    stride: int = 1,
    padding: int | tuple[int, int] = (0, 0),
    dilation: int = 1,
) -> AxisPlan:
    """Plan one spatial axis of a chunked convolution or pooling: output chunks and the input each reads.

    Output ``p`` reads input cells ``p*stride - low + j*dilation``. It is
    assigned to the input chunk holding its window's anchor, the centre cell
    ``p*stride - low + c`` with ``c = (k_eff - 1) // 2``, so an input chunk
    boundary ``b`` becomes the output boundary ``ceil((b + low - c) / stride)``
    (blocks that would be empty are merged away; at stride 1 with ``"same"``
    padding the output chunks are the input's). Output block ``[p0, p1)`` then
    reads input cells ``[p0*stride - low, (p1-1)*stride + k_eff - low)``: its
    own chunk, a halo of at most :attr:`AxisPlan.halo` cells into each
    neighbour, and padding only where it crosses a true edge.

    For the input gradient, each block of the padded input (the low padding,
    each input chunk, the high padding) needs the outputs ``p`` with
    ``p*stride <= last cell`` and ``p*stride + k_eff - 1 >= first cell``.

    Parameters
    ----------
    input_chunks : sequence of int
        Chunk sizes along the axis (non-negative; at least one).
    kernel_size, stride, dilation : int
        ``>= 1``.
    padding : int or (int, int)
        Padding on both sides, or ``(low, high)``.

    Returns
    -------
    AxisPlan

    Raises
    ------
    TypeError, ValueError
        Non-integer or out-of-range arguments; a dilated kernel larger than
        the padded input.

    Shape
    -----
    ``sum(output_chunks) = floor((in + low + high - k_eff) / stride) + 1`` with
    ``k_eff = dilation * (kernel_size - 1) + 1``; block ``i`` reads
    ``(output_chunks[i] - 1) * stride + k_eff`` input cells.

    Examples
    --------
    >>> plan = plan_axis((4, 4, 2), kernel_size=3, stride=2, padding=1)
    >>> plan.output_chunks, plan.input_ranges, plan.halo
    ((2, 2, 1), ((-1, 4), (3, 8), (7, 10)), (1, 1))
    >>> plan.grad_chunks, plan.grad_output_ranges
    ((1, 4, 4, 2, 1), ((0, 1), (0, 3), (2, 5), (4, 5), None))
    """
    op = "plan_axis"
    chunks = normalize_shape(input_chunks, "input_chunks", op)
    if not chunks:
        fail(ValueError, op, "input_chunks", "()", "must hold at least one chunk size")
    (k,) = normalize_ints(kernel_size, 1, "kernel_size", op)
    (s,) = normalize_ints(stride, 1, "stride", op)
    (d,) = normalize_ints(dilation, 1, "dilation", op)
    low, high = _padding_pair(op, padding)
    size = sum(chunks)
    extent = shapes.dilated_kernel_size(k, d)
    if size + low + high < extent:
        fail(ValueError, op, "kernel_size",
             f"dilated extent {extent} (kernel {k}, dilation {d}) with a padded input of {size + low + high} "
             f"(size {size} + padding {low} + {high})", "must fit inside the padded input")
    out = (size + low + high - extent) // s + 1
    inner = list(accumulate(chunks[:-1]))  # input chunk boundaries strictly inside the axis (and repeats)

    # Forward: output boundary ceil((b + low - c) / s) for each input boundary b, clipped and deduplicated.
    anchor = (extent - 1) // 2
    boundaries = sorted({0, out, *(min(max(-(-(b + low - anchor) // s), 0), out) for b in inner)})
    output_chunks = tuple(p1 - p0 for p0, p1 in pairwise(boundaries))
    input_ranges = tuple((p0 * s - low, (p1 - 1) * s + extent - low) for p0, p1 in pairwise(boundaries))

    # Backward: [low padding] + input chunks + [high padding], in padded coordinates.
    edges = ([0] if low else []) + [low + b for b in (0, *inner, size)] + ([size + low + high] if high else [])
    grad_chunks, grad_output_ranges = [], []
    for u, v in pairwise(edges):
        first = max(-(-(u - extent + 1) // s), 0)  # first window ending at or after u
        last = min((v - 1) // s, out - 1)  # last window starting before v
        grad_chunks.append(v - u)
        grad_output_ranges.append((first, last + 1) if u < v and first <= last else None)
    return AxisPlan(
        input_chunks=chunks, kernel_size=k, stride=s, padding=(low, high), dilation=d,
        output_chunks=output_chunks, input_ranges=input_ranges,
        grad_chunks=tuple(grad_chunks), grad_output_ranges=tuple(grad_output_ranges),
    )


def plan_chunks(
    chunks: Sequence[Sequence[int]],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
) -> tuple[AxisPlan, ...]:
    """Plan every spatial axis of a chunked N-d convolution: one :func:`plan_axis` per axis.

    Parameters
    ----------
    chunks : sequence of sequence of int
        The chunk sizes of each *spatial* axis (``x.chunks[2:]`` of a batched input).
    kernel_size, stride, dilation : int or tuple of int
        One value for every axis, or one per axis.
    padding : int, tuple, or {"valid", "same", "full"}
        As in :func:`convolab.conv`: an int, one per axis, ``(low, high)``
        pairs, or a string resolved against the axis sizes.

    Returns
    -------
    tuple of AxisPlan

    Shape
    -----
    Per axis as in :func:`plan_axis`.

    Examples
    --------
    >>> plans = plan_chunks(((5, 5), (3, 3, 3)), 3, padding="same")
    >>> [p.output_chunks for p in plans], plans[1].input_ranges
    ([(5, 5), (3, 3, 3)], ((-1, 4), (2, 7), (5, 10)))
    """
    op = "plan_chunks"
    if not isinstance(chunks, (tuple, list)) or not chunks:
        fail(TypeError, op, "chunks", repr(chunks), "must be a non-empty sequence of per-axis chunk sizes")
    rank = len(chunks)
    sizes = tuple(sum(normalize_shape(c, "chunks", op)) for c in chunks)
    kernel = normalize_ints(kernel_size, rank, "kernel_size", op)
    strides = normalize_ints(stride, rank, "stride", op)
    dilations = normalize_ints(dilation, rank, "dilation", op)
    pads = normalize_padding(padding, rank, op)
    if pads == "valid":
        pads = ((0, 0),) * rank
    elif pads == "same":
        pads = tuple(shapes.same_padding(n, k, s, d) for n, k, s, d in zip(sizes, kernel, strides, dilations))
    elif pads == "full":
        pads = tuple(shapes.full_padding(k, d) for k, d in zip(kernel, dilations))
    return tuple(plan_axis(c, k, s, p, d) for c, k, s, p, d in zip(chunks, kernel, strides, pads, dilations))


# ---------------------------------------------------------------------------
# The one mechanism: slabs cut from the (virtually) padded input, one task per block
# ---------------------------------------------------------------------------


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


def _gather(x: da.Array, axis: int, padding: tuple[int, int], mode: str, fill: Any,
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


def _slabs(x: da.Array, plans: Sequence[AxisPlan], mode: str, fill: Any) -> da.Array:
    """Every output block's input slab as one chunk: batch and channel chunks kept, spatial axes gathered."""
    for axis, plan in enumerate(plans, start=2):
        low = plan.padding[0]
        x = _gather(x, axis, plan.padding, mode, fill, [(a + low, b + low) for a, b in plan.input_ranges])
    return x


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


def _fold(grad_padded: da.Array, axis: int, plan: AxisPlan, mode: str) -> da.Array:
    """The transpose of the padding along ``axis``: keep the input's cells, add each padding cell onto its source.

    Padding copies input cells (or writes constants) into the border; its
    adjoint adds a border cell's gradient to the cell it copied, found with the
    same source map the forward used (a constant cell's gradient is dropped).
    The padding blocks are one chunk each along ``axis``; every input chunk
    reads them whole and picks the cells that copied its own (for
    ``"circular"``, the far edge's chunk picks the low padding).
    """
    (low, high), size = plan.padding, plan.input_size
    core = _slice(grad_padded, axis, low, low + size)
    if mode == "zeros" or not (low or high):
        return core
    source = _source_map(size, plan.padding, mode)
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


def _take_cells(x: da.Array, axis: int, source: np.ndarray) -> da.Array:
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


def _compact(x: da.Array, spec: Any, algorithm: str) -> tuple[da.Array, Any]:
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
        x = _take_cells(x, axis, source)
    return x, compact_spec


def _check_blocks_fit(spec: Any, chunks: Sequence[Sequence[int]], dtype: np.dtype, what: str) -> None:
    """Refuse, while building the graph, a block that no task could hold in memory (the eager op's rule)."""
    largest = tuple(max(sizes, default=0) for sizes in chunks)
    check_fits_in_memory(spec.op, what, largest, dtype, lambda: describe_geometry(spec))


def _map_blocks(op: str, block: Callable[..., np.ndarray], slabs: da.Array, shared: Sequence[Any],
                chunks: tuple[tuple[int, ...], ...], dtype: np.dtype) -> da.Array:
    """One task per output block: ``block(slab, *shared, block_id=...)``, named after the op."""
    dtype = np.dtype(dtype)
    name = f"{op}-{tokenize(block, slabs, *shared, chunks, dtype)}"  # deterministic, unique
    return da.map_blocks(block, slabs, *shared, chunks=chunks, dtype=dtype,
                         meta=np.empty((0,) * len(chunks), dtype=dtype), name=name)


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _check_dask(op: str, name: str, value: Any) -> da.Array:
    if not isinstance(value, da.Array):
        fail(TypeError, op, name, f"an object of type {type(value).__name__}",
             "must be a dask.array.Array (wrap NumPy data with dask.array.from_array, or call convolab's eager op)")
    if any(isnan(c) for chunks in value.chunks for c in chunks):
        fail(ValueError, op, name, f"chunks {value.chunks}",
             "must have known chunk sizes (call .compute_chunk_sizes())")
    return value


def _check_small(op: str, name: str, value: Any) -> np.ndarray:
    """A NumPy stand-in for a weight-like argument (NumPy or a small dask array), for the checks."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, da.Array):
        _check_dask(op, name, value)
        return np.zeros(value.shape, dtype=value.dtype)
    fail(TypeError, op, name, f"an object of type {type(value).__name__}", "must be a numpy.ndarray or a dask array")


def _shared(value: Any) -> Any:
    """A weight-like argument as one task that every block depends on (each worker fetches it once)."""
    if isinstance(value, da.Array):
        return value.rechunk({axis: -1 for axis in range(value.ndim)}).to_delayed().ravel()[0]
    if isinstance(value, np.ndarray):
        return dask.delayed(value, pure=True, traverse=False)
    return value


def _probe(block: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
    """Run a block on an empty batch: the eager op's argument checks and its result dtype, without data."""
    return block(*arrays, block_id=(0,) * arrays[0].ndim)


def _empty_slab(x: da.Array, plans: Sequence[AxisPlan]) -> np.ndarray:
    """A zero-batch stand-in for the first block's slab."""
    return np.empty((0, x.shape[1], *(b - a for a, b in (p.input_ranges[0] for p in plans))), dtype=x.dtype)


def _batched(x: da.Array, batched: bool) -> da.Array:
    return x if batched else x[np.newaxis]


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------


def _conv_block(slab: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, eager: Callable[..., np.ndarray],
                stride: tuple[int, ...], dilation: tuple[int, ...], groups: int, flip: bool, algorithm: str,
                block_id: tuple[int, ...] | None = None) -> np.ndarray:
    return eager(slab, weight, bias, stride, 0, dilation, groups, flip=flip, algorithm=algorithm)


def _conv(op: str, rank: int | None, input: Any, weight: Any, bias: Any, stride: Any, padding: PaddingArg,
          dilation: Any, groups: Any, padding_mode: str, flip: bool, algorithm: str) -> da.Array:
    x = _check_dask(op, "input", input)
    weight_proxy = _check_small(op, "weight", weight)
    bias_proxy = None if bias is None else _check_small(op, "bias", bias)
    spec = conv_spec(x.shape, weight_proxy.shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op=op, rank=rank)
    x = _batched(x, spec.batched).rechunk({1: -1})  # channels in one chunk: every output reads its group's
    batched = spec.batched
    x, spec = _compact(x, spec, algorithm)
    plans = tuple(plan_axis(c, k, s, p, d) for c, k, s, p, d in
                  zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation))
    block = functools.partial(_conv_block, eager=getattr(_functional, op), stride=spec.stride,
                              dilation=spec.dilation, groups=spec.groups, flip=spec.flip, algorithm=algorithm)
    chunks = (x.chunks[0], (spec.out_channels,), *(p.output_chunks for p in plans))
    _check_blocks_fit(spec, chunks, result_dtype(x.dtype), "output block")
    dtype = _probe(block, _empty_slab(x, plans), weight_proxy, bias_proxy).dtype
    out = _map_blocks(op, block, _slabs(x, plans, spec.padding_mode, 0), [_shared(weight), _shared(bias)], chunks,
                      dtype)
    return out if batched else out[0]


_CONV_DOC = """{summary}

    The chunked counterpart of :func:`convolab.{op}`: same arguments, same
    result, computed one output block at a time (see :mod:`convolab.dask`).

    Parameters
    ----------
    input : dask.array.Array
        ``(N, C_in, {spatial})`` or unbatched ``(C_in, {spatial})``, any
        chunking with known sizes. The channel axis is rechunked to one chunk.
    weight : numpy.ndarray or dask.array.Array
        ``(C_out, C_in / groups, {kernel})``, of the input's dtype; sent once
        to each worker.
    bias : numpy.ndarray or dask.array.Array, optional
        ``(C_out,)``.
    stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.{op}`; every padding mode is applied at the
        array's true edges only.
    algorithm : str
        The eager algorithm each block runs (as in :func:`convolab.{op}`);
        ``"auto"`` plans per block, so floating-point results may differ from
        the eager op's in the last bits where a block picks another algorithm.

    Returns
    -------
    dask.array.Array
        Lazy ``(N, C_out, {out})`` (no batch axis for unbatched input), in the
        eager op's dtype; batch chunks as the input's, spatial chunks from
        :func:`plan_axis` (input chunks divided by the stride).

    Raises
    ------
    TypeError
        ``input`` not a dask array, ``weight``/``bias`` neither NumPy nor dask,
        and every TypeError of :func:`convolab.{op}`.
    ValueError
        Unknown chunk sizes, and every ValueError of :func:`convolab.{op}`.

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``.

    Examples
    --------
{examples}
"""

_CONV_EXAMPLES = {
    None: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.dask as cld
    >>> x = da.arange(2 * 64).reshape(2, 1, 8, 8).rechunk((1, 1, 3, 5))
    >>> w = np.arange(18).reshape(2, 1, 3, 3)
    >>> y = cld.conv(x, w, padding=1, stride=2, padding_mode="circular")
    >>> y.chunks
    ((1, 1), (2,), (2, 1, 1), (3, 1))
    >>> np.array_equal(y.compute(), cl.conv(x.compute(), w, padding=1, stride=2, padding_mode="circular"))
    True""",
    1: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.from_array(np.array([[1, 2, 3, 4, 5, 6]]), chunks=(1, 2))
    >>> cld.conv1d(x, np.array([[[1, 0, -1]]]), padding=1, padding_mode="reflect").compute()
    array([[ 0, -2, -2, -2, -2,  0]])""",
    2: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.dask as cld
    >>> x = da.arange(100).reshape(1, 10, 10).rechunk((1, 4, 3))
    >>> sobel = np.array([[[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]]])
    >>> y = cld.conv2d(x, sobel, padding="same", padding_mode="replicate")
    >>> np.array_equal(y.compute(), cl.conv2d(x.compute(), sobel, padding="same", padding_mode="replicate"))
    True""",
    3: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.ones((1, 2, 6, 6, 6), chunks=(1, 1, 2, 3, 6))
    >>> y = cld.conv3d(x, np.ones((4, 2, 3, 3, 3)), padding=1)
    >>> y.shape, y.chunks[1], float(y[0, 0, 2, 2, 2].compute())
    ((1, 4, 6, 6, 6), (4,), 54.0)""",
}


def _make_conv(op: str, rank: int | None, summary: str, spatial: str, kernel: str, out: str) -> Callable[..., da.Array]:
    def conv_op(
        input: da.Array,
        weight: np.ndarray | da.Array,
        bias: np.ndarray | da.Array | None = None,
        stride: Any = 1,
        padding: PaddingArg = 0,
        dilation: Any = 1,
        groups: int = 1,
        *,
        padding_mode: str = "zeros",
        flip: bool = False,
        algorithm: str = "auto",
    ) -> da.Array:
        return _conv(op, rank, input, weight, bias, stride, padding, dilation, groups, padding_mode, flip, algorithm)

    conv_op.__name__ = conv_op.__qualname__ = op
    conv_op.__doc__ = _CONV_DOC.format(summary=summary, op=op, spatial=spatial, kernel=kernel, out=out,
                                       examples=_CONV_EXAMPLES[rank])
    return conv_op


conv = _make_conv("conv", None, "N-d convolution of a dask array (cross-correlation by default).",
                  "*spatial", "*kernel_size", "*out")
conv1d = _make_conv("conv1d", 1, "1-d convolution of a dask array: ``conv`` with one spatial dimension.",
                    "L", "kL", "L_out")
conv2d = _make_conv("conv2d", 2, "2-d convolution of a dask array: ``conv`` with two spatial dimensions.",
                    "H, W", "kH, kW", "H_out, W_out")
conv3d = _make_conv("conv3d", 3, "3-d convolution of a dask array: ``conv`` with three spatial dimensions.",
                    "D, H, W", "kD, kH, kW", "D_out, H_out, W_out")


# ---------------------------------------------------------------------------
# correlate / convolve (SciPy's semantics)
# ---------------------------------------------------------------------------


def _signal_block(slab: np.ndarray, kernel: np.ndarray, *, reverse: bool, method: str,
                  block_id: tuple[int, ...] | None = None) -> np.ndarray:
    eager = _eager_correlate if reverse else _eager_convolve
    return eager(slab[0, 0], kernel, "valid", method)[np.newaxis, np.newaxis]  # (1, 1, *block)


def _signal(op: str, in1: Any, in2: Any, mode: str, method: str, reverse: bool) -> da.Array:
    x = _check_dask(op, "in1", in1)
    if x.ndim == 0:
        fail(ValueError, op, "in1", "a 0-d array", "must have at least one dimension")
    kernel = in2 if isinstance(in2, da.Array) else np.asarray(in2)
    kernel_proxy = _check_small(op, "in2", kernel)
    eager = _eager_correlate if reverse else _eager_convolve
    if x.size == 0 or kernel.size == 0:  # no data: the eager op's own result, checks and dtype
        return da.from_array(eager(np.zeros(x.shape, x.dtype), kernel_proxy, mode, method))
    # The eager op on one-sample arrays: its checks of mode, method, dtypes and ranks, and its result dtype.
    dtype = eager(np.zeros((1,) * x.ndim, x.dtype), np.zeros((1,) * kernel.ndim, kernel_proxy.dtype), mode,
                  method).dtype
    if mode == "valid" and any(k > n for k, n in zip(kernel.shape, x.shape)):
        fail(ValueError, op, "in2", f"shape {kernel.shape} with in1 of shape {x.shape}",
             "must fit inside in1 in every dimension for mode='valid' (convolab.dask slides in2 over the "
             "chunked in1; SciPy would swap them)")
    if mode == "full":
        padding = [shapes.full_padding(k) for k in kernel.shape]
    elif mode == "same":  # SciPy's centring: the odd unit on the low side
        padding = [((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in kernel.shape]
    else:
        padding = [(0, 0)] * kernel.ndim
    plans = tuple(plan_axis(c, k, 1, p, 1) for c, k, p in zip(x.chunks, kernel.shape, padding))
    batched = x[np.newaxis, np.newaxis]
    block = functools.partial(_signal_block, reverse=reverse, method=method)
    out = _map_blocks(op, block, _slabs(batched, plans, "zeros", 0), [_shared(kernel)],
                      ((1,), (1,), *(p.output_chunks for p in plans)), dtype)
    return out[0, 0]


_SIGNAL_DOC = """{summary}

    The chunked counterpart of :func:`convolab.{op}` (``scipy.signal.{op}``'s
    semantics): ``in1`` is a chunked dask array, ``in2`` a small kernel.

    Parameters
    ----------
    in1 : dask.array.Array
        The signal, at least 1-d, any chunking with known sizes.
    in2 : array_like or dask.array.Array
        The kernel, of ``in1``'s number of dimensions; sent once to each worker.
    mode : {{"full", "valid", "same"}}
        As in :func:`convolab.{op}`. For ``"valid"``, ``in2`` must fit inside
        ``in1`` (SciPy would swap the two; here ``in2`` is the one that slides).
    method : {{"auto", "direct", "fft"}}
        The eager method each block runs.

    Returns
    -------
    dask.array.Array
        Lazy, of the eager op's shape and dtype, chunked like ``in1``.

    Raises
    ------
    TypeError, ValueError
        ``in1`` not a dask array or with unknown chunks; a 0-d ``in1``; an
        ``in2`` larger than ``in1`` in ``"valid"`` mode; and every error of
        :func:`convolab.{op}`.

    Shape
    -----
    Per axis: full ``s1 + s2 - 1``; same ``s1``; valid ``s1 - s2 + 1``.

    Examples
    --------
{examples}
"""


def correlate(in1: da.Array, in2: Any, mode: str = "full", method: str = "auto") -> da.Array:
    return _signal("correlate", in1, in2, mode, method, reverse=True)


def convolve(in1: da.Array, in2: Any, mode: str = "full", method: str = "auto") -> da.Array:
    return _signal("convolve", in1, in2, mode, method, reverse=False)


correlate.__doc__ = _SIGNAL_DOC.format(
    summary="N-d cross-correlation of a dask array with a kernel, as ``scipy.signal.correlate``.", op="correlate",
    examples="""    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.from_array(np.array([1, 2, 3, 4, 5]), chunks=2)
    >>> cld.correlate(x, [1, 0, -1]).compute()
    array([-1, -2, -2, -2, -2,  4,  5])
    >>> cld.correlate(x, [1, 0, -1], mode="same").chunks
    ((2, 2, 1),)""")
convolve.__doc__ = _SIGNAL_DOC.format(
    summary="N-d convolution of a dask array with a kernel, as ``scipy.signal.convolve``.", op="convolve",
    examples="""    >>> import numpy as np, dask.array as da, convolab as cl, convolab.dask as cld
    >>> image = da.arange(48).reshape(6, 8).rechunk((4, 3))
    >>> kernel = np.array([[1, 2], [3, 4]])
    >>> np.array_equal(cld.convolve(image, kernel, mode="same").compute(),
    ...                cl.convolve(image.compute(), kernel, mode="same"))
    True""")


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------


def _pool_rank(op: str, kernel_size: Any, rank: int | None) -> int | None:
    if rank is None and isinstance(kernel_size, (tuple, list)) and kernel_size:
        return len(kernel_size)
    return rank


def _max_pool_block(slab: np.ndarray, *, eager: Callable[..., np.ndarray], kernel_size: tuple[int, ...],
                    stride: tuple[int, ...], dilation: tuple[int, ...],
                    block_id: tuple[int, ...] | None = None) -> np.ndarray:
    return eager(slab, kernel_size, stride, 0, dilation)


def _pool_block_spec(slab: np.ndarray, block_id: tuple[int, ...], kernel_size: tuple[int, ...],
                     stride: tuple[int, ...], dilation: tuple[int, ...],
                     cut: tuple[tuple[tuple[int, ...], ...], ...]) -> Any:
    """The pooling of one clipped slab: its windows, with the padding cut off it as the spec's own padding."""
    padding = tuple(per_block[b][:2] for per_block, b in zip(cut, block_id[2:]))
    spec = _pooling.PoolSpec(op="pool", batched=True, batch=slab.shape[0], channels=slab.shape[1],
                             input_size=slab.shape[2:], kernel_size=kernel_size, stride=stride, padding=padding,
                             dilation=dilation)
    # The block's output count, pinned: PoolSpec's own formula reads a symmetric padding.
    spec.__dict__["output_size"] = tuple(per_block[b][2] for per_block, b in zip(cut, block_id[2:]))
    return spec


def _clipped_max_pool_block(slab: np.ndarray, *, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                            dilation: tuple[int, ...], cut: tuple[tuple[tuple[int, ...], ...], ...],
                            block_id: tuple[int, ...] | None = None) -> np.ndarray:
    spec = _pool_block_spec(slab, block_id, kernel_size, stride, dilation, cut)
    return _pooling._max_pool_forward(slab, spec, with_indices=False)[0]


def _clipped_slabs(x: da.Array, plans: Sequence[AxisPlan]) -> tuple[da.Array, tuple[tuple[tuple[int, ...], ...], ...]]:
    """Every output block's slab cut to the input cells it holds, and per axis and block the padding cut off.

    For a kernel so large (after :func:`convolab.pooling._trim_kernel`) that its
    slabs would be mostly padding: the blocks then pool with that padding as
    their spec's own (never built), as the eager op does.
    """
    cut = []  # per axis and block: (low, high) cut off, and the block's output count
    for axis, plan in enumerate(plans, start=2):
        size = plan.input_size
        cut.append(tuple((max(0, -start), max(0, stop - size), count)
                         for (start, stop), count in zip(plan.input_ranges, plan.output_chunks)))
        inside = [(max(start, 0), min(stop, size)) for start, stop in plan.input_ranges]
        x = _gather(x, axis, (0, 0), "zeros", 0, inside)
    return x, tuple(cut)


def _lowest(dtype: np.dtype) -> Any:
    """The padding value that max pooling never prefers: -inf, or an integer dtype's minimum."""
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return 0  # refused by the eager op's checks


def _max_pool(op: str, rank: int | None, input: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: Any, return_indices: Any) -> da.Array:
    x = _check_dask(op, "input", input)
    spec = _pooling.pool_spec(x.shape, kernel_size, stride, padding, dilation, ceil_mode, op=op,
                              rank=_pool_rank(op, kernel_size, rank))
    if check_flag(return_indices, "return_indices", op):
        fail(ValueError, op, "return_indices", "True",
             "is not supported on dask arrays (the indices are flat positions in whole planes; use the eager op)")
    x = _batched(x, spec.batched)
    batched, spec = spec.batched, _pooling._trim_kernel(spec)  # a huge kernel's padding-only taps: never sliced
    # window_padding adds what ceil_mode's last window hangs past the padding: filled, never the maximum.
    plans = tuple(plan_axis(c, k, s, p, d) for c, k, s, p, d in
                  zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.window_padding, spec.dilation))
    chunks = (x.chunks[0], x.chunks[1], *(p.output_chunks for p in plans))
    if prod(spec.kernel_size) > _pooling._SEPARABLE_TAPS:  # slabs would be mostly padding: cut it off them
        slabs, cut = _clipped_slabs(x, plans)
        block = functools.partial(_clipped_max_pool_block, kernel_size=spec.kernel_size, stride=spec.stride,
                                  dilation=spec.dilation, cut=cut)
        return _batched_result(_map_blocks(op, block, slabs, [], chunks, x.dtype), batched)
    block = functools.partial(_max_pool_block, eager=getattr(_pooling, op), kernel_size=spec.kernel_size,
                              stride=spec.stride, dilation=spec.dilation)
    dtype = _probe(block, _empty_slab(x, plans)).dtype
    out = _map_blocks(op, block, _slabs(x, plans, "zeros", _lowest(x.dtype)), [], chunks, dtype)
    return _batched_result(out, batched)


def _batched_result(out: da.Array, batched: bool) -> da.Array:
    return out if batched else out[0]


def _avg_divisor_axis(size: int, kernel: int, stride: int, low: int, count_include_pad: bool, first: int,
                      count: int) -> np.ndarray:
    """One axis's factor of PyTorch's average-pooling divisor, for the outputs ``first .. first + count - 1``.

    The window from ``start = o*stride - low`` is clipped to ``end = min(start + k, in + low)``;
    with ``count_include_pad`` it counts ``end - start`` cells, otherwise only the input's,
    ``min(end, in) - max(start, 0)``. The divisor is the product over axes (as :func:`convolab.avg_pool`).
    """
    start = np.arange(first, first + count) * stride - low
    end = np.minimum(start + kernel, size + low)
    return end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0)


def _avg_pool_block(slab: np.ndarray, *, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                    summed_in: np.dtype, returned: np.dtype, windows: tuple[tuple[int, int, int, int], ...],
                    count_include_pad: bool, divisor_override: int | None, offsets: tuple[tuple[int, ...], ...],
                    cut: tuple[tuple[tuple[int, ...], ...], ...] | None = None,
                    block_id: tuple[int, ...] | None = None) -> np.ndarray:
    # The eager op's window sums (divisor 1) in the eager accumulation dtype, then the whole array's divisor,
    # computed here for this block's outputs from the integers in ``windows`` (size, kernel, stride, low per axis).
    if cut is None:
        sums = _pooling.avg_pool(slab.astype(summed_in, copy=False), kernel_size, stride, 0, divisor_override=1)
    else:  # a clipped slab (_clipped_slabs): the padding cut off it is the block spec's own, adding nothing
        spec = _pool_block_spec(slab, block_id, kernel_size, stride, (1,) * len(kernel_size), cut)
        sums = _pooling._reduce_windows(slab.astype(summed_in, copy=False), spec, np.add, 0, summed_in)
    if divisor_override is not None:
        return (sums / divisor_override).astype(returned, copy=False)
    counts = [_avg_divisor_axis(*window, count_include_pad, axis_offsets[b], n)
              for window, axis_offsets, b, n in zip(windows, offsets, block_id[2:], sums.shape[2:])]
    return (sums / reduce(np.multiply.outer, counts).astype(summed_in)).astype(returned, copy=False)


def _avg_pool(op: str, rank: int | None, input: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any,
              count_include_pad: Any, divisor_override: Any) -> da.Array:
    x = _check_dask(op, "input", input)
    rank = _pool_rank(op, kernel_size, rank)
    spec = _pooling.pool_spec(x.shape, kernel_size, stride, padding, 1, ceil_mode, op=op, rank=rank)
    x = _batched(x, spec.batched)
    # The divisor counts the whole window; the sums need only its taps that reach the input (zeros add nothing).
    windows = tuple((n, k, s, low) for n, k, s, (low, _) in
                    zip(spec.input_size, spec.kernel_size, spec.stride, spec.padding))
    batched, spec = spec.batched, _pooling._trim_kernel(spec)
    plans = tuple(plan_axis(c, k, s, p, 1) for c, k, s, p in
                  zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.window_padding))
    # The eager op on an empty batch of the first slab: its checks of the flags, divisor and dtype. (Of a
    # one-cell window where the slabs are clipped: only the flags, divisor and dtype are asked about.)
    clipped = prod(spec.kernel_size) > _pooling._SEPARABLE_TAPS
    probe = (np.empty((0, x.shape[1], *([1] * spec.rank)), x.dtype), (1,) * spec.rank, 1) if clipped else \
        (_empty_slab(x, plans), spec.kernel_size, spec.stride)
    eager = getattr(_pooling, op)(*probe, 0, False, count_include_pad, divisor_override)
    returned = eager.dtype
    summed_in = np.promote_types(returned, np.float32)  # float16 is summed in float32, as the eager op
    block = functools.partial(_avg_pool_block, kernel_size=spec.kernel_size, stride=spec.stride,
                              summed_in=summed_in, returned=returned, windows=windows,
                              count_include_pad=bool(count_include_pad),
                              divisor_override=None if divisor_override is None else int(divisor_override),
                              offsets=tuple(p.output_offsets for p in plans))
    chunks = (x.chunks[0], x.chunks[1], *(p.output_chunks for p in plans))
    if clipped:  # slabs would be mostly padding: cut it off them
        slabs, cut = _clipped_slabs(x, plans)
        return _batched_result(_map_blocks(op, functools.partial(block, cut=cut), slabs, [], chunks, returned),
                               batched)
    out = _map_blocks(op, block, _slabs(x, plans, "zeros", 0), [], chunks, returned)
    return _batched_result(out, batched)


_POOL_DOC = """{summary}

    The chunked counterpart of :func:`convolab.{op}`: same arguments, same
    result, one output block at a time. Channels never mix, so channel chunks
    are kept.

    Parameters
    ----------
    input : dask.array.Array
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``, any chunking
        with known sizes.
    {params}
        As in :func:`convolab.{op}`; the implicit padding (and ``ceil_mode``'s
        overhang) is applied at the array's true edges only.

    Returns
    -------
    dask.array.Array
        Lazy ``(N, C, {out})``, in the eager op's dtype.

    Raises
    ------
    TypeError, ValueError
        ``input`` not a dask array or with unknown chunks;{extra_raises} and
        every error of :func:`convolab.{op}`.

    Notes
    -----
    {notes}

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + 2 * padding - {extent}) / stride) + 1`` (``ceil`` with ``ceil_mode``).

    Examples
    --------
{examples}
"""

_MAX_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.dask as cld
    >>> x = da.random.default_rng(0).standard_normal((2, 3, 9, 11), chunks=(1, 2, 4, 3))
    >>> y = cld.max_pool(x, (3, 3), stride=2, padding=1, ceil_mode=True)
    >>> np.array_equal(y.compute(), cl.max_pool(x.compute(), (3, 3), stride=2, padding=1, ceil_mode=True))
    True""",
    1: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.from_array(np.array([[3, 1, 4, 1, 5, 9, 2]]), chunks=(1, 2))
    >>> cld.max_pool1d(x, 3, stride=2).compute()
    array([[4, 5, 9]])""",
    2: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.arange(16.).reshape(1, 4, 4).rechunk((1, 3, 1))
    >>> cld.max_pool2d(x, 2).compute()
    array([[[ 5.,  7.],
            [13., 15.]]])""",
    3: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.arange(64.).reshape(1, 1, 4, 4, 4).rechunk(3)
    >>> cld.max_pool3d(x, 2).compute().ravel()
    array([21., 23., 29., 31., 53., 55., 61., 63.])""",
}

_AVG_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.dask as cld
    >>> x = da.arange(2 * 70).reshape(2, 1, 7, 10).rechunk((1, 1, 3, 4))
    >>> y = cld.avg_pool(x, (3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    >>> np.array_equal(y.compute(),
    ...                cl.avg_pool(x.compute(), (3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False))
    True""",
    1: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.from_array(np.array([[1., 2., 3., 4., 5.]]), chunks=(1, 2))
    >>> cld.avg_pool1d(x, 3, stride=2, padding=1, count_include_pad=False).compute()
    array([[1.5, 3. , 4.5]])""",
    2: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> x = da.arange(16.).reshape(1, 1, 4, 4).rechunk((1, 1, 1, 3))
    >>> cld.avg_pool2d(x, 2).compute()
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])""",
    3: """    >>> import numpy as np, dask.array as da, convolab.dask as cld
    >>> cld.avg_pool3d(da.ones((2, 3, 3, 3), chunks=1), 2, stride=1, padding=1).shape
    (2, 4, 4, 4)""",
}


def _spatial_axes(rank: int | None) -> tuple[str, str]:
    names = {None: "*spatial", 1: "L", 2: "H, W", 3: "D, H, W"}[rank]
    return names, ("*out" if rank is None else ", ".join(f"{n}_out" for n in names.split(", ")))


def _make_max_pool(op: str, rank: int | None, summary: str) -> Callable[..., da.Array]:
    def max_pool_op(
        input: da.Array,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
        return_indices: bool = False,
    ) -> da.Array:
        return _max_pool(op, rank, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)

    spatial, out = _spatial_axes(rank)
    max_pool_op.__name__ = max_pool_op.__qualname__ = op
    max_pool_op.__doc__ = _POOL_DOC.format(
        summary=summary, op=op, spatial=spatial, out=out, examples=_MAX_POOL_EXAMPLES[rank],
        extent="dilation * (kernel_size - 1) - 1",
        params="kernel_size, stride, padding, dilation, ceil_mode",
        extra_raises=" ``return_indices=True`` (indices are not computed on chunks: use the eager op);",
        notes="Padding cells are filled with ``-inf`` (an integer dtype's minimum), which the maximum never\n"
              "    prefers over an input cell, so the values equal the eager op's (padding taps are masked there).",
    )
    return max_pool_op


def _make_avg_pool(op: str, rank: int | None, summary: str) -> Callable[..., da.Array]:
    def avg_pool_op(
        input: da.Array,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> da.Array:
        return _avg_pool(op, rank, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override)

    spatial, out = _spatial_axes(rank)
    avg_pool_op.__name__ = avg_pool_op.__qualname__ = op
    avg_pool_op.__doc__ = _POOL_DOC.format(
        summary=summary, op=op, spatial=spatial, out=out, examples=_AVG_POOL_EXAMPLES[rank],
        extent="kernel_size", params="kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override",
        extra_raises="",
        notes="Each block sums its windows with the eager op and divides by the divisor of the window's place\n"
              "    in the whole array (PyTorch's rule). Integer inputs give the eager op's exact numbers; floating\n"
              "    point sums may differ from it in the last bit (the window sums are added in another order).",
    )
    return avg_pool_op


max_pool = _make_max_pool("max_pool", None, "N-d max pooling of a dask array.")
max_pool1d = _make_max_pool("max_pool1d", 1, "1-d max pooling of a dask array.")
max_pool2d = _make_max_pool("max_pool2d", 2, "2-d max pooling of a dask array.")
max_pool3d = _make_max_pool("max_pool3d", 3, "3-d max pooling of a dask array.")
avg_pool = _make_avg_pool("avg_pool", None, "N-d average pooling of a dask array.")
avg_pool1d = _make_avg_pool("avg_pool1d", 1, "1-d average pooling of a dask array.")
avg_pool2d = _make_avg_pool("avg_pool2d", 2, "2-d average pooling of a dask array.")
avg_pool3d = _make_avg_pool("avg_pool3d", 3, "3-d average pooling of a dask array.")


# ---------------------------------------------------------------------------
# Gradients of the convolution
# ---------------------------------------------------------------------------


def _check_grad_output(op: str, grad_output: Any, expected_shape: tuple[int, ...], dtype: np.dtype) -> da.Array:
    g = _check_dask(op, "grad_output", grad_output)
    if g.shape != expected_shape:
        fail(ValueError, op, "grad_output", f"shape {g.shape}",
             f"must have the forward output's shape {expected_shape}")
    if g.dtype != dtype:
        fail(TypeError, op, "grad_output", f"dtype {g.dtype}", f"must have dtype {dtype}")
    return g


def _weight_grad_block(slab: np.ndarray, grad_output: np.ndarray, *, eager: Callable[..., np.ndarray],
                       weight_size: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...], groups: int,
                       flip: bool, algorithm: str, summed_in: np.dtype,
                       block_id: tuple[int, ...] | None = None) -> np.ndarray:
    # This block's share, dk = sum over its windows of g * x_p (convolab._conv), kept in the accumulation dtype.
    share = eager(slab.astype(summed_in, copy=False), weight_size, grad_output.astype(summed_in, copy=False), stride,
                  0, dilation, groups, flip=flip, algorithm=algorithm)
    return share.reshape((1,) * slab.ndim + share.shape)  # (1, 1, *1, *weight_size): one cell per block


def _conv_weight(op: str, rank: int | None, input: Any, weight_size: Any, grad_output: Any, stride: Any,
                 padding: PaddingArg, dilation: Any, groups: Any, padding_mode: str, flip: bool, algorithm: str,
                 split_every: Any) -> da.Array:
    x = _check_dask(op, "input", input)
    size = normalize_shape(weight_size, "weight_size", op)
    spec = conv_spec(x.shape, size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op=op, rank=rank)
    g = _check_grad_output(op, grad_output, spec.caller_output_shape, x.dtype)
    if split_every is not None and (not isinstance(split_every, (int, np.integer))
                                    or isinstance(split_every, (bool, np.bool_))):
        fail(TypeError, op, "split_every", f"{split_every!r} of type {type(split_every).__name__}",
             "must be None or an int >= 2")
    if split_every is not None and split_every < 2:
        fail(ValueError, op, "split_every", repr(split_every), "must be None or an int >= 2")
    x = whole = _batched(x, spec.batched).rechunk({1: -1})
    x, spec = _compact(x, spec, algorithm)
    plans = tuple(plan_axis(c, k, s, p, d) for c, k, s, p, d in
                  zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation))
    g = _batched(g, spec.batched).rechunk((x.chunks[0], -1, *(p.output_chunks for p in plans)))
    summed_in = compute_dtype(x.dtype)
    block = functools.partial(_weight_grad_block, eager=getattr(_grad, op), weight_size=spec.weight_shape,
                              stride=spec.stride, dilation=spec.dilation, groups=spec.groups, flip=spec.flip,
                              algorithm=algorithm, summed_in=summed_in)
    first_output_block = np.empty((0, spec.out_channels, *(p.output_chunks[0] for p in plans)), x.dtype)
    _probe(block, _empty_slab(x, plans), first_output_block)
    slabs = _slabs(x, plans, spec.padding_mode, 0)
    # Slab i and grad_output block i pair up by block index (their sizes differ: no alignment).
    blocks = tuple(range(slabs.ndim))
    weight_axes = {slabs.ndim + axis: n for axis, n in enumerate(spec.weight_shape)}
    shares = da.blockwise(block, blocks + tuple(weight_axes), slabs, blocks, g, blocks, new_axes=weight_axes,
                          adjust_chunks=dict.fromkeys(blocks, 1), align_arrays=False, concatenate=True,
                          dtype=summed_in, meta=np.empty((0,) * (len(blocks) + len(weight_axes)), summed_in),
                          name=f"{op}-shares-{tokenize(block, slabs, g)}")
    # A tree reduction over every block (dask's partial sums, split_every at a time).
    total = shares.sum(axis=blocks, split_every=split_every)
    if is_exact(x.dtype) and whole.size and g.size:
        # Each share passed its block's int64 range check, but their sum may not fit: the eager op's check on
        # the whole arrays (their extreme values, reduced lazily) runs before the total is returned.
        check = functools.partial(_range_checked, op=op, terms=spec.batch * prod(spec.output_size))
        axes, (x_range, g_range) = tuple(range(total.ndim)), (_extremes(a) for a in (whole, g))
        total = da.blockwise(check, axes, total, axes, x_range, (total.ndim,), g_range, (total.ndim + 1,),
                             concatenate=True, dtype=total.dtype, meta=np.empty((0,) * total.ndim, total.dtype),
                             name=f"{op}-checked-{tokenize(check, total, x_range, g_range)}")
    return total.astype(result_dtype(x.dtype))


def _extremes(a: da.Array) -> da.Array:
    """``[a.min(), a.max()]`` of a non-empty array, lazily.

    Dask's min and max fail on zero-size chunks, so those are merged away first.
    """
    a = a.rechunk(tuple(tuple(n for n in sizes if n) for sizes in a.chunks))
    return da.stack([a.min(), a.max()])


def _range_checked(total: np.ndarray, input_extremes: np.ndarray, grad_output_extremes: np.ndarray, *, op: str,
                   terms: int) -> np.ndarray:
    """``total``, once the eager op's int64 range check passes on the whole arrays' ``[min, max]``."""
    check_exact_range(op, ("input", "grad_output"), input_extremes, grad_output_extremes, terms)
    return total


def _input_grad_block(grad_output: np.ndarray, weight: np.ndarray, *, eager: Callable[..., np.ndarray],
                      plans: tuple[AxisPlan, ...], groups: int, flip: bool, algorithm: str, in_channels: int,
                      block_id: tuple[int, ...] | None = None) -> np.ndarray:
    """The input gradient on one block ``[u, v)`` of the padded input (per axis), from the outputs that read it.

    The outputs ``[p0, p1)`` read the padded cells ``[p0*s, (p1-1)*s + k_eff)``: the
    eager input gradient of that sub-problem (no padding) holds, on ``[u, v)``, every
    term of ``dx_p[q] = sum g[p] k[j]`` over ``p*s + j*d = q``; cells outside it get zero.
    """
    n, dtype = grad_output.shape[0], result_dtype(weight.dtype)
    bounds = [(plan.grad_offsets[b], plan.grad_offsets[b] + plan.grad_chunks[b])
              for plan, b in zip(plans, block_id[2:])]
    ranges = [plan.grad_output_ranges[b] for plan, b in zip(plans, block_id[2:])]
    result = np.zeros((n, in_channels, *(v - u for u, v in bounds)), dtype=dtype)
    if any(r is None for r in ranges) or not n:
        if not n:  # the probe: the eager op's checks on an empty batch
            eager((0, in_channels, *(plan.extent for plan in plans)), weight,
                             np.empty((0, weight.shape[0], *([1] * len(plans))), dtype=grad_output.dtype),
                             tuple(p.stride for p in plans), 0, tuple(p.dilation for p in plans), groups,
                             flip=flip, algorithm=algorithm)
        return result
    sub_size = [(p1 - p0 - 1) * plan.stride + plan.extent for (p0, p1), plan in zip(ranges, plans)]
    sub = eager((n, in_channels, *sub_size), weight, grad_output, tuple(p.stride for p in plans), 0,
                           tuple(p.dilation for p in plans), groups, flip=flip, algorithm=algorithm)
    source, target = [], []
    for (u, v), (p0, _), plan, length in zip(bounds, ranges, plans, sub_size):
        base = p0 * plan.stride  # the sub-problem's first cell, in padded coordinates
        lo, hi = max(u - base, 0), min(v - base, length)
        if lo >= hi:
            return result
        source.append(slice(lo, hi))
        target.append(slice(lo + base - u, hi + base - u))
    result[(Ellipsis, *target)] = sub[(Ellipsis, *source)]
    return result


def _input_chunks(op: str, chunks: Any, spec: Any, g: da.Array,
                  plans_from_g: Callable[[], tuple[tuple[int, ...], ...]]) -> tuple[tuple[int, ...], ...]:
    """The input gradient's chunks, for the batched input shape."""
    if chunks is None:
        return (g.chunks[0], (spec.in_channels,), *plans_from_g())
    shape = spec.input_shape if spec.batched else spec.input_shape[1:]
    try:
        normalized = da.core.normalize_chunks(chunks, shape=shape, dtype=np.float64)
    except (ValueError, TypeError) as error:
        fail(ValueError, op, "chunks", repr(chunks), f"must be a dask chunks specification for shape {shape} ({error})")
    return normalized if spec.batched else ((1,), *normalized)


def _conv_input(op: str, rank: int | None, input_size: Any, weight: Any, grad_output: Any, stride: Any,
                padding: PaddingArg, dilation: Any, groups: Any, padding_mode: str, flip: bool, algorithm: str,
                chunks: Any) -> da.Array:
    weight_proxy = _check_small(op, "weight", weight)
    spec = conv_spec(normalize_shape(input_size, "input_size", op), weight_proxy.shape, stride=stride,
                     padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode, flip=flip,
                     op=op, rank=rank)
    g = _batched(_check_grad_output(op, grad_output, spec.caller_output_shape, weight_proxy.dtype), spec.batched)

    def spatial_from_g() -> tuple[tuple[int, ...], ...]:
        # Input chunk boundaries under grad_output's: output boundary p at input position p*s - low.
        result = []
        for out_chunks, s, (low, _), size in zip(g.chunks[2:], spec.stride, spec.padding, spec.input_size):
            edges = sorted({0, size, *(min(max(p * s - low, 0), size) for p in accumulate(out_chunks[:-1]))})
            result.append(tuple(b - a for a, b in pairwise(edges)) or (0,))
        return tuple(result)

    input_chunks = _input_chunks(op, chunks, spec, g, spatial_from_g)
    g = g.rechunk({0: input_chunks[0], 1: -1})
    compact = compact_problem(spec, algorithm, weight_proxy.dtype)
    if compact is None:
        grad_input = _input_grad(op, spec, weight, weight_proxy, g, algorithm, input_chunks)
    else:  # as the eager op: the gradient on the cells the windows read (one chunk per axis), added back
        compact_spec, reads = compact
        grad_input = _input_grad(op, compact_spec, weight, weight_proxy, g, algorithm,
                                 (input_chunks[0], (spec.in_channels,), *((n,) for n in compact_spec.input_size)))
        for axis, (source, axis_chunks) in enumerate(zip(reads.sources, input_chunks[2:]), start=2):
            grad_input = _scatter_cells(grad_input, axis, source, axis_chunks)
    grad_input = grad_input.rechunk(input_chunks)
    return grad_input if spec.batched else grad_input[0]


def _input_grad(op: str, spec: Any, weight: Any, weight_proxy: np.ndarray, g: da.Array, algorithm: str,
                input_chunks: tuple[tuple[int, ...], ...]) -> da.Array:
    """The batched input gradient of ``spec``, one block of the padded input at a time, its padding folded back."""
    plans = tuple(plan_axis(c, k, s, p, d) for c, k, s, p, d in
                  zip(input_chunks[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation))
    block = functools.partial(_input_grad_block, eager=getattr(_grad, op), plans=plans, groups=spec.groups,
                              flip=spec.flip, algorithm=algorithm, in_channels=spec.in_channels)
    _probe(block, np.empty((0, spec.out_channels, *([1] * spec.rank)), g.dtype), weight_proxy)
    for axis, plan in enumerate(plans, start=2):
        # A block no window reaches still needs a slab to line up with: one stand-in row, unread.
        g = _gather(g, axis, (0, 0), "zeros", 0, [r if r is not None else (0, 1) for r in plan.grad_output_ranges])
    grad_padded = _map_blocks(op, block, g, [_shared(weight)],
                              (input_chunks[0], (spec.in_channels,), *(p.grad_chunks for p in plans)),
                              result_dtype(weight_proxy.dtype))
    for axis, plan in enumerate(plans, start=2):
        grad_padded = _fold(grad_padded, axis, plan, spec.padding_mode)
    return grad_padded


def _scatter_block(grad: np.ndarray, start: np.ndarray, stop: np.ndarray, *, axis: int,
                   source: np.ndarray) -> np.ndarray:
    """The input cells ``[start, stop)`` along ``axis``: the sum of the compact cells that read each."""
    first, last = int(start[0]), int(stop[0])
    mine = (source >= first) & (source < last)
    moved = np.moveaxis(grad, axis, 0)  # (compact cells, ...)
    total = np.zeros((last - first, *moved.shape[1:]), dtype=grad.dtype)
    np.add.at(total, source[mine] - first, moved[mine])  # unbuffered: a cell read twice gets both shares
    return np.moveaxis(total, 0, axis)


def _scatter_cells(grad: da.Array, axis: int, source: np.ndarray, chunks: tuple[int, ...]) -> da.Array:
    """The transpose of :func:`_take_cells` along ``axis``: back on the input's cells, in ``chunks``.

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


_INPUT_GRAD_DOC = """Gradient of :func:`{forward}` with respect to its input, on dask arrays.

    The chunked counterpart of :func:`convolab.grad.{op}`. Each chunk of the
    result is computed from the ``grad_output`` rows whose windows reach it;
    the gradient that lands on padding cells is folded back onto the cells
    they copied (for ``"circular"``, at the far edge).

    Parameters
    ----------
    input_size : tuple of int
        Shape of the forward input (batched, or unbatched ``(C_in, {spatial})``).
    weight : numpy.ndarray or dask.array.Array
        ``(C_out, C_in / groups, {kernel})``.
    grad_output : dask.array.Array
        Of the forward output's shape and the weight's dtype, any chunking.
    stride, padding, dilation, groups, padding_mode, flip, algorithm
        As in :func:`convolab.grad.{op}`.
    chunks : dask chunks, optional
        The result's chunks; pass ``chunks=input.chunks`` to get the gradient
        chunked like the input. ``None``: batch chunks of ``grad_output``, one
        channel chunk, spatial chunks under ``grad_output``'s (times the stride).

    Returns
    -------
    dask.array.Array
        Lazy, of shape ``input_size``, dtype as the eager op.

    Raises
    ------
    TypeError, ValueError
        ``grad_output`` not a dask array, of the wrong shape or dtype; an
        invalid ``chunks``; and every error of :func:`convolab.grad.{op}`.

    Shape
    -----
    ``grad_input`` has shape ``input_size``; ``grad_output`` the forward output's,
    ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convolab as cl, convolab.dask as cld
{examples}
"""

_WEIGHT_GRAD_DOC = """Gradient of :func:`{forward}` with respect to its weight, on dask arrays.

    The chunked counterpart of :func:`convolab.grad.{op}`: each block of the
    input (batch and spatial chunks alike) gives its share of the weight
    gradient from its slab and its ``grad_output`` block, and the shares are
    summed with a tree reduction (``split_every`` at a time).

    Parameters
    ----------
    input : dask.array.Array
        The forward input, ``(N, C_in, {spatial})`` or unbatched.
    weight_size : tuple of int
        ``(C_out, C_in / groups, {kernel})``.
    grad_output : dask.array.Array
        Of the forward output's shape and the input's dtype; rechunked to the
        forward output's chunks if it is not already.
    stride, padding, dilation, groups, padding_mode, flip, algorithm
        As in :func:`convolab.grad.{op}`.
    split_every : int, optional
        Shares added per node of the reduction tree, ``>= 2``; ``None`` is dask's default.

    Returns
    -------
    dask.array.Array
        Lazy, of shape ``weight_size``, one chunk; dtype as the eager op
        (float16 shares are summed in float32). Float sums are added in
        another order than the eager op's, so they agree to rounding.

    Raises
    ------
    TypeError, ValueError
        ``input`` or ``grad_output`` not dask arrays, a ``grad_output`` of
        the wrong shape or dtype, a bad ``split_every``, and every error of
        :func:`convolab.grad.{op}`. Integer data whose summed gradient might
        not fit int64 is refused as the eager op refuses it (its bound on the
        whole arrays), when the result is computed.

    Shape
    -----
    The result has shape ``weight_size``; ``grad_output`` the forward output's.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convolab as cl, convolab.dask as cld
{examples}
"""

_GRAD_EXAMPLES = {
    "conv_input": """    >>> w = np.arange(8).reshape(2, 1, 2, 2)
    >>> g = da.ones((3, 2, 6, 6), dtype=int, chunks=(1, 2, 3, 2))
    >>> dx = cld.conv_input((3, 1, 5, 5), w, g, padding=1, padding_mode="circular", chunks=(1, 1, 2, 3))
    >>> dx.chunks[2:], np.array_equal(dx.compute(), cl.grad.conv_input(
    ...     (3, 1, 5, 5), w, g.compute(), padding=1, padding_mode="circular"))
    (((2, 2, 1), (3, 2)), True)""",
    "conv1d_input": """    >>> g = da.ones((1, 1, 3), chunks=1)
    >>> cld.conv1d_input((1, 1, 4), np.array([[[1., 2.]]]), g).compute()
    array([[[1., 3., 3., 2.]]])""",
    "conv2d_input": """    >>> w = np.array([[[[1., 2.], [3., 4.]]]])
    >>> cld.conv2d_input((1, 1, 3, 3), w, da.ones((1, 1, 2, 2), chunks=1)).compute()[0, 0]
    array([[ 1.,  3.,  2.],
           [ 4., 10.,  6.],
           [ 3.,  7.,  4.]])""",
    "conv3d_input": """    >>> g = da.ones((1, 1, 2, 2, 2), chunks=1)
    >>> cld.conv3d_input((1, 1, 3, 3, 3), np.ones((1, 1, 2, 2, 2)), g).compute()[0, 0, 1]
    array([[2., 4., 2.],
           [4., 8., 4.],
           [2., 4., 2.]])""",
    "conv_weight": """    >>> x = da.arange(4 * 2 * 36).reshape(4, 2, 6, 6).rechunk((1, 2, 4, 3))
    >>> g = da.ones((4, 3, 4, 4), dtype=int, chunks=1)
    >>> dw = cld.conv_weight(x, (3, 2, 2, 2), g, stride=2, padding=1, padding_mode="reflect")
    >>> np.array_equal(dw.compute(), cl.grad.conv_weight(
    ...     x.compute(), (3, 2, 2, 2), g.compute(), stride=2, padding=1, padding_mode="reflect"))
    True""",
    "conv1d_weight": """    >>> x = da.from_array(np.array([[[1., 2., 3.]], [[4., 5., 6.]]]), chunks=1)
    >>> cld.conv1d_weight(x, (1, 1, 2), da.ones((2, 1, 2), chunks=1)).compute()
    array([[[12., 16.]]])""",
    "conv2d_weight": """    >>> x = da.arange(1., 10.).reshape(1, 1, 3, 3).rechunk(2)
    >>> cld.conv2d_weight(x, (1, 1, 2, 2), da.ones((1, 1, 2, 2), chunks=1)).compute()[0, 0]
    array([[12., 16.],
           [24., 28.]])""",
    "conv3d_weight": """    >>> x = da.ones((2, 1, 3, 3, 3), chunks=(1, 1, 2, 2, 2))
    >>> cld.conv3d_weight(x, (1, 1, 2, 2, 2), da.ones((2, 1, 2, 2, 2), chunks=1)).compute().ravel()
    array([16., 16., 16., 16., 16., 16., 16., 16.])""",
}


def _make_input_grad(op: str, rank: int | None) -> Callable[..., da.Array]:
    def conv_input_op(
        input_size: Sequence[int],
        weight: np.ndarray | da.Array,
        grad_output: da.Array,
        stride: Any = 1,
        padding: PaddingArg = 0,
        dilation: Any = 1,
        groups: int = 1,
        *,
        padding_mode: str = "zeros",
        flip: bool = False,
        algorithm: str = "auto",
        chunks: Any = None,
    ) -> da.Array:
        return _conv_input(op, rank, input_size, weight, grad_output, stride, padding, dilation, groups,
                           padding_mode, flip, algorithm, chunks)

    spatial, _ = _spatial_axes(rank)
    kernel = {None: "*kernel_size", 1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}[rank]
    conv_input_op.__name__ = conv_input_op.__qualname__ = op
    conv_input_op.__doc__ = _INPUT_GRAD_DOC.format(op=op, forward=f"convolab.dask.{op[:-len('_input')]}",
                                                   spatial=spatial, kernel=kernel, examples=_GRAD_EXAMPLES[op])
    return conv_input_op


def _make_weight_grad(op: str, rank: int | None) -> Callable[..., da.Array]:
    def conv_weight_op(
        input: da.Array,
        weight_size: Sequence[int],
        grad_output: da.Array,
        stride: Any = 1,
        padding: PaddingArg = 0,
        dilation: Any = 1,
        groups: int = 1,
        *,
        padding_mode: str = "zeros",
        flip: bool = False,
        algorithm: str = "auto",
        split_every: int | None = None,
    ) -> da.Array:
        return _conv_weight(op, rank, input, weight_size, grad_output, stride, padding, dilation, groups,
                            padding_mode, flip, algorithm, split_every)

    spatial, _ = _spatial_axes(rank)
    kernel = {None: "*kernel_size", 1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}[rank]
    conv_weight_op.__name__ = conv_weight_op.__qualname__ = op
    conv_weight_op.__doc__ = _WEIGHT_GRAD_DOC.format(op=op, forward=f"convolab.dask.{op[:-len('_weight')]}",
                                                     spatial=spatial, kernel=kernel, examples=_GRAD_EXAMPLES[op])
    return conv_weight_op


conv_input = _make_input_grad("conv_input", None)
conv1d_input = _make_input_grad("conv1d_input", 1)
conv2d_input = _make_input_grad("conv2d_input", 2)
conv3d_input = _make_input_grad("conv3d_input", 3)
conv_weight = _make_weight_grad("conv_weight", None)
conv1d_weight = _make_weight_grad("conv1d_weight", 1)
conv2d_weight = _make_weight_grad("conv2d_weight", 2)
conv3d_weight = _make_weight_grad("conv3d_weight", 3)
