"""The dtype rule: which dtype a convolution accumulates in and which it returns.

======================  ======================  =====================
input dtype             accumulated in          returned as
======================  ======================  =====================
float16                 float32                 float16
float32 / float64       itself                  itself
complex64 / complex128  itself                  itself
int8 … int64, uint8 …   int64 (exact)           int64
uint32
======================  ======================  =====================

Integers are returned as int64 rather than the input's width because a sum of
products of int8 values overflows int8 at once; int64 keeps every result exact.
Where the largest possible sum would not fit int64 (values near 2**31 or
above), the call is refused rather than allowed to wrap (:func:`check_exact_range`).
uint64 and bool are refused: uint64 does not fit int64 exactly, and a boolean
convolution is better spelled with an explicit ``astype``.
"""

from __future__ import annotations

import numpy as np

from ._errors import fail

__all__ = ["compute_dtype", "result_dtype", "check_supported_dtype", "is_exact", "check_exact_range", "same_dtype"]

_SUPPORTED = "float16, float32, float64, complex64, complex128, or a signed/unsigned integer up to uint32"


#: Native float dtypes every op computes with, checked by identity before the general rule below.
_SUPPORTED_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_supported_dtype(op: str, name: str, dtype: np.dtype) -> None:
    """Raise TypeError unless ``dtype`` is one convolab computes with."""
    if dtype in _SUPPORTED_FLOATS:  # the common case first: NumPy's float dtypes
        return
    dtype = np.dtype(dtype)
    if dtype.kind in "fc" and dtype.itemsize >= 2 and dtype != np.longdouble and dtype != np.clongdouble:
        return
    if dtype.kind == "i" or (dtype.kind == "u" and dtype.itemsize <= 4):
        return
    fail(TypeError, op, name, f"dtype {dtype}", f"must be {_SUPPORTED}")


def same_dtype(first: np.dtype, second: np.dtype) -> bool:
    """Whether two dtypes hold the same kind of number: byte order is storage, not a different dtype.

    >>> same_dtype(np.dtype(">f8"), np.dtype("<f8")), same_dtype(np.dtype("f8"), np.dtype("f4"))
    (True, False)
    """
    if first is second:  # the common case: two arrays of one native dtype
        return True
    return np.dtype(first).newbyteorder("=") == np.dtype(second).newbyteorder("=")


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype products are summed in."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return dtype


def result_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a convolution of ``dtype`` inputs returns."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    return dtype


def is_exact(dtype: np.dtype) -> bool:
    """True where results must be exact (integers): no FFT may touch them."""
    return np.dtype(dtype).kind in "iu"


_INT64_MAX = int(np.iinfo(np.int64).max)


def _largest_magnitude(a: np.ndarray) -> int:
    return max(abs(int(a.min())), abs(int(a.max()))) if a.size else 0


def check_exact_range(
    op: str, names: tuple[str, str], first: np.ndarray, second: np.ndarray, terms: int, offset: np.ndarray | None = None
) -> None:
    """Refuse integer arrays whose sum of ``terms`` products (plus ``offset``, a bias) could overflow int64.

    The bound ``max|first| * max|second| * terms + max|offset|`` is computed with Python ints;
    a result that might not fit the int64 it is returned in is an error, never
    a silently wrapped number.
    """
    if not (is_exact(first.dtype) and is_exact(second.dtype)):
        return
    largest_first, largest_second = _largest_magnitude(first), _largest_magnitude(second)
    bound = largest_first * largest_second * terms + (0 if offset is None else _largest_magnitude(offset))
    if bound > _INT64_MAX:
        fail(ValueError, op, names[0],
             f"integer values up to {largest_first} against {names[1]} values up to {largest_second}, "
             f"summed over {terms} products (bound {bound})",
             "must give results that fit int64, the exact integer result dtype (cast to float64, or scale down)")


def all_finite(a: np.ndarray) -> bool:
    """Whether ``a`` holds no inf or NaN, judged by its sum (one pass, no boolean array).

    A finite array whose sum overflows reads as not finite: that only sends it
    down an exact path.

    >>> all_finite(np.array([1.0, np.inf])), all_finite(np.arange(3))
    (False, True)
    """
    if a.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(a.sum()))
