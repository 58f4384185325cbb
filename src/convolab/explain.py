"""Explanations as data: a list of steps with their numbers, rendered separately.

Each :class:`Step` carries the numbers it shows, the formula behind them and a
check that was actually run (``passed`` is computed, never assumed). The CLI,
JSON output and tests all read the same steps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.signal

from . import shapes
from ._window import reverse_spatial, sliding_windows
from .functional import conv2d

__all__ = ["Step", "worked_examples", "render_text", "render_json"]


@dataclass(frozen=True)
class Step:
    """One step of an explanation: what it shows, the formula, the numbers, the check."""

    title: str
    formula: str
    lines: tuple[str, ...]
    check: str
    passed: bool
    data: dict[str, Any] = field(default_factory=dict)


def _grid(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a), separator=" ")


def _dot_product_step(image: np.ndarray, kernel: np.ndarray) -> Step:
    window = sliding_windows(image, kernel.shape, (1, 1), (1, 1))[0, 0]
    hadamard = window * kernel
    elementwise_sum = int(hadamard.sum())
    dot = int(np.dot(window.ravel(), kernel.ravel()))
    return Step(
        title="One output element: an elementwise (Hadamard) product and a sum, which is a dot product",
        formula="out[0,0] = sum_ij window[i,j] * kernel[i,j] = window.ravel() . kernel.ravel()",
        lines=(
            f"window =\n{_grid(window)}",
            f"kernel =\n{_grid(kernel)}",
            f"window * kernel =\n{_grid(hadamard)}",
            f"sum = {elementwise_sum}",
            f"dot(unrolled window, unrolled kernel) = {window.ravel().tolist()} . {kernel.ravel().tolist()} = {dot}",
        ),
        check="the sum of the elementwise product equals the dot product of the unrolled arrays",
        passed=elementwise_sum == dot,
        data={"window": window.tolist(), "kernel": kernel.tolist(), "sum": elementwise_sum, "dot": dot},
    )


def _whole_output_step(image: np.ndarray, kernel: np.ndarray) -> Step:
    by_definition = conv2d(image[None, None], kernel[None, None], algorithm="direct")[0, 0]
    by_matrix_product = conv2d(image[None, None], kernel[None, None], algorithm="im2col")[0, 0]
    return Step(
        title="The whole output: the kernel slid over every position",
        formula="out[y,x] = sum_ij input[y+i, x+j] * kernel[i,j]",
        lines=(f"input =\n{_grid(image)}", f"kernel =\n{_grid(kernel)}", f"output =\n{_grid(by_definition)}"),
        check="one element at a time (direct) equals one matrix product (im2col)",
        passed=bool(np.array_equal(by_definition, by_matrix_product)),
        data={"input": image.tolist(), "kernel": kernel.tolist(), "output": by_definition.tolist()},
    )


def _flip_step(image: np.ndarray, kernel: np.ndarray, padding: int) -> Step:
    correlation = conv2d(image[None, None], kernel[None, None], padding=padding)[0, 0]
    convolution = conv2d(image[None, None], kernel[None, None], padding=padding, flip=True)[0, 0]
    rotated = conv2d(image[None, None], np.ascontiguousarray(reverse_spatial(kernel, 2))[None, None], padding=padding)[0, 0]
    textbook = scipy.signal.convolve2d(image, kernel, mode="same")
    return Step(
        title="Deep learning's 'convolution' is cross-correlation; the textbook's flips the kernel",
        formula="correlation: sum_ij x[y+i, x+j] k[i,j];  convolution: sum_ij x[y+i, x+j] k[kh-1-i, kw-1-j] (kernel rotated 180°)",
        lines=(
            f"kernel =\n{_grid(kernel)}",
            f"cross-correlation (PyTorch's conv2d), padding {padding} =\n{_grid(correlation)}",
            f"true convolution (flip=True) =\n{_grid(convolution)}",
        ),
        check="flip=True equals the rotated kernel without flip and scipy.signal.convolve2d(mode='same')",
        passed=bool(np.array_equal(convolution, rotated) and np.array_equal(convolution, textbook)),
        data={"correlation": correlation.tolist(), "convolution": convolution.tolist()},
    )


def _output_size_step(input_size: int, kernel_size: int, stride: int, padding: int, dilation: int) -> Step:
    size = shapes.conv_output_size(input_size, kernel_size, stride, (padding, padding), dilation)
    by_formula = (input_size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    return Step(
        title="The output size",
        formula="out = floor((in + 2*padding - dilation*(k - 1) - 1) / stride) + 1",
        lines=(
            f"in={input_size}, k={kernel_size}, stride={stride}, padding={padding}, dilation={dilation}",
            f"out = floor(({input_size} + {2 * padding} - {dilation * (kernel_size - 1)} - 1) / {stride}) + 1 = {size}",
        ),
        check="the formula equals the size of the computed output",
        passed=size == by_formula
        and conv2d(np.zeros((1, 1, input_size, input_size)), np.zeros((1, 1, kernel_size, kernel_size)),
                   stride=stride, padding=padding, dilation=dilation).shape[-1] == size,
        data={"output_size": size},
    )


def worked_examples() -> list[Step]:
    """The standard walk-through: the questions learners ask, on the classic numbers."""
    image = np.arange(1, 10).reshape(3, 3)
    kernel = np.array([[9, 8], [7, 6]])
    sobel = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    return [
        _dot_product_step(image, kernel),
        _whole_output_step(image, kernel),
        _flip_step(image, sobel, padding=1),
        _output_size_step(7, 3, stride=2, padding=1, dilation=1),
    ]


def render_text(steps: list[Step]) -> str:
    """Plain text: each step's title, formula, numbers and its check."""
    blocks = []
    for number, step in enumerate(steps, 1):
        status = "check passed" if step.passed else "CHECK FAILED"
        body = "\n".join(step.lines)
        blocks.append(f"{number}. {step.title}\n   {step.formula}\n{body}\n[{status}] {step.check}")
    return "\n\n".join(blocks) + "\n"


def render_json(steps: list[Step]) -> str:
    """The steps as JSON, numbers as nested lists."""
    return json.dumps([asdict(step) for step in steps], indent=2)
