"""Max and average pooling of a dask array, one output block at a time.

Pooling never mixes channels, so the input's channel chunks are kept. Max
pooling fills its padding with a value the maximum never prefers; average
pooling sums each block's windows with the eager op and divides by the divisor
of each window's place in the whole array. A kernel so large that its slabs
would be mostly padding pools clipped slabs, the padding cut off them given to
the block's spec instead (never built), as the eager op does.
"""

from __future__ import annotations

import functools
from functools import reduce
from math import prod
from typing import Any, Callable

import dask.array as da
import numpy as np

from .. import pooling as _pooling
from .._checks import check_divisor, check_flag
from .._errors import fail
from .._fixed_rank import fixed_rank_ops
from ._blocks import axis_blocks
from ._docs import (AVG_POOL_EXAMPLES, AVG_POOL_FIELDS, AVG_POOL_SUMMARIES, MAX_POOL_EXAMPLES, MAX_POOL_FIELDS,
                    MAX_POOL_SUMMARIES, POOL_DOC, per_rank)
from ._slabs import clipped_slabs, padded_slabs
from ._tasks import check_dask, empty_slab, map_blocks, probe, with_batch_axis, without_batch_axis

__all__ = ["max_pool", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d"]


def _pool_rank(op: str, kernel_size: Any, rank: int | None) -> int | None:
    if rank is None and isinstance(kernel_size, (tuple, list)) and kernel_size:
        return len(kernel_size)
    return rank


def _max_pool_block(slab: np.ndarray, *, eager: Callable[..., np.ndarray], kernel_size: tuple[int, ...],
                    stride: tuple[int, ...], dilation: tuple[int, ...],
                    block_id: tuple[int, ...] | None = None) -> np.ndarray:
    return eager(slab, kernel_size, stride, 0, dilation)


def _pool_block_spec(slab: np.ndarray, block_id: tuple[int, ...], kernel_size: tuple[int, ...],
                     stride: tuple[int, ...], dilation: tuple[int, ...],
                     cut: tuple[tuple[tuple[int, ...], ...], ...]) -> Any:
    """The pooling of one clipped slab: its windows, with the padding cut off it as the spec's own padding."""
    padding = tuple(per_block[b][:2] for per_block, b in zip(cut, block_id[2:]))
    spec = _pooling.PoolSpec(op="pool", batched=True, batch=slab.shape[0], channels=slab.shape[1],
                             input_size=slab.shape[2:], kernel_size=kernel_size, stride=stride, padding=padding,
                             dilation=dilation)
    # The block's output count, pinned: PoolSpec's own formula reads a symmetric padding.
    spec.__dict__["output_size"] = tuple(per_block[b][2] for per_block, b in zip(cut, block_id[2:]))
    return spec


def _clipped_max_pool_block(slab: np.ndarray, *, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                            dilation: tuple[int, ...], cut: tuple[tuple[tuple[int, ...], ...], ...],
                            block_id: tuple[int, ...] | None = None) -> np.ndarray:
    spec = _pool_block_spec(slab, block_id, kernel_size, stride, dilation, cut)
    return _pooling._max_pool_forward(slab, spec, with_indices=False)[0]


def _lowest(dtype: np.dtype) -> Any:
    """The padding value that max pooling never prefers: -inf, or an integer dtype's minimum."""
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return 0  # refused by the eager op's checks


def _max_pool(
    op: str,
    rank: int | None,
    input: da.Array,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> da.Array:
    """``op`` (``max_pool`` or ``max_pool1d/2d/3d``) on a dask array."""
    x = check_dask(op, "input", input)
    spec = _pooling.pool_spec(x.shape, kernel_size, stride, padding, dilation, ceil_mode, op=op,
                              rank=_pool_rank(op, kernel_size, rank))
    if check_flag(return_indices, "return_indices", op):
        fail(ValueError, op, "return_indices", "True",
             "is not supported on dask arrays (the indices are flat positions in whole planes; use the eager op)")
    x = with_batch_axis(x, spec.batched)
    batched, spec = spec.batched, _pooling._trim_kernel(spec)  # a huge kernel's padding-only taps: never sliced
    # window_padding adds what ceil_mode's last window hangs past the padding: filled, never the maximum.
    grid = tuple(axis_blocks(c, k, s, p, d) for c, k, s, p, d in
                 zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.window_padding, spec.dilation))
    chunks = (x.chunks[0], x.chunks[1], *(blocks.output_chunks for blocks in grid))
    if prod(spec.kernel_size) > _pooling._SEPARABLE_TAPS:  # slabs would be mostly padding: cut it off them
        slabs, cut = clipped_slabs(x, grid)
        block = functools.partial(_clipped_max_pool_block, kernel_size=spec.kernel_size, stride=spec.stride,
                                  dilation=spec.dilation, cut=cut)
        return without_batch_axis(map_blocks(op, block, slabs, [], chunks, x.dtype), batched)
    block = functools.partial(_max_pool_block, eager=getattr(_pooling, op), kernel_size=spec.kernel_size,
                              stride=spec.stride, dilation=spec.dilation)
    dtype = probe(block, empty_slab(x, grid)).dtype
    out = map_blocks(op, block, padded_slabs(x, grid, "zeros", _lowest(x.dtype)), [], chunks, dtype)
    return without_batch_axis(out, batched)


def _avg_divisor_axis(size: int, kernel: int, stride: int, low: int, count_include_pad: bool, first: int,
                      count: int) -> np.ndarray:
    """One axis's factor of PyTorch's average-pooling divisor, for the outputs ``first .. first + count - 1``.

    The window from ``start = o*stride - low`` is clipped to ``end = min(start + k, in + low)``;
    with ``count_include_pad`` it counts ``end - start`` cells, otherwise only the input's,
    ``min(end, in) - max(start, 0)``. The divisor is the product over axes (as :func:`convolab.avg_pool`).
    """
    start = np.arange(first, first + count) * stride - low
    end = np.minimum(start + kernel, size + low)
    return end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0)


def _avg_pool_block(slab: np.ndarray, *, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                    summed_in: np.dtype, returned: np.dtype, windows: tuple[tuple[int, int, int, int], ...],
                    count_include_pad: bool, divisor_override: int | None, offsets: tuple[tuple[int, ...], ...],
                    cut: tuple[tuple[tuple[int, ...], ...], ...] | None = None,
                    block_id: tuple[int, ...] | None = None) -> np.ndarray:
    # The eager op's window sums (divisor 1) in the eager accumulation dtype, then the whole array's divisor,
    # computed here for this block's outputs from the integers in ``windows`` (size, kernel, stride, low per axis).
    if cut is None:
        sums = _pooling.avg_pool(slab.astype(summed_in, copy=False), kernel_size, stride, 0, divisor_override=1)
    else:  # a clipped slab (_slabs.clipped_slabs): the padding cut off it is the block spec's own, adding nothing
        spec = _pool_block_spec(slab, block_id, kernel_size, stride, (1,) * len(kernel_size), cut)
        sums = _pooling._reduce_windows(slab.astype(summed_in, copy=False), spec, np.add, 0, summed_in)
    if divisor_override is not None:
        return (sums / divisor_override).astype(returned, copy=False)
    counts = [_avg_divisor_axis(*window, count_include_pad, axis_offsets[b], n)
              for window, axis_offsets, b, n in zip(windows, offsets, block_id[2:], sums.shape[2:])]
    return (sums / reduce(np.multiply.outer, counts).astype(summed_in)).astype(returned, copy=False)


def _avg_pool(
    op: str,
    rank: int | None,
    input: da.Array,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> da.Array:
    """``op`` (``avg_pool`` or ``avg_pool1d/2d/3d``) on a dask array."""
    x = check_dask(op, "input", input)
    rank = _pool_rank(op, kernel_size, rank)
    spec = _pooling.pool_spec(x.shape, kernel_size, stride, padding, 1, ceil_mode, op=op, rank=rank)
    x = with_batch_axis(x, spec.batched)
    # The divisor counts the whole window; the sums need only its taps that reach the input (zeros add nothing).
    windows = tuple((n, k, s, low) for n, k, s, (low, _) in
                    zip(spec.input_size, spec.kernel_size, spec.stride, spec.padding))
    batched, spec = spec.batched, _pooling._trim_kernel(spec)
    grid = tuple(axis_blocks(c, k, s, p, 1) for c, k, s, p in
                 zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.window_padding))
    # The eager op on an empty batch of the first slab: its checks of the flags, divisor and dtype. (Of a
    # one-cell window where the slabs are clipped: only the flags, divisor and dtype are asked about.)
    clipped = prod(spec.kernel_size) > _pooling._SEPARABLE_TAPS
    probe = (np.empty((0, x.shape[1], *([1] * spec.rank)), x.dtype), (1,) * spec.rank, 1) if clipped else \
        (empty_slab(x, grid), spec.kernel_size, spec.stride)
    eager = getattr(_pooling, op)(*probe, 0, False, count_include_pad, divisor_override)
    returned = eager.dtype
    summed_in = np.promote_types(returned, np.float32)  # float16 is summed in float32, as the eager op
    block = functools.partial(_avg_pool_block, kernel_size=spec.kernel_size, stride=spec.stride,
                              summed_in=summed_in, returned=returned, windows=windows,
                              count_include_pad=bool(count_include_pad),
                              divisor_override=check_divisor(op, divisor_override),
                              offsets=tuple(blocks.output_offsets for blocks in grid))
    chunks = (x.chunks[0], x.chunks[1], *(blocks.output_chunks for blocks in grid))
    if clipped:  # slabs would be mostly padding: cut it off them
        slabs, cut = clipped_slabs(x, grid)
        return without_batch_axis(map_blocks(op, functools.partial(block, cut=cut), slabs, [], chunks, returned),
                                  batched)
    out = map_blocks(op, block, padded_slabs(x, grid, "zeros", 0), [], chunks, returned)
    return without_batch_axis(out, batched)


max_pool, max_pool1d, max_pool2d, max_pool3d = fixed_rank_ops(
    _max_pool, "max_pool", POOL_DOC, words=per_rank(MAX_POOL_EXAMPLES, MAX_POOL_SUMMARIES, **MAX_POOL_FIELDS))
avg_pool, avg_pool1d, avg_pool2d, avg_pool3d = fixed_rank_ops(
    _avg_pool, "avg_pool", POOL_DOC, words=per_rank(AVG_POOL_EXAMPLES, AVG_POOL_SUMMARIES, **AVG_POOL_FIELDS))
