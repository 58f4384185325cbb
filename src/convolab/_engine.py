"""The convolution engine: every pass on a frozen spec, run as the planner says.

The planner (:mod:`convolab.planner`) decides which algorithm runs the forward
and how each gradient runs (:class:`~convolab.planner.Plan`); this module asks
it and runs what it says: the forward through the algorithms' interface
(:mod:`convolab.algorithms`), the gradients through an algorithm's own pass or
through the formulations that reduce them to other convolutions ("full",
"scatter", "conv"), derived below beside the forward.

This is the one place that decides the kernel's orientation: deep learning's
"convolution" is a cross-correlation (the kernel read as stored); ``flip=True``
is the mathematical convolution, the kernel reversed on every spatial axis.
Everything that convolves (the public ops, the gradients, transposed
convolution, the SciPy-style functions) comes through :func:`oriented_kernel`.

Notation for the derivations, per spatial dimension: ``x_p`` the padded input,
``k`` the oriented kernel, ``s`` stride, ``d`` dilation, ``g`` grad_output::

    y[n, o, p] = sum_{c in group(o), j} x_p[n, c, p*s + j*d] * k[o, c, j]
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from math import prod

import numpy as np

from ._dtypes import all_finite, check_exact_range, compute_dtype, result_dtype
from ._errors import fail
from ._grad_problems import full_problem, phase_problems
from ._settings import current_workspace_limit
from ._window import CompactReads, add_windows, check_fits_in_memory, compact_reads, pad, pad_adjoint, reverse_spatial
from .algorithms import (ALGORITHMS, CACHE_BLOCK_BYTES, Winograd, add_bias, check_algorithm_name,
                         on_registry_change, select_algorithm)
from .algorithms._columns import (add_batch_inner_columns, add_columns, batch_last, compiled_batch_inner,
                                 sharing_batch_last)
from .algorithms._input_grad import channels_swapped
from .algorithms._scratch import reused_empty
from .algorithms._threads import small_matmul
from .algorithms._pooled import pools_whole_samples, run_pooled, sample_jobs
from .algorithms.gemm import _per_sample_products_win
from .planner import (PassPlan, measured_choice, pass_for, plan_for, plan_for_arrays, values_finite,
                      winograd_output_vouches)
from .spec import ConvSpec, conv_spec

__all__ = ["oriented_kernel", "frozen_spec", "conv_forward", "conv_input_grad", "conv_weight_grad", "compact_problem",
           "describe_geometry", "INPUT_GRAD_ALGORITHMS", "WEIGHT_GRAD_ALGORITHMS"]

#: What the input gradient's ``algorithm`` accepts; "auto" runs the plan's pass
#: (:attr:`convolab.planner.Plan.input_grad`).
INPUT_GRAD_ALGORITHMS = ("auto", "scatter", "full", "phases")
#: What the weight gradient's ``algorithm`` accepts; "auto" runs the plan's pass
#: (:attr:`convolab.planner.Plan.weight_grad`).
WEIGHT_GRAD_ALGORITHMS = ("auto", "im2col", "conv", "gemm", "folded", "row_shifts")


def oriented_kernel(weight: np.ndarray, flip: bool) -> np.ndarray:
    """The kernel as the sliding window reads it: reversed on every spatial axis iff ``flip``.

    Reversal is its own inverse, so the same function maps a gradient with
    respect to the oriented kernel back to one with respect to ``weight``.
    """
    return reverse_spatial(weight, weight.ndim - 2) if flip else weight


#: How many distinct argument lists :func:`frozen_spec` remembers (a network has a few per layer).
SPEC_CACHE_SIZE = 4096
_specs: dict[tuple[object, tuple[type, ...]], ConvSpec] = {}


def frozen_spec(input_shape: tuple[int, ...], weight_shape: tuple[int, ...], *, stride: object = 1,
                padding: object = 0, dilation: object = 1, groups: object = 1, padding_mode: object = "zeros",
                flip: object = False, op: str = "conv", rank: int | None = None) -> ConvSpec:
    """:func:`convolab.spec.conv_spec`, remembered for arguments seen before.

    A layer calls with the same arguments at every step, and checking them costs
    more than a small layer's arithmetic. Only arguments built from plain ints,
    bools, strings, None and tuples are remembered, keyed by their values and the
    types of those (which, unlike ``==``, tell ``True`` from ``1``:
    :func:`_plain_key`); anything else, and any argument list that is refused,
    goes through ``conv_spec`` every time, so errors are unchanged.
    """
    key = _plain_key((input_shape, weight_shape, stride, padding, dilation, groups, padding_mode, flip, op, rank))
    spec = _specs.get(key) if key is not None else None
    if spec is None:
        spec = conv_spec(input_shape, weight_shape, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, padding_mode=padding_mode, flip=flip, op=op, rank=rank)
        if key is not None:
            if len(_specs) >= SPEC_CACHE_SIZE:
                _specs.clear()
            _specs[key] = spec
    return spec


#: The leaf types a remembered argument list may hold (in tuples, nested), see :func:`_plain_key`.
_PLAIN_TYPES = frozenset({int, str, bool, type(None)})


def _plain_key(value: object) -> tuple[object, tuple[type, ...]] | None:
    """``value`` with the types of its leaves, if it is an int, bool, str or None, or a tuple of such values
    (nested), else None.

    Equal keys mean equal arguments: the types tell ``True`` from ``1``, which compare and hash alike. A loop
    over a stack rather than a call per value: a layer's arguments hold a score of them, checked on every call.
    """
    kinds = []
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is tuple:
            pending.extend(item)  # type: ignore[arg-type]
        elif kind in _PLAIN_TYPES:
            kinds.append(kind)
        else:
            return None
    return value, tuple(kinds)


@lru_cache(maxsize=4096)
def _planned_problem(spec: ConvSpec) -> tuple[ConvSpec, tuple[ConvSpec, CompactReads] | None]:
    """:func:`_bounded_steps` and then :func:`compact_problem` for "auto" (which no algorithm's refusal changes):
    pure functions of the spec, remembered for repeated calls."""
    spec = _bounded_steps(spec)
    return spec, compact_problem(spec, "auto", np.dtype(np.float64))


def _bounded_and_compact(spec: ConvSpec, algorithm: str, dtype: np.dtype,
                         ) -> tuple[ConvSpec, tuple[ConvSpec, CompactReads] | None]:
    """The spec with bounded steps, and its compact problem (or None), for ``algorithm`` and ``dtype``."""
    if algorithm in ALGORITHMS:  # a named algorithm's refusal decides the compact problem's taps
        spec = _bounded_steps(spec)
        return spec, compact_problem(spec, algorithm, dtype)
    return _planned_problem(spec)


on_registry_change(_planned_problem.cache_clear)


def conv_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    spec: ConvSpec,
    algorithm: str = "auto",
) -> np.ndarray:
    """Convolve a batched ``x`` ``(N, C_in, *spatial)`` as ``spec`` says.

    Inputs are never modified: casting and padding make new arrays, and the
    window views are read-only.
    """
    accumulate = compute_dtype(x.dtype)
    check_algorithm_name(spec.op, algorithm)
    if algorithm not in ("auto", "measure"):
        select_algorithm(algorithm, spec, x.dtype)  # refuse before any work, even for an empty batch
    returned = result_dtype(x.dtype)
    _check_result_fits(spec, spec.output_shape, returned, "output")
    if min(spec.output_shape) == 0:  # empty batch or no output channels: nothing to compute
        return np.zeros(spec.output_shape, dtype=returned)
    check_exact_range(spec.op, ("input", "weight"), x, weight, spec.terms,
                      offset=bias)
    spec, compact = _bounded_and_compact(spec, algorithm, x.dtype)
    if compact is not None:  # only the cells the windows read, never the whole padded input
        x, spec = compact[1].gather(x), compact[0]
    kernel = oriented_kernel(weight.astype(accumulate, copy=False), spec.flip)
    bias = None if bias is None else bias.astype(accumulate, copy=False)
    out = _run_forward(algorithm, x.astype(accumulate, copy=False), kernel, spec, np.dtype(x.dtype), bias)
    return out.astype(returned, copy=False)


def _run_forward(name: str, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec, dtype: np.dtype,
                 bias: np.ndarray | None = None) -> np.ndarray:
    """The forward of ``name``: the plan's algorithm for "auto", the timed winner for "measure", else ``name``;
    plus ``bias`` (in the accumulation dtype, or None).

    ``x`` is the input before padding, in the accumulation dtype; ``dtype`` the
    caller's. An algorithm pads as it needs (depthwise block by block); the
    data are looked at only where the plan's pick mixes outputs, which their
    values can refuse (:func:`~convolab.planner.plan_for_arrays`). The plan's
    algorithm adds the bias itself where it has a cheaper place for it
    (:meth:`~convolab.algorithms.Algorithm.run_unpadded_with_bias`); elsewhere it is a pass over the output.
    """
    if name == "auto":
        algorithm = ALGORITHMS[plan_for(spec, dtype).algorithm]
        if not algorithm.mixes_outputs:
            return algorithm.run_unpadded_with_bias(x, kernel, spec, bias)
    return add_bias(_run_other_forward(name, x, kernel, spec, dtype), bias, spec)  # the output is ours to modify


def _run_other_forward(name: str, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec, dtype: np.dtype
                       ) -> np.ndarray:
    """:func:`_run_forward` without the bias, where the plan's algorithm is not simply run: "measure", a named
    algorithm, or a plan whose pick mixes outputs (looked at again with the data)."""
    if name == "measure":
        padded = pad(x, spec.padding, spec.padding_mode)
        return ALGORITHMS[measured_choice(padded, kernel, spec, dtype)].run(padded, kernel, spec)
    if name != "auto":
        return ALGORITHMS[name].run_unpadded(x, kernel, spec)
    algorithm = ALGORITHMS[plan_for(spec, dtype).algorithm]
    if isinstance(algorithm, Winograd) and spec.padding_mode == "zeros":
        # The tiles' rule reads the data's peak and the median of the nonzero values, which zero padding leaves as
        # they are: no padded copy to look at (with the padded run, 3 of 14 ms on ResNet-18's 56x56 layer).
        vouching = winograd_output_vouches(spec)  # the output is checked for an inf or NaN, not the larger kernel
        chosen = ALGORITHMS[plan_for_arrays(spec, dtype, x, None if vouching else kernel).algorithm]
        if vouching and isinstance(chosen, Winograd):
            out = chosen.run_unpadded(x, kernel, spec)
            if values_finite(out):
                return out
            chosen = ALGORITHMS[plan_for_arrays(spec, dtype, x, kernel).algorithm]  # the kernel looked at after all
            if isinstance(chosen, Winograd):  # a finite kernel: the output's inf or NaN is the data's own overflow
                return out
        if isinstance(chosen, Winograd) or not chosen.mixes_outputs:
            return chosen.run_unpadded(x, kernel, spec)
    padded = pad(x, spec.padding, spec.padding_mode)
    return ALGORITHMS[plan_for_arrays(spec, dtype, padded, kernel).algorithm].run(padded, kernel, spec)


def _planned_pass(name: str, spec: ConvSpec, dtype: np.dtype, requested: str, operand: np.ndarray) -> PassPlan:
    """The planner's gradient pass ``name`` for ``requested``, for the data of ``operand`` (the one the pass
    multiplies by zeros that are not data), looked at only where its finiteness would change the pass."""
    chosen = pass_for(name, spec, dtype, requested)
    if chosen.finite_matters and not all_finite(operand):
        chosen = pass_for(name, spec, dtype, requested, finite=False)
    return chosen


def _check_algorithm(op: str, algorithm: object, choices: tuple[str, ...]) -> str:
    if not isinstance(algorithm, str) or algorithm not in choices:
        fail(ValueError, op, "algorithm", repr(algorithm), f"must be one of {', '.join(map(repr, choices))}")
    return algorithm


def _bounded_steps(spec: ConvSpec) -> ConvSpec:
    """``spec`` with a stride longer than the padded input (or a one-tap dilation) cut to that length.

    Such a stride leaves one window per axis, and a single tap has no spacing,
    so neither is ever stepped; but the algorithms' strided views multiply them
    into byte strides, which overflow for ``stride=10**18``. A normal layer's
    stride and dilation are within the padded input: the same spec comes back.
    """
    stride = tuple(min(s, size) for s, size in zip(spec.stride, spec.padded_size))
    dilation = tuple(d if k > 1 else min(d, size) for d, k, size in zip(spec.dilation, spec.kernel_size,
                                                                        spec.padded_size))
    if stride == spec.stride and dilation == spec.dilation:
        return spec
    return replace(spec, stride=stride, dilation=dilation)


def compact_problem(spec: ConvSpec, algorithm: str, dtype: np.dtype) -> tuple[ConvSpec, CompactReads] | None:
    """The problem on the cells its windows read (see :func:`convolab._window.compact_reads`), or None.

    Used where padding (or a stride or dilation far past the kernel) would make
    the padded input much larger than the input and than what the windows
    read: every pass then runs unpadded on the gathered cells, with the compact
    stride and dilation (here, and in :mod:`convolab.chunked`'s blocks). An algorithm named by the caller must accept the
    compact problem too; where it would not (folded under a compact stride
    along the last axis), the taps keep their dilation, which any algorithm
    that accepted the padded problem accepts.
    """
    reads = compact_reads(spec.input_size, spec.padding, spec.padding_mode, spec.kernel_size, spec.stride,
                          spec.dilation)
    if reads is None:
        return None
    compact = replace(spec, input_size=reads.input_size, stride=reads.stride, dilation=reads.dilation,
                      padding=((0, 0),) * spec.rank, padding_mode="zeros")
    if algorithm in ALGORITHMS and ALGORITHMS[algorithm].why_not(compact, np.dtype(dtype)) is not None:
        reads = compact_reads(spec.input_size, spec.padding, spec.padding_mode, spec.kernel_size, spec.stride,
                              spec.dilation, unfold_taps=False)
        if reads is None:
            return None
        compact = replace(compact, input_size=reads.input_size, stride=reads.stride, dilation=reads.dilation)
    return compact, reads


def _check_result_fits(spec: ConvSpec, shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    """A result larger than memory is refused before any work, naming the geometry that sets its size."""
    check_fits_in_memory(spec.op, what, shape, dtype, lambda: describe_geometry(spec))


def describe_geometry(spec: ConvSpec) -> str:
    """The arguments that set a convolution's sizes, for a message about them."""
    return (f"padding={spec.padding}, stride={spec.stride} and dilation={spec.dilation} for an input of spatial size "
            f"{spec.input_size} and a kernel of {spec.kernel_size}")


def conv_input_grad(
    grad_output: np.ndarray,
    weight: np.ndarray,
    spec: ConvSpec,
    algorithm: str = "auto",
) -> np.ndarray:
    """Gradient of the convolution with respect to its (batched) input.

    Differentiating ``y`` above, each padded input cell collects every output
    that read it, times the tap that read it::

        dx_p[n, c, q] = sum_{o, p, j : p*s + j*d = q} g[n, o, p] * k[o, c, j]

    ``"scatter"`` computes exactly that: one matrix product gives, for every
    output position, ``g`` times the filter (the window's worth of gradient),
    and :func:`add_windows` adds each window back where it was read (under
    "auto", where the plan says so, a compiled col2im does: the same sums in the
    same order, in one pass, zero padding's cells dropped as it goes).

    ``"full"`` rewrites the sum over ``p*s + j*d = q``: spread ``g`` with ``s-1``
    zeros between samples (``g_s``), then ``dx_p[q] = sum_j g_s[q - j*d] k[j]``, a
    full correlation of ``g_s`` with the kernel reversed (rotated 180° in 2-d),
    dilation ``d``, input and output channels swapped.

    ``"phases"`` splits the cells by their stride phase: on phase ``a`` (the
    cells ``a + m*s``) only the taps with ``j*d - low = a (mod s)`` land, each at
    a constant shift, so the phase is a stride-1 correlation of ``g`` with that
    sub-kernel reversed (:func:`~convolab._grad_problems.phase_problems`): the
    scatter's products, run by the planner's forward, and no add-back; its
    padding zeros meet the weight, as the full correlation's do.

    All end with the transpose of the padding, which drops the zero cells' gradient or folds a
    reflected/replicated/wrapped cell's gradient back onto its source.
    Samples past the last window (stride not dividing the input) get zero.
    """
    algorithm = _check_algorithm(spec.op, algorithm, INPUT_GRAD_ALGORITHMS)
    accumulate = compute_dtype(weight.dtype)
    returned = result_dtype(weight.dtype)
    # A transposed convolution is this gradient, used as an op: its result is that op's output.
    _check_result_fits(spec, spec.input_shape, returned,
                       "output" if spec.op.startswith("conv_transpose") else "input gradient")
    if min(spec.input_shape) == 0:
        return np.zeros(spec.input_shape, dtype=returned)
    spec, compact = _bounded_and_compact(spec, algorithm, weight.dtype)
    if compact is not None:  # the gradient on the cells the windows read, added back onto the input
        return compact[1].scatter(conv_input_grad(grad_output, weight, compact[0], algorithm), spec.input_size)
    check_exact_range(spec.op, ("grad_output", "weight"), grad_output, weight,
                      spec.out_channels_per_group * prod(spec.kernel_size))
    grad_output = grad_output.astype(accumulate, copy=False)
    kernel = oriented_kernel(weight.astype(accumulate, copy=False), spec.flip)
    chosen = _planned_pass("input_grad", spec, np.dtype(weight.dtype), algorithm, kernel)
    if chosen.method == "scatter" and dict(chosen.options).get("col2im") == "compiled":
        return _input_grad_scatter(grad_output, kernel, spec, compiled=True).astype(returned, copy=False)
    if chosen.method == "scatter":
        grad_padded = _input_grad_scatter(grad_output, kernel, spec)
    elif chosen.method == "phases":
        grad = _input_grad_phases(grad_output, kernel, spec)
        if spec.padding_mode == "zeros":
            return grad.astype(returned, copy=False)
        grad_padded = grad
    elif chosen.method == "full":
        grad_padded, on_input = _input_grad_full(grad_output, weight.astype(accumulate, copy=False), spec)
        if on_input:
            return grad_padded.astype(returned, copy=False)
    else:  # an algorithm's own pass
        grad = ALGORITHMS[chosen.method].input_grad(grad_output, kernel, spec, **dict(chosen.options))
        return grad.astype(returned, copy=False)
    return pad_adjoint(grad_padded, spec.padding, spec.padding_mode, spec.input_size).astype(returned, copy=False)


#: Below this many output positions per sample, the "scatter" takes one product per group over a block of
#: samples rather than one per sample: products as narrow as ResNet's 7x7 outputs ran at 60-65% of the wide
#: one's rate, 14x14 and 16x16 at 91-97% (grad_output's block copied into the wide one's order included),
#: 28x28 2% slower, and a decoder's 64x64 (64 filters of 48 taps: the copy as large as the product) 31%
#: slower (one thread).
SCATTER_BATCH_WIDE_POSITIONS = 512


def _input_grad_scatter(grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec, compiled: bool = False,
                        ) -> np.ndarray:
    """The "scatter" formulation: per block of samples, one product gives every window's gradient, and the
    windows are added back where they were read: ``(N, G*C, *padded)``, or with ``compiled`` (the compiled
    col2im, :func:`convolab.algorithms._columns.add_columns`, the same sums in the same order) the input's
    gradient ``(N, G*C, *input)``, the padding's transpose done. Small images in large batches with zero padding
    take the product and the add-back with the batch innermost
    (:func:`~convolab.algorithms._columns.compiled_batch_inner`): the add-back's sums are the same, but the
    BLAS may round the product over those columns otherwise."""
    rank, groups = spec.rank, spec.groups
    taps = prod(spec.kernel_size)
    # (G, C*K, O); the explicit C*K also holds with no filters (O = 0), where -1 cannot be inferred
    filters = kernel.reshape(groups, spec.out_channels_per_group, spec.in_channels_per_group * taps).transpose(0, 2, 1)
    # zero padding's cells dropped by the compiled add-back itself; other modes folded back after it
    cropped = compiled and spec.padding_mode == "zeros"
    size = spec.input_size if cropped else spec.padded_size
    grad = np.empty((spec.batch, spec.in_channels, *size), dtype=grad_output.dtype)

    def finished(grad: np.ndarray) -> np.ndarray:  # the compiled add-back returns the input's gradient
        return pad_adjoint(grad, spec.padding, spec.padding_mode, spec.input_size) if compiled and not cropped \
            else grad

    if not spec.out_channels:  # no filter reads the input, so its gradient is zeros (and the products are empty)
        grad.fill(0)
        return finished(grad)
    if all(k == 1 for k in spec.kernel_size):  # windows of one cell never overlap: the add-back is a placement
        return finished(_placed_pointwise_grads(grad_output, filters, grad, spec, cropped))
    if cropped and compiled_batch_inner(spec, grad_output.itemsize):  # small images, many of them: runs of N values
        return add_batch_inner_columns(small_matmul(filters, batch_last(grad_output, spec)), grad, spec)
    samples_inside = prod(spec.output_size) < SCATTER_BATCH_WIDE_POSITIONS
    # Samples per block: the window gradients (and where one product spans the block, grad_output's block
    # copied into its order) stay cache-sized, as they are added back while still cached, and never exceed
    # the workspace limit.
    per_sample = (spec.in_channels * taps + samples_inside * spec.out_channels) * prod(spec.output_size)
    # On the pool, where gemm's 1x1 products would run there and every thread gets whole samples, each thread's
    # range of samples: its products on one BLAS thread and then its add-back, while still in its core's cache.
    # The products otherwise ran on OpenBLAS's threads and the add-back on the pool, each waiting for the other:
    # DCGAN 256 -> 128's up-convolution (this pass) 10.3 ms p50, 18-19 p90 -> 9.2, 9.4; the dilated 1-d layer's
    # input gradient 23-45 -> 17 (docs/compiled.md, "The scatter on the pool (session 27)"). Each thread's blocks
    # take their share of the workspace limit.
    jobs = sample_jobs(spec) if compiled and pools_whole_samples(spec, grad.dtype) else None  # whole samples a job
    budget = min(CACHE_BLOCK_BYTES, current_workspace_limit() // (len(jobs) if jobs else 1))
    samples = max(1, budget // max(per_sample * grad_output.itemsize, 1))
    samples = max(1, min(samples, max(n1 - n0 for n0, n1, _, _ in jobs) if jobs else spec.batch))
    block_size = spec.in_channels * taps * prod(spec.output_size)  # one sample's window gradients

    def add_back(first_sample: int, end_sample: int, block_grads: np.ndarray) -> None:
        """Samples ``first_sample:end_sample`` in blocks of ``samples``, each block's window gradients in
        ``block_grads``; in a pool job (``jobs``), the compiled add-back on the job's thread alone."""
        for n0 in range(first_sample, end_sample, samples):
            n1 = min(end_sample, n0 + samples)
            g = grad_output[n0:n1].reshape(n1 - n0, groups, spec.out_channels_per_group, -1)  # (nb, G, O, P)
            block = block_grads[:(n1 - n0) * block_size]
            if samples_inside:  # one product per group over the block, g's block copied into its order
                g = g.transpose(1, 2, 0, 3).reshape(groups, spec.out_channels_per_group, -1)  # (G, O, nb*P)
                # (G, C*K, nb*P): each window's g times the filter
                window_grads = small_matmul(filters, g, out=block.reshape(groups, filters.shape[1], -1))
                window_grads = window_grads.reshape(spec.in_channels, *spec.kernel_size, n1 - n0, *spec.output_size)
                window_axes = (rank + 1, 0, *range(2 + rank, 2 + 2 * rank), *range(1, 1 + rank))
            else:
                window_grads = small_matmul(filters, g, out=block.reshape(n1 - n0, groups, filters.shape[1], -1))
                window_grads = window_grads.reshape(n1 - n0, spec.in_channels, *spec.kernel_size, *spec.output_size)
                window_axes = (0, 1, *range(2 + rank, 2 + 2 * rank), *range(2, 2 + rank))
            if compiled:
                add_columns(window_grads, grad[n0:n1], spec.stride, spec.dilation,
                            [low for low, _ in spec.padding] if cropped else [0] * rank, samples_inside,
                            one_thread=jobs is not None)
                continue
            window_grads = window_grads.transpose(window_axes)  # (nb, G*C, *out, *kernel), a view
            add_windows(window_grads, spec.padded_size, spec.stride, spec.dilation, out=grad[n0:n1])

    if jobs:
        def make_worker():
            # kept per thread, as gemm's pooled 1x1 passes keep theirs: a fresh array's pages would fault every call
            block_grads = reused_empty((samples * block_size,), grad.dtype, "scatter window grads")
            return lambda job: add_back(job[0], job[1], block_grads)

        run_pooled(jobs, make_worker, spec)
        return finished(grad)
    # One buffer for every block's window gradients: a new array per block is fresh memory from the system each
    # time, and the product's first touch of its pages cost a quarter of the pass (DCGAN 256 -> 128's 2.4 MB a
    # sample, 3 per block, one thread: 20.5 ms with a new array per block, 15.8 with this buffer).
    # The products through small_matmul: a small one kept on the calling thread, where two BLAS threads would
    # wake a worker that spins ~50 ms after it (the digits CNN's second layer, (144, 32) @ (32, 512): 80 us of
    # CPU on two threads for 40 on one, every training step).
    add_back(0, spec.batch, np.empty(samples * block_size, dtype=grad_output.dtype))
    return finished(grad)  # (N, G*C, *padded), or with compiled (N, G*C, *input)


def _placed_pointwise_grads(grad_output: np.ndarray, filters: np.ndarray, grad: np.ndarray, spec: ConvSpec,
                            cropped: bool) -> np.ndarray:
    """The "scatter" of a 1x1 kernel: each window reads one cell, and no two windows share one, so every window's
    gradient (one product for the batch, ``(G, C, O) @ (N, G, O, P)``) is placed in its cell of ``grad``, zeroed
    first (the cells no window reads, between the strides, get nothing). ``grad`` is the input's size where
    ``cropped`` (a window in zero padding is dropped), else the padded size. The same sums as the add-back.

    ResNet-18's stride-2 downsamples, two threads (session 22, ms, median of 100): layer4.0 0.75 against the
    compiled add-back's 1.23-1.85, layer3.0 0.91-0.93 against 0.94-1.21, layer2.0 0.95-0.96 against 1.29-1.60
    (docs/compiled.md, "Strided 1x1 layers (session 22)").

    Where gemm's 1x1 products run on the pool and every thread has whole samples
    (:func:`~convolab.algorithms._pooled.pools_whole_samples`), and a sample's product is wide enough to run well
    alone (:func:`~convolab.algorithms.gemm._per_sample_products_win`), so does this: each of gemm's jobs (a
    contiguous range of samples) multiplies, zeroes and places its own samples on one BLAS thread. ResNet-18 layer3.0's
    downsample measured 0.81 ms so against 0.92; layer4.0's (7x7 outputs, 512 filters) 0.89 against 0.77, so it
    stays on the BLAS's threads (docs/compiled.md, "The strided 1x1 input gradient on the pool").
    """
    if not (pools_whole_samples(spec, grad.dtype) and _per_sample_products_win(spec)):
        _place_pointwise_grads(grad_output, filters, grad, spec, cropped, 0, spec.batch)
        return grad
    jobs = sample_jobs(spec)

    def make_worker():
        def run(job: tuple[int, int, int, int]) -> None:
            _place_pointwise_grads(grad_output, filters, grad, spec, cropped, job[0], job[1])
        return run

    run_pooled(jobs, make_worker, spec)
    return grad


def _place_pointwise_grads(grad_output: np.ndarray, filters: np.ndarray, grad: np.ndarray, spec: ConvSpec,
                           cropped: bool, first_sample: int, end_sample: int) -> None:
    """:func:`_placed_pointwise_grads` for samples ``first_sample:end_sample``: their products, on the calling
    thread, and their part of ``grad`` zeroed and placed."""
    samples, positions = end_sample - first_sample, prod(spec.output_size)
    g = grad_output[first_sample:end_sample].reshape(samples, spec.groups, spec.out_channels_per_group, positions)
    # the products in the thread's kept scratch, as gemm's 1x1 forward keeps its temporaries: fresh, with the
    # gradient beside them (a single 56x56 sample: 0.2 + 0.8 MB), glibc gave the heap's top back after each call
    # (260 page faults a call, 0.56 ms against 0.17)
    window_grads = small_matmul(filters, g, out=reused_empty(
        (samples, spec.groups, spec.in_channels_per_group, positions), grad.dtype, "pointwise window grads")
    ).reshape(samples, spec.in_channels, *spec.output_size)  # (samples, G*C, *out)
    placed = grad[first_sample:end_sample]
    placed.fill(0)
    lows = [low if cropped else 0 for low, _ in spec.padding]
    outputs, cells = [], []
    for size, out, s, low in zip(grad.shape[2:], spec.output_size, spec.stride, lows):
        first = -(-low // s)  # the first output whose cell o*s - low lies inside
        inside = range(first * s - low, size, s)[:max(out - first, 0)]  # the cells of outputs first, first+1, ...
        outputs.append(slice(first, first + len(inside)))
        cells.append(slice(inside.start, inside.stop, s))
    placed[(Ellipsis, *cells)] = window_grads[(Ellipsis, *outputs)]


def _input_grad_phases(grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The "phases" formulation: each stride phase of the input's gradient a stride-1 forward convolution of
    grad_output with the taps that land on it (:func:`~convolab._grad_problems.phase_problems`), run by the planner's
    pick and written into its phase's cells: ``(N, G*C, *input)`` for zero padding, else ``(N, G*C,
    *padded)``."""
    size = spec.input_size if spec.padding_mode == "zeros" else spec.padded_size
    grad = np.empty((spec.batch, spec.in_channels, *size), dtype=grad_output.dtype)
    swapped = channels_swapped(kernel, spec)  # as for the full correlation
    for phase in phase_problems(spec):
        cells = (Ellipsis, *(slice(r, None, s) for r, s in zip(phase.residue, spec.stride)))
        if phase.spec is None or spec.out_channels_per_group == 0:
            grad[cells] = 0  # no tap lands on this phase
            continue
        # a phase's taps are evenly spaced: the sub-kernel is a view (a gather of them cost 3 ms a phase on DCGAN)
        sub_kernel = swapped[(Ellipsis, *(slice(taps[0], taps[-1] + 1, taps[1] - taps[0] if len(taps) > 1 else 1)
                                          for taps in phase.taps))]
        reads = grad_output[(Ellipsis, *(slice(start, stop) for start, stop in phase.reads))]
        grad[cells] = conv_forward(reads, sub_kernel, None, phase.spec)  # (N, G*C, *cells)
    return grad


def _input_grad_full(grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec) -> tuple[np.ndarray, bool]:
    """The full-correlation input gradient, and whether it is already on the input (not the padded input).

    With zero padding the padding cells' gradient is dropped anyway, so the
    correlation's own padding is reduced by the forward padding and only the
    input's cells are computed (when that leaves no negative padding).
    """
    full_spec, on_input, spread_size = full_problem(spec)
    # g_s: grad_output with s-1 zeros between samples, (P-1)*s + 1 long (g itself at stride 1)
    if spread_size is None:
        spread = grad_output
    else:
        spread = np.zeros((spec.batch, spec.out_channels, *spread_size), dtype=grad_output.dtype)
        spread[(Ellipsis, *(slice(None, None, s) for s in spec.stride))] = grad_output
    swapped = channels_swapped(weight, spec)
    return conv_forward(spread, swapped, None, full_spec), on_input  # (N, C_in, *input or *padded)


def conv_grads(x: np.ndarray, grad_output: np.ndarray, weight: np.ndarray, spec: ConvSpec,
               ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`conv_input_grad` and :func:`conv_weight_grad` of one ``grad_output`` ("auto"), as a pullback asks
    for both: where both take it with the batch innermost (small images in large batches), its copy is made
    once (:func:`~convolab.algorithms._columns.sharing_batch_last`)."""
    with sharing_batch_last():
        return conv_input_grad(grad_output, weight, spec), conv_weight_grad(x, grad_output, spec)


def conv_weight_grad(
    x: np.ndarray,
    grad_output: np.ndarray,
    spec: ConvSpec,
    algorithm: str = "auto",
) -> np.ndarray:
    """Gradient of the convolution with respect to its weight.

    Differentiating ``y`` with respect to ``k``::

        dk[o, c, j] = sum_{n, p} g[n, o, p] * x_p[n, c, p*s + j*d]

    ``"im2col"``: the unrolled input (one row per window) times ``g`` as a
    matrix, per group; ``"gemm"`` the same product in the forward Gemm's blocked,
    contiguous layout (bounded workspace); ``"folded"`` the forward's fold in
    reverse; ``"row_shifts"`` one product per leading tap over shifted rows
    (these are the algorithms' own passes: :mod:`convolab.algorithms`).
    ``"conv"``: the same sum is a convolution of ``x_p`` with
    ``g`` as the kernel, the batch axis playing the channels' part, stride ``d``
    and dilation ``s`` (their roles swap); its output may extend past ``K`` where
    the stride leaves input unread, and is cropped. With ``flip=True`` the result
    is reversed back (``oriented_kernel`` again).
    """
    algorithm = _check_algorithm(spec.op, algorithm, WEIGHT_GRAD_ALGORITHMS)
    if algorithm in ("folded", "row_shifts"):
        select_algorithm(algorithm, spec, x.dtype)  # folded: a stride along the last axis or a 1-tap one;
        # row_shifts: one axis, or a stride along another
    accumulate = compute_dtype(x.dtype)
    returned = result_dtype(x.dtype)
    _check_result_fits(spec, spec.weight_shape, returned, "weight gradient")
    if spec.batch == 0 or min(spec.weight_shape) == 0:
        return np.zeros(spec.weight_shape, dtype=returned)
    check_exact_range(spec.op, ("input", "grad_output"), x, grad_output, spec.batch * prod(spec.output_size))
    spec, compact = _bounded_and_compact(spec, algorithm, x.dtype)
    if compact is not None:  # the same sum over the cells the windows read
        return conv_weight_grad(compact[1].gather(x), grad_output, compact[0], algorithm)
    grad_output = grad_output.astype(accumulate, copy=False)
    dtype, x = np.dtype(x.dtype), x.astype(accumulate, copy=False)
    chosen = _planned_pass("weight_grad", spec, dtype, algorithm, x)
    if chosen.method == "conv":
        grad_kernel = _weight_grad_conv(pad(x, spec.padding, spec.padding_mode), grad_output, spec)
    else:  # an algorithm's own pass
        grad_kernel = ALGORITHMS[chosen.method].weight_grad(x, grad_output, spec, **dict(chosen.options))
    return np.ascontiguousarray(oriented_kernel(grad_kernel, spec.flip)).astype(returned, copy=False)


def _weight_grad_conv(padded: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    groups, n, c = spec.groups, spec.batch, spec.in_channels_per_group
    # x_p as a batch of C "images" with G*N channels: (N, G*C, *padded) -> (C, G*N, *padded)
    images = padded.reshape(n, groups, c, *spec.padded_size).transpose(2, 1, 0, *range(3, 3 + spec.rank))
    images = images.reshape(c, groups * n, *spec.padded_size)
    # g as G*O filters over N channels: (N, G*O, *out) -> (G*O, N, *out)
    filters = grad_output.swapaxes(0, 1)
    as_conv = frozen_spec(images.shape, filters.shape, stride=spec.dilation, dilation=spec.stride, groups=groups,
                        op=spec.op)
    product = conv_forward(images, filters, None, as_conv)  # (C, G*O, *reach), reach >= kernel
    crop = tuple(slice(0, k) for k in spec.kernel_size)
    return product.swapaxes(0, 1)[(Ellipsis, *crop)]  # (G*O, C, *kernel)
