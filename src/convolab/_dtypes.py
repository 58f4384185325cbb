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
uint64 and bool are refused: uint64 does not fit int64 exactly, and a boolean
convolution is better spelled with an explicit ``astype``.
"""

from __future__ import annotations

import numpy as np

from ._errors import fail

__all__ = ["compute_dtype", "result_dtype", "check_supported_dtype", "is_exact"]

_SUPPORTED = "float16, float32, float64, complex64, complex128, or a signed/unsigned integer up to uint32"


def check_supported_dtype(op: str, name: str, dtype: np.dtype) -> None:
    """Raise TypeError unless ``dtype`` is one convolab computes with."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fc" and dtype.itemsize >= 2 and dtype != np.longdouble and dtype != np.clongdouble:
        return
    if dtype.kind == "i" or (dtype.kind == "u" and dtype.itemsize <= 4):
        return
    fail(TypeError, op, name, f"dtype {dtype}", f"must be {_SUPPORTED}")


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
