"""The window primitive: pad, then view every kernel position without copying.

Direct convolution, im2col, unfold and pooling all start here; where the
windows sit (the tap arithmetic, the stride phases) is :mod:`convolab._geometry`. The last
``len(kernel_size)`` axes of an array are its spatial axes; anything before them
(batch, channels) rides along untouched.

Padding modes, drawn on an input ``a b c d`` padded by 3 on each side::

    zeros      0 0 0 | a b c d | 0 0 0
    reflect    d c b | a b c d | c b a      (edge not repeated; PyTorch/NumPy "reflect")
    symmetric  c b a | a b c d | d c b      (edge repeated; NumPy "symmetric")
    replicate  a a a | a b c d | d d d      (NumPy "edge")
    circular   b c d | a b c d | a b c      (NumPy "wrap")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import shapes
from ._errors import fail
from ._geometry import WindowGeometry

__all__ = ["pad", "pad_adjoint", "padded_sources", "sliding_windows", "add_windows", "reverse_spatial",
           "reshaped_view", "COMPACT_SAVING", "CompactReads", "compact_reads", "check_fits_in_memory"]

_NUMPY_PAD_MODE = {
    "zeros": "constant",
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "circular": "wrap",
}


def pad(x: np.ndarray, padding: Sequence[tuple[int, int]], mode: str = "zeros") -> np.ndarray:
    """Pad the trailing ``len(padding)`` axes of ``x``; returns ``x`` itself if nothing to pad.

    ``mode`` is a canonical name (see :data:`convolab.spec.PADDING_MODES`). The
    input is never written to.

    >>> pad(np.array([1, 2, 3, 4]), [(3, 3)], "reflect")
    array([4, 3, 2, 1, 2, 3, 4, 3, 2, 1])
    """
    if not any(low or high for low, high in padding):
        return x
    lead = x.ndim - len(padding)
    if mode == "zeros":
        # np.pad's generality costs ~0.1 ms a call, which dominates small layers in a training loop.
        padded = np.zeros(x.shape[:lead] + tuple(size + low + high for size, (low, high)
                                                  in zip(x.shape[lead:], padding)), dtype=x.dtype)
        padded[(Ellipsis, *(slice(low, low + size) for size, (low, _) in zip(x.shape[lead:], padding)))] = x
        return padded
    widths = [(0, 0)] * lead + [tuple(pair) for pair in padding]
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[mode])


def pad_adjoint(
    grad_padded: np.ndarray, padding: Sequence[tuple[int, int]], mode: str, input_size: Sequence[int]
) -> np.ndarray:
    """The transpose of :func:`pad`: fold a gradient on the padded array back onto the input.

    Padding copies input samples into the border (or writes zeros there); its
    adjoint adds every border cell's gradient to the sample it was copied from
    (and drops the zeros'). Padding is separable, so this is done one axis at a
    time with a 0/1 matrix that says which padded cell came from which sample;
    padding ``np.arange(size)`` with the same mode gives exactly that map.

    >>> pad_adjoint(np.ones(10), [(3, 3)], "reflect", [4])
    array([2., 3., 3., 2.])
    """
    grad = grad_padded
    rank = len(padding)
    if mode == "zeros":
        crop = tuple(slice(low, low + size) for (low, _), size in zip(padding, input_size))
        return np.ascontiguousarray(grad[(Ellipsis, *crop)])
    for axis_offset, ((low, high), size) in enumerate(zip(padding, input_size)):
        if not (low or high):
            continue
        source = np.pad(np.arange(size), (low, high), mode=_NUMPY_PAD_MODE[mode])  # padded cell -> input sample
        scatter = (source[:, np.newaxis] == np.arange(size)).astype(grad.dtype)  # (padded, size)
        axis = grad.ndim - rank + axis_offset
        grad = np.moveaxis(np.tensordot(grad, scatter, axes=([axis], [0])), -1, axis)
    return grad


def padded_sources(size: int, padding: tuple[int, int], mode: str) -> np.ndarray:
    """For each cell of one padded axis, the input position it copies (``-1``: a zero cell).

    The padding applied to the positions themselves, so every user of the map
    pads exactly as :func:`pad` does (circular cells point to the far edge).
    It is ``size + low + high`` long: only for padding no wider than the input
    (every mode but "zeros" is limited to that).

    >>> padded_sources(4, (3, 3), "reflect")
    array([3, 2, 1, 0, 1, 2, 3, 2, 1, 0])
    >>> padded_sources(2, (1, 2), "zeros")
    array([-1,  0,  1, -1, -1])
    """
    return pad(np.arange(1, size + 1), [padding], mode) - 1


def sliding_windows(
    x: np.ndarray,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> np.ndarray:
    """A read-only strided view of every window: shape ``(*lead, *out, *kernel)``.

    ``view[..., o_1, ..., o_d, j_1, ..., j_d]`` is
    ``x[..., o_1*s_1 + j_1*d_1, ..., o_d*s_d + j_d*d_d]``: output position ``o``,
    kernel tap ``j``. No data is copied; nothing can be written through it.

    >>> sliding_windows(np.arange(6), [3], [2], [1])
    array([[0, 1, 2],
           [2, 3, 4]])
    """
    rank = len(kernel_size)
    lead_shape, spatial = x.shape[: x.ndim - rank], x.shape[x.ndim - rank :]
    lead_strides, spatial_strides = x.strides[: x.ndim - rank], x.strides[x.ndim - rank :]
    out = tuple(
        shapes.conv_output_size(size, k, s, (0, 0), d) for size, k, s, d in zip(spatial, kernel_size, stride, dilation)
    )
    # An axis with one window (or one tap) never steps, so its stride (or dilation) is not used: 0 keeps a
    # huge one (stride=10**18) from overflowing the view's byte strides.
    return as_strided(
        x,
        shape=(*lead_shape, *out, *kernel_size),
        strides=(
            *lead_strides,
            *(st * s if o > 1 else 0 for st, s, o in zip(spatial_strides, stride, out)),
            *(st * d if k > 1 else 0 for st, d, k in zip(spatial_strides, dilation, kernel_size)),
        ),
        writeable=False,
    )


def add_windows(
    windows: np.ndarray,
    padded_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The transpose of :func:`sliding_windows`: add every window back where it was read.

    ``windows`` has shape ``(*lead, *out, *kernel)``; the result ``(*lead, *padded_size)``
    holds, at each position, the sum of every window cell that read it (col2im).
    The loop runs over kernel taps only, each a strided slice-add covering all
    output positions at once. With ``out`` (that shape, any contents) the sums
    are written there instead of into a new array.

    >>> add_windows(np.ones((2, 3)), [5], [2], [1])
    array([1., 1., 2., 1., 1.])
    """
    rank = len(padded_size)
    kernel_size = windows.shape[windows.ndim - rank :]
    out_size = windows.shape[windows.ndim - 2 * rank : windows.ndim - rank]
    lead = windows.shape[: windows.ndim - 2 * rank]
    total = np.zeros((*lead, *padded_size), dtype=windows.dtype) if out is None else out
    if out is not None:
        total.fill(0)
    for tap in np.ndindex(*kernel_size):
        target = tuple(  # one window: step 1, whatever the stride (a huge one would not fit a slice)
            slice(j * d, j * d + (o - 1) * s + 1, s if o > 1 else 1)
            for j, d, o, s in zip(tap, dilation, out_size, stride)
        )
        total[(Ellipsis, *target)] += windows[(Ellipsis, *tap)]
    return total


def reverse_spatial(a: np.ndarray, rank: int) -> np.ndarray:
    """``a`` reversed along its last ``rank`` axes (a view): the 180° rotation in 2-d.

    >>> reverse_spatial(np.array([[[1, 2], [3, 4]]]), 2)
    array([[[4, 3],
            [2, 1]]])
    """
    return a[(Ellipsis, *([slice(None, None, -1)] * rank))]


def reshaped_view(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``a`` as ``shape`` without copying it, or None where no view of ``a`` has that shape.

    >>> reshaped_view(np.arange(6).reshape(2, 3), (3, 2)).base is not None
    True
    >>> reshaped_view(np.arange(6).reshape(2, 3).T, (6,)) is None
    True
    """
    try:
        return np.reshape(a, shape, copy=False)
    except ValueError:  # no view has that shape
        return None
    except TypeError:  # NumPy before 2.1 has no ``copy``: a view's shape can be set only where no copy is needed
        view = a.view()
        try:
            view.shape = shape
        except AttributeError:
            return None
        return view


# ---------------------------------------------------------------------------
# The compact form: only the cells the windows read
# ---------------------------------------------------------------------------
#
# Per spatial axis, output o reads the padded cells o*s + j*d. Where the padding
# is far wider than what the windows reach (padding=10**5 with stride=10**5 reads
# 9 of 200005 cells), the padded input is replaced by an equivalent compact one:
# the read cells laid end to end (shapes.compact_axis), gathered through an index
# map from compact cell to input position, -1 for a zero padding cell. The padding
# modes map through the same index map (padded_sources), so the compact input
# holds exactly what the padded one holds where it is read. A convolution, its
# gradients, unfold and fold run on it unpadded, with the compact stride and
# dilation; the input's gradient is the compact one added back through the map's
# transpose (zero cells dropped, a reflected cell's share added to its source).

#: The compact form is used only where the padded input would hold at least this
#: many times the cells of the input and of the compact input (a product over
#: the spatial axes). A normal layer (padding smaller than the kernel, stride at
#: most the dilated kernel) is never near it and keeps the padded path as it is.
COMPACT_SAVING = 16


@dataclass(frozen=True)
class CompactReads:
    """A windowed problem restated on the cells its windows read.

    Attributes
    ----------
    input_size, stride, dilation : tuple of int
        The compact problem's geometry: no padding, the same kernel and output size.
    sources : tuple of numpy.ndarray
        Per spatial axis, for each compact cell, the input position it reads
        (``-1``: a zero padding cell).
    """

    input_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    sources: tuple[np.ndarray, ...]

    def gather(self, x: np.ndarray) -> np.ndarray:
        """The compact input: ``x`` ``(..., *input)`` read through :attr:`sources`, ``(..., *compact)``.

        >>> reads = compact_reads((5,), ((10**5, 10**5),), "zeros", (3,), (10**5,), (1,))
        >>> reads.gather(np.arange(1., 6.))
        array([0., 0., 0., 1., 2., 3., 0., 0., 0.])
        """
        rank = len(self.sources)
        valid = [np.flatnonzero(source >= 0) for source in self.sources]
        compact = np.zeros((*x.shape[: x.ndim - rank], *self.input_size), dtype=x.dtype)
        # Zero cells are left as zeros (never 0 * x: NaN and inf in x must not reach them).
        compact[(Ellipsis, *np.ix_(*valid))] = x[(Ellipsis, *np.ix_(*(s[v] for s, v in zip(self.sources, valid))))]
        return compact

    def scatter(self, grad: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
        """The transpose of :meth:`gather`: each compact cell's gradient added onto the input cell it read.

        >>> reflected = CompactReads((6,), (3,), (1,), (np.array([1, 0, 1, 2, 3, 2]),))  # 4 cells, reflect 1
        >>> reflected.scatter(np.ones(6), (4,))
        array([1., 2., 2., 1.])
        """
        rank = len(self.sources)
        valid = [np.flatnonzero(source >= 0) for source in self.sources]
        grad = grad[(Ellipsis, *np.ix_(*valid))]  # zero padding cells dropped: (..., *read input cells)
        for axis_offset, (source, kept, size) in enumerate(zip(self.sources, valid, input_size)):
            targets = source[kept]
            axis = grad.ndim - rank + axis_offset
            moved = np.moveaxis(grad, axis, 0)  # (kept, ...)
            total = np.zeros((size, *moved.shape[1:]), dtype=grad.dtype)
            if np.unique(targets).size == targets.size:  # each input cell read once along this axis
                total[targets] = moved
            else:  # a padding mode copied some cells: every copy's share adds up
                np.add.at(total, targets, moved)
            grad = np.moveaxis(total, 0, axis)
        return grad


def compact_reads(
    input_size: Sequence[int],
    padding: Sequence[tuple[int, int]],
    mode: str,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    unfold_taps: bool = True,
) -> CompactReads | None:
    """The compact form of a windowed problem, or ``None`` where the padded one is as good.

    ``None`` unless the padding would make the padded input at least
    :data:`COMPACT_SAVING` times the cells of the input and of the compact
    input, and some axis is unlike a normal layer's (a padding at least its
    kernel size, or a stride past the dilated kernel). ``unfold_taps`` as in
    :func:`convolab.shapes.compact_axis`.

    >>> reads = compact_reads((5, 5), ((10**5, 10**5),) * 2, "zeros", (3, 3), (10**5,) * 2, (1, 1))
    >>> reads.input_size, reads.stride, reads.sources[0]
    ((9, 9), (3, 3), array([-1, -1, -1,  0,  1,  2, -1, -1, -1]))
    >>> compact_reads((32, 32), ((1, 1),) * 2, "zeros", (3, 3), (1, 1), (1, 1)) is None
    True
    """
    windows = WindowGeometry(tuple(input_size), tuple(kernel_size), tuple(stride), tuple(dilation), tuple(padding))
    normal = all(max(low, high) < k and s <= extent
                 for (low, high), k, s, extent in zip(padding, kernel_size, stride, windows.extent))
    if normal:
        return None
    outputs = windows.output_size
    compact = [shapes.compact_axis(o, k, s, d, unfold_taps)  # (length, stride, dilation) per axis
               for o, k, s, d in zip(outputs, kernel_size, stride, dilation)]
    lengths = tuple(length for length, _, _ in compact)
    if prod(windows.padded_size) < COMPACT_SAVING * max(prod(input_size), prod(lengths)):
        return None
    sources = tuple(
        _axis_sources(size, pair, mode, o, k, s, d, compact_stride, compact_dilation)
        for size, pair, o, k, s, d, (_, compact_stride, compact_dilation)
        in zip(input_size, padding, outputs, kernel_size, stride, dilation, compact)
    )
    return CompactReads(
        input_size=lengths,
        stride=tuple(compact_stride for _, compact_stride, _ in compact),
        dilation=tuple(compact_dilation for _, _, compact_dilation in compact),
        sources=sources,
    )


def _axis_sources(size: int, padding: tuple[int, int], mode: str, output_size: int, kernel_size: int, stride: int,
                  dilation: int, compact_stride: int, compact_dilation: int) -> np.ndarray:
    """Along one axis, the input position each compact cell reads (``-1``: a zero padding cell).

    Compact cell ``c`` is offset ``e`` in the window of output ``o`` (the last
    output for the span's tail): padded cell ``o*s + e``. Only the outputs whose
    windows reach the input are placed, relative to the first of them, so no
    product here is larger than the input plus a window, however large the
    stride or padding (Python ints hold those).
    """
    low, _ = padding
    extent = shapes.dilated_kernel_size(kernel_size, dilation)
    length = (output_size - 1) * compact_stride + shapes.dilated_kernel_size(kernel_size, compact_dilation)
    cells = np.arange(length)
    window = np.minimum(cells // compact_stride, output_size - 1)  # (length,): the output each cell belongs to
    offset = (cells - window * compact_stride) * (dilation // compact_dilation)  # padded cells past its start
    if mode == "zeros":
        first = max(0, -(-(low - extent + 1) // stride))  # the first window ending at or after the input's start
        last = min(output_size - 1, (low + size - 1) // stride)  # the last one starting before its end
    else:  # every padding cell copies an input cell
        first, last = 0, output_size - 1
    sources = np.full(length, -1, dtype=np.intp)
    if first > last:
        return sources
    placed = (window >= first) & (window <= last)
    position = offset[placed] + (first * stride - low)  # input coordinates (negative: low padding)
    if last > first:  # then the stride is smaller than the input plus a window
        position += (window[placed] - first) * stride
    if mode == "zeros":
        sources[placed] = np.where((position >= 0) & (position < size), position, -1)
    else:
        sources[placed] = padded_sources(size, padding, mode)[position + low]
    return sources


def check_fits_in_memory(op: str, what: str, shape: Sequence[int], dtype: np.dtype, cause: Callable[[], str]) -> None:
    """Refuse, before allocating it, an array larger than this machine's memory.

    ``cause()`` names the parameters that set ``shape`` and their values, so the
    message says which argument to change (NumPy's own error would name none);
    it is called only to write the message. Raises MemoryError, as NumPy does
    for an allocation that fails.

    >>> check_fits_in_memory("conv2d", "output", (1, 3, 2 * 10**9 + 3, 2 * 10**9 + 3), np.float64,
    ...                      lambda: "padding=1000000000, stride=1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    MemoryError: conv2d: padding=1000000000, stride=1 give an output of shape (1, 3, 2000000003, 2000000003), ...
    """
    size = np.dtype(dtype).itemsize * prod(shape)
    limit = _memory_bytes()
    if size > limit:
        fail(MemoryError, op, cause(), f"{_describe_bytes(size)} of {np.dtype(dtype)}",
             f"give {'an' if what[0] in 'aeiou' else 'a'} {what} of shape {tuple(shape)}, more than this "
             f"machine's {_describe_bytes(limit)} of memory")


@lru_cache(maxsize=1)
def _memory_bytes() -> int:
    """Physical memory, or the most NumPy can address where the system does not say."""
    largest = int(np.iinfo(np.intp).max)
    try:
        return min(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), largest)
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return largest


def _describe_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    return f"{size:.3g} {unit}" if unit != "B" else f"{size} B"
