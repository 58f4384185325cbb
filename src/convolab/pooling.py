"""Pooling on NumPy arrays with PyTorch's semantics: max, average, adaptive, max-unpooling.

Every op is N-d first (the rank read from a tuple ``kernel_size`` or
``output_size``); ``max_pool1d/2d/3d`` and friends are the same op with the rank
fixed. Inputs are ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``; channels
never mix. Each op's vector-Jacobian product is registered beside it with
:func:`convolab._vjp.defines_vjp`, and the input gradients of max and average
pooling are public (``max_pool_input``, ``avg_pool_input``) for ``convolab.grad``.

Fixed windows (max and average pooling) are defined by the one window
primitive: the input is padded (:func:`convolab._window.pad`) and
:func:`convolab._window.sliding_windows` views every window as
``(N, C, *out, *kernel)`` without copying. The references
(:func:`_max_pool_reference`, :func:`_avg_pool_reference` and its transpose)
compute exactly that, tap by tap. The ops run faster paths with the same
results, because NumPy walks a strided tap view one short row at a time:

- a box's maximum and sum are separable, so values alone and average pooling
  reduce one spatial axis at a time with ``k`` slices along it, each slice
  touching only the outputs whose tap is inside the input (no padding is
  built); the average's gradient is the transpose, axis by axis;
- max pooling with indices gathers every window at once for small problems
  (where per-call cost dominates), and otherwise rearranges the input into a
  *phase grid* on which each tap is one contiguous slice.

Adaptive windows are not equally spaced, so no single strided view describes
them; they are reduced one spatial axis at a time: as an average pooling where
the windows tile the axis, else by a 0/1 window matrix (average) or from a table
of window positions (maximum; a box's row-major-first argmax is separable too).

Axis legend used in comments: ``N`` batch, ``C`` channels, ``*in`` input
positions, ``*out`` output positions, ``*k`` kernel taps.

The max-pooling tie rule, PyTorch's: the window is read tap by tap in row-major
order over the kernel (padding taps skipped), the first tap is taken, and a later
tap replaces it only if strictly greater, or NaN. So among equal maxima the
*first* in window order wins, and gets the whole gradient; a window holding NaN
gives NaN with the index of its *last* NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache, reduce
from math import prod
from typing import Any, Callable, Sequence

import numpy as np

from . import shapes
from ._errors import fail
from ._vjp import defines_vjp
from ._window import add_windows, pad, pad_adjoint, sliding_windows
from .functional import as_array, check_array
from .spec import check_flag, normalize_ints

__all__ = [
    # forward ops (the convolab namespace)
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "max_unpool",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "PoolSpec",
    "pool_spec",
    # input gradients (convolab.grad)
    "max_pool_input",
    "max_pool1d_input",
    "max_pool2d_input",
    "max_pool3d_input",
    "avg_pool_input",
    "avg_pool1d_input",
    "avg_pool2d_input",
    "avg_pool3d_input",
]

_SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}

#: ``np.add.at`` got its fast path for a 1-d index in NumPy 1.25; older versions scatter with bincount.
_FAST_UFUNC_AT = np.lib.NumpyVersion(np.__version__) >= "1.25.0"


def _spatial_names(rank: int) -> str:
    return ", ".join(_SPATIAL_NAMES.get(rank, tuple(f"S{i}" for i in range(rank))))


# ---------------------------------------------------------------------------
# Argument checks shared by every op
# ---------------------------------------------------------------------------


def _rank_from_tuple(op: str, name: str, value: Any, fixed_rank: int | None) -> int:
    """The number of spatial dimensions: fixed by a wrapper, or the length of a tuple ``value``."""
    if fixed_rank is not None:
        return fixed_rank
    if isinstance(value, (tuple, list)) and len(value) >= 1:
        return len(value)
    family, suffix = (op[: -len("_input")], "_input") if op.endswith("_input") else (op, "")
    fixed = ", ".join(f"{family}{r}d{suffix}" for r in (1, 2, 3))
    fail(TypeError, op, name, repr(value),
         f"must be a non-empty tuple with one entry per spatial dimension ({op} reads the rank from it; "
         f"for a fixed rank use {fixed})")


def _check_real_array(op: str, name: str, value: Any) -> np.ndarray:
    value = check_array(op, name, value)
    if value.dtype.kind == "c":
        fail(TypeError, op, name, f"dtype {value.dtype}", "must be real (pooling compares or averages real values)")
    return value


def _batch_input(op: str, input: Any, rank: int) -> tuple[np.ndarray, bool]:
    """``input`` as ``(N, C, *in)`` (in native byte order: ufuncs take none in the ``dtype=`` the fast paths
    pass) and whether the caller gave a batch axis."""
    input = _check_real_array(op, "input", input)
    if input.ndim == rank + 2:
        return input, True
    if input.ndim == rank + 1:
        return input[np.newaxis], False
    axes = _spatial_names(rank)
    fail(ValueError, op, "input", f"shape {input.shape} ({input.ndim} dimensions)",
         f"must have {rank + 2} dimensions (N, C, {axes}) or {rank + 1} unbatched (C, {axes})")


def _normalize_stride(op: str, stride: Any, kernel_size: tuple[int, ...]) -> tuple[int, ...]:
    """``None`` (or an empty tuple, as PyTorch allows) means the kernel size."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel_size
    return normalize_ints(stride, len(kernel_size), "stride", op)


def _check_grad_output(op: str, grad_output: Any, expected_shape: tuple[int, ...]) -> np.ndarray:
    """``grad_output`` as computed with (:func:`convolab.functional.as_array`), if float and of the output's shape."""
    grad_output = check_array(op, "grad_output", grad_output)
    if grad_output.dtype.kind != "f":
        fail(TypeError, op, "grad_output", f"dtype {grad_output.dtype}", "must be a floating-point array")
    if grad_output.shape != tuple(expected_shape):
        fail(ValueError, op, "grad_output", f"shape {grad_output.shape}",
             f"must have the shape of the op's output {tuple(expected_shape)}")
    return grad_output


def _split_values_cotangent(op: str, cotangent: Any) -> Any:
    """The values' cotangent from a pullback called on a ``(values, indices)`` output."""
    if isinstance(cotangent, tuple):
        if len(cotangent) != 2 or cotangent[1] is not None:
            fail(ValueError, op, "grad_output", f"a tuple of {len(cotangent)} items",
                 "must be the values' cotangent, or a pair (grad_values, None): indices are not differentiable")
        return cotangent[0]
    return cotangent


# ---------------------------------------------------------------------------
# The frozen spec of a fixed-window pooling problem
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    """A fixed-window pooling problem with every argument canonicalized.

    Shapes are batched; ``batched`` records whether the caller's input had a
    batch axis. ``padding`` is PyTorch's symmetric padding as ``(low, high)``
    pairs; :attr:`window_padding` adds what ``ceil_mode``'s last window needs.
    """

    op: str
    batched: bool
    batch: int
    channels: int
    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False

    @property
    def rank(self) -> int:
        """Number of spatial dimensions."""
        return len(self.input_size)

    @cached_property
    def output_size(self) -> tuple[int, ...]:
        return tuple(
            shapes.pool_output_size(size, k, s, low, d, self.ceil_mode)
            for size, k, s, (low, _), d in zip(
                self.input_size, self.kernel_size, self.stride, self.padding, self.dilation
            )
        )

    @cached_property
    def window_padding(self) -> tuple[tuple[int, int], ...]:
        """``(low, high)`` padding under which the windows are exactly :attr:`output_size`.

        The high side is the nominal padding, or more where ``ceil_mode`` adds a
        window that hangs past it: ``(out - 1) * stride + k_eff - in - low``.
        """
        pairs = []
        for size, k, s, (low, high), d, out in zip(
            self.input_size, self.kernel_size, self.stride, self.padding, self.dilation, self.output_size
        ):
            needed = (out - 1) * s + shapes.dilated_kernel_size(k, d) - size - low
            pairs.append((low, max(high, needed)))
        return tuple(pairs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Batched input shape ``(N, C, *input_size)``."""
        return (self.batch, self.channels, *self.input_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Batched output shape ``(N, C, *output_size)``."""
        return (self.batch, self.channels, *self.output_size)

    @property
    def caller_output_shape(self) -> tuple[int, ...]:
        """Output shape as the caller sees it (no batch axis if the input had none)."""
        return self.output_shape if self.batched else self.output_shape[1:]


def _plain_key(arguments: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``arguments`` as a hashable cache key if each is an exact int, bool, str, None or tuple/list of ints; else None.

    Exact types only: ``2.0 == 2`` and ``True == 1`` hash alike, but must be rejected
    (or echoed in a message) as given, so anything else is not cached.
    """
    key = []
    for value in arguments:
        kind = type(value)
        if kind in (int, bool, str) or value is None:
            key.append((kind, value))
        elif kind in (tuple, list) and all(type(item) is int for item in value):
            key.append((kind, tuple(value)))
        else:
            return None
    return tuple(key)


_SPEC_CACHE: dict[Any, PoolSpec] = {}
_SPEC_CACHE_SIZE = 512


def _cached_pool_spec(input_shape: tuple[int, ...], kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                      ceil_mode: Any, op: str, rank: int | None) -> PoolSpec:
    """:func:`pool_spec`, remembered for plain arguments: a training loop asks the same question every step."""
    key = _plain_key((tuple(input_shape), kernel_size, stride, padding, dilation, ceil_mode, op, rank))
    spec = _SPEC_CACHE.get(key) if key is not None else None
    if spec is None:
        spec = pool_spec(input_shape, kernel_size, stride, padding, dilation, ceil_mode, op=op, rank=rank)
        if key is not None:
            if len(_SPEC_CACHE) >= _SPEC_CACHE_SIZE:
                _SPEC_CACHE.clear()
            _SPEC_CACHE[key] = spec
    return spec


def _tap_table(spec: PoolSpec, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each tap of each window lands along ``dim``: input positions ``(out, k)`` and validity.

    ``position[o, j] = o * stride + j * dilation - low``, in unpadded input
    coordinates; ``valid`` is False where that is padding.
    """
    (low, _), size = spec.padding[dim], spec.input_size[dim]
    position = (np.arange(spec.output_size[dim])[:, None] * spec.stride[dim]
                + np.arange(spec.kernel_size[dim])[None, :] * spec.dilation[dim] - low)  # (out, k)
    return position, (position >= 0) & (position < size)


def _windows_reading_nothing(spec: PoolSpec, dim: int) -> np.ndarray:
    """The outputs along ``dim`` whose window reads only padding, without a table of every tap.

    Window ``o``'s first tap at or past the input's start is
    ``j0 = max(0, ceil((low - o*s) / d))``; it reads nothing iff ``j0`` is past
    the kernel or its cell ``o*s + j0*d - low`` past the input. (A table of every
    tap, as :func:`_tap_table`, would be ``(out, k)``: 8 GiB for ``k=2*10**8``.)
    """
    (low, _), size = spec.padding[dim], spec.input_size[dim]
    stride, dilation, kernel = spec.stride[dim], spec.dilation[dim], spec.kernel_size[dim]
    start = np.arange(spec.output_size[dim]) * stride - low  # (out,): tap 0's cell
    first = np.maximum(0, -(start // dilation))  # (out,): the first tap with a cell >= 0
    return np.flatnonzero((first >= kernel) | (start + first * dilation >= size))


def pool_spec(
    input_shape: Sequence[int],
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    *,
    op: str = "max_pool",
    rank: int | None = None,
) -> PoolSpec:
    """Check a pooling problem's arguments against the input shape and freeze them.

    ``rank`` fixes the number of spatial dimensions (``max_pool2d`` passes 2);
    ``None`` reads it from a tuple ``kernel_size``. The rules are PyTorch's:
    kernel size, stride and dilation at least 1; non-empty spatial dimensions;
    padding at least 0 and at most half the kernel size (``padding <= kernel_size // 2``,
    not dilated); and an output of at least one window per dimension
    (:func:`convolab.shapes.pool_output_size`): without ``ceil_mode`` the
    dilated window must fit the padded input, with it the one window may
    overhang the padded input by less than a stride (so a kernel larger than
    the input is fine: ``max_pool1d`` of 4 samples with ``kernel_size=5,
    ceil_mode=True`` is their maximum). One rule is added that PyTorch does not
    check (it returns ``-inf`` and an index outside the input): every window
    must cover at least one input sample. One PyTorch check is not copied:
    its ``avg_pool3d`` alone refuses an unpadded input smaller than the
    kernel, which its ``avg_pool1d``/``avg_pool2d`` accept; here every rank
    follows the rules above.

    Examples
    --------
    >>> spec = pool_spec((8, 3, 7, 7), (3, 3), stride=2, padding=1, ceil_mode=True)
    >>> spec.output_size, spec.window_padding
    ((4, 4), ((1, 1), (1, 1)))
    >>> pool_spec((3, 5), (2,), ceil_mode=True).caller_output_shape
    (3, 3)
    >>> pool_spec((1, 1, 4), (5,), ceil_mode=True).output_size
    (1,)
    """
    rank = _rank_from_tuple(op, "kernel_size", kernel_size, rank)
    if not isinstance(input_shape, (tuple, list)) or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and n >= 0 for n in input_shape
    ):
        fail(TypeError, op, "input_shape", repr(input_shape), "must be a sequence of non-negative ints")
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) == rank + 2:
        batched = True
    elif len(input_shape) == rank + 1:
        batched, input_shape = False, (1, *input_shape)
    else:
        axes = _spatial_names(rank)
        fail(ValueError, op, "input", f"shape {input_shape} ({len(input_shape)} dimensions)",
             f"must have {rank + 2} dimensions (N, C, {axes}) or {rank + 1} unbatched (C, {axes})")
    kernel = normalize_ints(kernel_size, rank, "kernel_size", op)
    strides = _normalize_stride(op, stride, kernel)
    pads = normalize_ints(padding, rank, "padding", op, minimum=0)
    dilations = normalize_ints(dilation, rank, "dilation", op)
    ceil_mode = check_flag(ceil_mode, "ceil_mode", op)
    batch, channels, *input_size = input_shape
    for dim, size in enumerate(input_size):
        if size == 0:
            fail(ValueError, op, "input", f"shape {input_shape if batched else input_shape[1:]} "
                 f"(spatial dimension {dim} is empty)", "must have non-empty spatial dimensions (as in PyTorch)")
    for dim, (size, k, s, p, d) in enumerate(zip(input_size, kernel, strides, pads, dilations)):
        if p > k // 2:
            fail(ValueError, op, "padding", f"{p} with kernel_size {k} in spatial dimension {dim}",
                 "must be at most half the kernel size (padding <= kernel_size // 2)")
        # PyTorch's "output size is too small": floor((padded - extent) / stride) + 1 < 1, or with
        # ceil_mode ceil(...) + 1 < 1, which is an overhang past the padded input of a stride or more.
        extent = shapes.dilated_kernel_size(k, d)
        overhang = extent - (size + 2 * p)
        if overhang > 0 and not (ceil_mode and overhang < s):
            rule = ("must overhang the padded input by less than the stride with ceil_mode=True, to leave one window"
                    if ceil_mode else
                    "must fit inside the padded input (ceil_mode=True also keeps one window that overhangs it by "
                    "less than the stride)")
            fail(ValueError, op, "kernel_size",
                 f"window extent {extent} (kernel {k}, dilation {d}) in spatial dimension {dim}, "
                 f"where the padded input is {size + 2 * p} (size {size} + padding {p} + {p}) and the stride {s}",
                 rule)
    spec = PoolSpec(
        op=op, batched=batched, batch=batch, channels=channels, input_size=tuple(input_size),
        kernel_size=kernel, stride=strides, padding=tuple((p, p) for p in pads), dilation=dilations,
        ceil_mode=ceil_mode,
    )
    for dim in range(rank):
        empty = _windows_reading_nothing(spec, dim)
        if empty.size:
            fail(ValueError, op, "dilation",
                 f"{dilations[dim]} in spatial dimension {dim}, where the window at output position "
                 f"{int(empty[0])} reads only padding (input size {input_size[dim]}, kernel {kernel[dim]}, "
                 f"padding {pads[dim]})",
                 "must leave every window at least one input sample")
    return spec


# ---------------------------------------------------------------------------
# Separable window reductions: a window's maximum or sum, one axis at a time
# ---------------------------------------------------------------------------
#
# A box's maximum (and sum) is the maximum over one axis of the maxima over the
# others, so each spatial axis is reduced in turn with k strided slices along it.
# A tap j reads o * s + j * d - L; it is in the input for the outputs o in one
# interval [lo, hi), so padding is never materialized: each tap updates only its
# interval. This makes k passes per axis over arrays that shrink axis by axis
# (the k^d taps of the window view would be k^d passes over the output, each a
# strided view that NumPy walks one short row at a time).


@lru_cache(maxsize=1024)
def _axis_taps(size: int, kernel: int, stride: int, dilation: int, low: int,
               out: int) -> tuple[tuple[slice, slice], ...]:
    """Per tap along one axis: (the outputs it reaches, the inputs it reads), taps reaching every output first.

    In 5, kernel 3, stride 2, padding 1: tap 1 reaches all three outputs, tap 0
    misses output 0 (it would read -1), tap 2 misses output 2 (it would read 5):

    >>> _axis_taps(5, 3, 2, 1, 1, 3)
    ((slice(0, 3, None), slice(0, 5, 2)), (slice(1, 3, None), slice(1, 4, 2)), (slice(0, 2, None), slice(1, 4, 2)))
    """
    taps = _axis_taps_in_order(size, kernel, stride, dilation, low, out)
    return tuple(sorted(taps, key=lambda tap: tap[0] != slice(0, out)))


@lru_cache(maxsize=1024)
def _axis_taps_in_order(size: int, kernel: int, stride: int, dilation: int, low: int,
                        out: int) -> tuple[tuple[slice, slice], ...]:
    """:func:`_axis_taps` in window order (tap ``j`` ascending), the taps that read only padding left out."""
    taps = []
    for run in _reaching_taps(size, kernel, stride, dilation, low, out):
        for j in run:
            offset = j * dilation - low  # tap j of output o reads o * stride + offset
            lo = max(0, -(offset // stride))  # first o with o * stride + offset >= 0
            hi = min(out, (size - 1 - offset) // stride + 1)  # past the last o with o * stride + offset < size
            if hi > lo:
                start = lo * stride + offset
                taps.append((slice(lo, hi), slice(start, start + (hi - lo - 1) * stride + 1, stride)))
    return tuple(taps)


@lru_cache(maxsize=1024)
def _reaching_taps(size: int, kernel: int, stride: int, dilation: int, low: int, out: int) -> tuple[range, ...]:
    """The taps along one axis with which some window reads an input cell, as ascending runs.

    Window ``o`` reads the input with the taps ``j`` from ``ceil((low - o*s) / d)``
    to ``floor((low - o*s + size - 1) / d)`` (within the kernel); the other taps
    read padding in every window. A huge kernel (``padding`` up to half of it)
    has few such taps: one run where the windows' runs overlap, more where a
    huge stride (``ceil_mode``'s last window) sets them apart.

    >>> _reaching_taps(5, 2 * 10**8, 1, 1, 10**8, 6)
    (range(99999995, 100000005),)
    >>> _reaching_taps(5, 2 * 10**5, 10**5, 1, 10**5, 2)
    (range(0, 5), range(100000, 100005))
    """
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


def _trim_kernel(spec: PoolSpec) -> PoolSpec:
    """``spec`` with each axis's kernel cut to its reaching taps (:func:`_reaching_taps`), or ``spec`` itself.

    The cut taps read padding in every window, which max pooling skips, so the
    windows' values and indices are the same; every per-tap loop then runs over
    the taps that matter (a kernel of ``2*10**5`` per axis has ``k^2 = 4*10**10``).
    The kernel keeps the taps from the first run's start to the last run's end.
    The low padding shrinks by the taps cut before the first kept one (never
    below zero: a tap that starts inside the input is kept), the output size is
    the original's, and the high side is whatever the kept windows need.
    """
    cut = _cut_kernel(spec.input_size, spec.kernel_size, spec.stride, spec.dilation, spec.padding, spec.output_size)
    if cut is None:
        return spec
    kernel, padding = cut
    trimmed = replace(spec, kernel_size=kernel, padding=padding, ceil_mode=False)
    trimmed.__dict__["output_size"] = spec.output_size  # the same windows: pinned, not recomputed from the cut kernel
    return trimmed


@lru_cache(maxsize=256)
def _cut_kernel(input_size: tuple[int, ...], kernel_size: tuple[int, ...], stride: tuple[int, ...],
                dilation: tuple[int, ...], padding: tuple[tuple[int, int], ...],
                output_size: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]] | None:
    """:func:`_trim_kernel`'s kernel and padding for one geometry (None: nothing to cut), cached."""
    runs = [_reaching_taps(size, k, s, d, low, out) or (range(0, k),) for size, k, s, d, (low, _), out
            in zip(input_size, kernel_size, stride, dilation, padding, output_size)]
    firsts = [min(taps[0].start, low // d) for taps, (low, _), d in zip(runs, padding, dilation)]
    kernel = tuple(taps[-1].stop - first for taps, first in zip(runs, firsts))
    if kernel == kernel_size:
        return None
    return kernel, tuple((low - first * d, 0) for (low, _), first, d in zip(padding, firsts, dilation))


def _reduce_axis(y: np.ndarray, axis: int, taps: tuple[tuple[slice, slice], ...], out: int, ufunc: np.ufunc,
                 identity: Any, dtype: np.dtype) -> np.ndarray:
    """``ufunc`` over the ``taps`` (from :func:`_axis_taps`) along ``axis``, which becomes ``out`` long."""
    lead = (slice(None),) * axis
    reduced = np.empty(y.shape[:axis] + (out,) + y.shape[axis + 1:], dtype=dtype)
    full = [lead + (read,) for reached, read in taps if reached == slice(0, out)]
    if len(full) >= 2:
        ufunc(y[full[0]], y[full[1]], out=reduced, dtype=dtype)
    elif full:
        reduced[...] = y[full[0]]
    else:
        reduced.fill(identity)
    for reached, read in taps[min(len(full), 2):]:
        target = reduced[lead + (reached,)]
        ufunc(target, y[lead + (read,)], out=target, dtype=dtype)
    return reduced


def _reduce_windows(x: np.ndarray, spec: PoolSpec, ufunc: np.ufunc, identity: Any, dtype: np.dtype) -> np.ndarray:
    """``ufunc`` (``np.maximum`` or ``np.add``) over every window's input taps, ``(N, C, *out)`` of ``dtype``.

    ``identity`` starts an output no single tap reaches along some axis (rare:
    padding on both sides of a short input). ``dtype`` is also the ufunc's loop
    type, so integers are summed as float64, never in their own (overflowing) type.
    """
    y = x
    for axis, (size, k, s, d, (low, _), out) in enumerate(
            zip(spec.input_size, spec.kernel_size, spec.stride, spec.dilation, spec.padding, spec.output_size),
            start=2):
        y = _reduce_axis(y, axis, _axis_taps(size, k, s, d, low, out), out, ufunc, identity, dtype)
    return y


def _spread_windows(grad: np.ndarray, spec: PoolSpec, dtype: np.dtype) -> np.ndarray:
    """The transpose of ``_reduce_windows(..., np.add, ...)``: add each window's value to every tap it read.

    Axis by axis; along one axis, tap j adds ``grad[lo:hi]`` to the inputs it
    read. Where the windows tile the axis (stride = kernel, no dilation or
    padding, nothing left over) each input is in exactly one window: a repeat.
    Returns ``(N, C, *in)`` of ``dtype``.
    """
    z = grad.astype(dtype, copy=False)
    geometry = zip(spec.input_size, spec.kernel_size, spec.stride, spec.dilation, spec.padding, spec.output_size)
    for axis, (size, k, s, d, (low, _), out) in reversed(list(enumerate(geometry, start=2))):
        if s == k and (d == 1 or k == 1) and low == 0 and out * k == size:
            z = np.repeat(z, k, axis=axis)
            continue
        lead = (slice(None),) * axis
        spread = np.zeros(z.shape[:axis] + (size,) + z.shape[axis + 1:], dtype=dtype)
        # Taps reading one phase (the inputs i with the same i % stride) may overlap, so they add;
        # the first tap of a phase lands on zeros only, so it copies (a write instead of a read and a write).
        phases_written = set()
        for reached, read in _axis_taps(size, k, s, d, low, out):
            target = spread[lead + (read,)]
            if read.start % s in phases_written:
                np.add(target, z[lead + (reached,)], out=target)
            else:
                target[...] = z[lead + (reached,)]
                phases_written.add(read.start % s)
        z = spread
    return z


@lru_cache(maxsize=256)
def _index_tables(input_size: tuple[int, ...], kernel_size: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...], low: tuple[int, ...],
                  output_size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """How a window's chosen tap becomes its flat plane index: ``origin[o] + offset_by_code[code]``.

    ``code`` is ``k^d - tap`` (tap in row-major window order; code 0 is never
    chosen). Returns read-only ``offset_by_code`` ``(k^d + 1,)`` and
    ``window_origins`` ``(*out)``, the plane index of ``o * stride - padding``, both int64.
    """
    plane_strides = _plane_strides(input_size)
    offsets = [sum(j * d * st for j, d, st in zip(tap, dilation, plane_strides)) for tap in np.ndindex(*kernel_size)]
    offset_by_code = np.array([0, *reversed(offsets)], dtype=np.int64)
    window_origins = reduce(np.add.outer, [(np.arange(out, dtype=np.int64) * s - pad) * st
                                           for out, s, pad, st in zip(output_size, stride, low, plane_strides)])
    offset_by_code.setflags(write=False)
    window_origins.setflags(write=False)
    return offset_by_code, window_origins


# ---------------------------------------------------------------------------
# The phase grid: every kernel tap as one contiguous slice
# ---------------------------------------------------------------------------
#
# Why: a tap of sliding_windows is a strided (N, C, *out) view, and NumPy runs a
# ufunc over such a view one W_out-long row at a time, with no SIMD for a
# stride-2 row: about 5x slower per pass than one long contiguous loop, and the
# pools make k^d passes. So the input is rearranged once into a grid on which
# every tap is a flat shift of a contiguous array.
#
# Along one dimension (stride s, dilation d, low padding L), tap j of window o reads
#     o * s + j * d - L = (o + q_j) * s + a_j,  a_j = (j*d - L) mod s,  q_j = floor((j*d - L) / s),
# the element at index o + q_j of the input's phase a_j (positions a_j, a_j + s, ...).
# Phase a's grid holds its indices m = g + min(q) for g in [0, M), M = out + max(q) - min(q);
# cells outside the input hold a fill (-inf, or the integer minimum). Flatten a phase's
# (N, C, *M) grid: tap j over every window at once is the slice starting at
#     shift_j = sum_dim (q_j - min q) * (grid stride of dim),
# and window o's result lands at the flat position of grid cell g = o. Cells with
# some g_dim >= out_dim are junk (they read into the next row or plane) and are
# cropped away; the last `reach` = max shift cells are never computed.


@dataclass(frozen=True, eq=False)
class _PhaseGrid:
    """The phase-grid layout of one pooling geometry (see the comment above)."""

    output_size: tuple[int, ...]
    grid_size: tuple[int, ...]  # M per spatial dimension
    phases: tuple[tuple[int, ...], ...]  # the phases some tap reads, one a_j per dimension
    copies: tuple[tuple[tuple[slice, ...], tuple[slice, ...]], ...]  # per phase: input slices -> grid slices
    borders: tuple[tuple[tuple[slice, ...], ...], ...]  # per phase: grid regions that hold the fill
    taps: tuple[tuple[int, int], ...]  # per tap in row-major window order: (phase number, flat shift)
    reach: int  # the largest shift
    reads_fill: bool  # whether some window reads a fill cell (padding, or ceil_mode's overhang)
    offset_by_code: np.ndarray  # from _index_tables
    window_origins: np.ndarray  # from _index_tables, (*out)

    @property
    def crop(self) -> tuple[slice, ...]:
        """The grid cells that are windows: ``g < out`` in every dimension."""
        return tuple(slice(0, out) for out in self.output_size)


@lru_cache(maxsize=256)
def _phase_grid(input_size: tuple[int, ...], kernel_size: tuple[int, ...], stride: tuple[int, ...],
                dilation: tuple[int, ...], low: tuple[int, ...], output_size: tuple[int, ...]) -> _PhaseGrid:
    """The phase grid of a pooling geometry; pure integer bookkeeping, cached."""
    rank = len(input_size)
    # per dimension and tap: phase a_j and grid index shift q_j
    phase_of = [[(j * d - pad) % s for j in range(k)] for k, s, d, pad in zip(kernel_size, stride, dilation, low)]
    shift_of = [[(j * d - pad) // s for j in range(k)] for k, s, d, pad in zip(kernel_size, stride, dilation, low)]
    q_min = [min(q) for q in shift_of]
    grid_size = tuple(out + max(q) - lo for out, q, lo in zip(output_size, shift_of, q_min))
    grid_strides = _plane_strides(grid_size)
    tap_phases, shifts = [], []
    for tap in np.ndindex(*kernel_size):
        tap_phases.append(tuple(phase_of[dim][j] for dim, j in enumerate(tap)))
        shifts.append(sum((shift_of[dim][j] - q_min[dim]) * grid_strides[dim] for dim, j in enumerate(tap)))
    phases = tuple(sorted(set(tap_phases)))
    copies, borders = [], []
    for phase in phases:
        source, target, fill = [], [], []
        for dim, (a, s, size, lo, cells) in enumerate(zip(phase, stride, input_size, q_min, grid_size)):
            inside = -(-(size - a) // s) if a < size else 0  # phase length: positions a, a + s, ... < size
            first, stop = -lo, max(-lo, min(cells, inside - lo))  # grid cells g holding m = g + lo in [0, inside)
            count = stop - first
            source.append(slice(a, a + count * s, s))
            target.append(slice(first, stop))
            whole = [slice(None)] * rank
            fill += [tuple(whole[:dim] + [edge] + whole[dim + 1:])
                     for edge, empty in ((slice(0, first), first == 0), (slice(stop, cells), stop == cells))
                     if not empty]
        copies.append((tuple(source), tuple(target)))
        borders.append(tuple(fill))
    offset_by_code, window_origins = _index_tables(input_size, kernel_size, stride, dilation, low, output_size)
    reads_fill = any(pad > 0 or (out - 1) * s + (k - 1) * d - pad >= size
                     for size, k, s, d, pad, out in zip(input_size, kernel_size, stride, dilation, low, output_size))
    return _PhaseGrid(
        output_size=output_size, grid_size=grid_size, phases=phases, copies=tuple(copies), borders=tuple(borders),
        taps=tuple((phases.index(a), shift) for a, shift in zip(tap_phases, shifts)), reach=max(shifts),
        reads_fill=reads_fill, offset_by_code=offset_by_code, window_origins=window_origins,
    )


def _grid_of(spec: PoolSpec) -> _PhaseGrid:
    return _phase_grid(spec.input_size, spec.kernel_size, spec.stride, spec.dilation,
                       tuple(low for low, _ in spec.padding), spec.output_size)


def _fill_grid(x: np.ndarray, grid: _PhaseGrid, fill: Any) -> np.ndarray:
    """``x`` ``(N, C, *in)`` rearranged into its phase grids, ``(phases, N * C * prod(M))``."""
    cells = np.empty((len(grid.phases), *x.shape[:2], *grid.grid_size), dtype=x.dtype)  # (P, N, C, *M)
    for phase, (source, target), borders in zip(cells, grid.copies, grid.borders):
        phase[(..., *target)] = x[(..., *source)]
        for region in borders:
            phase[(..., *region)] = fill
    return cells.reshape(len(grid.phases), -1)


def _tap_slices(cells: np.ndarray, grid: _PhaseGrid) -> list[np.ndarray]:
    """Each tap of every window, in row-major window order: contiguous 1-d slices of ``cells``."""
    span = cells.shape[1] - grid.reach
    return [cells[phase, shift:shift + span] for phase, shift in grid.taps]


def _crop(flat: np.ndarray, grid: _PhaseGrid, lead: tuple[int, ...]) -> np.ndarray:
    """The window cells of a flat ``(N * C * prod(M),)`` grid array, as an ``(N, C, *out)`` view."""
    return flat.reshape(*lead, *grid.grid_size)[(..., *grid.crop)]


# ---------------------------------------------------------------------------
# Running maximum and scatter: shared by fixed and adaptive max pooling
# ---------------------------------------------------------------------------


def _keep_max(best: np.ndarray, best_index: np.ndarray, candidate: np.ndarray,
              candidate_index: np.ndarray, valid: np.ndarray | bool) -> None:
    """One step of PyTorch's running maximum, updating ``best``/``best_index`` in place.

    A window's first valid tap is taken (``best_index < 0`` until then); a later
    tap replaces it only if strictly greater or NaN (``x != x`` only for NaN;
    never for integers). So ties go to the first tap and NaN wins, the last NaN.
    """
    take = valid & ((best_index < 0) | (candidate > best) | (candidate != candidate))
    np.copyto(best, candidate, where=take)
    np.copyto(best_index, candidate_index, where=take)


def _plane_strides(size: Sequence[int]) -> tuple[int, ...]:
    """Row-major element strides of a ``size`` plane: flat index = sum(position * stride)."""
    return tuple(prod(size[dim + 1:]) for dim in range(len(size)))


def _scatter_to_planes(grad_output: np.ndarray, indices: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Add each ``grad_output`` element at its flat ``indices`` position of its (n, c) plane.

    ``grad_output`` and ``indices`` are ``(N, C, *out)``; the result is
    ``(N, C, *input_size)`` in ``grad_output``'s dtype.
    """
    batch, channels = indices.shape[:2]
    plane = prod(input_size)
    plane_start = (np.arange(batch * channels) * plane).reshape(batch, channels, *[1] * (indices.ndim - 2))
    flat = (plane_start + indices).ravel()  # index into (N * C * plane,)
    if _FAST_UFUNC_AT:
        # ufunc.at has a fast path for a 1-d index since NumPy 1.25 (faster than bincount);
        # an element picked by several windows sums their gradients in grad_output's dtype.
        summed = np.zeros(batch * channels * plane, dtype=grad_output.dtype)
        np.add.at(summed, flat, grad_output.ravel())
        return summed.reshape(batch, channels, *input_size)
    summed = np.bincount(flat, weights=grad_output.astype(np.float64, copy=False).ravel(),
                         minlength=batch * channels * plane)
    return summed.reshape(batch, channels, *input_size).astype(grad_output.dtype, copy=False)


# ---------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------


#: Up to this many gathered window taps (N * C * out * k^d), max pooling gathers every window at once:
#: on small inputs NumPy's per-call cost dominates, and a gather and four whole-array
#: reductions beat the 3 * k^d passes of the phase grid.
_GATHER_LIMIT = 1 << 17


def _max_pool_forward(x: np.ndarray, spec: PoolSpec,
                      with_indices: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Values and flat plane indices ``(N, C, *out)`` of the windows' maxima (tie rule: module docs).

    Small problems gather every window (:func:`_max_pool_gathered`); larger ones
    take the separable running maximum for values alone, and the phase grid
    (:func:`_max_pool_grid`) when indices are wanted. Padding holds ``-inf`` (the
    integer dtype's minimum), which never beats a real sample, and every window
    has one.
    """
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    spec = _trim_kernel(spec)  # a huge kernel's taps that read only padding are never looped over
    taps = prod(spec.kernel_size)
    if taps <= _SEPARABLE_TAPS and prod(spec.output_shape) * taps <= _GATHER_LIMIT:
        return _max_pool_gathered(x, spec, fill, with_indices)
    if not with_indices:
        return _reduce_windows(x, spec, np.maximum, fill, x.dtype), None
    if taps > _SEPARABLE_TAPS:
        return _max_pool_separable(x, spec)
    return _max_pool_grid(x, spec, fill)


#: Beyond this many taps per window, max pooling with indices goes axis by axis (a few passes per
#: axis) instead of k^d passes on the phase grid: a huge kernel whose reaching taps are far apart
#: (``ceil_mode``'s last window under a huge stride) keeps ``10**10`` taps after trimming.
_SEPARABLE_TAPS = 1 << 12


def _max_pool_separable(x: np.ndarray, spec: PoolSpec) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_max_pool_forward` with indices, one spatial axis at a time (the last first).

    A box's row-major-first maximum is separable (as :func:`_adaptive_max_forward`):
    along an axis each tap, in window order, offers the cells it reads to the
    outputs it reaches (:func:`_axis_taps_in_order`, padding never offered), kept
    by :func:`_keep_max` with the flat index of the chosen cell carried along.
    """
    plane_strides = _plane_strides(spec.input_size)
    values, carried = x, None  # carried: flat-index contribution of the axes already reduced
    for axis in reversed(range(2, x.ndim)):
        dim = axis - 2
        out = spec.output_size[dim]
        taps = _axis_taps_in_order(spec.input_size[dim], spec.kernel_size[dim], spec.stride[dim], spec.dilation[dim],
                                   spec.padding[dim][0], out)
        lead, trailing = (slice(None),) * axis, values.ndim - axis - 1
        reduced_shape = values.shape[:axis] + (out,) + values.shape[axis + 1:]
        best = np.zeros(reduced_shape, dtype=x.dtype)
        best_index = np.full(reduced_shape, -1, dtype=np.int64)
        for reached, read in taps:
            positions = np.arange(read.start, read.stop, read.step).reshape((-1,) + (1,) * trailing)
            index = positions * plane_strides[dim]  # broadcasts like the candidate
            if carried is not None:
                index = index + carried[lead + (read,)]
            _keep_max(best[lead + (reached,)], best_index[lead + (reached,)], values[lead + (read,)], index, True)
        values, carried = best, best_index
    return values, carried


@dataclass(frozen=True, eq=False)
class _WindowTable:
    """Every window's taps as plane indices, for one pooling geometry."""

    gather: np.ndarray  # (k^d, out) intp: the plane index tap t of window o reads; prod(in) for padding
    code: np.ndarray  # (k^d, out): k^d - t where tap t is an input sample, 0 for padding (never chosen)
    offset_by_code: np.ndarray  # from _index_tables
    window_origins: np.ndarray  # from _index_tables, flattened to (out,)


@lru_cache(maxsize=256)
def _window_table(input_size: tuple[int, ...], kernel_size: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...], low: tuple[int, ...], output_size: tuple[int, ...]) -> _WindowTable:
    """The window table of a pooling geometry; integer bookkeeping, cached."""
    count = prod(kernel_size)
    plane_strides = _plane_strides(input_size)
    gather = np.empty((count, prod(output_size)), dtype=np.intp)
    code = np.zeros(gather.shape, dtype=np.min_scalar_type(count))
    for number, tap in enumerate(np.ndindex(*kernel_size)):
        # per dimension: the position this tap reads in each window, (out_d,)
        positions = [np.arange(out) * s + j * d - pad
                     for out, s, j, d, pad in zip(output_size, stride, tap, dilation, low)]
        inside = reduce(np.logical_and.outer, [(p >= 0) & (p < size) for p, size in zip(positions, input_size)])
        flat = reduce(np.add.outer, [p * st for p, st in zip(positions, plane_strides)])  # (*out)
        gather[number] = np.where(inside, flat, prod(input_size)).ravel()
        code[number] = np.where(inside, count - number, 0).ravel()
    gather.setflags(write=False)
    code.setflags(write=False)
    offset_by_code, window_origins = _index_tables(input_size, kernel_size, stride, dilation, low, output_size)
    return _WindowTable(gather=gather, code=code, offset_by_code=offset_by_code, window_origins=window_origins.ravel())


def _max_pool_gathered(x: np.ndarray, spec: PoolSpec, fill: Any,
                       with_indices: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`_max_pool_forward` by gathering every window: ``(N * C, k^d, out)``, then reducing the taps.

    The index is the first tap, in window order, equal to the maximum: the
    largest ``code`` (``k^d - tap``, 0 for padding) among the equal taps, so a
    padding cell never wins even where the maximum is ``-inf``. Windows whose
    maximum is NaN take their last NaN tap instead.
    """
    table = _window_table(spec.input_size, spec.kernel_size, spec.stride, spec.dilation,
                          tuple(low for low, _ in spec.padding), spec.output_size)
    planes = x.reshape(prod(x.shape[:2]), prod(spec.input_size))  # (N * C, plane)
    padded = np.concatenate((planes, np.full((planes.shape[0], 1), fill, dtype=x.dtype)), axis=1)  # fill last
    windows = padded[:, table.gather]  # (N * C, k^d, out)
    values = np.maximum.reduce(windows, axis=1)  # (N * C, out); NaN propagates
    if not with_indices:
        return values.reshape(spec.output_shape), None
    equal = windows == values[:, np.newaxis]
    as_code = equal.view(np.uint8) if table.code.dtype == np.uint8 else equal
    code = np.maximum.reduce(as_code * table.code, axis=1)  # (N * C, out)
    if x.dtype.kind == "f" and values.size and np.isnan(values.max()):
        count = table.code.shape[0]
        after_last_nan = np.arange(1, count + 1, dtype=table.code.dtype)[:, np.newaxis]  # tap + 1
        last_nan = np.maximum.reduce(np.isnan(windows) * after_last_nan, axis=1)  # 0 where no NaN
        code = np.where(last_nan > 0, count + 1 - last_nan.astype(np.int64), code)
    indices = np.take(table.offset_by_code, code)  # (N * C, out)
    np.add(indices, table.window_origins, out=indices)
    return values.reshape(spec.output_shape), indices.reshape(spec.output_shape)


def _max_pool_grid(x: np.ndarray, spec: PoolSpec, fill: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_max_pool_forward` with indices on the phase grid.

    The values are a running ``np.maximum`` over the grid's taps. The index is
    then the first tap, in window order, equal to the maximum: the largest of
    ``equal * (k^d - tap)`` over the taps, all branch-free passes (masked
    assignment is ~15x slower). Windows whose maximum is NaN take their last NaN
    tap instead. If some window's maximum equals the fill, a padding cell could
    tie with it, so that rare case goes to :func:`_max_pool_reference`.
    """
    grid = _grid_of(spec)
    if x.size == 0:
        return np.zeros(spec.output_shape, dtype=x.dtype), np.zeros(spec.output_shape, dtype=np.int64)
    lead = x.shape[:2]
    cells = _fill_grid(x, grid, fill)  # (P, N * C * prod(M))
    taps = _tap_slices(cells, grid)
    best = np.empty(cells.shape[1], dtype=x.dtype)  # the grid's window cells; the tail past `span` unused
    running = best[:taps[0].size]
    np.copyto(running, taps[0])
    for tap in taps[1:]:
        np.maximum(tap, running, out=running)
    values = np.ascontiguousarray(_crop(best, grid, lead))  # (N, C, *out)
    if grid.reads_fill and np.fmin.reduce(values, axis=None) == fill:
        return _max_pool_reference(x, spec)

    count = len(taps)
    code_type = np.min_scalar_type(count)
    window_code = np.empty(best.size, dtype=code_type)  # grid layout, as `best`
    code = window_code[:running.size]  # count - (first tap equal to the maximum)
    equal, term = np.empty(running.size, dtype=bool), np.empty(running.size, dtype=code_type)
    as_code = equal.view(np.uint8) if code_type == np.uint8 else equal  # 0/1 without a cast
    for number, tap in enumerate(taps):
        np.equal(tap, running, out=equal)
        np.multiply(as_code, code_type.type(count - number), out=term if number else code)
        if number:
            np.maximum(code, term, out=code)
    if x.dtype.kind == "f" and np.isnan(np.max(values)):
        last_nan = np.zeros(running.size, dtype=code_type)  # 1 + (last NaN tap), 0 where none
        for number, tap in enumerate(taps):
            np.isnan(tap, out=equal)
            np.multiply(as_code, code_type.type(number + 1), out=term)
            np.maximum(last_nan, term, out=last_nan)
        code[...] = np.where(last_nan > 0, count + 1 - last_nan.astype(np.int64), code)
    indices = np.take(grid.offset_by_code, _crop(window_code, grid, lead))  # (N, C, *out)
    np.add(indices, grid.window_origins, out=indices)
    return values, indices


def _max_pool_reference(x: np.ndarray, spec: PoolSpec) -> tuple[np.ndarray, np.ndarray]:
    """The same as :func:`_max_pool_forward`, tap by tap with :func:`_keep_max`: slow, obviously right.

    Loops over the kernel taps only: each tap is one strided slice
    ``(N, C, *out)`` of the window view, compared against the running maximum.
    Padding taps are masked out rather than filled, so an input holding ``-inf``
    (or an integer dtype's minimum) still gets a real index, as in PyTorch.
    """
    padded = pad(x, spec.window_padding)  # (N, C, *in + padding); zeros, never read: masked below
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C, *out, *k)
    tables = [_tap_table(spec, dim) for dim in range(spec.rank)]  # per dim: (out_d, k_d) positions, validity
    strides = _plane_strides(spec.input_size)
    best = np.zeros(spec.output_shape, dtype=x.dtype)
    best_index = np.full(spec.output_shape, -1, dtype=np.int64)
    for tap in np.ndindex(*spec.kernel_size):
        candidate = windows[(..., *tap)]  # (N, C, *out)
        valid = reduce(np.logical_and.outer, [table[1][:, j] for table, j in zip(tables, tap)])  # (*out)
        flat = reduce(np.add.outer, [table[0][:, j] * st for table, j, st in zip(tables, tap, strides)])  # (*out)
        _keep_max(best, best_index, candidate, flat, valid)
    return best, best_index


def _max_pool(op: str, rank: int | None, input: Any, kernel_size: Any, stride: Any, padding: Any,
              dilation: Any, ceil_mode: Any,
              with_indices: bool = True) -> tuple[np.ndarray, np.ndarray | None, PoolSpec]:
    """Batched values and indices (``None`` unless ``with_indices``), and the spec, of a max pooling."""
    rank = _rank_from_tuple(op, "kernel_size", kernel_size, rank)
    x, _ = _batch_input(op, input, rank)
    spec = _cached_pool_spec(input.shape, kernel_size, stride, padding, dilation, ceil_mode, op, rank)
    values, indices = _max_pool_forward(x, spec, with_indices)
    return values, indices, spec


def _unbatch(spec_batched: bool, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return arrays if spec_batched else tuple(a[0] for a in arrays)


_MAX_POOL_DOC = """{summary}

    Output element ``o`` of each channel is the maximum of the window
    ``x[o * stride + j * dilation - padding]`` over kernel taps ``j``; padding is
    implicit ``-inf`` (it is never selected).

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``; floating or integer.
    kernel_size : {kernel_type}
        Window size per spatial dimension, ``>= 1``.{kernel_note}
    stride : int or tuple of int, optional
        Step between windows, ``>= 1``; ``None`` (default) means ``kernel_size``.
    padding : int or tuple of int
        Implicit ``-inf`` on both sides, ``0 <= padding <= kernel_size // 2``.
    dilation : int or tuple of int
        Spacing between window taps, ``>= 1``.
    ceil_mode : bool
        Round the output size up, adding a last window that may hang past the
        padded input, if it starts inside the input or the left padding.
    return_indices : bool
        Also return, for each output, the flat index of the chosen element in
        its ``(n, c)`` plane of the unpadded input (what :func:`{unpool}` takes).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, numpy.ndarray)
        ``(N, C, {out})`` (no batch axis for unbatched input) in the input's
        dtype (integers stay integers); with ``return_indices``, also int64
        indices of the same shape.

    Raises
    ------
    TypeError
        A non-array, masked-array or complex input; non-integer sizes; non-bool flags.
    ValueError
        A wrong input rank or an empty spatial dimension; kernel_size, stride
        or dilation below 1 or of the wrong count; padding negative or above
        ``kernel_size // 2``; a window larger than the padded input (with
        ``ceil_mode``: by a stride or more, which leaves no output), or one that
        reads only padding.

    Notes
    -----
    Ties follow PyTorch: the window is read in row-major order over the kernel
    taps and the *first* maximum wins; the gradient (see the vjp and
    :func:`{grad}`) goes entirely to that one element. NaN propagates, with
    the index of the window's last NaN.

    Under :func:`convolab.vjp` with ``return_indices=True`` the output is the
    pair ``(values, indices)``; the pullback takes the values' cotangent (or
    ``(grad_values, None)``), since indices have no gradient.

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``
    (``ceil`` instead of ``floor`` with ``ceil_mode``, dropping a last window
    that would start in the right padding; see :func:`convolab.shapes.pool_output_size`).

    Examples
    --------
{examples}
"""

_MAX_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[[[1., 5., 2., 0.], [3., 4., 9., 8.], [7., 6., 1., 2.]]]])
    >>> P.max_pool(x, (2, 2))
    array([[[[5., 9.]]]])
    >>> P.max_pool(x, (2, 2), ceil_mode=True, return_indices=True)
    (array([[[[5., 9.],
             [7., 2.]]]]), array([[[[ 1,  6],
             [ 8, 11]]]]))""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_pool1d(np.array([[3, 1, 4, 1, 5, 9, 2]]), 3, stride=2)
    array([[4, 5, 9]])
    >>> P.max_pool1d(np.array([[2., 2., 1.]]), 2, stride=1, return_indices=True)[1]
    array([[0, 1]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.arange(16.).reshape(1, 4, 4)
    >>> P.max_pool2d(x, 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
    >>> P.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)[1]
    array([[[ 5,  7],
            [13, 15]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_pool3d(np.arange(64.).reshape(1, 1, 4, 4, 4), 2, stride=2).ravel()
    array([21., 23., 29., 31., 53., 55., 61., 63.])""",
}

_MAX_POOL_INPUT_DOC = """{summary}

    The gradient of ``{forward}(input, ...)`` with respect to ``input``, given the
    gradient ``grad_output`` of its output: each output's gradient is added to the
    one input element its window selected (the first maximum in row-major window
    order, as PyTorch); overlapping windows that select the same element add up.

    Parameters
    ----------
    grad_output : numpy.ndarray
        Floating point, of the forward output's shape ``(N, C, {out})`` or
        unbatched ``(C, {out})``.
    input : numpy.ndarray
        The forward input ``(N, C, {spatial})`` or ``(C, {spatial})``.
    kernel_size, stride, padding, dilation, ceil_mode
        As in :func:`{forward}`.

    Returns
    -------
    numpy.ndarray
        ``grad_input`` of ``input``'s shape, in ``grad_output``'s dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`{forward}`; also a non-floating ``grad_output`` or one not
        shaped like the output.

    Shape
    -----
    ``grad_input`` has ``input``'s shape; ``grad_output`` has the output's,
    ``out = floor((in + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``
    (``ceil`` with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np, convolab.pooling as P
{examples}
"""

_MAX_POOL_INPUT_EXAMPLES = {
    None: """    >>> P.max_pool_input(np.ones((1, 1, 1, 2)), np.array([[[[1., 3., 2., 2.]]]]), (1, 2))
    array([[[[0., 1., 1., 0.]]]])""",
    1: """    >>> P.max_pool1d_input(np.ones((1, 3)), np.array([[1., 3., 3., 2.]]), 2, stride=1)
    array([[0., 2., 1., 0.]])""",
    2: """    >>> P.max_pool2d_input(np.ones((1, 1, 1)), np.array([[[1., 4.], [4., 0.]]]), 2)
    array([[[0., 1.],
            [0., 0.]]])""",
    3: """    >>> P.max_pool3d_input(np.ones((1, 1, 1, 1)), np.arange(8.).reshape(1, 2, 2, 2), 2)[0, 1]
    array([[0., 0.],
           [0., 1.]])""",
}


def _fixed_rank_max_pool(op: str, rank: int | None, summary: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Make the max pooling op ``op`` for ``rank`` spatial dimensions (``None``: any) and its vjp."""

    def max_pool_op(
        input: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
        return_indices: bool = False,
    ) -> Any:
        return_indices = check_flag(return_indices, "return_indices", op)
        values, indices, spec = _max_pool(op, rank, input, kernel_size, stride, padding, dilation, ceil_mode,
                                          with_indices=return_indices)
        if not return_indices:
            return _unbatch(spec.batched, values)[0]
        return _unbatch(spec.batched, values, indices)

    @defines_vjp(max_pool_op)
    def _max_pool_vjp(
        input: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
        return_indices: bool = False,
    ) -> tuple[Any, Any]:
        # d out[o] / d x[i] = 1 where i is window o's selected element, else 0; so the
        # pullback adds grad_output[o] at index[o]: a scatter-add, the transpose of a gather.
        # With return_indices the output is (values, indices); only the values pull back.
        return_indices = check_flag(return_indices, "return_indices", op)
        values, indices, spec = _max_pool(op, rank, input, kernel_size, stride, padding, dilation, ceil_mode)

        def pullback(grad_output: Any) -> tuple[np.ndarray]:
            if return_indices:
                grad_output = _split_values_cotangent(op, grad_output)
            grad_output = _check_grad_output(op, grad_output, spec.caller_output_shape)
            batched_grad = grad_output if spec.batched else grad_output[np.newaxis]
            grad_input = _scatter_to_planes(batched_grad, indices, spec.input_size)
            return _unbatch(spec.batched, grad_input)

        caller_values, caller_indices = _unbatch(spec.batched, values, indices)
        return ((caller_values, caller_indices) if return_indices else caller_values), pullback

    spatial = "*spatial" if rank is None else _spatial_names(rank)
    out = "*out" if rank is None else ", ".join(f"{n}_out" for n in spatial.split(", "))
    max_pool_op.__name__ = max_pool_op.__qualname__ = op
    max_pool_op.__doc__ = _MAX_POOL_DOC.format(
        summary=summary, spatial=spatial, out=out,
        kernel_type="tuple of int" if rank is None else "int or tuple of int",
        kernel_note=" Its length is the number of spatial dimensions." if rank is None else "",
        unpool="max_unpool" if rank is None else f"max_unpool{rank}d",
        grad="max_pool_input" if rank is None else f"max_pool{rank}d_input",
        examples=_MAX_POOL_EXAMPLES[rank],
    )

    def max_pool_input_op(
        grad_output: np.ndarray,
        input: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
    ) -> np.ndarray:
        grad_op = f"{op}_input"
        _, indices, spec = _max_pool(grad_op, rank, input, kernel_size, stride, padding, dilation, ceil_mode)
        grad_output = _check_grad_output(grad_op, grad_output, spec.caller_output_shape)
        batched_grad = grad_output if spec.batched else grad_output[np.newaxis]
        return _unbatch(spec.batched, _scatter_to_planes(batched_grad, indices, spec.input_size))[0]

    max_pool_input_op.__name__ = max_pool_input_op.__qualname__ = f"{op}_input"
    max_pool_input_op.__doc__ = _MAX_POOL_INPUT_DOC.format(
        summary=f"Gradient of :func:`{op}` with respect to its input.",
        forward=op, spatial=spatial, out=out, examples=_MAX_POOL_INPUT_EXAMPLES[rank],
    )
    return max_pool_op, max_pool_input_op


max_pool, max_pool_input = _fixed_rank_max_pool(
    "max_pool", None, "N-d max pooling: the maximum of each window, per channel.")
max_pool1d, max_pool1d_input = _fixed_rank_max_pool(
    "max_pool1d", 1, "1-d max pooling: ``max_pool`` with one spatial dimension.")
max_pool2d, max_pool2d_input = _fixed_rank_max_pool(
    "max_pool2d", 2, "2-d max pooling: ``max_pool`` with two spatial dimensions.")
max_pool3d, max_pool3d_input = _fixed_rank_max_pool(
    "max_pool3d", 3, "3-d max pooling: ``max_pool`` with three spatial dimensions.")


# ---------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------


def _average_dtypes(dtype: np.dtype) -> tuple[np.dtype, np.dtype]:
    """``(accumulated in, returned as)`` for averaging: float16 in float32; integers in and as float64.

    Both in native byte order (ufuncs take none in ``dtype=``).
    """
    dtype = dtype.newbyteorder("=")
    if dtype.kind in "iu":
        return np.dtype(np.float64), np.dtype(np.float64)
    if dtype == np.float16:
        return np.dtype(np.float32), dtype
    return dtype, dtype


def _check_divisor(op: str, divisor_override: Any) -> int | None:
    if divisor_override is None:
        return None
    if not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override, (bool, np.bool_)):
        fail(TypeError, op, "divisor_override", f"{divisor_override!r} of type {type(divisor_override).__name__}",
             "must be an int or None")
    if divisor_override == 0:
        fail(ValueError, op, "divisor_override", "0", "must be nonzero")
    return int(divisor_override)


def _avg_divisor(spec: PoolSpec, count_include_pad: bool, divisor_override: int | None) -> Any:
    """What each window's sum is divided by: an int, or a read-only int array ``(*out)``.

    PyTorch's rule, per dimension, for the window starting at ``start = o * stride - pad``:
    it is clipped to ``end = min(start + k, in + pad)`` (so a ``ceil_mode`` window
    never counts cells past the nominal padding); ``count_include_pad`` counts
    ``end - start``, otherwise only the input cells ``min(end, in) - max(start, 0)``.
    The divisor is the product over dimensions; an int where every window has the same.
    """
    if divisor_override is not None:
        return divisor_override
    return _window_counts(spec.input_size, spec.kernel_size, spec.stride, tuple(low for low, _ in spec.padding),
                          spec.output_size, count_include_pad)


@lru_cache(maxsize=256)
def _window_counts(input_size: tuple[int, ...], kernel_size: tuple[int, ...], stride: tuple[int, ...],
                   low: tuple[int, ...], output_size: tuple[int, ...], count_include_pad: bool) -> Any:
    """:func:`_avg_divisor`'s counts for one geometry, cached."""
    counts = []
    for size, k, s, pad, out in zip(input_size, kernel_size, stride, low, output_size):
        start = np.arange(out) * s - pad  # (out,)
        end = np.minimum(start + k, size + pad)
        counts.append(end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0))
    divisor = reduce(np.multiply.outer, counts)  # (*out)
    if divisor.size and np.all(divisor == divisor.flat[0]):
        return int(divisor.flat[0])  # a Python int divides without promoting float32
    divisor.setflags(write=False)  # shared between calls
    return divisor


def _avg_args(op: str, rank: int | None, input: Any, kernel_size: Any, stride: Any, padding: Any,
              ceil_mode: Any, count_include_pad: Any, divisor_override: Any) -> tuple[np.ndarray, PoolSpec, Any]:
    """Batched input, spec and divisor of an average pooling."""
    rank = _rank_from_tuple(op, "kernel_size", kernel_size, rank)
    x, _ = _batch_input(op, input, rank)
    spec = _cached_pool_spec(input.shape, kernel_size, stride, padding, 1, ceil_mode, op, rank)
    count_include_pad = check_flag(count_include_pad, "count_include_pad", op)
    divisor = _avg_divisor(spec, count_include_pad, _check_divisor(op, divisor_override))
    return x, spec, divisor


def _as_divisor(divisor: Any, dtype: np.dtype) -> Any:
    """An int stays (Python ints do not promote); an array becomes ``dtype``, so float32 stays float32."""
    return divisor if isinstance(divisor, int) else divisor.astype(dtype)


def _avg_pool_forward(x: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """Window sums (:func:`_reduce_windows`, padding adds nothing), divided: ``(N, C, *out)``."""
    accumulate, returned = _average_dtypes(x.dtype)
    sums = _reduce_windows(x, spec, np.add, 0, accumulate)  # (N, C, *out)
    np.divide(sums, _as_divisor(divisor, accumulate), out=sums)
    return sums.astype(returned, copy=False)


def _avg_pool_backward(grad_output: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """``grad_input`` ``(N, C, *in)`` of an average pooling, in ``grad_output``'s dtype.

    out[o] = sum_j x[o * s + j - pad] / divisor[o] is linear, so x[i] receives
    grad_output[o] / divisor[o] from every window o that reads it: the
    transpose of the window sum (:func:`_spread_windows`).
    """
    accumulate, _ = _average_dtypes(grad_output.dtype)
    scaled = np.divide(grad_output, _as_divisor(divisor, accumulate), dtype=accumulate)  # (N, C, *out)
    return _spread_windows(scaled, spec, accumulate).astype(grad_output.dtype, copy=False)


def _avg_pool_reference(x: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """:func:`_avg_pool_forward` on the window view of the zero-padded input: slow, obviously right."""
    accumulate, returned = _average_dtypes(x.dtype)
    padded = pad(x.astype(accumulate, copy=False), spec.window_padding)  # (N, C, *in + padding), zeros
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C, *out, *k)
    sums = windows.sum(axis=tuple(range(-spec.rank, 0)))  # (N, C, *out)
    return (sums / divisor).astype(returned, copy=False)


def _avg_pool_backward_reference(grad_output: np.ndarray, spec: PoolSpec, divisor: Any) -> np.ndarray:
    """:func:`_avg_pool_backward` as the window primitive's transpose: slow, obviously right.

    Every tap of a window gets the same share ``grad_output[o] / divisor[o]``;
    ``add_windows`` adds them back where they were read, and the padding's
    transpose crops.
    """
    accumulate, _ = _average_dtypes(grad_output.dtype)
    scaled = grad_output.astype(accumulate, copy=False) / divisor  # (N, C, *out)
    # Every tap of a window gets the same share: a broadcast view, no copy.
    per_tap = np.broadcast_to(scaled[(..., *([np.newaxis] * spec.rank))], (*scaled.shape, *spec.kernel_size))
    padded_size = [size + low + high for size, (low, high) in zip(spec.input_size, spec.window_padding)]
    grad_padded = add_windows(per_tap, padded_size, spec.stride, spec.dilation)  # (N, C, *in + padding)
    return pad_adjoint(grad_padded, spec.window_padding, "zeros", spec.input_size).astype(grad_output.dtype)


_AVG_POOL_DOC = """{summary}

    Output element ``o`` of each channel is the sum of its window
    ``x[o * stride + j - padding]`` (padding is implicit zeros) divided by
    PyTorch's divisor: ``divisor_override`` if given; else the window's size
    clipped to the padded extent ``[-padding, in + padding)`` with
    ``count_include_pad``; else the number of input (non-padding) elements it
    covers. A ``ceil_mode`` window that hangs past ``in + padding`` never counts
    the cells beyond.

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``; floating or integer.
    kernel_size : {kernel_type}
        Window size per spatial dimension, ``>= 1``.{kernel_note}
    stride : int or tuple of int, optional
        Step between windows, ``>= 1``; ``None`` (default) means ``kernel_size``.
    padding : int or tuple of int
        Implicit zeros on both sides, ``0 <= padding <= kernel_size // 2``.
    ceil_mode : bool
        Round the output size up (see Shape).
    count_include_pad : bool
        Whether padding cells count in the divisor.
    divisor_override : int, optional
        Nonzero; divide every window's sum by it instead. (PyTorch's
        ``avg_pool1d`` lacks it; it is accepted here at every rank.)

    Returns
    -------
    numpy.ndarray
        ``(N, C, {out})`` (no batch axis for unbatched input). float16 is summed
        in float32 and returned as float16; float32/float64 are kept. Integer
        inputs are averaged exactly and returned as float64, like ``numpy.mean``
        (PyTorch's CPU kernels refuse every integer dtype but int64, and
        truncate that one toward zero).

    Raises
    ------
    TypeError
        A non-array, masked-array or complex input; non-integer sizes or divisor; non-bool flags.
    ValueError
        A wrong input rank or an empty spatial dimension; kernel_size or stride
        below 1 or of the wrong count; padding negative or above
        ``kernel_size // 2``; a window larger than the padded input (with
        ``ceil_mode``: by a stride or more, which leaves no output);
        ``divisor_override=0``.

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + 2 * padding - kernel_size) / stride) + 1``
    (``ceil`` instead of ``floor`` with ``ceil_mode``, dropping a last window
    that would start in the right padding).

    Examples
    --------
{examples}
"""

_AVG_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[[[1., 2., 3.], [4., 5., 6.]]]])
    >>> P.avg_pool(x, (2, 2), stride=1)
    array([[[[3., 4.]]]])
    >>> P.avg_pool(x, (2, 2), ceil_mode=True)
    array([[[[3. , 4.5]]]])""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[1., 2., 3., 4., 5.]])
    >>> P.avg_pool1d(x, 3, stride=2, padding=1)
    array([[1., 3., 3.]])
    >>> P.avg_pool1d(x, 3, stride=2, padding=1, count_include_pad=False)
    array([[1.5, 3. , 4.5]])
    >>> P.avg_pool1d(np.array([[1, 2, 4]]), 2, stride=1)
    array([[1.5, 3. ]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.arange(16.).reshape(1, 1, 4, 4)
    >>> P.avg_pool2d(x, 2)
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    >>> P.avg_pool2d(x, 2, divisor_override=1)
    array([[[[10., 18.],
             [42., 50.]]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.avg_pool3d(np.ones((2, 3, 3, 3)), 2, stride=1, padding=1).shape
    (2, 4, 4, 4)""",
}

_AVG_POOL_INPUT_DOC = """{summary}

    The gradient of ``{forward}(input, ...)`` with respect to ``input``, given the
    gradient ``grad_output`` of its output: each input element receives
    ``grad_output[o] / divisor[o]`` from every window ``o`` that covers it
    (the divisor as in :func:`{forward}`).

    Parameters
    ----------
    grad_output : numpy.ndarray
        Floating point, of the forward output's shape ``(N, C, {out})`` or
        unbatched ``(C, {out})``.
    input : numpy.ndarray
        The forward input ``(N, C, {spatial})`` or ``(C, {spatial})`` (only its
        shape is read).
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As in :func:`{forward}`.

    Returns
    -------
    numpy.ndarray
        ``grad_input`` of ``input``'s shape, in ``grad_output``'s dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`{forward}`; also a non-floating ``grad_output`` or one not
        shaped like the output.

    Shape
    -----
    ``grad_input`` has ``input``'s shape; ``grad_output`` has the output's,
    ``out = floor((in + 2 * padding - kernel_size) / stride) + 1`` (``ceil`` with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np, convolab.pooling as P
{examples}
"""

_AVG_POOL_INPUT_EXAMPLES = {
    None: """    >>> P.avg_pool_input(np.ones((1, 1, 1, 2)), np.zeros((1, 1, 1, 3)), (1, 2), stride=1)
    array([[[[0.5, 1. , 0.5]]]])""",
    1: """    >>> P.avg_pool1d_input(np.ones((1, 2)), np.zeros((1, 3)), 2, padding=1)
    array([[0.5, 0.5, 0.5]])""",
    2: """    >>> P.avg_pool2d_input(np.full((1, 1, 1), 4.), np.zeros((1, 2, 2)), 2)
    array([[[1., 1.],
            [1., 1.]]])""",
    3: """    >>> P.avg_pool3d_input(np.ones((1, 1, 1, 1)), np.zeros((1, 2, 2, 2)), 2, divisor_override=1).sum()
    np.float64(8.0)""",
}


def _fixed_rank_avg_pool(op: str, rank: int | None, summary: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Make the average pooling op ``op`` for ``rank`` spatial dimensions (``None``: any) and its vjp."""

    def avg_pool_op(
        input: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> np.ndarray:
        x, spec, divisor = _avg_args(op, rank, input, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override)
        return _unbatch(spec.batched, _avg_pool_forward(x, spec, divisor))[0]

    @defines_vjp(avg_pool_op)
    def _avg_pool_vjp(
        input: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> tuple[np.ndarray, Any]:
        # Average pooling is linear; its pullback is its transpose (_avg_pool_backward).
        x, spec, divisor = _avg_args(op, rank, input, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override)

        def pullback(grad_output: np.ndarray) -> tuple[np.ndarray]:
            grad_output = _check_grad_output(op, grad_output, spec.caller_output_shape)
            batched_grad = grad_output if spec.batched else grad_output[np.newaxis]
            return _unbatch(spec.batched, _avg_pool_backward(batched_grad, spec, divisor))

        return _unbatch(spec.batched, _avg_pool_forward(x, spec, divisor))[0], pullback

    spatial = "*spatial" if rank is None else _spatial_names(rank)
    out = "*out" if rank is None else ", ".join(f"{n}_out" for n in spatial.split(", "))
    avg_pool_op.__name__ = avg_pool_op.__qualname__ = op
    avg_pool_op.__doc__ = _AVG_POOL_DOC.format(
        summary=summary, spatial=spatial, out=out,
        kernel_type="tuple of int" if rank is None else "int or tuple of int",
        kernel_note=" Its length is the number of spatial dimensions." if rank is None else "",
        examples=_AVG_POOL_EXAMPLES[rank],
    )

    def avg_pool_input_op(
        grad_output: np.ndarray,
        input: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> np.ndarray:
        grad_op = f"{op}_input"
        _, spec, divisor = _avg_args(grad_op, rank, input, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override)
        grad_output = _check_grad_output(grad_op, grad_output, spec.caller_output_shape)
        batched_grad = grad_output if spec.batched else grad_output[np.newaxis]
        return _unbatch(spec.batched, _avg_pool_backward(batched_grad, spec, divisor))[0]

    avg_pool_input_op.__name__ = avg_pool_input_op.__qualname__ = f"{op}_input"
    avg_pool_input_op.__doc__ = _AVG_POOL_INPUT_DOC.format(
        summary=f"Gradient of :func:`{op}` with respect to its input.",
        forward=op, spatial=spatial, out=out, examples=_AVG_POOL_INPUT_EXAMPLES[rank],
    )
    return avg_pool_op, avg_pool_input_op


avg_pool, avg_pool_input = _fixed_rank_avg_pool(
    "avg_pool", None, "N-d average pooling: the mean of each window, per channel.")
avg_pool1d, avg_pool1d_input = _fixed_rank_avg_pool(
    "avg_pool1d", 1, "1-d average pooling: ``avg_pool`` with one spatial dimension.")
avg_pool2d, avg_pool2d_input = _fixed_rank_avg_pool(
    "avg_pool2d", 2, "2-d average pooling: ``avg_pool`` with two spatial dimensions.")
avg_pool3d, avg_pool3d_input = _fixed_rank_avg_pool(
    "avg_pool3d", 3, "3-d average pooling: ``avg_pool`` with three spatial dimensions.")


# ---------------------------------------------------------------------------
# Adaptive pooling
# ---------------------------------------------------------------------------


def _adaptive_bounds(input_size: int, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Window ``o`` spans ``[floor(o * in / out), ceil((o + 1) * in / out))``, in integer arithmetic.

    >>> _adaptive_bounds(5, 3)
    (array([0, 1, 3]), array([2, 4, 5]))
    """
    o = np.arange(output_size)
    return (o * input_size) // output_size, -((-(o + 1) * input_size) // output_size)


def _adaptive_table(input_size: int, output_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``(out, width)`` of each window's taps, their validity, and each window's length.

    Windows are padded to the widest, ``width``; the extra taps repeat the
    window's last position (so any gather stays in range) and are marked invalid.
    """
    start, end = _adaptive_bounds(input_size, output_size)
    length = end - start  # (out,), each >= 1
    width = int(length.max(initial=0))
    position = start[:, None] + np.arange(width)[None, :]  # (out, width)
    valid = position < end[:, None]
    return np.minimum(position, end[:, None] - 1), valid, length


def _normalize_output_size(op: str, output_size: Any, rank: int, input_size: Sequence[int]) -> tuple[int, ...]:
    """An int or ``rank`` entries, each an int ``>= 0`` or ``None`` (keep that input size)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == rank:
        output_size = tuple(size if item is None else item for item, size in zip(output_size, input_size))
    return normalize_ints(output_size, rank, "output_size", op, minimum=0)


def _adaptive_args(op: str, rank: int | None, input: Any, output_size: Any) -> tuple[np.ndarray, bool, tuple[int, ...]]:
    rank = _rank_from_tuple(op, "output_size", output_size, rank)
    x, batched = _batch_input(op, input, rank)
    input_size = x.shape[2:]
    for dim, size in enumerate(input_size):
        if size == 0:
            fail(ValueError, op, "input", f"shape {input.shape} (spatial dimension {dim} is empty)",
                 "must have non-empty spatial dimensions")
    return x, batched, _normalize_output_size(op, output_size, rank, input_size)


#: Up to this many outputs along an axis, an adaptive average is a dense 0/1 matrix product
#: (one BLAS call, ``in * out`` multiply-adds per line); beyond, a sparse one (``in``-ish per line).
_DENSE_ADAPTIVE_OUTPUTS = 64


@lru_cache(maxsize=256)
def _adaptive_matrix(input_size: int, output_size: int, dtype: np.dtype) -> Any:
    """``(out, in)``: 1 where input ``i`` is in window ``o``; a read-only array, or scipy.sparse CSR if large.

    >>> _adaptive_matrix(5, 3, np.dtype(np.float64))
    array([[1., 1., 0., 0., 0.],
           [0., 1., 1., 1., 0.],
           [0., 0., 0., 1., 1.]])
    """
    start, end = _adaptive_bounds(input_size, output_size)
    position = np.arange(input_size)
    member = (position >= start[:, None]) & (position < end[:, None])  # (out, in)
    if output_size > _DENSE_ADAPTIVE_OUTPUTS:
        import scipy.sparse

        return scipy.sparse.csr_array(member.astype(dtype))
    matrix = member.astype(dtype)
    matrix.setflags(write=False)  # shared between calls
    return matrix


def _along_axis(y: np.ndarray, matrix: Any, axis: int) -> np.ndarray:
    """``y`` with its ``axis`` (length ``in``) replaced by ``matrix @ y`` along it (length ``out``)."""
    moved = np.moveaxis(y, axis, -1)  # (..., in); the reshape copies unless axis is last
    lines = moved.reshape(prod(moved.shape[:-1]), moved.shape[-1])  # (lines, in)
    if isinstance(matrix, np.ndarray):
        with np.errstate(invalid="ignore"):
            result = lines @ matrix.T  # (lines, out)
        if not np.isfinite(result).all():
            # An inf or NaN of y makes its own windows non-finite, but the dense product also multiplies
            # it by the 0s of every other window (0 * inf is NaN): redo it with the 1s alone.
            import scipy.sparse

            result = np.asarray((scipy.sparse.csr_array(matrix) @ lines.T).T)
    else:
        result = np.asarray((matrix @ lines.T).T)
    return np.moveaxis(result.reshape(*moved.shape[:-1], matrix.shape[0]), -1, axis)


@lru_cache(maxsize=256)
def _adaptive_areas(input_size: tuple[int, ...], output_size: tuple[int, ...]) -> Any:
    """The number of inputs in each window (the product of its lengths): an int if all equal, else ``(*out)``."""
    lengths = [np.subtract(*reversed(_adaptive_bounds(size, out))) for size, out in zip(input_size, output_size)]
    areas = reduce(np.multiply.outer, lengths, np.array(1))
    if areas.size and np.all(areas == areas.flat[0]):
        return int(areas.flat[0])  # a Python int divides without promoting float32
    areas.setflags(write=False)  # shared between calls
    return areas


def _adaptive_avg_forward(x: np.ndarray, output_size: tuple[int, ...]) -> np.ndarray:
    """Separable: each spatial axis summed over its windows, then divided by the window's area.

    Per axis: equal sizes mean one-element windows (skipped). A leading axis
    whose windows tile it (``out`` divides ``in``) is an average pooling's sum,
    kernel and stride ``in // out``, over whole rows; these go first, as they
    need no copy. Then the last axis, through its 0/1 window matrix: one matrix
    product over contiguous lines (strided slices would read each cache line
    once per tap). Other leading axes take their matrix last, when the array is
    smallest. Global pooling (every output size 1) is one matrix-vector product.
    """
    accumulate, returned = _average_dtypes(x.dtype)
    y = x.astype(accumulate, copy=False)  # (N, C, *in), becoming (N, C, *out) axis by axis
    if all(out == 1 for out in output_size):
        planes = y.reshape(*y.shape[:2], prod(y.shape[2:]))  # (N, C, plane)
        y = (planes @ np.ones(planes.shape[-1], dtype=accumulate)).reshape(*y.shape[:2], *output_size)
    else:
        pooled = [axis for axis in range(2, x.ndim) if x.shape[axis] != output_size[axis - 2]]
        tiled = [axis for axis in pooled if axis < x.ndim - 1 and output_size[axis - 2]
                 and x.shape[axis] % output_size[axis - 2] == 0]
        for axis in tiled + [axis for axis in reversed(pooled) if axis not in tiled]:
            size, out = y.shape[axis], output_size[axis - 2]
            if axis in tiled:
                width = size // out
                y = _reduce_axis(y, axis, _axis_taps(size, width, width, 1, 0, out), out, np.add, 0, accumulate)
            else:
                y = _along_axis(y, _adaptive_matrix(size, out, accumulate), axis)
    averaged = np.divide(y, _as_divisor(_adaptive_areas(x.shape[2:], output_size), accumulate))
    return averaged.astype(returned, copy=False)


def _adaptive_avg_backward(grad_output: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Transpose of the forward: divide by the area, then spread each axis back with its window matrix.

    Where ``out`` divides ``in`` the windows tile the axis, so the transpose is a
    repeat of each gradient over its window.
    """
    accumulate, _ = _average_dtypes(grad_output.dtype)
    areas = _as_divisor(_adaptive_areas(tuple(input_size), grad_output.shape[2:]), accumulate)
    g = np.divide(grad_output, areas, dtype=accumulate)  # (N, C, *out), becoming (N, C, *in)
    for axis in reversed(range(2, g.ndim)):
        size, out = input_size[axis - 2], g.shape[axis]
        if size == out:
            continue
        if out and size % out == 0:
            g = np.repeat(g, size // out, axis=axis)
        else:
            g = _along_axis(g, _adaptive_matrix(size, out, accumulate).T, axis)
    return np.ascontiguousarray(g, dtype=grad_output.dtype)


def _adaptive_max_forward(x: np.ndarray, output_size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Values and flat plane indices ``(N, C, *out)``, reducing the last spatial axis first.

    A box's row-major-first maximum is separable: reduce W keeping each row's
    first maximum and its index, then H keeping the first row whose maximum is
    largest, and so on outward, carrying the flat index of the chosen element.
    The tie and NaN rules are those of :func:`_keep_max`, as for ``max_pool``.
    """
    strides = _plane_strides(x.shape[2:])
    values, carried = x, None  # carried: flat-index contribution of the axes already reduced
    for axis in reversed(range(2, x.ndim)):
        out = output_size[axis - 2]
        position, valid, _ = _adaptive_table(x.shape[axis], out)
        trailing = values.ndim - axis - 1
        reduced_shape = values.shape[:axis] + (out,) + values.shape[axis + 1:]
        best = np.zeros(reduced_shape, dtype=x.dtype)
        best_index = np.full(reduced_shape, -1, dtype=np.int64)
        for tap in range(position.shape[1]):
            at = position[:, tap]  # (out,)
            candidate = np.take(values, at, axis=axis)
            index = at.reshape((out,) + (1,) * trailing) * strides[axis - 2]  # broadcasts like candidate
            if carried is not None:
                index = index + np.take(carried, at, axis=axis)
            tap_valid = valid[:, tap].reshape((out,) + (1,) * trailing)
            _keep_max(best, best_index, candidate, index, tap_valid)
        values, carried = best, best_index
    return values, carried


_ADAPTIVE_DOC = """{summary}

    Output position ``o`` (per spatial dimension) pools the input window
    ``[floor(o * in / out), ceil((o + 1) * in / out))``; windows may overlap and
    differ in length by one when ``out`` does not divide ``in``.
    {semantics}

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``; floating or
        integer, with non-empty spatial dimensions.
    output_size : {size_type}
        The output's spatial size, each ``>= 0``; ``None`` entries keep that
        input size.{size_note}{extra_params}

    Returns
    -------
    {returns}

    Raises
    ------
    TypeError
        A non-array or complex input; a non-integer output_size entry.
    ValueError
        A wrong input rank; an empty spatial dimension; output_size negative or
        of the wrong count.

    Shape
    -----
    ``(N, C, {spatial})`` to ``(N, C, *output_size)``: ``out = output_size``
    (or ``in`` where ``None``), independent of the input size.

    Examples
    --------
{examples}
"""

_ADAPTIVE_AVG_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool(np.arange(10.).reshape(1, 2, 5), (1, 3))
    array([[[3. , 4.5, 6. ]]])""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool1d(np.array([[0., 1., 2., 3., 4.]]), 3)
    array([[0.5, 2. , 3.5]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool2d(np.arange(12.).reshape(1, 1, 3, 4), (None, 1))
    array([[[[1.5],
             [5.5],
             [9.5]]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool3d(np.ones((2, 3, 5, 6, 7)), 1).shape
    (2, 3, 1, 1, 1)""",
}

_ADAPTIVE_MAX_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool(np.array([[[3., 1.], [4., 1.], [5., 9.]]]), (2, 1), return_indices=True)
    (array([[[4.],
            [9.]]]), array([[[2],
            [5]]]))""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool1d(np.array([[3, 1, 4, 1, 5]]), 3)
    array([[3, 4, 5]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool2d(np.arange(12.).reshape(1, 3, 4), (2, 2))
    array([[[ 5.,  7.],
            [ 9., 11.]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool3d(np.arange(8).reshape(1, 1, 2, 2, 2), 1, return_indices=True)
    (array([[[[[7]]]]]), array([[[[[7]]]]]))""",
}


def _fixed_rank_adaptive_avg_pool(op: str, rank: int | None, summary: str) -> Callable[..., Any]:
    """Make the adaptive average pooling op ``op`` and its vjp."""

    def adaptive_avg_pool_op(input: np.ndarray, output_size: Any) -> np.ndarray:
        x, batched, size = _adaptive_args(op, rank, input, output_size)
        return _unbatch(batched, _adaptive_avg_forward(x, size))[0]

    @defines_vjp(adaptive_avg_pool_op)
    def _adaptive_avg_pool_vjp(input: np.ndarray, output_size: Any) -> tuple[np.ndarray, Any]:
        # Linear and separable: per axis, out[o] = sum over window o of x / length[o];
        # the pullback applies each axis' transpose (_adaptive_avg_backward).
        x, batched, size = _adaptive_args(op, rank, input, output_size)
        output = _adaptive_avg_forward(x, size)

        def pullback(grad_output: np.ndarray) -> tuple[np.ndarray]:
            expected = output.shape if batched else output.shape[1:]
            grad_output = _check_grad_output(op, grad_output, expected)
            batched_grad = grad_output if batched else grad_output[np.newaxis]
            return _unbatch(batched, _adaptive_avg_backward(batched_grad, x.shape[2:]))

        return _unbatch(batched, output)[0], pullback

    spatial = "*spatial" if rank is None else _spatial_names(rank)
    adaptive_avg_pool_op.__name__ = adaptive_avg_pool_op.__qualname__ = op
    adaptive_avg_pool_op.__doc__ = _ADAPTIVE_DOC.format(
        summary=summary, spatial=spatial,
        semantics="Each output is its window's mean.",
        size_type="tuple of int or None" if rank is None else "int, or tuple of int or None",
        size_note=" Its length is the number of spatial dimensions." if rank is None else "",
        extra_params="",
        returns="numpy.ndarray\n        ``(N, C, *output_size)`` (no batch axis for unbatched input); float16\n"
                "        is summed in float32; integers are averaged and returned as float64.",
        examples=_ADAPTIVE_AVG_EXAMPLES[rank],
    )
    return adaptive_avg_pool_op


def _fixed_rank_adaptive_max_pool(op: str, rank: int | None, summary: str) -> Callable[..., Any]:
    """Make the adaptive max pooling op ``op`` and its vjp."""

    def _run(input: Any, output_size: Any, return_indices: Any) -> tuple[np.ndarray, np.ndarray, bool, bool, tuple]:
        """Batched values and indices, whether batched, the checked flag, and the input's spatial size."""
        return_indices = check_flag(return_indices, "return_indices", op)
        x, batched, size = _adaptive_args(op, rank, input, output_size)
        values, indices = _adaptive_max_forward(x, size)
        return values, indices, batched, return_indices, x.shape[2:]

    def adaptive_max_pool_op(input: np.ndarray, output_size: Any, return_indices: bool = False) -> Any:
        values, indices, batched, return_indices, _ = _run(input, output_size, return_indices)
        values, indices = _unbatch(batched, values, indices)
        return (values, indices) if return_indices else values

    @defines_vjp(adaptive_max_pool_op)
    def _adaptive_max_pool_vjp(input: np.ndarray, output_size: Any, return_indices: bool = False) -> tuple[Any, Any]:
        # As for max_pool: the pullback adds grad_output[o] at the selected index[o].
        values, indices, batched, return_indices, input_size = _run(input, output_size, return_indices)

        def pullback(grad_output: Any) -> tuple[np.ndarray]:
            if return_indices:
                grad_output = _split_values_cotangent(op, grad_output)
            grad_output = _check_grad_output(op, grad_output, values.shape if batched else values.shape[1:])
            batched_grad = grad_output if batched else grad_output[np.newaxis]
            return _unbatch(batched, _scatter_to_planes(batched_grad, indices, input_size))

        caller_values, caller_indices = _unbatch(batched, values, indices)
        return ((caller_values, caller_indices) if return_indices else caller_values), pullback

    spatial = "*spatial" if rank is None else _spatial_names(rank)
    adaptive_max_pool_op.__name__ = adaptive_max_pool_op.__qualname__ = op
    adaptive_max_pool_op.__doc__ = _ADAPTIVE_DOC.format(
        summary=summary, spatial=spatial,
        semantics=("Each output is its window's maximum. Ties go to the first maximum in\n"
                   "    row-major window order, which alone receives the gradient; NaN propagates\n"
                   "    with the index of the window's last NaN. Both as in PyTorch. Under\n"
                   "    ``convolab.vjp`` with ``return_indices=True`` the pullback takes the\n"
                   "    values' cotangent (or ``(grad_values, None)``)."),
        size_type="tuple of int or None" if rank is None else "int, or tuple of int or None",
        size_note=" Its length is the number of spatial dimensions." if rank is None else "",
        extra_params=("\n    return_indices : bool\n        Also return the int64 flat index of each "
                      "maximum in its ``(n, c)`` plane."),
        returns=("numpy.ndarray, or (numpy.ndarray, numpy.ndarray)\n        ``(N, C, *output_size)`` "
                 "(no batch axis for unbatched input) in the input's dtype;\n        with ``return_indices``, "
                 "also the int64 indices."),
        examples=_ADAPTIVE_MAX_EXAMPLES[rank],
    )
    return adaptive_max_pool_op


adaptive_avg_pool = _fixed_rank_adaptive_avg_pool(
    "adaptive_avg_pool", None, "N-d adaptive average pooling to a fixed output size.")
adaptive_avg_pool1d = _fixed_rank_adaptive_avg_pool(
    "adaptive_avg_pool1d", 1, "1-d adaptive average pooling: ``adaptive_avg_pool`` with one spatial dimension.")
adaptive_avg_pool2d = _fixed_rank_adaptive_avg_pool(
    "adaptive_avg_pool2d", 2, "2-d adaptive average pooling: ``adaptive_avg_pool`` with two spatial dimensions.")
adaptive_avg_pool3d = _fixed_rank_adaptive_avg_pool(
    "adaptive_avg_pool3d", 3, "3-d adaptive average pooling: ``adaptive_avg_pool`` with three spatial dimensions.")
adaptive_max_pool = _fixed_rank_adaptive_max_pool(
    "adaptive_max_pool", None, "N-d adaptive max pooling to a fixed output size.")
adaptive_max_pool1d = _fixed_rank_adaptive_max_pool(
    "adaptive_max_pool1d", 1, "1-d adaptive max pooling: ``adaptive_max_pool`` with one spatial dimension.")
adaptive_max_pool2d = _fixed_rank_adaptive_max_pool(
    "adaptive_max_pool2d", 2, "2-d adaptive max pooling: ``adaptive_max_pool`` with two spatial dimensions.")
adaptive_max_pool3d = _fixed_rank_adaptive_max_pool(
    "adaptive_max_pool3d", 3, "3-d adaptive max pooling: ``adaptive_max_pool`` with three spatial dimensions.")


# ---------------------------------------------------------------------------
# Max unpooling
# ---------------------------------------------------------------------------


def _unpool_size(op: str, input_size: Sequence[int], kernel: tuple[int, ...], strides: tuple[int, ...],
                 pads: tuple[int, ...], output_size: Any) -> tuple[int, ...]:
    """PyTorch's rule: the default ``(in - 1) * stride - 2 * padding + kernel_size``, or a
    requested size strictly within ``stride`` of it (``rank`` or ``rank + 2`` entries)."""
    rank = len(kernel)
    default = tuple((size - 1) * s - 2 * p + k for size, k, s, p in zip(input_size, kernel, strides, pads))
    if output_size is None:
        for dim, size in enumerate(default):
            if size < 0:
                fail(ValueError, op, "padding",
                     f"{pads} (the output size in spatial dimension {dim} would be {size})",
                     "must leave a non-negative output size (in - 1) * stride - 2 * padding + kernel_size")
        return default
    if not isinstance(output_size, (tuple, list)):
        fail(TypeError, op, "output_size", f"{output_size!r} of type {type(output_size).__name__}",
             f"must be None or a tuple of {rank} (or {rank + 2}) ints")
    requested = tuple(output_size)[2:] if len(output_size) == rank + 2 else tuple(output_size)
    if len(requested) != rank:
        fail(ValueError, op, "output_size", f"{tuple(output_size)!r} ({len(output_size)} values)",
             f"must have {rank} spatial sizes, or {rank + 2} entries (N, C, *spatial)")
    requested = normalize_ints(requested, rank, "output_size", op, minimum=0)
    for dim, (size, base, s) in enumerate(zip(requested, default, strides)):
        if not base - s < size < base + s:
            fail(ValueError, op, "output_size", f"{tuple(output_size)!r} ({size} in spatial dimension {dim})",
                 f"must be strictly between {base - s} and {base + s} in that dimension (the default size "
                 f"{base} plus or minus the stride {s})")
    return requested


def _unpool_args(op: str, rank: int | None, input: Any, indices: Any, kernel_size: Any, stride: Any,
                 padding: Any, output_size: Any) -> tuple[np.ndarray, np.ndarray, bool, tuple[int, ...]]:
    """Batched input and int64 indices, whether batched, and the output's spatial size."""
    rank = _rank_from_tuple(op, "kernel_size", kernel_size, rank)
    x, batched = _batch_input(op, input, rank)
    indices = as_array(op, "indices", indices)
    if indices.dtype.kind not in "iu":
        fail(TypeError, op, "indices", f"dtype {indices.dtype}", "must be an integer dtype")
    if indices.shape != input.shape:
        fail(ValueError, op, "indices", f"shape {indices.shape}", f"must have the input's shape {input.shape}")
    kernel = normalize_ints(kernel_size, rank, "kernel_size", op)
    strides = _normalize_stride(op, stride, kernel)
    pads = normalize_ints(padding, rank, "padding", op, minimum=0)
    size = _unpool_size(op, x.shape[2:], kernel, strides, pads, output_size)
    flat = (indices if batched else indices[np.newaxis]).astype(np.int64, copy=False)
    plane = prod(size)
    outside = (flat < 0) | (flat >= plane)
    if outside.any():
        fail(ValueError, op, "indices", f"{int(flat[outside][0])}",
             f"must lie in [0, {plane}), the flat positions of a {'x'.join(map(str, size))} output plane")
    return x, flat, batched, size


def _max_unpool_forward(x: np.ndarray, indices: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Zeros ``(N, C, *size)`` with each input value written at its flat index in its plane."""
    batch, channels = x.shape[:2]
    planes = np.zeros((batch * channels, prod(size)), dtype=x.dtype)  # (N * C, plane)
    rows = np.arange(batch * channels)[:, None]  # (N * C, 1)
    planes[rows, indices.reshape(batch * channels, -1)] = x.reshape(batch * channels, -1)  # repeats: last wins
    return planes.reshape(batch, channels, *size)


def _max_unpool_backward(grad_output: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The transpose of the scatter is a gather: ``grad_input[i] = grad_output[indices[i]]``, per plane."""
    batch, channels = indices.shape[:2]
    planes = grad_output.reshape(batch * channels, -1)  # (N * C, plane)
    rows = np.arange(batch * channels)[:, None]
    return planes[rows, indices.reshape(batch * channels, -1)].reshape(indices.shape)


_MAX_UNPOOL_DOC = """{summary}

    A partial inverse of :func:`{pool}`: every input value is written at the flat
    position ``indices`` gives it in its ``(n, c)`` plane of the output; every
    other output element is zero. Where indices repeat, the last value written
    wins (PyTorch leaves it unspecified).

    Parameters
    ----------
    input : numpy.ndarray
        Pooled values ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``.
    indices : numpy.ndarray
        Integer flat plane indices of ``input``'s shape, e.g. from
        ``{pool}(..., return_indices=True)``; each in ``[0, prod(output size))``.
    kernel_size : {kernel_type}
        The pooling's window size, ``>= 1``.{kernel_note}
    stride : int or tuple of int, optional
        The pooling's stride; ``None`` (default) means ``kernel_size``.
    padding : int or tuple of int
        The pooling's padding, ``>= 0``.
    output_size : tuple of int, optional
        The spatial size to produce (``rank`` entries, or ``rank + 2`` whose
        first two are ignored), strictly within ``stride`` of the default; this
        recovers input sizes the pooling's floor division lost.

    Returns
    -------
    numpy.ndarray
        ``(N, C, {out})`` (no batch axis for unbatched input), input's dtype.

    Raises
    ------
    TypeError
        A non-array or complex input; non-array or non-integer indices;
        non-integer sizes.
    ValueError
        A wrong input rank; indices not of the input's shape or out of range;
        kernel_size or stride below 1; negative padding; an output_size of the
        wrong count or too far from the default.

    Shape
    -----
    Per spatial dimension, ``out = (in - 1) * stride - 2 * padding + kernel_size``,
    or ``output_size``.

    Examples
    --------
{examples}
"""

_MAX_UNPOOL_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[[[1., 5., 2.], [3., 4., 9.]]]])
    >>> values, indices = P.max_pool(x, (2, 2), return_indices=True)
    >>> P.max_unpool(values, indices, (2, 2), output_size=(2, 3))
    array([[[[0., 5., 0.],
             [0., 0., 0.]]]])""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_unpool1d(np.array([[7., 8.]]), np.array([[1, 2]]), 2)
    array([[0., 7., 8., 0.]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> values, indices = P.max_pool2d(np.arange(16.).reshape(1, 4, 4), 2, return_indices=True)
    >>> P.max_unpool2d(values, indices, 2)
    array([[[ 0.,  0.,  0.,  0.],
            [ 0.,  5.,  0.,  7.],
            [ 0.,  0.,  0.,  0.],
            [ 0., 13.,  0., 15.]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_unpool3d(np.ones((1, 1, 1, 1)), np.array([[[[7]]]]), 2).ravel()
    array([0., 0., 0., 0., 0., 0., 0., 1.])""",
}


def _fixed_rank_max_unpool(op: str, rank: int | None, summary: str) -> Callable[..., Any]:
    """Make the max unpooling op ``op`` and its vjp."""

    def max_unpool_op(
        input: np.ndarray,
        indices: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        output_size: Any = None,
    ) -> np.ndarray:
        x, flat, batched, size = _unpool_args(op, rank, input, indices, kernel_size, stride, padding, output_size)
        return _unbatch(batched, _max_unpool_forward(x, flat, size))[0]

    @defines_vjp(max_unpool_op)
    def _max_unpool_vjp(
        input: np.ndarray,
        indices: np.ndarray,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        output_size: Any = None,
    ) -> tuple[np.ndarray, Any]:
        # out = scatter(x at indices); its pullback is the gather grad_output[indices].
        # indices are integers: their gradient is None.
        x, flat, batched, size = _unpool_args(op, rank, input, indices, kernel_size, stride, padding, output_size)
        output = _max_unpool_forward(x, flat, size)

        def pullback(grad_output: np.ndarray) -> tuple[np.ndarray, None]:
            grad_output = _check_grad_output(op, grad_output, output.shape if batched else output.shape[1:])
            batched_grad = grad_output if batched else grad_output[np.newaxis]
            return _unbatch(batched, _max_unpool_backward(batched_grad, flat))[0], None

        return _unbatch(batched, output)[0], pullback

    spatial = "*spatial" if rank is None else _spatial_names(rank)
    out = "*out" if rank is None else ", ".join(f"{n}_out" for n in spatial.split(", "))
    max_unpool_op.__name__ = max_unpool_op.__qualname__ = op
    max_unpool_op.__doc__ = _MAX_UNPOOL_DOC.format(
        summary=summary, spatial=spatial, out=out,
        pool="max_pool" if rank is None else f"max_pool{rank}d",
        kernel_type="tuple of int" if rank is None else "int or tuple of int",
        kernel_note=" Its length is the number of spatial dimensions." if rank is None else "",
        examples=_MAX_UNPOOL_EXAMPLES[rank],
    )
    return max_unpool_op


max_unpool = _fixed_rank_max_unpool("max_unpool", None, "N-d max unpooling: scatter pooled maxima back into place.")
max_unpool1d = _fixed_rank_max_unpool(
    "max_unpool1d", 1, "1-d max unpooling: ``max_unpool`` with one spatial dimension.")
max_unpool2d = _fixed_rank_max_unpool(
    "max_unpool2d", 2, "2-d max unpooling: ``max_unpool`` with two spatial dimensions.")
max_unpool3d = _fixed_rank_max_unpool(
    "max_unpool3d", 3, "3-d max unpooling: ``max_unpool`` with three spatial dimensions.")
