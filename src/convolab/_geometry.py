"""The geometry of sliding windows, shared by convolution, pooling, unfold and chunked ops.

One frozen :class:`WindowGeometry` holds, per spatial axis, the input size,
the kernel size, the stride, the dilation and the padding as ``(low, high)``
pairs. Everything else about where windows sit is derived from it, here and
only here:

- the tap arithmetic: tap ``j`` of output ``o`` reads input cell
  ``o*s + j*d - low`` (negative, or past the input: a padding cell), as a table
  (:meth:`WindowGeometry.tap_positions`), as one slice pair per tap
  (:meth:`WindowGeometry.axis_taps`), as the taps that ever read the input
  (:meth:`WindowGeometry.reaching_taps`) and as the windows that read nothing
  (:meth:`WindowGeometry.windows_reading_nothing`);
- the stride-phase decomposition: with ``j*d - low = q*s + a`` (``0 <= a < s``),
  tap ``j`` of output ``o`` reads element ``o + q`` of *phase* ``a``, the cells
  ``a, a + s, a + 2s, ...``; so on the phases every tap is a constant shift
  (:meth:`WindowGeometry.stride_phases`, :func:`split_phases`);
- the padding strings and pairs resolved to ``(low, high)`` pairs
  (:func:`resolve_padding`), and the one rule "the window must fit the padded
  input" with its one message (:func:`check_window_fits`).

Pure integer code, except the index tables and :func:`split_phases`, which
build small NumPy arrays.

Examples
--------
>>> geometry = WindowGeometry((5,), (3,), (2,), (1,), ((1, 1),))
>>> geometry.output_size, geometry.tap_positions(0).tolist()
((3,), [[-1, 0, 1], [1, 2, 3], [3, 4, 5]])
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Sequence

import numpy as np

from . import shapes
from ._checks import normalize_ints, normalize_padding
from ._errors import fail

__all__ = [
    "WindowGeometry",
    "AxisPhases",
    "window_geometry",
    "resolve_padding",
    "check_window_fits",
    "padding_for_outputs",
    "split_phases",
    "join_phases",
]

Pairs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class AxisPhases:
    """One axis's taps on its stride phases: tap ``j`` of output ``o`` reads element ``o + shift[j]`` of
    phase ``phase[j]`` (the cells ``phase[j] + m*stride``, ``m = 0, 1, ...``).

    Attributes
    ----------
    stride : int
        The number of phases.
    phase, shift : tuple of int
        Per tap ``j``: ``(j*d - origin) mod stride`` and ``(j*d - origin) div stride``.
    """

    stride: int
    phase: tuple[int, ...]
    shift: tuple[int, ...]

    def span(self, output_size: int) -> int:
        """How many elements of a phase the windows reach: ``out + max(shift) - min(shift)``.

        >>> AxisPhases(2, (1, 0, 1), (-1, 0, 0)).span(3)
        4
        """
        return output_size + max(self.shift) - min(self.shift)


@dataclass(frozen=True)
class WindowGeometry:
    """Where the windows of a sliding-window op sit, per spatial axis.

    Attributes
    ----------
    input_size, kernel_size, stride, dilation : tuple of int
        One entry per spatial axis.
    padding : tuple of (int, int)
        ``(low, high)`` per spatial axis: cells before and after the input.

    Examples
    --------
    >>> geometry = WindowGeometry((7, 6), (3, 2), (2, 1), (1, 3), ((1, 1), (0, 0)))
    >>> geometry.rank, geometry.extent, geometry.padded_size, geometry.output_size
    (2, (3, 4), (9, 6), (4, 3))
    """

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pairs

    @property
    def rank(self) -> int:
        """Number of spatial axes."""
        return len(self.input_size)

    @property
    def extent(self) -> tuple[int, ...]:
        """The dilated kernel's extent per axis, ``d*(k - 1) + 1``."""
        return tuple(shapes.dilated_kernel_size(k, d) for k, d in zip(self.kernel_size, self.dilation))

    @property
    def padded_size(self) -> tuple[int, ...]:
        """``low + in + high`` per axis."""
        return tuple(size + low + high for size, (low, high) in zip(self.input_size, self.padding))

    @property
    def low(self) -> tuple[int, ...]:
        """The low padding per axis: where input cell 0 sits in padded coordinates."""
        return tuple(low for low, _ in self.padding)

    @property
    def output_size(self) -> tuple[int, ...]:
        """Windows per axis, ``floor((padded - extent) / stride) + 1`` (the window must fit)."""
        return tuple(shapes.conv_output_size(size, k, s, pair, d) for size, k, s, pair, d
                     in zip(self.input_size, self.kernel_size, self.stride, self.padding, self.dilation))

    def _axis(self, dim: int) -> tuple[int, int, int, int, int, int]:
        """``(size, kernel, stride, dilation, low, out)`` of axis ``dim``: the arguments of the cached tables."""
        return (self.input_size[dim], self.kernel_size[dim], self.stride[dim], self.dilation[dim],
                self.padding[dim][0], self.output_size[dim])

    def check_fits(self, op: str, name: str = "kernel_size", *, ceil_mode: bool | None = None) -> None:
        """:func:`check_window_fits` on this geometry."""
        check_window_fits(op, name, self.input_size, self.kernel_size, self.dilation, self.padding, self.stride,
                          ceil_mode=ceil_mode)

    # -- the tap arithmetic: tap j of output o reads input cell o*s + j*d - low ------------------------

    def tap_positions(self, dim: int) -> np.ndarray:
        """The input cell each tap of each window reads along ``dim``: ``(out, k)`` int64, ``o*s + j*d - low``.

        Negative, or at least the input size, where the tap reads padding.
        (``(out, k)`` cells: for a huge kernel use :meth:`reaching_taps`.)

        >>> WindowGeometry((4,), (2,), (3,), (2,), ((1, 1),)).tap_positions(0)
        array([[-1,  1],
               [ 2,  4]])
        """
        size, kernel, stride, dilation, low, out = self._axis(dim)
        return (np.arange(out, dtype=np.int64)[:, np.newaxis] * stride
                + np.arange(kernel, dtype=np.int64)[np.newaxis, :] * dilation - low)

    def reads_input(self, dim: int) -> np.ndarray:
        """``(out, k)`` bool: whether each tap of each window reads an input cell (not padding) along ``dim``.

        >>> WindowGeometry((4,), (2,), (3,), (2,), ((1, 1),)).reads_input(0)
        array([[False,  True],
               [ True, False]])
        """
        position = self.tap_positions(dim)
        return (position >= 0) & (position < self.input_size[dim])

    def axis_taps(self, dim: int, *, whole_first: bool = False) -> tuple[tuple[slice, slice], ...]:
        """Per tap along ``dim``: ``(the outputs it reaches inside the input, the input cells they read)``.

        Taps that read only padding are left out. In window order (tap ``j``
        ascending), or with ``whole_first`` the taps that reach every output
        first (a reduction can start from two of them without an identity).

        In 5, kernel 3, stride 2, padding 1: tap 1 reaches all three outputs,
        tap 0 misses output 0 (it would read -1), tap 2 misses output 2 (it would read 5):

        >>> geometry = WindowGeometry((5,), (3,), (2,), (1,), ((1, 1),))
        >>> geometry.axis_taps(0, whole_first=True)
        ((slice(0, 3, None), slice(0, 5, 2)), (slice(1, 3, None), slice(1, 4, 2)), (slice(0, 2, None), slice(1, 4, 2)))
        """
        taps = _axis_taps(*self._axis(dim))
        if not whole_first:
            return taps
        out = self.output_size[dim]
        return tuple(sorted(taps, key=lambda tap: tap[0] != slice(0, out)))

    def reaching_taps(self, dim: int) -> tuple[range, ...]:
        """The taps along ``dim`` with which some window reads an input cell, as ascending runs.

        Window ``o`` reads the input with the taps ``j`` from ``ceil((low - o*s) / d)``
        to ``floor((low - o*s + size - 1) / d)`` (within the kernel); the other
        taps read padding in every window. A huge kernel (a huge padding on
        both sides) has few such taps: one run where the windows' runs overlap,
        more where a huge stride sets them apart. Never builds an ``(out, k)`` table.

        >>> WindowGeometry((5,), (2 * 10**8,), (1,), (1,), ((10**8, 10**8),)).reaching_taps(0)
        (range(99999995, 100000005),)
        >>> WindowGeometry((5,), (2 * 10**5,), (10**5,), (1,), ((10**5, 2 * 10**5),)).reaching_taps(0)
        (range(0, 5), range(100000, 100005))
        """
        return _reaching_taps(*self._axis(dim))

    def windows_reading_nothing(self, dim: int) -> np.ndarray:
        """The outputs along ``dim`` whose window reads only padding (int64, ascending).

        Window ``o``'s first tap at or past the input's start is
        ``j0 = max(0, ceil((low - o*s) / d))``; it reads nothing iff ``j0`` is past
        the kernel or its cell ``o*s + j0*d - low`` past the input. (No table of
        every tap: that would be ``(out, k)``, 8 GiB for ``k = 2*10**8``.)

        >>> WindowGeometry((2,), (2,), (1,), (5,), ((6, 6),)).windows_reading_nothing(0)
        array([0, 3, 4, 5, 8])
        """
        size, kernel, stride, dilation, low, out = self._axis(dim)
        start = np.arange(out, dtype=np.int64) * stride - low  # (out,): tap 0's cell
        first = np.maximum(0, -(start // dilation))  # (out,): the first tap with a cell >= 0
        return np.flatnonzero((first >= kernel) | (start + first * dilation >= size))

    # -- the stride-phase decomposition --------------------------------------------------------------

    def stride_phases(self, dim: int, *, padded: bool = False) -> AxisPhases:
        """Along ``dim``, the phase each tap reads and its shift there (see :class:`AxisPhases`).

        In input coordinates (``j*d - low = shift*s + phase``), or with ``padded``
        in those of the padded input (``j*d = shift*s + phase``: shifts from 0).

        >>> WindowGeometry((5,), (3,), (2,), (1,), ((1, 1),)).stride_phases(0)
        AxisPhases(stride=2, phase=(1, 0, 1), shift=(-1, 0, 0))
        >>> WindowGeometry((5,), (3,), (2,), (1,), ((1, 1),)).stride_phases(0, padded=True)
        AxisPhases(stride=2, phase=(0, 1, 0), shift=(0, 0, 1))
        """
        origin = 0 if padded else self.padding[dim][0]
        return _axis_phases(self.kernel_size[dim], self.stride[dim], self.dilation[dim], origin)

    def phase_taps(self, *, padded: bool = False) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """Per kernel tap in row-major window order: ``(its phase, its shift)``, one entry per axis each.

        >>> WindowGeometry((4, 4), (2, 1), (2, 2), (1, 1), ((0, 0),) * 2).phase_taps(padded=True)
        (((0, 0), (0, 0)), ((1, 0), (0, 0)))
        """
        axes = [self.stride_phases(dim, padded=padded) for dim in range(self.rank)]
        return tuple((tuple(axis.phase[j] for axis, j in zip(axes, tap)), tuple(axis.shift[j] for axis, j in zip(axes, tap)))
                     for tap in np.ndindex(*self.kernel_size))


def window_geometry(
    op: str,
    input_size: Sequence[int],
    kernel_size: object,
    *,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    name: str = "kernel_size",
    strings: bool = True,
) -> WindowGeometry:
    """Check a sliding window's arguments against the input's spatial size and freeze them.

    ``stride``, ``dilation`` and ``kernel_size``: an int or one per axis, ``>= 1``;
    ``padding`` as :func:`resolve_padding` takes it. The window must fit the
    padded input (:func:`check_window_fits`; ``name`` is the parameter blamed).

    >>> window_geometry("unfold", (4, 4), 3, padding="same").padding
    ((1, 1), (1, 1))
    >>> window_geometry("unfold", (2,), 3)
    Traceback (most recent call last):
    ...
    ValueError: unfold: kernel_size must fit inside the padded input, got dilated extent 3 (kernel 3, dilation 1) in spatial dimension 0, larger than the padded input by 1: the padded input is 2 (size 2 + padding 0 + 0)
    """
    input_size = tuple(int(n) for n in input_size)
    rank = len(input_size)
    kernel = normalize_ints(kernel_size, rank, "kernel_size", op)
    strides = normalize_ints(stride, rank, "stride", op)
    dilations = normalize_ints(dilation, rank, "dilation", op)
    pads = resolve_padding(padding, input_size, kernel, strides, dilations, op, strings=strings)
    check_window_fits(op, name, input_size, kernel, dilations, pads)
    return WindowGeometry(input_size, kernel, strides, dilations, pads)


def resolve_padding(
    padding: object,
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    op: str,
    *,
    strings: bool = True,
) -> Pairs:
    """A padding argument as ``(low, high)`` pairs, one per spatial axis.

    Accepted: an int; one int per axis; one ``(low, high)`` pair per axis;
    and, unless ``strings`` is False (ops whose padding is not a convolution's:
    a transposed convolution, unfold), ``"valid"`` (none), ``"same"`` (output
    size ``ceil(in / stride)``, :func:`convolab.shapes.same_padding`) or
    ``"full"`` (every partial overlap, :func:`convolab.shapes.full_padding`).

    >>> resolve_padding("same", (7, 6), (3, 4), (2, 1), (1, 1), "conv2d")
    ((1, 1), (1, 2))
    >>> resolve_padding((1, (0, 2)), (7, 6), (3, 4), (2, 1), (1, 1), "conv2d")
    ((1, 1), (0, 2))
    >>> resolve_padding("full", (5,), (3,), (1,), (1,), "conv_transpose1d", strings=False)
    Traceback (most recent call last):
    ...
    ValueError: conv_transpose1d: padding must be ints or (low, high) pairs (padding strings are for convolutions), got 'full'
    """
    rank = len(kernel_size)
    if isinstance(padding, str) and not strings:
        fail(ValueError, op, "padding", repr(padding),
             "must be ints or (low, high) pairs (padding strings are for convolutions)")
    resolved = normalize_padding(padding, rank, op)
    if resolved == "valid":
        return ((0, 0),) * rank
    if resolved == "same":
        return tuple(shapes.same_padding(i, k, s, d) for i, k, s, d in zip(input_size, kernel_size, stride, dilation))
    if resolved == "full":
        return tuple(shapes.full_padding(k, d) for k, d in zip(kernel_size, dilation))
    return resolved


def check_window_fits(
    op: str,
    name: str,
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
    stride: Sequence[int] | None = None,
    *,
    ceil_mode: bool | None = None,
) -> None:
    """The one rule "the (dilated) window must fit inside the padded input", with its one message.

    ``ceil_mode`` is pooling's: None for a convolution (the window must fit);
    False or True for a pool, whose message then names the stride; with True
    the window may overhang the padded input by less than the stride (PyTorch
    keeps that one window). ``name`` is the parameter blamed (``"weight"`` for
    a convolution, whose kernel size is the weight's shape).

    >>> check_window_fits("conv2d", "weight", (3, 3), (4, 4), (1, 1), ((0, 0), (0, 0)))
    Traceback (most recent call last):
    ...
    ValueError: conv2d: weight must fit inside the padded input, got dilated extent 4 (kernel 4, dilation 1) in spatial dimension 0, larger than the padded input by 1: the padded input is 3 (size 3 + padding 0 + 0)
    >>> check_window_fits("max_pool1d", "kernel_size", (4,), (5,), (1,), ((0, 0),), (5,), ceil_mode=True)
    >>> check_window_fits("max_pool1d", "kernel_size", (4,), (5,), (1,), ((0, 0),), (1,), ceil_mode=True)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: max_pool1d: kernel_size must overhang the padded input by less than the stride with ceil_mode=True, \
to leave one window, got window extent 5 ... at stride 1
    """
    for dim, (size, k, d, (low, high)) in enumerate(zip(input_size, kernel_size, dilation, padding)):
        extent = shapes.dilated_kernel_size(k, d)
        overhang = extent - (size + low + high)
        if overhang <= 0 or (ceil_mode and overhang < stride[dim]):
            continue
        refuse_window(op, name, dim, size, k, d, (low, high), None if stride is None else stride[dim], ceil_mode)


def refuse_window(op: str, name: str, dim: int, size: int, kernel: int, dilation: int, padding: tuple[int, int],
                  stride: int | None, ceil_mode: bool | None) -> None:
    """Raise :func:`check_window_fits`'s ValueError for axis ``dim`` (for callers that found the overhang)."""
    low, high = padding
    extent = shapes.dilated_kernel_size(kernel, dilation)
    padded = size + low + high
    if ceil_mode is None:
        noun, rule, at_stride = "dilated", "must fit inside the padded input", ""
    else:
        noun, at_stride = "window", f" at stride {stride}"
        rule = ("must overhang the padded input by less than the stride with ceil_mode=True, to leave one window"
                if ceil_mode else
                "must fit inside the padded input (ceil_mode=True also keeps one window that overhangs it by "
                "less than the stride)")
    fail(ValueError, op, name,
         f"{noun} extent {extent} (kernel {kernel}, dilation {dilation}) in spatial dimension {dim}, larger than "
         f"the padded input by {extent - padded}: the padded input is {padded} (size {size} + padding {low} + "
         f"{high}){at_stride}", rule)


def padding_for_outputs(geometry: WindowGeometry, output_size: Sequence[int]) -> Pairs:
    """``geometry``'s padding with the high side widened to what ``output_size`` windows need.

    PyTorch's ``ceil_mode`` keeps a last window that hangs past the high
    padding; with the padding this returns, ``output_size`` windows fit exactly
    and :attr:`WindowGeometry.output_size` is ``output_size`` (the widened cells
    are padding: the tap arithmetic treats them as such).

    >>> padding_for_outputs(WindowGeometry((5,), (2,), (2,), (1,), ((0, 0),)), (3,))
    ((0, 1),)
    """
    return tuple(
        (low, max(high, (out - 1) * s + extent - size - low))
        for size, s, extent, (low, high), out
        in zip(geometry.input_size, geometry.stride, geometry.extent, geometry.padding, output_size)
    )


# ---------------------------------------------------------------------------
# Cached per-axis tables (pure functions of six ints, asked again every call of an op)
# ---------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _axis_taps(size: int, kernel: int, stride: int, dilation: int, low: int,
               out: int) -> tuple[tuple[slice, slice], ...]:
    """:meth:`WindowGeometry.axis_taps` in window order: only the taps that reach the input are visited."""
    taps = []
    for run in _reaching_taps(size, kernel, stride, dilation, low, out):
        for j in run:
            offset = j * dilation - low  # tap j of output o reads o * stride + offset
            first = max(0, -(offset // stride))  # first o with o * stride + offset >= 0
            stop = min(out, (size - 1 - offset) // stride + 1)  # past the last o with o * stride + offset < size
            if stop > first:
                start = first * stride + offset
                taps.append((slice(first, stop), slice(start, start + (stop - first - 1) * stride + 1, stride)))
    return tuple(taps)


@lru_cache(maxsize=1024)
def _reaching_taps(size: int, kernel: int, stride: int, dilation: int, low: int, out: int) -> tuple[range, ...]:
    """:meth:`WindowGeometry.reaching_taps` of one axis, cached."""
    # Windows last to first: their runs ascend. Python ints where a product could pass int64.
    dtype = np.int64 if (out - 1) * stride + low + size < 2**62 else object
    start = np.arange(out - 1, -1, -1).astype(dtype) * stride - low  # (out,): tap 0's cell, last window first
    first = np.maximum(-(start // dilation), 0)
    last = np.minimum((size - 1 - start) // dilation, kernel - 1)
    reads = first <= last
    first, last = first[reads], last[reads]
    if not first.size:
        return ()
    # A new run starts where a window's first tap is past every earlier window's last tap plus one.
    reach = np.maximum.accumulate(last)
    breaks = np.flatnonzero(first[1:] > reach[:-1] + 1) + 1
    starts, stops = np.split(first, breaks), np.split(reach, breaks)
    return tuple(range(int(a[0]), int(b[-1]) + 1) for a, b in zip(starts, stops))


@lru_cache(maxsize=1024)
def _axis_phases(kernel: int, stride: int, dilation: int, origin: int) -> AxisPhases:
    """:meth:`WindowGeometry.stride_phases` of one axis, cached."""
    reads = [j * dilation - origin for j in range(kernel)]
    return AxisPhases(stride, tuple(r % stride for r in reads), tuple(r // stride for r in reads))


# ---------------------------------------------------------------------------
# Arrays split into their stride phases, and back
# ---------------------------------------------------------------------------


def split_phases(x: np.ndarray, stride: Sequence[int]) -> np.ndarray:
    """``x`` ``(..., *size)`` as its stride phases ``(..., prod(stride), *ceil(size / stride))``.

    Phase ``a`` (row-major over the per-axis residues) holds the cells
    ``a + m*stride``; the phases past an axis's end (where the stride does not
    divide the size) are zero-filled. Stride 1 everywhere: a view, no copy.

    >>> split_phases(np.arange(5), (2,))
    array([[0, 2, 4],
           [1, 3, 0]])
    """
    rank = len(stride)
    lead, size = x.shape[: x.ndim - rank], x.shape[x.ndim - rank:]
    if all(s == 1 for s in stride):
        return x.reshape(*lead, 1, *size)
    phase_size = tuple(-(-n // s) for n, s in zip(size, stride))
    phases = np.zeros((*lead, *stride, *phase_size), dtype=x.dtype)  # (..., *residue, *phase cells)
    for residue in np.ndindex(*stride):
        part = x[(Ellipsis, *(slice(r, None, s) for r, s in zip(residue, stride)))]
        phases[(Ellipsis, *residue, *(slice(0, n) for n in part.shape[len(lead):]))] = part
    return phases.reshape(*lead, prod(stride), *phase_size)


def join_phases(phases: np.ndarray, stride: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`split_phases`: ``(..., prod(stride), *phase size)`` back to ``(..., *size)``.

    >>> join_phases(split_phases(np.arange(5), (2,)), (2,), (5,))
    array([0, 1, 2, 3, 4])
    """
    rank = len(stride)
    lead = phases.shape[: phases.ndim - rank - 1]
    by_residue = phases.reshape(*lead, *stride, *phases.shape[phases.ndim - rank:])
    x = np.empty((*lead, *size), dtype=phases.dtype)
    for residue in np.ndindex(*stride):
        target = (Ellipsis, *(slice(r, None, s) for r, s in zip(residue, stride)))
        cells = x[target].shape[len(lead):]
        x[target] = by_residue[(Ellipsis, *residue, *(slice(0, n) for n in cells))]
    return x
