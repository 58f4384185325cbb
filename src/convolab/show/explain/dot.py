"""Question 1: is one step of a convolution a dot product, or a Hadamard product and a sum?"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._window import pad
from .._format import counted, number, plus, shape_text, terms, vector
from ..tracing import trace
from .cases import Case
from .steps import Detail, Once, Show, Step, claim, same, show_arrays

__all__ = ["dot_step"]


def _window_index(t: Any, at: tuple[int, int, int]) -> tuple[slice, ...]:
    """Where the window lies in the padded input: its channels, then per axis start:stop:dilation."""
    spec = t.spec
    first = int(t.input_channels[0])
    index = [slice(first, first + len(t.input_channels))]
    for axis in range(2):
        start = at[axis + 1] * spec.stride[axis]
        index.append(slice(start, start + spec.dilation[axis] * (spec.kernel_size[axis] - 1) + 1, spec.dilation[axis]))
    return tuple(index)


def _index_text(index: tuple[slice, ...]) -> str:
    """``0:1, 0:2, 0:3:2``: slices as written inside brackets."""
    return ", ".join(f"{s.start}:{s.stop}" + (f":{s.step}" if s.step not in (None, 1) else "") for s in index)


def dot_step(case: Case, at: tuple[int, int, int]) -> Step:
    """One output element taken apart: the window in its input, the kernel, their elementwise product, its sum."""
    t = trace(case.input, case.weight, at=at, **case.params)
    window, kernel, product = t.window, t.kernel, t.product
    channels = window.shape[0]
    hadamard_sum = product.sum()
    padded = pad(case.input, case.spec.padding)
    in_window = np.zeros(padded.shape, dtype=bool)
    index = _window_index(t, at)
    in_window[index] = True
    co, y, x = at
    padded_name = "padded input" if any(low or high for low, high in case.spec.padding) else "input"
    body: list[Any] = [
        f"output[{co}, {y}, {x}] reads a {shape_text(window)} window of the {padded_name}"
        + (f" (input channels {t.input_channels[0]}-{t.input_channels[-1]})" if channels > 1 else "")
        + f" and multiplies it cell by cell by filter {co}: the Hadamard (elementwise) product.",
        Once("dot-input", show_arrays(("padded_input", f"{padded_name}, the window in [brackets]"),
                                      marks={"padded_input": "in_window"})),
    ]
    if t.is_padding.any():
        body.append(f"{counted(int(t.is_padding.sum()), 'of its cells lies', 'of its cells lie')} in the zero "
                    "padding.")
    body += [
        show_arrays(("window", "window"), ("kernel", f"kernel (filter {co})"), ("product", "window * kernel")),
    ]
    summed = f"Summing that product: {terms(window, kernel, hadamard_sum)}."
    if channels > 1:
        per_channel = [product[c].sum() for c in range(channels)]
        summed += (f" With {channels} input channels the window is 3-D and the sum runs over all of it (channel sums "
                   f"{plus(per_channel)}): still one dot product, of longer vectors.")
    body.append(summed)
    body.append(Once("dot-is-hadamard", f"Laid flat, the dot product {vector(window)} . {vector(kernel)} = "
                     f"{number(np.dot(window.ravel(), kernel.ravel()))} multiplies the same pairs and adds the same "
                     "products: 'dot product' and 'Hadamard product, then sum' name one computation."))
    data: dict[str, Any] = {"at": list(at), "input": case.input, "weight": case.weight, "padded_input": padded,
                            "in_window": in_window, "window": window, "kernel": kernel, "product": product,
                            "is_padding": t.is_padding, "sum": hadamard_sum,
                            "dot": np.dot(window.ravel(), kernel.ravel()), "output": case.output()}
    kh, kw = window.shape[-2:]
    if channels == 1 and kh == kw:
        data["matmul"] = window[0] @ kernel[0]
        body += [
            Once("not-matmul", "Not the matrix product window @ kernel (rows times columns: a matrix); only the "
                 "trace of window[0].T @ kernel[0] is the sum again."),
            Detail(show_arrays(("matmul", "window[0] @ kernel[0] (a different thing)"))),
        ]
    # The Frobenius inner product is a trace per 2-D slice, summed over the channels.
    trace_sum = ("np.trace(window[0].T @ kernel[0])" if channels == 1 else
                 f"np.sum([np.trace(window[c].T @ kernel[c]) for c in range({channels})])")
    element = f"output[{co}, {y}, {x}]"
    formula = claim(data, element, "(window * kernel).sum()", "window.ravel() @ kernel.ravel()")
    claims = (formula,
              claim(data, f"padded_input[{_index_text(index)}]", "window"),
              claim(data, "np.dot(window.ravel(), kernel.ravel())", trace_sum, f"{case.call()}[{co}, {y}, {x}]"))
    passed = (all(c.holds for c in claims) and same(hadamard_sum, data["dot"])
              and same(hadamard_sum, data["output"][at]))
    return Step(
        topic="dot",
        title=f"One output element: a Hadamard product and a sum, a dot product ({case.name})",
        formula=formula.text(),
        body=tuple(body),
        check="the window sliced from the input; the sum four ways:",
        passed=passed,
        case=case.name,
        data=data,
        claims=claims,
    )
