"""shifted: implicit GEMM, one matrix product per kernel tap over the stride phases."""

from __future__ import annotations

from math import prod
from typing import Iterator

import numpy as np

from .._geometry import split_phases
from ..spec import ConvSpec
from . import Algorithm
from ._blocking import phase_size, stride_one

__all__ = ["Shifted"]


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
        phases = 0 if stride_one(spec) else prod(spec.input_shape[:2]) * prod(phase_size(spec)) * prod(spec.stride)
        wide_out = 2 * spec.batch * spec.out_channels * spec.output_size[0] * prod(phase_size(spec)[1:])
        return (phases + wide_out) * itemsize

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        groups, c, o = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
        grid = _PhasedInput(padded, spec)
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


class _PhasedInput:
    """The padded input as stride phases over a flattened grid, where every tap is a constant shift.

    ``phases`` is ``(N, C_in, S, T)``: the ``S`` stride phases (product of the
    strides; 1, and no copy, at stride 1; :func:`convolab._geometry.split_phases`)
    of ``T`` flattened positions each. Output position ``o`` reads, for tap ``j``,
    phase ``(j*d) mod s`` at ``o + (j*d) div s`` (:meth:`WindowGeometry.phase_taps`
    in padded coordinates); over "wide" rows (``length`` positions: the first
    output axis times the phase grid's trailing size) that is one contiguous run per tap.
    """

    def __init__(self, padded: np.ndarray, spec: ConvSpec):
        self.spec = spec
        self.size = phase_size(spec)
        self.phases = split_phases(padded, spec.stride).reshape(spec.batch, spec.in_channels, prod(spec.stride), -1)
        self.strides = [prod(self.size[i + 1:]) for i in range(spec.rank)]
        self.length = spec.output_size[0] * self.strides[0]

    def taps(self) -> Iterator[tuple[int, int, int]]:
        """``(phase, offset, available)`` per kernel tap, row-major: where its run starts and how much exists."""
        spec, total = self.spec, self.phases.shape[-1]
        for phase, shift in spec.geometry.phase_taps(padded=True):
            number = int(np.ravel_multi_index(phase, spec.stride))
            offset = sum(q * st for q, st in zip(shift, self.strides))
            yield number, offset, max(0, min(self.length, total - offset))

    def crop(self, wide: np.ndarray) -> np.ndarray:
        """``(N, C_out, length)`` over wide rows to ``(N, C_out, *output_size)``."""
        spec = self.spec
        wide = wide.reshape(spec.batch, spec.out_channels, spec.output_size[0], *self.size[1:])
        cropped = wide[(Ellipsis, *(slice(0, n) for n in spec.output_size[1:]))]
        return np.ascontiguousarray(cropped).reshape(spec.output_shape)
