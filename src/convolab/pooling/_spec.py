"""The frozen spec of a fixed-window pooling problem, and the argument checks every pooling op shares.

:func:`pool_spec` checks a max or average pooling's arguments against the
input shape once (PyTorch's rules, plus one: every window reads an input
sample) and freezes them into a :class:`PoolSpec`; :func:`_cached_pool_spec`
remembers it for plain arguments. The helpers above it read the rank from a
tuple argument, bring the input to ``(N, C, *in)``, check a ``grad_output``,
and drop the batch axis again for an unbatched caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from .. import shapes
from .._errors import fail
from ..functional import check_array
from ..spec import check_flag, normalize_ints

_SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def _spatial_names(rank: int) -> str:
    return ", ".join(_SPATIAL_NAMES.get(rank, tuple(f"S{i}" for i in range(rank))))


# ---------------------------------------------------------------------------
# Arguments and results shared by every op
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


def _unbatch(spec_batched: bool, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return arrays if spec_batched else tuple(a[0] for a in arrays)


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


def _windows_reading_nothing(spec: PoolSpec, dim: int) -> np.ndarray:
    """The outputs along ``dim`` whose window reads only padding, without a table of every tap.

    Window ``o``'s first tap at or past the input's start is
    ``j0 = max(0, ceil((low - o*s) / d))``; it reads nothing iff ``j0`` is past
    the kernel or its cell ``o*s + j0*d - low`` past the input. (A table of every
    tap, as :func:`convolab.pooling._windows._tap_table`, would be ``(out, k)``: 8 GiB for ``k=2*10**8``.)
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
