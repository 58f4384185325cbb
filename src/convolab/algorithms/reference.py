"""The reference algorithms: the definition itself ("direct") and im2col.

Neither is chosen by "auto": they are what every other algorithm is tested
against, written to be read rather than to be fast.
"""

from __future__ import annotations

from math import prod

import numpy as np

from .._window import pad, sliding_windows
from ..spec import ConvSpec
from . import Algorithm

__all__ = ["Direct", "Im2col", "unroll", "filter_matrix", "fold_product"]


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
    passes = frozenset({"forward", "weight_grad"})

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        unrolled = unroll(padded, spec)  # (G, N*P, C*K)
        filters = filter_matrix(kernel, spec)  # (G, C*K, O)
        product = np.matmul(unrolled, filters)  # (G, N*P, O)
        return fold_product(product, spec)

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dk = g @ unrolled`` per group, the unrolled input (one row per window) times ``g`` as a matrix:
        ``(G*O, C, *kernel)``."""
        groups = spec.groups
        unrolled = unroll(pad(x, spec.padding, spec.padding_mode), spec)  # (G, N*P, C*K)
        rows = grad_output.reshape(spec.batch, groups, spec.out_channels_per_group, -1)  # (N, G, O, P)
        rows = rows.transpose(1, 2, 0, 3).reshape(groups, spec.out_channels_per_group, -1)  # (G, O, N*P)
        grad_filters = np.matmul(rows, unrolled)  # (G, O, C*K)
        return grad_filters.reshape(spec.weight_shape)


def unroll(padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The im2col matrix of each group: ``(G, N*P, C*K)``, rows ordered (n, *out)."""
    n, groups, rank = spec.batch, spec.groups, spec.rank
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    windows = windows.reshape(n, groups, spec.in_channels_per_group, *windows.shape[2:])  # (N, G, C, *out, *kernel)
    out_axes = tuple(range(3, 3 + rank))
    kernel_axes = tuple(range(3 + rank, 3 + 2 * rank))
    windows = windows.transpose(1, 0, *out_axes, 2, *kernel_axes)  # (G, N, *out, C, *kernel)
    rows = n * prod(spec.output_size)
    return windows.reshape(groups, rows, spec.terms)  # copies


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
