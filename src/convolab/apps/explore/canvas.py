"""The grids the explorer draws, as arrays: what a kernel slides over, which cells it reads, the rotated kernel.

Each canvas is three arrays of one shape ``(C, H_canvas, W_canvas)``:
``values``, ``roles`` (:data:`ROLES`: a sample, padding, or a zero inserted
between samples by a stride) and ``sources`` (the flat index of the sample a
cell holds, ``-1`` for a zero). The forward canvas is the padded input, padded
by convolab itself; the backward and transposed ones spread an array by the
stride and pad it, as the identity they illustrate says (and the model checks
the result against convolab's own gradient and ``conv_transpose2d``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ... import conv2d

__all__ = ["ROLES", "SAMPLE", "PADDING", "INSERTED", "Canvas", "padded_canvas", "spread_canvas", "tap_positions",
           "read_mask", "rotated_swapped"]

#: Role codes of canvas cells, by name as the page shows them.
ROLES = ("sample", "padding", "inserted")
SAMPLE, PADDING, INSERTED = range(3)


@dataclass(frozen=True, eq=False)
class Canvas:
    """A grid the kernel slides over: values, role codes (:data:`ROLES`) and source indices (-1: a zero)."""

    values: np.ndarray  # (C, Hc, Wc)
    roles: np.ndarray  # (C, Hc, Wc) of SAMPLE, PADDING, INSERTED
    sources: np.ndarray  # (C, Hc, Wc): flat index into the array spread or padded; -1 for a zero


def padded_canvas(x: np.ndarray, padding: Sequence[tuple[int, int]], padding_mode: str) -> Canvas:
    """``x`` (``(C, H, W)``) padded exactly as conv2d pads it, and which sample each cell copies.

    A 1x1 kernel of ones, one per channel, with the problem's padding and
    padding mode outputs the padded input itself: so the page shows the
    library's own padding (reflect, replicate, circular, symmetric), not a
    re-implementation. Padding the samples' indices (plus one, so that a zero
    of zero padding becomes -1) tells which sample each border cell copies.

    >>> c = padded_canvas(np.array([[[1, 2, 3]]]), [(0, 0), (1, 1)], "reflect")
    >>> c.values.tolist(), c.sources.tolist(), c.roles.tolist()
    ([[[2, 1, 2, 3, 2]]], [[[1, 0, 1, 2, 1]]], [[[1, 0, 0, 0, 1]]])
    """
    channels = x.shape[0]
    identity = np.ones((channels, 1, 1, 1), dtype=x.dtype)
    params = dict(padding=tuple(padding), padding_mode=padding_mode, groups=channels)
    values = conv2d(x, identity, **params)  # (C, Hp, Wp)
    index = np.arange(1, x.size + 1, dtype=np.int64).reshape(x.shape)
    sources = conv2d(index, identity.astype(np.int64), **params) - 1
    (top, _), (left, _) = padding
    roles = np.full(values.shape, PADDING, dtype=np.int8)
    roles[:, top:top + x.shape[1], left:left + x.shape[2]] = SAMPLE
    return Canvas(values, roles, sources)


def spread_canvas(a: np.ndarray, stride: Sequence[int], low: Sequence[int], high: Sequence[int]) -> Canvas:
    """``a`` (``(C, H, W)``) with ``stride - 1`` zeros inserted between samples, then ``low``/``high`` zeros added.

    A negative ``low`` or ``high`` crops that many cells instead (a transposed
    convolution's padding larger than the kernel's reach).

    >>> c = spread_canvas(np.array([[[1, 2]]]), (1, 2), (0, 1), (0, -1))
    >>> c.values.tolist(), c.roles.tolist()
    ([[[0, 1, 0]]], [[[1, 0, 2]]])
    """
    spread = [(size - 1) * s + 1 if size else 0 for size, s in zip(a.shape[1:], stride)]
    extent = [max(n + lo + hi, 0) for n, lo, hi in zip(spread, low, high)]
    # Where each sample lands, per axis, and which of them land inside the canvas.
    positions = [lo + np.arange(size) * s for size, s, lo in zip(a.shape[1:], stride, low)]
    kept = [(p >= 0) & (p < e) for p, e in zip(positions, extent)]
    rows, cols = (p[k] for p, k in zip(positions, kept))
    values = np.zeros((a.shape[0], *extent), dtype=a.dtype)
    values[:, rows[:, None], cols[None, :]] = a[:, kept[0]][:, :, kept[1]]
    index = np.arange(a.size, dtype=np.int64).reshape(a.shape)
    sources = np.full(values.shape, -1, dtype=np.int64)
    sources[:, rows[:, None], cols[None, :]] = index[:, kept[0]][:, :, kept[1]]
    # Inside the spread extent but not a sample: an inserted zero; outside it: padding.
    inside = [(np.arange(e) >= lo) & (np.arange(e) < lo + n) for e, lo, n in zip(extent, low, spread)]
    roles = np.where(inside[0][:, None] & inside[1][None, :], INSERTED, PADDING).astype(np.int8)
    roles = np.broadcast_to(roles, values.shape).copy()
    roles[sources >= 0] = SAMPLE
    return Canvas(values, roles, sources)


def tap_positions(output: int, kernel: int, stride: int, dilation: int) -> np.ndarray:
    """``(output, kernel)``: the canvas coordinate tap ``i`` of output ``p`` reads, ``p*stride + i*dilation``.

    >>> tap_positions(2, 3, 2, 1).tolist()
    [[0, 1, 2], [2, 3, 4]]
    """
    return np.arange(output)[:, None] * stride + np.arange(kernel)[None, :] * dilation


def read_mask(extent: Sequence[int], output: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
              dilation: Sequence[int]) -> np.ndarray:
    """``(H, W)`` bools: the canvas cells some window reads (see :func:`tap_positions`).

    The cells read form a product of one set per axis.

    >>> read_mask((5, 1), (2, 1), (1, 1), (3, 1), (1, 1))[:, 0].tolist()
    [True, False, False, True, False]
    """
    axes = []
    for size, out, k, s, d in zip(extent, output, kernel, stride, dilation):
        read = np.zeros(size, dtype=bool)
        read[tap_positions(out, k, s, d).ravel()] = True
        axes.append(read)
    return axes[0][:, None] & axes[1][None, :]


def rotated_swapped(kernel: np.ndarray, groups: int) -> np.ndarray:
    """``kernel`` ``(A, B, kH, kW)`` rotated 180 degrees, its two channel axes swapped within each group.

    The weight of the full correlation that undoes a convolution's geometry:
    the input gradient of ``conv2d(., kernel)``, and ``conv_transpose2d`` of a
    ``(A, B, ...)`` weight, are ``conv2d`` of the spread and padded array with
    this ``(groups*B, A/groups, kH, kW)`` weight and the same dilation.

    >>> rotated_swapped(np.arange(4).reshape(1, 1, 2, 2), 1)[0, 0].tolist()
    [[3, 2], [1, 0]]
    """
    a, b, *taps = kernel.shape
    per_group = kernel.reshape(groups, a // groups, b, *taps).transpose(0, 2, 1, 3, 4)  # (G, B, A/G, kH, kW)
    return np.ascontiguousarray(per_group.reshape(groups * b, a // groups, *taps)[..., ::-1, ::-1])
