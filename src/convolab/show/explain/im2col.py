"""Question 2: how is a whole convolution one matrix product (im2col, and one sparse matrix)?"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._window import pad
from ...grad import conv_input
from .._format import counted, number, shape_text
from ..checks import check_direct_equals_im2col
from ..matrices import conv_matrix, im2col_matrices
from .cases import Case, example_grad_output
from .steps import Claim, Detail, Once, Show, Step, claim, same, show_arrays

__all__ = ["im2col_step", "conv_matrix_step"]

#: The unrolled rows tied to their windows by a printed claim each, at most this many (all with --verbose's data).
ROWS_TIED = 4


def _row_claims(case: Case, data: dict[str, Any], grouped: bool) -> list[Claim]:
    """``unrolled[r] = padded_input[c, rows, cols].ravel()``: each of the first rows is the window of its output."""
    spec = case.spec
    per_group = spec.in_channels_per_group
    claims = []
    for r, (y, x) in enumerate(np.ndindex(*spec.output_size)):
        if r == ROWS_TIED:
            break
        axes = []
        for position, s, d, k in zip((y, x), spec.stride, spec.dilation, spec.kernel_size):
            start = position * s
            axes.append(f"{start}:{start + d * (k - 1) + 1}" + (f":{d}" if d > 1 else ""))
        row = f"unrolled[0, {r}]" if grouped else f"unrolled[{r}]"
        claims.append(claim(data, row, f"padded_input[0:{per_group}, {', '.join(axes)}].ravel()"))
    return claims


def im2col_step(case: Case, intro: str | None = None) -> Step:
    """im2col: the unrolled input (one row per window) times the filter matrix, reshaped, is the output."""
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
    height, width = spec.output_size
    body: list[Any] = [] if intro is None else [intro]
    body.append(Once(
        "im2col", f"im2col ('image to columns'; PyTorch's unfold gives its transpose): unroll the input into one "
        f"row per output position ({height}x{width} = {counted(rows, 'row')}), each the window that position reads, "
        f"laid flat (C_in/groups * kH * kW = {counted(cols, 'number')}), and each filter into a column."))
    body.append(f"Here {counted(spec.out_channels_per_group, 'filter')}{' per group' if grouped else ''}, so "
                f"{counted(spec.out_channels_per_group, 'column')} (each further filter adds one):")
    if grouped:
        body.append(f"With groups={spec.groups} there is one such product per group, each over its own input "
                    "channels and filters (the leading axis below).")
    if ones.unrolled.size and not ones.unrolled.all():
        body.append("Entries from the zero padding are zeros in the unrolled input.")
    row_labels = [list(label[1:]) for label in m.row_labels]
    body += [
        show_arrays(("unrolled", f"unrolled input {shape_text(m.unrolled)}"),
                    ("filters", f"filters {shape_text(m.filters)}")),
        f"Row r is the window of output position r, laid flat (the checks slice each from the input). A row times "
        "a column is one window dotted with one filter (question 1): one matrix product computes every output, "
        f"column o, read row by row, being output channel o ({height}x{width}):",
        Detail(show_arrays(("product", f"unrolled @ filters {shape_text(product)}"))),
        show_arrays(("output", f"output {shape_text(out)}")),
    ]
    data: dict[str, Any] = {"input": case.input, "weight": case.weight, "padded_input": pad(case.input, spec.padding),
                            "unrolled": m.unrolled, "filters": m.filters, "product": product, "output": out,
                            "from_padding": ones.unrolled == 0, "row_labels": row_labels,
                            "column_labels": [list(label) for label in m.column_labels], "groups": spec.groups,
                            # What the pictures need to draw each row's window on the input it came from.
                            "padding": [list(p) for p in spec.padding], "stride": list(spec.stride),
                            "dilation": list(spec.dilation), "kernel_size": list(spec.kernel_size)}
    if grouped:
        folded = (f"np.concatenate([(unrolled[g] @ filters[g]).T for g in range({spec.groups})])"
                  f".reshape(output.shape)")
    else:
        folded = "(unrolled @ filters).T.reshape(output.shape)"
    formula = claim(data, folded, "output")
    claims = (formula, *_row_claims(case, data, grouped), claim(data, "output", case.call()))
    return Step(
        topic="im2col",
        title=f"im2col: the whole convolution as one matrix product ({case.name})",
        formula=formula.text(),
        body=tuple(body),
        check=f"the product is the convolution (max |difference| {number(identity.max_abs_difference)}); rows:",
        passed=identity.holds and same(m.output(), out) and all(c.holds for c in claims),
        case=case.name,
        data=data,
        claims=claims,
    )


def conv_matrix_step(case: Case) -> Step:
    """The convolution as one (sparse) matrix times the flattened input; its transpose is the backward pass."""
    matrix = conv_matrix(case.input.shape, case.weight, **case.params)
    x = case.input.ravel()
    out = case.output()
    by_matrix = matrix @ x
    grad_output = example_grad_output(case)
    grad_input = conv_input(case.input.shape, case.weight, grad_output, **case.params)
    coo = matrix.tocoo()
    rows, cols = matrix.shape
    body: list[Any] = [
        f"The other way round: linear in its input, a convolution is one matrix M, a row per output ({rows}), a "
        f"column per input element ({cols}), the taps where output r reads ({coo.nnz} of {rows * cols}):",
        show_arrays(("matrix", f"matrix M {shape_text(matrix)}"), ("input_vector", f"input.ravel() {shape_text(x)}")),
        Detail(show_arrays(("output_vector", f"matrix @ input.ravel() {shape_text(by_matrix)}"))),
        "M.T takes output gradients to input gradients (question 3): hence the name transposed convolution.",
    ]
    data: dict[str, Any] = {"matrix": matrix, "shape": [rows, cols], "rows": coo.row, "cols": coo.col,
                            "values": coo.data, "input": case.input, "weight": case.weight, "input_vector": x,
                            "output_vector": by_matrix, "output": out, "grad_output": grad_output,
                            "row_labels": [list(i) for i in np.ndindex(*out.shape)],
                            "column_labels": [list(i) for i in np.ndindex(*case.input.shape)]}
    formula = claim(data, "matrix @ input.ravel()", f"{case.call()}.ravel()")
    gradient = f"conv2d_input(input.shape, weight, grad_output{case.keywords()}).ravel()"
    claims = (formula, claim(data, "matrix.T @ grad_output.ravel()", gradient))
    return Step(
        topic="im2col",
        title=f"Or: one sparse matrix times the flattened input ({case.name})",
        formula=formula.text(),
        body=tuple(body),
        check="M.T @ grad_output.ravel() is the input gradient:",
        passed=same(by_matrix, out.ravel()) and same(matrix.T @ grad_output.ravel(), grad_input.ravel())
        and all(c.holds for c in claims),
        case=case.name,
        data=data,
        claims=claims,
    )
