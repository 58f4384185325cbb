"""ReLU's forward and its gradient as one compiled loop each.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrappers are :func:`convolab.nn.functional.relu`'s
(``_rectified`` and its pullback). NumPy's ``maximum`` and the gradient's
select cost 20-45 us on the digits CNN's (32, 16, 8, 8) activations, several
times their memory traffic; a plain loop costs a few.

The contract: 1-d arrays, C-contiguous, one dtype (float32 or float64), the
output writeable and of the input's length. The results are NumPy's bits and
PyTorch's rules: ``x if x > 0 or x is NaN else +0`` (a NaN stays NaN; -0 gives
+0, as ``_rectified`` does) and ``g if x > 0 or x is NaN else +0`` (a select, as
``where(x <= 0, 0, g)``: an infinite or NaN ``g`` at ``x <= 0`` gives 0). No
``fastmath``: it may assume there is no NaN and drop the NaN's case.
"""

from __future__ import annotations

from numba import njit

__all__ = ["relu_forward", "relu_backward"]


@njit(cache=True, nogil=True)
def relu_forward(x, out):
    """``out[i] = x[i] if x[i] > 0 or x[i] is NaN else 0``."""
    zero = out.dtype.type(0)
    for i in range(x.size):
        value = x[i]
        out[i] = zero if value <= 0 else value  # False for a NaN: it stays


@njit(cache=True, nogil=True)
def relu_backward(grad, x, out):
    """``out[i] = 0 if x[i] <= 0 else grad[i]``: a select, as PyTorch's, so an infinite or NaN ``grad`` at a
    non-positive input gives 0; the derivative at 0 taken as 0, at a NaN input as 1."""
    zero = out.dtype.type(0)
    for i in range(grad.size):
        out[i] = zero if x[i] <= 0 else grad[i]
