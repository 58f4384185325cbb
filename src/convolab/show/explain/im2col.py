"""Question 2: how is a whole convolution one matrix product (and one sparse matrix)?"""

from __future__ import annotations

import numpy as np

from ...grad import conv_input
from .._format import number, shape_text
from ..checks import check_direct_equals_im2col
from ..matrices import conv_matrix, im2col_matrices
from .cases import Case, example_grad_output
from .steps import Show, Step, same, show_arrays

__all__ = ["im2col_step", "conv_matrix_step"]


def im2col_step(case: Case, intro: str | None = None) -> Step:
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
        show_arrays(("unrolled", f"unrolled input {shape_text(m.unrolled)}"),
                    ("filters", f"filters {shape_text(m.filters)}")),
        "Each row times each column is one window dotted with one filter (question 1), so one matrix product "
        "computes every output element at once:",
        show_arrays(("product", f"unrolled @ filters {shape_text(product)}")),
        f"Column o of the product, read row by row, is output channel o: reshape each to "
        f"{spec.output_size[0]}x{spec.output_size[1]}.",
        show_arrays(("output", f"output {shape_text(out)}")),
    ]
    column_labels = [list(label) for label in m.column_labels]
    return Step(
        topic="im2col",
        title=f"The whole convolution is one matrix product: unrolled input @ filter matrix ({case.name})",
        formula="output[o, y, x] = (unrolled @ filters)[y * W_out + x, o]; "
                "unrolled[y * W_out + x] = window(y, x).ravel(), filters[:, o] = weight[o].ravel()",
        body=tuple(body),
        check=f"the product, reshaped, equals the convolution computed one element at a time "
              f"(max |difference| = {number(identity.max_abs_difference)})",
        passed=identity.holds and same(m.output(), out),
        case=case.name,
        data={"unrolled": m.unrolled, "filters": m.filters, "product": product, "output": out,
              "from_padding": ones.unrolled == 0, "row_labels": [list(label[1:]) for label in m.row_labels],
              "column_labels": column_labels, "groups": spec.groups,
              # What the pictures need to draw each row's window on the input it came from.
              "input": case.input, "padding": [list(p) for p in spec.padding], "stride": list(spec.stride),
              "dilation": list(spec.dilation), "kernel_size": list(spec.kernel_size)},
    )


def conv_matrix_step(case: Case) -> Step:
    """The convolution as one (sparse) matrix times the flattened input; its transpose is the backward pass."""
    matrix = conv_matrix(case.input.shape, case.weight, **case.params)
    x = case.input.ravel()
    out = case.output()
    by_matrix = matrix @ x
    grad_output = example_grad_output(case)
    by_transpose = matrix.T @ grad_output.ravel()
    grad_input = conv_input(case.input.shape, case.weight, grad_output, **case.params)
    coo = matrix.tocoo()
    rows, cols = matrix.shape
    body: list[str | Show] = [
        f"The other way round: a convolution (without bias) is linear in its input, so it is one matrix M with a "
        f"row per output element ({rows}) and a column per input element ({cols}). Row r holds the kernel's taps in "
        f"the columns of the input samples that output element r reads, zeros elsewhere: {coo.nnz} of its "
        f"{rows * cols} entries are taps.",
        show_arrays(("matrix", f"M {shape_text(matrix)}"), ("input_vector", f"input.ravel() {shape_text(x)}")),
        show_arrays(("output_vector", f"M @ input.ravel() {shape_text(by_matrix)}")),
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
        passed=same(by_matrix, out.ravel()) and same(by_transpose, grad_input.ravel()),
        case=case.name,
        data={"matrix": matrix, "shape": [rows, cols], "rows": coo.row, "cols": coo.col, "values": coo.data,
              "input_vector": x, "output_vector": by_matrix, "output": out,
              "row_labels": [list(i) for i in np.ndindex(*out.shape)],
              "column_labels": [list(i) for i in np.ndindex(*case.input.shape)]},
    )
