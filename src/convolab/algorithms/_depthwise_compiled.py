"""depthwise's compiled passes: how :mod:`._kernels_depthwise` sees a problem, and the wrappers that call it.

A job is one (sample, group): its planes, zero-padded and split into stride
phases, fill the calling thread's grid (:class:`Planes`), and every tap
reads one contiguous run of the plane's wide rows. The wrappers lay the
arrays out as the kernels' contract says (C-contiguous, native byte order,
one float dtype, two spatial axes), share the jobs among threads and give
the result the public shape. :func:`compiled_missing` says where they run;
:mod:`.depthwise` (the algorithm, and its NumPy path for everything else)
calls them.

The kernels are imported through the lazy seam (:func:`._compiled.kernels`),
so importing this module imports no Numba.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Sequence

import numpy as np

from .._dtypes import all_finite
from .._settings import current_workspace_limit
from .._window import pad_adjoint
from ..spec import ConvSpec
from ._compiled import kernels, numba_missing
from ._kernel_layout import as_kernels_take, filter_rows
from ._rates import THREAD_GAIN
from ._threads import run_jobs, threads_for

__all__ = ["Planes", "planes_for", "compiled_missing", "compiled_forward", "compiled_input_grad",
           "compiled_weight_grad", "takes_lanes", "lanes_workspace_bytes", "PLANE_RANK", "LANES_CHANNELS",
           "LANES_POSITIONS", "LANES_SCRATCH_BYTES"]

#: Spatial axes of the compiled kernels (:mod:`._kernels_depthwise`): a 1-d problem comes as one row.
PLANE_RANK = 2

# The compiled kernels' cost model (:meth:`Planes.seconds`), fitted to their single-thread times on the
# depthwise layers of the benchmark suite (MobileNet, EfficientNet, 1-d audio) on the 2-core reference machine.
#: Fixed cost of a call: the tables, the jobs handed out, the kernel's dispatch.
PLANE_CALL_OVERHEAD = 25e-6
#: Bytes per second the inner loops load and store (in the L1 cache) on one thread: refitted to the sums
#: held in registers (one load per tap and position), within 10% of the suite layers' forward times...
PLANE_LOOP_RATE = 47e9
#: ... bytes per second of the input's read and the output's write (memory)...
PLANE_MEMORY_RATE = 16e9
#: ... bytes per second of the input split into stride phases as it is copied...
PLANE_SPLIT_RATE = 12e9
#: ... and seconds per job (one sample's group: its planes filled, the loops started).
PLANE_JOB_COST = 0.2e-6
#: Channels side by side and output positions per block of the forward with the channels in the vector lanes
#: (as :mod:`._kernels_depthwise`'s CHANNEL_BLOCK and POSITION_BLOCK, repeated so that planning imports no Numba).
LANES_CHANNELS, LANES_POSITIONS = 16, 8
#: Most bytes of one thread's grid and sums for that form. With each input vector loaded once per kernel row
#: (session 18), in-process against the plane loops, min of 15, float32 (one thread CPU; two threads wall): 56x56
#: planes (0.4 MiB) 3.74 -> 2.69 and 2.64 -> 1.89 ms, 112x112 (1.6 MiB) 3.42 -> 2.67 and 2.22 -> 1.86, a 7x7
#: kernel on 112x112 8.2 -> 4.9 and 4.7 -> 3.2; 160x160 (3.3 MiB) and larger no faster or slower (2 -> 2.04 ms
#: at two threads), 224x224 slower at two threads (0.87 -> 1.44: two jobs).
LANES_SCRATCH_BYTES = 2 * 2**20
#: Bytes of the forward's sums for one chunk of output rows: within the L1 cache with the runs it reads
#: (larger planes' sums measured slower from the L2 cache).
PLANE_SUMS_BYTES = 16 * 2**10


def as_plane(values: tuple[int, ...], fill: int) -> tuple[int, ...]:
    """Per-axis values of a 1-d or 2-d problem as the compiled kernels' two (a missing row axis: ``fill``)."""
    return (fill,) * (PLANE_RANK - len(values)) + tuple(values)


class Planes:
    """How the compiled kernels (:mod:`._kernels_depthwise`) see a problem: one thread's plane grid and the taps.

    A job is one (sample, group); its ``C`` planes, zero-padded by ``padding``
    and split into stride phases, fill a grid ``(C, SH*SW, stored)`` of phase
    planes ``(Hq, Wq)``; tap ``(c, kh, kw)`` reads one contiguous run of
    ``length`` wide positions of its phase plane, at its offset.
    """

    def __init__(self, spec: ConvSpec, padding: Sequence[tuple[int, int]]):
        self.spec = spec
        source = tuple(p - low - high for p, (low, high) in zip(spec.padded_size, padding))
        self.lows = as_plane(tuple(low for low, _ in padding), 0)
        self.stride, dilation = as_plane(spec.stride, 1), as_plane(spec.dilation, 1)
        self.source_shape = (spec.batch, spec.in_channels, *as_plane(source, 1))
        self.output_shape = (*spec.output_shape[:2], *as_plane(spec.output_size, 1))
        sh, sw = self.stride
        padded_h, padded_w = as_plane(spec.padded_size, 1)
        self.wq = -(-padded_w // sw)
        out_h, out_w = self.output_shape[2:]
        self.length = (out_h - 1) * self.wq + out_w  # a tap's run: every output row as a wide row
        kh_size, kw_size = as_plane(spec.kernel_size, 1)
        # (input channel in the group, phase, offset in the phase plane) per tap, taps in the kernel's C order
        self.taps = np.array([(c, (kh * dilation[0] % sh) * sw + kw * dilation[1] % sw,
                               (kh * dilation[0] // sh) * self.wq + kw * dilation[1] // sw)
                              for c in range(spec.in_channels_per_group) for kh in range(kh_size)
                              for kw in range(kw_size)], dtype=np.int64)
        self.stored = max(-(-padded_h // sh) * self.wq, int(self.taps[:, 2].max()) + self.length)
        self.grid_shape = (spec.in_channels_per_group, sh * sw, self.stored)
        self.jobs = spec.batch * spec.groups

    def grid(self, dtype: np.dtype) -> np.ndarray:
        """One thread's grid, zeroed: the padding's cells are never written after this."""
        return np.zeros(self.grid_shape, dtype=dtype)

    def scratch_bytes(self, itemsize: int) -> int:
        """One thread's grid and its run of sums (or of grad_output's wide rows: the input gradient's, at most)."""
        return (prod(self.grid_shape) + max(self.output_shape[2] * self.wq, self.gather_size())) * itemsize

    def threads(self) -> int:
        """Threads the kernels' jobs are shared among."""
        return min(threads_for(self.spec.macs), max(self.jobs, 1))

    def seconds(self, itemsize: int) -> float:
        """The cost model of the compiled passes (:meth:`.depthwise.Depthwise.estimate`).

        Per output channel and wide position, every tap loads one value into
        the sums held in registers, which are stored once: those values at
        :data:`PLANE_LOOP_RATE`; the input read and the output
        written once at :data:`PLANE_MEMORY_RATE`, and at a stride the input
        split into phases at :data:`PLANE_SPLIT_RATE`; :data:`PLANE_JOB_COST`
        per job. Jobs are shared among threads, each past the first counted at
        :data:`~convolab.algorithms._rates.THREAD_GAIN`.
        """
        taps = len(self.taps)
        values = self.length * self.spec.batch * self.spec.out_channels * (taps + 1)
        memory = (prod(self.source_shape) + prod(self.output_shape)) * itemsize
        work = values * itemsize / PLANE_LOOP_RATE + memory / PLANE_MEMORY_RATE + self.jobs * PLANE_JOB_COST
        if self.grid_shape[1] > 1:  # the input split into stride phases as it is copied
            work += prod(self.source_shape) * itemsize / PLANE_SPLIT_RATE
        return PLANE_CALL_OVERHEAD + work / (1 + THREAD_GAIN * (self.threads() - 1))

    def chunk_rows(self, itemsize: int) -> int:
        """Output rows the forward sums at once: their wide rows within :data:`PLANE_SUMS_BYTES`."""
        return max(1, min(self.output_shape[2], PLANE_SUMS_BYTES // (self.wq * itemsize)))

    def gather_size(self) -> int:
        """The input gradient's wide rows (:func:`._kernels_depthwise.input_grad`): per output channel of a
        group, a grid plane's values after as many zeros as the largest tap offset."""
        return self.spec.out_channels_per_group * (self.stored + int(self.taps[:, 2].max()))

    def run(self, name: str, arrays: tuple[np.ndarray, ...], options: tuple[int, ...] = (),
            scratch_size: int | None = None) -> None:
        """Kernel ``name`` of :mod:`._kernels_depthwise` over every job, the jobs shared among threads in ranges:
        ``name(*arrays, grid, scratch, taps, first, last, groups, sh, sw, low_h, low_w, wq, *options)``, each
        thread with its own zeroed grid and scratch run of ``scratch_size`` values (one plane of wide rows
        unless given)."""
        kernel, dtype = getattr(kernels("depthwise"), name), arrays[0].dtype
        geometry = (self.spec.groups, *self.stride, *self.lows, self.wq, *options)
        size = self.output_shape[2] * self.wq if scratch_size is None else scratch_size
        run_jobs(
            self.jobs, self.spec.macs,
            lambda first, last, own: kernel(*arrays, *own, self.taps, first, last, *geometry),
            lambda: (self.grid(dtype), np.zeros(size, dtype=dtype)))


@lru_cache(maxsize=1024)
def _remembered_planes(spec: ConvSpec, padding: tuple[tuple[int, int], ...]) -> Planes:
    """:func:`planes_for`'s store, keyed on hashable arguments."""
    return Planes(spec, padding)


def planes_for(spec: ConvSpec, padding: Sequence[tuple[int, int]]) -> Planes:
    """The :class:`Planes` of ``spec`` zero-padded by ``padding``, made once per problem: a pass asked for it
    two or three times (its check, its cost, its run), each time building the tap table in Python (tens of
    microseconds, against a small layer's 1-3 ms). Shared among calls, so never written."""
    return _remembered_planes(spec, tuple((int(low), int(high)) for low, high in padding))


def compiled_missing(spec: ConvSpec, dtype: np.dtype) -> str | None:
    """None if the compiled kernels (:mod:`._kernels_depthwise`) run this problem, else why they do not.

    They run float32 and float64, one or two spatial dimensions, where a
    thread's plane grid fits the workspace limit, and where Numba imports;
    everything else takes the NumPy path.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        return f"the compiled kernels run float32 and float64 only, not {dtype}"
    if spec.rank > PLANE_RANK:
        return f"the compiled kernels run 1 or {PLANE_RANK} spatial dimensions, not {spec.rank}"
    per_thread = planes_for(spec, spec.padding).scratch_bytes(dtype.itemsize)
    if per_thread > current_workspace_limit():
        return f"a plane grid ({per_thread / 2**20:.3g} MiB) exceeds the workspace limit"
    return numba_missing()


def _lanes_scratch(spec: ConvSpec, padding: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Values of one thread's grid and of its sums for :func:`._kernels_depthwise.forward_lanes`."""
    source = tuple(p - low - high for p, (low, high) in zip(spec.padded_size, padding))
    return prod(spec.padded_size) * LANES_CHANNELS, max(prod(source), prod(spec.output_size)) * LANES_CHANNELS


def takes_lanes(spec: ConvSpec, padding: Sequence[tuple[int, int]], itemsize: int) -> bool:
    """Whether the forward runs with the channels in the vector lanes (:func:`._kernels_depthwise.forward_lanes`):
    2-d, stride 1, one output channel per input channel, whole blocks of :data:`LANES_CHANNELS` channels, rows
    of at least :data:`LANES_POSITIONS` output positions, a thread's scratch within
    :data:`LANES_SCRATCH_BYTES`, and every thread's (:func:`lanes_workspace_bytes`) within the workspace limit."""
    if (spec.rank != PLANE_RANK or any(s != 1 for s in spec.stride) or spec.in_channels_per_group != 1
            or spec.out_channels_per_group != 1 or spec.groups % LANES_CHANNELS
            or spec.output_size[-1] < LANES_POSITIONS):
        return False
    if sum(_lanes_scratch(spec, padding)) * itemsize > LANES_SCRATCH_BYTES:
        return False
    return lanes_workspace_bytes(spec, padding, itemsize) <= current_workspace_limit()


def lanes_workspace_bytes(spec: ConvSpec, padding: Sequence[tuple[int, int]], itemsize: int) -> int:
    """The scratch of :func:`._kernels_depthwise.forward_lanes`: each thread's grid and sums."""
    jobs = spec.batch * (spec.in_channels // LANES_CHANNELS)
    threads = max(1, min(threads_for(spec.macs), jobs))
    return threads * sum(_lanes_scratch(spec, padding)) * itemsize


def _forward_lanes(source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                   spec: ConvSpec) -> np.ndarray:
    """:func:`._kernels_depthwise.forward_lanes` on ``source`` ``(N, C, H, W)`` zero-padded by ``padding``."""
    from ._wgrad_compiled import _aligned_empty  # a module that imports .depthwise, which imports this one

    source = as_kernels_take(source)
    dtype, taps = source.dtype, prod(spec.kernel_size)
    blocks = spec.in_channels // LANES_CHANNELS
    by_block = kernel.astype(dtype, copy=False).reshape(blocks, LANES_CHANNELS, taps).transpose(0, 2, 1)  # (B, T, 16)
    weights = np.ascontiguousarray(np.concatenate([by_block, by_block], axis=2))  # (B, T, 32): a run of two positions
    out = np.empty(spec.output_shape, dtype=dtype)
    grid_size, sums_size = _lanes_scratch(spec, padding)
    (low_h, _), (low_w, _) = padding
    geometry = (low_h, low_w, spec.padded_size[1], *spec.kernel_size, *spec.dilation)
    forward = kernels("depthwise").forward_lanes

    def scratch() -> tuple[np.ndarray, np.ndarray]:
        grid = _aligned_empty((grid_size,), dtype)  # aligned: every load of a position's channels is whole
        grid[...] = 0  # the padding's cells, never written
        return grid, _aligned_empty((sums_size,), dtype)

    run_jobs(spec.batch * blocks, spec.macs,
                               lambda first, last, own: forward(source, weights, out, *own, first, last, *geometry),
                               scratch)
    return out


def compiled_forward(source: np.ndarray, padding: Sequence[tuple[int, int]], kernel: np.ndarray,
                     spec: ConvSpec) -> np.ndarray:
    """:func:`._kernels_depthwise.forward` on ``source`` ``(N, G*C, *size)`` zero-padded by ``padding``, or its
    form with the channels in the vector lanes where :func:`takes_lanes`."""
    if takes_lanes(spec, padding, source.itemsize):
        return _forward_lanes(source, padding, kernel, spec)
    planes = planes_for(spec, padding)
    source = as_kernels_take(source).reshape(planes.source_shape)
    out = np.empty(planes.output_shape, dtype=source.dtype)
    planes.run("forward", (source, filter_rows(kernel, source.dtype), out), (planes.chunk_rows(source.itemsize),))
    return out.reshape(spec.output_shape)


def compiled_weight_grad(source: np.ndarray, padding: Sequence[tuple[int, int]], grad_output: np.ndarray,
                         spec: ConvSpec) -> np.ndarray:
    """:func:`._kernels_depthwise.weight_grad` on ``source`` ``(N, G*C, *size)`` zero-padded by ``padding``: per
    sample, then summed over the batch in a fixed order."""
    planes = planes_for(spec, padding)
    source = as_kernels_take(source).reshape(planes.source_shape)
    grad_output = as_kernels_take(grad_output.astype(source.dtype, copy=False))
    partial = np.empty((spec.batch, spec.out_channels, len(planes.taps)), dtype=source.dtype)  # (N, G*O, T)
    planes.run("weight_grad", (source, grad_output.reshape(planes.output_shape), partial))
    return partial.sum(axis=0).reshape(spec.weight_shape)


def compiled_input_grad(grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """:func:`._kernels_depthwise.input_grad` (with an inf or NaN in the kernel, its ``input_grad_scatter``):
    the gradient of the input before zero padding, or of the padded input folded back onto a padding mode's
    sources. ``(N, C_in, *input)``."""
    zeros = spec.padding_mode == "zeros"
    planes = planes_for(spec, spec.padding if zeros else tuple((0, 0) for _ in spec.padding))
    grad_output = as_kernels_take(grad_output).reshape(planes.output_shape)
    weights = filter_rows(kernel, grad_output.dtype)
    grad = np.empty(planes.source_shape, dtype=grad_output.dtype)
    if all_finite(weights):
        planes.run("input_grad", (grad_output, weights, grad), scratch_size=planes.gather_size())
    else:  # an extra column's zero times an inf would be a NaN in a real cell: the scatter, real columns only
        planes.run("input_grad_scatter", (grad_output, weights, grad))
    grad = grad.reshape(spec.batch, spec.in_channels, *(spec.input_size if zeros else spec.padded_size))
    return grad if zeros else pad_adjoint(grad, spec.padding, spec.padding_mode, spec.input_size)
