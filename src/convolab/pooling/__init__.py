"""Pooling on NumPy arrays with PyTorch's semantics: max, average, adaptive, max-unpooling.

Every op is N-d first (the rank read from a tuple ``kernel_size`` or
``output_size``); ``max_pool1d/2d/3d`` and friends are the same op with the rank
fixed. Inputs are ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``; channels
never mix. Each op's vector-Jacobian product is registered beside it with
:func:`convolab._vjp.defines_vjp`, and the input gradients of max and average
pooling are public (``max_pool_input``, ``avg_pool_input``) for ``convolab.grad``.

Where things live:

- :mod:`._spec`: :class:`PoolSpec` and :func:`pool_spec` (a fixed-window
  problem's arguments checked once and frozen), and the argument checks every
  op shares;
- :mod:`._windows`: the engines fixed windows run on (separable reductions,
  the phase grid, gathers, the running maximum), with the design notes on why
  they beat the plain window view; the tap arithmetic they read is the shared
  :class:`convolab._geometry.WindowGeometry`;
- :mod:`._compiled_windows`: max pooling's argmax and the gradient's scatter
  as compiled loops (float32/float64, up to three spatial dimensions, where
  Numba imports), with the NumPy engines' results;
- :mod:`.max`, :mod:`.average`, :mod:`.adaptive`, :mod:`.unpool`: one op
  family each, forward and backward side by side, with its reference;
- :mod:`._docs`: the docstring templates and per-rank words and examples, from
  which :func:`convolab._fixed_rank.fixed_rank_ops` makes ``max_pool``,
  ``max_pool1d``, ... each family from one N-d implementation.

The max-pooling tie rule, PyTorch's: the window is read tap by tap in row-major
order over the kernel (padding taps skipped), the first tap is taken, and a later
tap replaces it only if strictly greater, or NaN. So among equal maxima the
*first* in window order wins, and gets the whole gradient; a window holding NaN
gives NaN with the index of its *last* NaN. Adaptive max pooling follows it too.
"""

from __future__ import annotations

from ._spec import PoolSpec, pool_spec
from .adaptive import (
    adaptive_avg_pool,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
)
from .average import (
    avg_pool,
    avg_pool1d,
    avg_pool1d_input,
    avg_pool2d,
    avg_pool2d_input,
    avg_pool3d,
    avg_pool3d_input,
    avg_pool_input,
)
from .max import (
    max_pool,
    max_pool1d,
    max_pool1d_input,
    max_pool2d,
    max_pool2d_input,
    max_pool3d,
    max_pool3d_input,
    max_pool_input,
)
from .unpool import max_unpool, max_unpool1d, max_unpool2d, max_unpool3d

# The engines convolab.dask runs on its slabs, reached there as ``convolab.pooling._name``
# from before the split; new code imports them from their modules.
from ._windows import _reduce_windows, _trim_kernel  # noqa: F401  (re-exported for convolab.dask)
from .max import _SEPARABLE_TAPS, _max_pool_forward  # noqa: F401  (re-exported for convolab.dask)

__all__ = [
    # forward ops (the convolab namespace)
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "max_unpool",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "PoolSpec",
    "pool_spec",
    # input gradients (convolab.grad)
    "max_pool_input",
    "max_pool1d_input",
    "max_pool2d_input",
    "max_pool3d_input",
    "avg_pool_input",
    "avg_pool1d_input",
    "avg_pool2d_input",
    "avg_pool3d_input",
]
