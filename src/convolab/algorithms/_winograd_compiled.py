"""Winograd's compiled forward: the wrappers that lay the arrays out for :mod:`._kernels_winograd` and
:mod:`._kernels_winograd_fused`, and which of them runs a problem.

:class:`.winograd.Winograd` runs its compiled forward here, in one of three
ways (:func:`_fused_threads`, :func:`_pooled`):

- :func:`compiled_winograd_conv` with the products on the BLAS: per block of
  tiles, the input transform's jobs on the pool, one BLAS product per tile
  position and group, the output transform's jobs (one thread, or filters too
  large for the fused path's L2 cache and too small for the panels);
- the same with the products on the pool (:func:`_pooled_products`: the
  filters in panels, the tile positions shared among threads), so that no BLAS
  threads spin beside the pool's (more than one thread, or wide filters);
- :func:`fused_winograd_conv`: every step of a block of tiles in one thread's
  job, no BLAS (more than one thread, filters that stay in the L2 cache).

The transformed filters come from :func:`_transformed_filters` (``(G, P, C,
O)``) or :func:`_filter_panels` (``(G, P, R, C, LANES)``), both compiled and
shared among threads. The cost model that weighs these paths against the
other algorithms is :meth:`.winograd.Winograd.estimate`'s.

The kernels are imported through the lazy seam (:func:`._compiled.kernels`),
so importing this module imports no Numba.

Axis legend: N samples, G groups, C input channels and O output channels of
one group, P tile positions ``(m + 2)^d``, T tiles of a block, R panels of
``LANES`` output channels.
"""

from __future__ import annotations

import threading
from math import prod
from typing import Callable, Sequence

import numpy as np

from .._settings import current_workspace_limit
from .._window import reshaped_view
from ..spec import ConvSpec
from ._compiled import kernels
from ._kernel_layout import KERNEL_RANK, shape3, steps3
from ._scratch import reused_empty
from ._threads import in_parallel, run_jobs, threads_for

__all__ = ["compiled_winograd_conv", "fused_winograd_conv", "STORE_TILES"]

#: Neighbouring tiles whose outputs the output transform stores together, row by row (:mod:`._kernels_winograd`).
STORE_TILES = 4

#: A block of transformed tiles holds at least this many tiles (the columns of each tile position's matrix
#: product), so that the BLAS runs its products near its rate, ...
BLOCK_TILES = 256
#: ... else about this many bytes of transformed input and products (half the L2 cache of one core here: the
#: products read what the input transform has just written; 8 MiB blocks ran ResNet-18's 56x56 and 28x28
#: layers about 10% slower, single-threaded), ...
TILE_BLOCK_BYTES = 4 * 2**20
#: ... within this many (the workspace limit comes on top).
MAX_TILE_BLOCK_BYTES = 32 * 2**20


#: The fused forward (:func:`fused_winograd_conv`) runs where the transformed filters of one tile position take at
#: most this many bytes (128 input and output channels in float32: with 256 the products on the pool ran 1.05-1.2x
#: faster at one thread, ResNet-18's 14x14 and VGG-16's 56x56 layers), ...
FUSED_FILTER_BYTES = 64 * 2**10
#: The fused forward's block of tiles per job: about this many bytes of transformed input and products, the
#: thread's own scratch (half the L2 cache of one core here), ...
FUSED_BLOCK_BYTES = 1 * 2**20
#: ... but at least this many tiles, so that the filters each job reads ``(P, C, O)`` are used often enough, ...
FUSED_BLOCK_TILES = 64
#: ... and the input laid out channels last for this many bytes of samples at a time (within the workspace limit).
CHANNELS_LAST_BYTES = 4 * 2**20
#: The products run on the pool at one thread where one tile position's transformed filters take at least this many
#: bytes (512 x 512 channels in float32: ResNet-18's 7x7 and VGG-16's 14x14 layers ran 1.05-1.3x faster so, one
#: thread, most of it the panels' filter transform; with 256 channels, or 512 on 28x28 images, the BLAS's
#: products ran 1.05-1.2x faster).
POOLED_FILTER_BYTES = 2**20
#: Jobs of the channels-last copy (:func:`_copy_channels_last`) per thread, ranges of the buffer's rows: a
#: thread that finishes early takes a second.
COPY_JOBS_PER_THREAD = 2

#: Channels of a panel transformed into scratch before its tile positions' runs are copied out
#: (:func:`._kernels_winograd.filter_panels`): each position's run of ``PANEL_SPAN * lanes`` values is then one
#: contiguous copy, where copying each channel's ``lanes`` values to the ``P`` streams in turn kept ``P`` write
#: streams moving a line or two at a time beside the gather's 32 read streams. ResNet-18 layer4's 512 x 512
#: filters, one thread, CPU time, median of 9, three runs alternating with main: F(2) 2.8-3.1 ms -> 2.0-2.5, F(4)
#: 8.2-8.3 -> 6.7-8.0. 32-64 channels (scratch past the L1 cache: 64-128 KiB for F(2)) ran no faster than the
#: channel-at-a-time copy, 8 in between; storing straight to the streams took 11 ms. The input gradient's swapped
#: source, whose gather reads one stream, keeps one channel at a time: spans of 16 ran it 2.4-2.6 -> 2.8-3.1 ms.
PANEL_SPAN = 16
#: Channels whose taps the panels' transform gathers at a time, as :data:`._kernels_winograd.FILTER_CHANNELS` for the
#: other layout. Both constants are the kernel's, given when it is made (:func:`._kernels_winograd.filter_panels`),
#: and size its scratch here, where no Numba is imported.
PANEL_GATHER_CHANNELS = 8


def _transformed_filters(kernel: np.ndarray, spec: ConvSpec, m: int,
                         spare: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``U = G g G^T`` of every filter, laid out for the products: ``(G, P, C, O)`` C-contiguous, by the compiled
    :func:`~._kernels_winograd.filter_transform` (rows ``(g, c)`` shared among threads), which reads the weights
    in place and writes each transformed value once.

    Contiguous, not a transposed view: the BLAS ran the products ``(T, C) @ (C, O)`` over a block of 100-200
    tiles up to 1.8x faster so (64 channels, float32), and no slower with more tiles (``(O, C) @ (C, T)`` ran
    no faster either, 256 and 512 channels). One NumPy product ``(P, K) @ (K, C*O)`` over a transposed copy of
    the weights wrote 2-3 GB/s (18 ms of a 7x7 layer with 512 channels, single-threaded): the copy, and the
    product's 36 rows a power of two apart, which share the caches' sets.

    Returns the filters and the flat buffer holding them, where ``spare`` zeros follow them, for a reader of
    whole runs past their end. The buffer is the calling thread's kept scratch (:func:`._scratch.reused_empty`),
    as :func:`_filter_panels`' is, so neither may outlive the call: F(4) of 512 x 512 filters takes 38 MiB, which
    a fresh allocation faulted in on every call (ResNet-18 layer4's 3x3, two threads: the panels' transform 7.0 ms
    of a 10.7 ms forward), and smaller ones were faulted in too wherever malloc handed their pages back between
    calls.
    An input gradient's kernel, a swapped and reversed view of the forward's weight, is read as it is
    (:func:`_swapped_source`), not copied.
    """
    taps, positions = prod(spec.kernel_size), (m + 2)**spec.rank
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    weight = _swapped_source(kernel, spec) if spec.rank <= 2 else None  # (G, C, O, K), read swapped and reversed
    swapped = weight is not None
    if not swapped:
        weight = np.ascontiguousarray(kernel).reshape(spec.groups, out_channels, channels, taps)  # (G, O, C, K)
    size = spec.groups * positions * channels * out_channels
    buffer = reused_empty((size + spare,), kernel.dtype, "winograd filters")  # kept: see the docstring
    buffer[size:] = 0
    filters = buffer[:size].reshape(spec.groups, positions, channels, out_channels)
    transform = kernels("winograd").filter_transform(m, spec.rank, kernel.dtype.name, swapped)
    block = kernels("winograd").FILTER_BLOCK
    width = -(-out_channels // block) * block  # the filters in whole blocks

    def scratch() -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros(kernels("winograd").FILTER_CHANNELS * taps * width, dtype=kernel.dtype),
                np.zeros(positions * width, dtype=kernel.dtype))

    run_jobs(spec.groups * channels, filters.size,
              lambda first, last, own: transform(weight, filters, first, last, *own), scratch)
    return filters, buffer


def _filter_panels(kernel: np.ndarray, spec: ConvSpec, m: int, lanes: int) -> np.ndarray:
    """``U = G g G^T`` of every filter of ``kernel`` ``(G*O, C, *3)`` in panels of ``lanes`` filters, ``(G, P, R,
    C, lanes)`` (``R = ceil(O / lanes)``, the lanes past the last filter zeros), for
    :func:`._kernels_winograd_fused.panel_products`, by the compiled
    :func:`~._kernels_winograd.filter_panels` (jobs: a panel of a group each, shared among threads). 1-2 axes.

    Each thread's scratch takes :func:`panel_scratch_bytes`.

    The kernel of an input gradient's full correlation is a view of the forward's weight, its channels swapped
    and its taps reversed (:func:`_swapped_source`): the transform reads that weight as it is, where a contiguous
    copy of the view, a gather, took 7.7 ms for 512 x 512 channels (more than the transform).
    """
    taps, positions = prod(spec.kernel_size), (m + 2)**spec.rank
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    weight = _swapped_source(kernel, spec)
    swapped = weight is not None
    if not swapped:
        weight = np.ascontiguousarray(kernel).reshape(spec.groups, out_channels, channels, taps)
    runs = -(-out_channels // lanes)
    panels = reused_empty((spec.groups, positions, runs, channels, lanes), weight.dtype, "winograd filters")
    span = 1 if swapped else PANEL_SPAN  # the swapped source's gather reads one stream: spans measured slower there
    transform = kernels("winograd").filter_panels(m, spec.rank, weight.dtype.name, lanes, swapped, span,
                                                  PANEL_GATHER_CHANNELS)

    def scratch() -> tuple[np.ndarray, np.ndarray]:  # each thread's: a chunk's gathered taps, a span's panels
        return (np.empty(PANEL_GATHER_CHANNELS * taps * lanes, dtype=weight.dtype),
                np.empty(positions * span * lanes, dtype=weight.dtype))

    run_jobs(spec.groups * runs, panels.size, lambda first, last, own: transform(weight, panels, first, last, *own),
              scratch)
    return panels


def panel_scratch_bytes(spec: ConvSpec, m: int, itemsize: int) -> int:
    """One thread's scratch in :func:`_filter_panels`: a chunk of channels' gathered taps and a span of channels'
    panels, :data:`PANEL_SPAN` channels of 32 lanes at every tile position (41 KiB for
    F(2) in float32, 81 KiB for F(4); less for the input gradient's swapped source, one channel at a time)."""
    taps, positions = 3**spec.rank, (m + 2)**spec.rank
    return (PANEL_GATHER_CHANNELS * taps + positions * PANEL_SPAN) * 32 * itemsize


def _swapped_source(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray | None:
    """The contiguous ``(G, C, O, K)`` array ``w`` with ``kernel[g*O + o, c] = w[g, c, o]`` reversed, where
    ``kernel`` is such a view of it (the full correlation's kernel: :func:`convolab._engine._input_grad_full`
    swaps the forward's weight per group, a view with one group, and reverses it), else None."""
    if kernel.flags.c_contiguous:
        return None
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    unreversed = np.flip(kernel, axis=tuple(range(2, kernel.ndim)))
    # a view, or no use: a copy here would cost what reading the kernel as it is saves
    grouped = reshaped_view(unreversed, (spec.groups, out_channels, channels, prod(spec.kernel_size)))
    if grouped is None:
        return None
    weight = grouped.swapaxes(1, 2)
    return weight if weight.flags.c_contiguous else None


def _tile_blocks(spec: ConvSpec, m: int, itemsize: int) -> tuple[list[tuple[int, int, int, int]], tuple[int, ...]]:
    """The blocks of transformed tiles ``(n0, n1, r0, r1)`` (samples, and tile rows of each: a block holds
    whole samples where one sample's tile rows fit, else some rows of one sample), and the tiles per sample
    along the three axes.

    A block holds at least :data:`BLOCK_TILES` tiles where that fits (the
    products' columns), else about :data:`TILE_BLOCK_BYTES` of
    transformed input and products, within :data:`MAX_TILE_BLOCK_BYTES` and
    the workspace limit.
    """
    a = m + 2
    tiles = shape3((1, 1, *(-(-o // m) for o in spec.output_size)))[2:]
    per_row = a**spec.rank * (spec.in_channels + spec.out_channels) * tiles[2] * itemsize  # input and products
    wanted = max(-(-BLOCK_TILES // tiles[2]), TILE_BLOCK_BYTES // max(per_row, 1))
    fit = max(1, min(wanted, min(current_workspace_limit(), MAX_TILE_BLOCK_BYTES) // max(per_row, 1)))
    rows = tiles[0] * tiles[1]  # tile rows of one sample
    if fit >= rows:
        samples = fit // rows
        return [(n, min(n + samples, spec.batch), 0, rows) for n in range(0, spec.batch, samples)], tiles
    return [(n, n + 1, r, min(r + fit, rows)) for n in range(spec.batch) for r in range(0, rows, fit)], tiles


def _channels_last_size(spec: ConvSpec, m: int, tiles: tuple[int, ...]) -> tuple[int, ...]:
    """``(D, H, W)`` of the padded input laid out channels last: every tile's reads (unit leading axes)."""
    return shape3((1, 1, *(t * m + 2 for t in tiles[KERNEL_RANK - spec.rank:])))[2:]


def _copy_channels_last(source: np.ndarray, channels_last: np.ndarray, first: int, last: int,
                        inside: tuple[slice, ...], threads: int) -> None:
    """``channels_last[n - first][inside] = source[n]`` laid out ``(C, D, H, W) -> (D, H, W, C)``, and zeros in
    every other cell of those samples (the padding and the high tiles' reads), for ``first <= n < last``: the
    compiled :func:`._kernels_winograd.channels_last_rows` over the buffer's rows, in :data:`COPY_JOBS_PER_THREAD`
    jobs a thread.

    ``source`` ``(N, C, D, H, W)`` C-contiguous; ``channels_last`` ``(samples, D, H, W, C)``, uninitialised;
    ``inside`` the source's cells in it per spatial axis."""
    rows = (last - first) * channels_last.shape[1] * channels_last.shape[2]
    pieces = max(1, min(rows, COPY_JOBS_PER_THREAD * threads))
    copy_rows = kernels("winograd").channels_last_rows
    lows = tuple(cells.start for cells in inside)

    def copy_worker() -> Callable[[int], None]:
        def copy(piece: int) -> None:
            copy_rows(source, channels_last[:last - first], first, rows * piece // pieces,
                      rows * (piece + 1) // pieces, *lows)
        return copy

    in_parallel(range(pieces), copy_worker, threads)


def compiled_winograd_conv(source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                           spec: ConvSpec, m: int, blas: bool = True, dilated: ConvSpec | None = None) -> np.ndarray:
    """:func:`.winograd.winograd_conv` with the compiled transforms of :mod:`._kernels_winograd` (1 to 3 spatial axes,
    float32 or float64): ``source`` ``(N, G*C, *size)`` is zero-padded by ``padding`` (per axis, as ``(low,
    high)``) to the padded input.

    Per block of tiles (:func:`_tile_blocks`): its samples copied channels
    last into a buffer, its border zeros written beside (:func:`_copy_channels_last`,
    shared among threads), the input transform of the block's tiles into ``(P, T,
    G*C)``, one product per tile position and group ``(P, T, C) @ (P, C, O)``
    on the BLAS, and the output transform straight into the output; the
    transforms' jobs (a tile row each) are shared among threads.

    Without ``blas`` the products are :func:`._kernels_winograd_fused.tile_products`' instead, the tile
    positions shared among the pool's threads: a position's filters (1 MiB for 512 channels) stay in its
    core's L2 cache while the block's tiles stream through, and no BLAS threads spin beside the pool's
    (:func:`_pooled_products`).

    With ``dilated`` (a stride-1 dilated problem of 1-2 axes whose phases' undilated problem is ``spec``:
    :func:`.space_to_batch.phase_spec`), ``spec``'s samples are the phases of ``dilated``'s, ``(N, *d)`` in that
    order, and neither split nor interleaved: ``source`` and ``padding`` are ``dilated``'s, its samples laid out
    channels last as they are (``d`` times a phase's cells per axis), the input transform reads each phase's
    cells every ``d``-th from there and the output transform writes its outputs every ``d``-th into
    ``dilated``'s output (:func:`._kernels_winograd.dilated_transforms`).
    """
    rank, groups = spec.rank, spec.groups
    dtype = source.dtype
    source = np.ascontiguousarray(source.reshape(shape3(source.shape)))  # (N, G*C, D, H, W), as the copy reads it
    fused = None if blas else kernels("winograd_fused")
    kernel = kernel.astype(dtype, copy=False)  # (G, P, C, O) for the BLAS, else (G, P, R, C, LANES)
    filters = _transformed_filters(kernel, spec, m)[0] if blas else _filter_panels(kernel, spec, m, fused.LANES)
    positions, channels, out_channels = filters.shape[1], spec.in_channels_per_group, spec.out_channels_per_group
    blocks, tiles = _tile_blocks(spec, m, dtype.itemsize)
    rows_per_sample = tiles[0] * tiles[1]
    tile_counts = np.array(tiles, dtype=np.int64)
    phases = 1 if dilated is None else prod(dilated.dilation)
    out = np.empty((spec if dilated is None else dilated).output_shape, dtype=dtype)
    out3 = out.reshape(shape3(out.shape))
    held = _samples_laid_out(spec, m, dtype.itemsize, phases)
    most = max(((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in blocks), default=0) * tiles[2]
    lows = steps3(tuple(low for low, _ in padding), fill=0)
    inside = tuple(slice(low, low + size) for low, size in zip(lows, source.shape[2:]))
    steps = steps3(() if dilated is None else dilated.dilation)
    # Kept between calls, as the two below (:func:`._scratch.reused_empty`): every cell written by the copies
    channels_last = reused_empty((held, *(d * size for d, size in zip(steps, _channels_last_size(spec, m, tiles))),
                                  spec.in_channels), dtype, "winograd channels last")
    # Without the BLAS, whole register tiles and one more row (the positions' planes not a power of two apart);
    # the rows past a block's tiles are multiplied and never read: zeros at first, then finite.
    tile_step = 1 if blas else (fused.TILES_WIDE if dtype.itemsize == 4 else fused.TILES_NARROW)
    layout_most = most if blas else -(-most // tile_step) * tile_step + 1
    # Fresh arrays here were mapped and unmapped by malloc every call: ResNet-18 layer3's F(4), 15 MB each, faulted
    # in 2,575 pages a call, 9.5 ms against 5.2 with the buffers kept (two threads).
    inputs = reused_empty((positions * layout_most * spec.in_channels,), dtype, "winograd tiles")
    products = reused_empty((positions * layout_most * spec.out_channels,), dtype, "winograd products")
    if dilated is None:
        input_tiles, output_tiles = kernels("winograd").transforms(m, rank, dtype.name)
    else:  # the phases' kernels, given the dilation (three axes) and the phases per sample after their scratch
        on_phases = (np.array(steps, dtype=np.int64), phases)
        input_phases, output_phases = kernels("winograd").dilated_transforms(m, rank, dtype.name)
        input_tiles = lambda *arguments: input_phases(*arguments, *on_phases)  # noqa: E731
        output_tiles = lambda *arguments: output_phases(*arguments, *on_phases)  # noqa: E731
    a = m + 2
    ad, ah = (a if rank == 3 else 1), (a if rank >= 2 else 1)
    md, mh = (m if rank == 3 else 1), (m if rank >= 2 else 1)

    def input_scratch() -> tuple[np.ndarray, ...]:
        return tuple(np.empty((ad, ah, a, spec.in_channels), dtype=dtype) for _ in range(2))

    def output_scratch() -> tuple[np.ndarray, ...]:
        return (np.empty((md, ah, a, spec.out_channels), dtype=dtype),
                np.empty((md, mh, a, spec.out_channels), dtype=dtype),
                np.empty((STORE_TILES, md, mh, m, spec.out_channels), dtype=dtype))

    work = positions * (spec.in_channels + spec.out_channels) * most * a
    copied = (0, 0)
    for n0, n1, r0, r1 in blocks:
        s0, s1 = _source_samples(n0, n1, phases)
        if s0 < copied[0] or s1 > copied[1]:  # (N, C, D, H, W) -> (N, D, H, W, C), inside the zeros
            copied = (s0, min(source.shape[0], s0 + held))
            _copy_channels_last(source, channels_last, *copied, inside, threads_for(work))
        count = ((n1 - n0) * rows_per_sample if r1 - r0 == rows_per_sample else r1 - r0) * tiles[2]
        layout = count if blas else -(-count // tile_step) * tile_step + 1
        block_in = inputs[:positions * layout * spec.in_channels].reshape(positions, layout, spec.in_channels)
        block_in[:, count:] = 0  # multiplied past the tiles (whole register tiles), never read: zeros, not garbage
        row0 = (n0 - copied[0] * phases) * rows_per_sample + r0  # the block's first tile row, from the first laid out
        run_jobs(count // tiles[2], work, lambda first, last, scratch: input_tiles(
            channels_last, block_in, tile_counts, row0, first, last, *scratch), input_scratch)
        block_out = products[:positions * layout * spec.out_channels].reshape(positions, layout, spec.out_channels)
        if blas:
            for g in range(groups):  # (P, T, C) @ (P, C, O) per group: stacks of 2-d products, one BLAS call each
                np.matmul(block_in[:, :, g * channels:(g + 1) * channels], filters[g],
                          out=block_out[:, :, g * out_channels:(g + 1) * out_channels])
        else:
            _pooled_products(fused, block_in, filters, block_out, layout - 1, tile_step, spec)
        run_jobs(count // tiles[2], work, lambda first, last, scratch: output_tiles(
            block_out, out3, tile_counts, n0 * rows_per_sample + r0, first, last, *scratch), output_scratch)
    return out


def _source_samples(n0: int, n1: int, phases: int) -> tuple[int, int]:
    """The samples of the source whose phases are the phase samples ``n0:n1`` (``phases`` per sample)."""
    return n0 // phases, -(-n1 // phases)


def _samples_laid_out(spec: ConvSpec, m: int, itemsize: int, phases: int = 1) -> int:
    """The samples :func:`compiled_winograd_conv` lays out channels last at a time: those of its largest block of
    tiles; with ``phases`` (its ``dilated`` problem's, ``spec`` the phases' problem) as many more as fit
    :data:`MAX_TILE_BLOCK_BYTES` and the workspace limit, so that a sample whose phases two blocks share is laid
    out once (ASPP's 36 phases of one sample, 4.7 MB, span two blocks)."""
    blocks, tiles = _tile_blocks(spec, m, itemsize)
    most = max((s1 - s0 for s0, s1 in (_source_samples(n0, n1, phases) for n0, n1, _, _ in blocks)), default=0)
    if phases == 1:
        return most
    per_sample = phases * prod(_channels_last_size(spec, m, tiles)) * spec.in_channels * itemsize
    fit = min(current_workspace_limit(), MAX_TILE_BLOCK_BYTES) // max(per_sample, 1)
    return max(most, min(spec.batch // phases, fit))


def _pooled_products(fused, block_in: np.ndarray, filters: np.ndarray, block_out: np.ndarray, tiles: int,
                     tile_step: int, spec: ConvSpec) -> None:
    """``block_out[p, :tiles, group's O] = block_in[p, :tiles, group's C] @ filters[g, p]`` for every tile
    position ``p`` and group ``g`` by :func:`._kernels_winograd_fused.panel_products`, the positions shared
    among the pool's threads. ``block_in`` ``(P, T, G*C)`` and ``block_out`` ``(P, T, G*O)`` with ``T >
    tiles``, ``tiles`` a multiple of ``tile_step``; ``filters`` in panels, ``(G, P, R, C, LANES)``."""
    positions, layout = block_in.shape[0], block_in.shape[1]
    channels, out_channels = spec.in_channels_per_group, spec.out_channels_per_group
    inputs_flat, products_flat, filters_flat = block_in.reshape(-1), block_out.reshape(-1), filters.reshape(-1)
    plane_in, plane_out, per_position = layout * spec.in_channels, layout * spec.out_channels, prod(filters.shape[2:])

    def multiply(first: int, last: int, _) -> None:  # tile positions first:last of every group
        for g in range(spec.groups):
            fused.panel_products(inputs_flat[first * plane_in:], filters_flat[(g * positions + first) * per_position:],
                                products_flat[first * plane_out:], last - first, tiles, channels, out_channels,
                                spec.in_channels, g * channels, spec.out_channels, g * out_channels, tile_step,
                                layout)

    run_jobs(positions, 2 * positions * tiles * spec.in_channels * out_channels, multiply, lambda: None)


def _fused_layout(spec: ConvSpec, m: int, itemsize: int) -> tuple[tuple[int, ...], int, int, int]:
    """The fused forward's blocking: the tiles per sample along three axes, the tile rows per job, the tiles of
    a job's scratch (whole register tiles of :mod:`._kernels_winograd_fused`) and the samples laid out channels
    last at a time."""
    positions = (m + 2)**spec.rank
    tiles = shape3((1, 1, *(-(-o // m) for o in spec.output_size)))[2:]
    per_row = positions * (spec.in_channels + spec.out_channels) * tiles[2] * itemsize
    rows = max(-(-FUSED_BLOCK_TILES // tiles[2]), FUSED_BLOCK_BYTES // max(per_row, 1))
    per_sample = prod(_channels_last_size(spec, m, tiles)) * spec.in_channels * itemsize
    budget = min(CHANNELS_LAST_BYTES, current_workspace_limit())
    samples = max(1, min(spec.batch, budget // max(per_sample, 1)))
    rows = max(1, min(samples * tiles[0] * tiles[1], rows))
    job_tiles = -(-rows * tiles[2] // 8) * 8  # whole register tiles: eight (float32) or four (float64) tiles
    return tiles, rows, job_tiles, samples


def fused_winograd_conv(source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                        spec: ConvSpec, m: int) -> np.ndarray:
    """:func:`compiled_winograd_conv` with every step of a block of tiles in one thread: no BLAS.

    The samples are laid out channels last (a NumPy transposing copy per
    sample's rows, shared among threads); then each job, a few tile rows
    (:data:`FUSED_BLOCK_BYTES` of transformed input and products), runs the
    input transform into its thread's scratch, the products of every tile
    position (:func:`._kernels_winograd_fused.tile_products`, per group), and
    the output transform into the output. A thread's block never leaves its
    caches between the steps, and no BLAS threads spin beside the pool's.
    """
    rank, groups = spec.rank, spec.groups
    dtype = source.dtype
    fused = kernels("winograd_fused")
    source = np.ascontiguousarray(source.reshape(shape3(source.shape)))  # (N, G*C, D, H, W), as the copy reads it
    # (G, P, C, O), and the flat buffer holding it with LANES zeros past its end: a last run reads past its row
    filters, filters_flat = _transformed_filters(kernel.astype(dtype, copy=False), spec, m, fused.LANES)
    positions, channels, out_channels = filters.shape[1], spec.in_channels_per_group, spec.out_channels_per_group
    tiles, rows_per_job, job_tiles, samples = _fused_layout(spec, m, dtype.itemsize)
    rows_per_sample = tiles[0] * tiles[1]
    tile_counts = np.array(tiles, dtype=np.int64)
    tile_step = fused.TILES_WIDE if dtype.itemsize == 4 else fused.TILES_NARROW
    out = np.empty(spec.output_shape, dtype=dtype)
    out3 = out.reshape(shape3(out.shape))
    lows = steps3(tuple(low for low, _ in padding), fill=0)
    inside = tuple(slice(low, low + size) for low, size in zip(lows, source.shape[2:]))
    channels_last = reused_empty((min(samples, spec.batch), *_channels_last_size(spec, m, tiles), spec.in_channels),
                                 dtype, "winograd channels last")  # every cell written by the copies
    input_tiles, output_tiles = kernels("winograd").transforms(m, rank, dtype.name)
    a = m + 2
    ad, ah = (a if rank == 3 else 1), (a if rank >= 2 else 1)
    md, mh = (m if rank == 3 else 1), (m if rank >= 2 else 1)
    group_size = positions * channels * out_channels
    threads = threads_for(spec.macs)

    own = threading.local()  # each thread's scratch, kept from one group of samples to the next

    def tiles_worker() -> Callable[[tuple[int, int, int]], None]:
        if not hasattr(own, "inputs"):  # the rows past a job's last tile are read: zeros at first, then finite
            # One row more than the tiles, so that the positions' planes are not a power of two apart
            own.inputs = np.zeros((positions, job_tiles + 1, spec.in_channels), dtype=dtype)
            own.products = np.empty((positions, job_tiles + 1, spec.out_channels), dtype=dtype)
            own.along = tuple(np.empty((ad, ah, a, spec.in_channels), dtype=dtype) for _ in range(2))
            own.back = (np.empty((md, ah, a, spec.out_channels), dtype=dtype),
                        np.empty((md, mh, a, spec.out_channels), dtype=dtype),
                        np.empty((STORE_TILES, md, mh, m, spec.out_channels), dtype=dtype))
        inputs, products, along, back = own.inputs, own.products, own.along, own.back
        inputs_flat, products_flat = inputs.reshape(-1), products.reshape(-1)

        def run_job(job: tuple[int, int, int]) -> None:
            n0, r0, r1 = job  # tile rows r0:r1 of the samples laid out from n0 on
            count = -(-(r1 - r0) * tiles[2] // tile_step) * tile_step
            input_tiles(channels_last, inputs, tile_counts, r0, 0, r1 - r0, *along)
            for g in range(groups):
                fused.tile_products(inputs_flat, filters_flat[g * group_size:], products_flat, positions, count,
                                    channels, out_channels, spec.in_channels, g * channels, spec.out_channels,
                                    g * out_channels, tile_step, job_tiles + 1)
            output_tiles(products, out3, tile_counts, n0 * rows_per_sample + r0, 0, r1 - r0, *back)
        return run_job

    for n0 in range(0, spec.batch, samples):
        n1 = min(n0 + samples, spec.batch)
        _copy_channels_last(source, channels_last, n0, n1, inside, threads)
        rows = (n1 - n0) * rows_per_sample
        in_parallel([(n0, r, min(r + rows_per_job, rows)) for r in range(0, rows, rows_per_job)],
                    tiles_worker, threads)
    return out


def _pooled(spec: ConvSpec, dtype: np.dtype) -> bool:
    """Whether :func:`compiled_winograd_conv` runs its products on the pool (:func:`_pooled_products`), not the
    BLAS: in 1-2 dimensions (the panels' filter transform), on more than one thread (the BLAS's threads, spinning
    after each product, take the cores from the pool's), and on one thread where one tile position's
    transformed filters take at least :data:`POOLED_FILTER_BYTES`."""
    filter_bytes = spec.in_channels_per_group * spec.out_channels_per_group * np.dtype(dtype).itemsize
    threads = threads_for(spec.macs)
    return spec.rank <= 2 and (threads > 1 or filter_bytes >= POOLED_FILTER_BYTES)


def _fused_threads(spec: ConvSpec, dtype: np.dtype) -> int:
    """The threads the fused forward would run on, or 1 where the unfused one runs instead: on one thread (the
    BLAS's products measured 4-25% faster there), or with more than :data:`FUSED_FILTER_BYTES` of transformed
    filters per tile position (the fused products stream them from the L2 cache for every eight tiles: 1.1-1.5x
    slower than the pool's with 256 channels, 1.3-1.9x with 512)."""
    filter_bytes = spec.in_channels_per_group * spec.out_channels_per_group * np.dtype(dtype).itemsize
    if filter_bytes > FUSED_FILTER_BYTES:
        return 1
    return threads_for(spec.macs)


def _fused_bytes(spec: ConvSpec, m: int, itemsize: int) -> int:
    """The fused forward's memory: the transformed filters (and a run of lanes), the samples laid out channels
    last, and each thread's block of transformed tiles and products."""
    tiles, _, job_tiles, samples = _fused_layout(spec, m, itemsize)
    positions = (m + 2)**spec.rank
    filters = positions * spec.out_channels * spec.in_channels_per_group + 32
    channels_last = min(samples, spec.batch) * prod(_channels_last_size(spec, m, tiles)) * spec.in_channels
    block = positions * (job_tiles + 1) * (spec.in_channels + spec.out_channels)
    threads = max(1, _fused_threads(spec, np.dtype(f"f{itemsize}")))
    return (filters + channels_last + threads * block) * itemsize
