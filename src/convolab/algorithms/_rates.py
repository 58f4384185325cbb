"""The machine rates the algorithms' cost models share (:meth:`convolab.algorithms.Algorithm.estimate`).

Measured on the project's 2-core reference machine; only their ratios matter,
since the planner compares estimates and never promises seconds. An algorithm
with a rate of its own (depthwise's unrolled columns) keeps it in its module.
"""

from __future__ import annotations

import numpy as np

#: Matrix products by dtype kind and item size (FLOP/s).
MATMUL_RATE = {"f": {4: 150e9, 8: 75e9}, "c": {8: 40e9, 16: 20e9}, "i": {8: 0.8e9}}
#: FFT: the 2.5 L log2 L operation count per transform, per second; reached by long transforms
#: (short ones run slower, see :meth:`convolab.algorithms.fft.FFT.estimate`).
FFT_RATE = 10e9
#: Elementwise passes (elements/s).
ELEMENTWISE_RATE = 3e9
#: Cache-blocked copies (bytes/s), of contiguous runs or of strided ones.
COPY_RATE = {"contiguous": 8e9, "strided": 3e9}
#: A product's results moved from its own layout into the output's (bytes/s): stored by the BLAS after
#: ``depth`` multiply-adds each, then copied, so a shallow product (a stem's 27 taps) is bound by its results
#: rather than by its FLOPs (fitted on 65 layers, one thread: VGG conv1_1 measured 3-4x its FLOPs' time).
RESULT_RATE = 3e9
#: Results up to this many bytes stay in a core's own cache (256 KiB), where storing them costs next to nothing.
RESULT_CACHE_BYTES = 2**18
#: Below this many filters or taps a matrix product runs far from its peak.
SHORT_SIDE = 32
#: What each thread past the first adds to one thread's speed (the threads share the caches and the memory bus).
THREAD_GAIN = 0.6
#: ... and to a call of gemm or folded, whose products run on the BLAS's threads beside the pool's copies:
#: OpenBLAS's workers spin after each product and take cores from the copies, and its thread count is the
#: process's. Issue 15's baseline (2 threads, wall) against one thread's CPU time: gemm's strided and 7x7
#: layers 1.07-1.67x faster at two threads (median 1.29), compiled's 1.37-1.75x (median 1.7); ResNet-18
#: layer2.0's stride-2 layer took 14.8 ms of CPU at two threads against 11.5 on one.
BLAS_THREAD_GAIN = 0.3


#: Multiply-adds below which a call's products are not charged for the BLAS's threads: small layers (a CNN's
#: 4x4 images, 19e6) measured fastest under gemm with the BLAS as it is; the strided layers that lose a core to
#: its spinning workers have 1e8 to 3e9.
BLAS_SHARED_WORK = 2**26
#: Filters per copied value at which the product is most of the call and the BLAS's threads gain as the pool's:
#: ResNet-18 layer4's 512-filter 7x7 layer under gemm, 16.4 -> 9.4 ms from one thread to two (1.74x), VGG-16
#: conv5_1 62.7 -> 39.4 ms (1.6x), where 128-256 filters on strided layers gained 1.07-1.67x.
BLAS_SCALING_FILTERS = 512


def beside_pool_factor(threads: int, work: int, filters: int = 0) -> float:
    """How much longer, in one thread's seconds, a call whose products of ``work`` multiply-adds run on the BLAS
    takes than its one-thread estimate says, relative to the pool's algorithms, on ``threads`` threads
    (:data:`BLAS_THREAD_GAIN` against :data:`THREAD_GAIN`): 1 on one thread, below :data:`BLAS_SHARED_WORK`, and
    where each copied value meets ``filters`` >= :data:`BLAS_SCALING_FILTERS` filters (one group's)."""
    if work < BLAS_SHARED_WORK or filters >= BLAS_SCALING_FILTERS:
        return 1.0
    return (1 + THREAD_GAIN * (threads - 1)) / (1 + BLAS_THREAD_GAIN * (threads - 1))


def matmul_rate(dtype: np.dtype) -> float:
    """The peak rate of a matrix product in ``dtype`` (integers at their 64-bit rate)."""
    kind = "i" if dtype.kind in "iu" else dtype.kind
    return MATMUL_RATE[kind].get(dtype.itemsize, min(MATMUL_RATE[kind].values()))


def results_seconds(results_bytes: int) -> float:
    """The time a product's ``results_bytes`` of results take to reach the output: those past a core's cache
    (:data:`RESULT_CACHE_BYTES`) at :data:`RESULT_RATE`."""
    return max(results_bytes - RESULT_CACHE_BYTES, 0) / RESULT_RATE


def product_rate(dtype: np.dtype, rows: int, depth: int) -> float:
    """The rate of a ``(rows, depth) @ (depth, columns)`` product with many columns.

    Far from peak when a side is short (under :data:`SHORT_SIDE`); somewhat below
    it when the product is shallower than it is tall (``depth < rows``: each
    result is written after fewer multiply-adds), which decides gemm against
    folded (fitted on the suite's 3×3 layers: ``(depth/rows)**0.25``).
    """
    rows, depth = max(rows, 1), max(depth, 1)  # an empty side: no work, but no division by zero either
    short = min(1.0, min(rows, depth) / SHORT_SIDE)
    return matmul_rate(dtype) * short * min(1.0, depth / rows) ** 0.25
