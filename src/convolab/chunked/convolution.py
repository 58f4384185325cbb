"""Convolution of a dask array, one output block at a time: ``conv`` and ``conv1d/2d/3d``.

Channels are never split: a convolution's output channel reads every input
channel of its group, so the channel axis is rechunked to one chunk (chunk
along batch and spatial axes instead). Chunks along the batch axis ride along
unchanged: with one chunk per spatial axis and no padding the op is a
``map_blocks`` over the batch chunks.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import dask.array as da
import numpy as np

from .. import functional as _functional
from .._dtypes import result_dtype
from .._fixed_rank import fixed_rank_ops
from ..spec import PaddingArg, conv_spec
from ._blocks import axis_blocks
from ._docs import CONV_DOC, CONV_EXAMPLES, CONV_SUMMARIES, per_rank
from ._slabs import compact_input, padded_slabs
from ._tasks import (check_blocks_fit, check_dask, check_small, empty_slab, map_blocks, probe, shared_task,
                     with_batch_axis, without_batch_axis)

__all__ = ["conv", "conv1d", "conv2d", "conv3d"]


def _conv_block(slab: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, eager: Callable[..., np.ndarray],
                stride: tuple[int, ...], dilation: tuple[int, ...], groups: int, flip: bool, algorithm: str,
                block_id: tuple[int, ...] | None = None) -> np.ndarray:
    return eager(slab, weight, bias, stride, 0, dilation, groups, flip=flip, algorithm=algorithm)


def _conv(
    op: str,
    rank: int | None,
    input: da.Array,
    weight: np.ndarray | da.Array,
    bias: np.ndarray | da.Array | None = None,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
    algorithm: str = "auto",
) -> da.Array:
    """``op`` (``conv`` or ``conv1d/2d/3d``, ``rank`` spatial dimensions or ``None``) on a dask array."""
    x = check_dask(op, "input", input)
    weight_proxy = check_small(op, "weight", weight)
    bias_proxy = None if bias is None else check_small(op, "bias", bias)
    spec = conv_spec(x.shape, weight_proxy.shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op=op, rank=rank)
    x = with_batch_axis(x, spec.batched).rechunk({1: -1})  # channels in one chunk: every output reads its group's
    batched = spec.batched
    x, spec = compact_input(x, spec, algorithm)
    grid = tuple(axis_blocks(c, k, s, p, d) for c, k, s, p, d in
                 zip(x.chunks[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation))
    block = functools.partial(_conv_block, eager=getattr(_functional, op), stride=spec.stride,
                              dilation=spec.dilation, groups=spec.groups, flip=spec.flip, algorithm=algorithm)
    chunks = (x.chunks[0], (spec.out_channels,), *(blocks.output_chunks for blocks in grid))
    check_blocks_fit(spec, chunks, result_dtype(x.dtype), "output block")
    dtype = probe(block, empty_slab(x, grid), weight_proxy, bias_proxy).dtype
    out = map_blocks(op, block, padded_slabs(x, grid, spec.padding_mode, 0), [shared_task(weight), shared_task(bias)],
                     chunks, dtype)
    return without_batch_axis(out, batched)


conv, conv1d, conv2d, conv3d = fixed_rank_ops(_conv, "conv", CONV_DOC, words=per_rank(CONV_EXAMPLES, CONV_SUMMARIES))
