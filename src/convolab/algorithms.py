"""Convolution algorithms behind one interface.

Every algorithm solves the same *valid* problem: the input is already padded
(by :func:`convolab._window.pad`) and the kernel already oriented (flipped or
not, decided once in :mod:`convolab._conv`). Each gets

- ``padded``: ``(N, C_in, *padded_size)`` in the accumulation dtype,
- ``kernel``: ``(C_out, C_in/groups, *kernel_size)`` in the same dtype,
- ``spec``: the frozen :class:`~convolab.spec.ConvSpec` (stride, dilation, groups),

and returns ``(N, C_out, *output_size)`` in that dtype. Each algorithm can say
why it cannot run a problem (:meth:`Algorithm.why_not`), so a caller asking for
one by name gets a reason rather than a wrong answer.

Axis legend used in the comments below: N batch, G groups, C input channels per
group, O output channels per group, P output positions (product of ``*out``),
K kernel taps (product of ``*kernel``).
"""

from __future__ import annotations

from math import prod
from typing import ClassVar

import numpy as np
import scipy.fft

from ._dtypes import is_exact
from ._errors import fail
from ._window import reverse_spatial, sliding_windows
from .spec import ConvSpec

__all__ = ["Algorithm", "Direct", "Im2col", "FFT", "ALGORITHMS", "select_algorithm"]


class Algorithm:
    """One way of computing a valid, pre-padded, pre-oriented convolution."""

    name: ClassVar[str]

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """``None`` if this algorithm can run the problem, else the reason it cannot."""
        return None

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        raise NotImplementedError


class Direct(Algorithm):
    """The textbook definition, one output element at a time.

    Each output element is the window it reads times the filter, elementwise,
    summed (a Hadamard product and a sum), which is the same number as the dot
    product of the unrolled window and the unrolled filter. Slow on purpose: it
    is the reference every other algorithm is tested against.
    """

    name = "direct"

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C_in, *out, *kernel)
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        channels_in, channels_out = spec.in_channels_per_group, spec.out_channels_per_group
        for index in np.ndindex(*spec.output_shape):
            n, c_out, *position = index
            group = c_out // channels_out
            window = windows[(n, slice(group * channels_in, (group + 1) * channels_in), *position)]  # (C, *kernel)
            out[index] = np.sum(window * kernel[c_out])
        return out


class Im2col(Algorithm):
    """Unroll every window into a row, then one matrix product per group.

    (Chellapilla, Puri and Simard, 2006.) The unrolled input has one row per
    output position and one column per (input channel, kernel tap); the filter
    matrix has one column per output channel. Groups become a batch of
    independent matrix products.
    """

    name = "im2col"

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        unrolled = unroll(padded, spec)  # (G, N*P, C*K)
        filters = filter_matrix(kernel, spec)  # (G, C*K, O)
        product = np.matmul(unrolled, filters)  # (G, N*P, O)
        return fold_product(product, spec)


def unroll(padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The im2col matrix of each group: ``(G, N*P, C*K)``, rows ordered (n, *out)."""
    n, groups, rank = spec.batch, spec.groups, spec.rank
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    windows = windows.reshape(n, groups, spec.in_channels_per_group, *windows.shape[2:])  # (N, G, C, *out, *kernel)
    out_axes = tuple(range(3, 3 + rank))
    kernel_axes = tuple(range(3 + rank, 3 + 2 * rank))
    windows = windows.transpose(1, 0, *out_axes, 2, *kernel_axes)  # (G, N, *out, C, *kernel)
    rows = n * prod(spec.output_size)
    return windows.reshape(groups, rows, spec.in_channels_per_group * prod(spec.kernel_size))  # copies


def filter_matrix(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The filters as matrices: ``(G, C*K, O)``, one column per output channel."""
    filters = kernel.reshape(spec.groups, spec.out_channels_per_group, -1)  # (G, O, C*K)
    return filters.transpose(0, 2, 1)  # (G, C*K, O)


def fold_product(product: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``(G, N*P, O)`` matrix-product result back to ``(N, G*O, *out)``."""
    rank = spec.rank
    out = product.reshape(spec.groups, spec.batch, *spec.output_size, spec.out_channels_per_group)  # (G, N, *out, O)
    out = out.transpose(1, 0, 1 + rank + 1, *range(2, 2 + rank))  # (N, G, O, *out)
    return np.ascontiguousarray(out.reshape(spec.output_shape))


class FFT(Algorithm):
    """Products of Fourier transforms (``scipy.fft``), then every ``stride``-th sample.

    A valid correlation with kernel ``w`` is a circular convolution with the
    reversed kernel, read from offset ``k_eff - 1``; with a transform as long as
    the padded input, no wrapped-around sample lands in that range. Dilation
    spreads the kernel with zeros first. Never used for integers, whose results
    must be exact.
    """

    name = "fft"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the FFT rounds"
        return None

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        rank = spec.rank
        axes = tuple(range(-rank, 0))
        if any(d > 1 for d in spec.dilation):
            spread = np.zeros((*kernel.shape[:2], *(d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation))),
                              dtype=kernel.dtype)
            spread[(Ellipsis, *(slice(None, None, d) for d in spec.dilation))] = kernel
            kernel = spread
        extent = kernel.shape[2:]
        lengths = [scipy.fft.next_fast_len(size, real=True) for size in spec.padded_size]
        complex_input = np.iscomplexobj(padded)
        forward = scipy.fft.fftn if complex_input else scipy.fft.rfftn
        padded_hat = forward(padded, s=lengths, axes=axes)  # (N, G*C, *freq)
        kernel_hat = forward(reverse_spatial(kernel, rank), s=lengths, axes=axes)  # (G*O, C, *freq)
        groups = spec.groups
        padded_hat = padded_hat.reshape(spec.batch, groups, spec.in_channels_per_group, *padded_hat.shape[2:])
        kernel_hat = kernel_hat.reshape(groups, spec.out_channels_per_group, *kernel_hat.shape[1:])
        product = np.einsum("ngc...,goc...->ngo...", padded_hat, kernel_hat)  # (N, G, O, *freq)
        product = product.reshape(spec.batch, spec.out_channels, *product.shape[3:])
        if complex_input:
            circular = scipy.fft.ifftn(product, s=lengths, axes=axes)
        else:
            circular = scipy.fft.irfftn(product, s=lengths, axes=axes)
        valid = tuple(
            slice(e - 1, e - 1 + (o - 1) * s + 1, s) for e, o, s in zip(extent, spec.output_size, spec.stride)
        )
        return np.ascontiguousarray(circular[(Ellipsis, *valid)]).astype(padded.dtype, copy=False)


ALGORITHMS: dict[str, Algorithm] = {algorithm.name: algorithm for algorithm in (Direct(), Im2col(), FFT())}

#: What ``algorithm="auto"`` resolves to until the planner of the performance work lands.
DEFAULT_ALGORITHM = "im2col"


def select_algorithm(name: object, spec: ConvSpec, dtype: np.dtype) -> Algorithm:
    """The algorithm called ``name`` (or the default for ``"auto"``), checked against the problem."""
    choices = ("auto", *ALGORITHMS)
    if not isinstance(name, str) or name not in choices:
        fail(ValueError, spec.op, "algorithm", repr(name), f"must be one of {', '.join(map(repr, choices))}")
    algorithm = ALGORITHMS[DEFAULT_ALGORITHM if name == "auto" else name]
    reason = algorithm.why_not(spec, dtype)
    if reason is not None:
        fail(ValueError, spec.op, "algorithm", repr(name), f"cannot run this problem: {reason}")
    return algorithm
