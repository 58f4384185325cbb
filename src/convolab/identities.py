"""Show the work: one output element traced, the identities behind convolution checked.

Everything here is assembled from the building blocks the convolution itself
uses (the frozen spec, :func:`~convolab._window.pad`, the sliding-window view,
:func:`~convolab._conv.oriented_kernel`, the im2col matrices), so what is shown
is what is computed, never a parallel re-implementation.

- :func:`trace` takes one output element apart: the window it reads, which of
  its cells are padding and which input sample each came from, the kernel as
  applied, the elementwise product, its sum, the bias and the result.
- :func:`im2col_matrices` gives the unrolled input and the filter matrix whose
  product is the convolution.
- :func:`conv_matrix` writes the whole convolution as one sparse matrix ``M``;
  its transpose is the input gradient (transposed convolution made concrete).
- ``check_*`` compute both sides of an identity and compare them, returning an
  :class:`Identity` (or an :class:`IdentityChain` of several equal sides) whose
  ``holds`` was computed, never assumed.

Axis legend used below: N batch, G groups, C input channels per group, O output
channels per group, P output positions (product of ``*out``), K kernel taps
(product of ``*kernel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Sequence

import numpy as np
import scipy.signal
import scipy.sparse

from ._conv import oriented_kernel
from ._dtypes import compute_dtype, is_exact, result_dtype
from ._errors import fail
from ._window import pad, reverse_spatial, sliding_windows
from .algorithms import filter_matrix, fold_product, unroll
from .functional import check_array, check_conv_arrays, conv
from .grad import conv_input
from .spec import ConvSpec, PaddingArg, conv_spec
from .transposed import conv_transpose

__all__ = [
    "Trace",
    "trace",
    "Identity",
    "IdentityChain",
    "Im2colMatrices",
    "im2col_matrices",
    "check_direct_equals_im2col",
    "check_flip",
    "check_input_gradient",
    "conv_matrix",
    "scipy_mode",
]

#: Windows with more cells than this are summarized, not drawn, by ``str(trace)``.
MAX_DRAWN_CELLS = 256


# -- small helpers --------------------------------------------------------------------------------


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a``, so a frozen dataclass really is frozen."""
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _padded_sources(shape: Sequence[int], spec: ConvSpec) -> np.ndarray:
    """For every cell of the padded array, the flat index of the input sample it holds; -1 for a zero.

    The index array is padded with the convolution's own padding mode, so a
    reflected, replicated or wrapped cell holds the index of the sample it
    copies. Indices are shifted up by one first, so zero padding (which writes
    0) becomes -1 once shifted back.
    """
    index = np.arange(1, prod(shape) + 1, dtype=np.int64).reshape(tuple(shape))
    return pad(index, spec.padding, spec.padding_mode) - 1


def _json(value: Any) -> Any:
    """Arrays and NumPy scalars as JSON-able lists and numbers (complex as ``[real, imag]``)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if np.iscomplexobj(value):
            return np.stack([value.real, value.imag], axis=-1).tolist()
        return value.tolist()
    if isinstance(value, (complex, np.complexfloating)):
        return [float(value.real), float(value.imag)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _number(value: Any) -> str:
    """One number as a short string: ints exactly, floats to four significant digits."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (bool, int)):
        return str(int(value))
    if isinstance(value, complex):
        return f"{value:.3g}"
    return f"{value:.4g}"


def _grid_lines(cells: np.ndarray, width: int) -> list[str]:
    """A 1-d or 2-d array of strings as right-aligned rows."""
    rows = cells.reshape(1, -1) if cells.ndim == 1 else cells
    return [" ".join(cell.rjust(width) for cell in row) for row in rows]


def _marked(values: np.ndarray, padding: np.ndarray | None) -> np.ndarray:
    """Each value as text; where ``padding`` is set, in brackets (others get spaces, to align)."""
    text = np.array([_number(v) for v in values.ravel()], dtype=object).reshape(values.shape)
    if padding is None or not padding.any():
        return text
    return np.where(padding, "[" + text + "]", " " + text + " ")


# -- trace: one output element taken apart ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Trace:
    """One output element of a convolution, taken apart.

    Attributes
    ----------
    at : tuple of int
        The element, ``(n, c_out, *position)`` (``(c_out, *position)`` unbatched).
    spec : ConvSpec
        The convolution, canonicalized.
    input_channels : tuple of int
        The input channels the element reads (those of its group).
    window : numpy.ndarray
        ``(C_in/groups, *kernel_size)``: the cells of the padded input the kernel
        meets, in the accumulation dtype.
    is_padding : numpy.ndarray of bool
        Like ``window``: True where the cell lies in the padding, not on an input sample.
    source : numpy.ndarray of int
        ``(C_in/groups, *kernel_size, input.ndim)``: for each window cell, the
        index into ``input`` of the sample it holds (a padding cell of a
        reflect/replicate/circular/symmetric mode holds a copy of a sample, and
        names it), or ``-1`` throughout for a zero of zero padding.
    kernel : numpy.ndarray
        ``(C_in/groups, *kernel_size)``: the filter as applied, ``weight[c_out]``,
        reversed on every spatial axis when ``flip``.
    product : numpy.ndarray
        ``window * kernel``, elementwise.
    sum : numpy scalar
        ``product.sum()``.
    bias : numpy scalar or None
        ``bias[c_out]``, if a bias was given.
    result : numpy scalar
        ``sum + bias`` in the convolution's result dtype: ``conv(...)[at]``.
    dot : numpy scalar
        ``np.dot(window.ravel(), kernel.ravel())``, the same number as ``sum``.

    Arrays are read-only copies. ``str(trace)`` draws it; :meth:`to_dict` gives
    it as JSON-able data.
    """

    at: tuple[int, ...]
    spec: ConvSpec
    input_channels: tuple[int, ...]
    window: np.ndarray
    is_padding: np.ndarray
    source: np.ndarray
    kernel: np.ndarray
    product: np.ndarray
    sum: Any
    bias: Any
    result: Any
    dot: Any

    @property
    def position(self) -> tuple[int, ...]:
        """The output element's spatial position."""
        return self.at[-self.spec.rank:]

    @property
    def first_tap(self) -> tuple[int, ...]:
        """Input coordinates of the window's first cell, ``position*stride - padding_low`` (negative in padding)."""
        return tuple(p * s - low for p, s, (low, _) in zip(self.position, self.spec.stride, self.spec.padding))

    def to_dict(self) -> dict[str, Any]:
        """The trace as JSON-able data: nested lists, plain numbers, ``None`` for zero-padding sources.

        Complex numbers are written as ``[real, imag]`` pairs.
        """
        spec = self.spec
        sources = np.empty(self.window.shape, dtype=object)
        for cell in np.ndindex(*self.window.shape):
            coordinates = self.source[cell]
            sources[cell] = None if coordinates[0] < 0 else [int(i) for i in coordinates]
        return {
            "at": list(self.at),
            "output_shape": list(spec.caller_output_shape),
            "stride": list(spec.stride),
            "padding": [list(pair) for pair in spec.padding],
            "dilation": list(spec.dilation),
            "groups": spec.groups,
            "padding_mode": spec.padding_mode,
            "flip": spec.flip,
            "input_channels": list(self.input_channels),
            "first_tap": list(self.first_tap),
            "window": _json(self.window),
            "is_padding": self.is_padding.tolist(),
            "source": sources.tolist(),
            "kernel": _json(self.kernel),
            "product": _json(self.product),
            "sum": _json(self.sum),
            "bias": _json(self.bias),
            "result": _json(self.result),
            "dot": _json(self.dot),
        }

    def __str__(self) -> str:
        spec = self.spec
        index = ", ".join(map(str, self.at))
        c_out = self.at[-spec.rank - 1]
        lines = [f"output[{index}] = {_number(self.result)}"]
        batch = "" if not spec.batched else f"{self.at[0]}, "
        first, last = self.input_channels[0], self.input_channels[-1] + 1
        lines.append(
            f"  window: input[{batch}{first}:{last}] at first tap {self.first_tap}, "
            f"stride {spec.stride}, dilation {spec.dilation}"
        )
        orientation = "reversed on every spatial axis (flip=True)" if spec.flip else "as stored (flip=False)"
        lines.append(f"  kernel: weight[{c_out}] {orientation}")
        if self.is_padding.any():
            lines.append(f"  [v] marks a padding cell ({spec.padding_mode} padding {spec.padding})")
        if self.window.size <= MAX_DRAWN_CELLS:
            lines.extend(self._panels())
        else:
            lines.append(f"  ({self.window.size} cells, not drawn: see .window, .kernel and .product)")
        bias = "none" if self.bias is None else _number(self.bias)
        lines.append(f"  sum = {_number(self.sum)}")
        lines.append(f"  bias = {bias}")
        lines.append(f"  result = sum + bias = {_number(self.result)}")
        lines.append(f"  dot(window.ravel(), kernel.ravel()) = {_number(self.dot)}")
        return "\n".join(lines)

    __repr__ = __str__

    def _panels(self) -> list[str]:
        """Window, kernel and product side by side, one block per input channel (and leading kernel index)."""
        mask = self.is_padding
        panels = {
            "window": _marked(self.window, mask),
            "kernel": _marked(self.kernel, None),
            "window * kernel": _marked(self.product, mask),
        }
        widths = {title: max(len(cell) for cell in cells.ravel()) for title, cells in panels.items()}
        rank = self.spec.rank
        grid_axes = 1 if rank == 1 else 2  # the last one or two kernel axes form the drawn grid
        lead_shape = self.window.shape[: self.window.ndim - grid_axes]  # (C, *leading kernel axes)
        lines = []
        for lead in np.ndindex(*lead_shape):
            label = f"channel {self.input_channels[lead[0]]}"
            if len(lead) > 1:
                label += ", kernel[" + ", ".join(map(str, lead[1:])) + ", :, :]"
            lines.append(f"  {label}:")
            blocks = [_grid_lines(cells[lead], widths[title]) for title, cells in panels.items()]
            block_widths = [max(len(title), len(block[0])) for title, block in zip(panels, blocks)]
            lines.append("    " + "    ".join(t.ljust(w) for t, w in zip(panels, block_widths)).rstrip())
            for row in zip(*blocks):
                lines.append("    " + "    ".join(r.ljust(w) for r, w in zip(row, block_widths)).rstrip())
        return lines


def _check_at(op: str, at: Any, spec: ConvSpec) -> tuple[int, ...]:
    shape = spec.caller_output_shape
    names = (("n",) if spec.batched else ()) + ("c_out",) + tuple(f"position[{i}]" for i in range(spec.rank))
    form = "(n, c_out, *position)" if spec.batched else "(c_out, *position) (unbatched input)"
    ranges = ", ".join(f"{name} in range({size})" for name, size in zip(names, shape))
    rule = f"must be {form}, {len(shape)} ints indexing the output of shape {shape} ({ranges})"
    if not isinstance(at, (tuple, list)) or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in at
    ):
        fail(TypeError, op, "at", repr(at), rule)
    at = tuple(int(i) for i in at)
    if len(at) != len(shape):
        fail(ValueError, op, "at", f"{at} ({len(at)} entries)", rule)
    for name, i, size in zip(names, at, shape):
        if not 0 <= i < size:
            fail(ValueError, op, "at", f"{at} ({name}={i} is outside range({size}))", rule)
    return at


def trace(
    input: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    at: Sequence[int],
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Trace:
    """Take one output element of ``conv(input, weight, bias, ...)`` apart.

    The element at ``at`` is the sum over the input channels of its group and
    the kernel taps ``j`` of ``x_padded[n, c, position*stride + j*dilation] *
    kernel[c_out, c, j]``: the window it reads, times the kernel, elementwise,
    summed (the same number as the dot product of the two unrolled), plus the
    bias.

    Parameters
    ----------
    input, weight, bias, stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.conv`.
    at : sequence of int, keyword-only
        The output element: ``(n, c_out, *position)``, or ``(c_out, *position)``
        for unbatched input. Entries must be in range (no negative indexing).

    Returns
    -------
    Trace
        Its window, padding mask, source coordinates, kernel, product, sum,
        bias, result and dot product. ``trace(...).result`` equals
        ``conv(...)[at]``: exactly for integers, to rounding for floats (the
        two may sum in different orders).

    Raises
    ------
    TypeError
        ``at`` not a sequence of ints; the errors of :func:`convolab.conv`.
    ValueError
        ``at`` of the wrong length or out of range (the message gives the valid
        ranges); the errors of :func:`convolab.conv`.

    Shape
    -----
    ``window``, ``is_padding``, ``kernel`` and ``product`` are
    ``(C_in/groups, *kernel_size)``; ``source`` adds a last axis of
    ``input.ndim`` coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(1, 10).reshape(1, 1, 3, 3)
    >>> w = np.array([[[[9, 8], [7, 6]]]])
    >>> t = trace(x, w, at=(0, 0, 0, 0))
    >>> t.window[0].tolist(), t.product[0].tolist(), int(t.sum)
    ([[1, 2], [4, 5]], [[9, 16], [28, 30]], 83)
    >>> print(t)
    output[0, 0, 0, 0] = 83
      window: input[0, 0:1] at first tap (0, 0), stride (1, 1), dilation (1, 1)
      kernel: weight[0] as stored (flip=False)
      channel 0:
        window    kernel    window * kernel
        1 2       9 8        9 16
        4 5       7 6       28 30
      sum = 83
      bias = none
      result = sum + bias = 83
      dot(window.ravel(), kernel.ravel()) = 83

    Padding cells are marked, and each knows the sample it holds (``-1`` for a zero):

    >>> t = trace(np.array([[1., 2., 3.]]), np.array([[[1., 10., 100.]]]), at=(0, 0), padding=1,
    ...           padding_mode="reflect")
    >>> t.is_padding.tolist(), t.source[0, :, 1].tolist(), float(t.result)
    ([[True, False, False]], [1, 0, 1], 212.0)
    >>> print(t)  # doctest: +NORMALIZE_WHITESPACE
    output[0, 0] = 212
      window: input[0:1] at first tap (-1,), stride (1,), dilation (1,)
      kernel: weight[0] as stored (flip=False)
      [v] marks a padding cell (reflect padding ((1, 1),))
      channel 0:
        window         kernel       window * kernel
        [2]  1   2     1 10 100     [2]  10  200
      sum = 212
      bias = none
      result = sum + bias = 212
      dot(window.ravel(), kernel.ravel()) = 212
    """
    op = "trace"
    check_array(op, "input", input)
    check_array(op, "weight", weight)
    spec = conv_spec(input.shape, weight.shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op=op)
    check_conv_arrays(op, input, weight, bias, spec)
    at = _check_at(op, at, spec)
    n = at[0] if spec.batched else 0
    c_out, position = at[-spec.rank - 1], at[-spec.rank:]
    group = c_out // spec.out_channels_per_group
    channels = range(group * spec.in_channels_per_group, (group + 1) * spec.in_channels_per_group)
    accumulate = compute_dtype(input.dtype)

    def window_at(array: np.ndarray) -> np.ndarray:
        """The cells of padded ``array`` (``(..., *padded)``) that the element's window reads: ``(..., *kernel)``."""
        windows = sliding_windows(array, spec.kernel_size, spec.stride, spec.dilation)  # (..., *out, *kernel)
        return windows[(Ellipsis, *position, *([slice(None)] * spec.rank))]

    x = input.reshape(spec.input_shape)  # (N, C_in, *spatial)
    padded = pad(x[n, channels.start:channels.stop].astype(accumulate, copy=False), spec.padding, spec.padding_mode)
    window = window_at(padded)  # (C, *kernel)
    # Which cells are padding: pad an all-True mask with zeros. Which sample each holds: pad its index.
    inside = window_at(pad(np.ones(spec.input_size, dtype=bool), spec.padding, "zeros"))  # (*kernel)
    flat_source = window_at(_padded_sources(spec.input_size, spec))  # (*kernel), -1 for a zero
    spatial = np.zeros((*spec.kernel_size, spec.rank), dtype=np.int64)  # (*kernel, rank)
    if prod(spec.input_size):  # an empty input has no samples: every cell is a zero
        spatial[...] = np.stack(np.unravel_index(np.maximum(flat_source, 0), spec.input_size), axis=-1)
    lead = np.array([n, 0] if spec.batched else [0], dtype=np.int64)
    source = np.empty((len(channels), *spec.kernel_size, len(lead) + spec.rank), dtype=np.int64)
    source[..., :len(lead)] = lead
    source[..., len(lead) - 1] = np.reshape(channels, (-1, *([1] * spec.rank)))  # the channel coordinate
    source[..., len(lead):] = spatial
    source[:, flat_source < 0] = -1

    kernel = oriented_kernel(weight.astype(accumulate, copy=False), spec.flip)[c_out]  # (C, *kernel)
    product = window * kernel
    total = product.sum()
    bias_value = None if bias is None else bias.astype(accumulate)[c_out]
    result = (total if bias_value is None else total + bias_value).astype(result_dtype(input.dtype))
    return Trace(
        at=at, spec=spec, input_channels=tuple(channels),
        window=_frozen(window), is_padding=_frozen(np.broadcast_to(~inside, window.shape)), source=_frozen(source),
        kernel=_frozen(kernel), product=_frozen(product),
        sum=total, bias=bias_value, result=result, dot=np.dot(window.ravel(), kernel.ravel()),
    )


# -- identities: both sides computed, compared ------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Identity:
    """Two computations of one quantity, compared.

    ``holds`` is computed: ``max_abs_difference <= tolerance``, with tolerance
    0 for integer inputs (exact equality) and, for floating point, a bound on
    the rounding error of the sums involved and of the final rounding to the
    result dtype (see ``_tolerance``).
    """

    name: str
    left: np.ndarray
    right: np.ndarray
    max_abs_difference: float
    holds: bool
    tolerance: float = 0.0

    def __bool__(self) -> bool:
        return self.holds

    def to_dict(self) -> dict[str, Any]:
        """The identity as JSON-able data."""
        return {"name": self.name, "holds": self.holds, "max_abs_difference": self.max_abs_difference,
                "tolerance": self.tolerance, "left": _json(self.left), "right": _json(self.right)}

    def __str__(self) -> str:
        verdict = "holds" if self.holds else "FAILS"
        return (f"{self.name}: {verdict} (max |left - right| = {self.max_abs_difference:.3g}, "
                f"tolerance {self.tolerance:.3g}, shape {self.left.shape})")

    def __repr__(self) -> str:
        return (f"Identity(name={self.name!r}, holds={self.holds}, max_abs_difference={self.max_abs_difference!r}, "
                f"tolerance={self.tolerance!r}, shape={self.left.shape})")


@dataclass(frozen=True, eq=False)
class IdentityChain:
    """Several computations of one quantity: ``sides[0] == sides[1] == ...``.

    ``identities`` compares the first side with each later one; the chain
    holds when all of them do. ``chain["label"]`` is the array labelled so.
    """

    name: str
    labels: tuple[str, ...]
    sides: tuple[np.ndarray, ...]
    identities: tuple[Identity, ...]

    @property
    def holds(self) -> bool:
        return all(identity.holds for identity in self.identities)

    @property
    def max_abs_difference(self) -> float:
        return max((identity.max_abs_difference for identity in self.identities), default=0.0)

    def __bool__(self) -> bool:
        return self.holds

    def __getitem__(self, label: str) -> np.ndarray:
        if label not in self.labels:
            fail(KeyError, "IdentityChain", "label", repr(label), f"must be one of {', '.join(map(repr, self.labels))}")
        return self.sides[self.labels.index(label)]

    def to_dict(self) -> dict[str, Any]:
        """The chain as JSON-able data: its sides by label, and each comparison."""
        return {"name": self.name, "holds": self.holds, "sides": {k: _json(v) for k, v in zip(self.labels, self.sides)},
                "identities": [{key: value for key, value in identity.to_dict().items()
                                if key not in ("left", "right")} for identity in self.identities]}

    def __str__(self) -> str:
        verdict = "holds" if self.holds else "FAILS"
        return "\n".join([f"{self.name}: {verdict}", *(f"  {identity}" for identity in self.identities)])

    def __repr__(self) -> str:
        return f"IdentityChain(name={self.name!r}, holds={self.holds}, labels={self.labels})"


def _tolerance(dtype: np.dtype, terms: int, factors: Sequence[np.ndarray], sides: Sequence[np.ndarray]) -> float:
    """How far float computations of the same sums of products may differ by rounding alone.

    Each compared element is a sum of at most ``terms`` products of entries of
    ``factors``, so every partial sum is at most ``M = terms * prod(max|factor|)``.
    Summed in different orders in precision ``eps_sum`` (the accumulation dtype),
    two results differ by at most about ``2 * terms * eps_sum * M``; rounding
    each to the result dtype then moves it by at most ``eps_out / 2`` of its
    size, ``eps_out * max|side|`` for the pair. Integers are exact: 0.
    """
    if is_exact(dtype):
        return 0.0
    terms = max(terms, 1)
    bound = float(terms)
    for factor in factors:
        bound *= float(np.max(np.abs(factor), initial=0))
    largest = max(float(np.max(np.abs(side), initial=0)) for side in sides)
    eps_sum = float(np.finfo(compute_dtype(dtype)).eps)
    eps_out = float(np.finfo(result_dtype(dtype)).eps)
    return 2 * terms * eps_sum * bound + eps_out * largest


def _compare(name: str, left: np.ndarray, right: np.ndarray, tolerance: float) -> Identity:
    if left.shape != right.shape:
        difference = float("inf")
    elif left.size == 0:
        difference = 0.0
    else:
        difference = float(np.max(np.abs(left - right)))
    return Identity(name=name, left=_frozen(left), right=_frozen(right), max_abs_difference=difference,
                    holds=bool(difference <= tolerance), tolerance=tolerance)


def _chain(name: str, labels: Sequence[str], sides: Sequence[np.ndarray], tolerance: float) -> IdentityChain:
    """``sides[0]`` compared with each later side, under one tolerance."""
    identities = tuple(_compare(f"{labels[0]} == {label}", sides[0], side, tolerance)
                       for label, side in zip(labels[1:], sides[1:]))
    frozen_sides = (identities[0].left, *(identity.right for identity in identities))  # read-only copies
    return IdentityChain(name=name, labels=tuple(labels), sides=frozen_sides, identities=identities)


def _spec(op: str, input_shape: Sequence[int], weight: np.ndarray, stride: Any, padding: PaddingArg, dilation: Any,
          groups: Any, padding_mode: str, flip: bool) -> ConvSpec:
    check_array(op, "weight", weight)
    return conv_spec(input_shape, weight.shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op=op)


# -- im2col: the convolution as matrix products -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Im2colMatrices:
    """The im2col matrices of a convolution: ``output = fold(unrolled @ filters)``.

    ``unrolled`` has one row per output position ``(n, *out)`` (row-major) and
    one column per ``(c, *kernel tap)`` of the group's input channels;
    ``filters`` has the same rows' worth of columns as rows, and one column per
    output channel of the group. With ``groups == 1`` they are plain 2-D
    matrices ``(N*P, C_in*K)`` and ``(C_in*K, C_out)``; otherwise stacks
    ``(G, N*P, C*K)`` and ``(G, C*K, O)``. Entries are in the accumulation dtype
    (int64 for integers, float32 for float16).
    """

    unrolled: np.ndarray
    filters: np.ndarray
    spec: ConvSpec
    dtype: np.dtype

    @property
    def row_labels(self) -> tuple[tuple[int, ...], ...]:
        """``(n, *out)`` of each row of ``unrolled``."""
        return tuple(np.ndindex(self.spec.batch, *self.spec.output_size))

    @property
    def column_labels(self) -> tuple[tuple[int, ...], ...]:
        """``(c, *tap)`` of each column of ``unrolled`` (row of ``filters``), ``c`` counted within the group."""
        return tuple(np.ndindex(self.spec.in_channels_per_group, *self.spec.kernel_size))

    def product(self) -> np.ndarray:
        """``unrolled @ filters``: ``(N*P, C_out)``, or ``(G, N*P, O)`` with groups."""
        return np.matmul(self.unrolled, self.filters)

    def output(self) -> np.ndarray:
        """The product folded into the convolution's output (no bias), in its shape and result dtype."""
        spec = self.spec
        rows = spec.batch * prod(spec.output_size)
        product = self.product().reshape(spec.groups, rows, spec.out_channels_per_group)  # (G, N*P, O)
        out = fold_product(product, spec).astype(result_dtype(self.dtype), copy=False)  # (N, C_out, *out)
        return out if spec.batched else out[0]


def im2col_matrices(
    input: np.ndarray,
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Im2colMatrices:
    """The unrolled input and the filter matrix whose product is the convolution.

    Each row of the unrolled input is one window (what :func:`trace` shows for
    that output position), laid out flat; each column of the filter matrix is
    one output channel's kernel, laid out the same way. Their product holds
    every output element, one output position per row.

    Parameters
    ----------
    input, weight, stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.conv`.

    Returns
    -------
    Im2colMatrices
        ``.unrolled``, ``.filters``, ``.product()`` and ``.output()``.

    Shape
    -----
    ``unrolled``: ``(N*P, C_in*K)``, ``filters``: ``(C_in*K, C_out)`` with one
    group; ``(G, N*P, C*K)`` and ``(G, C*K, O)`` with ``G`` groups, where
    ``P = prod(out)`` and ``K = prod(kernel_size)``.

    Examples
    --------
    >>> import numpy as np
    >>> m = im2col_matrices(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]))
    >>> m.unrolled
    array([[1, 2, 4, 5],
           [2, 3, 5, 6],
           [4, 5, 7, 8],
           [5, 6, 8, 9]])
    >>> m.filters.T
    array([[9, 8, 7, 6]])
    >>> m.product().ravel().tolist(), m.output().tolist()
    ([83, 113, 173, 203], [[[[83, 113], [173, 203]]]])
    """
    op = "im2col_matrices"
    check_array(op, "input", input)
    spec = _spec(op, input.shape, weight, stride, padding, dilation, groups, padding_mode, flip)
    check_conv_arrays(op, input, weight, None, spec)
    accumulate = compute_dtype(input.dtype)
    padded = pad(input.reshape(spec.input_shape).astype(accumulate, copy=False), spec.padding, spec.padding_mode)
    unrolled = unroll(padded, spec)  # (G, N*P, C*K)
    filters = filter_matrix(oriented_kernel(weight.astype(accumulate, copy=False), spec.flip), spec)  # (G, C*K, O)
    if spec.groups == 1:
        unrolled, filters = unrolled[0], filters[0]
    return Im2colMatrices(unrolled=_frozen(unrolled), filters=_frozen(filters), spec=spec, dtype=input.dtype)


def check_direct_equals_im2col(
    input: np.ndarray,
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Identity:
    """One element at a time (the definition) equals one matrix product per group (im2col).

    Left: ``conv(..., algorithm="direct")``, each output element its window
    times the kernel, summed. Right: :func:`im2col_matrices`' product, folded.

    Parameters
    ----------
    input, weight, stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.conv`.

    Returns
    -------
    Identity

    Shape
    -----
    Both sides have the convolution's output shape.

    Examples
    --------
    >>> import numpy as np
    >>> check_direct_equals_im2col(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]])).holds
    True
    """
    matrices = im2col_matrices(input, weight, stride, padding, dilation, groups, padding_mode=padding_mode, flip=flip)
    direct = conv(input, weight, None, stride, padding, dilation, groups, padding_mode=padding_mode, flip=flip,
                  algorithm="direct")
    spec = matrices.spec
    terms = spec.in_channels_per_group * prod(spec.kernel_size)
    by_matrices = matrices.output()
    return _compare("direct == im2col", direct, by_matrices,
                    _tolerance(input.dtype, terms, (input, weight), (direct, by_matrices)))


# -- the flip --------------------------------------------------------------------------------------


def scipy_mode(spec: ConvSpec) -> str | None:
    """The ``scipy.signal.convolve`` mode whose padding this is, in every dimension; None if none is.

    >>> from convolab import conv_spec
    >>> scipy_mode(conv_spec((1, 1, 5, 5), (1, 1, 3, 3), padding=2)), scipy_mode(conv_spec((1, 1, 5), (1, 1, 4), padding=1))
    ('full', None)
    """
    per_mode = {
        "valid": tuple((0, 0) for _ in spec.kernel_size),
        "full": tuple((k - 1, k - 1) for k in spec.kernel_size),
        # SciPy centres "same" on the full result with the odd sample dropped low (see convolab.signal).
        "same": tuple(((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in spec.kernel_size),
    }
    for mode, pairs in per_mode.items():
        if spec.padding == pairs:
            return mode
    return None


def check_flip(
    input: np.ndarray,
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> IdentityChain:
    """True convolution is correlation with the kernel reversed, and is SciPy's ``convolve``.

    Sides: ``conv(x, w, flip=True)``; ``conv(x, w reversed on every spatial
    axis)`` (rotated 180° in 2-d); and, where SciPy has the same problem (one
    input and one output channel, stride 1, no dilation, zero padding matching
    ``mode="valid"``, ``"full"`` or ``"same"`` in every dimension), the stack of
    ``scipy.signal.convolve(x[n, 0], w[0, 0], mode, method="direct")``.

    Parameters
    ----------
    input, weight, stride, padding, dilation, groups, padding_mode
        As in :func:`convolab.conv`.

    Returns
    -------
    IdentityChain
        Labels ``"flip=True"``, ``"reversed weight"`` and, where it applies,
        ``"scipy.signal.convolve(mode=...)"``.

    Shape
    -----
    Every side has the convolution's output shape.

    Examples
    --------
    >>> import numpy as np
    >>> chain = check_flip(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]), padding=1)
    >>> chain.labels
    ('flip=True', 'reversed weight', "scipy.signal.convolve(mode='full')")
    >>> chain.holds, chain["flip=True"][0, 0, 0].tolist()
    (True, [9, 26, 43, 24])
    """
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode)
    flipped = conv(input, weight, flip=True, **params)
    reversed_weight = np.ascontiguousarray(reverse_spatial(weight, weight.ndim - 2))
    labels, sides = ["flip=True", "reversed weight"], [flipped, conv(input, reversed_weight, **params)]
    spec = _spec("check_flip", input.shape, weight, stride, padding, dilation, groups, padding_mode, True)
    mode = scipy_mode(spec)
    unpadded = all(pair == (0, 0) for pair in spec.padding)
    if (mode is not None and spec.in_channels == 1 and spec.out_channels == 1 and set(spec.stride) == {1}
            and set(spec.dilation) == {1} and (spec.padding_mode == "zeros" or unpadded)):
        accumulate = compute_dtype(input.dtype)  # SciPy's direct method has no float16; integers stay exact
        signals = input.reshape(spec.input_shape)[:, 0].astype(accumulate)  # (N, *spatial)
        kernel = weight[0, 0].astype(accumulate)
        by_scipy = np.zeros((spec.batch, *spec.output_size), dtype=accumulate)
        for n, signal in enumerate(signals):
            by_scipy[n] = scipy.signal.convolve(signal, kernel, mode=mode, method="direct")
        by_scipy = by_scipy.astype(result_dtype(input.dtype)).reshape(spec.caller_output_shape)
        labels.append(f"scipy.signal.convolve(mode={mode!r})")
        sides.append(by_scipy)
    terms = spec.in_channels_per_group * prod(spec.kernel_size)
    return _chain("flip=True is correlation with the reversed kernel, the convolution of mathematics", labels, sides,
                  _tolerance(input.dtype, terms, (input, weight), sides))


# -- the input gradient, three ways -----------------------------------------------------------------


def check_input_gradient(
    input_shape: Sequence[int],
    weight: np.ndarray,
    grad_output: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> IdentityChain:
    """The input gradient three ways: scatter-add == full correlation with the rotated filter == conv_transpose.

    - ``"scatter"``: every output position adds grad_output times the filter
      into the window it read (then the padding's transpose);
    - ``"full"``: a full correlation of the stride-spread grad_output with the
      filter reversed on every axis (rotated 180°), channels swapped;
    - ``"conv_transpose"``: :func:`convolab.conv_transpose` of grad_output with
      the same weight (oriented as the forward applied it), its padding the
      forward's ``(low, high)`` pairs and ``output_size`` the input's. Only
      where it can express the forward problem: zero padding (any padding
      argument, resolved to pairs), or no padding at all; and a non-empty
      input (conv_transpose refuses to produce an empty output).

    Parameters
    ----------
    input_shape : tuple of int
        The forward input's shape (batched or unbatched).
    weight, grad_output
        As in :func:`convolab.grad.conv_input`.
    stride, padding, dilation, groups, padding_mode, flip
        The forward convolution's arguments.

    Returns
    -------
    IdentityChain
        Labels ``"scatter"``, ``"full"`` and, where it applies,
        ``"conv_transpose"``; ``chain.sides`` are the arrays.

    Shape
    -----
    Every side has shape ``input_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> chain = check_input_gradient((1, 1, 3, 3), np.array([[[[1, 2], [3, 4]]]]), np.ones((1, 1, 2, 2), int))
    >>> chain.holds, chain.labels
    (True, ('scatter', 'full', 'conv_transpose'))
    >>> chain["conv_transpose"][0, 0]
    array([[ 1,  3,  2],
           [ 4, 10,  6],
           [ 3,  7,  4]])
    """
    spec = _spec("check_input_gradient", input_shape, weight, stride, padding, dilation, groups, padding_mode, flip)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  flip=flip)
    labels = ["scatter", "full"]
    sides = [conv_input(tuple(input_shape), weight, grad_output, algorithm=algorithm, **params)
             for algorithm in labels]
    expressible = spec.padding_mode == "zeros" or all(pair == (0, 0) for pair in spec.padding)
    if expressible and min(spec.input_size) > 0:  # conv_transpose makes no empty outputs
        # conv_transpose's weight is (C_in_t, C_out_t/groups, *k) = (C_out, C_in/groups, *k): the forward weight.
        kernel = np.ascontiguousarray(oriented_kernel(weight, spec.flip))
        labels.append("conv_transpose")
        sides.append(conv_transpose(grad_output, kernel, None, spec.stride, spec.padding, 0, spec.groups,
                                    spec.dilation, output_size=spec.input_size))
    # Each input sample collects at most O*K products per padded cell holding it: one without padding
    # or with zeros; at most three per dimension for reflect/circular/symmetric (padding <= size);
    # the edge sample fills the whole border for replicate.
    copies = 1
    for low, high in spec.padding:
        copies *= {"zeros": 1, "replicate": 1 + low + high}.get(spec.padding_mode, min(3, 1 + low + high))
    terms = spec.out_channels_per_group * prod(spec.kernel_size) * copies
    name = "input gradient: scatter-add == full correlation with the rotated filter"
    if "conv_transpose" in labels:
        name += " == conv_transpose"
    return _chain(name, labels, sides, _tolerance(weight.dtype, terms, (weight, grad_output), sides))


# -- the convolution as one matrix ------------------------------------------------------------------


def conv_matrix(
    input_shape: Sequence[int],
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> scipy.sparse.csr_matrix:
    """The convolution as an explicit sparse matrix: ``conv(x).ravel() == M @ x.ravel()``.

    A convolution (without bias) is linear in its input, so it is a matrix.
    Row ``r`` is output element ``r`` (row-major over the output); its entries
    are the kernel taps, in the columns of the input samples its window reads.
    The matrix is built from index maps, never by convolving: the flat index of
    every input sample is padded with the convolution's padding mode and viewed
    through the same sliding windows, so a reflected, replicated or wrapped
    padding cell lands in the column of the sample it copies and a zero cell in
    no column at all. Where one window reads a sample twice (reflect padding of
    a short input), the two taps are summed.

    Its transpose is the input gradient: ``M.T @ grad_output.ravel()`` is
    :func:`convolab.grad.conv_input`, which is what a transposed convolution
    computes.

    Parameters
    ----------
    input_shape : tuple of int
        The input's shape, batched ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
    weight, stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.conv`.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical (duplicates summed, indices sorted), of the weight's
        accumulation dtype (int64 for integers, float32 for float16). Taps are
        stored even where the weight is zero, so the sparsity pattern shows
        which samples each output reads.

    Raises
    ------
    TypeError, ValueError
        As :func:`convolab.conv` for the shapes and arguments.

    Shape
    -----
    ``(prod(output_shape), prod(input_shape))``, with at most
    ``prod(output_shape) * C_in/groups * prod(kernel_size)`` stored entries.

    Examples
    --------
    >>> import numpy as np
    >>> M = conv_matrix((1, 1, 3), np.array([[[1, 2]]]), padding=1)
    >>> M.toarray()
    array([[2, 0, 0],
           [1, 2, 0],
           [0, 1, 2],
           [0, 0, 1]])
    >>> M @ np.array([1, 10, 100])
    array([  2,  21, 210, 100])
    >>> conv_matrix((1, 2), np.array([[[1, 10, 100]]]), padding=1, padding_mode="reflect").toarray()
    array([[ 10, 101],
           [101,  10]])
    """
    op = "conv_matrix"
    if not isinstance(input_shape, (tuple, list)) or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in input_shape):
        fail(TypeError, op, "input_shape", repr(input_shape), "must be a tuple of ints (a full shape)")
    spec = _spec(op, input_shape, weight, stride, padding, dilation, groups, padding_mode, flip)
    groups, c, o = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    taps, positions = c * prod(spec.kernel_size), prod(spec.output_size)
    # Columns: for every window cell, the flat index of the input sample it reads (-1: a zero).
    sources = _padded_sources(spec.input_shape, spec)  # (N, C_in, *padded)
    windows = sliding_windows(sources, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    windows = windows.reshape(spec.batch, groups, c, positions, prod(spec.kernel_size))  # (N, G, C, P, K)
    windows = windows.transpose(0, 1, 3, 2, 4).reshape(spec.batch, groups, 1, positions, taps)  # (N, G, 1, P, C*K)
    # Values: output channel (g, o)'s oriented kernel, the same for every window.
    kernel = oriented_kernel(weight.astype(compute_dtype(weight.dtype), copy=False), spec.flip)
    values = kernel.reshape(1, groups, o, 1, taps)  # (1, G, O, 1, C*K)
    # Rows: output element (n, g*O + o, p), row-major.
    rows = np.arange(prod(spec.output_shape), dtype=np.int64).reshape(spec.batch, groups, o, positions, 1)
    shape = (spec.batch, groups, o, positions, taps)  # (N, G, O, P, C*K): one entry per product summed
    columns, values, rows = (np.broadcast_to(a, shape) for a in (windows, values, rows))
    read = columns >= 0  # zero-padding cells contribute nothing
    matrix = scipy.sparse.coo_matrix(
        (values[read], (rows[read], columns[read])), shape=(prod(spec.output_shape), prod(spec.input_shape)),
    ).tocsr()
    matrix.sum_duplicates()  # tocsr() already sums repeated (row, column) pairs; this also sorts, canonically
    return matrix
