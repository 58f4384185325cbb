"""Explanations as data: a list of steps with their numbers, rendered separately.

:func:`explain` answers the questions learners ask about convolution, on the
standard examples or on any case given to it, as an :class:`Explanation`: the
cases it used and a list of :class:`Step`. Each step carries

- the numbers it shows (``data``, arrays by name),
- the formula behind them,
- a body that says how to lay them out (paragraphs and :class:`Show` items
  naming arrays in ``data``),
- a check that was actually run: ``passed`` is computed, never assumed.

Nothing here draws or prints. The renderers below turn the same steps into
plain text, Markdown, JSON or (when a terminal asks for it) rich text, and
:mod:`convolab.pictures` turns them into GIFs and PNGs; the tests read the same
steps. So what is shown is what was computed and checked.

The topics (:data:`TOPICS`):

- ``dot``: one output element is a Hadamard product and a sum, which is the
  dot product of the two arrays laid flat (also for a 3-D, multi-channel window);
- ``im2col``: the whole convolution is one matrix product (the unrolled input
  times the filter matrix), or, the other way round, one sparse matrix times
  the flattened input;
- ``backprop``: the input gradient three ways (scatter-add, full correlation
  with the filter rotated 180°, ``conv_transpose``), and what goes wrong without
  the rotation;
- ``flip``: deep learning's "convolution" is cross-correlation; the textbook's
  and SciPy's reverses the kernel;
- ``shape``: the output-size arithmetic, and which input rows and columns no
  window ever reads;
- ``slide``: the kernel sliding over the padded input, one output element per
  step (the frames of ``convolab animate``), also for transposed convolution.

Examples
--------
>>> explanation = explain(topics=["dot"])
>>> [step.passed for step in explanation.steps]
[True, True]
>>> int(explanation.steps[0].data["dot"])
83
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from math import prod
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.signal
import scipy.sparse

from . import shapes
from ._dtypes import _largest_magnitude, result_dtype
from ._errors import fail
from ._window import pad, reverse_spatial
from .functional import check_array, conv
from .grad import conv_input
from .identities import (
    scipy_mode,
    check_direct_equals_im2col,
    check_flip,
    check_input_gradient,
    conv_matrix,
    im2col_matrices,
    trace,
)
from .spec import PaddingArg, conv_spec, normalize_ints, normalize_padding
from .transposed import _plan as _transpose_plan
from .transposed import conv_transpose

__all__ = [
    "TOPICS",
    "DEFAULT_TOPICS",
    "MAX_CELLS",
    "MAX_CANVAS_CELLS",
    "MAX_PRODUCTS",
    "MAX_SLIDE_STEPS",
    "MAX_DENSE_MATRIX_CELLS",
    "ROLE_NAMES",
    "Case",
    "Show",
    "Step",
    "Explanation",
    "standard_cases",
    "explain",
    "worked_examples",
    "slide_steps",
    "render_text",
    "render_markdown",
    "render_json",
    "render_rich",
]

#: Every topic and the question it answers, in the order they are walked through.
TOPICS: dict[str, str] = {
    "dot": "Is one step of a convolution a dot product, or a Hadamard product and a sum?",
    "im2col": "How is a whole convolution one matrix product?",
    "backprop": "Does backpropagation need the filter rotated by 180 degrees?",
    "flip": "Why does PyTorch's 'convolution' differ from the textbook's and SciPy's?",
    "shape": "How big is the output, and which input rows and columns are never read?",
    "slide": "The kernel sliding over the input, one output element at a time",
}

#: What ``convolab explain`` walks through when no topic is named: the four questions and the output size.
DEFAULT_TOPICS = ("dot", "im2col", "backprop", "flip", "shape")

#: Cell roles on the canvas the kernel slides over (``slide`` steps): codes 0..4.
ROLE_NAMES = ("input", "padding", "inserted zero", "never read")
INPUT, PADDING, INSERTED, UNREAD = range(4)

#: Products written out term by term up to this many; beyond, only their count and sum.
MAX_TERMS = 12

#: The largest case walked through step by step (and drawn or animated): at most this many cells in each of
#: the input, the weight and the output. The steps show every number, and some of their arrays grow with the
#: product of two of these sizes.
MAX_CELLS = 4096

#: The padded input (or, transposed, the spread and padded input) the kernel slides over: at most this many cells.
MAX_CANVAS_CELLS = 4 * MAX_CELLS

#: ... and at most this many multiply-adds (the taps of the convolution matrix, the entries of the unrolled input).
MAX_PRODUCTS = 262_144

#: The slide topic takes one step per output element (``convolab animate`` one frame): at most this many.
MAX_SLIDE_STEPS = 1024

#: The convolution matrix is kept sparse; JSON holds it dense (nested lists) up to this many entries, else null.
MAX_DENSE_MATRIX_CELLS = 65_536

#: np.array2string summarizes (first and last EDGE_ITEMS per axis, '...' between) arrays larger than this.
SUMMARY_THRESHOLD = 400
EDGE_ITEMS = 4


# -- the case being explained ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Case:
    """One 2-D convolution problem to explain: an unbatched input, filters, and the parameters.

    ``input`` is ``(C_in, H, W)`` and ``weight`` ``(C_out, C_in/groups, kH, kW)``
    as for :func:`convolab.conv2d`. With ``transposed=True`` the problem is
    :func:`convolab.conv_transpose2d` instead, whose weight is
    ``(C_in, C_out/groups, kH, kW)`` (PyTorch's ``ConvTranspose2d`` layout) and
    whose ``padding`` must be ints or pairs. The arguments are checked on
    construction, by the ops themselves, so a bad case raises their
    ``ValueError``/``TypeError`` naming the parameter, the value and the rule.

    Before anything is computed, a case is also refused (``ValueError``) when

    - the input, the weight or the output has more than :data:`MAX_CELLS`
      cells, the padded input more than :data:`MAX_CANVAS_CELLS`, or the
      convolution more than :data:`MAX_PRODUCTS` multiply-adds: the
      walk-through shows every number;
    - the input or weight holds NaN or infinity: every sum that reads one is
      NaN or infinite, so the steps would compare NaNs rather than show arithmetic;
    - the values are so large that a sum the walk-through computes (the
      output, or the backprop example's gradient for ``grad_output`` 1, 2, ...)
      could overflow its dtype (to infinity, or past int64).
    """

    name: str
    input: np.ndarray
    weight: np.ndarray
    stride: Any = 1
    padding: PaddingArg = 0
    dilation: Any = 1
    groups: int = 1
    transposed: bool = False
    output_padding: Any = 0

    def __post_init__(self) -> None:
        _check_case(self)  # the shapes and sizes, before anything is computed; then the values
        self.output()  # the op checks every remaining argument

    @property
    def params(self) -> dict[str, Any]:
        """The forward convolution's keyword arguments."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    @property
    def spec(self):
        """The canonical :class:`~convolab.ConvSpec` (of the forward problem; None when transposed)."""
        if self.transposed:
            return None
        return conv_spec(self.input.shape, self.weight.shape, op="conv2d", rank=2, **self.params)

    def output(self) -> np.ndarray:
        """The result: ``conv2d`` (or ``conv_transpose2d``) of the case, ``(C_out, H_out, W_out)``."""
        if self.transposed:
            return conv_transpose(self.input, self.weight, None, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)
        return conv(self.input, self.weight, **self.params)

    def parameters(self) -> str:
        """Every parameter, canonical: ``stride (1, 1), padding ((0, 0), (0, 0)), dilation (1, 1), groups 1``."""
        op = "conv_transpose2d" if self.transposed else "conv2d"
        stride = normalize_ints(self.stride, 2, "stride", op)
        dilation = normalize_ints(self.dilation, 2, "dilation", op)
        if self.transposed:
            padding = normalize_padding(self.padding, 2, op)
            extra = f", output_padding {normalize_ints(self.output_padding, 2, 'output_padding', op, 0)}"
        else:
            padding, extra = self.spec.padding, ""
        shown = f"{self.padding!r} = {padding}" if isinstance(self.padding, str) else f"{padding}"
        return f"stride {stride}, padding {shown}, dilation {dilation}, groups {self.groups}{extra}"

    def shapes(self) -> str:
        """``conv2d: input (1, 3, 3), weight (1, 1, 2, 2) -> output (1, 2, 2)``."""
        op = "conv_transpose2d" if self.transposed else "conv2d"
        return f"{op}: input {self.input.shape}, weight {self.weight.shape} -> output {self.output().shape}"

    def describe(self) -> str:
        """One line: the op, the shapes and every parameter."""
        head, tail = self.shapes().split(" -> ")
        return f"{head}, {self.parameters()} -> {tail}"

    def to_dict(self) -> dict[str, Any]:
        """The case as JSON-able data, its output included (nested lists)."""
        op = "conv_transpose2d" if self.transposed else "conv2d"
        padding = normalize_padding(self.padding, 2, op) if self.transposed else self.spec.padding
        out = self.output()
        return {
            "name": self.name,
            "op": op,
            "input": strict_json(self.input),
            "weight": strict_json(self.weight),
            "stride": list(normalize_ints(self.stride, 2, "stride", op)),
            "padding": self.padding if isinstance(self.padding, str) else [list(p) for p in padding],
            "padding_pairs": [list(p) for p in padding],
            "dilation": list(normalize_ints(self.dilation, 2, "dilation", op)),
            "groups": self.groups,
            "output_padding": list(normalize_ints(self.output_padding, 2, "output_padding", op, 0)),
            "output_shape": list(out.shape),
            "output": strict_json(out),
        }


def _check_case(case: Case) -> None:
    """Refuse a case too large to walk through, or whose sums would be NaN, infinite or wrapped; compute nothing."""
    op = "conv_transpose2d" if case.transposed else "conv2d"
    x, w = check_array(op, "input", case.input), check_array(op, "weight", case.weight)
    if x.ndim != 3:
        fail(ValueError, "explain", "input", f"shape {x.shape}", "must be one unbatched image (C_in, H, W)")
    kernel = prod(w.shape[2:])
    if case.transposed:
        plan, _ = _transpose_plan(op, 2, x, w, case.stride, case.padding, case.output_padding, case.groups,
                                  case.dilation, None)
        forward = plan.spec  # the convolution this one transposes: its input is our output's extent
        out_shape = (forward.in_channels, *plan.output_size)
        # What the kernel slides over: the output's extent plus the dilated kernel's, per axis.
        canvas = (x.shape[0], *(size + d * (k - 1) for size, d, k in zip(plan.output_size, forward.dilation,
                                                                          forward.kernel_size)))
        canvas_name, canvas_got = "dilation", f"{case.dilation!r} (the spread, padded input {canvas})"
        products = prod(x.shape) * forward.in_channels_per_group * kernel
        terms = max(forward.in_channels_per_group, forward.out_channels_per_group) * kernel
    else:
        spec = conv_spec(x.shape, w.shape, op=op, rank=2, **case.params)
        out_shape = spec.output_shape[1:]
        canvas = (x.shape[0], *spec.padded_size)
        canvas_name, canvas_got = "padding", f"{case.padding!r} (the padded input {canvas})"
        products = spec.flops // 2
        terms = max(spec.in_channels_per_group, spec.out_channels_per_group) * kernel
    steps = "to be walked through step by step"
    library = f"convolab.{op} itself has no such limit"
    for name, cells, most, got, rule in (
        ("input", prod(x.shape), MAX_CELLS, f"shape {x.shape}", "give a smaller input"),
        ("weight", prod(w.shape), MAX_CELLS, f"shape {w.shape}", "give fewer or smaller filters"),
        ("output", prod(out_shape), MAX_CELLS, f"shape {out_shape}",
         "give a smaller input or stride, or fewer filters" if case.transposed else
         "give a smaller input, fewer filters, less padding or a larger stride"),
        (canvas_name, prod(canvas), MAX_CANVAS_CELLS, canvas_got, "make it smaller"),
    ):
        if cells > most:
            what = "have" if name in ("input", "weight", "output") else "leave the kernel to slide over"
            fail(ValueError, "explain", name, f"{got} = {cells:,} cells",
                 f"must {what} at most {most:,} cells {steps} ({rule}; {library})")
    if products > MAX_PRODUCTS:
        fail(ValueError, "explain", "weight", f"shape {w.shape}, {products:,} multiply-adds for an output {out_shape}",
             f"must need at most {MAX_PRODUCTS:,} multiply-adds {steps} (give fewer or smaller filters, or a "
             f"smaller input; {library})")
    _check_values(x, w, prod(out_shape), terms)


def _check_values(x: np.ndarray, w: np.ndarray, outputs: int, terms: int) -> None:
    """Finite numbers only, small enough that no sum of ``terms`` products the steps compute can overflow.

    The sums are the output's (input times weight) and the backprop example's
    input gradient (``grad_output`` = 1, 2, ..., ``outputs`` times weight); a
    quarter of the dtype's range is left for the differences the checks take.
    """
    for name, a in (("input", x), ("weight", w)):
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            fail(ValueError, "explain", name, f"{_number(a[where])} at {where}",
                 "must hold finite numbers (NaN and infinity make every sum that reads them NaN or infinite, so "
                 "there would be no arithmetic to show; replace them with numbers)")
    if x.dtype != w.dtype:
        return  # the op refuses the mixture, naming both dtypes
    dtype = result_dtype(x.dtype)
    if dtype.kind in "iu":
        largest_x, largest_w, most = _largest_magnitude(x), _largest_magnitude(w), int(np.iinfo(dtype).max) // 4
    else:
        largest_x = float(np.max(np.abs(x), initial=0))
        largest_w = float(np.max(np.abs(w), initial=0))
        most = float(np.finfo(dtype).max) / 4
    bound = max(largest_x, outputs) * largest_w * terms
    if bound > most:
        gradient = f" (and the backprop example's grad_output up to {outputs})" if outputs > largest_x else ""
        fail(ValueError, "explain", "input",
             f"values up to {_number(largest_x)}{gradient} against weight values up to {_number(largest_w)}, "
             f"summed over {terms} product{'s' if terms > 1 else ''} (bound {_number(bound)})",
             f"must keep every sum the walk-through computes within {dtype}'s range, with room for the checks' "
             f"differences (at most {_number(most)}; scale the values down)")


def standard_cases() -> dict[str, Case]:
    """The standard examples, by name.

    - ``classic``: the kernel ``[[9, 8], [7, 6]]`` over ``1..9``: ``[[83, 113], [173, 203]]``;
    - ``two-channel``: the same with a second channel (``10..18`` under ``[[1, 0], [0, -1]]``), a 3-D window;
    - ``two-filters``: ``1..9`` under both kernels, two output channels;
    - ``sobel``: ``[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]`` over ``1..9`` with padding 1;
    - ``strided``: a 3x3 box filter over ``1..36`` (6x6) at stride 2, where the last row and column go unread.
    """
    image = np.arange(1, 10).reshape(1, 3, 3)
    kernel = np.array([[9, 8], [7, 6]])
    diagonal = np.array([[1, 0], [0, -1]])
    return {
        "classic": Case("classic", image, kernel[None, None]),
        "two-channel": Case("two-channel", np.arange(1, 19).reshape(2, 3, 3), np.stack([kernel, diagonal])[None]),
        "two-filters": Case("two-filters", image, np.stack([kernel, diagonal])[:, None]),
        "sobel": Case("sobel", image, np.array([[[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]]]), padding=1),
        "strided": Case("strided", np.arange(1, 37).reshape(1, 6, 6), np.ones((1, 1, 3, 3), dtype=np.int64),
                        stride=2),
    }


# -- steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Show:
    """A body item: the arrays ``data[key]`` for each key, side by side, under their labels."""

    keys: tuple[str, ...]
    labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"show": list(self.keys), "labels": list(self.labels)}


def _show(*pairs: tuple[str, str]) -> Show:
    """``_show(("window", "window"), ("kernel", "the kernel"))``: keys with their labels."""
    return Show(tuple(key for key, _ in pairs), tuple(label for _, label in pairs))


@dataclass(frozen=True)
class Step:
    """One step of an explanation: what it shows, the formula, the numbers, the check.

    Attributes
    ----------
    topic : str
        A key of :data:`TOPICS`.
    title : str
        What the step shows, in a line.
    formula : str
        The formula behind the numbers.
    body : tuple of str and Show
        Paragraphs, and :class:`Show` items naming arrays in ``data``.
    check : str
        What was checked, with what was found.
    passed : bool
        Whether it held, computed.
    case : str
        The name of the :class:`Case` the step uses.
    data : dict
        The numbers, by name (arrays as NumPy arrays, the convolution matrix
        as a ``scipy.sparse`` matrix; JSON gets nested lists, see :func:`render_json`).
    """

    topic: str
    title: str
    formula: str
    body: tuple[str | Show, ...]
    check: str
    passed: bool
    case: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-able data: arrays as nested lists."""
        return {
            "topic": self.topic,
            "question": TOPICS[self.topic],
            "case": self.case,
            "title": self.title,
            "formula": self.formula,
            "body": [item.to_dict() if isinstance(item, Show) else {"text": item} for item in self.body],
            "check": self.check,
            "passed": bool(self.passed),
            "data": {key: strict_json(value) for key, value in self.data.items()},
        }


@dataclass(frozen=True)
class Explanation:
    """The cases used and the steps, in order; ``passed`` when every step's check held."""

    title: str
    cases: tuple[Case, ...]
    steps: tuple[Step, ...]

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "cases": [case.to_dict() for case in self.cases],
            "steps": [step.to_dict() for step in self.steps],
        }


# -- numbers as text ------------------------------------------------------------------------------


def strict_json(value: Any) -> Any:
    """Arrays and NumPy scalars as strict-JSON-able lists and plain numbers.

    Non-finite floats become the strings ``"nan"``, ``"inf"`` and ``"-inf"``
    (strict JSON has no NaN or Infinity); a sparse matrix becomes nested lists
    when it has at most :data:`MAX_DENSE_MATRIX_CELLS` entries, else ``None``.
    """
    if scipy.sparse.issparse(value):
        return strict_json(value.toarray()) if prod(value.shape) <= MAX_DENSE_MATRIX_CELLS else None
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return strict_json(value.tolist())  # walk the lists to replace the non-finite numbers
        return value.tolist()
    if isinstance(value, np.generic):
        return strict_json(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)  # "nan", "inf" or "-inf"
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    return value


def _number(value: Any) -> str:
    """One number as text: integers exactly, floats to six significant digits."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (bool, int)):
        return str(int(value))
    text = f"{value:.6g}"
    return "0" if text == "-0" else text


def _array_lines(a: Any) -> list[str]:
    """An array as NumPy prints it (brackets, aligned columns), long axes summarized with '...'."""
    if scipy.sparse.issparse(a):
        return _sparse_lines(a)
    a = np.asarray(a)
    if a.ndim == 0:
        return [_number(a)]
    if a.size == 0:
        return [f"(empty, shape {a.shape})"]
    return _summarized(a, _width(a.ravel()), SUMMARY_THRESHOLD)


def _width(values: np.ndarray) -> int:
    """The widest number among ``values`` as :func:`_number` writes it (each distinct value formatted once)."""
    return max(len(_number(v)) for v in np.unique(values))


def _summarized(a: np.ndarray, width: int, threshold: int) -> list[str]:
    text = np.array2string(a, separator=" ", threshold=threshold, edgeitems=EDGE_ITEMS, max_line_width=10**6,
                           formatter={"all": lambda v: _number(v).rjust(width)})
    return text.split("\n")


def _sparse_lines(matrix: Any) -> list[str]:
    """A sparse matrix exactly as :func:`_array_lines` prints it dense, densifying only the rows and columns shown.

    A large matrix is printed summarized: its first and last
    :data:`EDGE_ITEMS` rows and columns. Those, plus one row and column that
    the summary hides, make a small dense array that prints the same way.
    """
    rows, cols = matrix.shape
    if rows * cols <= SUMMARY_THRESHOLD or min(rows, cols) == 0:
        return _array_lines(matrix.toarray())
    matrix = scipy.sparse.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    shown = [np.r_[0:EDGE_ITEMS + 1, n - EDGE_ITEMS:n] if n > 2 * EDGE_ITEMS else np.arange(n) for n in (rows, cols)]
    corners = matrix[shown[0]][:, shown[1]].toarray()
    stored = matrix.data if matrix.nnz == rows * cols else np.append(matrix.data, 0)  # implicit zeros print too
    return _summarized(corners, _width(stored), 0)


def _vector(a: np.ndarray) -> str:
    return "[" + ", ".join(_number(v) for v in np.ravel(a)) + "]"


def _terms(left: np.ndarray, right: np.ndarray, total: Any) -> str:
    """``1*9 + 2*8 + ... = 83``, or the count of products when there are many."""
    pairs = list(zip(np.ravel(left), np.ravel(right)))
    if len(pairs) > MAX_TERMS:
        return f"the sum of {len(pairs)} products = {_number(total)}"
    return " + ".join(f"{_factor(a)}*{_factor(b)}" for a, b in pairs) + f" = {_number(total)}"


def _factor(value: Any) -> str:
    """A number inside a sum or product: negatives in parentheses, ``(-1)``."""
    text = _number(value)
    return f"({text})" if text.startswith("-") else text


def _plus(values: Sequence[Any]) -> str:
    """``83 + (-4)``."""
    return " + ".join(_factor(v) for v in values)


def _same(a: Any, b: Any) -> bool:
    """Equal: exactly for integers, to float64 rounding for floats."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        return bool(np.array_equal(a, b))
    scale = max(1.0, float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(b), initial=0)))
    return bool(np.allclose(a, b, rtol=0, atol=1e-9 * scale))


def _shape(a: np.ndarray) -> str:
    return "(" + ", ".join(map(str, np.shape(a))) + ")"


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    parts, run = [], []
    for i in indices:
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


# -- question 1: a dot product, or a Hadamard product and a sum? ----------------------------------


def _dot_step(case: Case, at: tuple[int, int, int]) -> Step:
    """One output element taken apart: the window, the kernel, their elementwise product, its sum."""
    t = trace(case.input, case.weight, at=at, **case.params)
    window, kernel, product = t.window, t.kernel, t.product
    channels = window.shape[0]
    hadamard_sum = product.sum()
    dot = np.dot(window.ravel(), kernel.ravel())
    # The Frobenius inner product, one 2-D slice at a time: trace(window[c]^T @ kernel[c]).
    frobenius = sum(np.trace(window[c].T @ kernel[c]) for c in range(channels))
    element = case.output()[at]
    co, y, x = at
    body: list[str | Show] = [
        f"Output element out[{co}, {y}, {x}] reads a {_shape(window)} window of the "
        + ("padded input" if t.is_padding.any() else "input")
        + (f" (input channels {t.input_channels[0]}-{t.input_channels[-1]})" if channels > 1 else "")
        + f" and multiplies it, cell by cell, by filter {co}: the Hadamard (elementwise) product.",
    ]
    if t.is_padding.any():
        body.append(f"{int(t.is_padding.sum())} of its cells lie in the zero padding.")
    body += [
        _show(("window", "window"), ("kernel", f"kernel (filter {co})"), ("product", "window * kernel")),
        f"Summing that product: {_terms(window, kernel, hadamard_sum)}.",
    ]
    if channels > 1:
        per_channel = [product[c].sum() for c in range(channels)]
        body.append(
            f"With {channels} input channels the window is 3-D; the sum runs over every cell of it, "
            f"channel sums {_plus(per_channel)} = {_number(hadamard_sum)}. "
            "Nothing new: it is still one dot product, of longer vectors."
        )
    body.append(
        f"Lay both arrays flat (window.ravel() and kernel.ravel(), {window.size} numbers each) and take their "
        f"dot product: {_vector(window)} . {_vector(kernel)} = {_number(dot)}. The same pairs are multiplied and "
        "the same products added, so 'dot product' and 'Hadamard product, then sum' name one computation."
    )
    data: dict[str, Any] = {"at": list(at), "window": window, "kernel": kernel, "product": product,
                            "is_padding": t.is_padding, "sum": hadamard_sum, "dot": dot, "frobenius": frobenius,
                            "output_element": element}
    kh, kw = window.shape[-2:]
    if channels == 1 and kh == kw:
        matmul = window[0] @ kernel[0]
        data["matmul"] = matmul
        body += [
            "What it is not: the matrix product window @ kernel multiplies rows by columns and gives a matrix, "
            "not this number. Only its trace after a transpose, trace(window.T @ kernel), is the sum again.",
            _show(("matmul", "window @ kernel (a different thing)")),
        ]
    passed = _same(hadamard_sum, dot) and _same(dot, frobenius) and _same(hadamard_sum, element)
    return Step(
        topic="dot",
        title=f"One output element is a Hadamard product and a sum, which is a dot product ({case.name})",
        formula=f"out[{co}, y, x] = sum_c,i,j window[c, i, j] * kernel[c, i, j] = window.ravel() . kernel.ravel()",
        body=tuple(body),
        check=(f"sum(window * kernel) = dot(window.ravel(), kernel.ravel()) = trace(window.T @ kernel) "
               f"= conv2d(...)[{co}, {y}, {x}] = {_number(element)}"),
        passed=passed,
        case=case.name,
        data=data,
    )


# -- question 2: the convolution as one matrix product --------------------------------------------


def _im2col_step(case: Case, intro: str | None = None) -> Step:
    """The unrolled input times the filter matrix, reshaped, is the output."""
    m = im2col_matrices(case.input, case.weight, **case.params)
    identity = check_direct_equals_im2col(case.input, case.weight, **case.params)
    # Which cells of the unrolled input came from the padding: unroll an input of ones, zero-padded.
    ones = im2col_matrices(np.ones(case.input.shape, dtype=np.int64), np.ones(case.weight.shape, dtype=np.int64),
                           **case.params)
    spec = m.spec
    out = case.output()
    grouped = spec.groups > 1
    product = m.product()
    rows, cols = m.unrolled.shape[-2:]
    body: list[str | Show] = [] if intro is None else [intro]
    body.append(
        f"Unroll the input: one row per output position ({spec.output_size[0]}x{spec.output_size[1]} = {rows} "
        f"rows), holding that position's window laid flat (C_in/groups * kH * kW = {cols} numbers). Lay each filter "
        f"flat the same way, as a column ({spec.out_channels_per_group} column"
        f"{'s' if spec.out_channels_per_group > 1 else ''}: one per filter).")
    if grouped:
        body.append(f"With groups={spec.groups} there is one such product per group, each over its own input "
                    "channels and filters (the leading axis below).")
    if ones.unrolled.size and not ones.unrolled.all():
        body.append("Entries from the zero padding are zeros in the unrolled input.")
    body += [
        _show(("unrolled", f"unrolled input {_shape(m.unrolled)}"), ("filters", f"filters {_shape(m.filters)}")),
        "Each row times each column is one window dotted with one filter (question 1), so one matrix product "
        "computes every output element at once:",
        _show(("product", f"unrolled @ filters {_shape(product)}")),
        f"Column o of the product, read row by row, is output channel o: reshape each to "
        f"{spec.output_size[0]}x{spec.output_size[1]}.",
        _show(("output", f"output {_shape(out)}")),
    ]
    column_labels = [list(label) for label in m.column_labels]
    return Step(
        topic="im2col",
        title=f"The whole convolution is one matrix product: unrolled input @ filter matrix ({case.name})",
        formula="output[o, y, x] = (unrolled @ filters)[y * W_out + x, o]; "
                "unrolled[y * W_out + x] = window(y, x).ravel(), filters[:, o] = weight[o].ravel()",
        body=tuple(body),
        check=f"the product, reshaped, equals the convolution computed one element at a time "
              f"(max |difference| = {_number(identity.max_abs_difference)})",
        passed=identity.holds and _same(m.output(), out),
        case=case.name,
        data={"unrolled": m.unrolled, "filters": m.filters, "product": product, "output": out,
              "from_padding": ones.unrolled == 0, "row_labels": [list(label[1:]) for label in m.row_labels],
              "column_labels": column_labels, "groups": spec.groups},
    )


def _backprop_grad_output(case: Case) -> np.ndarray:
    """The upstream gradient the backprop steps use: 1, 2, 3, ... in the output's shape (any numbers would do)."""
    shape = case.output().shape
    return np.arange(1, prod(shape) + 1).reshape(shape).astype(case.weight.dtype)


def _conv_matrix_step(case: Case) -> Step:
    """The convolution as one (sparse) matrix times the flattened input; its transpose is the backward pass."""
    matrix = conv_matrix(case.input.shape, case.weight, **case.params)
    x = case.input.ravel()
    out = case.output()
    by_matrix = matrix @ x
    grad_output = _backprop_grad_output(case)
    by_transpose = matrix.T @ grad_output.ravel()
    grad_input = conv_input(case.input.shape, case.weight, grad_output, **case.params)
    coo = matrix.tocoo()
    rows, cols = matrix.shape
    body: list[str | Show] = [
        f"The other way round: a convolution (without bias) is linear in its input, so it is one matrix M with a "
        f"row per output element ({rows}) and a column per input element ({cols}). Row r holds the kernel's taps in "
        f"the columns of the input samples that output element r reads, zeros elsewhere: {coo.nnz} of its "
        f"{rows * cols} entries are taps.",
        _show(("matrix", f"M {_shape(matrix)}"), ("input_vector", f"input.ravel() {_shape(x)}")),
        _show(("output_vector", f"M @ input.ravel() {_shape(by_matrix)}")),
        "Its transpose runs the other way, from output gradients to input gradients: M.T @ grad_output.ravel() "
        "is the input gradient (question 3), which is why the backward pass is called a transposed convolution.",
    ]
    return Step(
        topic="im2col",
        title=f"Or: one sparse matrix times the flattened input ({case.name})",
        formula="conv2d(x).ravel() = M @ x.ravel();  grad_input.ravel() = M.T @ grad_output.ravel()",
        body=tuple(body),
        check="M @ input.ravel() equals conv2d(input).ravel(), and M.T @ grad_output.ravel() equals "
              "grad.conv2d_input(...) for grad_output = 1, 2, 3, ...",
        passed=_same(by_matrix, out.ravel()) and _same(by_transpose, grad_input.ravel()),
        case=case.name,
        data={"matrix": matrix, "shape": [rows, cols], "rows": coo.row, "cols": coo.col, "values": coo.data,
              "input_vector": x, "output_vector": by_matrix, "output": out,
              "row_labels": [list(i) for i in np.ndindex(*out.shape)],
              "column_labels": [list(i) for i in np.ndindex(*case.input.shape)]},
    )


# -- question 3: is the filter rotated in backprop? -----------------------------------------------


def _full_correlation(case: Case, grad_output: np.ndarray, rotate: bool) -> dict[str, np.ndarray]:
    """The input gradient as a correlation over grad_output: spread by the stride, padded, the filter rotated.

    ``g`` gets ``stride - 1`` zeros between its samples and ``dilation*(k-1)``
    zeros of padding on each side (plus the input's unread tail on the high
    side); correlating it with the filter reversed on both axes, input and
    output channels swapped, gives the gradient on the padded input, which is
    cropped to the input. With ``rotate=False`` the same is done with the
    filter as stored: the mistake the question is about.
    """
    spec = case.spec
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (kh, kw), (ho, wo) = spec.kernel_size, spec.output_size
    spread = np.zeros((grad_output.shape[0], (ho - 1) * sh + 1, (wo - 1) * sw + 1), dtype=grad_output.dtype)
    spread[:, ::sh, ::sw] = grad_output
    reach = [(o - 1) * s + d * (k - 1) + 1 for o, s, k, d in zip(spec.output_size, spec.stride, spec.kernel_size,
                                                                   spec.dilation)]
    tail = [p - r for p, r in zip(spec.padded_size, reach)]  # padded cells past the last window
    padding = tuple((d * (k - 1), d * (k - 1) + t) for k, d, t in zip((kh, kw), (dh, dw), tail))
    padded = pad(spread, padding)
    groups, o, c = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group
    swapped = case.weight.reshape(groups, o, c, kh, kw).swapaxes(1, 2).reshape(groups * c, o, kh, kw)
    kernel = np.ascontiguousarray(reverse_spatial(swapped, 2)) if rotate else swapped
    on_padded = conv(padded, kernel, dilation=spec.dilation, groups=groups)
    (top, _), (left, _) = spec.padding
    h, w = spec.input_size
    return {"padded": padded, "kernel": kernel, "on_padded": on_padded,
            "result": np.ascontiguousarray(on_padded[:, top:top + h, left:left + w])}


def _scatter_contributions(case: Case, grad_output: np.ndarray) -> np.ndarray | None:
    """For one channel in and out and at most 9 outputs: each g[y, x] * kernel, placed where its window read.

    Shown so the scatter-add can be seen; its sum is checked against the library's.
    """
    spec = case.spec
    if spec.in_channels != 1 or spec.out_channels != 1 or grad_output.size > 9:
        return None
    kernel = case.weight[0, 0]
    parts = np.zeros((grad_output.size, *spec.padded_size), dtype=np.result_type(kernel, grad_output))
    for index, (y, x) in enumerate(np.ndindex(*spec.output_size)):
        rows = slice(y * spec.stride[0], y * spec.stride[0] + spec.dilation[0] * (spec.kernel_size[0] - 1) + 1,
                     spec.dilation[0])
        cols = slice(x * spec.stride[1], x * spec.stride[1] + spec.dilation[1] * (spec.kernel_size[1] - 1) + 1,
                     spec.dilation[1])
        parts[index, rows, cols] = grad_output[0, y, x] * kernel
    (top, _), (left, _) = spec.padding
    h, w = spec.input_size
    return parts[:, top:top + h, left:left + w]


def _backprop_steps(case: Case, grad_output: np.ndarray) -> list[Step]:
    chain = check_input_gradient(case.input.shape, case.weight, grad_output, **case.params)
    truth = chain["scatter"]
    rotated = _full_correlation(case, grad_output, rotate=True)
    unrotated = _full_correlation(case, grad_output, rotate=False)
    parts = _scatter_contributions(case, grad_output)
    spec = case.spec
    strided = any(s > 1 for s in spec.stride)
    body: list[str | Show] = [
        "Take an upstream gradient grad_output (the loss's gradient with respect to the output; here 1, 2, 3, ..., "
        "any numbers would do) and the filter:",
        _show(("grad_output", f"grad_output {_shape(grad_output)}"), ("weight", f"weight {_shape(case.weight)}")),
        "1. Scatter-add, the loop of most courses: every output position adds grad_output[y, x] times the filter, "
        "unrotated, into the window it read (dA_prev[window] += W * dZ[y, x]).",
    ]
    data: dict[str, Any] = {"grad_output": grad_output, "weight": case.weight, "scatter": truth}
    if parts is not None:
        data["contributions"] = parts
        keys = []
        for index, (y, x) in enumerate(np.ndindex(*spec.output_size)):
            data[f"part_{y}_{x}"] = parts[index]
            keys.append((f"part_{y}_{x}", f"g[{y},{x}]*w"))
        body.append(_show(*keys))
    body += [
        _show(("scatter", f"sum: the input gradient {_shape(truth)}")),
        "2. The same sum read from the input's side: input cell q collects g[p] * w[q - p], which is a correlation "
        "of grad_output with the filter reversed on both axes (rotated 180 degrees)"
        + (", after spreading grad_output with stride - 1 zeros between its samples" if strided else "")
        + ". Pad grad_output by dilation*(k - 1) on each side, slide the rotated filter over it"
        + (", input and output channels swapped" if spec.in_channels > 1 or spec.out_channels > 1 else "")
        + ", and crop to the input:",
        _show(("padded_grad", f"grad_output padded {_shape(rotated['padded'])}"),
              ("rotated_kernel", f"rotated filter {_shape(rotated['kernel'])}"),
              ("full", f"correlation, cropped {_shape(rotated['result'])}")),
        "3. conv_transpose(grad_output, weight) with the forward's stride, padding and dilation, which is what "
        "a transposed convolution is:",
        _show(("conv_transpose", "conv_transpose2d(grad_output, weight)")),
        "So both are right: the loop needs no rotation because it scatters; the rotation appears when the same "
        "sum is written as a correlation that gathers.",
    ]
    data.update({"padded_grad": rotated["padded"], "rotated_kernel": rotated["kernel"], "full": rotated["result"]})
    has_transpose = "conv_transpose" in chain.labels
    if has_transpose:
        data["conv_transpose"] = chain["conv_transpose"]
    else:
        body = body[:-3] + body[-1:]
    ways = "scatter-add == full correlation with the rotated filter" + (" == conv_transpose" if has_transpose else "")
    first = Step(
        topic="backprop",
        title=f"The input gradient three ways, all equal ({case.name})",
        formula="dL/dx[q] = sum_p g[p] * w[q - p*stride] = full_correlation(spread(g), rot180(w))[q] "
                "= conv_transpose(g, w)[q]",
        body=tuple(body),
        check=f"{ways}, every element (and the drawn correlation equals the library's 'full' gradient)",
        passed=chain.holds and _same(rotated["result"], chain["full"])
        and (parts is None or _same(parts.sum(axis=0), truth[0])),
        case=case.name,
        data=data,
    )

    wrong = unrotated["result"]
    differ = int(np.sum(~np.isclose(wrong, truth, rtol=0, atol=1e-9 * max(1.0, float(np.abs(truth).max(initial=0))))))
    symmetric = _same(rotated["kernel"], unrotated["kernel"])
    mean_true, mean_wrong = truth.mean(), wrong.mean()
    means_match = bool(np.isclose(mean_true, mean_wrong, rtol=1e-12, atol=1e-12))
    body2: list[str | Show] = [
        "Now the same correlation with the filter as stored, not rotated:",
        _show(("unrotated", "with the unrotated filter"), ("gradient", "the true gradient"),
              ("difference", "difference")),
    ]
    if symmetric:
        verdict = "this filter reads the same rotated by 180 degrees, so here the rotation changes nothing"
        body2.append(f"No difference: {verdict}. Try a filter without that symmetry to see the mistake.")
        passed = differ == 0
    else:
        verdict = f"{differ} of {truth.size} elements differ"
        mean_text = (f"Yet the means agree ({_number(mean_true)} both): a test that checks only the mean of the "
                     "gradient would pass this wrong answer." if means_match else
                     f"The means differ too ({_number(mean_true)} vs {_number(mean_wrong)}).")
        body2 += [f"Wrong in {differ} of {truth.size} elements. {mean_text} Compare gradients elementwise."]
        passed = differ > 0 and _same(rotated["result"], truth)
    second = Step(
        topic="backprop",
        title=f"Without the rotation the gather form gives different numbers ({case.name})",
        formula="full_correlation(spread(g), w) != full_correlation(spread(g), rot180(w)) unless w = rot180(w)",
        body=tuple(body2),
        check=f"computed both elementwise: {verdict}; means {_number(mean_wrong)} (unrotated) and "
              f"{_number(mean_true)} (true)",
        passed=passed,
        case=case.name,
        data={"unrotated": wrong, "gradient": truth, "difference": wrong - truth, "elements_differing": differ,
              "mean_unrotated": mean_wrong, "mean_true": mean_true, "means_match": means_match,
              "filter_symmetric": symmetric},
    )
    return [first, second]


# -- question 4: correlation versus convolution ---------------------------------------------------


def _flip_step(case: Case) -> Step:
    correlation = case.output()
    chain = check_flip(case.input, case.weight, **case.params)
    convolution = chain["flip=True"]
    rotated = np.ascontiguousarray(reverse_spatial(case.weight, 2))
    spec = conv_spec(case.input.shape, case.weight.shape, op="conv2d", rank=2, flip=True, **case.params)
    mode = scipy_mode(spec)
    data: dict[str, Any] = {"input": case.input, "kernel": case.weight, "rotated_kernel": rotated,
                            "correlation": correlation, "convolution": convolution}
    body: list[str | Show] = [
        "PyTorch's conv2d (like TensorFlow's, and convolab's by default) slides the kernel over the input as it is "
        "stored: that is cross-correlation. The convolution of mathematics and signal processing (the textbook's, "
        "scipy.signal.convolve2d) first reverses the kernel on every axis, a 180-degree rotation in 2-D.",
        _show(("kernel", "kernel"), ("rotated_kernel", "kernel rotated 180 degrees")),
        _show(("correlation", "cross-correlation (PyTorch's conv2d)"), ("convolution", "true convolution")),
    ]
    scipy_checked = ""
    passed = chain.holds
    single = case.input.shape[0] == 1 and case.weight.shape[0] == 1
    if mode is not None and any(label.startswith("scipy") for label in chain.labels) and single:
        by_convolve = scipy.signal.convolve2d(case.input[0], case.weight[0, 0], mode=mode)
        by_correlate = scipy.signal.correlate2d(case.input[0], case.weight[0, 0], mode=mode)
        data["scipy_convolve2d"], data["scipy_correlate2d"] = by_convolve, by_correlate
        body += [
            f"SciPy, with the same padding (mode={mode!r}), agrees with each:",
            _show(("scipy_convolve2d", f"scipy.signal.convolve2d(mode={mode!r})"),
                  ("scipy_correlate2d", f"scipy.signal.correlate2d(mode={mode!r})")),
        ]
        passed = passed and _same(by_convolve, convolution[0]) and _same(by_correlate, correlation[0])
        scipy_checked = f"; scipy.signal.convolve2d and correlate2d (mode={mode!r}) match them"
    else:
        body.append("(SciPy's convolve2d has no stride, dilation, channels or asymmetric padding, so it is compared "
                    "only on single-channel cases at stride 1 whose padding is 'valid', 'same' or 'full'.)")
    same = _same(correlation, convolution)
    body.append(
        ("Here the two agree, because this kernel reads the same rotated." if same else
         "The numbers differ, though each is right by its own definition.")
        + " For a learned filter the choice does not matter: training would simply learn the rotated kernel. "
        "It matters when a kernel is written down by hand, as in an edge detector or a signal-processing text."
    )
    return Step(
        topic="flip",
        title=f"Deep learning's 'convolution' is cross-correlation; the textbook's flips the kernel ({case.name})",
        formula="correlation: out[y, x] = sum_ij x[y + i, x + j] * k[i, j];  "
                "convolution: out[y, x] = sum_ij x[y + i, x + j] * k[kH-1-i, kW-1-j]",
        body=tuple(body),
        check=f"conv2d(flip=True) equals conv2d with the kernel rotated 180 degrees{scipy_checked}",
        passed=passed,
        case=case.name,
        data=data,
    )


# -- the output size, and what is never read -------------------------------------------------------


def _read_sets(case: Case) -> list[np.ndarray]:
    """Per spatial dimension, the input indices some window reads: {p*stride + j*dilation - low} within the input."""
    spec = case.spec
    read = []
    for size, k, s, (low, _), d, out in zip(spec.input_size, spec.kernel_size, spec.stride, spec.padding,
                                            spec.dilation, spec.output_size):
        taps = (np.arange(out)[:, None] * s + np.arange(k)[None, :] * d - low).ravel()
        read.append(np.unique(taps[(taps >= 0) & (taps < size)]))
    return read


def _shape_step(case: Case) -> Step:
    spec = case.spec
    out = case.output()
    lines: list[str | Show] = []
    sizes, unread, trailing = [], [], []
    names = ("rows", "columns")
    for axis, (size, k, s, (low, high), d) in enumerate(zip(spec.input_size, spec.kernel_size, spec.stride,
                                                            spec.padding, spec.dilation)):
        extent = shapes.dilated_kernel_size(k, d)
        span = size + low + high - extent
        o = shapes.conv_output_size(size, k, s, (low, high), d)
        sizes.append(o)
        lines.append(f"{names[axis]}: out = floor(({size} + {low} + {high} - {d}*({k} - 1) - 1) / {s}) + 1 "
                     f"= floor({span} / {s}) + 1 = {o}")
        trailing.append(shapes.unread_input_count(size, k, s, (low, high), d))
    read = _read_sets(case)
    for axis, size in enumerate(spec.input_size):
        unread.append(sorted(set(range(size)) - set(read[axis].tolist())))
    # How many (output, tap) pairs read each input sample: the input gradient of all-ones, for a one-channel filter.
    ones_weight = np.ones((1, 1, *spec.kernel_size), dtype=np.int64)
    read_count = conv_input((1, *spec.input_size), ones_weight, np.ones((1, *spec.output_size), dtype=np.int64),
                            stride=spec.stride, padding=spec.padding, dilation=spec.dilation)[0]
    zero_rows = [i for i in range(spec.input_size[0]) if not read_count[i].any()]
    zero_cols = [j for j in range(spec.input_size[1]) if not read_count[:, j].any()]
    body: list[str | Show] = [
        f"Per axis, with input size in, padding low + high, kernel size k, dilation d and stride s, the kernel spans "
        f"d*(k - 1) + 1 cells and fits floor((in + low + high - d*(k - 1) - 1) / s) + 1 times. For this case "
        f"(input {spec.input_size[0]}x{spec.input_size[1]}, kernel {spec.kernel_size[0]}x{spec.kernel_size[1]}, "
        f"stride {spec.stride}, padding {spec.padding}, dilation {spec.dilation}):",
        "\n".join(lines),
        f"So the output is {sizes[0]}x{sizes[1]} per filter, {spec.out_channels} filter"
        f"{'s' if spec.out_channels > 1 else ''}: shape {_shape(out)}.",
        "How many times the windows read each input sample:",
        _show(("read_count", f"reads per input sample {_shape(read_count)}")),
    ]
    reasons: dict[str, list[str]] = {}
    for axis, cells in enumerate(unread):
        size, k, s, (low, high), d = (spec.input_size[axis], spec.kernel_size[axis], spec.stride[axis],
                                      spec.padding[axis], spec.dilation[axis])
        tail = [i for i in cells if i >= size - trailing[axis]]  # past the last window
        inside = [i for i in cells if i < size - trailing[axis]]  # between the dilated taps
        singular = "row" if axis == 0 else "column"
        for part, why in (
            (inside, "the dilated kernel's taps step over them"),
            (tail, f"the stride {s} does not divide {size + low + high - shapes.dilated_kernel_size(k, d)} (the "
                   f"padded size {size + low + high} minus the kernel's span {shapes.dilated_kernel_size(k, d)}), so "
                   f"the last window stops {(size + low + high - shapes.dilated_kernel_size(k, d)) % s} short of "
                   "the end"),
        ):
            if part:
                reasons.setdefault(why, []).append(f"{singular}{'s' if len(part) > 1 else ''} {_ranges(part)} "
                                                   f"(of {size})")
    notes = []
    if reasons:
        notes = ["Never read: " + "; ".join(f"input {' and '.join(whats)}, because {why}"
                                            for why, whats in reasons.items())
                 + ". Those samples do not affect the output, and their gradient is zero."]
    body += notes or ["Every input row and column is read by some window."]
    passed = (tuple(sizes) == out.shape[1:] and unread == [zero_rows, zero_cols]
              and all(t == sum(1 for i in cells if i >= size - t) for t, cells, size in
                      zip(trailing, unread, spec.input_size)))
    never = "; ".join(f"{name} {_ranges(cells)}" for name, cells in zip(names, unread) if cells) or "none"
    return Step(
        topic="shape",
        title=f"The output size, and what is never read ({case.name})",
        formula="out = floor((in + low + high - dilation*(k - 1) - 1) / stride) + 1",
        body=tuple(body),
        check=f"the formula gives {sizes[0]}x{sizes[1]}, the shape conv2d returned; never-read input (by the "
              f"arithmetic and by zero read counts): {never}",
        passed=bool(passed),
        case=case.name,
        data={"output_size": sizes, "output_shape": list(out.shape), "read_count": read_count,
              "unread_rows": unread[0], "unread_columns": unread[1]},
    )


# -- the kernel sliding: one step per output element ----------------------------------------------


def _transposed_axis(size: int, k: int, s: int, low: int, high: int, d: int, extra: int) -> np.ndarray:
    """For each canvas cell along one axis of a transposed convolution: the input index, -1 inserted, -2 padding.

    The input is spread (``s - 1`` zeros between samples) and padded by
    ``d*(k-1) - low`` before and ``d*(k-1) - high + output_padding`` after;
    negative amounts crop instead.
    """
    spread = np.where(np.arange((size - 1) * s + 1) % s == 0, np.arange((size - 1) * s + 1) // s, -1)
    before, after = d * (k - 1) - low, d * (k - 1) - high + extra
    spread = np.concatenate([np.full(max(before, 0), -2), spread[max(-before, 0):]])
    spread = spread[:len(spread) + after] if after < 0 else np.concatenate([spread, np.full(after, -2)])
    return spread


def _slide_canvas(case: Case) -> dict[str, Any]:
    """What the kernel slides over, and how: the canvas, its cell roles, the kernel as applied, the parameters.

    Forward: the padded input, stride and dilation as given. Transposed: the
    stride-spread, padded input at stride 1, the kernel rotated 180 degrees and
    channels swapped, which is a forward convolution whose result is the
    transposed convolution's.
    """
    x, w = case.input, case.weight
    if not case.transposed:
        spec = case.spec
        canvas = pad(x, spec.padding)
        role = np.where(pad(np.ones(spec.input_size, dtype=bool), spec.padding), INPUT, PADDING)
        read = _read_sets(case)
        unread = np.ones(spec.input_size, dtype=bool)
        unread[np.ix_(read[0], read[1])] = False
        (top, _), (left, _) = spec.padding
        role[top:top + spec.input_size[0], left:left + spec.input_size[1]][unread] = UNREAD
        return {"canvas": canvas, "role": role, "kernel": w, "stride": spec.stride, "dilation": spec.dilation,
                "groups": spec.groups, "padding": spec.padding}
    op = "conv_transpose2d"
    stride = normalize_ints(case.stride, 2, "stride", op)
    dilation = normalize_ints(case.dilation, 2, "dilation", op)
    padding = normalize_padding(case.padding, 2, op)
    extra = normalize_ints(case.output_padding, 2, "output_padding", op, 0)
    k = w.shape[2:]
    maps = [_transposed_axis(x.shape[1 + a], k[a], stride[a], *padding[a], dilation[a], extra[a]) for a in (0, 1)]
    rows, cols = np.meshgrid(*maps, indexing="ij")
    inside = (rows >= 0) & (cols >= 0)
    canvas = np.zeros((x.shape[0], *rows.shape), dtype=x.dtype)
    canvas[:, inside] = x[:, rows[inside], cols[inside]]
    role = np.where(inside, INPUT, np.where((rows == -2) | (cols == -2), PADDING, INSERTED))
    groups = case.groups
    c, o = w.shape[0] // groups, w.shape[1]
    kernel = w.reshape(groups, c, o, *k).swapaxes(1, 2).reshape(groups * o, c, *k)  # (C_out, C_in/groups, kH, kW)
    kernel = np.ascontiguousarray(reverse_spatial(kernel, 2))
    return {"canvas": canvas, "role": role, "kernel": kernel, "stride": (1, 1), "dilation": dilation,
            "groups": groups, "padding": ((0, 0), (0, 0)), "spread_stride": stride}


def slide_steps(case: Case) -> list[Step]:
    """The kernel sliding: a first step with the canvas it slides over, then one step per output element.

    Each element step holds the canvas coordinates of the cells the window
    reads (``taps``), the window, the kernel as applied, their product and
    its sum, checked against the op's output. ``convolab animate`` draws one
    frame per element step; for a transposed convolution the canvas is the
    stride-spread, padded input and the kernel is rotated (the gather view of
    the scatter), and its sums are checked against ``conv_transpose2d``.

    Raises
    ------
    ValueError
        An output of more than :data:`MAX_SLIDE_STEPS` elements.

    Examples
    --------
    >>> steps = slide_steps(standard_cases()["classic"])
    >>> len(steps), [int(step.data["sum"]) for step in steps[1:]]
    (5, [83, 113, 173, 203])
    """
    out = case.output()
    if out.size > MAX_SLIDE_STEPS:
        fail(ValueError, "slide_steps", "output", f"shape {out.shape} = {out.size:,} elements",
             f"must have at most {MAX_SLIDE_STEPS:,} elements to slide over, one step each (give a smaller input "
             "or a larger stride; the other topics take larger cases)")
    c = _slide_canvas(case)
    canvas, kernel = c["canvas"], c["kernel"]
    by_canvas = conv(canvas, kernel, stride=c["stride"], dilation=c["dilation"], groups=c["groups"])
    op = "conv_transpose2d" if case.transposed else "conv2d"
    counts = {name: int(np.sum(c["role"] == code)) for code, name in enumerate(ROLE_NAMES)}
    body: list[str | Show] = [case.describe() + "."]
    if case.transposed:
        body.append(
            "A transposed convolution scatters each input sample, times the kernel, into the output. Read from "
            "the output's side it is an ordinary convolution: spread the input with stride - 1 zeros between "
            "samples, pad it by dilation*(k - 1) - padding (output_padding more at the end), and slide the kernel, "
            "rotated 180 degrees and with its channel axes swapped, over it at stride 1.")
    else:
        body.append("The kernel slides over the padded input, stride cells at a time; at each position the window "
                    "times the kernel, summed, is one output element.")
    body.append("Canvas cells: " + ", ".join(f"{n} {name}" for name, n in counts.items() if n) + ".")
    body.append(_show(("canvas", f"canvas {_shape(canvas)}"), ("kernel", f"kernel as applied {_shape(kernel)}")))
    first = Step(
        topic="slide",
        title=f"What the kernel slides over ({case.name})",
        formula=("out[o, y, x] = sum_c,i,j canvas[c, y + i*dilation, x + j*dilation] * rot180(w)[o, c, i, j]"
                 if case.transposed else
                 "out[o, y, x] = sum_c,i,j padded[c, y*stride + i*dilation, x*stride + j*dilation] * w[o, c, i, j]"),
        body=tuple(body),
        check=f"sliding over the canvas as drawn gives {op}'s output {_shape(out)}",
        passed=_same(by_canvas, out),
        case=case.name,
        data={**{key: c[key] for key in ("canvas", "role", "kernel")}, "op": op, "output": out,
              "stride": list(c["stride"]), "dilation": list(c["dilation"]), "groups": c["groups"],
              "input": case.input, "weight": case.weight, "role_names": list(ROLE_NAMES),
              "description": case.describe(), "shapes": case.shapes(), "parameters": case.parameters()},
    )
    steps = [first]
    (kh, kw) = kernel.shape[2:]
    (sh, sw), (dh, dw) = c["stride"], c["dilation"]
    (top, _), (left, _) = c["padding"]
    for index, at in enumerate(np.ndindex(*out.shape)):
        if case.transposed:
            t = trace(canvas, kernel, at=at, dilation=c["dilation"], groups=c["groups"])
        else:
            t = trace(case.input, case.weight, at=at, **case.params)
        row0, col0 = at[1] * sh, at[2] * sw  # the window's first cell, in canvas coordinates
        taps = [[row0 + i * dh, col0 + j * dw] for i in range(kh) for j in range(kw)]
        # The trace's own first tap, moved onto the canvas, must be where the frame draws the window.
        offset = (0, 0) if case.transposed else (top, left)
        same_place = (t.first_tap[0] + offset[0], t.first_tap[1] + offset[1]) == (row0, col0)
        o, y, x = at
        steps.append(Step(
            topic="slide",
            title=f"out[{o}, {y}, {x}] = {_number(t.sum)}",
            formula=f"out[{o}, {y}, {x}] = sum(window * kernel[{o}])",
            body=(_show(("window", "window"), ("kernel", f"kernel[{o}]"), ("product", "window * kernel")),
                  f"{_terms(t.window, t.kernel, t.sum)}."),
            check=f"the sum equals {op}(...)[{o}, {y}, {x}]",
            passed=same_place and _same(t.sum, out[at]),
            case=case.name,
            data={"index": index, "at": list(at), "channels": list(t.input_channels), "taps": taps,
                  "window": t.window, "kernel": t.kernel, "product": t.product, "sum": t.sum,
                  "result": out[at]},
        ))
    return steps


# -- putting it together --------------------------------------------------------------------------


def _topic_steps(topic: str, case: Case, at: tuple[int, int, int]) -> list[Step]:
    if topic == "dot":
        return [_dot_step(case, at)]
    if topic == "im2col":
        return [_im2col_step(case), _conv_matrix_step(case)]
    if topic == "backprop":
        return _backprop_steps(case, _backprop_grad_output(case))
    if topic == "flip":
        return [_flip_step(case)]
    if topic == "shape":
        return [_shape_step(case)]
    return slide_steps(case)


def _standard_steps(topic: str, cases: dict[str, Case]) -> list[Step]:
    classic = cases["classic"]
    if topic == "dot":
        return [_dot_step(classic, (0, 0, 0)), _dot_step(cases["two-channel"], (0, 0, 0))]
    if topic == "im2col":
        return [
            _im2col_step(classic),
            _im2col_step(cases["two-filters"], intro="More filters are more columns: the same unrolled input "
                                                     "times a second filter, [[1, 0], [0, -1]], as a second column."),
            _conv_matrix_step(classic),
        ]
    if topic == "backprop":
        return _backprop_steps(classic, np.array([[[1, 2], [3, 4]]]))
    if topic == "flip":
        return [_flip_step(cases["sobel"])]
    if topic == "shape":
        return [_shape_step(cases[name]) for name in ("classic", "sobel", "strided")]
    return slide_steps(classic)


def _check_topics(topics: Sequence[str] | None, transposed: bool) -> tuple[str, ...]:
    if topics is None or len(topics) == 0:
        topics = ("slide",) if transposed else DEFAULT_TOPICS
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        raise ValueError(f"explain: topic must be one of {', '.join(map(repr, TOPICS))}, got {unknown[0]!r}")
    if transposed and set(topics) - {"slide"}:
        raise ValueError(f"explain: topics for a transposed convolution must be 'slide' only, got {list(topics)}")
    # In the order of TOPICS, each once.
    return tuple(t for t in TOPICS if t in topics)


def explain(case: Case | None = None, topics: Sequence[str] | None = None,
            at: Sequence[int] | None = None) -> Explanation:
    """Build the explanation: the standard examples (``case=None``) or one case, for the topics asked.

    Parameters
    ----------
    case : Case, optional
        The problem to explain; None walks through the standard examples
        (:func:`standard_cases`).
    topics : sequence of str, optional
        Keys of :data:`TOPICS`; default :data:`DEFAULT_TOPICS` (``("slide",)``
        for a transposed case).
    at : (c_out, row, col), optional
        The output element the ``dot`` topic takes apart (default the first).

    Returns
    -------
    Explanation
        The steps, with their data and computed checks.

    Raises
    ------
    ValueError
        An unknown topic; ``at`` outside the output.

    Examples
    --------
    >>> e = explain(topics=["im2col"])
    >>> e.steps[0].data["output"].tolist(), e.passed
    ([[[83, 113], [173, 203]]], True)
    """
    chosen = _check_topics(topics, case is not None and case.transposed)
    if case is None:
        cases = standard_cases()
        steps = [step for topic in chosen for step in _standard_steps(topic, cases)]
        used = tuple(cases[name] for name in cases if any(step.case == name for step in steps))
        return Explanation("convolab explain: the standard examples", used, tuple(steps))
    element = tuple(at) if at is not None else (0, 0, 0)
    shape = case.output().shape
    if len(element) != 3 or not all(0 <= i < n for i, n in zip(element, shape)):
        raise ValueError(f"explain: at must be (c_out, row, col) inside the output of shape {shape}, got {element}")
    steps = [step for topic in chosen for step in _topic_steps(topic, case, element)]
    return Explanation(f"convolab explain: {case.describe()}", (case,), tuple(steps))


def worked_examples() -> list[Step]:
    """The standard walk-through's steps (``explain().steps``)."""
    return list(explain().steps)


# -- renderers ------------------------------------------------------------------------------------


def _heading_for(steps: Sequence[Step]) -> Iterator[tuple[int, Step, str | None]]:
    """Each step with its number and, when a new topic starts, the question it answers."""
    previous = None
    for number, step in enumerate(steps, 1):
        yield number, step, (TOPICS[step.topic] if step.topic != previous else None)
        previous = step.topic


def _for_display(value: Any) -> Any:
    """An array with its leading length-1 axes dropped (down to 2-D): the label keeps the full shape."""
    if scipy.sparse.issparse(value):  # 2-D already; dense only when it prints whole
        return value.toarray() if prod(value.shape) <= SUMMARY_THRESHOLD else value
    a = np.asarray(value)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def _side_by_side(step: Step, show: Show, gap: str = "    ") -> list[str]:
    """Arrays under their labels, next to each other, as text lines."""
    blocks = []
    for key, label in zip(show.keys, show.labels):
        lines = _array_lines(_for_display(step.data[key]))
        width = max(len(label), *(len(line) for line in lines))
        blocks.append([label.ljust(width), *(line.ljust(width) for line in lines)])
    height = max(len(block) for block in blocks)
    rows = []
    for i in range(height):
        cells = [block[i] if i < len(block) else " " * len(block[0]) for block in blocks]
        rows.append(gap.join(cells).rstrip())
    return rows


def render_text(explanation: Explanation) -> str:
    """Plain text: per question a heading; per step its number, title, formula, numbers and the check's outcome."""
    out = [explanation.title, "Every step shows the numbers, the formula, and a check that was run.", ""]
    wrap = textwrap.TextWrapper(width=100, initial_indent="   ", subsequent_indent="   ", break_on_hyphens=False)
    for number, step, heading in _heading_for(explanation.steps):
        if heading is not None:
            out += ["=" * min(len(heading), 100), heading, "=" * min(len(heading), 100), ""]
        out += [f"{number}. {step.title}", f"   {step.formula}", ""]
        for item in step.body:
            if isinstance(item, Show):
                out += ["   " + line for line in _side_by_side(step, item)]
            else:
                for line in item.split("\n"):
                    out += wrap.wrap(line)
            out.append("")
        status = "check passed" if step.passed else "CHECK FAILED"
        out += [f"[{status}] {step.check}", ""]
    verdict = "All checks passed." if explanation.passed else "SOME CHECKS FAILED."
    out.append(f"{verdict} ({len(explanation.steps)} steps)")
    return "\n".join(out) + "\n"


def render_markdown(explanation: Explanation) -> str:
    """Markdown: questions as sections, steps as subsections, numbers in fenced blocks."""
    out = [f"# {explanation.title}", "", "Every step shows the numbers, the formula, and a check that was run.", ""]
    for number, step, heading in _heading_for(explanation.steps):
        if heading is not None:
            out += [f"## {heading}", ""]
        out += [f"### {number}. {step.title}", "", f"`{step.formula}`", ""]
        for item in step.body:
            if isinstance(item, Show):
                out += ["```text", *_side_by_side(step, item), "```"]
            else:
                out.append(item.replace("\n", "  \n"))
            out.append("")
        status = "**Check passed:**" if step.passed else "**CHECK FAILED:**"
        out += [f"{status} {step.check}", ""]
    verdict = "All checks passed." if explanation.passed else "**Some checks failed.**"
    out.append(f"{verdict} ({len(explanation.steps)} steps)")
    return "\n".join(out) + "\n"


def render_json(explanation: Explanation) -> str:
    """The explanation as strict JSON: the cases (with their outputs) and the steps, numbers as nested lists.

    Strict JSON has no NaN or Infinity, so a non-finite number (which a
    :class:`Case` refuses, but a hand-made :class:`Step` may hold) is written
    as the string ``"nan"``, ``"inf"`` or ``"-inf"``. The convolution matrix
    ``M`` (``"matrix"``) is nested lists up to :data:`MAX_DENSE_MATRIX_CELLS`
    entries and ``null`` beyond; its taps are always in ``"rows"``, ``"cols"``
    and ``"values"`` (with ``"shape"``), the sparse form.
    """
    return json.dumps(explanation.to_dict(), indent=2, allow_nan=False) + "\n"


def render_rich(explanation: Explanation, console: Any = None) -> None:
    """Print the explanation to a ``rich`` console: panels, tables for arrays, a coloured check line.

    Imports ``rich`` here, so nothing else in convolab needs it; the CLI calls
    this only when stdout is a terminal and ``rich`` is installed.
    """
    from rich import box
    from rich.columns import Columns
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    console = console or Console()

    def grid(a: np.ndarray) -> Any:
        if scipy.sparse.issparse(a) or a.ndim == 0 or a.ndim > 3 or a.size > SUMMARY_THRESHOLD or a.shape[-1] > 24:
            return Text("\n".join(_array_lines(a)))
        if a.ndim == 3:
            side_by_side = Table.grid(padding=(0, 1))
            side_by_side.add_row(*(Group(Text(f"[{c}]", style="dim"), grid(a[c])) for c in range(a.shape[0])))
            return side_by_side
        table = Table(show_header=False, box=box.SQUARE, padding=(0, 1))
        rows = a.reshape(1, -1) if a.ndim == 1 else a
        for _ in range(rows.shape[1]):
            table.add_column(justify="right")
        for row in rows:
            table.add_row(*(_number(v) for v in row))
        return table

    def labelled(label: str, value: Any) -> Any:
        return Group(Text(label, style="bold"), grid(_for_display(value)))

    console.print(Text(explanation.title, style="bold"))
    console.print("Every step shows the numbers, the formula, and a check that was run.\n")
    for number, step, heading in _heading_for(explanation.steps):
        if heading is not None:
            console.print(Rule(Text(heading, style="bold magenta")))
        parts: list[Any] = [Text(step.formula, style="cyan"), Text("")]
        for item in step.body:
            if isinstance(item, Show):
                parts.append(Columns([labelled(label, step.data[key]) for key, label in zip(item.keys, item.labels)],
                                     padding=(0, 4)))
            else:
                parts.append(Text(item))
            parts.append(Text(""))
        mark, style = ("check passed", "bold green") if step.passed else ("CHECK FAILED", "bold red")
        parts.append(Text.assemble((f"[{mark}] ", style), step.check))
        console.print(Panel(Group(*parts), title=Text(f"{number}. {step.title}", style="bold"), title_align="left",
                            box=box.ROUNDED))
    verdict = ("All checks passed.", "bold green") if explanation.passed else ("SOME CHECKS FAILED.", "bold red")
    console.print(Text.assemble(verdict, f" ({len(explanation.steps)} steps)"))
