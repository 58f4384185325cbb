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
from math import inf, prod
from typing import Sequence

import numpy as np

from .._dtypes import is_exact
from .._settings import current_workspace_limit
from .._window import sliding_windows
from ..spec import ConvSpec
from . import Algorithm
from ._blocking import CACHE_BLOCK_BYTES
from ._compiled import numba_missing
from ._kernel_layout import KERNEL_RANK
from ._rates import THREAD_GAIN, beside_pool_factor, product_rate
from ._threads import threads_for
from ._winograd_compiled import (STORE_TILES, _channels_last_size, _fused_bytes, _fused_layout, _fused_threads,
                                 _pooled, _tile_blocks, compiled_winograd_conv, fused_winograd_conv,
                                 panel_scratch_bytes)
from .depthwise import _zero_padded_source

__all__ = ["Winograd", "POINTS", "STORE_TILES", "winograd_matrices"]

#: Interpolation points per output tile size (infinity is always added). Small
#: magnitudes and reciprocals keep the transforms' rounding error low. F(3)'s were chosen (session 29) among the
#: sets holding 0 (a sparse row in each matrix) from 0, +-1, +-2, +-1/2, +-1/4, +-4, +-3/2, +-2/3: the worst error
#: over uniform, normal and rectified data (64 channels, float32) was 5.3e-7 for these, 4.7e-7 for the best
#: (0, 1, -2, -2/3), 8.7e-7 for (0, 1, -1, 1/2).
POINTS: dict[int, tuple[Fraction, ...]] = {
    2: (Fraction(0), Fraction(1), Fraction(-1)),
    3: (Fraction(0), Fraction(1, 2), Fraction(-1), Fraction(2)),
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


#: Per output tile size and rank (1-d, 2-d, 3-d), the worst error measured in float32, relative to an output's
#: terms ``sum |x*w|``, over ``eps * max|x| / m`` (``m`` the median magnitude of the nonzero inputs), on layers
#: with 16 and 64 input channels and uniform, normal, rectified, log-normal and spiked data, rounded up about
#: twice: see the module notes. F(3) measured 0.80-0.82, 1.22-1.39 and 1.75-1.80 (two seeds; F(2) 0.41-0.79, F(4)
#: 1.33-5.39 in the same runs).
ERROR_GROWTH = {2: (1.0, 1.0, 1.0), 3: (2.0, 3.0, 4.0), 4: (3.0, 5.0, 10.0)}

# The cost model (:meth:`Winograd.estimate`), fitted to single-threaded forward timings of its parts (process CPU
# time, min of repeats: the machine was shared) on ResNet-18's and VGG-16's 3x3 layers, batch 8, float32. The
# input and output transforms share their jobs among threads, counted as the compiled algorithm counts its loops
# (:data:`~convolab.algorithms._rates.THREAD_GAIN`); the products are charged as gemm's are, and the filter
# transform, bound by memory, as one thread's.
#: Fixed cost of a call: the matrices, the filter transform's dispatch, the buffers.
CALL_OVERHEAD = 60e-6
#: Cost of each block of tiles: two rounds of jobs handed to the threads, the products' dispatch.
BLOCK_OVERHEAD = 40e-6
#: Transformed input values (float32) written per second by the input transform, per output tile size: F(4)'s
#: ``B^T`` has 26 nonzeros in 36, F(2)'s 8 in 16 (the straight-line kernels of 1-2 axes, measured on ResNet-18's
#: 56x56, 28x28 and 14x14 layers: F(4) 1.8-2.3e9, F(2) 2.3-2.5e9; the loops ran F(4) at 0.6e9, F(2) at 2.0e9); ...
#: F(3)'s (17 nonzeros in 25) ran between them: 0.74-1.0 of F(2)'s rate in the same runs (session 29, the same
#: layers); ...
INPUT_TRANSFORM_RATE = {2: 2.3e9, 3: 2.0e9, 4: 1.8e9}
#: ... products read per second by the output transform (its straight-line kernels of 1-2 axes, one thread, on
#: ResNet-18's and VGG-16's layers: F(4) 2.2-2.6e9, where the loops ran 1.1-1.3e9; F(2) 2.5-3.5e9 against
#: 1.9-2.7e9, kept at the loops' rate: on tiny images, 64 x (32 -> 64) channels of 4x4, F(2) and gemm are
#: estimated at parity and gemm measured faster, 0.91 against 1.19 ms at one thread); ...
#: F(3)'s ran 0.82-1.07 of F(2)'s in the same runs (session 29); ...
OUTPUT_TRANSFORM_RATE = {2: 1.9e9, 3: 2.0e9, 4: 2.2e9}
#: ... transformed filter values written per second (:func:`~._winograd_compiled._transformed_filters`), and the seconds per filter and
#: channel its gathered taps cost (fitted on 128-512 channels: 0.6 ns a value, 5-20 ns a pair, more with more
#: channels); ...
FILTER_TRANSFORM_RATE = 1.7e9
FILTER_PAIR_COST = 20e-9
#: ... transformed filter values written per second in panels (:func:`~._winograd_compiled._filter_panels`, no cost per pair: 1.2-1.3e9
#: on 512 x 512 channels, F(2) and F(4), one thread); ...
PANEL_TRANSFORM_RATE = 1.2e9
#: (Transformed filters past glibc's 32 MiB ``mmap`` threshold were charged their pages faulted in again on
#: every call until session 21 kept them per thread (:func:`._scratch.reused_empty`); now none are.) ...
#: ... input values laid out channels last per second (a NumPy transposing copy); ...
CHANNELS_LAST_RATE = 2.4e9
#: ... and input values per second that "auto" spends before it runs a mixing algorithm (the data check of
#: :func:`convolab.planner.data_traits`: 0.8-1.0 ms for ResNet-18's 56x56 input; with padding of a mode other
#: than zeros the engine's padded copy comes first, 0.9 ms more).
DATA_CHECK_RATE = 1.8e9
#: The per-position products ``(T, C) @ (C, O)`` reach this fraction of
#: :func:`~convolab.algorithms._rates.product_rate` with enough tiles and channels (measured 0.8-1.0 on 64-256
#: channels), less with fewer tiles per block than :data:`FULL_RATE_TILES` (0.5 with 32: a 7x7 image's four
#: F(4) tiles per sample, 512 channels) or fewer input channels than :data:`FULL_RATE_CHANNELS`.
PRODUCT_EFFICIENCY = 0.8
FULL_RATE_TILES, FULL_RATE_CHANNELS = 128, 64

#: The fused forward (:func:`~._winograd_compiled.fused_winograd_conv`, where
#: :func:`~._winograd_compiled._fused_threads` says) costs this many times the unfused one's single-threaded
#: estimate, shared among its threads (measured,
#: one thread, process CPU time: 1.04-1.25x on ResNet-18's 56x56-14x14 and VGG-16's 56x56 layers; at two threads
#: under load it ran 1.4-1.8x faster than the unfused path, whose BLAS threads compete with the pool's).
FUSED_ONE_THREAD = 1.15

#: The products on the pool cost this many times the unfused one-thread estimate (with the panels' filter
#: transform), shared among the threads: measured over estimated at one thread, ResNet-18's and VGG-16's 3x3
#: layers, F(2) and F(4), 0.9-1.4 (mean 1.18) against the BLAS's products' 1.0-1.5 (mean 1.14).
POOLED_ONE_THREAD = 1.04
#: What a second thread adds to the pooled path, measured (wall, min of 10, quiet machine): ResNet-18 layer4's
#: F(2) 18.0 -> 12.8 ms (1.4x), layer3's 12.0 -> 8.7 (1.38x), VGG-16 conv5_1's 46.4 -> 28.5 (1.63x); less than
#: :data:`~convolab.algorithms._rates.THREAD_GAIN`, which the other estimates' one-thread seconds stand for.
POOLED_THREAD_GAIN = 0.45


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
    channel) pair instead of ``(3m)^d``: 2.25× fewer for F(2×2, 3×3), 3.24× for
    F(3×3, 3×3), 4× for F(4×4, 3×3) in 2-d, as batched matrix products over the
    transformed tiles. The transforms are generated and verified above
    (:func:`winograd_matrices`). Floating point only; the transforms add
    rounding (about 1e-7 of an output's terms in float32 for F(2), 5e-7 for
    F(3), 1e-6 for F(4) on normal data: ``docs/winograd.md``).
    """

    mixes_outputs = True
    automatic = True

    def __init__(self, tile: int):
        self.tile = tile
        self.name = f"winograd{tile}"

    def error_growth(self, rank: int) -> float:
        """The worst error measured, relative to the magnitude of an output's terms, per unit of ``eps * max|x| /
        m`` (the planner's :attr:`~convolab.planner.DataTraits.tile_error`), for ``rank`` spatial axes: see
        :data:`ERROR_GROWTH`."""
        growths = ERROR_GROWTH[self.tile]
        return growths[min(rank, len(growths)) - 1]

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the transforms round"
        if np.dtype(dtype).kind == "c":
            return "complex inputs are not supported by the Winograd transforms here"
        return supports(spec)

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """The products at their rate, the transforms' values at theirs, the data check "auto" pays, a fixed cost.

        Per tile position a ``(T, C) @ (C, O)`` product over every tile, at
        :func:`~convolab.algorithms._rates.product_rate` times
        :data:`PRODUCT_EFFICIENCY` (lower for few tiles per block or few
        channels); the input transform's values at
        :data:`INPUT_TRANSFORM_RATE`, the output transform's at
        :data:`OUTPUT_TRANSFORM_RATE`, the transformed filters at
        :data:`FILTER_TRANSFORM_RATE` plus :data:`FILTER_PAIR_COST` (bound by
        memory, which the threads share); the input and output transforms shared among the threads as
        the compiled algorithm's loops are; the channels-last copy at
        :data:`CHANNELS_LAST_RATE` and the data check of "auto" (after a
        padded copy where the padding is not zeros) at
        :data:`DATA_CHECK_RATE`; :data:`CALL_OVERHEAD` plus
        :data:`BLOCK_OVERHEAD` per block. Without the compiled transforms (no
        Numba, or a rank or dtype they do not run) "auto" never picks it: the
        NumPy transforms' passes over memory cost what the products save
        (``inf``); nor in 1-d and 3-d, where this model was not fitted.

        Fitted on ResNet-18's 3x3 layers (batch 8; single-threaded parts,
        scaled like the other estimates): F(2) or F(4) measured 1.3-1.6x
        faster than folded on 56x56, 28x28 and 14x14 with 64-256 channels,
        and slower than gemm on 7x7 with 512 (the filter transform writes
        four times the weights, and four tiles per sample leave the
        products short), where this estimate keeps gemm.

        On more than one thread, where the fused forward runs (:func:`_fused_threads`), every part is shared
        among the threads (as many as it has jobs), at :data:`FUSED_ONE_THREAD` times the one-thread cost.
        Where the products run on the pool (:func:`_pooled`), the filters in panels cost their values at
        :data:`PANEL_TRANSFORM_RATE` (no cost per pair), and every part but the copies is shared among the
        threads, at :data:`POOLED_ONE_THREAD` times the one-thread cost.

        Nor where the memory it needs under "auto" exceeds the workspace
        limit (:func:`_auto_bytes`: its channels-last samples are whole
        images, and "auto" checks a padded copy of the input first): a
        (1, 64, 1024, 1024) image would take 0.5 GiB beside its input, and
        the summing algorithms' blocks 8 MiB.
        """
        if not _compiles(dtype, spec) or spec.rank != 2 or _auto_bytes(self, spec, dtype) > current_workspace_limit():
            return inf
        m, a = self.tile, self.tile + 2
        positions = a**spec.rank
        blocks, tiles = _tile_blocks(spec, m, dtype.itemsize)
        tile_count = spec.batch * prod(tiles)
        block_tiles = max(((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in blocks), default=0) * tiles[2]
        channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
        efficiency = (PRODUCT_EFFICIENCY * min(1.0, block_tiles / FULL_RATE_TILES) ** 0.3
                      * min(1.0, channels / FULL_RATE_CHANNELS) ** 0.15)
        rate = product_rate(dtype, out_channels, channels) * max(efficiency, 1e-3)
        products = 2 * positions * spec.out_channels * channels * tile_count
        filter_values = positions * spec.out_channels * channels
        loops = positions * tile_count * (spec.in_channels / INPUT_TRANSFORM_RATE[m]
                                          + spec.out_channels / OUTPUT_TRANSFORM_RATE[m])
        # The filter transform writes its values out of the caches: bound by memory, which the threads share.
        filter_seconds = (filter_values / FILTER_TRANSFORM_RATE * dtype.itemsize / 4
                          + spec.out_channels * channels * FILTER_PAIR_COST)
        jobs = max(1, block_tiles // tiles[2])  # the transforms' jobs per block: its tile rows
        threads = min(threads_for(positions * tile_count * (spec.in_channels + spec.out_channels)), jobs)
        copies = (spec.batch * prod(_channels_last_size(spec, m, tiles)) * spec.in_channels / CHANNELS_LAST_RATE
                  + spec.batch * spec.in_channels * prod(_checked_size(spec)) / DATA_CHECK_RATE)
        if _fused_threads(spec, dtype) > 1:  # every part shared among the threads, at the fused path's speed
            one_thread = (CALL_OVERHEAD + len(blocks) * BLOCK_OVERHEAD + products / rate + filter_seconds
                          + (loops + copies) * dtype.itemsize / 4)
            _, rows_per_job, _, _ = _fused_layout(spec, m, dtype.itemsize)
            fused_jobs = -(-spec.batch * tiles[0] * tiles[1] // rows_per_job)
            sharing = min(_fused_threads(spec, dtype), fused_jobs)
            return one_thread * FUSED_ONE_THREAD / (1 + THREAD_GAIN * (sharing - 1))
        if _pooled(spec, dtype):  # filters in panels; the transforms, the panels and the products on the pool
            panels = filter_values / PANEL_TRANSFORM_RATE * dtype.itemsize / 4
            shared = (CALL_OVERHEAD + len(blocks) * BLOCK_OVERHEAD + products / rate + panels
                      + loops * dtype.itemsize / 4)
            # in one thread's seconds, as compiled's and packed's: their threads gain THREAD_GAIN, these less
            available, sharing = threads_for(products // 2), min(threads, positions)
            return (shared * POOLED_ONE_THREAD * (1 + THREAD_GAIN * (available - 1)) / (1 + POOLED_THREAD_GAIN * (sharing - 1))
                    + copies * dtype.itemsize / 4)
        # the products on the BLAS's threads beside the transforms' jobs: as gemm's (_rates.beside_pool_factor)
        return (CALL_OVERHEAD + len(blocks) * BLOCK_OVERHEAD + products / rate * beside_pool_factor(threads, products // 2, out_channels)
                + filter_seconds + (loops / (1 + THREAD_GAIN * (threads - 1)) + copies) * dtype.itemsize / 4)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """The transformed filters, one block of transformed tiles (input and products) and its samples laid
        out channels last (with the products on the pool, the filters in whole panels and the block in whole
        register tiles and a row more); the fused path's blocks (one per thread) where it runs."""
        dtype = np.dtype(f"f{itemsize}")
        if _fused_threads(spec, dtype) > 1:
            return _fused_bytes(spec, self.tile, itemsize)
        a, pooled = self.tile + 2, _pooled(spec, dtype)
        per_group = -(-spec.out_channels_per_group // 32) * 32 if pooled else spec.out_channels_per_group
        filters = a**spec.rank * spec.groups * per_group * spec.in_channels_per_group * itemsize
        blocks, tiles = _tile_blocks(spec, self.tile, itemsize)
        tiles_most = max(((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in blocks), default=0) * tiles[2]
        tiles_most = -(-tiles_most // 8) * 8 + 1 if pooled else tiles_most
        samples = max((n1 - n0 for n0, n1, _, _ in blocks), default=0)
        block = a**spec.rank * (spec.in_channels + spec.out_channels) * tiles_most * itemsize
        channels_last = samples * prod(_channels_last_size(spec, self.tile, tiles)) * spec.in_channels * itemsize
        if pooled:  # each thread's scratch in the panels' transform
            runs = spec.groups * -(-spec.out_channels_per_group // 32)
            filters += min(threads_for(filters // itemsize), runs) * panel_scratch_bytes(spec, self.tile, itemsize)
        return filters + block + channels_last

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        if _compiles(padded.dtype, spec):
            return _compiled_forward(padded, ((0, 0),) * spec.rank, kernel, spec, self.tile)
        return winograd_conv(padded, kernel, spec, self.tile)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: the compiled transforms read zero padding as they go."""
        if _compiles(x.dtype, spec):
            return _compiled_forward(*_zero_padded_source(x, spec), kernel, spec, self.tile)
        return super().run_unpadded(x, kernel, spec)


def _compiled_forward(source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray, spec: ConvSpec,
                      m: int) -> np.ndarray:
    """The compiled forward: fused where it runs on more than one thread (:func:`_fused_threads`), else unfused,
    the products on the pool (:func:`_pooled`) or on the BLAS."""
    if _fused_threads(spec, source.dtype) > 1:
        return fused_winograd_conv(source, padding, kernel, spec, m)
    return compiled_winograd_conv(source, padding, kernel, spec, m, blas=not _pooled(spec, source.dtype))


def _checked_size(spec: ConvSpec) -> tuple[int, ...]:
    """The spatial size of what "auto" checks before it runs Winograd: the input itself with zero padding, else
    the engine's padded copy (:func:`convolab._engine._run_forward`)."""
    return spec.input_size if spec.padding_mode == "zeros" else spec.padded_size


def _auto_bytes(winograd: Winograd, spec: ConvSpec, dtype: np.dtype) -> int:
    """The memory a Winograd forward needs beside its input and output when "auto" runs it: its workspace
    (:meth:`Winograd.workspace_bytes`) and, where the padding is not zeros, the padded copy of the input the data
    check reads."""
    padded = spec.batch * spec.in_channels * prod(spec.padded_size) * dtype.itemsize
    return winograd.workspace_bytes(spec, dtype.itemsize) + (0 if spec.padding_mode == "zeros" else padded)


def _compiles(dtype: np.dtype, spec: ConvSpec) -> bool:
    """Whether the compiled transforms run this problem: float32 or float64, 1 to 3 spatial axes, and Numba
    imports (else the NumPy transforms of :func:`winograd_conv` do)."""
    dtype = np.dtype(dtype)
    return (dtype.kind == "f" and dtype.itemsize in (4, 8) and spec.rank <= KERNEL_RANK
            and numba_missing() is None)
