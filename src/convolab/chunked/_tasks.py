"""Arguments as the chunked ops take them, and the one way a block becomes a task.

Weights, biases and ``correlate``'s second array may be NumPy arrays or small
dask arrays; either becomes one task that every block depends on
(:func:`shared_task`), so each worker receives it once rather than once per
block. Before any graph is built, each op runs its block on an empty batch
(:func:`probe`): the eager op's argument checks and result dtype, without data.
"""

from __future__ import annotations

from math import isnan
from typing import Any, Callable, Sequence

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from .._engine import describe_geometry
from .._errors import fail
from .._window import check_fits_in_memory
from ._blocks import AxisBlocks

__all__ = ["check_dask", "check_small", "shared_task", "probe", "empty_slab", "with_batch_axis",
           "without_batch_axis", "check_blocks_fit", "map_blocks"]


def check_dask(op: str, name: str, value: Any) -> da.Array:
    """``value`` if it is a dask array with known chunk sizes; otherwise a TypeError or ValueError naming ``name``."""
    if not isinstance(value, da.Array):
        fail(TypeError, op, name, f"an object of type {type(value).__name__}",
             "must be a dask.array.Array (wrap NumPy data with dask.array.from_array, or call convolab's eager op)")
    if any(isnan(c) for chunks in value.chunks for c in chunks):
        fail(ValueError, op, name, f"chunks {value.chunks}",
             "must have known chunk sizes (call .compute_chunk_sizes())")
    return value


def check_small(op: str, name: str, value: Any) -> np.ndarray:
    """A NumPy stand-in for a weight-like argument (NumPy or a small dask array), for the checks."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, da.Array):
        check_dask(op, name, value)
        return np.zeros(value.shape, dtype=value.dtype)
    fail(TypeError, op, name, f"an object of type {type(value).__name__}", "must be a numpy.ndarray or a dask array")


def shared_task(value: Any) -> Any:
    """A weight-like argument as one task that every block depends on (each worker fetches it once)."""
    if isinstance(value, da.Array):
        return value.rechunk({axis: -1 for axis in range(value.ndim)}).to_delayed().ravel()[0]
    if isinstance(value, np.ndarray):
        return dask.delayed(value, pure=True, traverse=False)
    return value


def probe(block: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
    """Run a block on an empty batch: the eager op's argument checks and its result dtype, without data."""
    return block(*arrays, block_id=(0,) * arrays[0].ndim)


def empty_slab(x: da.Array, grid: Sequence[AxisBlocks]) -> np.ndarray:
    """A zero-batch stand-in for the first block's slab."""
    return np.empty((0, x.shape[1], *(b - a for a, b in (blocks.input_ranges[0] for blocks in grid))), dtype=x.dtype)


def with_batch_axis(x: da.Array, batched: bool) -> da.Array:
    """``x`` with a batch axis: as it is if ``batched``, else with a leading axis of one."""
    return x if batched else x[np.newaxis]


def without_batch_axis(out: da.Array, batched: bool) -> da.Array:
    """The inverse of :func:`with_batch_axis`: the caller's batching back on a batched result."""
    return out if batched else out[0]


def check_blocks_fit(spec: Any, chunks: Sequence[Sequence[int]], dtype: np.dtype, what: str) -> None:
    """Refuse, while building the graph, a block that no task could hold in memory (the eager op's rule)."""
    largest = tuple(max(sizes, default=0) for sizes in chunks)
    check_fits_in_memory(spec.op, what, largest, dtype, lambda: describe_geometry(spec))


def map_blocks(op: str, block: Callable[..., np.ndarray], slabs: da.Array, shared: Sequence[Any],
               chunks: tuple[tuple[int, ...], ...], dtype: np.dtype) -> da.Array:
    """One task per output block: ``block(slab, *shared, block_id=...)``, named after the op."""
    dtype = np.dtype(dtype)
    name = f"{op}-{tokenize(block, slabs, *shared, chunks, dtype)}"  # deterministic, unique
    return da.map_blocks(block, slabs, *shared, chunks=chunks, dtype=dtype,
                         meta=np.empty((0,) * len(chunks), dtype=dtype), name=name)
