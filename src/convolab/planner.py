"""The planner: which algorithm runs a convolution, and why.

``algorithm="auto"`` asks :func:`plan_for` for the cheapest algorithm by a
documented cost model; ``algorithm="measure"`` times the candidates once per
problem signature and remembers the winner (like ``cudnn.benchmark``).

The cost model estimates seconds on one machine's rates (measured on the
project's 2-core reference machine; only their ratios matter):

======================  =========================================================
algorithm               estimated time
======================  =========================================================
gemm                    FLOPs / matmul rate (scaled down when a matrix side is
                        short: fewer than 32 filters or taps per group, and
                        when there are fewer taps than filters), plus the
                        unrolled copy at memory bandwidth
folded                  the same for its product (``K_L`` times the filters,
                        ``1/K_L`` of the taps, every padded column), its smaller
                        copy, one pass over the output per last-axis tap
depthwise               per block of channels: the grid copy (the input, padded
                        and split into stride phases, or as it is at stride 1),
                        then every tap's run copied into columns and read back
                        by a small product per channel; blocks shared among
                        threads (each past the first counted at 0.6)
fft                     forward transforms of inputs and kernels, the spectral
                        products (summed over input channels), inverse transforms
each                    plus a fixed cost per call (larger for the FFT), which
                        decides tiny problems
======================  =========================================================

"direct" and "im2col" are references, never chosen automatically. "shifted"
and the Winograd tiles are run only when asked for by name: in NumPy their
extra passes over memory (accumulations, transforms) cost what they save, and
on the suite's layers they measured no faster than "gemm". The FFT is
never chosen for integers (their results must be exact) nor, at run time, for
inputs holding NaN or infinity (a transform would spread them to every output).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from math import log2, prod
from typing import Any, Sequence

import numpy as np
import scipy.fft

from . import algorithms
from ._dtypes import check_supported_dtype, compute_dtype
from .spec import ConvSpec, PaddingArg, conv_spec

__all__ = ["Plan", "plan", "plan_for", "measured_choice", "AUTO_CANDIDATES"]

#: Algorithms "auto" and "measure" choose among.
AUTO_CANDIDATES = ("gemm", "folded", "depthwise", "fft")

# Rates of the reference machine (2 cores): matrix products by dtype (FLOP/s),
# FFT (the 2.5 L log2 L operation count per transform, per second), elementwise
# passes (elements/s), copies (bytes/s).
_MATMUL_RATE = {"f": {4: 150e9, 8: 75e9}, "c": {8: 40e9, 16: 20e9}, "i": {8: 0.8e9}}
_FFT_RATE = 10e9  # reached by long transforms; short ones run slower (see _estimate)
_ELEMENTWISE_RATE = 3e9
_COPY_RATE = {"contiguous": 8e9, "strided": 3e9}  # cache-blocked copies
_SHORT_SIDE = 32  # below this many filters or taps a matrix product runs far from peak
# Fixed costs of a call (Python and NumPy dispatch): they decide tiny problems,
# where every estimate above is microseconds and an FFT's setup dominates.
_OVERHEAD = {"gemm": 20e-6, "folded": 30e-6, "depthwise": 40e-6, "fft": 150e-6}  # folded: a NumPy call per tap more
# Depthwise: bytes of unrolled columns per second on one thread (each copied, then read by the
# product), the Python and NumPy calls per block and chunk of rows, and what each thread past
# the first adds (the threads share the caches and the memory bus).
_DEPTHWISE_COLUMN_RATE = 16e9
_DEPTHWISE_BLOCK_COST = 25e-6
_THREAD_GAIN = 0.6


@dataclass(frozen=True)
class Plan:
    """What the planner decided for one problem.

    ``estimates`` holds the estimated seconds of every candidate that can run
    it; ``refused`` the reason each other candidate cannot.
    """

    algorithm: str
    reason: str
    flops: int
    workspace_bytes: int
    estimates: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.algorithm}: {self.reason}",
                 f"  {self.flops / 1e9:.3g} GFLOP, workspace {self.workspace_bytes / 2**20:.3g} MiB"]
        lines += [f"  {name}: ~{seconds * 1e3:.3g} ms" for name, seconds in sorted(self.estimates.items(),
                                                                                 key=lambda item: item[1])]
        lines += [f"  {name}: cannot run ({why})" for name, why in self.refused.items()]
        return "\n".join(lines)


def _matmul_rate(dtype: np.dtype) -> float:
    kind = "i" if dtype.kind in "iu" else dtype.kind
    return _MATMUL_RATE[kind].get(dtype.itemsize, min(_MATMUL_RATE[kind].values()))


def _product_rate(dtype: np.dtype, rows: int, depth: int) -> float:
    """The rate of a ``(rows, depth) @ (depth, columns)`` product with many columns.

    Far from peak when a side is short (under ``_SHORT_SIDE``); somewhat below
    it when the product is shallower than it is tall (``depth < rows``: each
    result is written after fewer multiply-adds), which decides gemm against
    folded (fitted on the suite's 3×3 layers: ``(depth/rows)**0.25``).
    """
    rows, depth = max(rows, 1), max(depth, 1)  # an empty side: no work, but no division by zero either
    short = min(1.0, min(rows, depth) / _SHORT_SIDE)
    return _matmul_rate(dtype) * short * min(1.0, depth / rows) ** 0.25


def _estimate(name: str, spec: ConvSpec, dtype: np.dtype) -> float:
    if name == "gemm":
        rate = _product_rate(dtype, spec.out_channels_per_group, spec.in_channels_per_group * prod(spec.kernel_size))
        copied = 0 if algorithms.Gemm().workspace_bytes(spec, dtype.itemsize) == 0 else (
            algorithms._row_bytes(spec, dtype.itemsize) * spec.batch * spec.output_size[0])
        # Wide rows copy one contiguous run per (channel, tap); so, nearly, do small images
        # unrolled with the batch innermost. Otherwise each output row is a strided copy.
        fast = algorithms._gemm_wide(spec) or algorithms._batch_inner(spec, dtype.itemsize)
        return _OVERHEAD["gemm"] + spec.flops / rate + copied / _COPY_RATE["contiguous" if fast else "strided"]
    if name == "folded":
        rest = algorithms._rest_spec(spec)
        columns = spec.batch * rest.output_size[0] * prod(algorithms._grid(rest))  # every row, wide or exact
        rows, depth = spec.kernel_size[-1] * spec.out_channels_per_group, spec.in_channels_per_group * prod(rest.kernel_size)
        rate = _product_rate(dtype, rows, depth)
        copied = algorithms._row_bytes(rest, dtype.itemsize) * spec.batch * rest.output_size[0]
        layout = "contiguous" if algorithms._gemm_wide(rest) else "strided"
        shares = spec.kernel_size[-1] * prod(spec.output_shape)  # each tap's share written or added once
        return (_OVERHEAD["folded"] + 2 * spec.groups * rows * depth * columns / rate + copied / _COPY_RATE[layout]
                + shares / _ELEMENTWISE_RATE)
    if name == "depthwise":
        return _OVERHEAD["depthwise"] + _depthwise_seconds(spec, dtype)
    if name == "fft":
        length = prod(scipy.fft.next_fast_len(size, real=True) for size in spec.padded_size)
        levels = log2(max(length, 2))
        per_transform = 2.5 * length * levels / (_FFT_RATE * min(1.0, levels / 22))
        transforms = spec.batch * spec.in_channels + spec.out_channels * spec.in_channels_per_group
        transforms += spec.batch * spec.out_channels
        products = 8 * spec.batch * spec.out_channels * spec.in_channels_per_group * (length / 2 + 1)
        return _OVERHEAD["fft"] + transforms * per_transform + products / _ELEMENTWISE_RATE
    raise ValueError(f"no cost model for {name!r}")


def _depthwise_seconds(spec: ConvSpec, dtype: np.dtype) -> float:
    """Depthwise's estimate past its fixed cost, from the blocks it would actually run."""
    layout = algorithms._DepthwiseLayout(spec, dtype.itemsize, spec.padding)
    jobs, groups = layout.blocks()
    taps = prod(spec.kernel_size)
    chunks = -(-spec.output_size[0] // layout.chunk_rows(groups, taps))
    multiplier = spec.out_channels_per_group
    columns = taps * spec.batch * spec.groups * layout.length * dtype.itemsize * (1 + (multiplier - 1) / 4)
    grid = spec.batch * spec.in_channels * layout.phases * layout.stored * dtype.itemsize
    work = (columns / _DEPTHWISE_COLUMN_RATE + len(jobs) * chunks * _DEPTHWISE_BLOCK_COST
            + grid / _COPY_RATE["contiguous" if layout.direct else "strided"])
    if not layout.in_place:  # the wide rows' real columns copied out
        work += prod(spec.output_shape) * dtype.itemsize / _COPY_RATE["strided"]
    threads = min(algorithms.depthwise_threads(), len(jobs)) if layout.work >= algorithms.DEPTHWISE_PARALLEL_WORK else 1
    return work / (1 + _THREAD_GAIN * (threads - 1))


@lru_cache(maxsize=4096)
def plan_for(spec: ConvSpec, dtype: np.dtype) -> Plan:
    """The plan for a frozen spec and the caller's dtype (cached)."""
    accumulate = compute_dtype(dtype)
    estimates: dict[str, float] = {}
    refused: dict[str, str] = {}
    for name in AUTO_CANDIDATES:
        why = algorithms.ALGORITHMS[name].why_not(spec, dtype)
        if why is None:
            estimates[name] = _estimate(name, spec, accumulate)
        else:
            refused[name] = why
    best = min(estimates, key=estimates.get)
    runner_up = sorted(estimates, key=estimates.get)[1:2]
    if runner_up:
        ratio = estimates[runner_up[0]] / max(estimates[best], 1e-12)
        reason = f"estimated {ratio:.3g}x faster than {runner_up[0]}"
    else:
        reason = "the only candidate that can run this problem"
    return Plan(algorithm=best, reason=reason, flops=spec.flops,
                workspace_bytes=algorithms.ALGORITHMS[best].workspace_bytes(spec, accumulate.itemsize),
                estimates=estimates, refused=refused)


def plan(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    dtype: Any = np.float32,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Plan:
    """The algorithm ``conv(..., algorithm="auto")`` would use, why, its FLOPs and workspace.

    Parameters
    ----------
    input_shape, weight_shape : tuple of int
        As for :func:`convolab.output_shape`.
    dtype : dtype-like
        The arrays' dtype.
    stride, padding, dilation, groups, padding_mode, flip
        As for :func:`convolab.conv`.

    Returns
    -------
    Plan
        ``algorithm``, ``reason``, ``flops``, ``workspace_bytes`` (scratch memory
        beyond input and output), the estimate of each candidate and why any
        other could not run.

    Examples
    --------
    >>> import convolab as cl
    >>> cl.plan((8, 256, 28, 28), (512, 256, 3, 3), "float32", padding=1).algorithm
    'gemm'
    >>> cl.plan((2, 32, 16, 64, 64), (32, 32, 3, 3, 3), "float32", padding=1).algorithm  # 32 filters
    'folded'
    >>> cl.plan((1, 1, 2048, 2048), (1, 1, 63, 63), "float32").algorithm
    'fft'
    >>> cl.plan((8, 32, 112, 112), (32, 1, 3, 3), "float32", padding=1, groups=32).algorithm
    'depthwise'
    >>> cl.plan((1, 1, 2048, 2048), (1, 1, 63, 63), "int32").refused["fft"]
    'integer inputs (int32) must give exact results, and the FFT rounds'
    """
    dtype = np.dtype(dtype)
    check_supported_dtype("plan", "dtype", dtype)
    spec = conv_spec(input_shape, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op="plan")
    return plan_for(spec, dtype)


_MEASURED: dict[tuple[Any, ...], str] = {}


def measured_choice(padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec, dtype: np.dtype) -> str:
    """Time every candidate that can run once on these arrays; remember the fastest per signature."""
    key = (spec.batch, spec.in_channels, spec.out_channels, spec.groups, spec.input_size, spec.kernel_size,
           spec.stride, spec.padding, spec.dilation, np.dtype(dtype).str)
    if key not in _MEASURED:
        timings = {}
        for name in plan_for(spec, np.dtype(dtype)).estimates:
            if name == "fft" and not np.isfinite(padded).all():
                continue
            start = time.perf_counter()
            algorithms.ALGORITHMS[name].run(padded, kernel, spec)
            timings[name] = time.perf_counter() - start
        _MEASURED[key] = min(timings, key=timings.get)
    return _MEASURED[key]
