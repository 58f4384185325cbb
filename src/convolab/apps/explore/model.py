"""Everything the explorer's page shows for one configuration, as JSON-ready data.

:func:`problem` turns the controls' text into a :class:`Problem` (cached, so
that hovering cell after cell does not recompute the configuration). Its
:meth:`~Problem.view` is what the page draws first: the grids (the canvas the
kernel slides over, the kernel, the output; for the backward view grad_output,
both gradients and the full-correlation canvas), the output size worked out,
and the checks. :meth:`~Problem.detail` takes one cell apart when the page
hovers it: an output's window, products and written-out sum with its im2col
row and convolution-matrix row; an input sample's gradient as a scatter-add and
as a full correlation with the rotated kernel; a weight's gradient as a
correlation of the input with grad_output.

Every number comes from convolab's public API (``conv2d``,
``conv_transpose2d``, ``trace``, ``im2col_matrices``, ``conv_matrix``,
``grad.conv2d_input``/``conv2d_weight``) and is written as text here
(:func:`number`), so the page never computes or rounds anything. Each sum
shown is compared with the library's value, and the result says whether they
agree (``"agrees"``).

Indices are written ``"c,y,x"``: a channel and a position within the grid as
shown (the padded canvas for the forward view's input cells).

>>> p = problem({"input_from": "text", "input": "1 2 3; 4 5 6; 7 8 9", "kernel": "9 8; 7 6", "padding": "0"})
>>> p.view()["output"]["values"]
[[['83', '113'], ['173', '203']]]
>>> p.detail("out", "0,0,0")["equation"]
'1·9 + 2·8 + 4·7 + 5·6 = 83'
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from math import prod
from typing import Any, Iterable, Mapping

import numpy as np

from ... import conv2d, conv_matrix, conv_output_size, conv_transpose2d, grad, im2col_matrices, shapes, trace
from ..._errors import fail
from ...spec import conv_spec
from .canvas import ROLES, Canvas, padded_canvas, read_mask, rotated_swapped, spread_canvas, tap_positions
from .controls import CONTROLS, Config, ControlError, control_for, parse_controls

__all__ = ["number", "problem", "Problem", "MAX_EQUATION_TERMS", "MAX_DENSE_ROW", "SNAPSHOT_MAX_TERMS"]

#: A written-out sum shows at most this many terms, then how many more it adds.
MAX_EQUATION_TERMS = 48

#: A convolution-matrix row is shown whole (zeros too) up to this many columns; beyond, its stored entries only.
MAX_DENSE_ROW = 100

#: An offline snapshot holds the details of every cell: at most this many terms in all.
SNAPSHOT_MAX_TERMS = 65_536

#: How many configurations :func:`problem` keeps computed.
CACHED_PROBLEMS = 16

OP = "explore"


# -- numbers and indices as text ------------------------------------------------------------------


def number(value: Any) -> str:
    """One number as the page shows it: integers exactly, floats to six significant digits.

    >>> number(np.int64(-3)), number(2.5), number(-0.0), number(1 / 3)
    ('-3', '2.5', '0', '0.333333')
    """
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (bool, int)):
        return str(int(value))
    if value == 0:
        return "0"  # no "-0"
    return f"{value:.6g}"


def _numbers(a: np.ndarray) -> list:
    """``a`` as nested lists of :func:`number` strings."""
    return np.array([number(v) for v in a.ravel().tolist()], dtype=object).reshape(a.shape).tolist()


def _label(index: Iterable[int]) -> str:
    return ",".join(str(int(i)) for i in index)


def _factor(text: str) -> str:
    return f"({text})" if text.startswith("-") else text


def _equation(pairs: list[tuple[str, str]], total: str) -> str:
    """``"a·b + c·d + ... = total"``; past :data:`MAX_EQUATION_TERMS` terms, the count of the rest."""
    shown = [f"{_factor(a)}·{_factor(b)}" for a, b in pairs[:MAX_EQUATION_TERMS]]
    if len(pairs) > MAX_EQUATION_TERMS:
        shown.append(f"… ({len(pairs) - MAX_EQUATION_TERMS} more terms)")
    return f"{' + '.join(shown) or '0 (no terms)'} = {total}"


def _same(a: Any, b: Any, terms: int = 1) -> bool:
    """Equal: exactly for integers, to the rounding of a sum of ``terms`` for floats."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        return bool(np.array_equal(a, b))
    tolerance = 8 * max(terms, 1) * np.finfo(np.float64).eps
    return bool(np.allclose(a, b, rtol=tolerance, atol=tolerance * float(np.max(np.abs(a), initial=1)),
                            equal_nan=True))


def _grid(a: np.ndarray) -> dict[str, Any]:
    return {"shape": list(a.shape), "values": _numbers(a)}


def _canvas_json(canvas: Canvas, read: np.ndarray, source_shape: tuple[int, ...]) -> dict[str, Any]:
    """A canvas for the page: values, role names, the source index as ``"c,y,x"`` (None: a zero), read or not."""
    sources = np.full(canvas.sources.shape, None, dtype=object)
    held = canvas.sources >= 0
    sources[held] = [_label(i) for i in zip(*np.unravel_index(canvas.sources[held], source_shape))]
    return {
        "shape": list(canvas.values.shape),
        "values": _numbers(canvas.values),
        "roles": np.array(ROLES, dtype=object)[canvas.roles].tolist(),
        "sources": sources.tolist(),
        "read": np.broadcast_to(read, canvas.values.shape).tolist(),
    }


def _matrix_text(a: np.ndarray) -> str:
    """``(C, H, W)`` in the controls' syntax: rows split by ';', channels by '|'."""
    return " | ".join("; ".join(" ".join(number(v) for v in row) for row in channel) for channel in a.tolist())


# -- the problem ----------------------------------------------------------------------------------


def problem(values: Mapping[str, Any]) -> Problem:
    """The :class:`Problem` the controls describe (missing controls take their defaults), cached.

    Raises
    ------
    ControlError
        As :func:`~convolab.apps.explore.controls.parse_controls`, and for
        arguments the op refuses when it runs.
    """
    texts = {name: values.get(name, default) for name, default in CONTROLS.items()}
    if set(values) <= set(CONTROLS) and all(isinstance(text, str) for text in texts.values()):
        return _cached_problem(tuple(sorted(texts.items())))  # refusals raise, and are not cached
    return Problem(parse_controls(values))  # it refuses them, with the message


@lru_cache(maxsize=CACHED_PROBLEMS)
def _cached_problem(key: tuple[tuple[str, str], ...]) -> Problem:
    return Problem(parse_controls(dict(key)))


class Problem:
    """One configuration's numbers: computed once, handed out as JSON-ready dicts.

    Parameters
    ----------
    config : Config
        A checked configuration (:func:`~convolab.apps.explore.controls.parse_controls`).

    Raises
    ------
    ControlError
        Arguments the op itself refuses when it runs (``conv_transpose2d``'s
        channels, groups and output_padding rules).
    """

    def __init__(self, config: Config):
        self.config = config
        c = config
        try:
            if c.transposed:
                self.output = conv_transpose2d(c.input, c.weight, None, c.stride, c.padding, c.output_padding,
                                               c.groups, c.dilation)
            else:
                self.output = conv2d(c.input, c.weight, **c.conv_params)
        except (ValueError, TypeError) as error:
            raise ControlError(str(error), control_for(str(error), c.texts.get("input_from", "size"))) from None

    # -- geometry, shared by the views

    @cached_property
    def spec(self):
        """The forward convolution's :class:`~convolab.ConvSpec` (of the forward problem a transposed one undoes)."""
        c = self.config
        if c.transposed:
            # conv_transpose2d(x, w) is the input gradient of conv2d(., w) on an input of the output's size.
            return conv_spec(self.output.shape, c.weight.shape, stride=c.stride, padding=c.padding,
                             dilation=c.dilation, groups=c.groups, op="conv_transpose2d", rank=2)
        return conv_spec(c.input.shape, c.weight.shape, op="conv2d", rank=2, **c.conv_params)

    @cached_property
    def canvas(self) -> Canvas:
        """What the kernel slides over: the padded input, or (transposed) the spread and padded input."""
        spec = self.spec
        if not self.config.transposed:
            return padded_canvas(self.config.input, spec.padding, spec.padding_mode)
        reach = [d * (k - 1) for k, d in zip(spec.kernel_size, spec.dilation)]
        extra = [size - shapes.conv_transpose_output_size(i, k, s, p, d)
                 for size, i, k, s, p, d in zip(self.output.shape[1:], self.config.input.shape[1:], spec.kernel_size,
                                                spec.stride, spec.padding, spec.dilation)]
        return spread_canvas(self.config.input, spec.stride, [r - low for r, (low, _) in zip(reach, spec.padding)],
                             [r - high + e for r, (_, high), e in zip(reach, spec.padding, extra)])

    @cached_property
    def canvas_read(self) -> np.ndarray:
        spec, out = self.spec, self.output.shape[1:]
        if self.config.transposed:  # the canvas convolution: stride 1, the op's dilation
            return read_mask(self.canvas.values.shape[1:], out, spec.kernel_size, (1, 1), spec.dilation)
        return read_mask(spec.padded_size, out, spec.kernel_size, spec.stride, spec.dilation)

    @cached_property
    def applied_kernel(self) -> np.ndarray:
        """The kernel as the windows meet it: the forward weight as convolab orients it (reversed when ``flip``).

        Transposed: the rotated, channel-swapped weight of the canvas convolution.
        """
        c = self.config
        if c.transposed:
            return rotated_swapped(c.weight, c.groups)
        m = self.im2col
        spec, taps = self.spec, self.spec.kernel_size
        filters = m.filters.reshape(spec.groups, spec.in_channels_per_group, *taps, -1)  # (G, C, kH, kW, O)
        return np.moveaxis(filters, -1, 1).reshape(spec.out_channels, spec.in_channels_per_group, *taps)

    @cached_property
    def im2col(self):
        c = self.config
        return im2col_matrices(c.input, c.weight, c.stride, c.padding, c.dilation, c.groups,
                               padding_mode=c.padding_mode, flip=c.flip)

    @cached_property
    def matrix(self):
        c = self.config
        return conv_matrix(c.input.shape, c.weight, c.stride, c.padding, c.dilation, c.groups,
                           padding_mode=c.padding_mode, flip=c.flip)

    @cached_property
    def grad_input(self) -> dict[str, np.ndarray]:
        """The input gradient both ways convolab computes it: ``"scatter"`` and ``"full"``."""
        c = self.config
        return {way: grad.conv2d_input(c.input.shape, c.weight, c.grad_output, algorithm=way, **c.conv_params)
                for way in ("scatter", "full")}

    @cached_property
    def grad_weight(self) -> np.ndarray:
        c = self.config
        return grad.conv2d_weight(c.input, c.weight.shape, c.grad_output, **c.conv_params)

    @cached_property
    def full_canvas(self) -> Canvas:
        """grad_output spread by the stride and padded by the kernel's reach (plus what no window read).

        Its correlation with the rotated kernel (:attr:`rotated`) at dilation
        ``dilation`` is the gradient over the whole padded input.
        """
        spec = self.spec
        reach = [d * (k - 1) for k, d in zip(spec.kernel_size, spec.dilation)]
        last_read = [(o - 1) * s + r + 1 for o, s, r in zip(spec.output_size, spec.stride, reach)]
        unread = [p - last for p, last in zip(spec.padded_size, last_read)]
        return spread_canvas(self.config.grad_output, spec.stride, reach, [r + u for r, u in zip(reach, unread)])

    @cached_property
    def rotated(self) -> np.ndarray:
        """The applied kernel rotated 180 degrees, channels swapped: ``(C_in, C_out/groups, kH, kW)``."""
        return rotated_swapped(self.applied_kernel, self.spec.groups)

    # -- the views

    def view(self) -> dict[str, Any]:
        """What the page draws for this configuration (the transposed view, or the forward and backward ones)."""
        c, spec = self.config, self.spec
        canvas_out = conv2d(self.canvas.values, self.applied_kernel, dilation=spec.dilation,
                            groups=spec.groups) if c.transposed else None
        shown = {
            "op": c.op,
            "transposed": c.transposed,
            "texts": dict(c.texts, input=c.texts["input"] if c.texts["input_from"] == "text" else
                          _matrix_text(c.input)),
            "describe": self._describe(),
            "input": _grid(c.input),
            "canvas": _canvas_json(self.canvas, self.canvas_read, c.input.shape),
            "kernel": {**_grid(c.weight), "applied": _numbers(self.applied_kernel),
                       "applied_shape": list(self.applied_kernel.shape), "orientation": self._orientation()},
            "output": _grid(self.output),
            "sizes": self._sizes(),
            "unread": self._unread(),
        }
        if c.transposed:
            shown["checks"] = [{"text": "conv2d of the spread, padded input with the rotated kernel == "
                                        "conv_transpose2d", "holds": _same(canvas_out, self.output,
                                                                          c.weight[0].size * c.groups)}]
            return shown
        m = self.im2col
        shown["im2col"] = {"unrolled_shape": list(m.unrolled.shape), "filters_shape": list(m.filters.shape),
                           "columns": [_label(label) for label in m.column_labels]}
        shown["conv_matrix"] = {"shape": list(self.matrix.shape), "stored": int(self.matrix.nnz)}
        shown["backward"] = self._backward()
        return shown

    def _describe(self) -> str:
        c, spec = self.config, self.spec
        if c.transposed:
            extra = f", output_padding {tuple(s - o for s, o in zip(self.output.shape[1:], self._smallest()))}"
            return (f"conv_transpose2d: input {c.input.shape}, weight {c.weight.shape}, stride {spec.stride}, "
                    f"padding {spec.padding}, dilation {spec.dilation}, groups {spec.groups}{extra} "
                    f"-> output {self.output.shape}")
        flip = ", flip (true convolution)" if spec.flip else ""
        mode = f" ({spec.padding_mode})" if spec.padding_mode != "zeros" else ""
        return (f"conv2d: input {c.input.shape}, weight {c.weight.shape}, stride {spec.stride}, padding "
                f"{spec.padding}{mode}, dilation {spec.dilation}, groups {spec.groups}{flip} -> output "
                f"{self.output.shape}")

    def _smallest(self) -> tuple[int, ...]:
        spec = self.spec
        return tuple(shapes.conv_transpose_output_size(i, k, s, p, d) for i, k, s, p, d in
                     zip(self.config.input.shape[1:], spec.kernel_size, spec.stride, spec.padding, spec.dilation))

    def _orientation(self) -> str:
        if self.config.transposed:
            return ("the weight rotated 180° with its two channel axes swapped: a transposed convolution is a "
                    "convolution of the spread, padded input with the rotated kernel")
        if self.config.flip:
            return "reversed on both axes (flip on: the textbook's true convolution, like scipy.signal.convolve)"
        return "as stored (flip off: cross-correlation, PyTorch's convolution)"

    def _sizes(self) -> list[str]:
        """The output size worked out, one line per axis, each checked against convolab's shape arithmetic."""
        c, spec = self.config, self.spec
        lines = []
        if isinstance(c.padding, str):
            lines.append(f"padding {c.padding!r} = {spec.padding}")
        for axis, name in enumerate(("height", "width")):
            k, s, d, (low, high) = spec.kernel_size[axis], spec.stride[axis], spec.dilation[axis], spec.padding[axis]
            out = self.output.shape[axis + 1]
            if c.transposed:
                size = c.input.shape[axis + 1]
                extra = out - self._smallest()[axis]
                worked = shapes.conv_transpose_output_size(size, k, s, (low, high), d, extra)
                lines.append(f"{name}: ({size} - 1)·{s} - {low} - {high} + {d}·({k} - 1) + {extra} + 1 = "
                             f"{worked}")
            else:
                size = spec.input_size[axis]
                worked = conv_output_size(size, k, s, (low, high), d)
                lines.append(f"{name}: ⌊({size} + {low} + {high} - {d}·({k} - 1) - 1) / {s}⌋ + 1 = {worked}")
            if worked != out:  # convolab's shape arithmetic and its op disagree: a bug to show, not hide
                lines[-1] += f" (but the op returned {out})"
        return lines

    def _unread(self) -> str:
        """Which input samples no window reads (their gradient is zero)."""
        canvas = self.canvas
        read = np.broadcast_to(self.canvas_read, canvas.sources.shape) & (canvas.sources >= 0)
        never = self.config.input.size - np.unique(canvas.sources[read]).size
        if never == 0:
            return "every input sample is read by some window"
        return (f"{never} of {self.config.input.size} input samples are never read (marked ×): no window reaches "
                "them, so they do not affect the output and their gradient is 0")

    def _backward(self) -> dict[str, Any]:
        c = self.config
        ways = self.grad_input
        terms = self.spec.out_channels_per_group * prod(self.spec.kernel_size)
        holds = _same(ways["scatter"], ways["full"], terms)
        full = self.full_canvas
        full_read = read_mask(full.values.shape[1:], self.spec.padded_size, self.spec.kernel_size, (1, 1),
                              self.spec.dilation)
        return {
            "grad_output": _grid(c.grad_output),
            "grad_output_default": not c.texts["grad_output"].strip(),
            "grad_input": _grid(ways["scatter"]),
            "grad_weight": _grid(self.grad_weight),
            "full_canvas": _canvas_json(full, full_read, c.grad_output.shape),
            "rotated": _grid(self.rotated),
            "checks": [{"text": "input gradient: scatter-add == full correlation with the rotated kernel, on every "
                                "input sample", "holds": holds}],
        }

    # -- one cell taken apart

    def detail(self, kind: str, at: str) -> dict[str, Any]:
        """One cell taken apart: ``kind`` ``"out"`` (an output), ``"in"`` (an input sample's gradient) or
        ``"weight"`` (a weight's gradient); ``at`` its index, ``"c,y,x"`` (``"o,c,i,j"`` for a weight).

        Raises
        ------
        ValueError
            An unknown kind, or an index that is not ints in range (the message gives the ranges).
        """
        kinds = ("out",) if self.config.transposed else ("out", "in", "weight")
        if kind not in kinds:
            fail(ValueError, OP, "kind", repr(kind), f"must be one of {', '.join(map(repr, kinds))}"
                 + (" (a transposed configuration shows outputs only)" if self.config.transposed else ""))
        shape = {"out": self.output.shape, "in": self.config.input.shape, "weight": self.config.weight.shape}[kind]
        index = _index(at, shape)
        return {"out": self._detail_out, "in": self._detail_in, "weight": self._detail_weight}[kind](index)

    def _detail_out(self, at: tuple[int, ...]) -> dict[str, Any]:
        c, spec = self.config, self.spec
        o, y, x = at
        value = self.output[at]
        if c.transposed:  # the canvas convolution: stride 1
            t = trace(self.canvas.values, self.applied_kernel, at=at, dilation=spec.dilation, groups=spec.groups)
            stride = (1, 1)
        else:
            t = trace(c.input, c.weight, at=at, **c.conv_params)
            stride = spec.stride
        cells, terms = [], []
        for cell in np.ndindex(*t.window.shape):
            channel, i, j = t.input_channels[cell[0]], cell[1], cell[2]
            place = (channel, y * stride[0] + i * spec.dilation[0], x * stride[1] + j * spec.dilation[1])
            cells.append(_label(place))
            terms.append({"cell": cells[-1], "role": ROLES[self.canvas.roles[place]],
                          "value": number(t.window[cell]), "weight": number(t.kernel[cell]),
                          "tap": _label((o, *cell)), "product": number(t.product[cell])})
        shown = {"kind": "out", "at": _label(at), "value": number(value), "window": cells, "terms": terms,
                 "equation": _equation([(term["value"], term["weight"]) for term in terms], number(value)),
                 "agrees": _same(t.result, value, len(terms))}
        if not c.transposed:
            shown["im2col"] = self._im2col_row(at, value)
            shown["conv_matrix"] = self._matrix_row(at, value)
        return shown

    def _im2col_row(self, at: tuple[int, ...], value: Any) -> dict[str, Any]:
        spec, m = self.spec, self.im2col
        o, y, x = at
        group, row = o // spec.out_channels_per_group, y * spec.output_size[1] + x
        unrolled = m.unrolled.reshape(spec.groups, *m.unrolled.shape[-2:])[group]  # (P, C*K)
        filters = m.filters.reshape(spec.groups, *m.filters.shape[-2:])[group]  # (C*K, O)
        row_values, column = unrolled[row], filters[:, o % spec.out_channels_per_group]
        first = group * spec.in_channels_per_group
        return {"group": group, "row": row, "column": o % spec.out_channels_per_group,
                "labels": [_label((first + lab[0], *lab[1:])) for lab in m.column_labels],
                "row_values": _numbers(row_values), "column_values": _numbers(column),
                "dot": number(row_values @ column), "agrees": _same(row_values @ column, value, len(column))}

    def _matrix_row(self, at: tuple[int, ...], value: Any) -> dict[str, Any]:
        c = self.config
        row = int(np.ravel_multi_index(at, self.output.shape))
        entries = self.matrix.getrow(row)
        x = c.input.ravel()
        dense = x.size <= MAX_DENSE_ROW
        columns = np.arange(x.size) if dense else entries.indices
        shown = entries.toarray()[0] if dense else entries.data
        total = shown @ x[columns]
        return {"row": row, "dense": dense, "shape": list(self.matrix.shape),
                "columns": [_label(np.unravel_index(i, c.input.shape)) for i in columns],
                "stored": np.isin(columns, entries.indices).tolist(),
                "values": _numbers(shown), "input": _numbers(x[columns]), "dot": number(total),
                "agrees": _same(total, value, len(columns))}

    def _detail_in(self, at: tuple[int, ...]) -> dict[str, Any]:
        """An input sample's gradient: every output that read it (scatter-add) and the full correlation."""
        c, spec, canvas = self.config, self.spec, self.canvas
        channel = at[0]
        flat = int(np.ravel_multi_index(at, c.input.shape))
        out_per_group = spec.out_channels_per_group
        group = channel // spec.in_channels_per_group
        local = channel - group * spec.in_channels_per_group
        # Scatter: output p's tap (i, j) reads canvas cell p*stride + (i, j)*dilation; keep those holding `at`.
        rows, cols = (tap_positions(*sizes) for sizes in zip(spec.output_size, spec.kernel_size, spec.stride,
                                                                spec.dilation))
        reads = canvas.sources[channel][rows[:, None, :, None], cols[None, :, None, :]]  # (Ho, Wo, kH, kW)
        scatter, products = [], []
        for oy, ox, i, j in np.argwhere(reads == flat):
            for o in range(group * out_per_group, (group + 1) * out_per_group):
                g, w = c.grad_output[o, oy, ox], self.applied_kernel[o, local, i, j]
                products.append(g * w)
                scatter.append({"out": _label((o, oy, ox)), "grad": number(g), "weight": number(w),
                                "tap": _label((o, local, i, j)), "product": number(products[-1])})
        value = self.grad_input["scatter"][at]
        scatter_sum = np.sum(products, dtype=c.input.dtype) if products else c.input.dtype.type(0)
        # Full correlation: each padded cell holding the sample (one, with zero padding) is a window of the
        # spread, padded grad_output times the rotated kernel.
        full_terms, full_cells, full_sum = [], [], c.input.dtype.type(0)
        for place in np.argwhere(canvas.sources == flat):
            t = trace(self.full_canvas.values, self.rotated, at=tuple(place), dilation=spec.dilation,
                      groups=spec.groups)
            full_sum = full_sum + t.result
            for cell in np.ndindex(*t.window.shape):
                o = t.input_channels[cell[0]]
                spot = (o, place[1] + cell[1] * spec.dilation[0], place[2] + cell[2] * spec.dilation[1])
                full_cells.append(_label(spot))
                full_terms.append({"cell": full_cells[-1], "role": ROLES[self.full_canvas.roles[spot]],
                                   "grad": number(t.window[cell]), "weight": number(t.kernel[cell]),
                                   "tap": _label((channel, *cell)), "product": number(t.product[cell])})
        full_value = self.grad_input["full"][at]
        return {
            "kind": "in", "at": _label(at), "value": number(value),
            "readers": sorted({term["out"] for term in scatter}),
            "copies": [_label(place) for place in np.argwhere(canvas.sources == flat)],
            "scatter": {"terms": scatter, "sum": number(scatter_sum),
                        "equation": _equation([(t["grad"], t["weight"]) for t in scatter], number(value)),
                        "agrees": _same(scatter_sum, value, len(scatter))},
            "full": {"window": full_cells, "terms": full_terms, "sum": number(full_sum),
                     "equation": _equation([(t["grad"], t["weight"]) for t in full_terms], number(full_value)),
                     "agrees": _same(full_sum, full_value, len(full_terms))},
            "agrees": _same(value, full_value, len(full_terms)),
        }

    def _detail_weight(self, at: tuple[int, ...]) -> dict[str, Any]:
        """A weight's gradient: the padded input from the tap's offset in steps of the stride, times grad_output."""
        c, spec = self.config, self.spec
        o, local, i, j = at
        channel = o // spec.out_channels_per_group * spec.in_channels_per_group + local
        kh, kw = spec.kernel_size
        tap = (kh - 1 - i, kw - 1 - j) if spec.flip else (i, j)  # where the stored weight meets the windows
        # d loss / d w[o, c, tap] = sum over outputs p of x_padded[c, p*stride + tap*dilation] * grad_output[o, p]:
        # a convolution of the input with grad_output as the kernel, stride and dilation exchanged.
        t = trace(c.input[channel:channel + 1], c.grad_output[o][None, None], at=(0, *tap), stride=spec.dilation,
                  dilation=spec.stride, padding=spec.padding, padding_mode=spec.padding_mode)
        cells, terms = [], []
        for _, oy, ox in np.ndindex(*t.window.shape):
            place = (channel, tap[0] * spec.dilation[0] + oy * spec.stride[0],
                     tap[1] * spec.dilation[1] + ox * spec.stride[1])
            cells.append(_label(place))
            terms.append({"cell": cells[-1], "out": _label((o, oy, ox)), "x": number(t.window[0, oy, ox]),
                          "grad": number(t.kernel[0, oy, ox]), "product": number(t.product[0, oy, ox])})
        value = self.grad_weight[at]
        return {"kind": "weight", "at": _label(at), "applied_tap": _label((o, local, *tap)), "value": number(value),
                "window": cells, "terms": terms,
                "equation": _equation([(term["x"], term["grad"]) for term in terms], number(value)),
                "agrees": _same(t.result, value, len(terms))}

    # -- the offline snapshot

    def all_details(self) -> dict[str, dict[str, Any]]:
        """Every cell's details, keyed ``"kind:index"``, for a snapshot that works without the server.

        Raises
        ------
        ValueError
            More than :data:`SNAPSHOT_MAX_TERMS` terms in all.
        """
        c, spec = self.config, self.spec
        cells = [("out", self.output.shape)]
        if not c.transposed:
            cells += [("in", c.input.shape), ("weight", c.weight.shape)]
        # Terms written: an output's window, an input's scatter and full sums, a weight's correlation.
        window = prod(self.applied_kernel.shape[1:])
        full = 0 if c.transposed else c.input.size * (spec.out_channels_per_group * prod(spec.kernel_size)) * 2
        terms = self.output.size * window + full + (0 if c.transposed else c.weight.size * prod(spec.output_size))
        if terms > SNAPSHOT_MAX_TERMS:
            fail(ValueError, OP, "output", f"{terms:,} terms in the details of every cell",
                 f"must need at most {SNAPSHOT_MAX_TERMS:,} for an offline snapshot (give a smaller input or "
                 "kernel; the server, convolab explore without --output, has no such limit)")
        return {f"{kind}:{_label(index)}": self.detail(kind, _label(index))
                for kind, shape in cells for index in np.ndindex(*shape)}


def _index(text: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``"c,y,x"`` as a tuple of ints, each in range of ``shape``."""
    rule = f"must be {len(shape)} comma-separated ints indexing shape {tuple(shape)}"
    words = text.split(",") if isinstance(text, str) else []
    if len(words) != len(shape) or not all(w.strip().isdigit() and len(w.strip()) < 10 for w in words):
        fail(ValueError, OP, "at", repr(text), rule)
    index = tuple(int(w) for w in words)
    if not all(0 <= i < n for i, n in zip(index, shape)):
        fail(ValueError, OP, "at", repr(text), rule + " (each within its range)")
    return index

