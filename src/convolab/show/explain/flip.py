"""Question 4: why does PyTorch's "convolution" differ from the textbook's and SciPy's?"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._window import reverse_spatial
from ...spec import conv_spec
from ..checks import check_flip, scipy_mode
from .cases import Case
from .steps import Once, Step, claim, same, show_arrays

__all__ = ["flip_step"]


def flip_step(case: Case) -> Step:
    correlation = case.output()
    chain = check_flip(case.input, case.weight, **case.params)
    convolution = chain["flip=True"]
    rotated = np.ascontiguousarray(reverse_spatial(case.weight, 2))
    spec = conv_spec(case.input.shape, case.weight.shape, op="conv2d", rank=2, flip=True, **case.params)
    mode = scipy_mode(spec)
    data: dict[str, Any] = {"input": case.input, "kernel": case.weight, "rotated_kernel": rotated,
                            "correlation": correlation, "convolution": convolution}
    keywords = case.keywords()
    body: list[Any] = [
        Once("flip", "PyTorch's conv2d (and TensorFlow's, and convolab's by default) slides the kernel as stored: "
                     "cross-correlation, output[r, c] = sum over i, j of input[r + i, c + j] * k[i, j]. The "
                     "textbook's convolution (scipy.signal.convolve2d) reverses the kernel on its two spatial axes "
                     "first, k[kH-1-i, kW-1-j]: a 180-degree rotation, kernel[..., ::-1, ::-1], channels untouched."),
        show_arrays(("input", "input"), ("kernel", "kernel"), ("rotated_kernel", "kernel[..., ::-1, ::-1]")),
        show_arrays(("correlation", "cross-correlation (PyTorch's conv2d)"), ("convolution", "true convolution")),
    ]
    formula = claim(data, f"conv2d(input, kernel{keywords}, flip=True)", f"conv2d(input, rotated_kernel{keywords})",
                    "convolution")
    claims = [formula, claim(data, "rotated_kernel", "kernel[..., ::-1, ::-1]")]
    passed = chain.holds
    single = case.input.shape[0] == 1 and case.weight.shape[0] == 1
    if mode is not None and any(label.startswith("scipy") for label in chain.labels) and single:
        body.append(f"SciPy's convolve2d and correlate2d (mode={mode!r}, the same padding) give the same two arrays.")
        claims += [claim(data, f"signal.convolve2d(input[0], kernel[0, 0], mode={mode!r})", "convolution[0]"),
                   claim(data, f"signal.correlate2d(input[0], kernel[0, 0], mode={mode!r})", "correlation[0]")]
    else:
        body.append(Once("flip-scipy", "(SciPy's convolve2d has no stride, dilation, channels or asymmetric "
                                       "padding, so it is compared only on single-channel cases at stride 1 whose "
                                       "padding is 'valid', 'same' or 'full'.)"))
    agree = same(correlation, convolution)
    sign_flip = not agree and same(rotated, -case.weight)
    if agree:
        body.append("Here the two agree, because this kernel reads the same rotated.")
    elif sign_flip:
        body.append("Rotating this kernel only flips its sign (kernel[..., ::-1, ::-1] = -kernel), so here "
                    "convolution = -correlation: this kernel's symmetry, not a rule ([[9, 8], [7, 6]] rotates to "
                    "[[6, 7], [8, 9]]).")
        claims += [claim(data, "kernel[..., ::-1, ::-1]", "-kernel"), claim(data, "convolution", "-correlation")]
    else:
        body.append("The numbers differ, though each is right by its own definition.")
    body.append(Once("flip-learned", "For a learned filter the choice does not matter (training learns it rotated); "
                                     "for a kernel written by hand, an edge detector, it does."))
    return Step(
        topic="flip",
        title=f"PyTorch's 'convolution' is correlation; the textbook's flips ({case.name})",
        formula=formula.text(),
        body=tuple(body),
        check="flip=True is the rotated kernel" + (", and SciPy agrees" if len(claims) > 2 and "signal" in
                                                   claims[2].sides[0] else "") + ":",
        passed=passed and all(c.holds for c in claims),
        case=case.name,
        data=data,
        claims=tuple(claims),
    )
