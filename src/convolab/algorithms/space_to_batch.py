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

The ``prod(d)`` phases of every sample are laid out as extra samples, ``(D_1,
..., D_k, N)`` in that order, one undilated problem runs them all with
Winograd's tiles (F(2) or F(4), whichever its own estimate prefers on that
problem: 2.25-4x fewer multiplications than the direct sum), and each phase's
outputs are copied back to every ``d``-th output. The split reads the input
before padding where the padding is zeros (each phase's cells of the padding
stay zero), else the padded copy the engine makes (any padding mode: pad
first, then split).

It mixes values across outputs as its inner Winograd does (within a tile of a
phase), so it is a :class:`~.winograd.Winograd` to the planner: "auto" takes
it only for finite data, within Winograd's error bound (with the larger growth
of F(2) and F(4), whichever runs) and with enough channels; and only on one
thread, where it measured faster (:meth:`SpaceToBatch.estimate`).

Axis legend: N samples, R phases (``prod(dilation)``), C input channels, O
output channels, M a phase's cells per axis.
"""

from __future__ import annotations

import dataclasses
from math import inf, prod
from typing import Sequence

import numpy as np

from .._settings import current_workspace_limit
from ..spec import ConvSpec
from ._rates import COPY_RATE
from .compiled import _threads
from .winograd import Winograd

__all__ = ["SpaceToBatch"]

#: Fixed cost of a call beside the inner Winograd's: the phases' slice copies' dispatch (Python and NumPy).
CALL_OVERHEAD = 30e-6
#: Cost of each phase's two strided copies (split and interleave), their dispatch.
PHASE_OVERHEAD = 4e-6
#: Cost of each row the copies move (a phase's rows are a few cells: ASPP's dilation 6 leaves 6-8, where the
#: copies' starts cost as much as their bytes). Fitted at one thread on ASPP's layer (split and interleave
#: 6-8 ms: 11.6 MB at the strided copy rate and 405k rows) and DeepLab's (1.5 ms: 5.2 MB, 74k rows).
ROW_COST = 7e-9


class SpaceToBatch(Winograd):
    """Stride-1 dilated 3-tap convolutions: the phases of every sample as extra samples of one undilated
    Winograd problem."""

    def __init__(self) -> None:
        self.name = "space_to_batch"
        self.tile = 0  # no tile of its own: its inner Winograd's
        self._inner = (Winograd(2), Winograd(4))

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
        """The inner Winograd's estimate on the phases' problem, plus the split (every phase cell written, at
        NumPy's strided copy rate, and :data:`ROW_COST` per row) and the interleave (every output, likewise), a
        fixed cost and one per phase. ``inf`` where neither inner Winograd has a finite estimate (their NumPy
        transforms, 1-d, 3-d), or where its memory (:meth:`workspace_bytes`) exceeds the workspace limit.

        ``inf`` too where it would run on more than one thread. There it measured slower than what "auto" picks
        otherwise (two threads, wall, min of 25 calls in shuffled order: DeepLab's forward 15.3 ms against 14.5,
        its input gradient 20.5 against 15.4, ASPP's forward 39.4 against 30.5): its copies stay on the calling
        thread (NumPy holds the GIL in them) and its inner Winograd on many small phase images gained little
        from the second thread (DeepLab 15.3 ms wall against 17-20 at one), while the summing algorithms'
        estimates do not count their own gain from it, so a shared estimate here would win where it loses."""
        if _threads(prod(spec.output_shape) * spec.in_channels_per_group * prod(spec.kernel_size)) > 1:
            return inf  # see the docstring: measured slower than the other picks on two threads
        inner, seconds = _inner_choice(self._inner, spec, dtype)
        if seconds == inf or self.workspace_bytes(spec, dtype.itemsize) > current_workspace_limit():
            return inf
        sub = phase_spec(spec)
        copied = (prod(sub.input_shape) + prod(spec.output_shape)) * dtype.itemsize
        rows = prod(sub.input_shape[:-1]) + prod(sub.output_shape[:-1])
        return (seconds + CALL_OVERHEAD + prod(spec.dilation) * PHASE_OVERHEAD + copied / COPY_RATE["strided"]
                + rows * ROW_COST)

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """The phases, the inner Winograd's workspace on them, and their outputs."""
        sub = phase_spec(spec)
        inner, _ = _inner_choice(self._inner, spec, np.dtype(f"f{itemsize}"))
        return (prod(sub.input_shape) + prod(sub.output_shape)) * itemsize + inner.workspace_bytes(sub, itemsize)

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return self._run_phases(padded, ((0, 0),) * spec.rank, kernel, spec)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: with zero padding the split reads the input itself."""
        if spec.padding_mode != "zeros":
            return super(Winograd, self).run_unpadded(x, kernel, spec)  # Algorithm's: the engine's padding, then run
        return self._run_phases(x, spec.padding, kernel, spec)

    def _run_phases(self, source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                    spec: ConvSpec) -> np.ndarray:
        """Split ``source`` (padded by ``padding`` zeros) into phases, run the inner Winograd, interleave."""
        sub = phase_spec(spec)
        inner, _ = _inner_choice(self._inner, spec, source.dtype)
        phase_out = inner.run(split_phases(source, padding, spec), kernel, sub)  # (R*N, O, *Mo)
        return interleave_phases(phase_out, spec)


def phase_spec(spec: ConvSpec) -> ConvSpec:
    """The undilated valid problem of ``spec``'s phases: ``prod(dilation) * N`` samples of ``M`` cells per axis."""
    cells = tuple(-(-size // d) for size, d in zip(spec.padded_size, spec.dilation))
    return dataclasses.replace(spec, batched=True, batch=prod(spec.dilation) * spec.batch, input_size=cells,
                               padding=((0, 0),) * spec.rank, dilation=(1,) * spec.rank, padding_mode="zeros")


def _inner_choice(inner: Sequence[Winograd], spec: ConvSpec, dtype: np.dtype) -> tuple[Winograd, float]:
    """The inner Winograd with the lowest estimate on the phases' problem, and that estimate (F(2) on ties)."""
    sub = phase_spec(spec)
    estimates = [(algorithm.estimate(sub, dtype), i) for i, algorithm in enumerate(inner)]
    seconds, best = min(estimates)
    return inner[best], seconds


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
