"""folded: gemm with the last kernel axis folded into the product's rows."""

from __future__ import annotations

import dataclasses
from math import prod
from typing import Iterator

import numpy as np

from .._window import pad
from ..spec import ConvSpec
from . import Algorithm, Formulation
from ._blocking import block_bytes, row_grid, unrolled_blocks, unrolled_row_bytes, wide_rows
from ._columns import compiled_columns_missing, unrolled_blocks_unpadded
from ._rates import COPY_RATE, beside_pool_factor, product_rate
from ._threads import threads_for

__all__ = ["Folded"]

#: Fixed cost of a call. Measured on one thread on the digits CNN's layers ((32, 16..32, 4..8, 8) inputs,
#: 3x3): folded ran 190-250 us above its model's variable part where gemm ran 60 us above its own (the
#: compiled unroll's tables and jobs, and one share addition per last-axis tap over rows a few values long).
#: With 30 us it was picked for a 4x4 layer it ran 1.7x slower than gemm; no suite problem's plan changed.
CALL_OVERHEAD = 180e-6
#: Its weight gradient's time over its forward's estimate (the same product and copies, and ``g`` moved once per
#: last-axis tap into zeroed blocks): as a ratio to gemm's weight gradient's, its measured time was 1.0-1.3x
#: (median 1.24) of this estimate's on 12 suite layers (3x3 at 7x7 to 56x56 positions, 5x5, dilated, 1-d k 9,
#: 3-d; one thread, CPU time, float32).
WEIGHT_GRAD_OVER_FORWARD = 1.25
#: Values of the last-axis taps' shares added into the output per second: each is a strided slice of the
#: product's layout, about half the rate of a contiguous elementwise pass (fitted on 39 layers, one thread:
#: at the elementwise rate, 3e9, Inception's 5x5 adds were estimated 1 ms against about 3 measured).
SHARE_RATE = 1.5e9


def _seconds(spec: ConvSpec, dtype: np.dtype) -> float:
    """:meth:`Folded.estimate` on one thread: the call, the product at its rate, the copy, the taps' shares."""
    rest = _rest_spec(spec)
    columns = spec.batch * rest.output_size[0] * prod(row_grid(rest))  # every row, wide or exact
    rows = spec.kernel_size[-1] * spec.out_channels_per_group
    depth = spec.in_channels_per_group * prod(rest.kernel_size)
    rate = product_rate(dtype, rows, depth)
    copied = unrolled_row_bytes(rest, dtype.itemsize) * spec.batch * rest.output_size[0]
    layout = "contiguous" if wide_rows(rest) else "strided"
    shares = spec.kernel_size[-1] * prod(spec.output_shape)  # each tap's share written or added once
    return (CALL_OVERHEAD + 2 * spec.groups * rows * depth * columns / rate + copied / COPY_RATE[layout]
            + shares / SHARE_RATE)


class Folded(Algorithm):
    """gemm with the last kernel axis folded into the product's rows: a third of the copies for 3-tap kernels.

    A convolution sums over the last axis's taps ``f`` the products of the
    filters' slice ``w[..., f]`` with the input shifted ``f*d`` along that axis.
    So unroll only the other axes' taps (``C*K/K_L`` values per position, with
    every column of the padded last axis) and multiply once by the filters
    stacked along that axis, ``(K_L*O, C*K/K_L)``: row block ``f`` of the
    product, shifted left ``f*d`` columns, is tap ``f``'s share of the output,
    and the shares are added (within each row, so blocks of rows stay
    independent). Against gemm the copies shrink by ``K_L`` and the product
    gets ``K_L`` times more rows (faster BLAS when filters are few: a 3-d layer
    with 32 filters ran 1.5-2x faster), at the cost of the ``(K_L - 1)*d``
    columns computed past each row's end (gemm's wide rows compute them too)
    and ``K_L - 1`` additions over the output. Needs stride 1 along the last axis.
    Where Numba runs, its columns are copied straight from the input before
    padding (:mod:`._columns`), with no padded copy of the input first.
    """

    name = "folded"
    passes = frozenset({"forward", "weight_grad"})
    automatic = True

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if spec.stride[-1] != 1:
            return f"stride {spec.stride}: the folded taps need stride 1 along the last axis"
        if spec.kernel_size[-1] == 1:
            return f"kernel {spec.kernel_size}: one tap along the last axis leaves nothing to fold (that is gemm)"
        return None

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """gemm's model for its product (``K_L`` times the filters, ``1/K_L`` of the taps, every padded
        column) and its smaller copy, plus one pass over the output per last-axis tap (:func:`_seconds`); on
        more than one thread, as gemm's, less gain than the pool's algorithms
        (:func:`~convolab.algorithms._rates.beside_pool_factor`)."""
        # no filter count: unlike gemm's 512-filter layers, folded's were not measured to scale at two threads
        return _seconds(spec, dtype) * beside_pool_factor(threads_for(spec.flops // 2), spec.flops // 2)

    def pass_estimate(self, name: str, spec: ConvSpec, dtype: np.dtype) -> float | None:
        """Its weight gradient: the forward's one-thread seconds (:func:`_seconds`) times
        :data:`WEIGHT_GRAD_OVER_FORWARD`, so that the planner weighs it against gemm's and compiled's (theirs
        are one thread's too)."""
        return WEIGHT_GRAD_OVER_FORWARD * _seconds(spec, dtype) if name == "weight_grad" else None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        rest = _rest_spec(spec)
        per_row = unrolled_row_bytes(rest, itemsize) + _folded_product_bytes(spec, itemsize) * prod(row_grid(rest))
        filters = prod(spec.weight_shape) * itemsize  # stacked along the last axis: a copy
        return block_bytes(per_row, spec.batch * rest.output_size[0], prod(row_grid(rest))) + filters

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return _folded_products(_rest_blocks(padded, spec, False), kernel, spec, padded.dtype)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: where the compiled unroll runs, the columns are copied
        straight from ``x``, the padding filled as they are, and no padded copy of the input is made."""
        if compiled_columns_missing(spec, x.dtype) is not None:
            return super().run_unpadded(x, kernel, spec)
        return _folded_products(_rest_blocks(x, spec, True), kernel, spec, x.dtype)

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        """Its weight gradient, for a finite input; under "auto" only where folding at least halves the copies.

        gemm copies ``C*K`` values per position (its columns); folded ``C*K/K_L``
        (its columns) plus ``K_L*O`` (``g`` moved once per last-axis tap). Where
        that saves under half, gemm's product measured as fast or faster (3×3
        layers in 2-d); where it saves more, folded was 10-40% faster (the 3-d
        32-channel layer, 5×5 and 7×7 kernels on 8-32 channels).
        """
        if name != "weight_grad":
            return super().pass_formulation(name, spec, dtype, finite=finite, asked=asked)
        if not finite:  # every tap's product reads every column, most times a zero of g: 0 * inf would be NaN
            return "the input holds inf or NaN, which its products would multiply by zeros no window reads"
        c, o, taps = spec.in_channels_per_group, spec.out_channels_per_group, prod(spec.kernel_size)
        last = spec.kernel_size[-1]
        folded, unfolded = c * taps // last + last * o, c * taps
        copies = f"folding copies {folded} values per position against gemm's {unfolded}"
        if not asked and not folded <= unfolded / 2:
            return f"{copies}, under half saved"
        return Formulation(f"columns @ g moved by each of {last} last-axis taps", copies)

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """The forward's fold in reverse: ``columns @ (K_L*O, positions).T`` summed over blocks, ``(G*O, C, *kernel)``.

        Row block ``f`` of the right factor is ``g`` moved right ``f*d`` columns
        (zero on the columns no output reads through tap ``f``), so one product
        with ``K_L*O`` columns gives every last-axis tap's gradient. Those zeros
        meet every input value, so the input must be finite (the planner keeps
        others from this pass: :meth:`pass_formulation`).
        """
        unpadded = compiled_columns_missing(spec, x.dtype) is None
        groups, o, c, rank = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group, spec.rank
        taps, reach = spec.kernel_size[-1], spec.dilation[-1]
        rest = _rest_spec(spec)
        total = np.zeros((groups, c * prod(rest.kernel_size), taps * o), dtype=x.dtype)  # columns @ moved.T
        buffer = None
        for (n0, n1, r0, r1), columns, grid in _rest_blocks(
                x if unpadded else pad(x, spec.padding, spec.padding_mode), spec, unpadded):
            if buffer is None:
                buffer = np.zeros(groups * taps * o * columns.shape[-1], dtype=x.dtype)
            count = columns.shape[-1]
            moved = buffer[:groups * taps * o * count].reshape(groups, taps, o, n1 - n0, r1 - r0, *grid)
            if rank > 1:
                block = grad_output[n0:n1, :, r0:r1].reshape(n1 - n0, groups, o, r1 - r0, *spec.output_size[1:])
                block = block.transpose(1, 2, 0, *range(3, 3 + rank))  # (G, O, nb, rows, *out_rest)
            moved[...] = 0  # every cell outside a tap's share reads as zero
            for f in range(taps):
                if rank == 1:  # shares cross blocks
                    rows, source = _crossing_share(spec, f, r0, r1)
                    moved[:, f, :, :, source] = grad_output[n0:n1, :, rows].reshape(
                        n1 - n0, groups, o, -1).transpose(1, 2, 0, 3)
                else:
                    moved[:, f][_share(spec, f * reach)] = block
            total += np.matmul(columns, moved.reshape(groups, taps * o, count).transpose(0, 2, 1))
        grad = total.reshape(groups, c, prod(rest.kernel_size), taps, o).transpose(0, 4, 1, 2, 3)  # (G, O, C, K_rest, K_L)
        return np.ascontiguousarray(grad).reshape(spec.weight_shape)


def _rest_blocks(array: np.ndarray, spec: ConvSpec, unpadded: bool,
                 ) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]]:
    """The unrolled blocks of the problem :class:`Folded` unrolls (:func:`_rest_spec`: one tap along the last
    axis, every padded column out): from the padded input, or with ``unpadded`` from ``array`` before padding
    by the compiled unroll (which fills the padding as it copies, so no padded copy is made)."""
    scratch = _folded_product_bytes(spec, array.itemsize)
    if unpadded:  # the padding stays in the spec: every padded column of the last axis is one output
        rest = dataclasses.replace(spec, kernel_size=(*spec.kernel_size[:-1], 1), dilation=(*spec.dilation[:-1], 1))
        return unrolled_blocks_unpadded(array, rest, scratch)
    return unrolled_blocks(array, _rest_spec(spec), scratch)


def _folded_products(blocks: Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]],
                     kernel: np.ndarray, spec: ConvSpec, dtype: np.dtype) -> np.ndarray:
    """:class:`Folded`'s forward from the unrolled ``blocks`` of :func:`_rest_blocks`: per block one product
    with the folded filters, each last-axis tap's share added where it lands."""
    groups, o, rank = spec.groups, spec.out_channels_per_group, spec.rank
    taps, reach = spec.kernel_size[-1], spec.dilation[-1]
    filters = _folded_filters(kernel, spec)  # (G, K_L*O, C*K_rest)
    out = np.empty(spec.output_shape, dtype=dtype)
    grouped = out.reshape(spec.batch, groups, o, *spec.output_size)  # a view: results are written through it
    buffer = None
    for (n0, n1, r0, r1), columns, grid in blocks:
        if buffer is None:
            buffer = np.empty((groups, taps * o, columns.shape[-1]), dtype=dtype)
        product = np.matmul(filters, columns, out=buffer[..., :columns.shape[-1]])
        shares = product.reshape(groups, taps, o, n1 - n0, r1 - r0, *grid)  # (G, K_L, O, nb, rows, *grid)
        if rank == 1:  # the folded axis is the blocked one: shares cross blocks
            for f in range(taps):
                rows, source = _crossing_share(spec, f, r0, r1)
                target = grouped[n0:n1, :, :, rows]
                share = shares[:, f, :, :, source].transpose(2, 0, 1, 3)  # (nb, G, O, positions)
                # Output x's f = 0 share comes first (its block is never later, and f = 0 goes
                # first within a block): assign it, add the rest.
                if f == 0:
                    np.copyto(target, share)
                else:
                    np.add(target, share, out=target)
            continue
        # Add the shares up in the product's own layout (contiguous runs), then one copy into the output.
        total = shares[:, 0][_share(spec, 0)]
        for f in range(1, taps):
            total += shares[:, f][_share(spec, f * reach)]
        np.copyto(grouped[n0:n1, :, :, r0:r1], total.transpose(2, 0, 1, *range(3, 3 + rank)))
    return out


def _share(spec: ConvSpec, shift: int) -> tuple[slice, ...]:
    """Where one last-axis tap's share of the output sits in a block of :class:`Folded`'s product (rank > 1).

    Indexes ``(G, O, nb, rows, *grid)``: the output's extent on the middle
    axes, and the last axis moved ``shift`` columns along.
    """
    middle = tuple(slice(0, size) for size in spec.output_size[1:-1])
    return (Ellipsis, *middle, slice(shift, shift + spec.output_size[-1]))


def _crossing_share(spec: ConvSpec, tap: int, r0: int, r1: int) -> tuple[slice, slice]:
    """In 1-d, the output positions tap ``tap``'s share of padded positions ``r0:r1`` lands on, and where it sits.

    Padded position ``r`` gives output ``r - tap*d``; only those in ``[0, output)`` exist.
    """
    shift = tap * spec.dilation[-1]
    low, high = max(r0, shift), min(r1, spec.output_size[-1] + shift)
    high = max(high, low)
    return slice(low - shift, high - shift), slice(low - r0, high - r0)


def _rest_spec(spec: ConvSpec) -> ConvSpec:
    """The problem :class:`Folded` unrolls: the padded input, one tap along the last axis (every column out)."""
    return dataclasses.replace(spec, input_size=spec.padded_size, padding=((0, 0),) * spec.rank,
                               kernel_size=(*spec.kernel_size[:-1], 1), dilation=(*spec.dilation[:-1], 1))


def _folded_filters(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``(G*O, C, *rest, K_L)`` filters as ``(G, K_L*O, C*K_rest)``: rows ordered (last-axis tap, filter)."""
    groups, o, c, taps = spec.groups, spec.out_channels_per_group, spec.in_channels_per_group, spec.kernel_size[-1]
    depth = c * prod(spec.kernel_size[:-1])
    kernel = kernel.reshape(groups, o, depth, taps)
    return np.ascontiguousarray(kernel.transpose(0, 3, 1, 2)).reshape(groups, taps * o, depth)


def _folded_product_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes of :class:`Folded`'s product per unrolled column: ``K_L`` values per filter."""
    return spec.kernel_size[-1] * spec.out_channels * itemsize
