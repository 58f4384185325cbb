"""Per-sample products on the pool's threads, one BLAS thread each.

A pass that takes one BLAS product per sample (or per block of samples) and
does compiled or NumPy work around it can run in two ways at two threads or
more: the products on OpenBLAS's threads, the work around them on the pool
(each side waiting for the other, and OpenBLAS's worker often woken on the
caller's CPU), or each thread of the pool taking whole samples and doing
everything for them, its products held to one BLAS thread. The second measured
as fast or faster on every layer tried, and much steadier (docs/compiled.md,
"One-thread products on the pool", "The scatter on the pool"). This module
holds the rule for when a pass may do so, the jobs, and the run:

- gemm's 1x1 passes (:func:`.gemm._pooled_pointwise`,
  :func:`.gemm._pooled_pointwise_weight_grad`);
- the strided 1x1 input gradient's placement and the compiled scatter
  (:func:`convolab._engine._placed_pointwise_grads`,
  :func:`convolab._engine._input_grad_scatter`);
- space_to_depth's three passes (:mod:`.space_to_depth`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..spec import ConvSpec
from ._blas_threads import blas_thread_control, one_blas_thread
from ._threads import in_parallel, threads_for

__all__ = ["BLAS_DTYPES", "pools_products", "pools_whole_samples", "run_pooled", "sample_jobs"]

#: The dtypes whose products run on the BLAS, and so on its threads unless :func:`pools_products` keeps them off.
BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def pools_products(spec: ConvSpec, dtype: np.dtype) -> bool:
    """Whether a pass's per-sample products of ``spec`` run on the pool's threads, each on one BLAS thread: on
    more than one thread, for the BLAS's dtypes, where NumPy's BLAS can be held to one thread
    (:func:`._blas_threads.blas_thread_control`).

    OpenBLAS's own threads are not steered, and the kernel here often wakes its worker on the caller's CPU: in
    the bench's full runs ResNet-18 layer2.0's 1x1 stride-2 downsample then ran 2.4 ms a call for its forward and
    its weight gradient, where 1.0-1.1 is usual. The pool's threads are kept off the caller's CPU
    (:func:`._threads.in_parallel`), and one BLAS thread each runs as fast per core: that layer measured 0.71-0.81
    ms so for either pass, against PyTorch's 0.75-0.87 (docs/compiled.md, "One-thread products on the pool").
    """
    return (dtype in BLAS_DTYPES and threads_for(spec.macs) > 1 and spec.batch * spec.output_size[0] > 1
            and blas_thread_control() is None)


def pools_whole_samples(spec: ConvSpec, dtype: np.dtype) -> bool:
    """:func:`pools_products`, where every thread gets whole samples (a batch at least as large as the thread
    count): the passes whose jobs cannot split a sample's rows."""
    return pools_products(spec, dtype) and spec.batch >= threads_for(spec.macs)


def sample_jobs(spec: ConvSpec) -> list[tuple[int, int, int, int]]:
    """The pool's jobs, ``(first sample, end sample, first output row, end row)``: one contiguous range of whole
    samples a thread, or where there are fewer samples than threads, each sample's rows split.

    Thread-affine: the calling thread takes the first range and a pool thread the next, call after call, so each
    core copies and writes the same part of the arrays it did in the previous call, and each range's products
    are one NumPy call. ResNet-18 layer3.0's downsample forward ran 0.69-0.98 ms (p90 up to 1.5) with its samples
    handed to whichever thread was free, 0.65-0.99 (p90 up to 1.27) in halves (docs/compiled.md, "One-thread
    products on the pool")."""
    threads, n, rows = threads_for(spec.macs), spec.batch, spec.output_size[0]
    if n >= threads:
        return [(n * i // threads, n * (i + 1) // threads, 0, rows) for i in range(threads)]
    pieces = min(rows, -(-threads // n))
    return [(sample, sample + 1, rows * i // pieces, rows * (i + 1) // pieces)
            for sample in range(n) for i in range(pieces)]


def run_pooled(jobs: Sequence[Any], make_worker: Callable[[], Callable[[Any], None]], spec: ConvSpec) -> None:
    """:func:`._threads.in_parallel` for a pass of ``spec`` (its jobs, one per thread: from :func:`sample_jobs`),
    with NumPy's BLAS held to one thread (:func:`._blas_threads.one_blas_thread`)."""
    with one_blas_thread():
        in_parallel(jobs, make_worker, threads_for(spec.macs))
