"""The frozen spec of a fixed-window pooling problem, and the argument checks every pooling op shares.

:func:`pool_spec` checks a max or average pooling's arguments against the
input shape once (PyTorch's rules, plus one: every window reads an input
sample) and freezes them into a :class:`PoolSpec`; :func:`_cached_pool_spec`
remembers it for plain arguments. The spec's window arithmetic is the shared
:class:`convolab._geometry.WindowGeometry` (:attr:`PoolSpec.geometry`); what is
pooling's own is the output size (``ceil_mode``) and the padding its last
window needs. The helpers above it read the rank from a tuple argument, bring
the input to ``(N, C, *in)``, check a ``grad_output`` (the shared rule of
:mod:`convolab._checks`) and drop the batch axis again for an unbatched caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from .. import shapes
from .._checks import check_array, check_flag, check_grad_output, is_int, normalize_ints
from .._errors import fail
from .._fixed_rank import rank_words
from .._geometry import WindowGeometry, check_window_fits, padding_for_outputs


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
    axes = rank_words(rank)["spatial"]
    fail(ValueError, op, "input", f"shape {input.shape} ({input.ndim} dimensions)",
         f"must have {rank + 2} dimensions (N, C, {axes}) or {rank + 1} unbatched (C, {axes})")


def _normalize_stride(op: str, stride: Any, kernel_size: tuple[int, ...]) -> tuple[int, ...]:
    """``None`` (or an empty tuple, as PyTorch allows) means the kernel size."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel_size
    return normalize_ints(stride, len(kernel_size), "stride", op)


def _batched_grad_output(op: str, grad_output: Any, caller_output_shape: tuple[int, ...],
                         batched: bool) -> np.ndarray:
    """``grad_output`` checked against the output the caller got (floating point: pooling's gradients are not
    integers), as ``(N, C, *out)``."""
    grad_output = check_grad_output(op, grad_output, caller_output_shape, floating=True)
    return grad_output if batched else grad_output[np.newaxis]


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
        nominal = WindowGeometry(self.input_size, self.kernel_size, self.stride, self.dilation, self.padding)
        return padding_for_outputs(nominal, self.output_size)

    @cached_property
    def geometry(self) -> WindowGeometry:
        """The windows as the shared :class:`convolab._geometry.WindowGeometry`, of :attr:`output_size` exactly.

        Every engine reads the tap arithmetic (``o*s + j*d - low``), the per-tap
        slices and the stride phases from it. Its padding is :attr:`window_padding`,
        except where the high side would leave room for more windows than
        :attr:`output_size` (a spec whose output size is pinned, as a trimmed
        kernel's, :func:`convolab.pooling._windows._trim_kernel`): there it ends
        within a stride of the last window (below zero where the windows stop
        short of the input's end, whose last cells no window reads).
        """
        padding = tuple(
            (low, min(high, (out - 1) * s + shapes.dilated_kernel_size(k, d) - size - low + s - 1))
            for size, k, s, d, (low, high), out in zip(self.input_size, self.kernel_size, self.stride, self.dilation,
                                                       self.window_padding, self.output_size)
        )
        return WindowGeometry(self.input_size, self.kernel_size, self.stride, self.dilation, padding)

    @cached_property
    def reduction_taps(self) -> tuple[tuple[tuple[slice, slice], ...], ...]:
        """Per spatial axis, ``geometry.axis_taps(dim, whole_first=True)``: what the separable reductions loop over.

        Kept with the spec, which a training loop gets from the cache: the taps are sliced once, not every step.
        """
        return tuple(self.geometry.axis_taps(dim, whole_first=True) for dim in range(self.rank))

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
    if not isinstance(input_shape, (tuple, list)) or not all(is_int(n) and n >= 0 for n in input_shape):
        fail(TypeError, op, "input_shape", repr(input_shape), "must be a sequence of non-negative ints")
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) == rank + 2:
        batched = True
    elif len(input_shape) == rank + 1:
        batched, input_shape = False, (1, *input_shape)
    else:
        axes = rank_words(rank)["spatial"]
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
    for dim, (k, p) in enumerate(zip(kernel, pads)):
        if p > k // 2:
            fail(ValueError, op, "padding", f"{p} with kernel_size {k} in spatial dimension {dim}",
                 "must be at most half the kernel size (padding <= kernel_size // 2)")
    # PyTorch's "output size is too small": floor((padded - extent) / stride) + 1 < 1, or with
    # ceil_mode ceil(...) + 1 < 1, which is an overhang past the padded input of a stride or more.
    pairs = tuple((p, p) for p in pads)
    check_window_fits(op, "kernel_size", input_size, kernel, dilations, pairs, strides, ceil_mode=ceil_mode)
    spec = PoolSpec(
        op=op, batched=batched, batch=batch, channels=channels, input_size=tuple(input_size),
        kernel_size=kernel, stride=strides, padding=pairs, dilation=dilations, ceil_mode=ceil_mode,
    )
    for dim in range(rank):
        empty = spec.geometry.windows_reading_nothing(dim)
        if empty.size:
            fail(ValueError, op, "dilation",
                 f"{dilations[dim]} in spatial dimension {dim}, where the window at output position "
                 f"{int(empty[0])} reads only padding (input size {input_size[dim]}, kernel {kernel[dim]}, "
                 f"padding {pads[dim]})",
                 "must leave every window at least one input sample")
    return spec
