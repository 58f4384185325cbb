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

__all__ = ["pad", "pad_adjoint", "sliding_windows", "add_windows", "reverse_spatial"]

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
    lead = x.ndim - len(padding)
    if mode == "zeros":
        # np.pad's generality costs ~0.1 ms a call, which dominates small layers in a training loop.
        padded = np.zeros(x.shape[:lead] + tuple(size + low + high for size, (low, high)
                                                  in zip(x.shape[lead:], padding)), dtype=x.dtype)
        padded[(Ellipsis, *(slice(low, low + size) for size, (low, _) in zip(x.shape[lead:], padding)))] = x
        return padded
    widths = [(0, 0)] * lead + [tuple(pair) for pair in padding]
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[mode])


def pad_adjoint(
    grad_padded: np.ndarray, padding: Sequence[tuple[int, int]], mode: str, input_size: Sequence[int]
) -> np.ndarray:
    """The transpose of :func:`pad`: fold a gradient on the padded array back onto the input.

    Padding copies input samples into the border (or writes zeros there); its
    adjoint adds every border cell's gradient to the sample it was copied from
    (and drops the zeros'). Padding is separable, so this is done one axis at a
    time with a 0/1 matrix that says which padded cell came from which sample;
    padding ``np.arange(size)`` with the same mode gives exactly that map.

    >>> pad_adjoint(np.ones(10), [(3, 3)], "reflect", [4])
    array([2., 3., 3., 2.])
    """
    grad = grad_padded
    rank = len(padding)
    if mode == "zeros":
        crop = tuple(slice(low, low + size) for (low, _), size in zip(padding, input_size))
        return np.ascontiguousarray(grad[(Ellipsis, *crop)])
    for axis_offset, ((low, high), size) in enumerate(zip(padding, input_size)):
        if not (low or high):
            continue
        source = np.pad(np.arange(size), (low, high), mode=_NUMPY_PAD_MODE[mode])  # padded cell -> input sample
        scatter = (source[:, np.newaxis] == np.arange(size)).astype(grad.dtype)  # (padded, size)
        axis = grad.ndim - rank + axis_offset
        grad = np.moveaxis(np.tensordot(grad, scatter, axes=([axis], [0])), -1, axis)
    return grad


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


def add_windows(
    windows: np.ndarray,
    padded_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The transpose of :func:`sliding_windows`: add every window back where it was read.

    ``windows`` has shape ``(*lead, *out, *kernel)``; the result ``(*lead, *padded_size)``
    holds, at each position, the sum of every window cell that read it (col2im).
    The loop runs over kernel taps only, each a strided slice-add covering all
    output positions at once. With ``out`` (that shape, any contents) the sums
    are written there instead of into a new array.

    >>> add_windows(np.ones((2, 3)), [5], [2], [1])
    array([1., 1., 2., 1., 1.])
    """
    rank = len(padded_size)
    kernel_size = windows.shape[windows.ndim - rank :]
    out_size = windows.shape[windows.ndim - 2 * rank : windows.ndim - rank]
    lead = windows.shape[: windows.ndim - 2 * rank]
    total = np.zeros((*lead, *padded_size), dtype=windows.dtype) if out is None else out
    if out is not None:
        total.fill(0)
    for tap in np.ndindex(*kernel_size):
        target = tuple(
            slice(j * d, j * d + (o - 1) * s + 1, s) for j, d, o, s in zip(tap, dilation, out_size, stride)
        )
        total[(Ellipsis, *target)] += windows[(Ellipsis, *tap)]
    return total


def reverse_spatial(a: np.ndarray, rank: int) -> np.ndarray:
    """``a`` reversed along its last ``rank`` axes (a view): the 180° rotation in 2-d.

    >>> reverse_spatial(np.array([[[1, 2], [3, 4]]]), 2)
    array([[[4, 3],
            [2, 1]]])
    """
    return a[(Ellipsis, *([slice(None, None, -1)] * rank))]
