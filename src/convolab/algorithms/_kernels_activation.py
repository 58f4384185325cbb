"""ReLU's forward and its gradient as one compiled loop each.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrappers are :func:`convolab.nn.functional.relu`'s
(``_rectified`` and its pullback). NumPy's ``maximum`` and ``g * (x > 0)`` cost
20-45 us on the digits CNN's (32, 16, 8, 8) activations, several times their
memory traffic; a plain loop costs a few.

The contract: 1-d arrays, C-contiguous, one dtype (float32 or float64), the
output writeable and of the input's length. The results are NumPy's bits:
``x if x > 0 or x is NaN else +0`` (a NaN stays NaN, as in PyTorch; -0 gives +0, as
``_rectified`` does) and
``g * 1`` or ``g * 0`` (so -0, or NaN for an infinite ``g``, as ``g * ~(x <= 0)``).
No ``fastmath``: it could drop the multiplication by zero.
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
    """``out[i] = grad[i] * (0 if x[i] <= 0 else 1)``, in the dtype: the derivative at 0 taken as 0, at a NaN
    as 1 (PyTorch's)."""
    one, zero = out.dtype.type(1), out.dtype.type(0)
    for i in range(grad.size):
        out[i] = grad[i] * (zero if x[i] <= 0 else one)
