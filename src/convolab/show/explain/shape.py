"""The output size, and which input rows and columns no window ever reads (and a transposed convolution's size)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import shapes
from ...grad import conv_input
from ...spec import normalize_ints, normalize_padding
from .._format import counted, ranges, shape_text
from .cases import Case
from .steps import Detail, Once, Step, claim, show_arrays

__all__ = ["read_sets", "shape_step", "transposed_shape_step"]

AXES = ("rows", "columns")


def read_sets(case: Case) -> list[np.ndarray]:
    """Per spatial dimension, the input indices some window reads: {p*stride + j*dilation - low} within the input."""
    spec = case.spec
    read = []
    for size, k, s, (low, _), d, out in zip(spec.input_size, spec.kernel_size, spec.stride, spec.padding,
                                            spec.dilation, spec.output_size):
        taps = (np.arange(out)[:, None] * s + np.arange(k)[None, :] * d - low).ravel()
        read.append(np.unique(taps[(taps >= 0) & (taps < size)]))
    return read


def _per_axis_claims(data: dict[str, Any], per_axis: list[str]) -> list[Any]:
    """``expression = output.shape[1] = value`` per axis; one claim for both when the arithmetic is the same."""
    if per_axis[0] == per_axis[1]:
        return [claim(data, per_axis[0], "output.shape[1]", "output.shape[2]")]
    return [claim(data, expression, f"output.shape[{axis + 1}]") for axis, expression in enumerate(per_axis)]


def _same_at_stride(case: Case, data: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """``padding='same'`` at a stride above 1, derived per axis, and the claims that check it."""
    spec = case.spec
    body: list[Any] = []
    claims = []
    totals = []
    others = "".join(f", {name}={value!r}" for name, value, default in (
        ("dilation", spec.dilation, (1, 1)), ("groups", spec.groups, 1)) if value != default)
    same_call = f"conv2d(input, weight, stride={spec.stride!r}, padding='same'{others})"
    for axis, (n, k, s, d) in enumerate(zip(spec.input_size, spec.kernel_size, spec.stride, spec.dilation)):
        out = -(-n // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        totals.append((AXES[axis], n, s, out, total, total // 2, total - total // 2))
        axis_claims = [claim(data, f"-(-{n} // {s})", f"{same_call}.shape[{axis + 1}]"),
                       claim(data, f"max(({out} - 1)*{s} + {d}*({k} - 1) + 1 - {n}, 0)")]
        if axis and [c.sides[0] for c in axis_claims] == [c.sides[0] for c in claims]:
            claims[0] = claim(data, *claims[0].sides, f"{same_call}.shape[2]")  # both axes alike
        else:
            claims += axis_claims
    body.append(Once("same-strided", "padding='same' at stride s means ceil(n / s) = -(-n // s) outputs, from "
                                     "max((out - 1)*s + d*(k - 1) + 1 - n, 0) cells of padding, total // 2 before "
                                     "(as TensorFlow and JAX). PyTorch refuses padding='same' unless s = 1."))
    described = [f"ceil({n} / {s}) = {out} outputs, padding {total} = {low} before + {high} after"
                 for _, n, s, out, total, low, high in totals]
    body.append(f"Here, on both axes: {described[0]}." if described[0] == described[1] else
                f"Here: rows {described[0]}; columns {described[1]}.")
    return body, claims


def shape_step(case: Case) -> Step:
    spec = case.spec
    out = case.output()
    data: dict[str, Any] = {"input": case.input, "weight": case.weight, "output": out}
    sizes, unread, trailing, per_axis = [], [], [], []
    for axis, (size, k, s, (low, high), d) in enumerate(zip(spec.input_size, spec.kernel_size, spec.stride,
                                                            spec.padding, spec.dilation)):
        sizes.append(shapes.conv_output_size(size, k, s, (low, high), d))
        per_axis.append(f"({size} + {low} + {high} - {d}*({k} - 1) - 1) // {s} + 1")
        trailing.append(shapes.unread_input_count(size, k, s, (low, high), d))
    claims = _per_axis_claims(data, per_axis)
    read = read_sets(case)
    for axis, size in enumerate(spec.input_size):
        unread.append(sorted(set(range(size)) - set(read[axis].tolist())))
    # How many (output, tap) pairs read each input sample: the input gradient of all-ones, for a one-channel filter.
    ones_weight = np.ones((1, 1, *spec.kernel_size), dtype=np.int64)
    read_count = conv_input((1, *spec.input_size), ones_weight, np.ones((1, *spec.output_size), dtype=np.int64),
                            stride=spec.stride, padding=spec.padding, dilation=spec.dilation)[0]
    data["read_count"] = read_count
    zero_rows = [i for i in range(spec.input_size[0]) if not read_count[i].any()]
    zero_cols = [j for j in range(spec.input_size[1]) if not read_count[:, j].any()]
    body: list[Any] = [
        Once("size-formula", "Per axis, with input size n, padding low + high, kernel size k, dilation d and stride "
                             "s, the kernel spans d*(k - 1) + 1 cells and fits (n + low + high - d*(k - 1) - 1) // s "
                             "+ 1 times (// rounds down)."),
        Detail(f"Here: {sizes[0]}x{sizes[1]} per filter, {counted(spec.out_channels, 'filter')}, so the output has "
               f"shape {shape_text(out)}."),
    ]
    course = [axis for axis in range(2) if spec.dilation[axis] == 1 and spec.padding[axis][0] == spec.padding[axis][1]]
    if course:
        axis = course[0]
        n, k, s, p = spec.input_size[axis], spec.kernel_size[axis], spec.stride[axis], spec.padding[axis][0]
        body.append(Once("course-formula", "The course formula (W - K + 2P)/S + 1 is this with low = high = P and "
                                           "d = 1, its division rounded down: (W - K + 2P) // S + 1."))
        claims.append(claim(data, f"({n} - {k} + 2*{p}) // {s} + 1", f"output.shape[{axis + 1}]"))
    shown = show_arrays(("read_count", f"reads per input sample {shape_text(read_count)}"))
    # The read counts show never-read rows and columns as zeros; when all are read, only the long form shows them.
    counts = ["How many times the windows read each input sample:", shown]
    body += counts if any(unread) else [Detail(item) for item in counts]
    reasons: dict[str, list[str]] = {}
    for axis, cells in enumerate(unread):
        size, k, s, (low, high), d = (spec.input_size[axis], spec.kernel_size[axis], spec.stride[axis],
                                      spec.padding[axis], spec.dilation[axis])
        span = shapes.dilated_kernel_size(k, d)
        tail = [i for i in cells if i >= size - trailing[axis]]  # past the last window
        inside = [i for i in cells if i < size - trailing[axis]]  # between the dilated taps
        singular = "row" if axis == 0 else "column"
        for part, why in (
            (inside, "the dilated kernel's taps step over them"),
            (tail, f"the stride {s} does not divide {size + low + high - span} (the padded size {size + low + high} "
                   f"minus the kernel's span {span}): the last window stops "
                   f"{(size + low + high - span) % s} short"),
        ):
            if part:
                reasons.setdefault(why, []).append(f"{singular}{'s' if len(part) > 1 else ''} {ranges(part)} "
                                                   f"(of {size})")
    notes = []
    if reasons:
        notes = ["Never read: " + "; ".join(f"input {' and '.join(whats)}, because {why}"
                                            for why, whats in reasons.items())
                 + ". They do not affect the output; their gradient is zero."]
    body += notes or ["Every input row and column is read by some window."]
    if any(s > 1 for s in spec.stride):
        same_body, same_claims = _same_at_stride(case, data)
        body += same_body
        claims += same_claims
    passed = (tuple(sizes) == out.shape[1:] and unread == [zero_rows, zero_cols]
              and all(t == sum(1 for i in cells if i >= size - t) for t, cells, size in
                      zip(trailing, unread, spec.input_size))
              and all(c.holds for c in claims))
    never = "; ".join(f"{name} {ranges(cells)}" for name, cells in zip(AXES, unread) if cells) or "none"
    return Step(
        topic="shape",
        title=f"The output size, and what is never read ({case.name})",
        formula=claims[0].text(),
        body=tuple(body),
        check=f"the formula gives conv2d's {sizes[0]}x{sizes[1]}; never read: {never}:",
        passed=bool(passed),
        case=case.name,
        data={**data, "output_size": sizes, "output_shape": list(out.shape), "unread_rows": unread[0],
              "unread_columns": unread[1]},
        claims=tuple(claims),
    )


def transposed_shape_step(case: Case) -> Step:
    """A transposed convolution's output size, ``output_padding`` included, and the forward it undoes."""
    op = "conv_transpose2d"
    stride = normalize_ints(case.stride, 2, "stride", op)
    dilation = normalize_ints(case.dilation, 2, "dilation", op)
    padding = normalize_padding(case.padding, 2, op)
    extra = normalize_ints(case.output_padding, 2, "output_padding", op, 0)
    out = case.output()
    data: dict[str, Any] = {"input": case.input, "weight": case.weight, "output": out}
    claims = []
    for axis in range(2):
        n, k = case.input.shape[axis + 1], case.weight.shape[axis + 2]
        (low, high), s, d, e = padding[axis], stride[axis], dilation[axis], extra[axis]
        claims.append(claim(data, f"({n} - 1)*{s} - {low} - {high} + {d}*({k} - 1) + {e} + 1",
                            f"output.shape[{axis + 1}]"))
    forward = "".join(f", {name}={value!r}" for name, value, default in (
        ("stride", stride, (1, 1)), ("padding", padding, ((0, 0), (0, 0))), ("dilation", dilation, (1, 1)),
        ("groups", case.groups, 1)) if value != default)
    claims.append(claim(data, f"conv2d(output, weight{forward}).shape", "input.shape"))
    body: list[Any] = [
        "A transposed convolution runs the forward's size arithmetic backwards: its output is as large as an input "
        "whose forward convolution, with the same kernel, stride, padding and dilation, has this input's size. "
        "Solving out = (n + low + high - d*(k - 1) - 1) // s + 1 for n gives, per axis, n = (out - 1)*s - low - "
        "high + d*(k - 1) + 1, the smallest such size.",
        "The floor in the forward formula means that s sizes in a row all give the same out; output_padding (less "
        "than the stride or the dilation) picks a larger one, adding that many rows or columns at the bottom or "
        f"right. Here output_padding is {extra}.",
        f"So the output is {out.shape[1]}x{out.shape[2]} per channel: shape {shape_text(out)}. The forward "
        "convolution of an array that size, with this weight, has the input's shape again (the second check).",
    ]
    return Step(
        topic="shape",
        title=f"The output size of a transposed convolution ({case.name})",
        formula=claims[0].text(),
        body=tuple(body),
        check="per axis, (n - 1)*s - low - high + d*(k - 1) + output_padding + 1 is the size conv_transpose2d "
              "returned, and the forward convolution maps it back to the input's size:",
        passed=all(c.holds for c in claims),
        case=case.name,
        data={**data, "output_shape": list(out.shape)},
        claims=tuple(claims),
    )
