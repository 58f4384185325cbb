"""row_shifts: the last kernel axis unrolled, every other axis's taps as shifts of whole rows."""

from __future__ import annotations

import dataclasses
from math import prod
from typing import Iterator

import numpy as np

from .._dtypes import all_finite
from .._window import pad
from ..spec import ConvSpec
from . import Algorithm, Formulation
from ._blocking import block_bytes, block_ranges, unrolled_blocks, unrolled_row_bytes
from ._columns import compiled_columns_missing, unrolled_blocks_unpadded
from ._rates import COPY_RATE, ELEMENTWISE_RATE, beside_pool_factor, product_rate, results_seconds
from ._threads import threads_for
from .gemm import Gemm

__all__ = ["RowShifts"]

#: Fixed cost of a call: the unroll's jobs and the filters' regrouping set up.
CALL_OVERHEAD = 60e-6
#: Fixed cost of each product (one per sample, group and leading tap) and of adding it: NumPy's dispatch of both.
#: On the 3-d U-Net's small (2, 32, 6, 10, 10) layer (18 products) row_shifts measured 0.88 ms against folded's
#: 0.80 where the estimates without it had them alike (one thread, CPU time).
PRODUCT_OVERHEAD = 10e-6

#: Its weight gradient's time over its forward's (the same products, transposed, and ``g`` read per tap): measured
#: 1.03 (ASPP), 1.07 (DeepLab d2), 1.22-1.30 (Inception's 5x5, 8 x 96 x 28x28), 1.3 (3-d U-Net 6x10x10, 32 filters);
#: one thread, CPU time, float32.
WEIGHT_GRAD_OVER_FORWARD = 1.15
#: Columns per product (one sample's output rows for one leading tap) below which the products run slower than
#: the product rate says, by the square root of the shortfall: ResNet-18 layer4's 3x3 on 7x7 (35-49 columns per
#: product, 512 filters, depth 1536) took 22.0 ms (one thread, CPU) where gemm's one product took 11.7, while
#: ASPP's and DeepLab d2's 891-1089 columns ran at gemm's rate.
PRODUCT_COLUMNS = 512

# Axis legend: G groups, O filters and C channels per group, T leading taps (every kernel axis but the
# last), K_L last-axis taps, R stored rows of the first axis, M positions of the middle axes' padded grid
# (1 in 2-d), W output columns of the last axis; a sample's row grid is R*M*W columns.


class RowShifts(Algorithm):
    """The last axis's taps unrolled, the other axes' taps as shifts of whole rows: one product per leading tap.

    Unroll only the last kernel axis (its stride, dilation and padding), for
    every stored row of the other axes: columns ``U[(c, k_L), r, m, w]``,
    ``K_L`` copies of the input rather than gemm's ``K``, one per real output
    column. A leading tap ``t`` then reads row ``y + t*d`` for output row
    ``y``: over a sample's flattened ``(r, m, w)`` grid a constant shift, so the
    tap is one product ``(G, O, C*K_L) @ (G, C*K_L, rows*M*W)`` straight from
    ``U``, and the taps' products are added. With zero padding and a finite
    kernel the first axis's padding rows are never stored and never multiplied:
    a tap's product covers only the output rows whose input row is real (ASPP's
    dilation 6 on 33x33 rows skips 12% of gemm's terms that way; the last
    axis's padding zeros, in ``U``, are still multiplied). The middle axes (3-d)
    are kept padded: their output runs over the padded grid ("wide", cropped
    at the end) so that their taps are shifts too.

    Needs stride 1 on every axis but the last (a stride there would need the
    rows split into stride phases first), and two axes at least (in 1-d this is
    gemm). A kernel holding inf or NaN keeps the padding rows, so ``0 * inf``
    gives NaN where the direct sum does. Where one sample's ``U`` does not fit
    the workspace limit (:func:`convolab.workspace_limit`), which a row shift
    needs whole, its passes run gemm's.
    """

    name = "row_shifts"
    passes = frozenset({"forward", "weight_grad"})
    automatic = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if spec.rank < 2:
            return "one spatial axis: unrolling its only axis is gemm"
        if any(s != 1 for s in spec.stride[:-1]):
            return (f"stride {spec.stride}: a leading axis's taps are row shifts only at stride 1 along it "
                    "(stride phases are not split)")
        return None

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """The products over the terms they multiply, at gemm's product rate for ``O`` filters of depth
        ``C*K_L`` (slower for narrow products, :data:`PRODUCT_COLUMNS`), their results stored and added, the
        copies into ``U`` and of the filters; on more than one thread, as folded's, less gain than the pool's
        algorithms (:func:`~convolab.algorithms._rates.beside_pool_factor`)."""
        # no filter count: unlike gemm's 512-filter layers, its products were not measured to scale at two threads
        # (the machine was loaded all session 12), so ASPP's full correlation (512 filters) keeps packed there
        return _seconds(spec, dtype) * beside_pool_factor(threads_for(spec.flops // 2), spec.flops // 2)

    def pass_estimate(self, name: str, spec: ConvSpec, dtype: np.dtype) -> float | None:
        """Its weight gradient: the forward's one-thread seconds times :data:`WEIGHT_GRAD_OVER_FORWARD` (one
        thread, as gemm's and folded's are)."""
        return WEIGHT_GRAD_OVER_FORWARD * _seconds(spec, dtype) if name == "weight_grad" else None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        rows = _rows_spec(spec, skip=True)
        per_row = unrolled_row_bytes(rows, itemsize, False) + _scratch_per_column(spec, itemsize) * prod(
            rows.output_size[1:])
        filters = prod(spec.weight_shape) * itemsize  # regrouped per leading tap: a copy
        wide = 0 if spec.rank == 2 else spec.out_channels * _sample_columns(spec, rows) * itemsize
        return block_bytes(per_row, spec.batch * rows.output_size[0], prod(rows.output_size[1:])) + filters + wide

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        skip = _skips_padding(spec, kernel)
        if not _whole_samples(spec, skip, padded.itemsize):
            return Gemm().run(padded, kernel, spec)
        low = spec.padding[0][0] if skip else 0
        rows_source = padded[:, :, low:low + spec.input_size[0]] if skip else padded
        blocks = unrolled_blocks(rows_source, _rows_spec_padded(spec, rows_source.shape[2]),
                                 _scratch_per_column(spec, padded.itemsize), wide=False)
        return _forward(blocks, kernel, spec, skip, padded.dtype)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: where the compiled unroll runs, ``U`` is copied straight
        from ``x`` (the padding filled as it goes, in jobs on the thread pool), no padded copy made."""
        if compiled_columns_missing(spec, x.dtype) is not None:
            return super().run_unpadded(x, kernel, spec)
        skip = _skips_padding(spec, kernel)
        if not _whole_samples(spec, skip, x.itemsize):
            return Gemm().run_unpadded(x, kernel, spec)
        blocks = unrolled_blocks_unpadded(x, _rows_spec(spec, skip), _scratch_per_column(spec, x.itemsize))
        return _forward(blocks, kernel, spec, skip, x.dtype)

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        """Its weight gradient; in 3-d only for a finite input (the wide columns meet zeros of ``g``)."""
        if name != "weight_grad":
            return super().pass_formulation(name, spec, dtype, finite=finite, asked=asked)
        if spec.rank > 2 and not finite:
            return "the input holds inf or NaN, which the middle axes' wide columns would multiply by zeros"
        taps = prod(spec.kernel_size[:-1])
        return Formulation(f"g @ U.T per sample and each of {taps} leading taps",
                           "the leading axes' padding rows left out of every product")

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dW[:, :, t] = g[rows valid for t] @ U[rows shifted by t].T`` summed over samples: ``(G*O, C, *kernel)``.

        Every leading tap's product reads only the rows it reads in the
        forward, so no padding row is multiplied by ``g``, unless ``g`` holds
        inf or NaN: then the padding rows stay in, so that those reach the
        weight gradient as in the direct sum (0 x inf is NaN). In 3-d ``g`` is
        widened over the middle axes' padded grid, zero on the wide columns.
        """
        skip = spec.padding_mode == "zeros" and all_finite(grad_output)
        if not _whole_samples(spec, skip, x.itemsize):
            return Gemm().weight_grad(x, grad_output, spec)
        rows = _rows_spec(spec, skip)
        if compiled_columns_missing(spec, x.dtype) is None:
            blocks = unrolled_blocks_unpadded(x, rows, _scratch_per_column(spec, x.itemsize))
        else:
            padded = pad(x, spec.padding, spec.padding_mode)
            low = spec.padding[0][0] if skip else 0
            source = padded[:, :, low:low + spec.input_size[0]] if skip else padded
            blocks = unrolled_blocks(source, _rows_spec_padded(spec, source.shape[2]), wide=False)
        groups, o, c = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group
        taps = _leading_taps(spec, rows, skip)
        total = np.zeros((len(taps), groups, o, c * spec.kernel_size[-1]), dtype=x.dtype)  # (T, G, O, C*K_L)
        length = _sample_columns(spec, rows)
        for (n0, n1, _, _), columns, _ in blocks:
            per_sample = columns.reshape(groups, columns.shape[1], n1 - n0, -1)  # (G, C*K_L, nb, R*M*W)
            for n in range(n0, n1):
                g = _widened(grad_output[n], spec, rows).reshape(groups, o, length)  # (G, O, L)
                source = per_sample[:, :, n - n0]
                for t, (target, start, available) in enumerate(taps):
                    if available > 0:
                        total[t] += np.matmul(g[..., target:target + available],
                                              source[..., start:start + available].transpose(0, 2, 1))
        grad = total.reshape(len(taps), groups, o, c, spec.kernel_size[-1])
        grad = grad.transpose(1, 2, 3, 0, 4)  # (G, O, C, T, K_L)
        return np.ascontiguousarray(grad).reshape(spec.weight_shape)


def _skips_padding(spec: ConvSpec, kernel: np.ndarray) -> bool:
    """Whether the first axis's padding rows are left out: zeros only, and a kernel with no inf or NaN (which
    the direct sum multiplies by those zeros)."""
    return spec.padding_mode == "zeros" and all_finite(kernel)


def _rows_spec(spec: ConvSpec, skip: bool) -> ConvSpec:
    """The problem the compiled unroll runs to make ``U`` from the input before padding: the last axis as it
    is, one tap on the others; the first axis's padding dropped where ``skip``, the middle axes' kept (their
    output runs over the padded grid)."""
    first = ((0, 0),) if skip else spec.padding[:1]
    ones = (1,) * (spec.rank - 1)
    return dataclasses.replace(spec, kernel_size=(*ones, spec.kernel_size[-1]), dilation=(*ones, spec.dilation[-1]),
                               padding=(*first, *spec.padding[1:]))


def _rows_spec_padded(spec: ConvSpec, rows: int) -> ConvSpec:
    """:func:`_rows_spec` for NumPy's unroll of the padded input cut to the ``rows`` stored along the first
    axis: no padding left but the last axis's stride and taps."""
    ones = (1,) * (spec.rank - 1)
    return dataclasses.replace(spec, input_size=(rows, *spec.padded_size[1:]), padding=((0, 0),) * spec.rank,
                               kernel_size=(*ones, spec.kernel_size[-1]), dilation=(*ones, spec.dilation[-1]))


def _scratch_per_column(spec: ConvSpec, itemsize: int) -> int:
    """Bytes kept beside each column of ``U``: one later tap's product, ``G*O`` values."""
    return spec.out_channels * itemsize


def _sample_columns(spec: ConvSpec, rows: ConvSpec) -> int:
    """Columns of one sample's output over the middle axes' padded grid: ``out_0 * M * W``."""
    return spec.output_size[0] * prod(rows.output_size[1:])


def _leading_taps(spec: ConvSpec, rows: ConvSpec, skip: bool) -> list[tuple[int, int, int]]:
    """Per leading tap (row-major), ``(target, start, available)``: where in a sample's output columns its
    product lands, where in ``U``'s columns it reads, and how many columns it covers.

    Output row ``y`` reads padded row ``y + t_0*d_0``, stored row ``y + t_0*d_0 - low`` (``low`` the first
    axis's low padding where it is not stored); rows outside ``[0, R)`` are padding and left out. The middle
    axes shift by ``t_m*d_m`` over their padded grid; past the sample's end only cropped columns remain.
    """
    stored = rows.output_size[0]
    row = prod(rows.output_size[1:])  # M*W columns per row
    low = spec.padding[0][0] if skip else 0
    middle = rows.output_size[1:-1]
    middle_strides = [prod(middle[i + 1:]) * rows.output_size[-1] for i in range(len(middle))]
    taps = []
    for tap in np.ndindex(*spec.kernel_size[:-1]):
        shift = tap[0] * spec.dilation[0] - low
        first, last = max(0, -shift), min(spec.output_size[0], stored - shift)
        offset = sum(j * d * st for j, d, st in zip(tap[1:], spec.dilation[1:-1], middle_strides))
        start = (first + shift) * row + offset
        available = max(0, min((last - first) * row, stored * row - start))
        taps.append((first * row, start, available))
    return taps


def _whole_samples(spec: ConvSpec, skip: bool, itemsize: int) -> bool:
    """Whether ``U``'s blocks hold whole samples under the workspace limit (a row shift crosses the rows a
    block would split); where one sample's rows exceed it, the passes hand the problem to gemm."""
    rows = _rows_spec(spec, skip)
    blocks, _ = block_ranges(rows, itemsize, False, _scratch_per_column(spec, itemsize))
    return all(r0 == 0 and r1 == rows.output_size[0] for _, _, r0, r1 in blocks)


def _widened(grad: np.ndarray, spec: ConvSpec, rows: ConvSpec) -> np.ndarray:
    """One sample's ``(G*O, *out)`` gradient over the middle axes' padded grid, zero on the wide columns
    (2-d: as it is)."""
    if spec.rank == 2:
        return np.ascontiguousarray(grad)
    wide = np.zeros((grad.shape[0], spec.output_size[0], *rows.output_size[1:]), dtype=grad.dtype)
    wide[(slice(None), slice(None), *(slice(0, size) for size in spec.output_size[1:]))] = grad
    return wide


def _forward(blocks: Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]], kernel: np.ndarray,
             spec: ConvSpec, skip: bool, dtype: np.dtype) -> np.ndarray:
    """The forward from ``U``'s blocks: per sample, one product per leading tap, added into its output rows.

    A tap that covers every output row comes first and is written straight
    into the output (2-d) or the wide accumulator; the others go through a
    scratch and are added where they land.
    """
    groups, o, c = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group
    if not c:  # no input channel: nothing to sum (and columns of no rows, whose length cannot be inferred)
        return np.zeros(spec.output_shape, dtype=dtype)
    rows = _rows_spec(spec, skip)
    taps = _leading_taps(spec, rows, skip)
    length = _sample_columns(spec, rows)
    filters = _filters_by_tap(kernel, spec, len(taps))  # (T, G, O, C*K_L)
    out = np.empty(spec.output_shape, dtype=dtype)
    order = sorted(range(len(taps)), key=lambda t: taps[t][2] != length)  # a full tap first: it needs no zeroing
    scratch = np.empty(groups * o * length, dtype=dtype)
    wide = None if spec.rank == 2 else np.empty((groups, o, length), dtype=dtype)
    for (n0, n1, _, _), columns, _ in blocks:
        per_sample = columns.reshape(groups, columns.shape[1], n1 - n0, -1)  # (G, C*K_L, nb, R*M*W)
        for n in range(n0, n1):
            total = out[n].reshape(groups, o, length) if wide is None else wide  # (G, O, L)
            source = per_sample[:, :, n - n0]
            for i, t in enumerate(order):
                target, start, available = taps[t]
                if i == 0 and available == length:
                    np.matmul(filters[t], source[..., start:start + length], out=total)
                    continue
                if i == 0:
                    total[...] = 0
                if available > 0:
                    product = scratch[:groups * o * available].reshape(groups, o, available)
                    np.matmul(filters[t], source[..., start:start + available], out=product)
                    total[..., target:target + available] += product
            if wide is not None:  # crop the middle axes' wide columns
                wide_view = wide.reshape(spec.out_channels, spec.output_size[0], *rows.output_size[1:])
                out[n] = wide_view[(slice(None), slice(None), *(slice(0, size) for size in spec.output_size[1:]))]
    return out


def _filters_by_tap(kernel: np.ndarray, spec: ConvSpec, taps: int) -> np.ndarray:
    """The filters ``(G*O, C, *leading, K_L)`` as ``(T, G, O, C*K_L)``: leading tap ``t``'s, depth ordered
    (channel, last-axis tap) as ``U``'s rows are.

    A contiguous kernel is moved in whole runs of ``K_L`` values, each read as one opaque item (a void view):
    NumPy copies those at twice the rate of the same floats moved three at a time (ASPP's 256 x 512 x 3 x 3:
    0.61 against 1.28 ms, one thread).
    """
    groups, o, c, last = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group, spec.kernel_size[-1]
    if kernel.flags.c_contiguous:
        runs = kernel.reshape(groups * o, c, taps, last).view(np.dtype((np.void, last * kernel.itemsize)))
        moved = np.ascontiguousarray(runs[..., 0].transpose(2, 0, 1))  # (T, G*O, C) runs of K_L values
        return moved.view(kernel.dtype).reshape(taps, groups, o, c * last)
    moved = np.ascontiguousarray(kernel.reshape(groups, o, c, taps, last).transpose(3, 0, 1, 2, 4))
    return moved.reshape(taps, groups, o, c * last)


def _seconds(spec: ConvSpec, dtype: np.dtype) -> float:
    """:meth:`RowShifts.estimate` on one thread: the call, the products over the rows they multiply, the copy
    into ``U``, the later taps' products added."""
    rows = _rows_spec(spec, spec.padding_mode == "zeros")
    taps = _leading_taps(spec, rows, spec.padding_mode == "zeros")
    columns = spec.batch * sum(available for _, _, available in taps)
    depth = spec.in_channels_per_group * spec.kernel_size[-1]
    # one product per sample and tap: narrow ones run far below the BLAS's rate
    narrow = min(1.0, columns / max(spec.batch * len(taps), 1) / PRODUCT_COLUMNS) ** 0.5
    rate = product_rate(dtype, spec.out_channels_per_group, depth) * max(narrow, 1e-3)
    copied = unrolled_row_bytes(rows, dtype.itemsize, False) * spec.batch * rows.output_size[0]
    added = spec.out_channels * (columns - spec.batch * max((a for _, _, a in taps), default=0))
    # every tap's results are stored and read again by the add: what makes shallow products (3-d U-Net's 32
    # filters of depth 96) slow, as gemm's results do its shallow ones
    results = spec.out_channels * columns * dtype.itemsize
    regrouped = prod(spec.weight_shape) * dtype.itemsize  # the filters copied per leading tap: runs of K_L values
    products = spec.batch * spec.groups * len(taps)
    multiplied = spec.groups * spec.out_channels_per_group * depth * columns  # multiply-adds
    return (CALL_OVERHEAD + products * PRODUCT_OVERHEAD + 2 * multiplied / rate
            + (copied + regrouped) / COPY_RATE["strided"] + added / ELEMENTWISE_RATE + results_seconds(results))
