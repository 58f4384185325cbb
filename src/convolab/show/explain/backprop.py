"""Question 3: does backpropagation need the filter rotated by 180 degrees?"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._window import pad, reverse_spatial
from ...functional import conv
from .._format import number, shape_text
from ..checks import check_input_gradient
from .cases import Case
from .steps import Show, Step, same, show_arrays

__all__ = ["backprop_steps"]


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


def backprop_steps(case: Case, grad_output: np.ndarray) -> list[Step]:
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
        show_arrays(("grad_output", f"grad_output {shape_text(grad_output)}"),
                    ("weight", f"weight {shape_text(case.weight)}")),
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
        body.append(show_arrays(*keys))
    body += [
        show_arrays(("scatter", f"sum: the input gradient {shape_text(truth)}")),
        "2. The same sum read from the input's side: input cell q collects g[p] * w[q - p], which is a correlation "
        "of grad_output with the filter reversed on both axes (rotated 180 degrees)"
        + (", after spreading grad_output with stride - 1 zeros between its samples" if strided else "")
        + ". Pad grad_output by dilation*(k - 1) on each side, slide the rotated filter over it"
        + (", input and output channels swapped" if spec.in_channels > 1 or spec.out_channels > 1 else "")
        + ", and crop to the input:",
        show_arrays(("padded_grad", f"grad_output padded {shape_text(rotated['padded'])}"),
              ("rotated_kernel", f"rotated filter {shape_text(rotated['kernel'])}"),
              ("full", f"correlation, cropped {shape_text(rotated['result'])}")),
        "3. conv_transpose(grad_output, weight) with the forward's stride, padding and dilation, which is what "
        "a transposed convolution is:",
        show_arrays(("conv_transpose", "conv_transpose2d(grad_output, weight)")),
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
        passed=chain.holds and same(rotated["result"], chain["full"])
        and (parts is None or same(parts.sum(axis=0), truth[0])),
        case=case.name,
        data=data,
    )

    wrong = unrotated["result"]
    differ = int(np.sum(~np.isclose(wrong, truth, rtol=0, atol=1e-9 * max(1.0, float(np.abs(truth).max(initial=0))))))
    symmetric = same(rotated["kernel"], unrotated["kernel"])
    mean_true, mean_wrong = truth.mean(), wrong.mean()
    means_match = bool(np.isclose(mean_true, mean_wrong, rtol=1e-12, atol=1e-12))
    body2: list[str | Show] = [
        "Now the same correlation with the filter as stored, not rotated:",
        show_arrays(("unrotated", "with the unrotated filter"), ("gradient", "the true gradient"),
              ("difference", "difference")),
    ]
    if symmetric:
        verdict = "this filter reads the same rotated by 180 degrees, so here the rotation changes nothing"
        body2.append(f"No difference: {verdict}. Try a filter without that symmetry to see the mistake.")
        passed = differ == 0
    else:
        verdict = f"{differ} of {truth.size} elements differ"
        mean_text = (f"Yet the means agree ({number(mean_true)} both): a test that checks only the mean of the "
                     "gradient would pass this wrong answer." if means_match else
                     f"The means differ too ({number(mean_true)} vs {number(mean_wrong)}).")
        body2 += [f"Wrong in {differ} of {truth.size} elements. {mean_text} Compare gradients elementwise."]
        passed = differ > 0 and same(rotated["result"], truth)
    second = Step(
        topic="backprop",
        title=f"Without the rotation the gather form gives different numbers ({case.name})",
        formula="full_correlation(spread(g), w) != full_correlation(spread(g), rot180(w)) unless w = rot180(w)",
        body=tuple(body2),
        check=f"computed both elementwise: {verdict}; means {number(mean_wrong)} (unrotated) and "
              f"{number(mean_true)} (true)",
        passed=passed,
        case=case.name,
        data={"unrotated": wrong, "gradient": truth, "difference": wrong - truth, "elements_differing": differ,
              "mean_unrotated": mean_wrong, "mean_true": mean_true, "means_match": means_match,
              "filter_symmetric": symmetric},
    )
    return [first, second]
