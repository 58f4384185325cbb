"""Convolutions and pooling on Dask arrays, chunk by chunk, on one machine or a cluster.

``import convolab.chunked as cld`` (the core never imports dask; install the
extra with ``pip install 'convolab[dask]'``). ``convolab.dask`` is the same
module under its former name. Every op here takes a ``dask.array.Array`` and
returns a lazy one whose computed value equals the eager op's
(:func:`convolab.conv`, :func:`convolab.correlate`, :func:`convolab.max_pool`...)
on the whole array. Each chunk is computed by the eager op itself, so dtypes,
exact integers and argument rules are the core's.

How a chunked op is computed
----------------------------
1. Per spatial axis, the chunk geometry (:mod:`convolab.chunked._blocks`,
   integers only): each output block starts on the stride grid under the input
   chunk holding its windows' centres, and reads that chunk plus a halo from
   its neighbours, or padding at a true edge of the array.
2. Each block's slab (:mod:`convolab.chunked._slabs`): slices of the
   neighbouring chunks, with the eager padding applied only where a slab
   crosses a true edge, gathered so that each slab is one chunk.
3. One task per output block (:mod:`convolab.chunked._tasks`) runs the eager
   op on its slab, unpadded; weights travel as one shared task.

The ops, one module per family: :mod:`~convolab.chunked.convolution` (channels
in one chunk), :mod:`~convolab.chunked.signal` (SciPy's semantics),
:mod:`~convolab.chunked.pooling` (channel chunks kept) and
:mod:`~convolab.chunked.grad` (the weight gradient's shares summed by a tree
reduction; the input gradient's padding folded back onto the cells it copied).
"""

from __future__ import annotations

try:  # the real dask (the core never imports it)
    import dask  # noqa: F401
except ImportError as error:  # pragma: no cover - only without the extra
    raise ImportError("convolab.chunked needs dask: pip install 'convolab[dask]'") from error

from ._blocks import AxisBlocks, axis_blocks, chunk_blocks
from .convolution import conv, conv1d, conv2d, conv3d
from .grad import (conv1d_input, conv1d_weight, conv2d_input, conv2d_weight, conv3d_input, conv3d_weight, conv_input,
                   conv_weight)
from .pooling import avg_pool, avg_pool1d, avg_pool2d, avg_pool3d, max_pool, max_pool1d, max_pool2d, max_pool3d
from .signal import convolve, correlate

__all__ = [
    "AxisBlocks",
    "axis_blocks",
    "chunk_blocks",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "correlate",
    "convolve",
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "conv_input",
    "conv1d_input",
    "conv2d_input",
    "conv3d_input",
    "conv_weight",
    "conv1d_weight",
    "conv2d_weight",
    "conv3d_weight",
]
