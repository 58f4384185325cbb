"""winograd: Winograd's minimal filtering F(m, r), generated from interpolation points and verified.

A correlation of ``m`` outputs with an ``r``-tap filter reads ``a = m + r - 1``
inputs. Toom-Cook writes it as ``y = A^T [(G g) * (B^T d)]``: evaluate the
filter polynomial at ``a`` points (``G``), evaluate the data's dual at the same
points (``B^T``), multiply pointwise (``a`` multiplications instead of ``m*r``),
and map back (``A^T``). The matrices come from the points alone:

- ``G[t, k] = p_t**k`` and ``A^T[i, t] = p_t**i`` (Vandermonde rows), with the
  point at infinity contributing the leading coefficient (``e_{r-1}`` and ``e_{m-1}``);
- ``B^T = V^{-T}`` where ``V[t, j] = p_t**j`` is the ``a``-point evaluation matrix.

They are computed in exact rational arithmetic and the identity
``sum_t A^T[i,t] G[t,k] B^T[t,j] == (j == i + k)`` is checked for every
``(i, k, j)`` before use, so no constant is pasted and none can be mistyped.
In several dimensions the same 1-d transforms apply along each axis.

Examples
--------
>>> at, g, bt = winograd_matrices(2, 3)
>>> g.tolist()  # the filter evaluated at 0, 1, -1 and its leading coefficient (infinity)
[[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 1.0]]
>>> bt.tolist()
[[1.0, 0.0, -1.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.0, -0.5, 0.5, 0.0], [0.0, -1.0, 0.0, 1.0]]
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import prod
from typing import Sequence

import numpy as np

from .._dtypes import is_exact
from .._settings import current_workspace_limit
from .._window import sliding_windows
from ..spec import ConvSpec
from . import Algorithm
from ._blocking import CACHE_BLOCK_BYTES  # also the target size of one block of transformed tiles

__all__ = ["Winograd", "POINTS", "winograd_matrices"]

#: Interpolation points per output tile size (infinity is always added). Small
#: magnitudes and reciprocals keep the transforms' rounding error low.
POINTS: dict[int, tuple[Fraction, ...]] = {
    2: (Fraction(0), Fraction(1), Fraction(-1)),
    4: (Fraction(0), Fraction(1), Fraction(-1), Fraction(1, 2), Fraction(-2)),
}


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Gauss-Jordan inverse over the rationals (exact)."""
    size = len(matrix)
    work = [row[:] + [Fraction(int(i == j)) for j in range(size)] for i, row in enumerate(matrix)]
    for column in range(size):
        pivot = next(r for r in range(column, size) if work[r][column] != 0)
        work[column], work[pivot] = work[pivot], work[column]
        scale = work[column][column]
        work[column] = [value / scale for value in work[column]]
        for r in range(size):
            if r != column and work[r][column] != 0:
                factor = work[r][column]
                work[r] = [a - factor * b for a, b in zip(work[r], work[column])]
    return [row[size:] for row in work]


@lru_cache(maxsize=None)
def _exact_matrices(m: int, r: int, points: tuple[Fraction, ...]):
    a = m + r - 1
    if len(points) != a - 1:
        raise ValueError(f"F({m}, {r}) needs {a - 1} finite points, got {len(points)}")
    a_t = [[p**i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]  # (m, a)
    g = [[p**k for k in range(r)] for p in points] + [[Fraction(int(k == r - 1)) for k in range(r)]]  # (a, r)
    evaluation = [[p**j for j in range(a)] for p in points] + [[Fraction(int(j == a - 1)) for j in range(a)]]
    inverse = _inverse(evaluation)
    b_t = [[inverse[j][t] for j in range(a)] for t in range(a)]  # V^{-T}: (a, a)
    for i in range(m):  # verify the identity exactly before anything uses the matrices
        for k in range(r):
            for j in range(a):
                value = sum(a_t[i][t] * g[t][k] * b_t[t][j] for t in range(a))
                if value != int(j == i + k):
                    raise ArithmeticError(f"F({m}, {r}) transforms fail at i={i}, k={k}, j={j}: {value}")
    return a_t, g, b_t


def winograd_matrices(m: int, r: int = 3, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T, G, B^T)`` of F(m, r) from :data:`POINTS`, verified exactly, as ``dtype`` arrays.

    >>> at, g, bt = winograd_matrices(4, 3)
    >>> at.shape, g.shape, bt.shape
    ((4, 6), (6, 3), (6, 6))
    """
    a_t, g, b_t = _exact_matrices(m, r, POINTS[m])
    return tuple(np.array([[float(v) for v in row] for row in mat], dtype=dtype) for mat in (a_t, g, b_t))


def _along_axes(array: np.ndarray, matrix: np.ndarray, first_axis: int, count: int) -> np.ndarray:
    """Apply ``matrix`` (rows: new index) along ``count`` axes starting at ``first_axis``.

    Each :func:`numpy.tensordot` consumes the axis at ``first_axis`` and appends
    the new one at the end, so after ``count`` steps the transformed axes sit,
    in order, at the end.
    """
    for _ in range(count):
        array = np.tensordot(array, matrix, axes=([first_axis], [1]))
    return array


def winograd_conv(padded: np.ndarray, kernel: np.ndarray, spec, m: int) -> np.ndarray:
    """Stride-1, undilated valid correlation by F(m^d, r^d) tiles, blocked along batch and first tile axis."""
    rank, groups = spec.rank, spec.groups
    r = spec.kernel_size[0]
    a = m + r - 1
    dtype = padded.dtype
    a_t, g, b_t = (matrix.astype(dtype) for matrix in winograd_matrices(m, r))
    tiles = tuple(-(-o // m) for o in spec.output_size)  # tiles per axis, ceil
    needed = tuple((t - 1) * m + a for t in tiles)
    extra = [(0, max(0, n - p)) for n, p in zip(needed, spec.padded_size)]
    if any(high for _, high in extra):  # whole tiles at the high end read zeros
        padded = np.pad(padded, [(0, 0), (0, 0), *extra])
    c, o = spec.in_channels_per_group, spec.out_channels_per_group
    # Filters: (G*O, C, *r) -> (G*O, C, *a) -> (a^d, G, O, C)
    filters = _along_axes(kernel, g, 2, rank)
    filters = filters.reshape(groups, o, c, a**rank).transpose(3, 0, 1, 2)
    out = np.empty(spec.output_shape, dtype=dtype)
    per_tile_row = a**rank * spec.in_channels * prod(tiles[1:]) * padded.itemsize * 2  # transformed input, twice
    rows_fit = max(1, min(current_workspace_limit(), CACHE_BLOCK_BYTES) // max(per_tile_row, 1))
    if rows_fit >= tiles[0]:
        samples = max(1, min(spec.batch, rows_fit // tiles[0]))
        blocks = [(n, min(n + samples, spec.batch), 0, tiles[0]) for n in range(0, spec.batch, samples)]
    else:
        blocks = [(n, n + 1, t, min(t + rows_fit, tiles[0])) for n in range(spec.batch)
                  for t in range(0, tiles[0], rows_fit)]
    for n0, n1, t0, t1 in blocks:
        nb, block_tiles = n1 - n0, (t1 - t0, *tiles[1:])
        slab = padded[n0:n1, :, t0 * m:(t1 - 1) * m + a]
        windows = sliding_windows(slab, (a,) * rank, (m,) * rank, (1,) * rank)  # (nb, G*C, *tiles, *a)
        data = _along_axes(windows, b_t, 2 + rank, rank)  # (nb, G*C, *tiles, *a): B^T d B
        count = prod(block_tiles)
        data = data.reshape(nb, groups, c, count, a**rank).transpose(4, 1, 2, 0, 3)  # (a^d, G, C, nb, T)
        data = data.reshape(a**rank, groups, c, nb * count)
        product = np.matmul(filters, data)  # (a^d, G, O, nb*T): the pointwise products, summed over C
        product = product.reshape(*(a,) * rank, groups * o, nb, *block_tiles)
        result = product
        for _ in range(rank):  # A^T along each transformed axis: (G*O, nb, *tiles, *m)
            result = np.tensordot(result, a_t, axes=([0], [1]))
        # (G*O, nb, t_1..t_d, m_1..m_d) -> (nb, G*O, t_1, m_1, ..., t_d, m_d)
        interleaved = [axis for pair in zip(range(2, 2 + rank), range(2 + rank, 2 + 2 * rank)) for axis in pair]
        result = result.transpose(1, 0, *interleaved).reshape(nb, groups * o, *(t * m for t in block_tiles))
        rows = min(spec.output_size[0], t1 * m) - t0 * m
        crop = (slice(0, rows), *(slice(0, size) for size in spec.output_size[1:]))
        out[n0:n1, :, t0 * m:t0 * m + rows] = result[(slice(None), slice(None), *crop)]
    return out


def supports(spec, r: Sequence[int] = (3,)) -> str | None:
    """Why Winograd cannot run ``spec`` (or None)."""
    if any(s != 1 for s in spec.stride):
        return f"stride {spec.stride}: Winograd tiles need stride 1"
    if any(d != 1 for d in spec.dilation):
        return f"dilation {spec.dilation}: Winograd tiles need dilation 1"
    if any(k not in r for k in spec.kernel_size):
        return f"kernel {spec.kernel_size}: generated here for {'/'.join(map(str, r))}-tap kernels"
    return None


class Winograd(Algorithm):
    """Winograd's minimal filtering F(m^d, 3^d) for 3-tap (3×3, 3×3×3) stride-1 kernels.

    Each ``m``-wide output tile costs ``(m + 2)^d`` multiplications per (filter,
    channel) pair instead of ``(3m)^d``: 2.25× fewer for F(2×2, 3×3), 4× for
    F(4×4, 3×3) in 2-d, as batched matrix products over the transformed tiles.
    The transforms are generated and verified above (:func:`winograd_matrices`).
    Floating point only; the transforms add rounding (about 1e-6 relative in
    float32 for F(2), a few times that for F(4)).
    """

    mixes_outputs = True

    def __init__(self, tile: int):
        self.tile = tile
        self.name = f"winograd{tile}"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the transforms round"
        if np.dtype(dtype).kind == "c":
            return "complex inputs are not supported by the Winograd transforms here"
        return supports(spec)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        a = self.tile + 2
        tiles = prod(-(-o // self.tile) for o in spec.output_size)
        whole = 2 * a**spec.rank * spec.batch * tiles * (spec.in_channels + spec.out_channels) * itemsize
        return min(whole, current_workspace_limit())

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return winograd_conv(padded, kernel, spec, self.tile)

