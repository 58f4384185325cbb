"""Convolution algorithms behind one interface.

Every algorithm solves the same *valid* problem: the input is already padded
(by :func:`convolab._window.pad`) and the kernel already oriented (flipped or
not, decided once in :mod:`convolab._conv`). Each gets

- ``padded``: ``(N, C_in, *padded_size)`` in the accumulation dtype,
- ``kernel``: ``(C_out, C_in/groups, *kernel_size)`` in the same dtype,
- ``spec``: the frozen :class:`~convolab.spec.ConvSpec` (stride, dilation, groups),

and returns ``(N, C_out, *output_size)`` in that dtype. Each algorithm can say
why it cannot run a problem (:meth:`Algorithm.why_not`), so a caller asking for
one by name gets a reason rather than a wrong answer.

Axis legend used in the comments below: N batch, G groups, C input channels per
group, O output channels per group, P output positions (product of ``*out``),
K kernel taps (product of ``*kernel``).
"""

from __future__ import annotations

import itertools
from math import prod
from typing import ClassVar, Iterator

import numpy as np
import scipy.fft

from ._dtypes import is_exact
from ._errors import fail
from ._settings import current_workspace_limit
from ._window import reverse_spatial, sliding_windows
from .winograd import supports as winograd_supports
from .winograd import winograd_conv
from .spec import ConvSpec

__all__ = ["Algorithm", "Direct", "Im2col", "Gemm", "Shifted", "Depthwise", "Winograd", "FFT", "ALGORITHMS", "ALGORITHM_CHOICES",
           "check_algorithm_name", "select_algorithm"]


class Algorithm:
    """One way of computing a valid, pre-padded, pre-oriented convolution."""

    name: ClassVar[str]

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """``None`` if this algorithm can run the problem, else the reason it cannot."""
        return None

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        raise NotImplementedError

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """Scratch memory beyond the padded input and the output, in bytes."""
        return 0


class Direct(Algorithm):
    """The textbook definition, one output element at a time.

    Each output element is the window it reads times the filter, elementwise,
    summed (a Hadamard product and a sum), which is the same number as the dot
    product of the unrolled window and the unrolled filter. Slow on purpose: it
    is the reference every other algorithm is tested against.
    """

    name = "direct"

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C_in, *out, *kernel)
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        channels_in, channels_out = spec.in_channels_per_group, spec.out_channels_per_group
        for index in np.ndindex(*spec.output_shape):
            n, c_out, *position = index
            group = c_out // channels_out
            window = windows[(n, slice(group * channels_in, (group + 1) * channels_in), *position)]  # (C, *kernel)
            out[index] = np.sum(window * kernel[c_out])
        return out


class Im2col(Algorithm):
    """Unroll every window into a row, then one matrix product per group.

    (Chellapilla, Puri and Simard, 2006.) The unrolled input has one row per
    output position and one column per (input channel, kernel tap); the filter
    matrix has one column per output channel. Groups become a batch of
    independent matrix products.
    """

    name = "im2col"

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        unrolled = unroll(padded, spec)  # (G, N*P, C*K)
        filters = filter_matrix(kernel, spec)  # (G, C*K, O)
        product = np.matmul(unrolled, filters)  # (G, N*P, O)
        return fold_product(product, spec)


def unroll(padded: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The im2col matrix of each group: ``(G, N*P, C*K)``, rows ordered (n, *out)."""
    n, groups, rank = spec.batch, spec.groups, spec.rank
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    windows = windows.reshape(n, groups, spec.in_channels_per_group, *windows.shape[2:])  # (N, G, C, *out, *kernel)
    out_axes = tuple(range(3, 3 + rank))
    kernel_axes = tuple(range(3 + rank, 3 + 2 * rank))
    windows = windows.transpose(1, 0, *out_axes, 2, *kernel_axes)  # (G, N, *out, C, *kernel)
    rows = n * prod(spec.output_size)
    return windows.reshape(groups, rows, spec.in_channels_per_group * prod(spec.kernel_size))  # copies


def filter_matrix(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The filters as matrices: ``(G, C*K, O)``, one column per output channel."""
    filters = kernel.reshape(spec.groups, spec.out_channels_per_group, -1)  # (G, O, C*K)
    return filters.transpose(0, 2, 1)  # (G, C*K, O)


def fold_product(product: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``(G, N*P, O)`` matrix-product result back to ``(N, G*O, *out)``."""
    rank = spec.rank
    out = product.reshape(spec.groups, spec.batch, *spec.output_size, spec.out_channels_per_group)  # (G, N, *out, O)
    out = out.transpose(1, 0, 1 + rank + 1, *range(2, 2 + rank))  # (N, G, O, *out)
    return np.ascontiguousarray(out.reshape(spec.output_shape))


class Gemm(Algorithm):
    """im2col for speed: columns copied contiguously, one large matrix product per block.

    The unrolled block is laid out ``(G, C*K, columns)`` so each output channel's
    row of the product is already in NC(spatial) order and no transpose follows.
    At stride 1, unless that wastes over 10% of the columns (see ``_gemm_wide``),
    the columns run over the *padded* grid ("wide" rows): the tap at
    offset ``j`` then reads one contiguous run of the flattened input, a memcpy
    per (channel, tap); the extra columns past each output row are cropped.
    Blocks go along the batch, then along the first output axis, so the unrolled
    block never exceeds the workspace limit (:func:`convolab.workspace_limit`).
    Small images in large batches unroll with the batch innermost (``_batch_inner``).
    A 1×1 kernel at stride 1 is a plain matrix product with no copy at all.
    """

    name = "gemm"

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        if _is_pointwise(spec):
            return 0
        per_row = _row_bytes(spec, itemsize)
        return min(per_row * spec.batch * spec.output_size[0], max(per_row, current_workspace_limit()))

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, o = spec.groups, spec.out_channels_per_group
        filters = kernel.reshape(groups, o, -1)  # (G, O, C*K)
        if _is_pointwise(spec):
            return _pointwise(padded, filters, spec)
        if _batch_inner(spec, padded.itemsize):
            columns = _batch_inner_columns(padded, spec)  # (G, C*K, P*N)
            product = np.matmul(filters, columns).reshape(groups, o, -1, spec.batch)  # (G, O, P, N)
            product = product.transpose(3, 0, 1, 2)  # (N, G, O, P)
            return np.ascontiguousarray(product).reshape(spec.output_shape)
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        for (n0, n1, r0, r1), columns, grid in _unrolled_blocks(padded, spec):
            product = np.matmul(filters, columns)  # (G, O, nb*rows*rest)
            product = product.reshape(groups, o, n1 - n0, r1 - r0, *grid)  # (G, O, nb, rows, *rest)
            product = product[(Ellipsis, *(slice(0, size) for size in spec.output_size[1:]))]
            product = product.transpose(2, 0, 1, *range(3, 3 + spec.rank))  # (nb, G, O, rows, *out_rest)
            out[n0:n1, :, r0:r1] = product.reshape(n1 - n0, spec.out_channels, r1 - r0, *spec.output_size[1:])
        return out

    def weight_grad(self, padded: np.ndarray, grad_output: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """``dk = g @ columns.T`` summed over the same blocks: ``(G*O, C, *kernel)``."""
        groups, o = spec.groups, spec.out_channels_per_group
        if _batch_inner(spec, padded.itemsize):
            columns = _batch_inner_columns(padded, spec)  # (G, C*K, P*N)
            rows = grad_output.reshape(spec.batch, groups, o, -1).transpose(1, 2, 3, 0)  # (G, O, P, N)
            rows = rows.reshape(groups, o, -1)  # a copy, in the columns' (P, N) order
            return np.matmul(rows, columns.transpose(0, 2, 1)).reshape(spec.weight_shape)
        total = np.zeros((groups, o, spec.in_channels_per_group * prod(spec.kernel_size)), dtype=padded.dtype)
        for (n0, n1, r0, r1), columns, grid in _unrolled_blocks(padded, spec):
            block = grad_output[n0:n1, :, r0:r1]  # (nb, G*O, rows, *out_rest)
            block = block.reshape(n1 - n0, groups, o, r1 - r0, *spec.output_size[1:])
            block = block.transpose(1, 2, 0, *range(3, 3 + spec.rank))  # (G, O, nb, rows, *out_rest)
            if tuple(grid) != tuple(spec.output_size[1:]):  # wide rows: zero gradient on the extra columns
                wide = np.zeros((*block.shape[:4], *grid), dtype=block.dtype)
                wide[(Ellipsis, *(slice(0, size) for size in spec.output_size[1:]))] = block
                block = wide
            total += np.matmul(block.reshape(groups, o, -1), columns.transpose(0, 2, 1))  # (G, O, C*K)
        return total.reshape(spec.weight_shape)


#: Target size of one unrolled block: a quarter of a typical 32 MiB last-level cache.
CACHE_BLOCK_BYTES = 8 * 2**20


def _is_pointwise(spec: ConvSpec) -> bool:
    return all(k == 1 for k in spec.kernel_size)


def _pointwise(padded: np.ndarray, filters: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A 1×1 convolution: per sample, ``(G, O, C) @ (G, C, positions)``; only a stride copies."""
    if any(s > 1 for s in spec.stride):
        padded = padded[(Ellipsis, *(slice(None, None, s) for s in spec.stride))]
    positions = padded.reshape(spec.batch, spec.groups, spec.in_channels_per_group, -1)  # (N, G, C, P)
    product = np.matmul(filters, positions)  # (N, G, O, P)
    return product.reshape(spec.output_shape)


def _wide(spec: ConvSpec) -> bool:
    """Stride 1 everywhere: every tap is a constant shift of the flattened padded input."""
    return all(s == 1 for s in spec.stride)


#: Most extra columns gemm accepts for contiguous copies, as a ratio of wide to real row positions.
WIDE_WASTE = 1.1


def _gemm_wide(spec: ConvSpec) -> bool:
    """Whether gemm's columns run over the padded grid: stride 1, and few wasted columns.

    Wide rows make each tap's copy one contiguous run but compute the
    ``padded - output`` extra columns of every row; on small images (7×7 padded
    to 9×9) that is 65% more work, and the exact (strided) copy wins.
    """
    waste = prod(spec.padded_size[1:]) / max(prod(spec.output_size[1:]), 1)
    return _wide(spec) and waste <= WIDE_WASTE


#: Output rows shorter than this make gemm's strided copies slow (a short inner loop per row).
SHORT_ROW = 16


def _batch_inner(spec: ConvSpec, itemsize: int) -> bool:
    """Whether gemm unrolls with the batch as the innermost axis: small images, many of them, all in one block.

    With 4×4 outputs the usual copy moves runs of 4 values; with the batch innermost
    every run is ``N`` values long (batch-inner copies measured 2-3× faster on
    (32, 16, 4, 4) inputs, the size of a small CNN's later layers). Only when the
    whole unrolled input fits one cache-sized block, so no blocking is needed.
    """
    if _is_pointwise(spec) or _gemm_wide(spec):
        return False
    row = spec.output_size[-1]
    unrolled = spec.in_channels * prod(spec.kernel_size) * prod(spec.output_size) * spec.batch * itemsize
    return row < SHORT_ROW and spec.batch >= 2 * row and unrolled <= min(CACHE_BLOCK_BYTES, current_workspace_limit())


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


def _row_bytes(spec: ConvSpec, itemsize: int) -> int:
    """Bytes of unrolled columns for one sample and one index of the first output axis."""
    rest = spec.padded_size[1:] if _gemm_wide(spec) else spec.output_size[1:]
    return spec.in_channels * prod(spec.kernel_size) * prod(rest) * itemsize


def _unrolled_blocks(padded: np.ndarray, spec: ConvSpec) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]]:
    """Yield ``((n0, n1, r0, r1), columns, grid)`` blocks of the unrolled input.

    ``columns`` is ``(G, C*K, nb*rows*prod(grid))`` for samples ``n0:n1`` and first
    output axis ``r0:r1``; ``grid`` is the shape of the trailing positions of a
    row (the padded sizes when wide, else the output sizes). One buffer is reused.
    """
    groups, c = spec.groups, spec.in_channels_per_group
    taps = prod(spec.kernel_size)
    wide = _gemm_wide(spec)
    grid = tuple(spec.padded_size[1:]) if wide else tuple(spec.output_size[1:])
    row_bytes = _row_bytes(spec, padded.itemsize)
    # Blocks sized for the last-level cache run faster than larger ones (the copy's
    # writes are still cached when the product reads them); never above the limit.
    rows_fit = max(1, min(current_workspace_limit(), CACHE_BLOCK_BYTES) // max(row_bytes, 1))
    rows_total, batch = spec.output_size[0], spec.batch
    if rows_fit >= rows_total:
        samples = max(1, min(batch, rows_fit // rows_total))
        blocks = [(n, min(n + samples, batch), 0, rows_total) for n in range(0, batch, samples)]
    else:
        blocks = [(n, n + 1, r, min(r + rows_fit, rows_total)) for n in range(batch) for r in range(0, rows_total, rows_fit)]
    largest = max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in blocks) * prod(grid)
    buffer = np.empty(groups * c * taps * largest, dtype=padded.dtype)
    if wide:
        plane = prod(spec.padded_size[1:])  # positions in one row of the first axis
        flat = padded.reshape(batch, groups, c, -1)  # (N, G, C, T)
        total = flat.shape[-1]
        strides = [prod(spec.padded_size[i + 1:]) for i in range(spec.rank)]
        offsets = [sum(j * d * st for j, d, st in zip(tap, spec.dilation, strides)) for tap in np.ndindex(*spec.kernel_size)]
    else:
        windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, G*C, *out, *kernel)
    for n0, n1, r0, r1 in blocks:
        nb, rows = n1 - n0, r1 - r0
        count = nb * rows * prod(grid)
        if wide:
            length = rows * plane
            columns = buffer[: groups * c * taps * count].reshape(groups, c, taps, nb, length)
            for t, offset in enumerate(offsets):
                start = r0 * plane + offset
                available = max(0, min(length, total - start))
                source = flat[n0:n1, :, :, start:start + available]  # (nb, G, C, available), contiguous runs
                columns[:, :, t, :, :available] = source.transpose(1, 2, 0, 3)
                if available < length:  # past the input's end: only cropped columns read these
                    columns[:, :, t, :, available:] = 0
        else:
            view = windows[n0:n1, :, r0:r1]  # (nb, G*C, rows, *out_rest, *kernel)
            view = view.reshape(nb, groups, c, *view.shape[2:])
            rank = spec.rank
            view = view.transpose(1, 2, *range(3 + rank, 3 + 2 * rank), 0, *range(3, 3 + rank))  # (G, C, *k, nb, rows, *rest)
            columns = buffer[: groups * c * taps * count].reshape(view.shape)
            np.copyto(columns, view)
        yield (n0, n1, r0, r1), columns.reshape(groups, c * taps, count), grid


class Shifted(Algorithm):
    """Implicit (shifted) GEMM: one matrix product per kernel tap, accumulated; nothing unrolled.

    Tap ``j`` of every window reads the padded input at ``o*s + j*d``. Split the
    padded input into its ``s`` phases per axis (residues mod the stride; no
    copy at stride 1): tap ``j`` then reads phase ``(j*d) mod s`` at ``o +
    (j*d) div s``, a constant shift. Over the flattened phase grid ("wide" rows,
    cropped at the end) that is one contiguous run per (channel, tap), so each
    tap is ``(G, O, C) @ (G, C, positions)`` straight from the input's memory.
    Memory: the phases (the input's size, only when strided) and the wide output.
    """

    name = "shifted"

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        phases = 0 if _wide(spec) else prod(spec.input_shape[:2]) * prod(_phase_size(spec)) * prod(spec.stride)
        wide_out = 2 * spec.batch * spec.out_channels * spec.output_size[0] * prod(_phase_size(spec)[1:])
        return (phases + wide_out) * itemsize

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, c, o = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
        grid = _PhaseGrid(padded, spec)
        phases = grid.phases.reshape(spec.batch, groups, c, *grid.phases.shape[2:])  # (N, G, C, S, T)
        weights = kernel.reshape(groups, o, c, -1)  # (G, O, C, K)
        accumulated = np.zeros((spec.batch, groups, o, grid.length), dtype=padded.dtype)  # (N, G, O, L)
        scratch = np.empty_like(accumulated[0])
        taps = list(grid.taps())
        for n in range(spec.batch):  # one sample at a time: its accumulator stays in cache across taps
            for t, (phase, offset, available) in enumerate(taps):
                source = phases[n, :, :, phase, offset:offset + available]  # (G, C, available): contiguous runs
                np.matmul(weights[..., t], source, out=scratch[..., :available])
                accumulated[n, ..., :available] += scratch[..., :available]  # beyond: only cropped columns
        return grid.crop(accumulated.reshape(spec.batch, spec.out_channels, grid.length))


def _phase_size(spec: ConvSpec) -> tuple[int, ...]:
    """Size of each stride phase of the padded input (the largest, residue 0): ``ceil(P / s)``."""
    return tuple(-(-p // s) for p, s in zip(spec.padded_size, spec.stride))


class _PhaseGrid:
    """The padded input as stride phases over a flattened grid, where every tap is a constant shift.

    ``phases`` is ``(N, C_in, S, T)``: ``S`` residues (product of the strides;
    1, and no copy, at stride 1) of ``T`` flattened positions each. Output
    position ``o`` reads, for tap ``j``, phase ``(j*d) mod s`` at ``o + (j*d) div s``;
    over "wide" rows (``length`` positions: the first output axis times the
    phase grid's trailing size) that is one contiguous run per tap.
    """

    def __init__(self, padded: np.ndarray, spec: ConvSpec):
        self.spec = spec
        self.size = _phase_size(spec)
        if _wide(spec):
            self.phases = padded.reshape(spec.batch, spec.in_channels, 1, -1)
        else:
            grid = np.zeros((spec.batch, spec.in_channels, *spec.stride, *self.size), dtype=padded.dtype)
            for residue in np.ndindex(*spec.stride):
                part = padded[(Ellipsis, *(slice(r, None, s) for r, s in zip(residue, spec.stride)))]
                grid[(slice(None), slice(None), *residue, *(slice(0, n) for n in part.shape[2:]))] = part
            self.phases = grid.reshape(spec.batch, spec.in_channels, prod(spec.stride), -1)
        self.strides = [prod(self.size[i + 1:]) for i in range(spec.rank)]
        self.length = spec.output_size[0] * self.strides[0]

    def taps(self) -> Iterator[tuple[int, int, int]]:
        """``(phase, offset, available)`` per kernel tap, row-major: where its run starts and how much exists."""
        spec, total = self.spec, self.phases.shape[-1]
        for tap in np.ndindex(*spec.kernel_size):
            reach = [j * d for j, d in zip(tap, spec.dilation)]
            phase = int(np.ravel_multi_index([r % s for r, s in zip(reach, spec.stride)], spec.stride))
            offset = sum((r // s) * st for r, s, st in zip(reach, spec.stride, self.strides))
            yield phase, offset, max(0, min(self.length, total - offset))

    def crop(self, wide: np.ndarray) -> np.ndarray:
        """``(N, C_out, length)`` over wide rows to ``(N, C_out, *output_size)``."""
        spec = self.spec
        wide = wide.reshape(spec.batch, spec.out_channels, spec.output_size[0], *self.size[1:])
        cropped = wide[(Ellipsis, *(slice(0, n) for n in spec.output_size[1:]))]
        return np.ascontiguousarray(cropped).reshape(spec.output_shape)


class Depthwise(Algorithm):
    """Depthwise convolution (one input channel per group): a multiply-add per kernel tap.

    Over the stride-phase grid (as in :class:`Shifted`) each tap is one
    contiguous run per channel, scaled by that tap's weight per output channel
    and added; done a sample at a time so the working set stays in cache. No
    matrix product of one channel at a time, and no unrolled copy.
    """

    name = "depthwise"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if spec.in_channels_per_group != 1:
            return f"each group has {spec.in_channels_per_group} input channels; depthwise needs exactly 1"
        return None

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, multiplier = spec.groups, spec.out_channels_per_group
        grid = _PhaseGrid(padded, spec)
        weights = kernel.reshape(groups, multiplier, -1)[..., np.newaxis]  # (G, M, K, 1)
        wide = np.zeros((spec.batch, groups, multiplier, grid.length), dtype=padded.dtype)  # (N, G, M, L)
        scratch = np.empty((groups, multiplier, grid.length), dtype=padded.dtype)
        taps = list(grid.taps())
        for n in range(spec.batch):
            for t, (phase, offset, available) in enumerate(taps):
                source = grid.phases[n, :, phase, offset:offset + available][:, np.newaxis]  # (G, 1, available)
                np.multiply(source, weights[:, :, t], out=scratch[..., :available])
                wide[n, ..., :available] += scratch[..., :available]
        return grid.crop(wide.reshape(spec.batch, spec.out_channels, grid.length))


class Winograd(Algorithm):
    """Winograd's minimal filtering F(m^d, 3^d) for 3-tap (3×3, 3×3×3) stride-1 kernels.

    Each ``m``-wide output tile costs ``(m + 2)^d`` multiplications per (filter,
    channel) pair instead of ``(3m)^d``: 2.25× fewer for F(2×2, 3×3), 4× for
    F(4×4, 3×3) in 2-d, as batched matrix products over the transformed tiles.
    The transforms are generated and verified in :mod:`convolab.winograd`.
    Floating point only; the transforms add rounding (about 1e-6 relative in
    float32 for F(2), a few times that for F(4)).
    """

    def __init__(self, tile: int):
        self.tile = tile
        self.name = f"winograd{tile}"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the transforms round"
        if np.dtype(dtype).kind == "c":
            return "complex inputs are not supported by the Winograd transforms here"
        return winograd_supports(spec)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        a = self.tile + 2
        tiles = prod(-(-o // self.tile) for o in spec.output_size)
        whole = 2 * a**spec.rank * spec.batch * tiles * (spec.in_channels + spec.out_channels) * itemsize
        return min(whole, current_workspace_limit())

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return winograd_conv(padded, kernel, spec, self.tile)


class FFT(Algorithm):
    """Products of Fourier transforms (``scipy.fft``), then every ``stride``-th sample.

    A valid correlation with kernel ``w`` is a circular convolution with the
    reversed kernel, read from offset ``k_eff - 1``; with a transform at least as
    long as the input slab, no wrapped-around sample lands in that range.
    Dilation spreads the kernel with zeros first. Never used for integers, whose
    results must be exact.

    Long inputs are cut into blocks along each axis where that is cheaper
    (overlap-save, the valid-output form of overlap-add): a block of ``B``
    outputs reads ``(B - 1) * stride + k_eff`` inputs, overlapping its neighbour
    by ``k_eff - stride``, and is transformed at a fast length chosen to minimize
    work per output (:func:`fft_block_plan`). The blocks are a strided view with
    one extra axis per blocked axis, so all of them go through one batched
    transform; they share the kernel's transform, and never need adding, even at
    stride > 1.
    """

    name = "fft"

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the FFT rounds"
        return None

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        rank = spec.rank
        axes = tuple(range(-rank, 0))
        if any(d > 1 for d in spec.dilation):
            spread = np.zeros((*kernel.shape[:2], *(d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation))),
                              dtype=kernel.dtype)
            spread[(Ellipsis, *(slice(None, None, d) for d in spec.dilation))] = kernel
            kernel = spread
        extent = kernel.shape[2:]
        block_outputs, lengths = fft_block_plan(spec.padded_size, extent, spec.stride, spec.output_size)
        block_counts = [-(-o // b) for o, b in zip(spec.output_size, block_outputs)]
        slab_sizes = [(b - 1) * st + e for b, st, e in zip(block_outputs, spec.stride, extent)]
        # Every block full: zeros past the high end feed only outputs that are cropped below.
        reach = [(count * b - 1) * st + e for count, b, st, e in zip(block_counts, block_outputs, spec.stride, extent)]
        if any(r > size for r, size in zip(reach, spec.padded_size)):
            grown = np.zeros((*padded.shape[:2], *(max(r, size) for r, size in zip(reach, spec.padded_size))),
                             dtype=padded.dtype)
            grown[(Ellipsis, *(slice(0, size) for size in spec.padded_size))] = padded
            padded = grown
        # Overlapping slabs as extra axes, without copying: (N, G*C, *blocks, *slab).
        spatial_strides = padded.strides[2:]
        slabs = np.lib.stride_tricks.as_strided(
            padded, shape=(*padded.shape[:2], *block_counts, *slab_sizes),
            strides=(*padded.strides[:2], *(b * st * step for b, st, step in zip(block_outputs, spec.stride,
                                                                                    spatial_strides)),
                     *spatial_strides),
            writeable=False)
        complex_input = np.iscomplexobj(padded)
        forward = scipy.fft.fftn if complex_input else scipy.fft.rfftn
        inverse = scipy.fft.ifftn if complex_input else scipy.fft.irfftn
        groups = spec.groups
        kernel_hat = forward(reverse_spatial(kernel, rank), s=lengths, axes=axes)  # (G*O, C, *freq)
        kernel_hat = kernel_hat.reshape(groups, spec.out_channels_per_group, kernel_hat.shape[1],
                                        *(1,) * rank, *kernel_hat.shape[2:])  # broadcast over the blocks
        slab_hat = forward(slabs, s=lengths, axes=axes)  # (N, G*C, *blocks, *freq); short slabs zero-padded
        slab_hat = slab_hat.reshape(spec.batch, groups, spec.in_channels_per_group, *slab_hat.shape[2:])
        product = np.einsum("ngc...,goc...->ngo...", slab_hat, kernel_hat)  # (N, G, O, *blocks, *freq)
        product = product.reshape(spec.batch, spec.out_channels, *product.shape[3:])
        circular = inverse(product, s=lengths, axes=axes)  # (N, G*O, *blocks, *lengths)
        valid = circular[(Ellipsis, *(slice(e - 1, e - 1 + (b - 1) * st + 1, st)
                                      for e, b, st in zip(extent, block_outputs, spec.stride)))]
        # (N, G*O, *blocks, *block_outputs) -> (N, G*O, blocks_1, outputs_1, blocks_2, ...) -> crop
        interleaved = valid.transpose(0, 1, *itertools.chain.from_iterable((2 + i, 2 + rank + i) for i in range(rank)))
        full = interleaved.reshape(spec.batch, spec.out_channels,
                                   *(count * b for count, b in zip(block_counts, block_outputs)))
        return np.ascontiguousarray(full[(Ellipsis, *(slice(0, o) for o in spec.output_size))]).astype(
            padded.dtype, copy=False)


#: Blocks are at least this long (a shorter transform costs more in call overhead than it saves).
FFT_MIN_BLOCK = 128
#: Blocking must save at least this fraction of the work per output to be worth its extra calls.
FFT_BLOCK_GAIN = 0.85


def fft_block_plan(padded_size: tuple[int, ...], extent: tuple[int, ...], stride: tuple[int, ...],
                   output_size: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per axis, how many outputs one FFT block yields and the transform length it uses.

    An axis is transformed whole (one block) unless a shorter fast length ``L``
    does less work per output: ``L log L / B`` with ``B = (L - k_eff) // stride + 1``
    outputs per block, at most :data:`FFT_BLOCK_GAIN` of the whole axis's.

    >>> fft_block_plan((100_000,), (501,), (1,), (99_500,))
    ((3550,), (4050,))
    >>> fft_block_plan((64, 64), (5, 5), (1, 1), (60, 60))  # short axes stay whole
    ((60, 60), (64, 64))
    """
    blocks, lengths = [], []
    for size, e, st, o in zip(padded_size, extent, stride, output_size):
        whole = scipy.fft.next_fast_len(size, real=True)
        best_cost, best = whole * np.log2(max(whole, 2)) / max(o, 1) * FFT_BLOCK_GAIN, (o, whole)
        length = scipy.fft.next_fast_len(max(FFT_MIN_BLOCK, 2 * e), real=True)
        while length < whole:
            outputs = (length - e) // st + 1
            cost = length * np.log2(length) / outputs
            if cost < best_cost:
                best_cost, best = cost, (min(outputs, o), length)
            length = scipy.fft.next_fast_len(length + 1, real=True) if length < 4 * e else \
                scipy.fft.next_fast_len(2 * length, real=True)
        blocks.append(best[0])
        lengths.append(best[1])
    return tuple(blocks), tuple(lengths)


ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (Direct(), Im2col(), Gemm(), Shifted(), Depthwise(), Winograd(2), Winograd(4), FFT())
}

#: Every value the ``algorithm`` argument accepts: the planner's two modes and each algorithm.
ALGORITHM_CHOICES = ("auto", "measure", *ALGORITHMS)


def check_algorithm_name(op: str, name: object) -> str:
    """``name`` if the ``algorithm`` argument accepts it, else a ValueError listing the choices."""
    if not isinstance(name, str) or name not in ALGORITHM_CHOICES:
        fail(ValueError, op, "algorithm", repr(name), f"must be one of {', '.join(map(repr, ALGORITHM_CHOICES))}")
    return name


def select_algorithm(name: str, spec: ConvSpec, dtype: np.dtype) -> Algorithm:
    """The algorithm called ``name``, checked against the problem (the planner handles "auto")."""
    algorithm = ALGORITHMS[check_algorithm_name(spec.op, name)]
    reason = algorithm.why_not(spec, dtype)
    if reason is not None:
        fail(ValueError, spec.op, "algorithm", repr(name), f"cannot run this problem: {reason}")
    return algorithm
