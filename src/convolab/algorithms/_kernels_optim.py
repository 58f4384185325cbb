"""The Adam and AdamW update as one compiled loop over a parameter's values.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrapper is :meth:`convolab.nn.optim.Adam._update`. NumPy's
version is eleven whole-array passes through a scratch array; at a small
network's sizes (the digits CNN's ten parameters, 20 to 8,000 values each)
each pass costs more in calls than in arithmetic.

The contract: ``param``, ``grad``, ``exp_avg`` and ``exp_avg_sq`` are 1-d,
C-contiguous, writeable except ``grad``, one dtype (float32 or float64), the
same length; the scalars come in one array of that dtype (the caller casts:
Numba's dispatcher reads an array's type at once, a NumPy scalar's slowly), so each step
rounds exactly as NumPy's in-place step with a Python float does in that dtype:
the results are the same bits. No ``fastmath``: it could fuse or reorder them.
``error_model="numpy"``: Numba's default (Python's) tests every division for a
zero divisor, to raise ZeroDivisionError, and that branch kept the loop from
vectorizing (2.4 ns per float32 value, against 0.3 without it); with NumPy's
model a zero divisor gives inf or NaN, as NumPy's update does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["adam_update"]


@njit(cache=True, nogil=True, error_model="numpy")
def adam_update(param, grad, exp_avg, exp_avg_sq, scalars):
    """One Adam step per value, in :meth:`convolab.nn.optim.Adam._update`'s order, with ``scalars``
    ``(decay, l2, beta1, rest1, beta2, rest2, inv_correction2, eps, step_size)``::

        p *= decay                        (AdamW's decoupled decay; 1 otherwise)
        g = grad + l2 * p                 (Adam's L2 term, only where l2 != 0)
        m = m * beta1 + g * rest1         (rest1 = 1 - beta1)
        v = v * beta2 + (g * g) * rest2
        p -= m / (sqrt(v) * inv_correction2 + eps) * step_size
    """
    decay, l2, beta1, rest1, beta2, rest2 = scalars[0], scalars[1], scalars[2], scalars[3], scalars[4], scalars[5]
    inv_correction2, eps, step_size = scalars[6], scalars[7], scalars[8]
    with_l2 = l2 != 0
    for i in range(param.size):
        value = param[i] * decay
        g = grad[i] + l2 * param[i] if with_l2 else grad[i]
        m = exp_avg[i] * beta1 + g * rest1
        v = exp_avg_sq[i] * beta2 + (g * g) * rest2
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = value - m / (np.sqrt(v) * inv_correction2 + eps) * step_size
