"""gemm: im2col for speed, in blocks of bounded memory, and its weight gradient."""

from __future__ import annotations

from math import prod
from typing import Iterator

import numpy as np

from .._dtypes import all_finite
from .._window import pad, reshaped_view
from ..spec import ConvSpec
from . import Algorithm, Formulation
from ._blocking import batch_inner, block_bytes, row_grid, unrolled_blocks, unrolled_row_bytes, wide_rows
from ._columns import (batch_inner_columns, batch_last, compiled_batch_inner, compiled_columns_missing,
                       contiguous_filters, transposed_matrix, unrolled_blocks_unpadded)
from ._pooled import pools_products, run_pooled, sample_jobs
from ._rates import BLAS_SHARED_WORK, COPY_RATE, beside_pool_factor, product_rate, results_seconds
from ._scratch import reused_empty
from ._threads import small_matmul, threads_for

__all__ = ["Gemm", "TRANSPOSED_PRODUCT_MIN_POSITIONS", "POINTWISE_BATCH_WIDE_POSITIONS"]

#: Fixed cost of a call (Python and NumPy dispatch): it decides tiny problems.
CALL_OVERHEAD = 20e-6
#: gemm's product costs this multiple of its FLOPs at the shared :func:`~convolab.algorithms._rates.product_rate`.
#: Refitted in session 20 (least squares on the relative error, one thread's CPU time, min of 5) on the suite's 38
#: ungrouped float32 layers with 32 or more input channels: at the shared rate, fitted sessions before, the 7x7
#: layers were estimated 25-29% under their measured time (ResNet-18 layer4's 3x3 14.9 ms against 19.9); with
#: it, the 3x3 layers are within 11%. The BLAS measured 100-107 GFLOP/s on one thread for every conv-shaped
#: product that session, against the shared 150e9, which the other algorithms' constants were fitted around, so
#: only gemm's own use of it changes here. Two kinds of product keep the shared rate. An unstrided 1x1 kernel's: at
#: 1.3 it sent ResNet-50's 1x1 layers to broadcast, which ran those with 1024-2048 filters on 14x14 and 7x7 images
#: 1.2-2x slower than gemm at two threads (4.2-4.5 ms against 5.4-9.0; each job streams every filter). And one
#: below :data:`~convolab.algorithms._rates.BLAS_SHARED_WORK` multiply-adds (the fit's layers have 1e8 to 1.5e10),
#: where the BLAS's threads run a product the pool would keep on one thread: a CNN's 4x4 images (64 of them, 32 ->
#: 64 channels) measured 0.48-0.53 ms under gemm at two threads against winograd2's 0.61 (0.66 against 0.48 on one).
#: The weight gradient's pass keeps the shared rate too: compiled's pass, which it is weighed against, is as
#: stale (ResNet-18 layer4's 7x7 x 512: estimated 18.1 ms, measured 26.5 against gemm's 20.4-23.7 on one thread,
#: 16.6-25.7 against 11.7 on two), and the scaled product handed it that layer's gradient. A strided 1x1 kernel's
#: forward is scaled at any size, with its compact copy charged: unscaled, eight such layers (ResNet-18's and
#: ResNet-50's downsamples, two smaller) were estimated at 0.64-0.76 of their one-thread time; scaled, 0.9-1.05.
PRODUCT_TIME_SCALE = 1.3


class Gemm(Algorithm):
    """im2col for speed: columns copied contiguously, one large matrix product per block.

    The unrolled block is laid out ``(G, C*K, columns)`` so each output channel's
    row of the product is already in NC(spatial) order and no transpose follows.
    At stride 1, unless that wastes over 10% of the columns (see ``wide_rows``),
    the columns run over the *padded* grid ("wide" rows): the tap at
    offset ``j`` then reads one contiguous run of the flattened input, a memcpy
    per (channel, tap); the extra columns past each output row are cropped.
    Blocks go along the batch, then along the first output axis, so the unrolled
    block never exceeds the workspace limit (:func:`convolab.workspace_limit`).
    Small images in large batches unroll with the batch innermost (:func:`._blocking.batch_inner`).
    A 1×1 kernel at stride 1 is a plain matrix product with no copy at all.
    Where Numba runs, the forward and the weight gradient take exact columns
    copied straight from the input before padding (:mod:`._columns`), so no
    padded copy of the input is made.
    """

    name = "gemm"
    passes = frozenset({"forward", "weight_grad"})
    automatic = True

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """FLOPs at the product's rate (:func:`~convolab.algorithms._rates.product_rate`: slower when fewer than
        32 filters or taps per group, or fewer taps than filters; :data:`PRODUCT_TIME_SCALE` times that but for
        1x1 kernels and small products), plus the unrolled copy at memory bandwidth,
        plus the results moved into the output (:func:`~convolab.algorithms._rates.results_seconds`).

        Wide rows copy one contiguous run per (channel, tap); so, nearly, do small
        images unrolled with the batch innermost. Otherwise each output row is a
        strided copy. A 1×1 kernel copies nothing but, with a stride, its cells, and its product is the output.
        The results' term is what makes a shallow product (a stem's 27 taps)
        slow: each result is stored after few multiply-adds, then copied out of
        the product's ``(G, O, columns)`` layout. On more than one thread the
        whole call gains less than the pool's algorithms do
        (:func:`~convolab.algorithms._rates.beside_pool_factor`).
        """
        results = 0 if _is_pointwise(spec) else spec.out_channels * spec.batch * prod(spec.output_size) * dtype.itemsize
        return (_product_and_copy_seconds(spec, dtype, refitted=True) + results_seconds(results)) \
            * _beside_pool(spec)

    def pass_estimate(self, name: str, spec: ConvSpec, dtype: np.dtype) -> float | None:
        """Its weight gradient: the forward's product (the same FLOPs over the same unrolled columns, summed
        over positions rather than taps) and copy; its results are the weights' gradient, which stays in cache.

        On more than one thread it is charged as its forward is (:func:`_beside_pool`): the compiled unroll
        runs on the pool's threads and the product on the BLAS's, whose workers spin beside them, where
        compiled's pass (:func:`._wgrad_compiled.weight_grad_seconds`) runs all of its work on the pool. A 1x1
        kernel's pass unrolls nothing, so nothing of it runs beside the BLAS: one thread's seconds. At two threads
        that gives ResNet's stride-2 layers with 14x14 outputs and VGG-16 conv3_1 and conv3_2 to compiled's pass,
        measured faster on one thread already (``docs/compiled.md``, "Stride-2 3x3 layers, pass by pass").
        """
        if name != "weight_grad":
            return None
        seconds = _product_and_copy_seconds(spec, dtype)
        return seconds if _is_pointwise(spec) else seconds * _beside_pool(spec)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """The unrolled columns of a block; for a 1x1 kernel, what :func:`_pointwise` keeps in the thread's scratch
        (a stride's compact cells, or a small batch's regrouped input and product), else nothing."""
        if _is_pointwise(spec):
            n, positions = spec.batch, prod(spec.output_size)
            if _pointwise_batch_wide(spec):
                return n * positions * (spec.in_channels + spec.out_channels) * itemsize
            if _is_strided_pointwise(spec):
                return n * spec.in_channels * positions * itemsize
            return 0
        return block_bytes(unrolled_row_bytes(spec, itemsize), spec.batch * spec.output_size[0], prod(row_grid(spec)))

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        filters = _filter_rows(kernel, spec)  # (G, O, C*K)
        if _is_pointwise(spec):
            return _pointwise(padded, filters, spec)
        if batch_inner(spec, padded.itemsize):
            return _batch_inner_forward(_batch_inner_columns(padded, spec), filters, spec)
        return _products(unrolled_blocks(padded, spec), filters, spec, padded.dtype)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: where the compiled unroll runs (:func:`_unrolls_unpadded`),
        the columns are copied straight from ``x``, the padding filled as they are, and no padded copy of the
        input is made."""
        if not _unrolls_unpadded(spec, x.dtype):
            return super().run_unpadded(x, kernel, spec)
        if compiled_batch_inner(spec, x.itemsize):  # small images, many of them: runs of N values (digits' 4x4)
            return _batch_inner_forward(batch_inner_columns(x, spec), _filter_rows(kernel, spec), spec)
        return _products(unrolled_blocks_unpadded(x, spec), _filter_rows(kernel, spec), spec, x.dtype)

    def run_unpadded_with_bias(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec,
                               bias: np.ndarray | None) -> np.ndarray:
        """:meth:`run_unpadded` with the bias added to each block's product rows ``(G, O, columns)`` before
        they are copied into the output: long contiguous rows, where the output's own pass broadcast it over
        runs of as few as 16 values (the digits CNN's second layer, 4x4 outputs: 8 of its forward's 90 us, now
        2-3). The same one addition per value."""
        if type(self) is not Gemm or not _unrolls_unpadded(spec, x.dtype):  # a subclass runs its own forward
            return super().run_unpadded_with_bias(x, kernel, spec, bias)
        if compiled_batch_inner(spec, x.itemsize):
            return _batch_inner_forward(batch_inner_columns(x, spec), _filter_rows(kernel, spec), spec, bias)
        return _products(unrolled_blocks_unpadded(x, spec), _filter_rows(kernel, spec), spec, x.dtype, bias)

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        """Its weight gradient's product orientation: ``columns @ g.T`` with many output positions, else
        ``g @ columns.T`` (see :data:`TRANSPOSED_PRODUCT_MIN_POSITIONS`)."""
        if name != "weight_grad":
            return super().pass_formulation(name, spec, dtype, finite=finite, asked=asked)
        positions = spec.batch * prod(spec.output_size)
        transposed = positions >= TRANSPOSED_PRODUCT_MIN_POSITIONS
        side = "at least" if transposed else "under"
        return Formulation("columns @ g.T" if transposed else "g @ columns.T",
                           f"{positions} output positions, {side} {TRANSPOSED_PRODUCT_MIN_POSITIONS}",
                           (("transposed", transposed),))

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec, *,
                    transposed: bool | None = None) -> np.ndarray:
        """``dk = g @ columns.T`` summed over the same blocks: ``(G*O, C, *kernel)``.

        With many positions each block's product is taken as ``columns @ g.T``
        (``transposed``, as the plan says; None: as :meth:`pass_formulation`
        says), ``(C*K, O)``: the BLAS ran that 30-60% faster than ``g @ columns.T`` on
        ResNet's large images. The sum then needs one transposing copy, which on
        small images (few positions, many channels) costs more than it saves
        (see ``TRANSPOSED_PRODUCT_MIN_POSITIONS``). A 1×1 kernel takes
        per-sample products instead where they move less (``_per_sample_products_win``),
        and its own products on the pool's threads wherever those run (``_pooled.pools_products``).
        """
        if transposed is None:
            transposed = dict(self.pass_formulation("weight_grad", spec, x.dtype).options)["transposed"]
        groups, o = spec.groups, spec.out_channels_per_group
        unpadded = _unrolls_unpadded(spec, x.dtype)
        padded = x if unpadded else pad(x, spec.padding, spec.padding_mode)
        if _is_pointwise(spec) and (_per_sample_products_win(spec) or pools_products(spec, padded.dtype)):
            return _pointwise_weight_grad(padded, grad_output, spec)
        # Wide rows give the extra columns a zero gradient, and 0 * inf is NaN: an input holding
        # inf or NaN takes the exact columns, so it reaches only the taps that really read it
        # (the compiled unroll's columns are always exact).
        wide = None if unpadded or all_finite(padded) else False

        def product(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
            """``rows (G, O, positions)`` times ``columns (G, C*K, positions)``, in the sum's layout."""
            if transposed:
                return small_matmul(columns, rows.transpose(0, 2, 1))  # (G, C*K, O)
            return small_matmul(rows, columns.transpose(0, 2, 1))  # (G, O, C*K)

        if compiled_batch_inner(spec, x.itemsize) if unpadded else batch_inner(spec, padded.itemsize):
            columns = batch_inner_columns(x, spec) if unpadded else _batch_inner_columns(padded, spec)  # (G, C*K, P*N)
            total = product(batch_last(grad_output, spec), columns)  # g copied into the columns' (P, N) order
        else:
            taps = spec.terms
            total = np.zeros((groups, taps, o) if transposed else (groups, o, taps), dtype=padded.dtype)
            blocks = unrolled_blocks_unpadded(x, spec) if unpadded else unrolled_blocks(padded, spec, wide=wide)
            for (n0, n1, r0, r1), columns, grid in blocks:
                block = grad_output[n0:n1, :, r0:r1]  # (nb, G*O, rows, *out_rest)
                block = block.reshape(n1 - n0, groups, o, r1 - r0, *spec.output_size[1:])
                block = block.transpose(1, 2, 0, *range(3, 3 + spec.rank))  # (G, O, nb, rows, *out_rest)
                if tuple(grid) != tuple(spec.output_size[1:]):  # wide rows: zero gradient on the extra columns
                    widened = np.zeros((*block.shape[:4], *grid), dtype=block.dtype)
                    widened[(Ellipsis, *(slice(0, size) for size in spec.output_size[1:]))] = block
                    block = widened
                total += product(block.reshape(groups, o, -1), columns)
        if transposed:
            total = np.ascontiguousarray(total.transpose(0, 2, 1))
        return total.reshape(spec.weight_shape)


def _filter_rows(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``kernel`` ``(G*O, C, *kernel_size)`` as the product's rows ``(G, O, C*K)``: a view where there is one
    (the BLAS reads a transposed matrix as it is: a 1x1 full correlation's swapped weight), else a copy, by the
    compiled tiled copy where the compiled kernels run (:func:`._columns.contiguous_filters`: the input
    gradient's full correlation hands gemm the weight swapped and reversed)."""
    rows = (spec.groups, spec.out_channels_per_group, prod(kernel.shape[1:]))
    view = reshaped_view(kernel, rows)
    if view is not None:
        return view
    if compiled_columns_missing(spec, kernel.dtype) is None:
        return contiguous_filters(kernel).reshape(rows)
    return kernel.reshape(rows)


def _beside_pool(spec: ConvSpec) -> float:
    """:func:`~convolab.algorithms._rates.beside_pool_factor` for a call of ``spec``'s multiply-adds on the
    threads the pool would give it: how much more one thread's estimate costs where the products run on the
    BLAS's threads beside the pool's copies (1 on one thread).

    A strided 1x1 layer pays it whatever its filters: its compact copy runs on the calling thread before the
    BLAS's product, and ResNet-50's downsamples (512-2048 filters) gained 1.2-1.5x from one thread to two
    (layer4.0's 18.8 -> 12.7 ms), where packed's and broadcast's pool jobs gained 1.8-1.9x (docs/compiled.md,
    "Strided 1x1 layers (session 22)")."""
    threads, work = threads_for(spec.flops // 2), spec.flops // 2
    return beside_pool_factor(threads, work, 0 if _is_strided_pointwise(spec) else spec.out_channels_per_group)


def _product_and_copy_seconds(spec: ConvSpec, dtype: np.dtype, refitted: bool = False) -> float:
    """:meth:`Gemm.estimate` less the results: the call, the product's FLOPs at its rate (with ``refitted``, the
    forward's, :data:`PRODUCT_TIME_SCALE` times that where it applies), the unrolled copy."""
    rate = product_rate(dtype, spec.out_channels_per_group, spec.terms)
    strided_pointwise = _is_strided_pointwise(spec)
    if strided_pointwise:  # the input's cells copied compact (_pointwise_positions), whole rows read
        copied, fast = spec.batch * spec.in_channels * prod(spec.output_size) * dtype.itemsize, True
    else:
        copied = (0 if _is_pointwise(spec)
                  else unrolled_row_bytes(spec, dtype.itemsize) * spec.batch * spec.output_size[0])
        fast = wide_rows(spec) or batch_inner(spec, dtype.itemsize)
    scaled = strided_pointwise or (not _is_pointwise(spec) and spec.macs >= BLAS_SHARED_WORK)
    product_scale = PRODUCT_TIME_SCALE if refitted and scaled else 1.0
    return CALL_OVERHEAD + product_scale * spec.flops / rate + copied / COPY_RATE["contiguous" if fast else "strided"]


def _products(blocks: Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]], filters: np.ndarray,
              spec: ConvSpec, dtype: np.dtype, bias: np.ndarray | None = None) -> np.ndarray:
    """The forward from unrolled ``blocks`` (:func:`._blocking.unrolled_blocks`): one product per block with
    ``filters`` ``(G, O, C*K)``, plus ``bias`` ``(G*O,)`` if given, its rows' real columns copied into the
    output."""
    groups, o = spec.groups, spec.out_channels_per_group
    out = np.empty(spec.output_shape, dtype=dtype)
    bias_rows = None if bias is None else bias.reshape(groups, o, 1)
    for (n0, n1, r0, r1), columns, grid in blocks:
        product = small_matmul(filters, columns)  # (G, O, nb*rows*rest)
        if bias_rows is not None:
            product += bias_rows  # the product is ours: a new array
        product = product.reshape(groups, o, n1 - n0, r1 - r0, *grid)  # (G, O, nb, rows, *rest)
        product = product[(Ellipsis, *(slice(0, size) for size in spec.output_size[1:]))]
        product = product.transpose(2, 0, 1, *range(3, 3 + spec.rank))  # (nb, G, O, rows, *out_rest)
        out[n0:n1, :, r0:r1] = product.reshape(n1 - n0, spec.out_channels, r1 - r0, *spec.output_size[1:])
    return out


def _batch_inner_forward(columns: np.ndarray, filters: np.ndarray, spec: ConvSpec,
                         bias: np.ndarray | None = None) -> np.ndarray:
    """The forward from batch-inner ``columns`` ``(G, C*K, P*N)``: one product with ``filters`` ``(G, O, C*K)``,
    plus ``bias`` ``(G*O,)`` if given (along the product's long rows), transposed into the output's order."""
    product = small_matmul(filters, columns)  # (G, O, P*N)
    if bias is not None:
        product += bias.reshape(spec.groups, spec.out_channels_per_group, 1)  # the product is ours: a new array
    return transposed_matrix(product.reshape(-1, spec.batch)).reshape(spec.output_shape)


def _unrolls_unpadded(spec: ConvSpec, dtype: np.dtype) -> bool:
    """Whether gemm's columns come from the compiled unroll, straight from the input before padding
    (:func:`._columns.unrolled_blocks_unpadded`): not for a 1×1 kernel (no columns), and only where the
    compiled kernels run. Small images, which NumPy unrolls with the batch innermost, take it too: it copies
    them plane by plane, and the product's rows then come out in whole samples, cheaper to put in the
    output's order than the batch-inner product's single values."""
    return not _is_pointwise(spec) and compiled_columns_missing(spec, dtype) is None


#: Fewest output positions (batch times output size) for which gemm's weight gradient takes its
#: products as ``columns @ g.T``: each saves about a fifth of a product over ``positions`` but the
#: result's transposing copy costs a few ns per weight, even at ~2,500 positions (8 x 7x7 with
#: 512 channels measured 14 ms that way against 8 ms the other).
TRANSPOSED_PRODUCT_MIN_POSITIONS = 4096


def _is_pointwise(spec: ConvSpec) -> bool:
    return all(k == 1 for k in spec.kernel_size)


def _is_strided_pointwise(spec: ConvSpec) -> bool:
    """A 1x1 kernel with a stride: its cells are copied compact first (:func:`_pointwise_positions`)."""
    return _is_pointwise(spec) and any(s > 1 for s in spec.stride)


#: Below this many output positions per sample, an unstrided 1×1 convolution regroups the batch into one
#: product: per-sample products that narrow run far from the BLAS's peak (7×7 ResNet-50 layers
#: measured 15-17% faster batch-wide; at 14×14 the regrouping copies cost more than they save).
POINTWISE_BATCH_WIDE_POSITIONS = 100


def _pointwise_positions(padded: np.ndarray, spec: ConvSpec,
                         job: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The input cells a 1×1 convolution reads, ``(samples, G, C, positions)``: a view unless strided, else
    copied compact into the calling thread's kept scratch. For all of them, or for those of one of
    :func:`._pooled.sample_jobs`' ``job`` (its samples' output rows ``first:end``), on the thread that multiplies
    them."""
    cells = _pointwise_cells(padded, spec, job)  # (samples, G*C, rows, *out_rest)
    positions = prod(cells.shape[2:])  # explicit: with no input channels, -1 is ambiguous
    shape = (cells.shape[0], spec.groups, spec.in_channels_per_group, positions)
    if all(step == 1 for step in spec.stride):
        return cells.reshape(shape)  # whole rows: a view of a contiguous input
    compact = reused_empty(cells.shape, padded.dtype, "pointwise cells")
    np.copyto(compact, cells)
    return compact.reshape(shape)


def _pointwise_cells(padded: np.ndarray, spec: ConvSpec, job: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The cells a 1×1 kernel reads, as a view ``(samples, G*C, rows, *out_rest)``: all of them, or ``job``'s."""
    n0, n1, first, end = job or (0, spec.batch, 0, spec.output_size[0])
    s = spec.stride
    return padded[(slice(n0, n1), slice(None), slice(first * s[0], end * s[0], s[0]),
                   *(slice(None, None, step) for step in s[1:]))]


def _pointwise(padded: np.ndarray, filters: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A 1×1 convolution: per sample, ``(G, O, C) @ (G, C, positions)``; only a stride copies.

    Small output images go batch-wide instead: ``(G, O, C) @ (G, C, N*positions)``, one
    copy of the input into that order (compact too, where strided) and one of the product back.

    The temporaries are the thread's kept scratch, so that a call allocates only its output, as
    PyTorch's does. Fresh, they were 1.2 MB beside a 0.8 MB output on ResNet-18 layer4.0's stride-2
    downsample, enough at the heap's top for glibc to give it back after each call and fault it in
    again on the next (:func:`._scratch.reused_empty`): 2.3 ms a call at one thread, 1.2 kept.
    That layer's batch-wide gather (a strided, transposing copy) also ran 0.8 ms instead of 0.07
    in some processes at two threads (the whole call 1.6-1.9 ms against 0.73), and per sample
    0.80-0.83 in the same processes, on the AMD machine of sessions 20-26; so strided layers went
    per sample there. On the Intel machine of session 28, that layer's batch-wide product on the
    BLAS's two threads ran 0.56-0.61 ms, against 0.70-0.80 per sample on the pool, in each of four
    processes: strided small images go batch-wide again. The slow copies wrote memory the BLAS's
    other thread read in the previous call (docs/compiled.md, "The cause: writing memory another
    core has just read"). Larger images, at two threads or more, run their per-sample products on
    the pool's threads, each with one BLAS thread (:func:`._pooled.pools_products`).
    """
    groups, o, n = spec.groups, spec.out_channels_per_group, spec.batch
    positions = prod(spec.output_size)
    if _pointwise_batch_wide(spec):
        dtype = np.result_type(padded, filters)
        product = reused_empty((groups, o, n * positions), dtype, "pointwise product")
        np.matmul(filters, _regrouped_cells(padded, spec), out=product)
        out = np.empty(spec.output_shape, dtype=dtype)
        np.copyto(out.reshape(n, groups, o, positions), product.reshape(groups, o, n, positions).transpose(2, 0, 1, 3))
        return out
    if pools_products(spec, padded.dtype):
        return _pooled_pointwise(padded, filters, spec)
    product = np.matmul(filters, _pointwise_positions(padded, spec))  # (N, G, O, P)
    return product.reshape(spec.output_shape)


def _pointwise_batch_wide(spec: ConvSpec) -> bool:
    """Whether :func:`_pointwise` takes one product for the batch: several small output images, strided or
    not."""
    return spec.batch > 1 and prod(spec.output_size) < POINTWISE_BATCH_WIDE_POSITIONS


def _per_sample_products_win(spec: ConvSpec) -> bool:
    """Whether a 1×1 weight gradient is cheaper per sample than as one product over the whole batch.

    Per sample, nothing is copied but ``N`` partial ``(O, C)`` results are summed;
    one product needs ``g`` and the input regrouped as ``(O, N*P)`` and ``(N*P, C)``
    first. Summing moves ``N*O*C`` values and regrouping ``N*P*(O + C)``; the
    smaller wins (large images per sample, small ones batch-wide: measured 1.5×
    faster per sample at 56×56 with 64 channels, 2× slower at 7×7 with 2048).
    """
    o, c = spec.out_channels_per_group, spec.in_channels_per_group
    return prod(spec.output_size) * (o + c) >= o * c


def _pointwise_weight_grad(padded: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A 1×1 convolution's weight gradient: per sample ``(G, O, P) @ (G, P, C)``, summed over the batch.

    Each product runs over all of a sample's positions, straight from ``g`` and
    the input (a transposed view; only a stride copies), with no unrolled columns.
    At two threads or more they run on the pool's threads (:func:`._pooled.pools_products`), where each thread
    regroups its samples for one product instead if per-sample products would move more.
    """
    if pools_products(spec, padded.dtype):
        return _pooled_pointwise_weight_grad(padded, grad_output, spec)
    positions = _pointwise_positions(padded, spec)  # (N, G, C, P)
    rows = grad_output.reshape(spec.batch, spec.groups, spec.out_channels_per_group, -1)  # (N, G, O, P)
    per_sample = np.matmul(rows, positions.transpose(0, 1, 3, 2))  # (N, G, O, C)
    return per_sample.sum(axis=0).reshape(spec.weight_shape)


def _pooled_pointwise(padded: np.ndarray, filters: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """:func:`_pointwise` on the pool's threads, NumPy's BLAS held to one thread: each job copies its cells (where
    strided) and multiplies them on the same thread, into its part of the output."""
    out = np.empty(spec.output_shape, dtype=np.result_type(padded, filters))
    rest = prod(spec.output_size[1:])
    planes = out.reshape(spec.batch, spec.groups, spec.out_channels_per_group, -1)  # (N, G, O, P), a view
    jobs = sample_jobs(spec)

    def make_worker():
        def run(job: tuple[int, int, int, int]) -> None:
            n0, n1, first, end = job
            cells = _pointwise_positions(padded, spec, job)  # (samples, G, C, P)
            np.matmul(filters, cells, out=planes[n0:n1, :, :, first * rest:end * rest])
        return run

    run_pooled(jobs, make_worker, spec)
    return out


def _pooled_pointwise_weight_grad(padded: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """:func:`_pointwise_weight_grad` on the pool's threads, NumPy's BLAS held to one thread: each job's products
    summed into its own ``(G, O, C)``, and the jobs' sums added in order, so that the result does not depend on
    which thread ran what.

    Where per-sample products would move more than regrouping (:func:`_per_sample_products_win`: small images,
    many channels), each job instead copies its samples' ``g`` and cells into ``(G, O, samples*P)`` and
    ``(G, C, samples*P)`` and takes one product. ResNet-18 layer4.0's downsample (8 x 14x14, 256 -> 512, stride 2)
    measured 0.74-1.28 ms so (median 0.82), against 0.94-2.25 (1.15) for the batch-inner product on OpenBLAS's
    threads and 0.63-1.27 (0.80) for PyTorch (docs/compiled.md, "Small images' 1x1 weight gradients on the pool")."""
    groups, o, c = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group
    rows, rest = grad_output.reshape(spec.batch, groups, o, -1), prod(spec.output_size[1:])  # (N, G, O, P)
    jobs = sample_jobs(spec)
    sums = [np.empty((groups, o, c), dtype=padded.dtype) for _ in jobs]
    regrouped = not _per_sample_products_win(spec)

    def make_worker():
        def run(index: int) -> None:
            n0, n1, first, end = jobs[index]
            if regrouped and n1 - n0 > 1:
                _regrouped_weight_grad(padded, rows[n0:n1], spec, jobs[index], sums[index])
                return
            cells = _pointwise_positions(padded, spec, jobs[index]).transpose(0, 1, 3, 2)  # (samples, G, P, C)
            total, product = sums[index], None
            for n in range(n0, n1):
                sample_rows = rows[n, :, :, first * rest:end * rest]
                if product is None:
                    np.matmul(sample_rows, cells[n - n0], out=total)
                    product = np.empty_like(total)
                else:
                    total += np.matmul(sample_rows, cells[n - n0], out=product)
        return run

    run_pooled(range(len(jobs)), make_worker, spec)
    for partial in sums[1:]:
        sums[0] += partial
    return sums[0].reshape(spec.weight_shape)


def _regrouped_weight_grad(padded: np.ndarray, rows: np.ndarray, spec: ConvSpec, job: tuple[int, int, int, int],
                           total: np.ndarray) -> None:
    """One job's 1×1 weight gradient as one product into ``total`` ``(G, O, C)``: its samples' ``rows``
    ``(samples, G, O, P)`` and cells copied into the thread's kept scratch as ``(G, O, samples, P)`` and
    ``(G, C, samples, P)`` (whole samples: ``job`` covers all of their rows)."""
    groups, o = spec.groups, spec.out_channels_per_group
    samples, positions = rows.shape[0], rows.shape[3]
    regrouped_rows = reused_empty((groups, o, samples, positions), padded.dtype, "pointwise regrouped g")
    np.copyto(regrouped_rows, rows.transpose(1, 2, 0, 3))
    np.matmul(regrouped_rows.reshape(groups, o, -1), _regrouped_cells(padded, spec, job).transpose(0, 2, 1), out=total)


def _regrouped_cells(padded: np.ndarray, spec: ConvSpec, job: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The cells a 1×1 kernel reads, of all samples or of ``job``'s whole samples, regrouped batch-wide as
    ``(G, C, samples*P)`` in the calling thread's kept scratch: one copy, strided or not."""
    groups, c = spec.groups, spec.in_channels_per_group
    cells = _pointwise_cells(padded, spec, job)  # (samples, G*C, *out)
    samples = cells.shape[0]
    regrouped = reused_empty((groups, c, samples, *spec.output_size), padded.dtype, "pointwise regrouped cells")
    np.copyto(regrouped, cells.reshape(samples, groups, c, *spec.output_size)
              .transpose(1, 2, 0, *range(3, 3 + spec.rank)))
    return regrouped.reshape(groups, c, samples * prod(spec.output_size))


def _batch_inner_columns(padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The unrolled input ``(G, C*K, P*N)`` with the batch innermost: one transpose, one strided copy."""
    groups, c, rank = spec.groups, spec.in_channels_per_group, spec.rank
    moved = np.ascontiguousarray(np.moveaxis(padded, 0, -1))  # (G*C, *padded, N)
    plane_strides = moved.strides[1:1 + rank]
    # View (G*C, *kernel, *out, N): tap j of output position p reads padded[p*s + j*d].
    view = np.lib.stride_tricks.as_strided(
        moved,
        shape=(moved.shape[0], *spec.kernel_size, *spec.output_size, spec.batch),
        strides=(moved.strides[0], *(st * d for st, d in zip(plane_strides, spec.dilation)),
                 *(st * s for st, s in zip(plane_strides, spec.stride)), moved.strides[-1]),
        writeable=False,
    )
    return np.ascontiguousarray(view).reshape(groups, c * prod(spec.kernel_size), -1)
