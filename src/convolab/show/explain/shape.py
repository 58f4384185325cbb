"""The output size, and which input rows and columns no window ever reads."""

from __future__ import annotations

import numpy as np

from ... import shapes
from ...grad import conv_input
from .._format import ranges, shape_text
from .cases import Case
from .steps import Show, Step, show_arrays

__all__ = ["read_sets", "shape_step"]


def read_sets(case: Case) -> list[np.ndarray]:
    """Per spatial dimension, the input indices some window reads: {p*stride + j*dilation - low} within the input."""
    spec = case.spec
    read = []
    for size, k, s, (low, _), d, out in zip(spec.input_size, spec.kernel_size, spec.stride, spec.padding,
                                            spec.dilation, spec.output_size):
        taps = (np.arange(out)[:, None] * s + np.arange(k)[None, :] * d - low).ravel()
        read.append(np.unique(taps[(taps >= 0) & (taps < size)]))
    return read


def shape_step(case: Case) -> Step:
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
    read = read_sets(case)
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
        f"{'s' if spec.out_channels > 1 else ''}: shape {shape_text(out)}.",
        "How many times the windows read each input sample:",
        show_arrays(("read_count", f"reads per input sample {shape_text(read_count)}")),
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
                reasons.setdefault(why, []).append(f"{singular}{'s' if len(part) > 1 else ''} {ranges(part)} "
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
    never = "; ".join(f"{name} {ranges(cells)}" for name, cells in zip(names, unread) if cells) or "none"
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
