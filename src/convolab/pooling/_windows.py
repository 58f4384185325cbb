"""The window engines fixed-window pooling runs on: separable reductions, the phase grid, gathers, running max.

Max and average pooling are defined by the one window primitive: the input is
padded (:func:`convolab._window.pad`) and
:func:`convolab._window.sliding_windows` views every window as
``(N, C, *out, *kernel)`` without copying. The references beside each op
(``max._max_pool_reference``, ``average._avg_pool_reference`` and its
transpose) compute exactly that, tap by tap. The ops run the faster engines
here, with the same results, because NumPy walks a strided tap view one short
row at a time:

- a box's maximum and sum are separable, so values alone and average pooling
  reduce one spatial axis at a time with ``k`` slices along it, each slice
  touching only the outputs whose tap is inside the input (no padding is
  built); the average's gradient is the transpose, axis by axis
  (:func:`_reduce_windows`, :func:`_spread_windows`);
- max pooling with indices gathers every window at once for small problems
  (where per-call cost dominates: :func:`_window_table`), and otherwise
  rearranges the input into a *phase grid* on which each tap is one contiguous
  slice (:func:`_phase_grid`);
- a huge kernel is first cut to the taps that read the input in some window
  (:func:`_trim_kernel`).

Where each tap of each window reads (``o*s + j*d - low``), as a table, as one
slice pair per tap, as the taps that ever read the input, or on the stride
phases, comes from the spec's shared :class:`convolab._geometry.WindowGeometry`
(:attr:`PoolSpec.geometry`); what is pooling's own here is that arithmetic in
flat plane coordinates (:func:`_index_tables`: max pooling returns flat indices).

The running maximum (:func:`_keep_max`, which carries the tie rule of
:mod:`convolab.pooling`) and the gradient's scatter into input planes are
shared with adaptive max pooling.

Axis legend used in comments: ``N`` batch, ``C`` channels, ``*in`` input
positions, ``*out`` output positions, ``*k`` kernel taps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache, reduce
from math import prod
from typing import Any, Sequence

import numpy as np

from .._geometry import WindowGeometry
from ._compiled_windows import compiled_pool_missing, scatter_compiled
from ._spec import PoolSpec

# ---------------------------------------------------------------------------
# Flat plane indices (what max pooling returns)
# ---------------------------------------------------------------------------


def _plane_strides(size: Sequence[int]) -> tuple[int, ...]:
    """Row-major element strides of a ``size`` plane: flat index = sum(position * stride)."""
    return tuple(prod(size[dim + 1:]) for dim in range(len(size)))


@lru_cache(maxsize=256)
def _index_tables(geometry: WindowGeometry) -> tuple[np.ndarray, np.ndarray]:
    """How a window's chosen tap becomes its flat plane index: ``origin[o] + offset_by_code[code]``.

    The tap arithmetic ``o*s + j*d - low`` split into the window's part and the
    tap's, each in flat plane coordinates (pooling's own: only max pooling
    returns flat indices). ``code`` is ``k^d - tap`` (tap in row-major window
    order; code 0 is never chosen). Returns read-only ``offset_by_code``
    ``(k^d + 1,)`` and ``window_origins`` ``(*out)``, the plane index of
    ``o * stride - low``, both int64.
    """
    plane_strides = _plane_strides(geometry.input_size)
    offsets = [sum(j * d * st for j, d, st in zip(tap, geometry.dilation, plane_strides))
               for tap in np.ndindex(*geometry.kernel_size)]
    offset_by_code = np.array([0, *reversed(offsets)], dtype=np.int64)
    window_origins = reduce(np.add.outer, [(np.arange(out, dtype=np.int64) * s - low) * st for out, s, low, st
                                           in zip(geometry.output_size, geometry.stride, geometry.low, plane_strides)])
    offset_by_code.setflags(write=False)
    window_origins.setflags(write=False)
    return offset_by_code, window_origins


# ---------------------------------------------------------------------------
# Separable window reductions: a window's maximum or sum, one axis at a time
# ---------------------------------------------------------------------------
#
# A box's maximum (and sum) is the maximum over one axis of the maxima over the
# others, so each spatial axis is reduced in turn with k strided slices along it.
# A tap j reads o * s + j * d - L; it is in the input for the outputs o in one
# interval [lo, hi), so padding is never materialized: each tap updates only its
# interval. This makes k passes per axis over arrays that shrink axis by axis
# (the k^d taps of the window view would be k^d passes over the output, each a
# strided view that NumPy walks one short row at a time).


def _trim_kernel(spec: PoolSpec) -> PoolSpec:
    """``spec`` with each axis's kernel cut to its reaching taps (``WindowGeometry.reaching_taps``), or ``spec``.

    The cut taps read padding in every window, which max pooling skips, so the
    windows' values and indices are the same; every per-tap loop then runs over
    the taps that matter (a kernel of ``2*10**5`` per axis has ``k^2 = 4*10**10``).
    The kernel keeps the taps from the first run's start to the last run's end.
    The low padding shrinks by the taps cut before the first kept one (never
    below zero: a tap that starts inside the input is kept), the output size is
    the original's, and the high side is whatever the kept windows need.
    """
    cut = _cut_kernel(spec.geometry)
    if cut is None:
        return spec
    kernel, padding = cut
    trimmed = replace(spec, kernel_size=kernel, padding=padding, ceil_mode=False)
    trimmed.__dict__["output_size"] = spec.output_size  # the same windows: pinned, not recomputed from the cut kernel
    return trimmed


@lru_cache(maxsize=256)
def _cut_kernel(geometry: WindowGeometry) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]] | None:
    """:func:`_trim_kernel`'s kernel and padding for one geometry (None: nothing to cut), cached."""
    runs = [geometry.reaching_taps(dim) or (range(0, k),) for dim, k in enumerate(geometry.kernel_size)]
    firsts = [min(taps[0].start, low // d) for taps, low, d in zip(runs, geometry.low, geometry.dilation)]
    kernel = tuple(taps[-1].stop - first for taps, first in zip(runs, firsts))
    if kernel == geometry.kernel_size:
        return None
    return kernel, tuple((low - first * d, 0) for low, first, d in zip(geometry.low, firsts, geometry.dilation))


def _reduce_axis(y: np.ndarray, axis: int, taps: tuple[tuple[slice, slice], ...], out: int, ufunc: np.ufunc,
                 identity: Any, dtype: np.dtype) -> np.ndarray:
    """``ufunc`` over the ``taps`` (:attr:`PoolSpec.reduction_taps`) along ``axis``, which becomes ``out`` long."""
    lead = (slice(None),) * axis
    reduced = np.empty(y.shape[:axis] + (out,) + y.shape[axis + 1:], dtype=dtype)
    full = [lead + (read,) for reached, read in taps if reached == slice(0, out)]
    if len(full) >= 2:
        ufunc(y[full[0]], y[full[1]], out=reduced, dtype=dtype)
    elif full:
        reduced[...] = y[full[0]]
    else:
        reduced.fill(identity)
    for reached, read in taps[min(len(full), 2):]:
        target = reduced[lead + (reached,)]
        ufunc(target, y[lead + (read,)], out=target, dtype=dtype)
    return reduced


def _reduce_windows(x: np.ndarray, spec: PoolSpec, ufunc: np.ufunc, identity: Any, dtype: np.dtype) -> np.ndarray:
    """``ufunc`` (``np.maximum`` or ``np.add``) over every window's input taps, ``(N, C, *out)`` of ``dtype``.

    ``identity`` starts an output no single tap reaches along some axis (rare:
    padding on both sides of a short input). ``dtype`` is also the ufunc's loop
    type, so integers are summed as float64, never in their own (overflowing) type.
    """
    y = x
    for dim, out in enumerate(spec.output_size):
        y = _reduce_axis(y, dim + 2, spec.reduction_taps[dim], out, ufunc, identity, dtype)
    return y


def _spread_windows(grad: np.ndarray, spec: PoolSpec, dtype: np.dtype) -> np.ndarray:
    """The transpose of ``_reduce_windows(..., np.add, ...)``: add each window's value to every tap it read.

    Axis by axis; along one axis, tap j adds ``grad[lo:hi]`` to the inputs it
    read. Where the windows tile the axis (stride = kernel, no dilation or
    padding, nothing left over) each input is in exactly one window: a repeat.
    Returns ``(N, C, *in)`` of ``dtype``.
    """
    z = grad.astype(dtype, copy=False)
    geometry = spec.geometry
    axes = zip(geometry.input_size, geometry.kernel_size, geometry.stride, geometry.dilation, geometry.low,
               geometry.output_size)
    for axis, (size, k, s, d, low, out) in reversed(list(enumerate(axes, start=2))):
        if s == k and (d == 1 or k == 1) and low == 0 and out * k == size:
            z = np.repeat(z, k, axis=axis)
            continue
        lead = (slice(None),) * axis
        spread = np.zeros(z.shape[:axis] + (size,) + z.shape[axis + 1:], dtype=dtype)
        # Taps reading one phase (the inputs i with the same i % stride) may overlap, so they add;
        # the first tap of a phase lands on zeros only, so it copies (a write instead of a read and a write).
        phases_written = set()
        for reached, read in spec.reduction_taps[axis - 2]:
            target = spread[lead + (read,)]
            if read.start % s in phases_written:
                np.add(target, z[lead + (reached,)], out=target)
            else:
                target[...] = z[lead + (reached,)]
                phases_written.add(read.start % s)
        z = spread
    return z


# ---------------------------------------------------------------------------
# The phase grid: every kernel tap as one contiguous slice
# ---------------------------------------------------------------------------
#
# Why: a tap of sliding_windows is a strided (N, C, *out) view, and NumPy runs a
# ufunc over such a view one W_out-long row at a time, with no SIMD for a
# stride-2 row: about 5x slower per pass than one long contiguous loop, and the
# pools make k^d passes. So the input is rearranged once into a grid on which
# every tap is a flat shift of a contiguous array.
#
# Along one dimension (stride s, dilation d, low padding L), tap j of window o reads
#     o * s + j * d - L = (o + q_j) * s + a_j,  a_j = (j*d - L) mod s,  q_j = floor((j*d - L) / s),
# the element at index o + q_j of the input's phase a_j (positions a_j, a_j + s, ...): the shared
# stride-phase decomposition, WindowGeometry.stride_phases.
# Phase a's grid holds its indices m = g + min(q) for g in [0, M), M = out + max(q) - min(q);
# cells outside the input hold a fill (-inf, or the integer minimum). Flatten a phase's
# (N, C, *M) grid: tap j over every window at once is the slice starting at
#     shift_j = sum_dim (q_j - min q) * (grid stride of dim),
# and window o's result lands at the flat position of grid cell g = o. Cells with
# some g_dim >= out_dim are junk (they read into the next row or plane) and are
# cropped away; the last `reach` = max shift cells are never computed.


@dataclass(frozen=True, eq=False)
class _PhaseGridLayout:
    """The phase-grid layout of one pooling geometry (see the comment above)."""

    output_size: tuple[int, ...]
    grid_size: tuple[int, ...]  # M per spatial dimension
    phases: tuple[tuple[int, ...], ...]  # the phases some tap reads, one a_j per dimension
    copies: tuple[tuple[tuple[slice, ...], tuple[slice, ...]], ...]  # per phase: input slices -> grid slices
    borders: tuple[tuple[tuple[slice, ...], ...], ...]  # per phase: grid regions that hold the fill
    taps: tuple[tuple[int, int], ...]  # per tap in row-major window order: (phase number, flat shift)
    reach: int  # the largest shift
    reads_fill: bool  # whether some window reads a fill cell (padding, or ceil_mode's overhang)
    offset_by_code: np.ndarray  # from _index_tables
    window_origins: np.ndarray  # from _index_tables, (*out)

    @property
    def crop(self) -> tuple[slice, ...]:
        """The grid cells that are windows: ``g < out`` in every dimension."""
        return tuple(slice(0, out) for out in self.output_size)


@lru_cache(maxsize=256)
def _phase_grid(geometry: WindowGeometry) -> _PhaseGridLayout:
    """The phase grid of a pooling geometry; pure integer bookkeeping, cached."""
    input_size, kernel_size, stride, output_size = (geometry.input_size, geometry.kernel_size, geometry.stride,
                                                    geometry.output_size)
    rank = geometry.rank
    # per dimension: phase a_j and grid index shift q_j of every tap (the shared stride-phase decomposition)
    axes = [geometry.stride_phases(dim) for dim in range(rank)]
    q_min = [min(axis.shift) for axis in axes]
    grid_size = tuple(axis.span(out) for axis, out in zip(axes, output_size))
    grid_strides = _plane_strides(grid_size)
    tap_phases, shifts = [], []
    for phase, shift in geometry.phase_taps():  # row-major window order
        tap_phases.append(phase)
        shifts.append(sum((q - lo) * st for q, lo, st in zip(shift, q_min, grid_strides)))
    phases = tuple(sorted(set(tap_phases)))
    copies, borders = [], []
    for phase in phases:
        source, target, fill = [], [], []
        for dim, (a, s, size, lo, cells) in enumerate(zip(phase, stride, input_size, q_min, grid_size)):
            inside = -(-(size - a) // s) if a < size else 0  # phase length: positions a, a + s, ... < size
            first, stop = -lo, max(-lo, min(cells, inside - lo))  # grid cells g holding m = g + lo in [0, inside)
            count = stop - first
            source.append(slice(a, a + count * s, s))
            target.append(slice(first, stop))
            whole = [slice(None)] * rank
            fill += [tuple(whole[:dim] + [edge] + whole[dim + 1:])
                     for edge, empty in ((slice(0, first), first == 0), (slice(stop, cells), stop == cells))
                     if not empty]
        copies.append((tuple(source), tuple(target)))
        borders.append(tuple(fill))
    offset_by_code, window_origins = _index_tables(geometry)
    reads_fill = any(low > 0 or (out - 1) * s + (k - 1) * d - low >= size for size, k, s, d, low, out
                     in zip(input_size, kernel_size, stride, geometry.dilation, geometry.low, output_size))
    return _PhaseGridLayout(
        output_size=output_size, grid_size=grid_size, phases=phases, copies=tuple(copies), borders=tuple(borders),
        taps=tuple((phases.index(a), shift) for a, shift in zip(tap_phases, shifts)), reach=max(shifts),
        reads_fill=reads_fill, offset_by_code=offset_by_code, window_origins=window_origins,
    )


def _fill_grid(x: np.ndarray, grid: _PhaseGridLayout, fill: Any) -> np.ndarray:
    """``x`` ``(N, C, *in)`` rearranged into its phase grids, ``(phases, N * C * prod(M))``."""
    cells = np.empty((len(grid.phases), *x.shape[:2], *grid.grid_size), dtype=x.dtype)  # (P, N, C, *M)
    for phase, (source, target), borders in zip(cells, grid.copies, grid.borders):
        phase[(..., *target)] = x[(..., *source)]
        for region in borders:
            phase[(..., *region)] = fill
    return cells.reshape(len(grid.phases), -1)


def _tap_slices(cells: np.ndarray, grid: _PhaseGridLayout) -> list[np.ndarray]:
    """Each tap of every window, in row-major window order: contiguous 1-d slices of ``cells``."""
    span = cells.shape[1] - grid.reach
    return [cells[phase, shift:shift + span] for phase, shift in grid.taps]


def _crop(flat: np.ndarray, grid: _PhaseGridLayout, lead: tuple[int, ...]) -> np.ndarray:
    """The window cells of a flat ``(N * C * prod(M),)`` grid array, as an ``(N, C, *out)`` view."""
    return flat.reshape(*lead, *grid.grid_size)[(..., *grid.crop)]


# ---------------------------------------------------------------------------
# The window table: every window's taps gathered at once (small problems)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _WindowTable:
    """Every window's taps as plane indices, for one pooling geometry."""

    gather: np.ndarray  # (k^d, out) intp: the plane index tap t of window o reads; prod(in) for padding
    code: np.ndarray  # (k^d, out): k^d - t where tap t is an input sample, 0 for padding (never chosen)
    offset_by_code: np.ndarray  # from _index_tables
    window_origins: np.ndarray  # from _index_tables, flattened to (out,)
    windows: np.ndarray | None  # (out, k^d) int64, gather window by window, where no tap reads padding; else None


@lru_cache(maxsize=256)
def _window_table(geometry: WindowGeometry) -> _WindowTable:
    """The window table of a pooling geometry; integer bookkeeping, cached."""
    count, plane = prod(geometry.kernel_size), prod(geometry.input_size)
    plane_strides = _plane_strides(geometry.input_size)
    positions = [geometry.tap_positions(dim) for dim in range(geometry.rank)]  # per dim: (out_d, k_d)
    reads = [geometry.reads_input(dim) for dim in range(geometry.rank)]  # per dim: (out_d, k_d)
    gather = np.empty((count, prod(geometry.output_size)), dtype=np.intp)
    code = np.zeros(gather.shape, dtype=np.min_scalar_type(count))
    for number, tap in enumerate(np.ndindex(*geometry.kernel_size)):
        inside = reduce(np.logical_and.outer, [read[:, j] for read, j in zip(reads, tap)])  # (*out)
        flat = reduce(np.add.outer, [position[:, j] * st for position, j, st in zip(positions, tap, plane_strides)])
        gather[number] = np.where(inside, flat, plane).ravel()
        code[number] = np.where(inside, count - number, 0).ravel()
    gather.setflags(write=False)
    code.setflags(write=False)
    windows = None
    if gather.size and int(gather.max()) < plane:  # the compiled pass's layout, taken where no window pads
        windows = np.ascontiguousarray(gather.T, dtype=np.int64)
        windows.setflags(write=False)
    offset_by_code, window_origins = _index_tables(geometry)
    return _WindowTable(gather=gather, code=code, offset_by_code=offset_by_code, window_origins=window_origins.ravel(),
                        windows=windows)


# ---------------------------------------------------------------------------
# Running maximum and scatter: shared by fixed and adaptive max pooling
# ---------------------------------------------------------------------------


def _keep_max(best: np.ndarray, best_index: np.ndarray, candidate: np.ndarray,
              candidate_index: np.ndarray, valid: np.ndarray | bool) -> None:
    """One step of PyTorch's running maximum, updating ``best``/``best_index`` in place.

    A window's first valid tap is taken (``best_index < 0`` until then); a later
    tap replaces it only if strictly greater or NaN (``x != x`` only for NaN;
    never for integers). So ties go to the first tap and NaN wins, the last NaN.
    """
    take = valid & ((best_index < 0) | (candidate > best) | (candidate != candidate))
    np.copyto(best, candidate, where=take)
    np.copyto(best_index, candidate_index, where=take)


#: ``np.add.at`` got its fast path for a 1-d index in NumPy 1.25; older versions scatter with bincount.
_FAST_UFUNC_AT = np.lib.NumpyVersion(np.__version__) >= "1.25.0"


#: From this many gradient values, the compiled scatter: measured 1.6x faster than ``np.add.at`` at 8192 and
#: 1.1-2x on the suite's pools, but 2-3 µs slower (its dispatch) below about a thousand.
_COMPILED_SCATTER_MIN = 1 << 12


def _scatter_to_planes(grad_output: np.ndarray, indices: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Add each ``grad_output`` element at its flat ``indices`` position of its (n, c) plane.

    ``grad_output`` and ``indices`` are ``(N, C, *out)``, the indices max
    pooling's own (each inside its plane); the result is ``(N, C, *input_size)``
    in ``grad_output``'s dtype. The compiled scatter
    (:func:`._compiled_windows.scatter_compiled`) runs where it can.
    """
    if grad_output.size >= _COMPILED_SCATTER_MIN and compiled_pool_missing(grad_output.dtype, len(input_size)) is None:
        return scatter_compiled(grad_output, indices, input_size)  # one pass per plane, the same sums
    batch, channels = indices.shape[:2]
    plane = prod(input_size)
    plane_start = (np.arange(batch * channels) * plane).reshape(batch, channels, *[1] * (indices.ndim - 2))
    flat = (plane_start + indices).ravel()  # index into (N * C * plane,)
    if _FAST_UFUNC_AT:
        # ufunc.at has a fast path for a 1-d index since NumPy 1.25 (faster than bincount);
        # an element picked by several windows sums their gradients in grad_output's dtype.
        summed = np.zeros(batch * channels * plane, dtype=grad_output.dtype)
        np.add.at(summed, flat, grad_output.ravel())
        return summed.reshape(batch, channels, *input_size)
    summed = np.bincount(flat, weights=grad_output.astype(np.float64, copy=False).ravel(),
                         minlength=batch * channels * plane)
    return summed.reshape(batch, channels, *input_size).astype(grad_output.dtype, copy=False)
