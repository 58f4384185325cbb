"""The explorer's controls: text in, a checked :class:`Config` out.

Every control arrives as text (a query parameter, or a ``convolab explore``
flag). Numbers use ``convolab explain``'s syntax, read by the CLI's own parsers
(:func:`convolab.cli.parse_matrix`, :func:`~convolab.cli.parse_ints`,
:func:`~convolab.cli.parse_padding`): rows split by ``;``, channels by ``|``;
the kernel holds one filter per line. Then convolab's own checks run
(:func:`convolab.spec.conv_spec`, the ops), and the CLI's size caps
(:data:`convolab.show.explain.MAX_CELLS` and its neighbours) are applied before
anything is computed, so that one request takes milliseconds.

A control that cannot be used raises :class:`ControlError`, a ``ValueError``
whose message is convolab's one line (``"<op>: <parameter> <rule>, got
<value>"``) and whose ``control`` names the control to show it next to.

>>> config = parse_controls({"size": "4,4", "stride": "2"})
>>> config.input.shape, config.weight.shape, config.output_shape
((1, 4, 4), (1, 1, 3, 3), (1, 2, 2))
>>> parse_controls({"stride": "0"})
Traceback (most recent call last):
...
convolab.apps.explore.controls.ControlError: conv2d: stride must be >= 1 in every dimension, got 0
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import prod
from typing import Any, Mapping, NamedTuple

import numpy as np

from ... import shapes
from ..._errors import fail
from ...cli import UsageError, parse_ints, parse_matrix, parse_padding
from ...show.explain import MAX_CANVAS_CELLS, MAX_CELLS, MAX_PRODUCTS
from ...spec import conv_spec, normalize_ints, normalize_padding

__all__ = ["CONTROLS", "MAX_TEXT_CHARS", "ControlError", "Config", "parse_controls", "control_for"]

#: Every control and its default text. ``input_from`` says where the input comes from: ``"size"`` (the
#: numbers 1, 2, 3, ... in ``channels`` x ``size``) or ``"text"`` (``input``, written out).
CONTROLS: dict[str, str] = {
    "input_from": "size",
    "size": "5,5",
    "channels": "1",
    "input": "",
    "kernel": "1 0 2; 0 1 0; -1 0 1",
    "stride": "1",
    "padding": "1",
    "dilation": "1",
    "groups": "1",
    "padding_mode": "zeros",
    "flip": "0",
    "transposed": "0",
    "output_padding": "0",
    "grad_output": "",
}

#: A control's text may be at most this long: room for MAX_CELLS numbers of a dozen characters each.
MAX_TEXT_CHARS = 12 * MAX_CELLS

#: The op whose checks a configuration goes through; it names itself in every message.
OP = "explore"

#: A library message names the parameter ("conv2d: stride must ..."); this is the control that set it.
_CONTROL_FOR = {"input": "input", "input_shape": "input", "weight": "kernel", "weight_shape": "kernel",
                "stride": "stride", "padding": "padding", "dilation": "dilation", "groups": "groups",
                "padding_mode": "padding_mode", "flip": "flip", "output_padding": "output_padding",
                "grad_output": "grad_output", **{name: name for name in CONTROLS}}

_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no", "")


class ControlError(ValueError):
    """A control's value cannot be used: convolab's one-line message, and the control to show it next to.

    ``control`` is None when no single control set the value (say, an output too
    large for the stride and padding together: the message names them).
    """

    def __init__(self, message: str, control: str | None):
        super().__init__(message)
        self.control = control


def control_for(message: str, input_from: str = "size") -> str | None:
    """The control a convolab message is about, from the parameter it names first; None if none.

    >>> control_for("conv2d: stride must be >= 1 in every dimension, got 0")
    'stride'
    >>> control_for("conv2d: weight must fit inside the padded input, got ...")
    'kernel'
    """
    match = re.match(r"^[\w.]+: (\w+) ", message)
    control = _CONTROL_FOR.get(match.group(1)) if match else None
    if control == "input" and input_from == "size":
        return "size"  # the numbers were generated: their shape is what the learner set
    return control


@dataclass(frozen=True, eq=False)
class Config:
    """One checked configuration: the arrays, the parameters as convolab takes them, and the controls' text.

    ``input`` is ``(C_in, H, W)``; ``weight`` is ``(C_out, C_in/groups, kH, kW)``
    for a convolution, ``(C_in, C_out/groups, kH, kW)`` when ``transposed``;
    ``grad_output`` has the output's shape (ones unless given). The three share
    one dtype: int64 when every number is an integer (exact sums), else float64.
    """

    input: np.ndarray
    weight: np.ndarray
    grad_output: np.ndarray
    stride: Any
    padding: Any
    dilation: Any
    groups: int
    padding_mode: str
    flip: bool
    transposed: bool
    output_padding: Any
    output_shape: tuple[int, ...]
    texts: dict[str, str] = field(default_factory=dict)

    @property
    def op(self) -> str:
        """The op the configuration is: ``"conv2d"`` or ``"conv_transpose2d"``."""
        return "conv_transpose2d" if self.transposed else "conv2d"

    @property
    def conv_params(self) -> dict[str, Any]:
        """The keyword arguments of :func:`convolab.conv2d` (not for a transposed configuration)."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    padding_mode=self.padding_mode, flip=self.flip)

    def key(self) -> tuple[tuple[str, str], ...]:
        """The controls' text, sorted: equal keys are equal configurations."""
        return tuple(sorted(self.texts.items()))


def _text(values: Mapping[str, Any], name: str) -> str:
    text = values.get(name, CONTROLS[name])
    if not isinstance(text, str):
        fail(TypeError, OP, name, repr(text), "must be text")
    if len(text) > MAX_TEXT_CHARS:
        fail(ValueError, OP, name, f"{len(text):,} characters", f"must be at most {MAX_TEXT_CHARS:,} characters")
    return text


def _flag(text: str, name: str) -> bool:
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
        fail(ValueError, OP, name, repr(text), "must be on or off (1 or 0)")
    return word in _TRUE


def _one_int(text: str, name: str) -> int:
    value = parse_ints(text, name)
    if not isinstance(value, int):
        fail(TypeError, OP, name, repr(text), "must be one int")
    return value


def _within(name: str, cells: int, most: int, got: str, advice: str) -> None:
    if cells > most:
        fail(ValueError, OP, name, f"{got} = {cells:,} cells",
             f"must make at most {most:,} cells for the explorer to show every number ({advice}; as in "
             "convolab explain, the library itself has no such limit)")


def _input(values: Mapping[str, Any], input_from: str) -> np.ndarray:
    """The input, ``(C, H, W)``: written out, or the numbers 1, 2, 3, ... of the given size and channels."""
    if input_from == "text":
        text = _text(values, "input")
        if not text.strip():
            fail(ValueError, OP, "input", "''", "must hold the numbers, rows split by ';' and channels by '|'")
        image = parse_matrix(text, "input")
        _within("input", image.size, MAX_CELLS, f"shape {image.shape}", "give a smaller input")
        return image
    size = parse_ints(_text(values, "size"), "size")
    size = normalize_ints(size, 2, "size", OP)
    channels = _one_int(_text(values, "channels"), "channels")
    if channels < 1:
        fail(ValueError, OP, "channels", str(channels), "must be >= 1")
    shape = (channels, *size)
    _within("size", prod(shape), MAX_CELLS, f"{channels} channel{'s' if channels > 1 else ''} of {size}",
            "give a smaller size or fewer channels")
    return np.arange(1, prod(shape) + 1, dtype=np.int64).reshape(shape)


def _weight(text: str) -> np.ndarray:
    """One filter per non-empty line, stacked: ``(filters, channels, kH, kW)``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        fail(ValueError, OP, "kernel", "''", "must hold at least one filter, rows split by ';', one filter per line")
    filters = [parse_matrix(line, "kernel") for line in lines]
    if len({f.shape for f in filters}) != 1:
        fail(ValueError, OP, "kernel", f"filters of shapes {[f.shape for f in filters]}",
             "must give every filter (one per line) the same shape")
    weight = np.stack(filters)
    _within("kernel", weight.size, MAX_CELLS, f"shape {weight.shape}", "give fewer or smaller filters")
    return weight


class _Sizes(NamedTuple):
    output_shape: tuple[int, ...]
    canvas_cells: int  # what the kernel slides over: the padded (transposed: spread and padded) input
    products: int  # multiply-adds
    copies: int  # the most padding cells one input sample can appear in, plus itself


def _sizes_conv(x: np.ndarray, w: np.ndarray, params: dict[str, Any]) -> _Sizes:
    """Checked by conv2d's own rules: the output shape, the padded input's cells, the multiply-adds."""
    spec = conv_spec(x.shape, w.shape, op="conv2d", rank=2, **params)
    # A reflected, replicated or wrapped border repeats samples; at most once per padding cell (a bound).
    copies = 1 if spec.padding_mode == "zeros" else prod(1 + low + high for low, high in spec.padding)
    return _Sizes(spec.caller_output_shape, x.shape[0] * prod(spec.padded_size), spec.flops // 2, copies)


def _sizes_transposed(x: np.ndarray, w: np.ndarray, params: dict[str, Any]) -> _Sizes:
    """The output shape, the spread and padded input's cells and the multiply-adds, from the arguments' forms.

    The op checks the rest (channels, groups, output_padding against stride)
    when it runs; these are sizes only, so that nothing large is allocated first.
    """
    op = "conv_transpose2d"
    if w.ndim != 4:
        fail(ValueError, op, "weight", f"shape {w.shape}", "must have 4 dimensions (C_in, C_out/groups, kH, kW)")
    stride = normalize_ints(params["stride"], 2, "stride", op)
    dilation = normalize_ints(params["dilation"], 2, "dilation", op)
    extra = normalize_ints(params["output_padding"], 2, "output_padding", op, minimum=0)
    padding = normalize_padding(params["padding"], 2, op)
    if isinstance(padding, str):
        fail(ValueError, op, "padding", repr(padding), "must be ints or (low, high) pairs for a transposed convolution")
    out = tuple(shapes.conv_transpose_output_size(i, k, s, p, d, e)
                for i, k, s, p, d, e in zip(x.shape[1:], w.shape[2:], stride, padding, dilation, extra))
    canvas = tuple(o + shapes.dilated_kernel_size(k, d) - 1 for o, k, d in zip(out, w.shape[2:], dilation))
    groups = max(params["groups"], 1)  # groups < 1 is refused by the op, with its message
    out_channels = w.shape[1] * groups
    return _Sizes((out_channels, *out), x.shape[0] * prod(max(c, 0) for c in canvas), x.size * w[0].size, 1)


def _check_int_sums(x: np.ndarray, w: np.ndarray, g: np.ndarray, terms: int) -> None:
    """Integers only: no sum the views compute (output, both gradients) may wrap around int64."""
    if x.dtype.kind not in "iu":
        return
    largest = {name: int(np.max(np.abs(a), initial=0)) for name, a in (("input", x), ("kernel", w),
                                                                        ("grad_output", g))}
    first, second = sorted(largest.values())[-2:]
    most = int(np.iinfo(np.int64).max) // 4
    if first * second * terms > most:
        name = max(largest, key=largest.get)
        fail(ValueError, OP, name, f"values up to {largest[name]} (a bound of {first} x {second} x {terms} terms)",
             f"must keep every sum within int64, at most {most} (scale the values down, or write one with a "
             "decimal point to use float64)")


def parse_controls(values: Mapping[str, Any]) -> Config:
    """Check the controls' text (missing ones take :data:`CONTROLS`' defaults) and build the configuration.

    Parameters
    ----------
    values : mapping of str to str
        Control name to its text.

    Returns
    -------
    Config

    Raises
    ------
    ControlError
        An unknown control, text that does not parse, an argument convolab
        refuses, or a problem past the size caps; the message is convolab's
        one line, and ``control`` names the control.
    """
    input_from = values.get("input_from", "size") if isinstance(values.get("input_from"), str) else "size"
    try:
        return _parse(values)
    except UsageError as error:
        # The CLI parsers' messages start with the name they were given (parse_padding always says "--padding"):
        # that is the control.
        head, rest = str(error).split(":", 1)
        control = head.lstrip("-").replace("-", "_")
        raise ControlError(control + ":" + rest, control) from None
    except (ValueError, TypeError) as error:
        raise ControlError(str(error), control_for(str(error), input_from)) from None


def _parse(values: Mapping[str, Any]) -> Config:
    unknown = sorted(set(values) - set(CONTROLS))
    if unknown:
        fail(ValueError, OP, "control", repr(unknown[0]), f"must be one of {', '.join(CONTROLS)}")
    input_from = _text(values, "input_from")
    if input_from not in ("size", "text"):
        fail(ValueError, OP, "input_from", repr(input_from), "must be 'size' or 'text'")
    transposed = _flag(_text(values, "transposed"), "transposed")
    flip = _flag(_text(values, "flip"), "flip")
    x = _input(values, input_from)
    w = _weight(_text(values, "kernel"))
    padding_text = _text(values, "padding").strip()
    params = dict(stride=parse_ints(_text(values, "stride"), "stride"),
                  padding=parse_padding(padding_text) if padding_text else 0,
                  dilation=parse_ints(_text(values, "dilation"), "dilation"),
                  groups=_one_int(_text(values, "groups"), "groups"))
    output_padding = parse_ints(_text(values, "output_padding"), "output_padding")
    padding_mode = _text(values, "padding_mode").strip()
    if transposed:
        # conv_transpose2d pads its output with zeros and applies the weight as the forward convolution
        # stored it; a padding mode or a flip would be silently ignored, so say so instead.
        if padding_mode not in ("zeros", "constant"):
            fail(ValueError, OP, "padding_mode", repr(padding_mode),
                 "must be 'zeros' for a transposed convolution (conv_transpose2d pads with zeros only)")
        if flip:
            fail(ValueError, OP, "flip", "on", "must be off for a transposed convolution (conv_transpose2d has "
                 "no flip: it is already the forward convolution's transpose)")
        sizes = _sizes_transposed(x, w, dict(params, output_padding=output_padding))
    else:
        if output_padding != 0:
            fail(ValueError, OP, "output_padding", repr(output_padding),
                 "applies only to a transposed convolution; turn transposed on or set it to 0")
        params.update(padding_mode=padding_mode, flip=flip)
        sizes = _sizes_conv(x, w, params)
    out_shape = sizes.output_shape
    _within("output", prod(out_shape), MAX_CELLS, f"shape {out_shape}",
            "give a smaller input, fewer filters, less padding or a larger stride")
    _within("padding", sizes.canvas_cells, MAX_CANVAS_CELLS, "the canvas the kernel slides over",
            "give less padding, stride or dilation")
    if sizes.products > MAX_PRODUCTS:
        fail(ValueError, OP, "kernel", f"{sizes.products:,} multiply-adds",
             f"must need at most {MAX_PRODUCTS:,} multiply-adds for the explorer to show them (give fewer or "
             "smaller filters, or a smaller input)")
    g_text = _text(values, "grad_output")
    given = parse_matrix(g_text, "grad_output") if g_text.strip() else None
    if given is not None and given.shape != tuple(out_shape):
        fail(ValueError, OP, "grad_output", f"shape {given.shape}",
             f"must have the output's shape {tuple(out_shape)} (one matrix per output channel, split by '|')")
    dtype = np.result_type(x, w, *([given] if given is not None else []))
    x, w = x.astype(dtype, copy=False), w.astype(dtype, copy=False)
    g = np.ones(out_shape, dtype=dtype) if given is None else given.astype(dtype, copy=False)
    # The longest sum: an output's (C_in x taps), an input sample's gradient (C_out x taps, per copy), a weight's
    # gradient (output positions, per copy). Channel counts in full: a bound, not the exact count.
    terms = max(w[0].size * x.shape[0], w.shape[0] * prod(w.shape[2:]), prod(out_shape[1:])) * sizes.copies
    _check_int_sums(x, w, g, terms)
    texts = {name: _text(values, name) for name in CONTROLS}
    return Config(input=x, weight=w, grad_output=g, stride=params["stride"], padding=params["padding"],
                  dilation=params["dilation"], groups=params["groups"], padding_mode=padding_mode, flip=flip,
                  transposed=transposed, output_padding=output_padding, output_shape=tuple(out_shape), texts=texts)

