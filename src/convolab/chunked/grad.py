"""Gradients of the convolution on dask arrays: ``conv_input`` and ``conv_weight`` (and their fixed ranks).

:func:`conv_weight` computes each block's share of the weight gradient from
its slab (batch and spatial blocks alike) and sums the shares with dask's tree
reduction. :func:`conv_input` computes the gradient one block of the padded
input at a time (each gathers the ``grad_output`` rows whose windows reach
it), then folds the padding blocks' gradient back onto the input cells they
copied (the transpose of the padding, from the same source map), and returns
it chunked as asked.
"""

from __future__ import annotations

import functools
from itertools import accumulate, pairwise
from math import prod
from typing import Any, Callable, Sequence

import dask.array as da
import numpy as np
from dask.base import tokenize

from .. import grad as _grad
from .._checks import check_grad_output_shape
from .._dtypes import check_exact_range, compute_dtype, is_exact, result_dtype
from .._engine import compact_problem
from .._errors import fail
from .._fixed_rank import fixed_rank_ops
from ..spec import PaddingArg, conv_spec, normalize_shape
from ._blocks import AxisBlocks, axis_blocks
from ._docs import INPUT_GRAD_DOC, INPUT_GRAD_EXAMPLES, WEIGHT_GRAD_DOC, WEIGHT_GRAD_EXAMPLES, per_rank
from ._slabs import compact_input, fold_padding, gather, padded_slabs, scatter_cells
from ._tasks import (check_dask, check_small, empty_slab, map_blocks, probe, shared_task, with_batch_axis,
                     without_batch_axis)

__all__ = ["conv_input", "conv1d_input", "conv2d_input", "conv3d_input", "conv_weight", "conv1d_weight",
           "conv2d_weight", "conv3d_weight"]


def _check_grad_output(op: str, grad_output: Any, expected_shape: tuple[int, ...], dtype: np.dtype) -> da.Array:
    """``grad_output`` if it is a dask array passing the eager ops' shape and dtype rule."""
    g = check_dask(op, "grad_output", grad_output)
    check_grad_output_shape(op, g.shape, g.dtype, expected_shape, expected_dtype=dtype)
    return g


def _weight_grad_block(slab: np.ndarray, grad_output: np.ndarray, *, eager: Callable[..., np.ndarray],
                       weight_size: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...], groups: int,
                       flip: bool, algorithm: str, summed_in: np.dtype,
                       block_id: tuple[int, ...] | None = None) -> np.ndarray:
    # This block's share, dk = sum over its windows of g * x_p (convolab._engine), kept in the accumulation dtype.
    share = eager(slab.astype(summed_in, copy=False), weight_size, grad_output.astype(summed_in, copy=False), stride,
                  0, dilation, groups, flip=flip, algorithm=algorithm)
    return share.reshape((1,) * slab.ndim + share.shape)  # (1, 1, *1, *weight_size): one cell per block


def _conv_weight(
    op: str,
    rank: int | None,
    input: da.Array,
    weight_size: Sequence[int],
    grad_output: da.Array,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
    algorithm: str = "auto",
    split_every: int | None = None,
) -> da.Array:
    """``op`` (``conv_weight`` or ``conv1d/2d/3d_weight``): the weight gradient from dask arrays."""
    x = check_dask(op, "input", input)
    size = normalize_shape(weight_size, "weight_size", op)
    spec = conv_spec(x.shape, size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op=op, rank=rank)
    g = _check_grad_output(op, grad_output, spec.caller_output_shape, x.dtype)
    if split_every is not None and (not isinstance(split_every, (int, np.integer))
                                    or isinstance(split_every, (bool, np.bool_))):
        fail(TypeError, op, "split_every", f"{split_every!r} of type {type(split_every).__name__}",
             "must be None or an int >= 2")
    if split_every is not None and split_every < 2:
        fail(ValueError, op, "split_every", repr(split_every), "must be None or an int >= 2")
    x = whole = with_batch_axis(x, spec.batched).rechunk({1: -1})
    x, spec = compact_input(x, spec, algorithm)
    grid = tuple(axis_blocks(c, k, s, p, d) for c, k, s, p, d in
                 zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation))
    g = with_batch_axis(g, spec.batched).rechunk((x.chunks[0], -1, *(blocks.output_chunks for blocks in grid)))
    summed_in = compute_dtype(x.dtype)
    block = functools.partial(_weight_grad_block, eager=getattr(_grad, op), weight_size=spec.weight_shape,
                              stride=spec.stride, dilation=spec.dilation, groups=spec.groups, flip=spec.flip,
                              algorithm=algorithm, summed_in=summed_in)
    first_output_block = np.empty((0, spec.out_channels, *(blocks.output_chunks[0] for blocks in grid)), x.dtype)
    probe(block, empty_slab(x, grid), first_output_block)
    slabs = padded_slabs(x, grid, spec.padding_mode, 0)
    # Slab i and grad_output block i pair up by block index (their sizes differ: no alignment).
    block_axes = tuple(range(slabs.ndim))
    weight_axes = {slabs.ndim + axis: n for axis, n in enumerate(spec.weight_shape)}
    shares = da.blockwise(block, block_axes + tuple(weight_axes), slabs, block_axes, g, block_axes,
                          new_axes=weight_axes, adjust_chunks=dict.fromkeys(block_axes, 1), align_arrays=False,
                          concatenate=True, dtype=summed_in,
                          meta=np.empty((0,) * (len(block_axes) + len(weight_axes)), summed_in),
                          name=f"{op}-shares-{tokenize(block, slabs, g)}")
    # A tree reduction over every block (dask's partial sums, split_every at a time).
    total = shares.sum(axis=block_axes, split_every=split_every)
    if is_exact(x.dtype) and whole.size and g.size:
        # Each share passed its block's int64 range check, but their sum may not fit: the eager op's check on
        # the whole arrays (their extreme values, reduced lazily) runs before the total is returned.
        check = functools.partial(_range_checked, op=op, terms=spec.batch * prod(spec.output_size))
        axes, (x_range, g_range) = tuple(range(total.ndim)), (_extremes(a) for a in (whole, g))
        total = da.blockwise(check, axes, total, axes, x_range, (total.ndim,), g_range, (total.ndim + 1,),
                             concatenate=True, dtype=total.dtype, meta=np.empty((0,) * total.ndim, total.dtype),
                             name=f"{op}-checked-{tokenize(check, total, x_range, g_range)}")
    return total.astype(result_dtype(x.dtype))


def _extremes(a: da.Array) -> da.Array:
    """``[a.min(), a.max()]`` of a non-empty array, lazily.

    Dask's min and max fail on zero-size chunks, so those are merged away first.
    """
    a = a.rechunk(tuple(tuple(n for n in sizes if n) for sizes in a.chunks))
    return da.stack([a.min(), a.max()])


def _range_checked(total: np.ndarray, input_extremes: np.ndarray, grad_output_extremes: np.ndarray, *, op: str,
                   terms: int) -> np.ndarray:
    """``total``, once the eager op's int64 range check passes on the whole arrays' ``[min, max]``."""
    check_exact_range(op, ("input", "grad_output"), input_extremes, grad_output_extremes, terms)
    return total


def _input_grad_block(grad_output: np.ndarray, weight: np.ndarray, *, eager: Callable[..., np.ndarray],
                      grid: tuple[AxisBlocks, ...], groups: int, flip: bool, algorithm: str, in_channels: int,
                      block_id: tuple[int, ...] | None = None) -> np.ndarray:
    """The input gradient on one block ``[u, v)`` of the padded input (per axis), from the outputs that read it.

    The outputs ``[p0, p1)`` read the padded cells ``[p0*s, (p1-1)*s + k_eff)``: the
    eager input gradient of that sub-problem (no padding) holds, on ``[u, v)``, every
    term of ``dx_p[q] = sum g[p] k[j]`` over ``p*s + j*d = q``; cells outside it get zero.
    """
    n, dtype = grad_output.shape[0], result_dtype(weight.dtype)
    strides, dilations = tuple(blocks.stride for blocks in grid), tuple(blocks.dilation for blocks in grid)
    bounds = [(blocks.grad_offsets[b], blocks.grad_offsets[b] + blocks.grad_chunks[b])
              for blocks, b in zip(grid, block_id[2:])]
    ranges = [blocks.grad_output_ranges[b] for blocks, b in zip(grid, block_id[2:])]
    result = np.zeros((n, in_channels, *(v - u for u, v in bounds)), dtype=dtype)
    if any(r is None for r in ranges) or not n:
        if not n:  # the probe: the eager op's checks on an empty batch
            eager((0, in_channels, *(blocks.extent for blocks in grid)), weight,
                  np.empty((0, weight.shape[0], *([1] * len(grid))), dtype=grad_output.dtype),
                  strides, 0, dilations, groups, flip=flip, algorithm=algorithm)
        return result
    sub_size = [(p1 - p0 - 1) * blocks.stride + blocks.extent for (p0, p1), blocks in zip(ranges, grid)]
    sub = eager((n, in_channels, *sub_size), weight, grad_output, strides, 0, dilations, groups, flip=flip,
                algorithm=algorithm)
    source, target = [], []
    for (u, v), (p0, _), blocks, length in zip(bounds, ranges, grid, sub_size):
        base = p0 * blocks.stride  # the sub-problem's first cell, in padded coordinates
        lo, hi = max(u - base, 0), min(v - base, length)
        if lo >= hi:
            return result
        source.append(slice(lo, hi))
        target.append(slice(lo + base - u, hi + base - u))
    result[(Ellipsis, *target)] = sub[(Ellipsis, *source)]
    return result


def _input_chunks(op: str, chunks: Any, spec: Any, g: da.Array,
                  spatial_chunks: Callable[[], tuple[tuple[int, ...], ...]]) -> tuple[tuple[int, ...], ...]:
    """The input gradient's chunks, for the batched input shape."""
    if chunks is None:
        return (g.chunks[0], (spec.in_channels,), *spatial_chunks())
    shape = spec.input_shape if spec.batched else spec.input_shape[1:]
    try:
        normalized = da.core.normalize_chunks(chunks, shape=shape, dtype=np.float64)
    except (ValueError, TypeError) as error:
        fail(ValueError, op, "chunks", repr(chunks), f"must be a dask chunks specification for shape {shape} ({error})")
    return normalized if spec.batched else ((1,), *normalized)


def _conv_input(
    op: str,
    rank: int | None,
    input_size: Sequence[int],
    weight: np.ndarray | da.Array,
    grad_output: da.Array,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
    algorithm: str = "auto",
    chunks: Any = None,
) -> da.Array:
    """``op`` (``conv_input`` or ``conv1d/2d/3d_input``): the input gradient as a dask array."""
    weight_proxy = check_small(op, "weight", weight)
    spec = conv_spec(normalize_shape(input_size, "input_size", op), weight_proxy.shape, stride=stride,
                     padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode, flip=flip,
                     op=op, rank=rank)
    g = with_batch_axis(_check_grad_output(op, grad_output, spec.caller_output_shape, weight_proxy.dtype),
                        spec.batched)

    def spatial_from_g() -> tuple[tuple[int, ...], ...]:
        # Input chunk boundaries under grad_output's: output boundary p at input position p*s - low.
        result = []
        for out_chunks, s, (low, _), size in zip(g.chunks[2:], spec.stride, spec.padding, spec.input_size):
            edges = sorted({0, size, *(min(max(p * s - low, 0), size) for p in accumulate(out_chunks[:-1]))})
            result.append(tuple(b - a for a, b in pairwise(edges)) or (0,))
        return tuple(result)

    input_chunks = _input_chunks(op, chunks, spec, g, spatial_from_g)
    g = g.rechunk({0: input_chunks[0], 1: -1})
    compact = compact_problem(spec, algorithm, weight_proxy.dtype)
    if compact is None:
        grad_input = _input_grad(op, spec, weight, weight_proxy, g, algorithm, input_chunks)
    else:  # as the eager op: the gradient on the cells the windows read (one chunk per axis), added back
        compact_spec, reads = compact
        grad_input = _input_grad(op, compact_spec, weight, weight_proxy, g, algorithm,
                                 (input_chunks[0], (spec.in_channels,), *((n,) for n in compact_spec.input_size)))
        for axis, (source, axis_chunks) in enumerate(zip(reads.sources, input_chunks[2:]), start=2):
            grad_input = scatter_cells(grad_input, axis, source, axis_chunks)
    grad_input = grad_input.rechunk(input_chunks)
    return without_batch_axis(grad_input, spec.batched)


def _input_grad(op: str, spec: Any, weight: Any, weight_proxy: np.ndarray, g: da.Array, algorithm: str,
                input_chunks: tuple[tuple[int, ...], ...]) -> da.Array:
    """The batched input gradient of ``spec``, one block of the padded input at a time, its padding folded back."""
    grid = tuple(axis_blocks(c, k, s, p, d) for c, k, s, p, d in
                 zip(input_chunks[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation))
    block = functools.partial(_input_grad_block, eager=getattr(_grad, op), grid=grid, groups=spec.groups,
                              flip=spec.flip, algorithm=algorithm, in_channels=spec.in_channels)
    probe(block, np.empty((0, spec.out_channels, *([1] * spec.rank)), g.dtype), weight_proxy)
    for axis, blocks in enumerate(grid, start=2):
        # A block no window reaches still needs a slab to line up with: one stand-in row, unread.
        g = gather(g, axis, (0, 0), "zeros", 0, [r if r is not None else (0, 1) for r in blocks.grad_output_ranges])
    grad_padded = map_blocks(op, block, g, [shared_task(weight)],
                             (input_chunks[0], (spec.in_channels,), *(blocks.grad_chunks for blocks in grid)),
                             result_dtype(weight_proxy.dtype))
    for axis, blocks in enumerate(grid, start=2):
        grad_padded = fold_padding(grad_padded, axis, blocks, spec.padding_mode)
    return grad_padded


conv_input, conv1d_input, conv2d_input, conv3d_input = fixed_rank_ops(
    _conv_input, "conv", INPUT_GRAD_DOC, suffix="_input", words=per_rank(INPUT_GRAD_EXAMPLES))
conv_weight, conv1d_weight, conv2d_weight, conv3d_weight = fixed_rank_ops(
    _conv_weight, "conv", WEIGHT_GRAD_DOC, suffix="_weight", words=per_rank(WEIGHT_GRAD_EXAMPLES))
