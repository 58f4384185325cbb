"""SciPy's ``correlate`` and ``convolve`` on a chunked dask array with a small kernel.

The signal is one batch of one channel; its axes are all spatial, padded per
``mode`` (``"same"`` centres as SciPy does, the odd unit on the low side) and
cut into slabs like the convolution's.
"""

from __future__ import annotations

import functools
from typing import Any

import dask.array as da
import numpy as np

from .. import shapes
from .._errors import fail
from ..signal import convolve as _eager_convolve
from ..signal import correlate as _eager_correlate
from ._blocks import axis_blocks
from ._docs import SIGNAL_DOC, SIGNAL_EXAMPLES
from ._slabs import padded_slabs
from ._tasks import check_dask, check_small, map_blocks, shared_task

__all__ = ["correlate", "convolve"]


def _signal_block(slab: np.ndarray, kernel: np.ndarray, *, reverse: bool, method: str,
                  block_id: tuple[int, ...] | None = None) -> np.ndarray:
    eager = _eager_correlate if reverse else _eager_convolve
    return eager(slab[0, 0], kernel, "valid", method)[np.newaxis, np.newaxis]  # (1, 1, *block)


def _signal(op: str, in1: Any, in2: Any, mode: str, method: str, reverse: bool) -> da.Array:
    x = check_dask(op, "in1", in1)
    if x.ndim == 0:
        fail(ValueError, op, "in1", "a 0-d array", "must have at least one dimension")
    kernel = in2 if isinstance(in2, da.Array) else np.asarray(in2)
    kernel_proxy = check_small(op, "in2", kernel)
    eager = _eager_correlate if reverse else _eager_convolve
    if x.size == 0 or kernel.size == 0:  # no data: the eager op's own result, checks and dtype
        return da.from_array(eager(np.zeros(x.shape, x.dtype), kernel_proxy, mode, method))
    # The eager op on one-sample arrays: its checks of mode, method, dtypes and ranks, and its result dtype.
    dtype = eager(np.zeros((1,) * x.ndim, x.dtype), np.zeros((1,) * kernel.ndim, kernel_proxy.dtype), mode,
                  method).dtype
    if mode == "valid" and any(k > n for k, n in zip(kernel.shape, x.shape)):
        fail(ValueError, op, "in2", f"shape {kernel.shape} with in1 of shape {x.shape}",
             "must fit inside in1 in every dimension for mode='valid' (convolab.chunked slides in2 over the "
             "chunked in1; SciPy would swap them)")
    if mode == "full":
        padding = [shapes.full_padding(k) for k in kernel.shape]
    elif mode == "same":  # SciPy's centring: the odd unit on the low side
        padding = [((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in kernel.shape]
    else:
        padding = [(0, 0)] * kernel.ndim
    grid = tuple(axis_blocks(c, k, 1, p, 1) for c, k, p in zip(x.chunks, kernel.shape, padding))
    batched = x[np.newaxis, np.newaxis]
    block = functools.partial(_signal_block, reverse=reverse, method=method)
    out = map_blocks(op, block, padded_slabs(batched, grid, "zeros", 0), [shared_task(kernel)],
                     ((1,), (1,), *(blocks.output_chunks for blocks in grid)), dtype)
    return out[0, 0]


def correlate(in1: da.Array, in2: Any, mode: str = "full", method: str = "auto") -> da.Array:
    return _signal("correlate", in1, in2, mode, method, reverse=True)


def convolve(in1: da.Array, in2: Any, mode: str = "full", method: str = "auto") -> da.Array:
    return _signal("convolve", in1, in2, mode, method, reverse=False)


correlate.__doc__ = SIGNAL_DOC.format(
    summary="N-d cross-correlation of a dask array with a kernel, as ``scipy.signal.correlate``.", op="correlate",
    examples=SIGNAL_EXAMPLES["correlate"])
convolve.__doc__ = SIGNAL_DOC.format(
    summary="N-d convolution of a dask array with a kernel, as ``scipy.signal.convolve``.", op="convolve",
    examples=SIGNAL_EXAMPLES["convolve"])
