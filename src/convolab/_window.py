"""The window primitive: pad, then view every kernel position without copying.

Direct convolution, im2col, unfold and pooling all start here. The last
``len(kernel_size)`` axes of an array are its spatial axes; anything before them
(batch, channels) rides along untouched.

Padding modes, drawn on an input ``a b c d`` padded by 3 on each side::

    zeros      0 0 0 | a b c d | 0 0 0
    reflect    d c b | a b c d | c b a      (edge not repeated; PyTorch/NumPy "reflect")
    symmetric  c b a | a b c d | d c b      (edge repeated; NumPy "symmetric")
    replicate  a a a | a b c d | d d d      (NumPy "edge")
    circular   b c d | a b c d | a b c      (NumPy "wrap")
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import shapes

__all__ = ["pad", "sliding_windows", "reverse_spatial"]

_NUMPY_PAD_MODE = {
    "zeros": "constant",
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "circular": "wrap",
}


def pad(x: np.ndarray, padding: Sequence[tuple[int, int]], mode: str = "zeros") -> np.ndarray:
    """Pad the trailing ``len(padding)`` axes of ``x``; returns ``x`` itself if nothing to pad.

    ``mode`` is a canonical name (see :data:`convolab.spec.PADDING_MODES`). The
    input is never written to.

    >>> pad(np.array([1, 2, 3, 4]), [(3, 3)], "reflect")
    array([4, 3, 2, 1, 2, 3, 4, 3, 2, 1])
    """
    if not any(low or high for low, high in padding):
        return x
    widths = [(0, 0)] * (x.ndim - len(padding)) + [tuple(pair) for pair in padding]
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[mode])


def sliding_windows(
    x: np.ndarray,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> np.ndarray:
    """A read-only strided view of every window: shape ``(*lead, *out, *kernel)``.

    ``view[..., o_1, ..., o_d, j_1, ..., j_d]`` is
    ``x[..., o_1*s_1 + j_1*d_1, ..., o_d*s_d + j_d*d_d]``: output position ``o``,
    kernel tap ``j``. No data is copied; nothing can be written through it.

    >>> sliding_windows(np.arange(6), [3], [2], [1])
    array([[0, 1, 2],
           [2, 3, 4]])
    """
    rank = len(kernel_size)
    lead_shape, spatial = x.shape[: x.ndim - rank], x.shape[x.ndim - rank :]
    lead_strides, spatial_strides = x.strides[: x.ndim - rank], x.strides[x.ndim - rank :]
    out = tuple(
        shapes.conv_output_size(size, k, s, (0, 0), d) for size, k, s, d in zip(spatial, kernel_size, stride, dilation)
    )
    return as_strided(
        x,
        shape=(*lead_shape, *out, *kernel_size),
        strides=(
            *lead_strides,
            *(st * s for st, s in zip(spatial_strides, stride)),
            *(st * d for st, d in zip(spatial_strides, dilation)),
        ),
        writeable=False,
    )


def reverse_spatial(a: np.ndarray, rank: int) -> np.ndarray:
    """``a`` reversed along its last ``rank`` axes (a view): the 180° rotation in 2-d.

    >>> reverse_spatial(np.array([[[1, 2], [3, 4]]]), 2)
    array([[[4, 3],
            [2, 1]]])
    """
    return a[(Ellipsis, *([slice(None, None, -1)] * rank))]
