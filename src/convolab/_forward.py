"""The forward convolution on a frozen spec: dtype rule, padding, flip, algorithm, bias.

This is the one place that decides the kernel's orientation: deep learning's
"convolution" is a cross-correlation (the kernel read as stored); ``flip=True``
is the mathematical convolution, the kernel reversed on every spatial axis.
Everything that convolves (the public ops, the gradients, transposed
convolution, the SciPy-style functions) comes through :func:`oriented_kernel`.
"""

from __future__ import annotations

import numpy as np

from ._dtypes import compute_dtype, result_dtype
from ._window import pad, reverse_spatial
from .algorithms import select_algorithm
from .spec import ConvSpec

__all__ = ["oriented_kernel", "conv_forward"]


def oriented_kernel(weight: np.ndarray, flip: bool) -> np.ndarray:
    """The kernel as the sliding window reads it: reversed on every spatial axis iff ``flip``."""
    return reverse_spatial(weight, weight.ndim - 2) if flip else weight


def conv_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    spec: ConvSpec,
    algorithm: str = "auto",
) -> np.ndarray:
    """Convolve a batched ``x`` ``(N, C_in, *spatial)`` as ``spec`` says.

    Inputs are never modified: casting and padding make new arrays, and the
    window views are read-only.
    """
    accumulate = compute_dtype(x.dtype)
    chosen = select_algorithm(algorithm, spec, accumulate)
    returned = result_dtype(x.dtype)
    if min(spec.output_shape) == 0:  # empty batch or no output channels: nothing to compute
        return np.zeros(spec.output_shape, dtype=returned)
    padded = pad(x.astype(accumulate, copy=False), spec.padding, spec.padding_mode)
    kernel = oriented_kernel(weight.astype(accumulate, copy=False), spec.flip)
    out = chosen.run(padded, kernel, spec)
    if bias is not None:
        out += bias.astype(accumulate, copy=False).reshape(-1, *([1] * spec.rank))  # out is ours to modify
    return out.astype(returned, copy=False)
