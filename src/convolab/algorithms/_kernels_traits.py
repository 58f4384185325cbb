"""The compiled pass of the planner's data check: the largest magnitude, finiteness, and the median's sample at once.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use. Before "auto" runs an algorithm that mixes values across outputs
(Winograd's tiles, the FFT), :func:`convolab.planner.data_traits` reads the
input for its largest magnitude and an evenly spaced sample of its values (for
their median). In NumPy that is three passes: a maximum, a minimum and a
strided gather whose every value misses the caches (0.9 ms of ResNet-18's
56x56 layer, single-threaded; 15 ms of VGG-16's 224x224 one, where the layer
takes about 250 ms). Here one pass over a block of the input finds its
largest magnitude, then copies the block's sampled values while the block is
still in the cache.

The magnitude is read from the values' bits: with the sign bit cleared, the
bits of non-negative floats order as the floats do, an inf above every finite
value and a NaN above an inf. So the largest magnitude is an integer maximum
(which vectorizes; a float maximum that keeps NaN does not), and the values
are all finite exactly where it is below the bits of inf.

The contract of :func:`peak_bits`: ``bits`` the input as unsigned integers of
its item size (a view, one flat C-contiguous array), ``sample`` as long as
``bits[::step]``, the same dtype; each call reads ``bits[first:last]`` and
writes the sampled values there (``sample[j] = bits[j * step]``), so calls on
disjoint ranges may run in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels_tiled import wide_vectors

__all__ = ["peak_bits", "BLOCK"]

#: Values per block: the block's sampled values are gathered while it is in the L1 and L2 caches.
BLOCK = 16384


@njit(cache=True, nogil=True)
def peak_bits(bits, magnitude_mask, first, last, step, sample):
    """``max(bits[first:last] & magnitude_mask)`` (0 for an empty range), and ``sample[j] = bits[j * step]`` for
    every ``j * step`` in ``first:last``."""
    wide_vectors(0)
    kind = bits.dtype.type
    peak = kind(0)
    for start in range(first, last, BLOCK):
        end = min(start + BLOCK, last)
        for i in range(np.uint64(start), np.uint64(end)):  # unsigned: no index to check for wrapping around
            peak = max(peak, kind(bits[i] & magnitude_mask))  # in the item's width (Numba widens a 32-bit "&")
        for j in range((start + step - 1) // step, (end - 1) // step + 1):
            sample[j] = bits[j * step]
    return peak
