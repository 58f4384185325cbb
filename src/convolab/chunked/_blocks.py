"""Chunk geometry: per spatial axis, the output blocks and the input each reads (pure integers, no arrays).

Per spatial axis, :func:`axis_blocks` turns the input's chunks into output
chunks. Output ``p`` reads the padded cells ``p*s .. p*s + k_eff - 1``
(``k_eff = d*(k-1) + 1``); it belongs to the input chunk holding its window's
centre, so an input chunk boundary becomes an output boundary divided by the
stride (rounded up): output blocks start on the stride grid, and each reads its
own chunk plus a halo of about ``k_eff / 2`` cells from each neighbour (the
receptive field), or padding at a true edge::

    padded input     | lo |   chunk 0   |   chunk 1   |  chunk 2  | hi |
    output block 1               [halo|   chunk 1   |halo)
                                  ^ p0*s, on the stride grid

For the input gradient the same record lists, per block of the padded input
(the low padding, each input chunk, the high padding), the outputs whose
windows reach it. The window itself (its arguments, the padding resolved to
``(low, high)`` pairs, the output size and the rule that it must fit the
padded input) is :func:`convolab._geometry.window_geometry`'s, as for every
eager op.

``AxisPlan``, ``plan_axis`` and ``plan_chunks`` are the names ``convolab.dask``
gave these; :mod:`convolab.dask` still exports them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any, Callable, Sequence

from .. import shapes
from .._checks import normalize_shape
from .._errors import fail
from .._geometry import window_geometry
from ..spec import PaddingArg

__all__ = ["AxisBlocks", "axis_blocks", "chunk_blocks"]


@dataclass(frozen=True)
class AxisBlocks:
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


def axis_blocks(
    input_chunks: Sequence[int],
    kernel_size: int,
    stride: int = 1,
    padding: int | tuple[int, int] = (0, 0),
    dilation: int = 1,
    *,
    op: str = "axis_blocks",
) -> AxisBlocks:
    """One spatial axis of a chunked convolution or pooling: output chunks and the input each reads.

    Output ``p`` reads input cells ``p*stride - low + j*dilation``. It is
    assigned to the input chunk holding its window's anchor, the centre cell
    ``p*stride - low + c`` with ``c = (k_eff - 1) // 2``, so an input chunk
    boundary ``b`` becomes the output boundary ``ceil((b + low - c) / stride)``
    (blocks that would be empty are merged away; at stride 1 with ``"same"``
    padding the output chunks are the input's). Output block ``[p0, p1)`` then
    reads input cells ``[p0*stride - low, (p1-1)*stride + k_eff - low)``: its
    own chunk, a halo of at most :attr:`AxisBlocks.halo` cells into each
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
    op : str
        The function the error messages name.

    Returns
    -------
    AxisBlocks

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
    >>> blocks = axis_blocks((4, 4, 2), kernel_size=3, stride=2, padding=1)
    >>> blocks.output_chunks, blocks.input_ranges, blocks.halo
    ((2, 2, 1), ((-1, 4), (3, 8), (7, 10)), (1, 1))
    >>> blocks.grad_chunks, blocks.grad_output_ranges
    ((1, 4, 4, 2, 1), ((0, 1), (0, 3), (2, 5), (4, 5), None))
    """
    chunks = normalize_shape(input_chunks, "input_chunks", op)
    if not chunks:
        fail(ValueError, op, "input_chunks", "()", "must hold at least one chunk size")
    if isinstance(padding, str):  # "same" and the like depend on every axis: chunk_blocks resolves them
        fail(TypeError, op, "padding", repr(padding), "must be an int or a (low, high) pair of ints")
    pair = (tuple(padding),) if isinstance(padding, (tuple, list)) and len(padding) == 2 else padding
    size = sum(chunks)
    geometry = window_geometry(op, (size,), kernel_size, stride=stride, padding=pair, dilation=dilation)
    (k,), (s,), (d,), ((low, high),) = geometry.kernel_size, geometry.stride, geometry.dilation, geometry.padding
    (extent,), (out,) = geometry.extent, geometry.output_size
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
    return AxisBlocks(
        input_chunks=chunks, kernel_size=k, stride=s, padding=(low, high), dilation=d,
        output_chunks=output_chunks, input_ranges=input_ranges,
        grad_chunks=tuple(grad_chunks), grad_output_ranges=tuple(grad_output_ranges),
    )


def chunk_blocks(
    chunks: Sequence[Sequence[int]],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
    *,
    op: str = "chunk_blocks",
) -> tuple[AxisBlocks, ...]:
    """Every spatial axis of a chunked N-d convolution: one :func:`axis_blocks` per axis.

    Parameters
    ----------
    chunks : sequence of sequence of int
        The chunk sizes of each *spatial* axis (``x.chunks[2:]`` of a batched input).
    kernel_size, stride, dilation : int or tuple of int
        One value for every axis, or one per axis.
    padding : int, tuple, or {"valid", "same", "full"}
        As in :func:`convolab.conv`: an int, one per axis, ``(low, high)``
        pairs, or a string resolved against the axis sizes
        (:func:`convolab._geometry.resolve_padding`).
    op : str
        The function the error messages name.

    Returns
    -------
    tuple of AxisBlocks

    Shape
    -----
    Per axis as in :func:`axis_blocks`.

    Examples
    --------
    >>> grid = chunk_blocks(((5, 5), (3, 3, 3)), 3, padding="same")
    >>> [blocks.output_chunks for blocks in grid], grid[1].input_ranges
    ([(5, 5), (3, 3, 3)], ((-1, 4), (2, 7), (5, 10)))
    """
    if not isinstance(chunks, (tuple, list)) or not chunks:
        fail(TypeError, op, "chunks", repr(chunks), "must be a non-empty sequence of per-axis chunk sizes")
    sizes = tuple(sum(normalize_shape(c, "chunks", op)) for c in chunks)
    geometry = window_geometry(op, sizes, kernel_size, stride=stride, padding=padding, dilation=dilation)
    return tuple(axis_blocks(c, k, s, p, d, op=op) for c, k, s, p, d in
                 zip(chunks, geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation))


def _former_name(current: Callable[..., Any], name: str, **ops: str) -> Callable[..., Any]:
    """``current`` under the name ``convolab.dask`` gave it, its errors naming that name."""

    @functools.wraps(current)
    def former(*args: Any, **kwargs: Any) -> Any:
        return current(*args, **ops, **kwargs)

    former.__name__ = former.__qualname__ = name
    former.__doc__ = f"The former name of :func:`{current.__name__}`; its errors name ``{name}``."
    return former


# The names convolab.dask gave these (in its __all__).
AxisPlan = AxisBlocks
plan_axis = _former_name(axis_blocks, "plan_axis", op="plan_axis")
plan_chunks = _former_name(chunk_blocks, "plan_chunks", op="plan_chunks")
