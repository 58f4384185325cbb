"""One output element of a convolution, taken apart: :class:`Trace` and :func:`trace`.

The trace is assembled from the building blocks the convolution itself uses
(the frozen spec, :func:`~convolab._window.pad`, the sliding-window view,
:func:`~convolab._engine.oriented_kernel`), so what is shown is what is
computed, never a parallel re-implementation: the window the element reads,
which of its cells are padding and which input sample each came from, the
kernel as applied, the elementwise product, its sum, the bias and the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Sequence

import numpy as np

from .._dtypes import compute_dtype, result_dtype
from .._engine import oriented_kernel
from .._errors import fail
from .._window import pad, sliding_windows
from ..functional import check_array, check_conv_arrays
from ..spec import ConvSpec, PaddingArg, conv_spec
from ._format import compact_number, grid_lines, json_value, marked
from ._problem import frozen, padded_sources

__all__ = ["MAX_DRAWN_CELLS", "Trace", "trace"]

#: Windows with more cells than this are summarized, not drawn, by ``str(trace)``.
MAX_DRAWN_CELLS = 256


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
            "window": json_value(self.window),
            "is_padding": self.is_padding.tolist(),
            "source": sources.tolist(),
            "kernel": json_value(self.kernel),
            "product": json_value(self.product),
            "sum": json_value(self.sum),
            "bias": json_value(self.bias),
            "result": json_value(self.result),
            "dot": json_value(self.dot),
        }

    def __str__(self) -> str:
        spec = self.spec
        index = ", ".join(map(str, self.at))
        c_out = self.at[-spec.rank - 1]
        lines = [f"output[{index}] = {compact_number(self.result)}"]
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
        bias = "none" if self.bias is None else compact_number(self.bias)
        lines.append(f"  sum = {compact_number(self.sum)}")
        lines.append(f"  bias = {bias}")
        lines.append(f"  result = sum + bias = {compact_number(self.result)}")
        lines.append(f"  dot(window.ravel(), kernel.ravel()) = {compact_number(self.dot)}")
        return "\n".join(lines)

    __repr__ = __str__

    def _panels(self) -> list[str]:
        """Window, kernel and product side by side, one block per input channel (and leading kernel index)."""
        mask = self.is_padding
        panels = {
            "window": marked(self.window, mask),
            "kernel": marked(self.kernel, None),
            "window * kernel": marked(self.product, mask),
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
            blocks = [grid_lines(cells[lead], widths[title]) for title, cells in panels.items()]
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
    flat_source = window_at(padded_sources(spec.input_size, spec))  # (*kernel), -1 for a zero
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
        window=frozen(window), is_padding=frozen(np.broadcast_to(~inside, window.shape)), source=frozen(source),
        kernel=frozen(kernel), product=frozen(product),
        sum=total, bias=bias_value, result=result, dot=np.dot(window.ravel(), kernel.ravel()),
    )
