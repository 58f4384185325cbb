"""The kernel sliding over the input, one step per output element (the frames of ``convolab animate``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..._errors import fail
from ..._window import pad, reverse_spatial
from ...functional import conv
from ...spec import normalize_ints, normalize_padding
from .._format import number, shape_text, terms
from ..tracing import trace
from .cases import MAX_SLIDE_STEPS, Case
from .shape import read_sets
from .steps import Show, Step, same, show_arrays

__all__ = ["ROLE_NAMES", "INPUT", "PADDING", "INSERTED", "UNREAD", "slide_steps", "window_taps"]

#: Cell roles on the canvas the kernel slides over (``slide`` steps): codes 0..4.
ROLE_NAMES = ("input", "padding", "inserted zero", "never read")
INPUT, PADDING, INSERTED, UNREAD = range(4)


def window_taps(position: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                kernel_size: Sequence[int]) -> list[list[int]]:
    """The cells ``[row, col]`` of the padded input that output position ``(y, x)``'s window reads, tap by tap.

    Along each axis, output position ``p`` with kernel offset ``k`` reads
    ``p * stride + k * dilation``. In the kernel's order (row-major), so tap
    ``i * kW + j`` meets ``kernel[..., i, j]``.

    >>> window_taps((1, 0), stride=(2, 2), dilation=(1, 1), kernel_size=(2, 2))
    [[2, 0], [2, 1], [3, 0], [3, 1]]
    """
    return [[int(p * s + k * d) for p, s, k, d in zip(position, stride, offset, dilation)]
            for offset in np.ndindex(*kernel_size)]


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
        read = read_sets(case)
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
    >>> from convolab.show.explain import standard_cases
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
    body.append(show_arrays(("canvas", f"canvas {shape_text(canvas)}"),
                            ("kernel", f"kernel as applied {shape_text(kernel)}")))
    first = Step(
        topic="slide",
        title=f"What the kernel slides over ({case.name})",
        formula=("out[o, y, x] = sum_c,i,j canvas[c, y + i*dilation, x + j*dilation] * rot180(w)[o, c, i, j]"
                 if case.transposed else
                 "out[o, y, x] = sum_c,i,j padded[c, y*stride + i*dilation, x*stride + j*dilation] * w[o, c, i, j]"),
        body=tuple(body),
        check=f"sliding over the canvas as drawn gives {op}'s output {shape_text(out)}",
        passed=same(by_canvas, out),
        case=case.name,
        data={**{key: c[key] for key in ("canvas", "role", "kernel")}, "op": op, "output": out,
              "stride": list(c["stride"]), "dilation": list(c["dilation"]), "groups": c["groups"],
              "input": case.input, "weight": case.weight, "role_names": list(ROLE_NAMES),
              "description": case.describe(), "shapes": case.shapes(), "parameters": case.parameters()},
    )
    steps = [first]
    (top, _), (left, _) = c["padding"]
    for index, at in enumerate(np.ndindex(*out.shape)):
        if case.transposed:
            t = trace(canvas, kernel, at=at, dilation=c["dilation"], groups=c["groups"])
        else:
            t = trace(case.input, case.weight, at=at, **case.params)
        taps = window_taps(at[1:], c["stride"], c["dilation"], kernel.shape[2:])
        row0, col0 = taps[0]  # the window's first cell, in canvas coordinates
        # The trace's own first tap, moved onto the canvas, must be where the frame draws the window.
        offset = (0, 0) if case.transposed else (top, left)
        same_place = (t.first_tap[0] + offset[0], t.first_tap[1] + offset[1]) == (row0, col0)
        o, y, x = at
        steps.append(Step(
            topic="slide",
            title=f"out[{o}, {y}, {x}] = {number(t.sum)}",
            formula=f"out[{o}, {y}, {x}] = sum(window * kernel[{o}])",
            body=(show_arrays(("window", "window"), ("kernel", f"kernel[{o}]"), ("product", "window * kernel")),
                  f"{terms(t.window, t.kernel, t.sum)}."),
            check=f"the sum equals {op}(...)[{o}, {y}, {x}]",
            passed=same_place and same(t.sum, out[at]),
            case=case.name,
            data={"index": index, "at": list(at), "channels": list(t.input_channels), "taps": taps,
                  "window": t.window, "kernel": t.kernel, "product": t.product, "sum": t.sum,
                  "result": out[at]},
        ))
    return steps
