"""space_to_depth: where no two windows overlap, the unroll is a reshaped copy and each pass one product a sample.

With every axis's kernel no longer than its stride (undilated), each input cell
is one window's tap or no window's: U-Net's 2x2 stride-2 up-convolution (whose
gradient with respect to its input is such a forward convolution), patch
embeddings. The columns im2col builds are then the input's cells rearranged
(space to depth: ``(C, A*sd, B*sh)`` -> ``(C*KD*KH, A*B)`` where ``K = s``),
each moved once, and

- the forward is, per sample, ``(G, O, C*K) @ (G, C*K, P)`` written straight
  into that sample's output (no transposing copy of the product);
- the weight gradient is ``sum_n g_n (G, O, P) @ columns_n.T``;
- the input gradient is ``filters.T @ g_n``, the reverse copy putting each
  tap's gradient on its one cell (nothing adds, nothing overlaps).

One sample's columns at a time stay in cache for the product that reads them
(the suite's U-Net layer: one product a sample measured 20% faster than one
over the whole batch). The copies are compiled where Numba runs
(:mod:`._kernels_space_to_depth`), else NumPy copies of a strided view. At one
thread, or where the BLAS cannot be held to one thread, they run on the calling
thread, between the products, which the BLAS's threads share: copies handed to
the pool there competed with OpenBLAS's spinning workers for the cores (2
threads, U-Net's layer: 53-114 ms of CPU time a call with pooled copies, 27-51
with copies on the calling thread, on a loaded machine). Where the pool takes
whole samples (:func:`._pooled.pools_whole_samples`), each pool thread takes a
range of samples instead, its copies and its products (on one BLAS thread)
alike, so the copies run two at a time and no worker spins: U-Net's three
passes 11.4-12.4 -> 8.3-8.5 ms at two threads (docs/compiled.md,
"space_to_depth on the pool (session 27)"). Every sum holds exactly the direct sum's terms, so
the inf/NaN pattern is the direct sum's.

Axis legend: N samples, G groups, C input channels per group, O output
channels per group, K kernel taps, P output positions.
"""

from __future__ import annotations

from math import prod
from typing import Callable

import numpy as np

from .._dtypes import compute_dtype
from .._settings import current_workspace_limit
from .._window import pad, pad_adjoint, sliding_windows
from ..spec import ConvSpec
from . import Algorithm, Formulation
from ._compiled import kernels, numba_missing
from ._kernel_layout import KERNEL_RANK, as_kernels_take, shape3, steps3
from ._pooled import pools_whole_samples, run_pooled, sample_jobs
from ._rates import COPY_RATE, product_rate
from ._scratch import reused_empty

__all__ = ["SpaceToDepth"]

#: Fixed cost of a call, and of each sample's copy and product (Python and NumPy dispatch).
CALL_OVERHEAD, SAMPLE_OVERHEAD = 20e-6, 5e-6
#: The columns' copy (bytes of columns written per second): compiled, each input row read once and dealt out
#: (U-Net's 2x2 stride-2 layer, one thread: 25.7 MB in 4.3-5.4 ms); NumPy's copy of a strided view, a few
#: values a run, at the strided copy rate.
COMPILED_COPY_RATE = 5.5e9


def _copy_missing(spec: ConvSpec, dtype: np.dtype) -> str | None:
    """None if the compiled copies run this problem, else why not (then NumPy copies)."""
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        return f"compiled copies run float32 and float64 only, not {dtype}"
    if spec.rank > KERNEL_RANK:
        return f"compiled copies run 1 to {KERNEL_RANK} spatial dimensions, not {spec.rank}"
    return numba_missing()


class SpaceToDepth(Algorithm):
    """Non-overlapping windows: each sample's columns a reshaped copy of its cells, one product per sample."""

    name = "space_to_depth"
    passes = frozenset({"forward", "input_grad", "weight_grad"})
    automatic = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        axes = zip(spec.kernel_size, spec.stride, spec.dilation)
        if any(k > s or (d != 1 and k > 1) for k, s, d in axes):
            return (f"kernel {spec.kernel_size}, stride {spec.stride}, dilation {spec.dilation}: the windows "
                    "overlap (space to depth needs kernel <= stride, undilated, on every axis)")
        if all(k == 1 for k in spec.kernel_size):
            return "a 1x1 kernel: gemm's product reads its cells with no columns at all"
        if _columns_bytes(spec, compute_dtype(dtype).itemsize) > current_workspace_limit():  # integers sum in int64
            return "one sample's columns exceed the workspace limit"
        return None

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """gemm's product at gemm's rate (slower where a sample's positions, the product's columns, are fewer
        than its filters), plus one copy of the columns (:data:`COMPILED_COPY_RATE`, else NumPy's strided
        copy rate); no copy of the product. Fitted on U-Net's 2x2 stride-2 layer at one thread: estimated
        15.2 ms against gemm's 19.5, measured 18.5 against 20.5."""
        o, positions = spec.out_channels_per_group, prod(spec.output_size)
        rate = product_rate(dtype, min(o, positions), spec.terms)
        copied = spec.batch * _columns_bytes(spec, dtype.itemsize)
        copy_rate = COMPILED_COPY_RATE if _copy_missing(spec, dtype) is None else COPY_RATE["strided"]
        return CALL_OVERHEAD + spec.batch * SAMPLE_OVERHEAD + spec.flops / rate + copied / copy_rate

    def pass_estimate(self, name: str, spec: ConvSpec, dtype: np.dtype) -> float | None:
        """Either gradient: the forward's :meth:`estimate` (the same product's FLOPs, the same copy)."""
        return self.estimate(spec, dtype)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        return _columns_bytes(spec, itemsize)

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        detail = {"input_grad": "filters.T @ g per sample, each tap's gradient copied onto its one cell",
                  "weight_grad": "g @ columns.T per sample, summed"}[name]
        return Formulation(detail, "no two windows overlap")

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, o, taps = spec.groups, spec.out_channels_per_group, spec.terms
        filters = kernel.reshape(groups, o, taps)  # (G, O, C*K)
        out = np.empty(spec.output_shape, dtype=padded.dtype)

        def forward(first: int, end: int, buffer: np.ndarray) -> None:
            for n, columns in _sample_columns(padded, spec, first, end, buffer):
                np.matmul(filters, columns, out=out[n].reshape(groups, o, -1))  # (G, O, P), in place

        _by_samples(spec, padded.dtype, forward)
        return out

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``sum_n g_n @ columns_n.T``: ``(G*O, C, *kernel)``, each product taken as ``columns_n @ g_n.T``
        (the BLAS ran that 15-20% faster on U-Net's layer), the sum transposed once at the end. On the pool
        (:func:`_by_samples`) each range of samples sums its own products, and the ranges' sums are added in
        order, so that the result does not depend on which thread ran what."""
        groups, o = spec.groups, spec.out_channels_per_group
        rows = grad_output.reshape(spec.batch, groups, o, prod(spec.output_size))  # (N, G, O, P)
        padded = pad(x, spec.padding, spec.padding_mode)
        sums: dict[int, np.ndarray] = {}  # by first sample

        def weight_grad(first: int, end: int, buffer: np.ndarray) -> None:
            total = np.zeros((groups, spec.terms, o), dtype=x.dtype)
            product = np.empty_like(total)
            for n, columns in _sample_columns(padded, spec, first, end, buffer):
                total += np.matmul(columns, rows[n].transpose(0, 2, 1), out=product)  # (G, C*K, O)
            sums[first] = total

        _by_samples(spec, x.dtype, weight_grad)
        ranges = sorted(sums)
        total = sums[ranges[0]]
        for first in ranges[1:]:
            total += sums[first]
        return np.ascontiguousarray(total.transpose(0, 2, 1)).reshape(spec.weight_shape)

    def input_grad(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``filters.T @ g_n`` per sample, each column's value copied onto the cell its tap read:
        ``(N, C_in, *input)``."""
        groups, o, taps = spec.groups, spec.out_channels_per_group, spec.terms
        transposed = kernel.reshape(groups, o, taps).transpose(0, 2, 1)  # (G, C*K, O)
        rows = grad_output.reshape(spec.batch, groups, o, prod(spec.output_size))  # (N, G, O, P)
        has_padding = not all(low == high == 0 for low, high in spec.padding)
        grad = np.empty((spec.batch, spec.in_channels, *spec.padded_size), dtype=grad_output.dtype)
        put = _cells_writer(grad, spec)

        def input_grad(first: int, end: int, columns: np.ndarray) -> None:
            for n in range(first, end):
                put(n, np.matmul(transposed, rows[n], out=columns))

        _by_samples(spec, grad_output.dtype, input_grad)
        if has_padding:
            return pad_adjoint(grad, spec.padding, spec.padding_mode, spec.input_size)
        return grad


def _by_samples(spec: ConvSpec, dtype: np.dtype, run: Callable[[int, int, np.ndarray], None]) -> None:
    """``run(first, end, columns)`` over the samples: on the calling thread for the whole batch, its copies between
    the products the BLAS's threads share; or, where the pool takes whole samples
    (:func:`._pooled.pools_whole_samples`), one range a thread, each with its own columns buffer, its products on
    one BLAS thread: the copies then run two at a time, beside the other thread's products (U-Net's 2x2 stride-2
    layer, two threads: docs/compiled.md, "space_to_depth on the pool (session 27)")."""
    shape = (spec.groups, spec.terms, prod(spec.output_size))
    if not pools_whole_samples(spec, dtype):
        run(0, spec.batch, np.empty(shape, dtype=dtype))
        return

    def make_worker() -> Callable[[tuple[int, int, int, int]], None]:
        columns = reused_empty(shape, dtype, "space_to_depth columns")  # kept: no page faults a call
        return lambda job: run(job[0], job[1], columns)

    run_pooled(sample_jobs(spec), make_worker, spec)


def _columns_bytes(spec: ConvSpec, itemsize: int) -> int:
    """One sample's columns: ``C_in * K * P`` values."""
    return spec.in_channels * prod(spec.kernel_size) * prod(spec.output_size) * itemsize


def _layout(spec: ConvSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The columns' shape as the kernels take them, ``(C, KD, KH, KW, A, B, E)``, and the three strides."""
    return (spec.in_channels, *steps3(spec.kernel_size), *steps3(spec.output_size)), steps3(spec.stride)


def _sample_columns(padded: np.ndarray, spec: ConvSpec, first: int, end: int, buffer: np.ndarray):
    """Yield ``(n, columns)`` for samples ``first:end``: ``columns`` ``(G, C*K, P)``, in ``buffer`` each time
    (read it before the next)."""
    if _copy_missing(spec, padded.dtype) is not None:
        windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
        rank = spec.rank
        for n in range(first, end):
            view = windows[n].transpose(0, *range(1 + rank, 1 + 2 * rank), *range(1, 1 + rank))  # (G*C, *k, *out)
            buffer.reshape(view.shape)[...] = view
            yield n, buffer
        return
    source = as_kernels_take(padded).reshape(shape3(padded.shape))  # (N, C, D, H, W)
    shape, strides = _layout(spec)
    columns = buffer.reshape(shape)
    move = kernels("space_to_depth").move_windows
    for n in range(first, end):
        move(source, columns, n, 0, spec.in_channels, *strides, True, False)  # on this thread (see the module's notes)
        yield n, buffer


def _cells_writer(grad: np.ndarray, spec: ConvSpec) -> Callable[[int, np.ndarray], None]:
    """``put(n, columns)``: sample ``n``'s columns ``(G, C*K, P)`` copied onto the cells of ``grad`` (``(N, C,
    *padded)``) their taps read, every other cell of the sample zero."""
    covered = all(k == s and size == out * s for k, s, size, out in
                  zip(spec.kernel_size, spec.stride, grad.shape[2:], spec.output_size))
    if _copy_missing(spec, grad.dtype) is not None:
        def put_numpy(n: int, columns: np.ndarray) -> None:
            if not covered:
                grad[n] = 0
            by_tap = columns.reshape(grad.shape[1], *spec.kernel_size, *spec.output_size)  # (G*C, *k, *out)
            for tap in np.ndindex(*spec.kernel_size):
                cells = tuple(slice(j, j + (out - 1) * s + 1, s) for j, s, out in
                              zip(tap, spec.stride, spec.output_size))
                grad[(n, slice(None), *cells)] = by_tap[(slice(None), *tap)]
        return put_numpy
    target = grad.reshape(shape3(grad.shape))  # (N, C, D, H, W), a view: grad is new and contiguous
    shape, strides = _layout(spec)
    move = kernels("space_to_depth").move_windows

    def put(n: int, columns: np.ndarray) -> None:
        move(target, columns.reshape(shape), n, 0, spec.in_channels, *strides, False, covered)
    return put
