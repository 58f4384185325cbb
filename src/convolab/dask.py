"""The former name of :mod:`convolab.chunked` (the same ops on dask arrays), kept so ``import convolab.dask`` works.

Every op is :mod:`convolab.chunked`'s. The chunk geometry keeps its former
names here: ``AxisPlan``, ``plan_axis`` and ``plan_chunks`` are
:class:`~convolab.chunked.AxisBlocks`, :func:`~convolab.chunked.axis_blocks`
and :func:`~convolab.chunked.chunk_blocks` (their errors name the former
function).
"""

# The imports are this module's content (hence noqa: F401); convolab.chunked first: it says when dask is missing.
from .chunked import (  # noqa: F401
    AxisBlocks, avg_pool, avg_pool1d, avg_pool2d, avg_pool3d, axis_blocks, chunk_blocks, conv, conv1d, conv1d_input,
    conv1d_weight, conv2d, conv2d_input, conv2d_weight, conv3d, conv3d_input, conv3d_weight, conv_input, conv_weight,
    convolve, correlate, max_pool, max_pool1d, max_pool2d, max_pool3d)
from .chunked._blocks import AxisPlan, plan_axis, plan_chunks  # noqa: F401

import dask.array as da  # noqa: E402, F401  (as before the move; absolute: the dask package, not this module)

# What this module exported before the move.
__all__ = ["AxisPlan", "plan_axis", "plan_chunks", "conv", "conv1d", "conv2d", "conv3d", "correlate", "convolve",
           "max_pool", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "conv_input", "conv1d_input", "conv2d_input", "conv3d_input", "conv_weight", "conv1d_weight",
           "conv2d_weight", "conv3d_weight"]
