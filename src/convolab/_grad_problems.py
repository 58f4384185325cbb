"""The input gradient's derived forward problems: pure functions of a spec, remembered per spec.

The engine computes a convolution's input gradient as a forward convolution of
grad_output where it can (:mod:`convolab.algorithms._input_grad` says why that is
the same sum). The problems those forwards solve are shape arithmetic alone, and
live here, beside the planner that plans them and below the engine that runs them:

- :func:`full_problem`: the "full" correlation, grad_output (spread by the
  stride) with the kernel reversed and each group's channels swapped;
- :func:`phase_problems`: the "phases" formulation (sub-pixel convolution), one
  stride-1 problem per stride phase of the input, each with the taps that land
  on it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from . import shapes
from .spec import ConvSpec, conv_spec

__all__ = ["full_problem", "PhaseProblem", "phase_problems"]


@lru_cache(maxsize=4096)
def full_problem(spec: ConvSpec) -> tuple[ConvSpec, bool, tuple[int, ...] | None]:
    """The forward problem of the "full" input gradient (:func:`convolab._engine.conv_input_grad`), a pure
    function of the spec remembered for repeated calls: its spec, whether its result is already on the input
    (not the padded input), and the spread ``g_s``'s size (None at stride 1).

    It correlates ``g_s`` (grad_output with ``s-1`` zeros between samples) with the kernel reversed, input and
    output channels swapped per group, padded by the dilated kernel's extent less one on both sides, and on the
    high side by the cells past the last window, which no output reads (stride not dividing the padded input).
    With zero padding, where that leaves no negative padding, the forward's padding is taken off, so that only
    the input's cells are computed.
    """
    spread_size = None
    if any(s != 1 for s in spec.stride):
        spread_size = tuple((o - 1) * s + 1 for o, s in zip(spec.output_size, spec.stride))
    spread_shape = (spec.batch, spec.out_channels, *(spread_size or spec.output_size))
    swapped_shape = (spec.in_channels, spec.out_channels_per_group, *spec.kernel_size)
    extents = tuple(shapes.dilated_kernel_size(k, d) for k, d in zip(spec.kernel_size, spec.dilation))
    # the windows reach (P-1)*s + d*(K-1) + 1 cells of the padded input; the rest is unread
    unread = tuple(p - ((o - 1) * s + e) for p, o, s, e in zip(spec.padded_size, spec.output_size, spec.stride,
                                                                   extents))
    padding = tuple((e - 1, e - 1 + r) for e, r in zip(extents, unread))
    on_input = False
    if spec.padding_mode == "zeros":
        trimmed = tuple((low - pad_low, high - pad_high)
                        for (low, high), (pad_low, pad_high) in zip(padding, spec.padding))
        if min(min(pair) for pair in trimmed) >= 0:
            padding, on_input = trimmed, True
    # The reversal is the forward's orientation negated, so it still comes from oriented_kernel.
    full_spec = conv_spec(spread_shape, swapped_shape, padding=padding, dilation=spec.dilation, groups=spec.groups,
                          flip=not spec.flip, op=spec.op)
    return full_spec, on_input, spread_size


@dataclass(frozen=True)
class PhaseProblem:
    """One stride phase of the "phases" input gradient (:func:`phase_problems`).

    ``residue``: the phase's first cell on each axis, of the input (zero padding) or of the padded input; the
    phase is the cells ``residue + m*stride``, ``cells`` of them per axis. ``taps``: per axis, the kernel taps
    (of the oriented kernel) whose reads land on the phase, in order. ``reads``: per axis, the ``(start,
    stop)`` of grad_output's cells the phase's correlation reads. ``spec``: that correlation, a stride-1 forward
    problem on ``grad_output[..., start:stop]``; None where the phase holds no tap's read (or reads no
    grad_output cell): its cells are zero.
    """

    residue: tuple[int, ...]
    cells: tuple[int, ...]
    taps: tuple[tuple[int, ...], ...]
    reads: tuple[tuple[int, int], ...]
    spec: ConvSpec | None


class _AxisPhase(NamedTuple):
    """One axis's share of a phase (:func:`phase_problems`): its residue, cells and taps, and where it reads
    grad_output, ``reads`` ``(start, stop)`` (None: no tap, or only padding), with the correlation's
    ``padding`` and its taps' ``step``."""

    residue: int
    cells: int
    taps: tuple[int, ...]
    reads: tuple[int, int] | None = None
    padding: tuple[int, int] = (0, 0)
    step: int = 1


@lru_cache(maxsize=4096)
def phase_problems(spec: ConvSpec) -> tuple[PhaseProblem, ...]:
    """The "phases" input gradient's problems, one per stride phase of the input (or the padded input where the
    padding is not zeros): a pure function of the spec, remembered for repeated calls.

    Per axis, with ``j*d - low = shift_j*s + a`` (``0 <= a < s``; ``low`` 0 on the padded input), the cells of
    phase ``a``, ``i = m*s + a``, collect only the taps of that phase::

        dx[m*s + a] = sum_{j in taps(a)} g[m - shift_j] * k[j]

    The taps of one phase are evenly spaced (``s / gcd(d, s)`` apart) and so are their shifts (``d / gcd(d,
    s)``): a correlation of ``g`` at stride 1 with the phase's sub-kernel reversed, dilated by the shifts'
    step, padded below by the largest shift and above to reach ``cells`` outputs (a negative padding crops
    ``g``); input and output channels swapped per group, as in the full correlation. Every product reads a
    grad_output cell or a padding zero, never a spread zero: the same FLOPs as the scatter's product, and no
    add-back. A phase without taps (a kernel shorter than the stride) or past the input's end is zeros.
    """
    zeros = spec.padding_mode == "zeros"
    size = spec.input_size if zeros else spec.padded_size
    per_axis: list[list[_AxisPhase]] = []
    for dim in range(spec.rank):
        stride, outputs = spec.stride[dim], spec.output_size[dim]
        phases = spec.geometry.stride_phases(dim, padded=not zeros)
        axis = []
        for residue in range(stride):
            cells = max(0, -(-(size[dim] - residue) // stride))
            taps = tuple(j for j, phase in enumerate(phases.phase) if phase == residue)
            if not taps or cells == 0:
                axis.append(_AxisPhase(residue, cells, taps))
                continue
            shifts = [phases.shift[j] for j in taps]
            # cell m reads g[m - shift] for every shift: g[-max(shift)] to g[cells - 1 - min(shift)], cropped to g
            low, high = max(shifts), (cells - 1 - min(shifts)) - (outputs - 1)
            start, stop = max(0, -low), outputs + min(0, high)
            if stop <= start:  # only padding: zeros
                axis.append(_AxisPhase(residue, cells, taps))
                continue
            step = shifts[1] - shifts[0] if len(shifts) > 1 else 1
            axis.append(_AxisPhase(residue, cells, taps, (start, stop), (max(low, 0), max(high, 0)), step))
        per_axis.append(axis)
    problems = []
    for choice in itertools.product(*per_axis):
        residue, cells = tuple(a.residue for a in choice), tuple(a.cells for a in choice)
        if min(cells) == 0:
            continue  # no cell of the input in this phase
        taps = tuple(a.taps for a in choice)
        if not spec.out_channels or any(a.reads is None for a in choice):
            problems.append(PhaseProblem(residue, cells, taps, (), None))
            continue
        reads = tuple(a.reads for a in choice)
        # The sub-kernel is taken in tap order and reversed by oriented_kernel (flip), as the full correlation's is.
        sub = conv_spec((spec.batch, spec.out_channels, *(stop - start for start, stop in reads)),
                        (spec.in_channels, spec.out_channels_per_group, *(len(t) for t in taps)),
                        padding=tuple(a.padding for a in choice), dilation=tuple(a.step for a in choice),
                        groups=spec.groups, flip=True, op=spec.op)
        problems.append(PhaseProblem(residue, cells, taps, reads, sub))
    return tuple(problems)
