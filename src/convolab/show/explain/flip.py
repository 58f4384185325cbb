"""Question 4: why does PyTorch's "convolution" differ from the textbook's and SciPy's?"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.signal

from ..._window import reverse_spatial
from ...spec import conv_spec
from ..checks import check_flip, scipy_mode
from .cases import Case
from .steps import Show, Step, same, show_arrays

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
    body: list[str | Show] = [
        "PyTorch's conv2d (like TensorFlow's, and convolab's by default) slides the kernel over the input as it is "
        "stored: that is cross-correlation. The convolution of mathematics and signal processing (the textbook's, "
        "scipy.signal.convolve2d) first reverses the kernel on every axis, a 180-degree rotation in 2-D.",
        show_arrays(("kernel", "kernel"), ("rotated_kernel", "kernel rotated 180 degrees")),
        show_arrays(("correlation", "cross-correlation (PyTorch's conv2d)"), ("convolution", "true convolution")),
    ]
    scipy_checked = ""
    passed = chain.holds
    single = case.input.shape[0] == 1 and case.weight.shape[0] == 1
    if mode is not None and any(label.startswith("scipy") for label in chain.labels) and single:
        by_convolve = scipy.signal.convolve2d(case.input[0], case.weight[0, 0], mode=mode)
        by_correlate = scipy.signal.correlate2d(case.input[0], case.weight[0, 0], mode=mode)
        data["scipy_convolve2d"], data["scipy_correlate2d"] = by_convolve, by_correlate
        body += [
            f"SciPy, with the same padding (mode={mode!r}), agrees with each:",
            show_arrays(("scipy_convolve2d", f"scipy.signal.convolve2d(mode={mode!r})"),
                  ("scipy_correlate2d", f"scipy.signal.correlate2d(mode={mode!r})")),
        ]
        passed = passed and same(by_convolve, convolution[0]) and same(by_correlate, correlation[0])
        scipy_checked = f"; scipy.signal.convolve2d and correlate2d (mode={mode!r}) match them"
    else:
        body.append("(SciPy's convolve2d has no stride, dilation, channels or asymmetric padding, so it is compared "
                    "only on single-channel cases at stride 1 whose padding is 'valid', 'same' or 'full'.)")
    agree = same(correlation, convolution)
    body.append(
        ("Here the two agree, because this kernel reads the same rotated." if agree else
         "The numbers differ, though each is right by its own definition.")
        + " For a learned filter the choice does not matter: training would simply learn the rotated kernel. "
        "It matters when a kernel is written down by hand, as in an edge detector or a signal-processing text."
    )
    return Step(
        topic="flip",
        title=f"Deep learning's 'convolution' is cross-correlation; the textbook's flips the kernel ({case.name})",
        formula="correlation: out[y, x] = sum_ij x[y + i, x + j] * k[i, j];  "
                "convolution: out[y, x] = sum_ij x[y + i, x + j] * k[kH-1-i, kW-1-j]",
        body=tuple(body),
        check=f"conv2d(flip=True) equals conv2d with the kernel rotated 180 degrees{scipy_checked}",
        passed=passed,
        case=case.name,
        data=data,
    )
