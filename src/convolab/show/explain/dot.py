"""Question 1: is one step of a convolution a dot product, or a Hadamard product and a sum?"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._format import number, plus, shape_text, terms, vector
from ..tracing import trace
from .cases import Case
from .steps import Show, Step, same, show_arrays

__all__ = ["dot_step"]


def dot_step(case: Case, at: tuple[int, int, int]) -> Step:
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
        f"Output element out[{co}, {y}, {x}] reads a {shape_text(window)} window of the "
        + ("padded input" if t.is_padding.any() else "input")
        + (f" (input channels {t.input_channels[0]}-{t.input_channels[-1]})" if channels > 1 else "")
        + f" and multiplies it, cell by cell, by filter {co}: the Hadamard (elementwise) product.",
    ]
    if t.is_padding.any():
        body.append(f"{int(t.is_padding.sum())} of its cells lie in the zero padding.")
    body += [
        show_arrays(("window", "window"), ("kernel", f"kernel (filter {co})"), ("product", "window * kernel")),
        f"Summing that product: {terms(window, kernel, hadamard_sum)}.",
    ]
    if channels > 1:
        per_channel = [product[c].sum() for c in range(channels)]
        body.append(
            f"With {channels} input channels the window is 3-D; the sum runs over every cell of it, "
            f"channel sums {plus(per_channel)} = {number(hadamard_sum)}. "
            "Nothing new: it is still one dot product, of longer vectors."
        )
    body.append(
        f"Lay both arrays flat (window.ravel() and kernel.ravel(), {window.size} numbers each) and take their "
        f"dot product: {vector(window)} . {vector(kernel)} = {number(dot)}. The same pairs are multiplied and "
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
            show_arrays(("matmul", "window @ kernel (a different thing)")),
        ]
    passed = same(hadamard_sum, dot) and same(dot, frobenius) and same(hadamard_sum, element)
    return Step(
        topic="dot",
        title=f"One output element is a Hadamard product and a sum, which is a dot product ({case.name})",
        formula=f"out[{co}, y, x] = sum_c,i,j window[c, i, j] * kernel[c, i, j] = window.ravel() . kernel.ravel()",
        body=tuple(body),
        check=(f"sum(window * kernel) = dot(window.ravel(), kernel.ravel()) = trace(window.T @ kernel) "
               f"= conv2d(...)[{co}, {y}, {x}] = {number(element)}"),
        passed=passed,
        case=case.name,
        data=data,
    )
