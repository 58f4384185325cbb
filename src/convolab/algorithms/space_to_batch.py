"""space_to_batch: a stride-1 dilated convolution as one undilated convolution of its phase sub-images.

Along an axis with dilation ``d`` (stride 1), output ``o`` reads the padded
input at ``o + d*k``. Write ``o = r + d*a`` with phase ``r = o mod d``: it
reads ``P[r + d*(a + k)] = Q_r[a + k]`` where ``Q_r = P[r::d]``, so every
phase is an *undilated*, stride-1, valid correlation of the sub-image ``Q_r``
with the same kernel (atrous convolution by space to batch). With the padded
length ``L_p`` made a multiple of ``d`` by zeros at the high end, every phase
holds ``M = ceil(L_p / d)`` cells and gives ``M - K + 1 = ceil(out / d)``
outputs (``out = L_p - d*(K - 1)``), of which phase ``r`` keeps
``ceil((out - r) / d)``; an axis with ``d = 1`` has one phase, itself.

The ``prod(d)`` phases of every sample are extra samples of one undilated
problem, which runs them all with Winograd's tiles (F(2), or F(3) or F(4)
where its estimate is enough below F(2)'s: :data:`MARGINS`; 2.25-4x fewer
multiplications than the direct sum).

In place (:func:`in_place`: the compiled transforms, 1-2 axes, the unfused
forward) nothing is split or interleaved: the samples are laid out channels
last as Winograd lays out any input (a sample's padded cells are every
phase's cells), the input transform reads a phase's tile every ``d``-th cell
from there, and the output transform writes its outputs every ``d``-th into
the output (:func:`~._kernels_winograd.dilated_transforms`; the phases
``(N, D_1, ..., D_k)`` in that order), all in the pool's jobs; its products are
the pool's (:func:`~._winograd_compiled._pooled_products`), measured faster than
the BLAS's here at one thread too. Otherwise (3-d, no Numba, or where the
fused forward would run) the phases are split into ``(D_1, ..., D_k, N)``
samples by NumPy's strided copies and interleaved back after. The split reads
the input before padding where the padding is zeros (each phase's cells of
the padding stay zero), else the padded copy the engine makes (any padding
mode: pad first, then split).

It mixes values across outputs as its inner Winograd does (within a tile of a
phase), so it is a :class:`~.winograd.Winograd` to the planner: "auto" takes
it only for finite data, within Winograd's error bound (with the larger growth
of F(2) and F(4), whichever runs) and with enough channels; split, only on one
thread, where it measured faster (:meth:`SpaceToBatch.estimate`).

Axis legend: N samples, R phases (``prod(dilation)``), C input channels, O
output channels, M a phase's cells per axis.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from math import inf, prod
from typing import Sequence

import numpy as np

from .._settings import current_thread_count, current_workspace_limit
from ..spec import ConvSpec
from ._rates import COPY_RATE
from ._threads import threads_for
from ._winograd_compiled import (_channels_last_size, _fused_threads, _samples_laid_out, _tile_blocks,
                                 compiled_winograd_conv)
from .winograd import DATA_CHECK_RATE, Winograd, _checked_size, _compiles

__all__ = ["SpaceToBatch"]

#: Fixed cost of a call beside the inner Winograd's: the phases' slice copies' dispatch (Python and NumPy).
CALL_OVERHEAD = 30e-6
#: Cost of each phase's two strided copies (split and interleave), their dispatch.
PHASE_OVERHEAD = 4e-6
#: Cost of each row the copies move (a phase's rows are a few cells: ASPP's dilation 6 leaves 6-8, where the
#: copies' starts cost as much as their bytes). Fitted at one thread on ASPP's layer (split and interleave
#: 6-8 ms: 11.6 MB at the strided copy rate and 405k rows) and DeepLab's (1.5 ms: 5.2 MB, 74k rows).
ROW_COST = 7e-9
#: Fixed cost of a call beside the inner Winograd's where the phases run in place (:func:`in_place`): the dilated
#: transforms' arguments, the samples to lay out per block.
IN_PLACE_OVERHEAD = 10e-6
#: The phases take F(3) or F(4) only where its estimate is below this fraction of F(2)'s (the smallest estimate
#: over its margin wins). F(4): on DeepLab's layer (17x17 outputs a phase, F(4) estimated 0.80 of F(2)) it measured
#: 1.05-1.27x slower in place (one thread, CPU time, the pool's products: 10.1-10.7 ms against 8.0-9.3), its 5x5
#: tiles holding 20x20 outputs for 17x17 and its transforms dearer; on ASPP's (6x6, estimated 1.08) 1.4x slower.
#: F(3) (session 29, two threads, wall, median of 4 blocks of 20 calls): DeepLab's estimated 0.76 of F(2), measured
#: 0.81 (10.1 -> 8.2 ms); ASPP's estimated 0.77, measured 0.87 (16.4 -> 14.2 ms), its 3x3 tiles fitting the 6x6
#: phases whole, where F(2)'s take 9 and F(4)'s 4 tiles of 16 outputs.
MARGINS = {2: 1.0, 3: 0.9, 4: 0.75}


class SpaceToBatch(Winograd):
    """Stride-1 dilated 3-tap convolutions: the phases of every sample as extra samples of one undilated
    Winograd problem."""

    def __init__(self) -> None:
        self.name = "space_to_batch"
        self.tile = 0  # no tile of its own: its inner Winograd's
        self._inner = (Winograd(2), Winograd(3), Winograd(4))

    def error_growth(self, rank: int) -> float:
        """The larger of its inner Winograds' error growths: a tile's values are a phase's, the input's own."""
        return max(inner.error_growth(rank) for inner in self._inner)

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if any(s != 1 for s in spec.stride):
            return f"stride {spec.stride}: space to batch splits stride-1 outputs into phases"
        if all(d == 1 for d in spec.dilation):
            return f"dilation {spec.dilation}: nothing to split (Winograd runs undilated problems itself)"
        reason = self._inner[0].why_not(phase_spec(spec), dtype)
        return None if reason is None else f"its phases' undilated problem: {reason}"

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """The inner Winograd's estimate on the phases' problem, ``inf`` where neither inner Winograd has a
        finite one (their NumPy transforms, 1-d, 3-d) or where its memory (:meth:`workspace_bytes`) exceeds the
        workspace limit; and:

        - where the phases run in place (:func:`in_place`), :data:`IN_PLACE_OVERHEAD` more, and the data check
          "auto" makes counted on the input, not on the phases' cells (the inner estimate's copies are this
          path's: the samples laid out channels last, ``d`` times a phase's cells per axis, are every phase's
          cells). Every step then runs in the inner Winograd's jobs, shared among threads as its own estimate
          shares them: at one thread, 0.6-1.0 ms of ASPP's 18.5 and DeepLab's 11 ran outside them (the
          buffers' set-up, the Python between the jobs). Its products are the pool's at any thread count, where the inner
          estimate counts the BLAS's at one thread: the pool's measured 1.03-1.2x faster there on these
          phases (CPU time: ASPP 18.5 against 19.1 ms, DeepLab's F(4) 11.1 against 13.3), so the estimate
          is a little high;
        - else the split (every phase cell written, at NumPy's strided copy rate, and :data:`ROW_COST` per row)
          and the interleave (every output, likewise), a fixed cost and one per phase; and ``inf`` on more than one
          thread. There the split path measured slower than what "auto" picks otherwise (two threads, wall, min of
          25 calls in shuffled order, session 12: DeepLab's forward 15.3 ms against 14.5, its input gradient 20.5
          against 15.4, ASPP's forward 39.4 against 30.5): its copies stay on the calling thread."""
        inner, seconds = _inner_choice(self._inner, spec, dtype)
        if seconds == inf or self.workspace_bytes(spec, dtype.itemsize) > current_workspace_limit():
            return inf
        sub = phase_spec(spec)
        if in_place(spec, dtype):
            phase_cells = prod(spec.dilation) * prod(sub.input_size)  # what the inner estimate checks, per channel
            checked = spec.batch * spec.in_channels * (prod(_checked_size(spec)) - phase_cells)
            return seconds + IN_PLACE_OVERHEAD + checked / DATA_CHECK_RATE * dtype.itemsize / 4
        if threads_for(spec.macs) > 1:
            return inf  # see the docstring: measured slower than the other picks on two threads
        copied = (prod(sub.input_shape) + prod(spec.output_shape)) * dtype.itemsize
        rows = prod(sub.input_shape[:-1]) + prod(sub.output_shape[:-1])
        return (seconds + CALL_OVERHEAD + prod(spec.dilation) * PHASE_OVERHEAD + copied / COPY_RATE["strided"]
                + rows * ROW_COST)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """The inner Winograd's workspace on the phases; split, the phases and their outputs too. In place, the
        samples laid out channels last (:func:`~._winograd_compiled._samples_laid_out`: every phase of each), not
        a block's phases."""
        sub = phase_spec(spec)
        dtype = np.dtype(f"f{itemsize}")
        inner, _ = _inner_choice(self._inner, spec, dtype)
        if not in_place(spec, dtype):
            return (prod(sub.input_shape) + prod(sub.output_shape)) * itemsize + inner.workspace_bytes(sub, itemsize)
        blocks, tiles = _tile_blocks(sub, inner.tile, itemsize)
        per_phase = prod(_channels_last_size(sub, inner.tile, tiles)) * spec.in_channels * itemsize
        phase_samples = max((n1 - n0 for n0, n1, _, _ in blocks), default=0)  # what the inner workspace counts
        samples = _samples_laid_out(sub, inner.tile, itemsize, prod(spec.dilation))
        return inner.workspace_bytes(sub, itemsize) + (samples * prod(spec.dilation) - phase_samples) * per_phase

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return self._run_phases(padded, ((0, 0),) * spec.rank, kernel, spec)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: with zero padding the split reads the input itself."""
        if spec.padding_mode != "zeros":
            return super(Winograd, self).run_unpadded(x, kernel, spec)  # Algorithm's: the engine's padding, then run
        return self._run_phases(x, spec.padding, kernel, spec)

    def _run_phases(self, source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                    spec: ConvSpec) -> np.ndarray:
        """Split ``source`` (padded by ``padding`` zeros) into phases, run the inner Winograd, interleave; where
        :func:`in_place` says, neither: the compiled transforms read and write the phases where they are."""
        sub = phase_spec(spec)
        inner, _ = _inner_choice(self._inner, spec, source.dtype)
        if in_place(spec, source.dtype):
            return compiled_winograd_conv(source, padding, kernel, sub, inner.tile, blas=False, dilated=spec)
        phase_out = inner.run(split_phases(source, padding, spec), kernel, sub)  # (R*N, O, *Mo)
        return interleave_phases(phase_out, spec)


def in_place(spec: ConvSpec, dtype: np.dtype) -> bool:
    """Whether the phases run in place (:func:`~._winograd_compiled.compiled_winograd_conv` given ``dilated``,
    no split and no interleave): the compiled transforms of 1-2 axes and their unfused forward (where the fused
    one would run, :func:`~._winograd_compiled._fused_threads`, the phases are split and interleaved)."""
    sub = phase_spec(spec)
    return spec.rank <= 2 and _compiles(dtype, sub) and _fused_threads(sub, dtype) == 1


def phase_spec(spec: ConvSpec) -> ConvSpec:
    """The undilated valid problem of ``spec``'s phases: ``prod(dilation) * N`` samples of ``M`` cells per axis."""
    cells = tuple(-(-size // d) for size, d in zip(spec.padded_size, spec.dilation))
    return dataclasses.replace(spec, batched=True, batch=prod(spec.dilation) * spec.batch, input_size=cells,
                               padding=((0, 0),) * spec.rank, dilation=(1,) * spec.rank, padding_mode="zeros")


def _inner_choice(inner: Sequence[Winograd], spec: ConvSpec, dtype: np.dtype) -> tuple[Winograd, float]:
    """The inner Winograd for the phases' problem, and its estimate: the smallest estimate over its margin
    (:data:`MARGINS`: F(2) unless another's is enough below it). Remembered per problem and the settings its
    estimates read (two estimates took 0.2 ms of every call, on the calling thread)."""
    dtype = np.dtype(dtype)
    return _remembered_choice(tuple(inner), spec, dtype, current_thread_count(), current_workspace_limit(),
                              _compiles(dtype, spec))


@lru_cache(maxsize=256)
def _remembered_choice(inner: tuple[Winograd, ...], spec: ConvSpec, dtype: np.dtype, threads: int, limit: int,
                       compiles: bool) -> tuple[Winograd, float]:
    """:func:`_inner_choice` for these settings (``threads``, ``limit`` and ``compiles`` only key the memory)."""
    sub = phase_spec(spec)
    choices = [(algorithm, algorithm.estimate(sub, dtype)) for algorithm in inner]
    return min(choices, key=lambda choice: choice[1] / MARGINS[choice[0].tile])  # F(2) first: it wins a tie


def _phase_reads(length: int, low: int, d: int, r: int, cells: int) -> tuple[slice, slice]:
    """Along one axis: which source cells phase ``r`` holds, and where in its ``cells``.

    The source (``length`` cells, ``low`` zeros before it) is padded cell ``p = i + low``; phase ``r`` holds
    padded cells ``r + d*a``. Its first source cell is ``i0 = r + d*a0 - low`` with ``a0`` the first ``a`` past
    the low padding; from there every ``d``-th source cell, as many as remain (and fit its cells).
    """
    first = max(0, -(-(low - r) // d))  # a0
    start = r + d * first - low  # i0, in [0, d)
    count = max(0, min(-(-(length - start) // d), cells - first))
    return slice(start, start + d * (count - 1) + 1 if count else start, d), slice(first, first + count)


def split_phases(source: np.ndarray, padding: Sequence[tuple[int, int]], spec: ConvSpec) -> np.ndarray:
    """``(R*N, C, *M)``: the phases of ``source`` ``(N, C, *size)`` padded by ``padding`` zeros (and zeros at
    the high end up to ``d*M``), phases outer in axis order, then the samples."""
    cells = phase_spec(spec).input_size
    phases = np.zeros((*spec.dilation, *source.shape[:2], *cells), dtype=source.dtype)  # (*d, N, C, *M)
    for phase in np.ndindex(*spec.dilation):
        reads = [_phase_reads(size, low, d, r, m) for size, (low, _), d, r, m in
                 zip(source.shape[2:], padding, spec.dilation, phase, cells)]
        phases[(*phase, slice(None), slice(None), *(target for _, target in reads))] = \
            source[(slice(None), slice(None), *(read for read, _ in reads))]
    return phases.reshape(prod(spec.dilation) * source.shape[0], source.shape[1], *cells)


def interleave_phases(phase_out: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The output ``(N, O, *out)`` from the phases' outputs ``(R*N, O, *Mo)``: phase ``r`` to outputs
    ``r::d``, its first ``ceil((out - r) / d)`` per axis."""
    by_phase = phase_out.reshape(*spec.dilation, spec.batch, *phase_out.shape[1:])  # (*d, N, O, *Mo)
    out = np.empty(spec.output_shape, dtype=phase_out.dtype)
    for phase in np.ndindex(*spec.dilation):
        kept = tuple(-(-(size - r) // d) for size, r, d in zip(spec.output_size, phase, spec.dilation))
        targets = tuple(slice(r, None, d) for r, d in zip(phase, spec.dilation))
        out[(slice(None), slice(None), *targets)] = by_phase[(*phase, ..., *(slice(0, k) for k in kept))]
    return out
