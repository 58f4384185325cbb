"""``correlate`` and ``convolve`` with ``scipy.signal``'s semantics, on convolab's core.

These take two N-d arrays of the same rank (no batch or channel axes) and
return SciPy's numbers, so signal-processing code can switch with no surprises.
Unlike the deep-learning ops, they accept array-likes and promote mixed dtypes,
as SciPy does; a masked array is refused, as by every convolab op (its mask
would be ignored).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dtypes import check_supported_dtype
from ._errors import fail
from ._engine import conv_forward
from ._window import reverse_spatial
from .algorithms import ALGORITHMS
from .functional import as_array
from .spec import conv_spec

__all__ = ["convolve", "correlate"]

_MODES = ("full", "valid", "same")
#: scipy.signal's method names, and the convolab algorithm each maps to.
_METHODS = {"auto": "auto", "direct": "im2col", "fft": "fft"}


def _check_mode_and_method(op: str, mode: object, method: object) -> None:
    if not isinstance(mode, str) or mode not in _MODES:
        fail(ValueError, op, "mode", repr(mode), f"must be one of {', '.join(map(repr, _MODES))}")
    if not isinstance(method, str) or method not in _METHODS:
        fail(ValueError, op, "method", repr(method), f"must be one of {', '.join(map(repr, _METHODS))}")


def _as_signal(op: str, name: str, value: Any) -> np.ndarray:
    array = as_array(op, name, value, array_like=True)  # array-likes welcome, as in SciPy; masked arrays are not
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    check_supported_dtype(op, name, array.dtype)
    return array


def _convolve(op: str, in1: Any, in2: Any, mode: str, method: str, reverse_in2: bool) -> np.ndarray:
    _check_mode_and_method(op, mode, method)
    signal, kernel = _as_signal(op, "in1", in1), _as_signal(op, "in2", in2)
    if signal.ndim != kernel.ndim:
        fail(ValueError, op, "in2", f"{kernel.ndim} dimensions with in1 of {signal.ndim}",
             "must have the same number of dimensions as in1")
    dtype = np.result_type(signal, kernel)
    signal, kernel = signal.astype(dtype, copy=False), kernel.astype(dtype, copy=False)
    if reverse_in2:
        # correlate(a, b) is defined by SciPy as convolve(a, b reversed and conjugated).
        kernel = reverse_spatial(kernel.conj(), kernel.ndim)
    if signal.ndim == 0:
        return signal * kernel
    if signal.size == 0 or kernel.size == 0:
        return np.array([], dtype=dtype)
    if mode == "valid":
        if not all(a >= b for a, b in zip(signal.shape, kernel.shape)):
            if not all(b >= a for a, b in zip(signal.shape, kernel.shape)):
                fail(ValueError, op, "in2", f"shape {kernel.shape} with in1 of shape {signal.shape}",
                     "must fit inside in1 in every dimension, or in1 inside it, for mode='valid'")
            signal, kernel = kernel, signal  # convolution commutes; SciPy swaps too
        padding: Any = "valid"
    elif mode == "full":
        if kernel.size > signal.size:
            signal, kernel = kernel, signal  # commutes; the smaller one slides
        padding = "full"
    else:  # same: in1's shape, centred on the full result as SciPy centres it (odd unit low)
        padding = tuple(((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in kernel.shape)
    spec = conv_spec((1, 1, *signal.shape), (1, 1, *kernel.shape), padding=padding, flip=True, op=op)
    reason = ALGORITHMS[_METHODS[method]].why_not(spec, dtype) if method != "auto" else None
    if reason is not None:
        fail(ValueError, op, "method", repr(method), f"cannot run this problem: {reason}")
    out = conv_forward(signal[np.newaxis, np.newaxis], kernel[np.newaxis, np.newaxis], None, spec, _METHODS[method])
    return out[0, 0]


def convolve(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> np.ndarray:
    """N-d convolution of two arrays, as ``scipy.signal.convolve``.

    ``out[n] = sum_k in1[k] * in2[n - k]``: the kernel is reversed, the
    mathematical convolution.

    Parameters
    ----------
    in1, in2 : array_like
        Arrays of the same number of dimensions.
    mode : {"full", "valid", "same"}
        ``"full"``: every overlap, size ``s1 + s2 - 1``. ``"valid"``: only full
        overlaps, size ``|s1 - s2| + 1`` (one array must fit inside the other).
        ``"same"``: the size of ``in1``, centred on the full result; for even
        kernels the odd sample is dropped from the low side, as SciPy does
        (convolab's ``padding="same"`` instead pads the odd unit on the high side).
    method : {"auto", "direct", "fft"}
        ``"direct"`` sums products exactly (integers stay exact); ``"fft"`` uses
        Fourier transforms (floating point only).

    Returns
    -------
    numpy.ndarray
        Of dtype ``numpy.result_type(in1, in2)``, except that integers come back
        as int64 and float16 is accumulated in float32.

    Shape
    -----
    Per axis: full ``s1 + s2 - 1``; same ``s1``; valid ``max(s1, s2) - min(s1, s2) + 1``.

    Examples
    --------
    >>> import convolab as cl
    >>> cl.convolve([1, 2, 3], [0, 1, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    >>> cl.convolve([1, 2, 3], [0, 1, 0.5], mode="same")
    array([1. , 2.5, 4. ])
    """
    return _convolve("convolve", in1, in2, mode, method, reverse_in2=False)


def correlate(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> np.ndarray:
    """N-d cross-correlation of two arrays, as ``scipy.signal.correlate``.

    ``out[n] = sum_k in1[k + n - (s2 - 1)] * conj(in2[k])`` in full mode: the
    kernel is slid without reversal, which is what deep-learning frameworks call
    convolution. Defined, as in SciPy, as ``convolve(in1, in2 reversed and conjugated)``.

    Parameters
    ----------
    in1, in2 : array_like
        Arrays of the same number of dimensions.
    mode : {"full", "valid", "same"}
        As in :func:`convolve`.
    method : {"auto", "direct", "fft"}
        As in :func:`convolve`.

    Returns
    -------
    numpy.ndarray
        As in :func:`convolve`.

    Shape
    -----
    As in :func:`convolve`.

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> cl.correlate(np.arange(1, 10).reshape(3, 3), [[9, 8], [7, 6]], mode="valid")
    array([[ 83, 113],
           [173, 203]])
    >>> cl.correlate([1, 2, 3], [0, 1, 0.5])
    array([0.5, 2. , 3.5, 3. , 0. ])
    """
    return _convolve("correlate", in1, in2, mode, method, reverse_in2=True)
