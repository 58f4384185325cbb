"""The cases explained: :class:`Case`, the standard examples, and the limits on what is walked through.

A case is refused on construction (``ValueError`` naming the parameter, the
value and the rule) when it is too large to show every number, holds NaN or
infinity, or has values whose sums could overflow: the steps would then show
no arithmetic worth reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from ..._dtypes import _largest_magnitude, result_dtype
from ..._errors import fail
from ...functional import check_array, conv
from ...spec import PaddingArg, conv_spec, normalize_ints, normalize_padding
from ...transposed import _transpose_geometry
from ...transposed import conv_transpose
from .._format import number, strict_json

__all__ = [
    "MAX_CELLS",
    "MAX_CANVAS_CELLS",
    "MAX_PRODUCTS",
    "MAX_SLIDE_STEPS",
    "Case",
    "standard_cases",
    "example_grad_output",
]

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

    def keywords(self) -> str:
        """The parameters that differ from the defaults, as Python keyword arguments: ``", stride=2, padding=1"``.

        What a printed claim passes to ``conv2d`` (or ``conv_transpose2d``) so that it reads as the call it is.
        """
        defaults = dict(stride=1, padding=0, dilation=1, groups=1)
        given = dict(self.params)
        if self.transposed:
            defaults["output_padding"], given["output_padding"] = 0, self.output_padding
        return "".join(f", {name}={value!r}" for name, value in given.items() if value != defaults[name])

    def call(self) -> str:
        """The op applied to the case, as Python over the names ``input`` and ``weight``."""
        op = "conv_transpose2d" if self.transposed else "conv2d"
        return f"{op}(input, weight{self.keywords()})"

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
        plan, _ = _transpose_geometry(op, 2, x, w, case.stride, case.padding, case.output_padding, case.groups,
                                      case.dilation, None)
        forward = plan.spec  # the convolution this one transposes: over our output (the crop its padding) or extent
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
            fail(ValueError, "explain", name, f"{number(a[where])} at {where}",
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
             f"values up to {number(largest_x)}{gradient} against weight values up to {number(largest_w)}, "
             f"summed over {terms} product{'s' if terms > 1 else ''} (bound {number(bound)})",
             f"must keep every sum the walk-through computes within {dtype}'s range, with room for the checks' "
             f"differences (at most {number(most)}; scale the values down)")


def standard_cases() -> dict[str, Case]:
    """The standard examples, by name.

    - ``classic``: the kernel ``[[9, 8], [7, 6]]`` over ``1..9``: ``[[83, 113], [173, 203]]``;
    - ``two-channel``: the same with a second channel (``10..18`` under ``[[1, 0], [0, -1]]``), a 3-D window;
    - ``two-filters``: ``1..9`` under both kernels, two output channels;
    - ``sobel``: ``[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]`` over ``1..9`` with padding 1;
    - ``stride-2-padding-1``: the classic at stride 2 with padding 1, where backprop pads, then crops;
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
        "stride-2-padding-1": Case("stride-2-padding-1", image, kernel[None, None], stride=2, padding=1),
        "strided": Case("strided", np.arange(1, 37).reshape(1, 6, 6), np.ones((1, 1, 3, 3), dtype=np.int64),
                        stride=2),
    }


def example_grad_output(case: Case) -> np.ndarray:
    """The upstream gradient the backprop steps use: 1, 2, 3, ... in the output's shape (any numbers would do)."""
    shape = case.output().shape
    return np.arange(1, prod(shape) + 1).reshape(shape).astype(case.weight.dtype)
