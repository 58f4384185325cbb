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

import threading
from fractions import Fraction
from functools import lru_cache
from math import inf, prod
from typing import Callable, Sequence

import numpy as np

from .._dtypes import is_exact
from .._settings import current_workspace_limit
from .._window import sliding_windows
from ..spec import ConvSpec
from . import Algorithm
from ._blocking import CACHE_BLOCK_BYTES
from ._compiled import kernels, numba_missing
from ._rates import THREAD_GAIN, beside_pool_factor, product_rate
from ._threads import in_parallel
from .compiled import KERNEL_RANK, _run_jobs, _shape3, _steps, _threads
from .depthwise import _zero_padded_source

__all__ = ["Winograd", "POINTS", "STORE_TILES", "winograd_matrices"]

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


#: Per output tile size and rank (1-d, 2-d, 3-d), the worst error measured in float32, relative to an output's
#: terms ``sum |x*w|``, over ``eps * max|x| / m`` (``m`` the median magnitude of the nonzero inputs), on layers
#: with 16 and 64 input channels and uniform, normal, rectified, log-normal and spiked data, rounded up about
#: twice: see the module notes.
ERROR_GROWTH = {2: (1.0, 1.0, 1.0), 4: (3.0, 5.0, 10.0)}

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
INPUT_TRANSFORM_RATE = {2: 2.3e9, 4: 1.8e9}
#: ... products read per second by the output transform (1.2-1.6e9 for F(4), 1.9e9 for F(2)); ...
OUTPUT_TRANSFORM_RATE = {2: 1.9e9, 4: 1.3e9}
#: ... transformed filter values written per second (:func:`_transformed_filters`), and the seconds per filter and
#: channel its gathered taps cost (fitted on 128-512 channels: 0.6 ns a value, 5-20 ns a pair, more with more
#: channels); ...
FILTER_TRANSFORM_RATE = 1.7e9
FILTER_PAIR_COST = 20e-9
#: ... transformed filter values written per second in panels (:func:`_filter_panels`, no cost per pair: 1.2-1.3e9
#: on 512 x 512 channels, F(2) and F(4), one thread); ...
PANEL_TRANSFORM_RATE = 1.2e9
#: ... transformed filters larger than this come from the operating system fresh on every call (glibc's largest
#: threshold for serving an allocation by ``mmap``), and each page faulted in costs as if written again at
#: :data:`FRESH_MEMORY_RATE` bytes per second (37.7 MB, F(4)'s for 512 channels: 9.2 ms to fill fresh, 4.4 ms
#: reused); ...
FRESH_MEMORY_BYTES = 32 * 2**20
FRESH_MEMORY_RATE = 8e9
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

#: Neighbouring tiles whose outputs the output transform stores together, row by row (:mod:`._kernels_winograd`).
STORE_TILES = 4

#: A block of transformed tiles holds at least this many tiles (the columns of each tile position's matrix
#: product), so that the BLAS runs its products near its rate, ...
BLOCK_TILES = 256
#: ... else about this many bytes of transformed input and products (half the L2 cache of one core here: the
#: products read what the input transform has just written; 8 MiB blocks ran ResNet-18's 56x56 and 28x28
#: layers about 10% slower, single-threaded), ...
TILE_BLOCK_BYTES = 4 * 2**20
#: ... within this many (the workspace limit comes on top).
MAX_TILE_BLOCK_BYTES = 32 * 2**20


def _transformed_filters(kernel: np.ndarray, spec: ConvSpec, m: int, spare: int = 0) -> np.ndarray:
    """``U = G g G^T`` of every filter, laid out for the products: ``(G, P, C, O)`` C-contiguous, by the compiled
    :func:`~._kernels_winograd.filter_transform` (rows ``(g, c)`` shared among threads), which reads the weights
    in place and writes each transformed value once.

    Contiguous, not a transposed view: the BLAS ran the products ``(T, C) @ (C, O)`` over a block of 100-200
    tiles up to 1.8x faster so (64 channels, float32), and no slower with more tiles (``(O, C) @ (C, T)`` ran
    no faster either, 256 and 512 channels). One NumPy product ``(P, K) @ (K, C*O)`` over a transposed copy of
    the weights wrote 2-3 GB/s (18 ms of a 7x7 layer with 512 channels, single-threaded): the copy, and the
    product's 36 rows a power of two apart, which share the caches' sets.

    ``spare`` zeros follow the array in its buffer (``filters.base``), for a reader of whole runs past its end.
    An input gradient's kernel, a swapped and reversed view of the forward's weight, is read as it is
    (:func:`_swapped_source`), not copied.
    """
    taps, positions = prod(spec.kernel_size), (m + 2)**spec.rank
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    weight = _swapped_source(kernel, spec) if spec.rank <= 2 else None  # (G, C, O, K), read swapped and reversed
    swapped = weight is not None
    if not swapped:
        weight = np.ascontiguousarray(kernel).reshape(spec.groups, out_channels, channels, taps)  # (G, O, C, K)
    size = spec.groups * positions * channels * out_channels
    buffer = np.empty(size + spare, dtype=kernel.dtype)
    buffer[size:] = 0
    filters = buffer[:size].reshape(spec.groups, positions, channels, out_channels)
    transform = kernels("winograd").filter_transform(m, spec.rank, kernel.dtype.name, swapped)
    block = kernels("winograd").FILTER_BLOCK
    width = -(-out_channels // block) * block  # the filters in whole blocks

    def scratch() -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros(kernels("winograd").FILTER_CHANNELS * taps * width, dtype=kernel.dtype),
                np.zeros(positions * width, dtype=kernel.dtype))

    _run_jobs(spec.groups * channels, filters.size,
              lambda first, last, own: transform(weight, filters, first, last, *own), scratch)
    return filters


def _filter_panels(kernel: np.ndarray, spec: ConvSpec, m: int, lanes: int) -> np.ndarray:
    """``U = G g G^T`` of every filter of ``kernel`` ``(G*O, C, *3)`` in panels of ``lanes`` filters, ``(G, P, R,
    C, lanes)`` (``R = ceil(O / lanes)``, the lanes past the last filter zeros), for
    :func:`._kernels_winograd_fused.panel_products`, by the compiled
    :func:`~._kernels_winograd.filter_panels` (jobs: a panel of a group each, shared among threads). 1-2 axes.

    The kernel of an input gradient's full correlation is a view of the forward's weight, its channels swapped
    and its taps reversed (:func:`_swapped_source`): the transform reads that weight as it is, where a contiguous
    copy of the view, a gather, took 7.7 ms for 512 x 512 channels (more than the transform).
    """
    taps, positions = prod(spec.kernel_size), (m + 2)**spec.rank
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    weight = _swapped_source(kernel, spec)
    swapped = weight is not None
    if not swapped:
        weight = np.ascontiguousarray(kernel).reshape(spec.groups, out_channels, channels, taps)
    runs = -(-out_channels // lanes)
    panels = np.empty((spec.groups, positions, runs, channels, lanes), dtype=weight.dtype)
    transform = kernels("winograd").filter_panels(m, spec.rank, weight.dtype.name, lanes, swapped)

    def scratch() -> tuple[np.ndarray, np.ndarray]:
        return (np.empty(kernels("winograd").FILTER_CHANNELS * taps * lanes, dtype=weight.dtype),
                np.empty(positions * lanes, dtype=weight.dtype))

    _run_jobs(spec.groups * runs, panels.size, lambda first, last, own: transform(weight, panels, first, last, *own),
              scratch)
    return panels


def _swapped_source(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray | None:
    """The contiguous ``(G, C, O, K)`` array ``w`` with ``kernel[g*O + o, c] = w[g, c, o]`` reversed, where
    ``kernel`` is such a view of it (the full correlation's kernel: :func:`convolab._engine._input_grad_full`
    swaps the forward's weight per group, a view with one group, and reverses it), else None."""
    if kernel.flags.c_contiguous:
        return None
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    unreversed = np.flip(kernel, axis=tuple(range(2, kernel.ndim)))
    try:  # a view, or no use: a copy here would cost what reading the kernel as it is saves
        grouped = np.reshape(unreversed, (spec.groups, out_channels, channels, prod(spec.kernel_size)), copy=False)
    except ValueError:
        return None
    weight = grouped.swapaxes(1, 2)
    return weight if weight.flags.c_contiguous else None


def _tile_blocks(spec: ConvSpec, m: int, itemsize: int) -> tuple[list[tuple[int, int, int, int]], tuple[int, ...]]:
    """The blocks of transformed tiles ``(n0, n1, r0, r1)`` (samples, and tile rows of each: a block holds
    whole samples where one sample's tile rows fit, else some rows of one sample), and the tiles per sample
    along the three axes.

    A block holds at least :data:`BLOCK_TILES` tiles where that fits (the
    products' columns), else about :data:`TILE_BLOCK_BYTES` of
    transformed input and products, within :data:`MAX_TILE_BLOCK_BYTES` and
    the workspace limit.
    """
    a = m + 2
    tiles = _shape3((1, 1, *(-(-o // m) for o in spec.output_size)))[2:]
    per_row = a**spec.rank * (spec.in_channels + spec.out_channels) * tiles[2] * itemsize  # input and products
    wanted = max(-(-BLOCK_TILES // tiles[2]), TILE_BLOCK_BYTES // max(per_row, 1))
    fit = max(1, min(wanted, min(current_workspace_limit(), MAX_TILE_BLOCK_BYTES) // max(per_row, 1)))
    rows = tiles[0] * tiles[1]  # tile rows of one sample
    if fit >= rows:
        samples = fit // rows
        return [(n, min(n + samples, spec.batch), 0, rows) for n in range(0, spec.batch, samples)], tiles
    return [(n, n + 1, r, min(r + fit, rows)) for n in range(spec.batch) for r in range(0, rows, fit)], tiles


def _channels_last_size(spec: ConvSpec, m: int, tiles: tuple[int, ...]) -> tuple[int, ...]:
    """``(D, H, W)`` of the padded input laid out channels last: every tile's reads (unit leading axes)."""
    return _shape3((1, 1, *(t * m + 2 for t in tiles[KERNEL_RANK - spec.rank:])))[2:]


def compiled_winograd_conv(source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                           spec: ConvSpec, m: int, blas: bool = True) -> np.ndarray:
    """:func:`winograd_conv` with the compiled transforms of :mod:`._kernels_winograd` (1 to 3 spatial axes,
    float32 or float64): ``source`` ``(N, G*C, *size)`` is zero-padded by ``padding`` (per axis, as ``(low,
    high)``) to the padded input.

    Per block of tiles (:func:`_tile_blocks`): its samples copied channels
    last into a zero-padded buffer (one NumPy transposing copy, the zeros
    written once), the input transform of the block's tiles into ``(P, T,
    G*C)``, one product per tile position and group ``(P, T, C) @ (P, C, O)``
    on the BLAS, and the output transform straight into the output; the
    transforms' jobs (a tile row each) are shared among threads.

    Without ``blas`` the products are :func:`._kernels_winograd_fused.tile_products`' instead, the tile
    positions shared among the pool's threads: a position's filters (1 MiB for 512 channels) stay in its
    core's L2 cache while the block's tiles stream through, and no BLAS threads spin beside the pool's
    (:func:`_pooled_products`).
    """
    rank, groups = spec.rank, spec.groups
    dtype = source.dtype
    source = source.reshape(_shape3(source.shape))  # (N, G*C, D, H, W)
    fused = None if blas else kernels("winograd_fused")
    kernel = kernel.astype(dtype, copy=False)  # (G, P, C, O) for the BLAS, else (G, P, R, C, LANES)
    filters = _transformed_filters(kernel, spec, m) if blas else _filter_panels(kernel, spec, m, fused.LANES)
    positions, channels, out_channels = filters.shape[1], spec.in_channels_per_group, spec.out_channels_per_group
    blocks, tiles = _tile_blocks(spec, m, dtype.itemsize)
    rows_per_sample = tiles[0] * tiles[1]
    tile_counts = np.array(tiles, dtype=np.int64)
    out = np.empty(spec.output_shape, dtype=dtype)
    out3 = out.reshape(_shape3(out.shape))
    most_samples = max((n1 - n0 for n0, n1, _, _ in blocks), default=0)
    most = max(((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in blocks), default=0) * tiles[2]
    lows = _steps(tuple(low for low, _ in padding), fill=0)
    inside = tuple(slice(low, low + size) for low, size in zip(lows, source.shape[2:]))
    channels_last = np.zeros((most_samples, *_channels_last_size(spec, m, tiles), spec.in_channels), dtype=dtype)
    # Without the BLAS, whole register tiles and one more row (the positions' planes not a power of two apart);
    # the rows past a block's tiles are multiplied and never read: zeros at first, then finite.
    tile_step = 1 if blas else (fused.TILES_WIDE if dtype.itemsize == 4 else fused.TILES_NARROW)
    layout_most = most if blas else -(-most // tile_step) * tile_step + 1
    inputs = (np.empty if blas else np.zeros)(positions * layout_most * spec.in_channels, dtype=dtype)
    products = np.empty(positions * layout_most * spec.out_channels, dtype=dtype)
    input_tiles, output_tiles = kernels("winograd").transforms(m, rank, dtype.name)
    a = m + 2
    ad, ah = (a if rank == 3 else 1), (a if rank >= 2 else 1)
    md, mh = (m if rank == 3 else 1), (m if rank >= 2 else 1)

    def input_scratch() -> tuple[np.ndarray, ...]:
        return tuple(np.empty((ad, ah, a, spec.in_channels), dtype=dtype) for _ in range(2))

    def output_scratch() -> tuple[np.ndarray, ...]:
        return (np.empty((md, ah, a, spec.out_channels), dtype=dtype),
                np.empty((md, mh, a, spec.out_channels), dtype=dtype),
                np.empty((STORE_TILES, md, mh, m, spec.out_channels), dtype=dtype))

    work = positions * (spec.in_channels + spec.out_channels) * most * a
    copied = None
    for n0, n1, r0, r1 in blocks:
        if copied != (n0, n1):  # (N, C, D, H, W) -> (N, D, H, W, C), inside the zeros
            np.copyto(channels_last[(slice(0, n1 - n0), *inside)], source[n0:n1].transpose(0, 2, 3, 4, 1))
            copied = (n0, n1)
        count = ((n1 - n0) * rows_per_sample if r1 - r0 == rows_per_sample else r1 - r0) * tiles[2]
        layout = count if blas else -(-count // tile_step) * tile_step + 1
        block_in = inputs[:positions * layout * spec.in_channels].reshape(positions, layout, spec.in_channels)
        _run_jobs(count // tiles[2], work, lambda first, last, scratch: input_tiles(
            channels_last, block_in, tile_counts, r0, first, last, *scratch), input_scratch)
        block_out = products[:positions * layout * spec.out_channels].reshape(positions, layout, spec.out_channels)
        if blas:
            for g in range(groups):  # (P, T, C) @ (P, C, O) per group: stacks of 2-d products, one BLAS call each
                np.matmul(block_in[:, :, g * channels:(g + 1) * channels], filters[g],
                          out=block_out[:, :, g * out_channels:(g + 1) * out_channels])
        else:
            _pooled_products(fused, block_in, filters, block_out, layout - 1, tile_step, spec)
        _run_jobs(count // tiles[2], work, lambda first, last, scratch: output_tiles(
            block_out, out3, tile_counts, n0 * rows_per_sample + r0, first, last, *scratch), output_scratch)
    return out


def _pooled_products(fused, block_in: np.ndarray, filters: np.ndarray, block_out: np.ndarray, tiles: int,
                     tile_step: int, spec: ConvSpec) -> None:
    """``block_out[p, :tiles, group's O] = block_in[p, :tiles, group's C] @ filters[g, p]`` for every tile
    position ``p`` and group ``g`` by :func:`._kernels_winograd_fused.panel_products`, the positions shared
    among the pool's threads. ``block_in`` ``(P, T, G*C)`` and ``block_out`` ``(P, T, G*O)`` with ``T >
    tiles``, ``tiles`` a multiple of ``tile_step``; ``filters`` in panels, ``(G, P, R, C, LANES)``."""
    positions, layout = block_in.shape[0], block_in.shape[1]
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    inputs_flat, products_flat, filters_flat = block_in.reshape(-1), block_out.reshape(-1), filters.reshape(-1)
    plane_in, plane_out, per_position = layout * spec.in_channels, layout * spec.out_channels, prod(filters.shape[2:])

    def multiply(first: int, last: int, _) -> None:  # tile positions first:last of every group
        for g in range(spec.groups):
            fused.panel_products(inputs_flat[first * plane_in:], filters_flat[(g * positions + first) * per_position:],
                                products_flat[first * plane_out:], last - first, tiles, channels, out_channels,
                                spec.in_channels, g * channels, spec.out_channels, g * out_channels, tile_step,
                                layout)

    _run_jobs(positions, 2 * positions * tiles * spec.in_channels * out_channels, multiply, lambda: None)


#: The fused forward (:func:`fused_winograd_conv`) runs where the transformed filters of one tile position take at
#: most this many bytes (128 input and output channels in float32: with 256 the products on the pool ran 1.05-1.2x
#: faster at one thread, ResNet-18's 14x14 and VGG-16's 56x56 layers), ...
FUSED_FILTER_BYTES = 64 * 2**10
#: ... and costs this many times the unfused one's single-threaded estimate, shared among its threads (measured,
#: one thread, process CPU time: 1.04-1.25x on ResNet-18's 56x56-14x14 and VGG-16's 56x56 layers; at two threads
#: under load it ran 1.4-1.8x faster than the unfused path, whose BLAS threads compete with the pool's).
FUSED_ONE_THREAD = 1.15
#: The fused forward's block of tiles per job: about this many bytes of transformed input and products, the
#: thread's own scratch (half the L2 cache of one core here), ...
FUSED_BLOCK_BYTES = 1 * 2**20
#: ... but at least this many tiles, so that the filters each job reads ``(P, C, O)`` are used often enough, ...
FUSED_BLOCK_TILES = 64
#: ... and the input laid out channels last for this many bytes of samples at a time (within the workspace limit).
CHANNELS_LAST_BYTES = 4 * 2**20
#: The products run on the pool at one thread where one tile position's transformed filters take at least this many
#: bytes (512 x 512 channels in float32: ResNet-18's 7x7 and VGG-16's 14x14 layers ran 1.05-1.3x faster so, one
#: thread, most of it the panels' filter transform; with 256 channels, or 512 on 28x28 images, the BLAS's
#: products ran 1.05-1.2x faster).
POOLED_FILTER_BYTES = 2**20
#: The products on the pool cost this many times the unfused one-thread estimate (with the panels' filter
#: transform), shared among the threads: measured over estimated at one thread, ResNet-18's and VGG-16's 3x3
#: layers, F(2) and F(4), 0.9-1.4 (mean 1.18) against the BLAS's products' 1.0-1.5 (mean 1.14).
POOLED_ONE_THREAD = 1.04
#: What a second thread adds to the pooled path, measured (wall, min of 10, quiet machine): ResNet-18 layer4's
#: F(2) 18.0 -> 12.8 ms (1.4x), layer3's 12.0 -> 8.7 (1.38x), VGG-16 conv5_1's 46.4 -> 28.5 (1.63x); less than
#: :data:`~convolab.algorithms._rates.THREAD_GAIN`, which the other estimates' one-thread seconds stand for.
POOLED_THREAD_GAIN = 0.45


def _fused_layout(spec: ConvSpec, m: int, itemsize: int) -> tuple[tuple[int, ...], int, int, int]:
    """The fused forward's blocking: the tiles per sample along three axes, the tile rows per job, the tiles of
    a job's scratch (whole register tiles of :mod:`._kernels_winograd_fused`) and the samples laid out channels
    last at a time."""
    positions = (m + 2)**spec.rank
    tiles = _shape3((1, 1, *(-(-o // m) for o in spec.output_size)))[2:]
    per_row = positions * (spec.in_channels + spec.out_channels) * tiles[2] * itemsize
    rows = max(-(-FUSED_BLOCK_TILES // tiles[2]), FUSED_BLOCK_BYTES // max(per_row, 1))
    per_sample = prod(_channels_last_size(spec, m, tiles)) * spec.in_channels * itemsize
    budget = min(CHANNELS_LAST_BYTES, current_workspace_limit())
    samples = max(1, min(spec.batch, budget // max(per_sample, 1)))
    rows = max(1, min(samples * tiles[0] * tiles[1], rows))
    job_tiles = -(-rows * tiles[2] // 8) * 8  # whole register tiles: eight (float32) or four (float64) tiles
    return tiles, rows, job_tiles, samples


def fused_winograd_conv(source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                        spec: ConvSpec, m: int) -> np.ndarray:
    """:func:`compiled_winograd_conv` with every step of a block of tiles in one thread: no BLAS.

    The samples are laid out channels last (a NumPy transposing copy per
    sample's rows, shared among threads); then each job, a few tile rows
    (:data:`FUSED_BLOCK_BYTES` of transformed input and products), runs the
    input transform into its thread's scratch, the products of every tile
    position (:func:`._kernels_winograd_fused.tile_products`, per group), and
    the output transform into the output. A thread's block never leaves its
    caches between the steps, and no BLAS threads spin beside the pool's.
    """
    rank, groups = spec.rank, spec.groups
    dtype = source.dtype
    fused = kernels("winograd_fused")
    source = source.reshape(_shape3(source.shape))  # (N, G*C, D, H, W)
    filters = _transformed_filters(kernel.astype(dtype, copy=False), spec, m, fused.LANES)  # (G, P, C, O)
    filters_flat = filters.base  # with LANES zeros past its end: a last run of filters reads past its row
    positions, channels, out_channels = filters.shape[1], spec.in_channels_per_group, spec.out_channels_per_group
    tiles, rows_per_job, job_tiles, samples = _fused_layout(spec, m, dtype.itemsize)
    rows_per_sample = tiles[0] * tiles[1]
    tile_counts = np.array(tiles, dtype=np.int64)
    tile_step = fused.TILES_WIDE if dtype.itemsize == 4 else fused.TILES_NARROW
    out = np.empty(spec.output_shape, dtype=dtype)
    out3 = out.reshape(_shape3(out.shape))
    lows = _steps(tuple(low for low, _ in padding), fill=0)
    channels_last = np.zeros((min(samples, spec.batch), *_channels_last_size(spec, m, tiles), spec.in_channels),
                             dtype=dtype)
    input_tiles, output_tiles = kernels("winograd").transforms(m, rank, dtype.name)
    a = m + 2
    ad, ah = (a if rank == 3 else 1), (a if rank >= 2 else 1)
    md, mh = (m if rank == 3 else 1), (m if rank >= 2 else 1)
    group_size = positions * channels * out_channels
    threads = _threads(prod(spec.output_shape) * spec.in_channels_per_group * prod(spec.kernel_size))
    size, depth, height = source.shape[2:], source.shape[2], source.shape[3]

    def copy_worker() -> Callable[[tuple[int, int, int]], None]:
        def copy(piece: tuple[int, int, int]) -> None:  # one sample's rows h0:h1, (C, D, rows, W) -> (D, rows, W, C)
            n, h0, h1 = piece
            target = channels_last[n % samples, lows[0]:lows[0] + depth, lows[1] + h0:lows[1] + h1,
                                   lows[2]:lows[2] + size[2]]
            np.copyto(target, source[n, :, :, h0:h1].transpose(1, 2, 3, 0))
        return copy

    own = threading.local()  # each thread's scratch, kept from one group of samples to the next

    def tiles_worker() -> Callable[[tuple[int, int, int]], None]:
        if not hasattr(own, "inputs"):  # the rows past a job's last tile are read: zeros at first, then finite
            # One row more than the tiles, so that the positions' planes are not a power of two apart
            own.inputs = np.zeros((positions, job_tiles + 1, spec.in_channels), dtype=dtype)
            own.products = np.empty((positions, job_tiles + 1, spec.out_channels), dtype=dtype)
            own.along = tuple(np.empty((ad, ah, a, spec.in_channels), dtype=dtype) for _ in range(2))
            own.back = (np.empty((md, ah, a, spec.out_channels), dtype=dtype),
                        np.empty((md, mh, a, spec.out_channels), dtype=dtype),
                        np.empty((STORE_TILES, md, mh, m, spec.out_channels), dtype=dtype))
        inputs, products, along, back = own.inputs, own.products, own.along, own.back
        inputs_flat, products_flat = inputs.reshape(-1), products.reshape(-1)

        def run_job(job: tuple[int, int, int]) -> None:
            n0, r0, r1 = job  # tile rows r0:r1 of the samples laid out from n0 on
            count = -(-(r1 - r0) * tiles[2] // tile_step) * tile_step
            input_tiles(channels_last, inputs, tile_counts, r0, 0, r1 - r0, *along)
            for g in range(groups):
                fused.tile_products(inputs_flat, filters_flat[g * group_size:], products_flat, positions, count,
                                    channels, out_channels, spec.in_channels, g * channels, spec.out_channels,
                                    g * out_channels, tile_step, job_tiles + 1)
            output_tiles(products, out3, tile_counts, n0 * rows_per_sample + r0, 0, r1 - r0, *back)
        return run_job

    pieces = max(1, min(height, 2 * threads))
    for n0 in range(0, spec.batch, samples):
        n1 = min(n0 + samples, spec.batch)
        in_parallel([(n, height * i // pieces, height * (i + 1) // pieces) for n in range(n0, n1)
                     for i in range(pieces)], copy_worker, threads)
        rows = (n1 - n0) * rows_per_sample
        in_parallel([(n0, r, min(r + rows_per_job, rows)) for r in range(0, rows, rows_per_job)],
                    tiles_worker, threads)
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
        :data:`FILTER_TRANSFORM_RATE` plus :data:`FILTER_PAIR_COST` and,
        beyond :data:`FRESH_MEMORY_BYTES`, their pages at
        :data:`FRESH_MEMORY_RATE` (bound by memory, which the threads
        share); the input and output transforms shared among the threads as
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
        filter_bytes = filter_values * dtype.itemsize
        fresh = filter_bytes if filter_bytes > FRESH_MEMORY_BYTES else 0
        loops = positions * tile_count * (spec.in_channels / INPUT_TRANSFORM_RATE[m]
                                          + spec.out_channels / OUTPUT_TRANSFORM_RATE[m])
        # The filter transform writes its values out of the caches: bound by memory, which the threads share.
        filter_seconds = (filter_values / FILTER_TRANSFORM_RATE * dtype.itemsize / 4
                          + spec.out_channels * channels * FILTER_PAIR_COST + fresh / FRESH_MEMORY_RATE)
        jobs = max(1, block_tiles // tiles[2])  # the transforms' jobs per block: its tile rows
        threads = min(_threads(positions * tile_count * (spec.in_channels + spec.out_channels)), jobs)
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
            panels = (filter_values / PANEL_TRANSFORM_RATE * dtype.itemsize / 4 + fresh / FRESH_MEMORY_RATE)
            shared = (CALL_OVERHEAD + len(blocks) * BLOCK_OVERHEAD + products / rate + panels
                      + loops * dtype.itemsize / 4)
            # in one thread's seconds, as compiled's and packed's: their threads gain THREAD_GAIN, these less
            available, sharing = _threads(products // 2), min(threads, positions)
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


def _pooled(spec: ConvSpec, dtype: np.dtype) -> bool:
    """Whether :func:`compiled_winograd_conv` runs its products on the pool (:func:`_pooled_products`), not the
    BLAS: in 1-2 dimensions (the panels' filter transform), on more than one thread (the BLAS's threads, spinning
    after each product, take the cores from the pool's), and on one thread where one tile position's
    transformed filters take at least :data:`POOLED_FILTER_BYTES`."""
    filter_bytes = spec.in_channels_per_group * spec.out_channels_per_group * np.dtype(dtype).itemsize
    threads = _threads(prod(spec.output_shape) * spec.in_channels_per_group * prod(spec.kernel_size))
    return spec.rank <= 2 and (threads > 1 or filter_bytes >= POOLED_FILTER_BYTES)


def _fused_threads(spec: ConvSpec, dtype: np.dtype) -> int:
    """The threads the fused forward would run on, or 1 where the unfused one runs instead: on one thread (the
    BLAS's products measured 4-25% faster there), or with more than :data:`FUSED_FILTER_BYTES` of transformed
    filters per tile position (the fused products stream them from the L2 cache for every eight tiles: 1.1-1.5x
    slower than the pool's with 256 channels, 1.3-1.9x with 512)."""
    filter_bytes = spec.in_channels_per_group * spec.out_channels_per_group * np.dtype(dtype).itemsize
    if filter_bytes > FUSED_FILTER_BYTES:
        return 1
    return _threads(prod(spec.output_shape) * spec.in_channels_per_group * prod(spec.kernel_size))


def _fused_bytes(spec: ConvSpec, m: int, itemsize: int) -> int:
    """The fused forward's memory: the transformed filters (and a run of lanes), the samples laid out channels
    last, and each thread's block of transformed tiles and products."""
    tiles, _, job_tiles, samples = _fused_layout(spec, m, itemsize)
    positions = (m + 2)**spec.rank
    filters = positions * spec.out_channels * spec.in_channels_per_group + 32
    channels_last = min(samples, spec.batch) * prod(_channels_last_size(spec, m, tiles)) * spec.in_channels
    block = positions * (job_tiles + 1) * (spec.in_channels + spec.out_channels)
    threads = max(1, _fused_threads(spec, np.dtype(f"f{itemsize}")))
    return (filters + channels_last + threads * block) * itemsize


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
