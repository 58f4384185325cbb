"""Unrolled columns by compiled loops: the fused pad + unroll, and its adjoint, the col2im scatter-add.

gemm and folded multiply the unrolled input (im2col's columns,
:func:`._blocking.unrolled_blocks`); in NumPy that needs the padded input first,
a copy of the whole input. :func:`unrolled_blocks_unpadded` writes the same
blocks straight from the input before padding, filling the padding as it
copies (:mod:`._kernels_unroll`).

The input gradient's "scatter" formulation (:func:`convolab._engine.conv_input_grad`,
and so transposed convolution) takes one matrix product per block of samples
for every window's gradient, then adds each window back where it was read. In
NumPy that is :func:`convolab._window.add_windows`, one strided pass over the
gradient per kernel tap; :func:`add_columns` does it in one compiled pass per
plane, dropping zero padding's cells as it goes (:mod:`._kernels_col2im`), with
the same sums in the same order.

Small images in large batches (:func:`._blocking.batch_inner`) take both with
the batch innermost instead (:func:`batch_inner_columns`,
:func:`add_batch_inner_columns`): every copy and addition is then a run of
``N`` values, where a 4x4 image's rows are runs of 4.

All run only where :func:`compiled_columns_missing` says they can (float32 and
float64, one to three spatial dimensions, Numba importable); the callers keep
their NumPy paths otherwise.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Any, Iterator, Sequence

import numpy as np

from .._settings import current_workspace_limit
from .._window import padded_sources
from ..spec import ConvSpec
from ._blocking import batch_inner, block_ranges, largest_block
from ._compiled import kernels, numba_loaded, numba_missing
from ._kernel_layout import KERNEL_RANK, as_kernels_take, shape3, steps3
from ._rates import COPY_RATE, THREAD_GAIN
from ._threads import run_jobs, threads_for

__all__ = ["compiled_columns_missing", "unrolled_blocks_unpadded", "add_columns", "scatter_add_seconds",
           "contiguous_filters", "compiled_batch_inner", "batch_inner_columns", "add_batch_inner_columns", "batch_last",
           "sharing_batch_last", "keeping_columns", "reusing_columns", "KeptColumns", "transposed_matrix"]

# The add-back's cost model (:func:`scatter_add_seconds`), set from its two paths timed alone on the
# decoders' and a strided ResNet layer's shapes in float32: the estimates came within 0.6-1.5x of those
# times, which varied by about as much from run to run on the shared 2-core machine.
#: Fixed cost of the compiled add-back: the kernel's dispatch and the jobs handed out.
CALL_OVERHEAD = 15e-6
#: Bytes per second of the compiled pass (the columns read once, the gradient written once; one thread).
COMPILED_RATE = 8e9
#: NumPy's cost per kernel tap beyond its bytes: a strided slice-add's call.
NUMPY_TAP_COST = 4e-6


def compiled_columns_missing(spec: ConvSpec, dtype: np.dtype) -> str | None:
    """None if the compiled unroll and col2im can run the problem in ``dtype`` (the accumulation dtype), else
    why not; Numba is imported (by :func:`._compiled.numba_missing`) only after the cheaper refusals."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        return f"compiled kernels run float32 and float64 only, not {dtype}"
    if spec.rank > KERNEL_RANK:
        return f"compiled kernels run 1 to {KERNEL_RANK} spatial dimensions, not {spec.rank}"
    return numba_missing()


def unrolled_blocks_unpadded(x: np.ndarray, spec: ConvSpec, scratch_per_column: int = 0,
                             ) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray, tuple[int, ...]]]:
    """:func:`._blocking.unrolled_blocks` with exact columns (never wide rows), from ``x`` ``(N, G*C, *input)``
    before padding: ``spec``'s padding (any mode) is filled as the columns are copied, in jobs shared among
    threads: of (channel, leading taps) by rows (:func:`._kernels_unroll.unroll`), or, where rows are short
    and blocks hold whole samples (:func:`_by_planes`), of (channel, sample) through a padded scratch plane
    (:func:`._kernels_unroll.unroll_planes`).

    Yields ``((n0, n1, r0, r1), columns, grid)``, ``columns`` ``(G, C*K, nb*rows*prod(grid))``, as that does.
    Only where :func:`compiled_columns_missing` says it can run.
    """
    how = ("blocks", scratch_per_column)
    kept = _reused(x, spec, how)
    if kept is not None:  # the one block a forward kept
        yield kept  # type: ignore[misc]
        return
    layout = _unroll_layout(spec, x.itemsize, scratch_per_column, current_workspace_limit())
    source = as_kernels_take(x).reshape(layout.source_shape)  # (N, G*C, D, H, W)
    buffer = np.empty(layout.buffer_values, dtype=x.dtype)
    if layout.by_planes:
        planes = kernels("unroll").unroll_planes
    else:
        unroll = kernels("unroll").unroll
    for block in layout.blocks:
        columns = buffer[:block.values].reshape(block.shape)  # (C, KD, KH, KW, nb, A, B, E)
        if layout.by_planes:
            run = lambda first, last, plane: planes(source, columns, plane, first, last, block.bounds[0],  # noqa: E731
                                                    *layout.steps, *layout.tables)
            scratch = lambda: np.empty(layout.plane_shape, dtype=x.dtype)  # noqa: E731
        else:
            run = lambda first, last, _: unroll(source, columns, first, last, block.bounds[0], *block.origin,  # noqa: E731
                                                *layout.steps, *layout.tables, layout.low_w)
            scratch = lambda: None  # noqa: E731
        run_jobs(block.jobs, block.work, run, scratch)
        if len(layout.blocks) == 1:
            _keep(x, spec, how, (block.bounds, columns.reshape(block.matrix_shape), layout.grid), buffer.nbytes)
        yield block.bounds, columns.reshape(block.matrix_shape), layout.grid


def compiled_batch_inner(spec: ConvSpec, itemsize: int) -> bool:
    """Whether the compiled passes take the batch-inner columns (:func:`batch_inner_columns`,
    :func:`add_batch_inner_columns`): :func:`._blocking.batch_inner`'s problems whose columns hold at least
    :data:`BATCH_INNER_COLUMNS_PER_OUTPUT` values per output value.

    The layout saves on the columns' copy, but each pass pays a transposing
    copy of the output (or of its gradient) into or out of the batch-inner
    order. Measured at two threads on the digits CNN's layers (batch 32): its 4x4
    layer (144 columns' rows for 32 filters) 322 -> 257 us for the forward and
    both gradients; its 8x8 first layer (9 for 16) 144 -> 177, slower.
    """
    return (spec.in_channels * prod(spec.kernel_size) >= BATCH_INNER_COLUMNS_PER_OUTPUT * spec.out_channels
            and batch_inner(spec, itemsize))


#: See :func:`compiled_batch_inner`: the two layers measured lie at 0.56 and 4.5.
BATCH_INNER_COLUMNS_PER_OUTPUT = 2


def batch_inner_columns(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The unrolled input ``(G, C*K, P*N)`` with the batch innermost, straight from ``x`` ``(N, G*C, *input)``
    before padding (any mode): :func:`._kernels_unroll.unroll_batch_inner`, jobs of channels.

    The columns NumPy's batch-inner unroll makes from the padded input, for the
    problems :func:`compiled_batch_inner` gives them to. Only where
    :func:`compiled_columns_missing` says it can run.
    """
    kept = _reused(x, spec, "batch inner")
    if kept is not None:
        return kept  # type: ignore[return-value]
    layout = _batch_inner_layout(spec)
    source = as_kernels_take(x).reshape(layout.source_shape)  # (N, G*C, D, H, W)
    columns = np.empty(layout.columns_shape, dtype=x.dtype)  # (G*C, KD, KH, KW, A, B, E, N)
    unroll = kernels("unroll").unroll_batch_inner
    run_jobs(spec.in_channels, columns.size,  # jobs of channels
             lambda first, last, scratch: unroll(source, columns, scratch, first, last, *layout.steps, *layout.tables),
             lambda: np.empty(layout.scratch_shape, dtype=x.dtype))
    columns = columns.reshape(spec.groups, spec.terms, -1)
    _keep(x, spec, "batch inner", columns, columns.nbytes)
    return columns


def add_batch_inner_columns(columns: np.ndarray, out: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The zero-padded input's gradient ``(N, G*C, *input)`` from every window's gradient with the batch
    innermost, ``columns`` ``(G, C*K, P*N)`` (``filters @ batch_last(g)``), written to ``out`` (C-contiguous,
    any contents) and returned: :func:`._kernels_col2im.add_batch_inner`, the sums of :func:`add_columns` in
    the same order.

    Only for ``spec.padding_mode == "zeros"`` (the padding's cells are dropped)
    and where :func:`compiled_columns_missing` says it can run.
    """
    layout = _batch_inner_layout(spec)
    flat = as_kernels_take(columns).reshape(layout.columns_shape)
    out5 = out.reshape(layout.source_shape)
    add = kernels("col2im").add_batch_inner
    run_jobs(spec.in_channels, columns.size,  # jobs of channels
             lambda first, last, scratch: add(flat, out5, scratch, first, last, *layout.steps, *layout.lows),
             lambda: np.empty(layout.sums_shape, dtype=out.dtype))
    return out


def batch_last(a: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """``a`` ``(N, G*O, *out)`` (an output, or its gradient) as ``(G, O, P*N)``, the batch innermost: the rows
    a product with batch-inner columns takes (a transposing copy; inside :func:`sharing_batch_last`, made once
    for both gradients)."""
    shared = _shared_batch_last.get()
    if shared is not None and shared[0] is a:
        return shared[1]
    rows = transposed_matrix(a.reshape(spec.batch, -1)).reshape(spec.groups, spec.out_channels_per_group, -1)
    if shared is not None:
        _shared_batch_last.set((a, rows))
    return rows


#: Inside :func:`sharing_batch_last`: the last array :func:`batch_last` copied, and its copy; else None.
_shared_batch_last: contextvars.ContextVar[tuple[object, object] | None] = contextvars.ContextVar(
    "convolab_shared_batch_last", default=None)


class _Holding:
    """A ``with`` block that holds a context variable at a value, entered as that value: a class rather than a
    generator-based context manager, as a small network's layers enter five of them a step (0.4 us a block
    against 1.1)."""

    __slots__ = ("variable", "value", "token")

    def __init__(self, variable: contextvars.ContextVar[Any], value: Any) -> None:
        self.variable, self.value = variable, value

    def __enter__(self) -> Any:
        self.token = self.variable.set(self.value)
        return self.value

    def __exit__(self, *exception: object) -> None:
        self.variable.reset(self.token)


def sharing_batch_last() -> _Holding:
    """Within the ``with`` block, :func:`batch_last` of the same array is copied once: a convolution's pullback
    takes both gradients from one ``grad_output``, and both take it batch-last on small images in large batches
    (the digits CNN's second layer: a 7 us copy each). Only for calls that do not change the array in between,
    as the engine's never do (it modifies no input)."""
    return _Holding(_shared_batch_last, (None, None))


#: The most bytes of columns a forward keeps for its layer's weight gradient (:func:`keeping_columns`): a small
#: layer's (the digits CNN's are 74 and 295 KB), never a large one's.
KEPT_COLUMNS_BYTES = 4 * 2**20


class KeptColumns:
    """The columns a forward unrolled from ``source`` for ``spec`` (``how``: the batch-inner columns, or the
    blocks' layout), kept for the weight gradient of the same input (:func:`keeping_columns`)."""

    __slots__ = ("source", "spec", "how", "columns")

    def __init__(self) -> None:
        self.source: object = None
        self.spec: ConvSpec | None = None
        self.how: object = None
        self.columns: object = None


_keeping: contextvars.ContextVar[KeptColumns | None] = contextvars.ContextVar("convolab_keeping", default=None)
_reusing: contextvars.ContextVar[KeptColumns | None] = contextvars.ContextVar("convolab_reusing", default=None)


def keeping_columns() -> _Holding:
    """Within the ``with`` block, the compiled unroll keeps what it copies (one block of at most
    :data:`KEPT_COLUMNS_BYTES`) in the :class:`KeptColumns` the block is entered as; :func:`reusing_columns` hands
    it to the weight gradient of the same input array and problem, which then copies nothing (a layer's forward
    and backward: the digits CNN's two layers unrolled their inputs twice a step)."""
    return _Holding(_keeping, KeptColumns())


def reusing_columns(kept: KeptColumns | None) -> _Holding:
    """Within the ``with`` block, an unroll of ``kept.source`` (the same array object) for ``kept.spec`` returns
    the kept columns. The caller vouches that the array has not changed since (a layer's saved input)."""
    return _Holding(_reusing, kept)


def _reused(x: np.ndarray, spec: ConvSpec, how: object) -> object:
    """The kept columns of ``x`` for ``spec`` and ``how`` inside :func:`reusing_columns`, else None."""
    kept = _reusing.get()
    if kept is None or kept.source is not x or kept.how != how:
        return None
    if kept.spec is not spec and _problem(kept.spec) != _problem(spec):  # a layer's backward has the same spec
        return None
    return kept.columns


def _problem(spec: ConvSpec | None) -> tuple[object, ...] | None:
    """What a spec's columns depend on: every field but the op's name (the forward's, or the gradient's
    public op) and whether the caller's input was batched."""
    if spec is None:
        return None
    return (spec.batch, spec.in_channels, spec.out_channels, spec.groups, spec.input_size, spec.kernel_size,
            spec.stride, spec.padding, spec.dilation, spec.padding_mode, spec.flip)


def _keep(x: np.ndarray, spec: ConvSpec, how: object, columns: object, nbytes: int) -> None:
    """Inside :func:`keeping_columns`, keep ``columns`` (``nbytes`` of them) as unrolled from ``x``."""
    kept = _keeping.get()
    if kept is not None and nbytes <= KEPT_COLUMNS_BYTES:
        kept.source, kept.spec, kept.how, kept.columns = x, spec, how, columns


@dataclass(frozen=True)
class _BatchInnerLayout:
    """What the batch-inner unroll and add-back derive from the problem alone (:func:`_batch_inner_layout`)."""

    source_shape: tuple[int, ...]  # the input (or its gradient) on three axes, (N, C, D, H, W)
    columns_shape: tuple[int, ...]  # (G*C, KD, KH, KW, A, B, E, N)
    scratch_shape: tuple[int, ...]  # the unroll's padded planes, (PD, PH, PW, N)
    sums_shape: tuple[int, ...]  # the add-back's sums, as far as the windows reach, (PD, PH, PW, N)
    steps: tuple[int, ...]  # strides, then dilations, on three axes
    tables: tuple[np.ndarray, ...]  # per axis, the input position each padded cell copies, -1 for a zero
    lows: tuple[int, ...]  # the low padding on three axes


def _source_tables(spec: ConvSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per axis of three, the input position each padded cell copies, -1 for a zero (:func:`padded_sources`:
    every padding mode's map), int64: the tables the compiled unrolls read at the edges."""
    input3 = shape3((1, 1, *spec.input_size))[2:]
    padded3 = shape3((1, 1, *spec.padded_size))[2:]
    padding3 = ((0, 0),) * (KERNEL_RANK - spec.rank) + tuple(spec.padding)
    return tuple(padded_sources(size, pair, spec.padding_mode).astype(np.int64) if padded > size  # type: ignore
                 else np.arange(size, dtype=np.int64) for size, pair, padded in zip(input3, padding3, padded3))


@lru_cache(maxsize=256)
def _batch_inner_layout(spec: ConvSpec) -> _BatchInnerLayout:
    """:class:`_BatchInnerLayout` of ``spec``, made once per problem (the tables are shared by every call, so
    never written; left writeable, as the kernels' contract has it)."""
    padded3 = shape3((1, 1, *spec.padded_size))[2:]
    tables = _source_tables(spec)
    reach = tuple(max((o - 1) * s + (k - 1) * d + 1, low + size) for o, s, k, d, (low, _), size in
                  zip(spec.output_size, spec.stride, spec.kernel_size, spec.dilation, spec.padding, spec.input_size))
    return _BatchInnerLayout(
        shape3(spec.input_shape), (spec.in_channels, *shape3((1, 1, *spec.kernel_size))[2:],
                                    *shape3((1, 1, *spec.output_size))[2:], spec.batch),
        (*padded3, spec.batch), (*shape3((1, 1, *reach))[2:], spec.batch),
        (*steps3(spec.stride), *steps3(spec.dilation)), tables, steps3(tuple(low for low, _ in spec.padding), fill=0))


#: Output rows shorter than this unroll plane by plane (:func:`_by_planes`).
PLANE_ROW = 16
#: ... where a padded plane (the scratch each thread fills) holds at most this many cells.
PLANE_CELLS = 4096


def _by_planes(spec: ConvSpec, blocks: list[tuple[int, int, int, int]]) -> bool:
    """Whether the columns are copied plane by plane (:func:`._kernels_unroll.unroll_planes`): short output
    rows, where the row-by-row loop's arithmetic per row costs more than its copy, blocks of whole samples, and
    a padded plane small enough for a cached scratch."""
    return (spec.output_size[-1] < PLANE_ROW and prod(spec.padded_size) <= PLANE_CELLS
            and all(r0 == 0 and r1 == spec.output_size[0] for _, _, r0, r1 in blocks))


@dataclass(frozen=True)
class _UnrollBlock:
    """One block of :func:`unrolled_blocks_unpadded`: its ``(n0, n1, r0, r1)``, its columns' shape for the
    kernels (``(C, KD, KH, KW, nb, A, B, E)``, ``values`` of them) and for the product (``(G, C*K, count)``),
    the first output position it copies (three axes), its jobs and their work (the values copied)."""

    bounds: tuple[int, int, int, int]
    shape: tuple[int, ...]
    values: int
    matrix_shape: tuple[int, int, int]
    origin: tuple[int, int, int]
    jobs: int
    work: int


@dataclass(frozen=True)
class _UnrollLayout:
    """What :func:`unrolled_blocks_unpadded` derives from the problem alone (:func:`_unroll_layout`)."""

    blocks: tuple[_UnrollBlock, ...]
    grid: tuple[int, ...]
    buffer_values: int
    source_shape: tuple[int, ...]
    steps: tuple[int, ...]
    tables: tuple[np.ndarray, ...]
    low_w: int
    by_planes: bool
    plane_shape: tuple[int, int, int]


@lru_cache(maxsize=1024)
def _unroll_layout(spec: ConvSpec, itemsize: int, scratch_per_column: int, workspace: int) -> _UnrollLayout:
    """What :func:`unrolled_blocks_unpadded` derives from the problem alone, made once per problem (a small
    layer called every step paid more for it than for its copy): the blocks and row grid
    (:func:`._blocking.block_ranges`, which reads the ``workspace`` limit), the shapes and jobs of each block,
    the steps on three axes, per axis the input position each padded cell copies (shared by every call, so never
    written; left writeable, as the kernels' contract has it: a read-only array is another type to Numba), and
    whether it goes plane by plane (:func:`_by_planes`)."""
    ranges, grid = block_ranges(spec, itemsize, False, scratch_per_column)
    groups, channels, taps = spec.groups, spec.in_channels_per_group, prod(spec.kernel_size)
    kernel3 = shape3((1, 1, *spec.kernel_size))[2:]
    tables = _source_tables(spec)
    by_planes = _by_planes(spec, ranges)
    lead = KERNEL_RANK - spec.rank  # unit axes before the problem's first
    blocks = []
    for n0, n1, r0, r1 in ranges:
        nb, rows = n1 - n0, r1 - r0
        count = nb * rows * prod(grid)
        block_out = shape3((1, 1, rows, *spec.output_size[1:]))[2:]  # (A, B, E)
        # jobs: (channel, sample) planes, or (channel, kd, kh) by rows
        jobs = spec.in_channels * (nb if by_planes else kernel3[0] * kernel3[1])
        blocks.append(_UnrollBlock((n0, n1, r0, r1), (spec.in_channels, *kernel3, nb, *block_out),
                                   groups * channels * taps * count, (groups, channels * taps, count),
                                   tuple(r0 if axis == lead else 0 for axis in range(KERNEL_RANK)), jobs,
                                   count * groups * channels * taps))
    return _UnrollLayout(tuple(blocks), grid, groups * channels * taps * largest_block(ranges, grid),
                         shape3(spec.input_shape), (*steps3(spec.stride), *steps3(spec.dilation)), tables,
                         spec.padding[-1][0], by_planes, tuple(len(table) for table in tables))


def add_columns(columns: np.ndarray, out: np.ndarray, stride: Sequence[int], dilation: Sequence[int],
                lows: Sequence[int], samples_inside: bool, *, one_thread: bool = False) -> np.ndarray:
    """Each window's gradient added into the cell it read (:func:`._kernels_col2im.add_columns`), written to
    ``out`` and returned.

    ``columns`` C-contiguous, one matrix product's result reshaped: over a
    block of samples ``(C, *kernel, nb, *out)`` (``samples_inside``), else per
    sample ``(nb, C, *kernel, *out)``; ``out`` ``(nb, C, *size)`` C-contiguous
    and writeable, any contents: the gradient of the input padded by ``lows``
    on the low side, cut to ``size`` (zero padding's cells dropped; ``lows``
    zero and ``size`` the padded size for the whole padded gradient). Jobs of
    planes ``(c, n)`` shared among threads. Short rows go plane by plane
    through each thread's scratch plane (:func:`._kernels_col2im.add_planes`,
    at most :data:`PLANE_CELLS` cells: see :func:`_scratch_plane`), with the
    same bits. Only where :func:`compiled_columns_missing` says it can run.
    """
    rank = len(stride)
    samples, channels = out.shape[:2]
    kernel_size = columns.shape[1:1 + rank] if samples_inside else columns.shape[2:2 + rank]
    taps = prod(kernel_size)
    # rows of positions between channels, taps and samples
    steps = (taps * samples, samples, 1) if samples_inside else (taps, 1, channels * taps)
    flat = as_kernels_take(columns).reshape(columns.size)
    out3 = out.reshape(shape3(out.shape))  # a view: out is C-contiguous
    out_size = tuple(columns.shape[-rank:])
    arguments = (steps3(tuple(kernel_size)), steps3(out_size), *steps, *steps3(tuple(stride)),
                 *steps3(tuple(dilation)), *steps3(tuple(lows), fill=0))
    plane = _scratch_plane(out.shape[2:], tuple(kernel_size), out_size, tuple(stride), tuple(dilation), tuple(lows))
    work = 0 if one_thread else columns.size  # no work: one call on the calling thread (run_jobs)
    if plane is None:
        add = kernels("col2im").add_columns
        run_jobs(samples * channels, work,
                  lambda first, last, _: add(flat, out3, first, last, *arguments), lambda: None)
        return out
    add = kernels("col2im").add_planes
    run_jobs(samples * channels, work, lambda first, last, scratch: add(flat, out3, scratch, first, last,
                                                                                 *arguments),
              lambda: np.empty(plane, dtype=out.dtype))
    return out


#: Output rows shorter than this are added back plane by plane (:func:`_scratch_plane`). Measured on the
#: scatter input gradient (product and add-back, float32, one thread, CPU time): the digits CNN's 4x4 rows
#: 137 -> 93 us, ResNet-18 layer4's 7x7 11.5 -> 10.6-11.0 ms, a stride-2 layer's 8x8 rows 0.95-1.0 -> 0.86-0.89
#: ms; but 14x14 rows 12.0-12.4 -> 12.3-12.4 ms and 13x13 rows under a 5x5 kernel 1.69-1.75 -> 2.01-2.12 ms.
COL2IM_PLANE_ROW = 9


@lru_cache(maxsize=1024)
def _scratch_plane(size: tuple[int, ...], kernel_size: tuple[int, ...], out_size: tuple[int, ...],
                   stride: tuple[int, ...], dilation: tuple[int, ...], lows: tuple[int, ...],
                   ) -> tuple[int, int, int] | None:
    """The scratch plane of :func:`._kernels_col2im.add_planes` (three axes: as far as the windows reach, and
    as the gradient's cells padded by ``lows``), or None where the col2im goes row by row: rows of
    :data:`COL2IM_PLANE_ROW` outputs or more, or a plane of more than :data:`PLANE_CELLS` cells."""
    if out_size[-1] >= COL2IM_PLANE_ROW:
        return None
    extent = tuple(max((o - 1) * s + (k - 1) * d + 1, low + cells)
                   for o, s, k, d, low, cells in zip(out_size, stride, kernel_size, dilation, lows, size))
    if prod(extent) > PLANE_CELLS:
        return None
    return shape3((1, 1, *extent))[2:]


#: Fewest values for which :func:`contiguous_filters` takes the compiled copy: a stem's 64 x 3 x 7 x 7 kernel
#: NumPy copies in 4 us, less than the compiled call (9 us); 256 x 256 x 3 x 3 took 0.46 ms, against 0.32.
TILED_COPY_VALUES = 2**16


def contiguous_filters(kernel: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``kernel`` ``(O, C, *kernel_size)``: by the compiled tiled copy
    (:func:`._kernels_transpose.copy_tiles`, jobs of tiles of filters shared among threads) where it is a view
    of a contiguous weight with its first two axes swapped or not and its spatial axes reversed or not, else by
    NumPy. Only where :func:`compiled_columns_missing` says the compiled kernels run.

    The full correlation's kernel, ResNet-18 layer4's 512 x 512 x 3 x 3 weight
    swapped and reversed, took NumPy 3.7-5 ms to copy (one thread), five to
    seven times a contiguous copy of it.
    """
    if kernel.size < TILED_COPY_VALUES:
        return np.ascontiguousarray(kernel)
    rank = kernel.ndim - 2
    reversed_taps = rank > 0 and all(stride < 0 for stride in kernel.strides[2:])
    unreversed = np.flip(kernel, axis=tuple(range(2, kernel.ndim))) if reversed_taps else kernel
    if unreversed.flags.c_contiguous:
        source, swapped = unreversed, False
    elif unreversed.swapaxes(0, 1).flags.c_contiguous:
        source, swapped = unreversed.swapaxes(0, 1), True  # (C, O, *kernel_size)
    else:
        return np.ascontiguousarray(kernel)
    out = np.empty(kernel.shape, dtype=kernel.dtype)
    copy_tiles, tile = kernels("transpose").copy_tiles, kernels("transpose").TILE
    out3 = out.reshape(*kernel.shape[:2], prod(kernel.shape[2:]))  # (O, C, K)
    run_jobs(-(-kernel.shape[0] // tile), out.size,
              lambda first, last, _: copy_tiles(source, out3, first, last, swapped, reversed_taps), lambda: None)
    return out


def transposed_matrix(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` ``(R, C)`` transposed into a new C-contiguous ``(C, R)`` array: by the compiled register
    transpose (:func:`._kernels_transpose.transpose_columns`, jobs of sixteen columns shared among threads)
    for float32 and float64 once Numba is loaded, else by NumPy. The batch-inner passes' copies of a small
    network's output and gradient, ``(32, 512)`` values: 3.5 us against NumPy's 16-22."""
    if matrix.dtype not in (np.float32, np.float64) or not numba_loaded():  # a copy not worth Numba's import
        return np.ascontiguousarray(matrix.T)
    source = as_kernels_take(matrix)
    out = np.empty(source.shape[::-1], dtype=source.dtype)
    compiled = kernels("transpose")
    transpose = compiled.transpose_columns
    run_jobs(-(-source.shape[1] // compiled.SQUARE), source.size,
              lambda first, last, _: transpose(source, out, first, last), lambda: None)
    return out


def scatter_add_seconds(spec: ConvSpec, dtype: np.dtype) -> tuple[float, float]:
    """Estimated seconds of the add-back of the "scatter" input gradient: NumPy's strided adds, and the
    compiled col2im.

    NumPy (:func:`convolab._window.add_windows`) zeroes the padded gradient,
    then per tap reads a window's worth of columns and reads and writes the
    cells they land on (three values moved per column value), and the
    padding's transpose copies the input's cells out: those bytes at the
    contiguous copy rate (NumPy's strided adds ran at about that), and
    :data:`NUMPY_TAP_COST` per tap. The compiled pass reads each column value
    once and writes each cell of the input's gradient once, at
    :data:`COMPILED_RATE`, shared among threads; plus its call.
    """
    itemsize = np.dtype(dtype).itemsize
    column_values = spec.batch * spec.in_channels * prod(spec.kernel_size) * prod(spec.output_size)
    padded = spec.batch * spec.in_channels * prod(spec.padded_size)
    numpy_bytes = (3 * column_values + 2 * padded) * itemsize
    compiled_bytes = (column_values + padded) * itemsize
    threads = min(threads_for(column_values), spec.batch * spec.in_channels)
    speedup = 1 + THREAD_GAIN * max(threads - 1, 0)
    numpy_seconds = prod(spec.kernel_size) * NUMPY_TAP_COST + numpy_bytes / COPY_RATE["contiguous"]
    return numpy_seconds, CALL_OVERHEAD + compiled_bytes / COMPILED_RATE / speedup
