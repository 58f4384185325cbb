"""Question 3: does backpropagation need the filter rotated by 180 degrees? And the weight's gradient."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._window import pad, reverse_spatial
from ...functional import conv
from ...grad import conv_weight
from .._format import counted, number, shape_text, terms
from ..checks import check_input_gradient
from .cases import Case
from .steps import Detail, Once, Show, Step, claim, same, show_arrays

__all__ = ["backprop_steps", "weight_gradient_step"]


def _keywords(**values: Any) -> str:
    """``, stride=(2, 2), dilation=(1, 1)`` without the arguments at their defaults (1 per axis, 0 padding)."""
    defaults = {"stride": (1, 1), "dilation": (1, 1), "groups": 1, "padding": ((0, 0), (0, 0))}
    return "".join(f", {name}={value!r}" for name, value in values.items() if value != defaults.get(name))


def _full_correlation(case: Case, grad_output: np.ndarray, rotate: bool) -> dict[str, Any]:
    """The input gradient as a correlation over grad_output: spread by the stride, padded, the filter rotated.

    ``g`` gets ``stride - 1`` zeros between its samples and ``dilation*(k-1)``
    zeros of padding on each side, plus, on the high side, the padded input's
    cells past the last window (``tail``: no window reached them, so their
    gradient is zero). Correlating that with the filter reversed on both
    spatial axes, input and output channels swapped, gives the gradient on
    the whole padded input; cropping the forward's padding leaves the input's.
    With ``rotate=False`` the same is done with the filter as stored: the
    mistake the question is about.
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
    crop = f"[:, {top}:{top + h}, {left}:{left + w}]"
    return {"spread": spread, "padded": padded, "kernel": kernel, "on_padded": on_padded, "tail": tail,
            "padding": padding, "crop": crop, "keywords": _keywords(dilation=spec.dilation, groups=groups),
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


def _padding_text(full: dict[str, Any]) -> str:
    """How much padding the spread grad_output gets per axis, and why the high side can get more."""
    parts = []
    for name, (low, high), tail in zip(("row", "column"), full["padding"], full["tail"]):
        text = f"{low} before (dilation*(k - 1)) and {high} after"
        if tail:
            text += (f" ({tail} more for the padded input's last {counted(tail, name) if tail > 1 else name}, which "
                     "no window read: gradient 0)")
        parts.append(text)
    if parts[0] == parts[1].replace("column", "row"):
        return "on both axes " + parts[0].replace("last row", "last row and column").replace(
            "rows,", "rows and columns,")
    return f"rows {parts[0]}; columns {parts[1]}"


def backprop_steps(case: Case, grad_output: np.ndarray, crop_only: bool = False) -> list[Step]:
    """The input gradient three ways, and what the gather form gives unrotated.

    With ``crop_only`` (a case shown for its stride and padding), only the
    first step, its scatter-add arrays left to the long form.
    """
    brief = Detail if crop_only else (lambda item: item)
    chain = check_input_gradient(case.input.shape, case.weight, grad_output, **case.params)
    truth = chain["scatter"]
    rotated = _full_correlation(case, grad_output, rotate=True)
    parts = _scatter_contributions(case, grad_output)
    spec = case.spec
    strided = any(s > 1 for s in spec.stride)
    padded_forward = any(low or high for low, high in spec.padding)
    data: dict[str, Any] = {"input": case.input, "grad_output": grad_output, "weight": case.weight, "scatter": truth,
                            "spread": rotated["spread"], "padded_grad": rotated["padded"],
                            "rotated_kernel": rotated["kernel"], "on_padded": rotated["on_padded"],
                            "full": rotated["result"]}
    body: list[Any] = [
        Once("grad-output", "Take an upstream gradient grad_output (the loss's gradient with respect to the output; "
                            "here 1, 2, 3, ..., any numbers would do) and the filter:"),
        brief(show_arrays(("grad_output", f"grad_output {shape_text(grad_output)}"),
                          ("weight", f"weight {shape_text(case.weight)}"))),
        Once("scatter", "1. Scatter-add, the loop of most courses: every output position adds grad_output[y, x] "
                        "times the filter, unrotated, into the window it read (dA_prev[window] += W * dZ[y, x]); "
                        "the sum is the input gradient, the same numbers as the correlation below:"),
    ]
    if parts is not None:
        data["contributions"] = parts
        keys = []
        for index, (y, x) in enumerate(np.ndindex(*spec.output_size)):
            data[f"part_{y}_{x}"] = parts[index]
            keys.append((f"part_{y}_{x}", f"g[{y},{x}]*w"))
        body.append(brief(show_arrays(*keys)))
    body.append(Detail(show_arrays(("scatter", f"scatter-add: the input gradient {shape_text(truth)}"))))
    body.append(Once("gather", "2. The same sum read from the input's side: input cell q collects g[p] * w[q - p], "
                               "a correlation of grad_output with the filter reversed on both spatial axes (rotated "
                               "180 degrees, rotated_kernel = weight[..., ::-1, ::-1], input and output channels "
                               "swapped)."))
    if strided:
        body += [f"With stride {spec.stride}, spread grad_output first: spread(g) has stride - 1 zeros between its "
                 "samples, as far apart as the windows that made them.",
                 brief(show_arrays(("spread", f"spread(g) {shape_text(rotated['spread'])}")))]
    body.append(f"Pad {'spread(g)' if strided else 'grad_output'} with zeros, {_padding_text(rotated)}, and "
                "slide the rotated filter over it:")
    body.append(show_arrays(("padded_grad", f"padded {shape_text(rotated['padded'])}"),
                            ("rotated_kernel", f"rotated_kernel {shape_text(rotated['kernel'])}"),
                            ("on_padded", f"correlation {shape_text(rotated['on_padded'])}")))
    if padded_forward:
        (top, bottom), (left, right) = spec.padding
        body.append(f"That is the gradient on the whole padded input ({spec.padded_size[0]}x{spec.padded_size[1]}). "
                    f"The forward's padding ({counted(top, 'row')} at the top, {bottom} at the bottom, "
                    f"{counted(left, 'column')} at the left, {right} at the right) holds zeros it made up, not "
                    f"inputs: crop it away to leave the input's {spec.input_size[0]}x{spec.input_size[1]}:")
        body.append(show_arrays(("full", f"cropped {shape_text(rotated['result'])}")))
    body.append(Once("conv-transpose", "3. conv_transpose(grad_output, weight) with the forward's stride, padding "
                                       "and dilation is the same sum: that is what a transposed convolution is. So "
                                       "both are right: the loop needs no rotation because it scatters; the "
                                       "rotation appears when the same sum is a correlation that gathers."))
    library = f"conv2d_input(input.shape, weight, grad_output{case.keywords()})"
    formula = claim(data, library, f"conv2d(padded_grad, rotated_kernel{rotated['keywords']}){rotated['crop']}")
    claims = [formula, claim(data, "scatter", library)]
    if strided:
        claims.append(claim(data, f"spread[:, ::{spec.stride[0]}, ::{spec.stride[1]}]", "grad_output"))
    (low_h, _), (low_w, _) = rotated["padding"]
    claims.append(claim(data, f"padded_grad[:, {low_h}:{low_h + rotated['spread'].shape[1]}, "
                              f"{low_w}:{low_w + rotated['spread'].shape[2]}]",
                        "spread" if strided else "grad_output"))
    if spec.groups == 1:
        claims.append(claim(data, "rotated_kernel", "weight[..., ::-1, ::-1].swapaxes(0, 1)"))
    if "conv_transpose" in chain.labels:
        data["conv_transpose"] = chain["conv_transpose"]
        transpose = (case.keywords() if not isinstance(case.padding, str) else
                     _keywords(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups))
        tail = rotated["tail"]  # the rows and columns no window read: output_padding gives them back
        extra = "" if not any(tail) else f", output_padding={tail[0] if tail[0] == tail[1] else tuple(tail)!r}"
        claims.append(claim(data, f"conv_transpose2d(grad_output, weight{transpose}{extra})", "scatter"))
    else:
        body = [item for item in body if not (isinstance(item, Once) and item.key == "conv-transpose")]
    if parts is not None:
        claims.append(claim(data, "contributions.sum(axis=0)", "scatter[0]"))
    first = Step(
        topic="backprop",
        title=f"The input gradient three ways, all equal ({case.name})",
        formula=formula.text(),
        body=tuple(body),
        check=f"the {len(chain.labels)} ways agree, every element:",
        passed=chain.holds and same(rotated["result"], chain["full"]) and all(c.holds for c in claims),
        case=case.name,
        data=data,
        claims=tuple(claims),
    )
    return [first] if crop_only else [first, _unrotated_step(case, grad_output, rotated, truth)]


def _unrotated_step(case: Case, grad_output: np.ndarray, rotated: dict[str, Any], truth: np.ndarray) -> Step:
    """The gather form with the filter as stored: wrong wherever the filter is not 180-degree symmetric."""
    unrotated = _full_correlation(case, grad_output, rotate=False)
    wrong = unrotated["result"]
    differ = int(np.sum(~np.isclose(wrong, truth, rtol=0, atol=1e-9 * max(1.0, float(np.abs(truth).max(initial=0))))))
    symmetric = same(rotated["kernel"], unrotated["kernel"])
    mean_true, mean_wrong = truth.mean(), wrong.mean()
    means_match = bool(np.isclose(mean_true, mean_wrong, rtol=1e-12, atol=1e-12))
    data: dict[str, Any] = {"padded_grad": rotated["padded"], "rotated_kernel": rotated["kernel"], "unrotated": wrong,
                            "gradient": truth, "difference": wrong - truth, "elements_differing": differ,
                            "mean_true": mean_true, "mean_unrotated": mean_wrong, "means_match": means_match,
                            "filter_symmetric": symmetric}
    body: list[Any] = [
        "Now the same correlation with the filter as stored, not rotated:",
        show_arrays(("gradient", "the true gradient"), ("unrotated", "with the unrotated filter"),
                    ("difference", "unrotated - gradient")),
    ]
    formula = claim(data, "unrotated",
                    f"conv2d(padded_grad, rotated_kernel[..., ::-1, ::-1]{rotated['keywords']}){rotated['crop']}")
    claims = [formula]
    if symmetric:
        verdict = "this filter reads the same rotated by 180 degrees, so here the rotation changes nothing"
        body.append(f"No difference: {verdict}. Try a filter without that symmetry to see the mistake.")
        passed = differ == 0
    else:
        verdict = f"{differ} of {truth.size} elements differ"
        mean_text = (f"Yet the means agree (true {number(mean_true)}, unrotated {number(mean_wrong)}): a test that "
                     "checks only the mean of the gradient would pass this wrong answer." if means_match else
                     f"The means differ too (true {number(mean_true)}, unrotated {number(mean_wrong)}).")
        body += [f"Wrong in {differ} of {truth.size} elements. {mean_text} Compare gradients elementwise."]
        passed = differ > 0
    claims.append(claim(data, "(~np.isclose(unrotated, gradient)).sum()", "elements_differing"))
    claims.append(claim(data, "gradient.mean()", *(("unrotated.mean()",) if means_match else ())))
    if not means_match:
        claims.append(claim(data, "unrotated.mean()"))
    return Step(
        topic="backprop",
        title=f"Without the rotation the gather form is wrong ({case.name})",
        formula=formula.text(),
        body=tuple(body),
        check=f"computed both elementwise: {verdict}; the means, true first:",
        passed=passed and all(c.holds for c in claims),
        case=case.name,
        data=data,
        claims=tuple(claims),
    )


def weight_gradient_step(case: Case, grad_output: np.ndarray) -> Step:
    """The weight gradient: a correlation of the (padded) input with grad_output, checked against the library's."""
    spec = case.spec
    grad_weight = conv_weight(case.input, case.weight.shape, grad_output, **case.params)
    padded = pad(case.input, spec.padding)
    (sh, sw), (ho, wo) = spec.stride, spec.output_size
    # The cells tap (0, 0) met: every stride-th cell from the corner, one per output.
    rows, cols = (f"0:{(n - 1) * s + 1}" + (f":{s}" if s > 1 else "") for n, s in ((ho, sh), (wo, sw)))
    tap_cells = padded[0, 0:(ho - 1) * sh + 1:sh, 0:(wo - 1) * sw + 1:sw]
    in_tap = np.zeros(padded.shape, dtype=bool)
    in_tap[0, 0:(ho - 1) * sh + 1:sh, 0:(wo - 1) * sw + 1:sw] = True
    data: dict[str, Any] = {"input": case.input, "weight": case.weight, "grad_output": grad_output,
                            "padded_input": padded, "in_tap": in_tap, "grad_weight": grad_weight}
    first_tap = "grad_weight[0, 0, 0, 0]"
    written = terms(tap_cells, grad_output[0], grad_weight[0, 0, 0, 0])
    body: list[Any] = [
        "The filter needs its gradient too. Tap w[o, c, i, j] met the cell at offset (i, j) of every window, so "
        "dL/dw[o, c, i, j] sums grad_output[o, y, x] times that cell over the outputs: a correlation of the input "
        "(padded as in the forward) with grad_output as the kernel"
        + (f", its samples {spec.stride} apart (the forward's stride becomes the dilation)" if sh > 1 or sw > 1
           else "") + f". Tap (0, 0) met the cells in [brackets]: {written}.",
        show_arrays(("padded_input", "input" + (" (padded)" if padded.shape != case.input.shape else "")),
                    ("grad_output", f"grad_output {shape_text(grad_output)}"),
                    ("grad_weight", f"grad_weight {shape_text(grad_weight)}"), marks={"padded_input": "in_tap"}),
    ]
    library = f"conv2d_weight(input, weight.shape, grad_output{case.keywords()})"
    claims = [claim(data, f"(padded_input[0, {rows}, {cols}] * grad_output[0]).sum()", first_tap)]
    formula = claim(data, "grad_weight", library)
    if spec.groups == 1:
        # Channels of the input as a batch, grad_output's channels as filters: (C_in, C_out, ...) then swapped.
        kh, kw = spec.kernel_size
        as_correlation = (f"conv2d(padded_input[:, None], grad_output[:, None]"
                          f"{_keywords(dilation=spec.stride, stride=spec.dilation)}).swapaxes(0, 1)")
        reach = conv(padded[:, None], grad_output[:, None], dilation=spec.stride, stride=spec.dilation).shape[-2:]
        if tuple(reach) != (kh, kw):  # the rows past the last window make the correlation a little larger
            as_correlation += f"[..., :{kh}, :{kw}]"
        formula = claim(data, library, as_correlation)
        claims.append(claim(data, "grad_weight", library))
    return Step(
        topic="backprop",
        title=f"The weight gradient: the input correlated with grad_output ({case.name})",
        formula=formula.text(),
        body=tuple(body),
        check="the library's weight gradient, and its first tap written out:",
        passed=all(c.holds for c in (formula, *claims)),
        case=case.name,
        data=data,
        claims=(formula, *claims),
    )
