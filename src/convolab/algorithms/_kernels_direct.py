"""The compiled loops of the "compiled" algorithm: the direct sum and its input gradient (its weight gradient:
:mod:`._kernels_wgrad`).

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use. Every loop is the textbook sum, written plainly and compiled with
``@njit(cache=True, nogil=True)``: compiled once per dtype (float32, float64)
and machine, kept on disk, and run without the GIL on the threads of
:mod:`._threads`.

The layout every kernel reads: the padded input as a *phase grid*
``(N, C_in, D, SH, SW, Hq, Wq)``, its rows split into their stride phases along
the last two axes (``grid[..., rh, rw, u, v] = padded[..., u*sh + rh,
v*sw + rw]``, :func:`copy_phases`, which pads as it copies; at stride 1 it may be
a view of the padded input). Output row ``r`` of tap ``(kh, kw)`` reads phase
``(kh*dh mod sh, kw*dw mod sw)`` at ``(r + kh*dh div sh, ow + kw*dw div sw)``,
so over *wide* rows (output positions ``m = r*Wq + ow`` for every ``ow < Wq``)
every tap's reads are one contiguous run of its phase plane, at the tap's own
offset. Each inner loop is such a run: an output position past ``OW`` (a wide
row's extra columns) is computed and dropped; where that would multiply zeros
by an inf or NaN (in the gradients), the caller asks for one row per run.

The contract every kernel shares (the Python wrapper in :mod:`.compiled` lays
the arrays out and makes the tables):

- three spatial axes: lower ranks come as rank 3 with leading unit axes;
- every array C-contiguous, native byte order, writeable, one dtype (float32 or float64);
  the kernel (and the weight gradient) as ``(C_out, C*KD*KH*KW)``, its
  columns the taps ``t`` in C order;
- the input padded (by :func:`copy_phases` or the caller) and split into phases;
  grad_output and the output at their exact sizes;
- ``taps``: per tap ``t``, ``(c, kd*dd, rh, rw, offset)``: its input channel in
  the group, depth offset, phase, and offset in the phase plane (flattened,
  ``(kh*dh div sh)*Wq + kw*dw div sw``); ``tap_groups``:
  ``(first tap, count)``, three taps along the last axis or one, read
  together;
- ``runs``: per run of output positions ``(od, r0, r1, w0, width)``: depth
  ``od``, rows ``r0:r1`` as wide rows (``w0 == 0``, ``width == OW``) or
  columns ``w0:w0+width`` of one long row;
- ``first, last``: the range of jobs this call runs, so that a thread makes
  one call for many jobs; each job writes a part of the result no other job
  writes, so threads never share a cell and the result does not depend on
  which thread ran which job;
- ``scratch``: the calling thread's own buffer of one run per row.

Inner loops are blocked in registers: four output channels and three taps at
once (:func:`_add_4x3`), so that each value loaded is used several times.

Axis legend: N samples, G groups, C input channels per group, O output
channels per group, T taps of one group's filters (``C*KD*KH*KW``);
``(D, H, W)`` padded input, ``(OD, OH, OW)`` output; ``s*`` stride, ``d*``
dilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from ._kernels_moves import copy_run

__all__ = ["copy_phases", "stage_planes", "forward", "input_grad_scatter", "OUT_BLOCK", "TAP_BLOCK"]

#: Output channels and taps one pass of an inner loop handles.
OUT_BLOCK, TAP_BLOCK = 4, 3


@njit(cache=True, nogil=True)
def copy_phases(array, grid, first, last, split, low_d, low_h, low_w):
    """``grid[n, c, z', h'%SH, w'%SW, h'//SH, w'//SW] = array[n, c, z, h, w]`` with ``(z', h', w') = (z + low_d,
    h + low_h, w + low_w)``, for planes ``first:last`` (plane ``n*C_in + c``), and every other cell of those
    planes zero: the input padded (by the lows, where ``array`` is the input before zero padding) and split into
    phases in one pass, so that the caller need not zero the grid first. The other way round where not
    ``split`` (the gradient on the grid back to the input, the padding's cells dropped, the grid only read).

    A sample's cells lie within its own grid row (``v < Wq``) in both of
    :class:`.compiled._Layout`'s layouts, so a row's other cells are the ones
    before and after its sample's columns, and rows no sample lands on are
    zero throughout.
    """
    # a zero LLVM cannot see: a row's few padding cells as plain stores, where a constant zero makes each a call
    # to memset (0.85 against 1.0 ms for (8, 64, 56, 56) padded by 1, one thread)
    _copy_phases(array, grid, first, last, split, low_d, low_h, low_w, np.zeros(1, grid.dtype)[0])


@njit(cache=True, nogil=True)
def _copy_phases(array, grid, first, last, split, low_d, low_h, low_w, zero):
    """:func:`copy_phases`, its padding's cells written with ``zero`` (a value the compiler cannot see is zero:
    :func:`stage_planes` runs without Numba's runtime, so cannot allocate one)."""
    depth, height, width = array.shape[2], array.shape[3], array.shape[4]
    grid_depth, sh, sw, hq, wq = grid.shape[2], grid.shape[3], grid.shape[4], grid.shape[5], grid.shape[6]
    # both addressed flat and unsigned: a row's view and slice cost more than copying a short row (80 against
    # 13 ns for 28 values), and an unsigned index needs no wraparound test, so that the loops vectorize
    flat_grid, flat = grid.reshape(grid.size), array.reshape(array.size)
    row_cells = uint64(wq)
    plane_cells = uint64(grid_depth * sh * sw * hq) * row_cells
    for plane in range(first, last):  # plane n*C_in + c of both arrays
        # the plane's own cells: copy_run's last vector may store back cells past its run, never another plane's
        # (another thread's)
        own = flat_grid[uint64(plane) * plane_cells:uint64(plane + 1) * plane_cells]
        if split:  # the rows no sample lands on (padding rows and planes, a phase's short end), in runs
            for zp in range(grid_depth):
                at = uint64(plane * grid_depth + zp) * uint64(sh * sw * hq) * row_cells
                if zp < low_d or zp >= low_d + depth:
                    for i in range(uint64(sh * sw * hq) * row_cells):
                        flat_grid[at + i] = 0
                    continue
                for rh in range(sh):
                    # phase rows u_lo:u_hi hold rows h = u*sh + rh - low_h of the sample
                    u_lo = min(max(-((rh - low_h) // sh), 0), hq)
                    u_hi = min(max(-((rh - low_h - height) // sh), u_lo), hq)
                    for rw in range(sw):
                        phase_at = at + uint64((rh * sw + rw) * hq) * row_cells
                        for i in range(uint64(u_lo) * row_cells):
                            flat_grid[phase_at + i] = 0
                        for i in range(uint64(u_hi) * row_cells, uint64(hq) * row_cells):
                            flat_grid[phase_at + i] = 0
        for z in range(depth):
            for h in range(height):
                row, ph = uint64((plane * depth + z) * height + h) * uint64(width), h + low_h
                for rw in range(sw):
                    w0 = (rw - low_w) % sw  # the first column of the row that lands in phase rw
                    count = uint64(max((width - w0 + sw - 1) // sw, 0))
                    v0 = uint64((w0 + low_w) // sw)
                    cells = uint64((((plane * grid_depth + z + low_d) * sh + ph % sh) * sw + rw) * hq + ph // sh) \
                        * row_cells
                    phase, start = cells + v0, row + uint64(w0)
                    if split:  # the row's cells before and after its sample's
                        for i in range(v0):
                            flat_grid[cells + i] = zero
                        for i in range(v0 + count, row_cells):
                            flat_grid[cells + i] = zero
                    if split:  # strides 1 and 2 as whole vectors (a loop of 28 at stride 2 took 3x as long)
                        copy_run(own, phase - uint64(plane) * plane_cells, flat, start, count, sw)
                    else:
                        for i in range(count):
                            flat[start + uint64(sw) * i] = flat_grid[phase + i]


@njit(cache=True, nogil=True, inline="always")
def stage_planes(source, stage, first_plane, low_d, low_h, low_w):
    """The phase grid ``stage`` ``(1, C, D, SH, SW, Hq, Wq)`` of planes ``first_plane:first_plane+C`` (plane
    ``n*C_in + c``) of ``source`` ``(N, C_in, D, H, W)`` zero-padded by the lows (:func:`copy_phases`): one
    (sample, group)'s grid, copied by the job that reads it into its thread's own buffer (the register tiles'
    forward and weight gradient), where it stays in the cache."""
    count, depth, height, width = stage.shape[1], source.shape[2], source.shape[3], source.shape[4]
    plane = depth * height * width
    planes = source.reshape(-1)[first_plane * plane:(first_plane + count) * plane]
    _copy_phases(planes.reshape((1, count, depth, height, width)), stage, 0, count, True, low_d, low_h, low_w,
                 stage.dtype.type(min(first_plane, 0)))  # zero: planes are counted from 0


@njit(cache=True, nogil=True, inline="always")
def _job(job, groups, block, per_group):
    """Job ``job`` as ``(outer, g, first, last)``: jobs run over (outer index, group, block of ``block`` of the
    group's ``per_group`` channels), channels ``first:last`` counted within all groups."""
    blocks = (per_group + block - 1) // block
    outer, rest = job // (groups * blocks), job % (groups * blocks)
    g = rest // blocks
    first = g * per_group + (rest % blocks) * block
    return outer, g, first, min(first + block, (g + 1) * per_group)


@njit(cache=True, nogil=True, inline="always")
def _run(grid, n, channel, z, taps, t, start, length):
    """The contiguous run tap ``t`` reads (or, for the input gradient, writes) for wide positions
    ``start:start+length``: channel ``channel + c``, depth ``z + kd*dd``."""
    offset = start + taps[t, 4]
    return grid[n, channel + taps[t, 0], z + taps[t, 1], taps[t, 2], taps[t, 3], offset:offset + length]


@njit(cache=True, nogil=True, inline="always")
def _add_4x3(a0, a1, a2, a3, s0, s1, s2, w, length):
    """``a_i += sum_j w[i, j] * s_j`` over ``length`` positions: four outputs, three taps."""
    w00, w01, w02, w10, w11, w12 = w[0, 0], w[0, 1], w[0, 2], w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22, w30, w31, w32 = w[2, 0], w[2, 1], w[2, 2], w[3, 0], w[3, 1], w[3, 2]
    for m in range(length):
        v0, v1, v2 = s0[m], s1[m], s2[m]
        a0[m] += w00 * v0 + w01 * v1 + w02 * v2
        a1[m] += w10 * v0 + w11 * v1 + w12 * v2
        a2[m] += w20 * v0 + w21 * v1 + w22 * v2
        a3[m] += w30 * v0 + w31 * v1 + w32 * v2


@njit(cache=True, nogil=True, inline="always")
def _add_4x1(a0, a1, a2, a3, s0, w, length):
    """``a_i += w[i, 0] * s0``: four outputs, one tap."""
    w0, w1, w2, w3 = w[0, 0], w[1, 0], w[2, 0], w[3, 0]
    for m in range(length):
        v = s0[m]
        a0[m] += w0 * v
        a1[m] += w1 * v
        a2[m] += w2 * v
        a3[m] += w3 * v


@njit(cache=True, nogil=True, inline="always")
def _add_1x3(a0, s0, s1, s2, w0, w1, w2, length):
    """``a0 += w0*s0 + w1*s1 + w2*s2``: one output, three taps."""
    for m in range(length):
        a0[m] += w0 * s0[m] + w1 * s1[m] + w2 * s2[m]


@njit(cache=True, nogil=True, inline="always")
def _add_1x1(a0, s0, weight, length):
    """``a0 += weight * s0``."""
    for m in range(length):
        a0[m] += weight * s0[m]


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward(grid, kernel, out, scratch, taps, tap_groups, runs, first, last, groups, block, sd):
    """``out[n, g*O+o, p] = sum_{c, j} x_p[n, g*C+c, p*s + j*d] * kernel[g*O+o, c, j]``, for jobs ``first:last``.

    A job is (sample ``n``, group ``g``, block of ``block`` output channels).
    Per run, the block's sums start at zero in ``scratch`` ``(block, run)``
    (in the L1 cache), every tap of the group's input channels adds its run
    into them, and the real columns are copied to ``out``.
    """
    channels, wq = grid.shape[1] // groups, grid.shape[6]
    flat = grid.reshape(*grid.shape[:5], grid.shape[5] * wq)
    for job in range(first, last):
        n, g, o0, o1 = _job(job, groups, block, kernel.shape[0] // groups)
        for run in range(runs.shape[0]):
            od, r0, r1, w0, width = runs[run, 0], runs[run, 1], runs[run, 2], runs[run, 3], runs[run, 4]
            start, length = r0 * wq + w0, (r1 - r0 - 1) * wq + width
            scratch[:, :length] = 0
            for group in range(tap_groups.shape[0]):
                t, count = tap_groups[group, 0], tap_groups[group, 1]
                s0 = _run(flat, n, g * channels, od * sd, taps, t, start, length)
                o = o0
                if count == TAP_BLOCK:
                    s1 = _run(flat, n, g * channels, od * sd, taps, t + 1, start, length)
                    s2 = _run(flat, n, g * channels, od * sd, taps, t + 2, start, length)
                    while o + OUT_BLOCK <= o1:
                        i = o - o0
                        _add_4x3(scratch[i], scratch[i + 1], scratch[i + 2], scratch[i + 3], s0, s1, s2,
                                 kernel[o:o + 4, t:t + 3], length)
                        o += OUT_BLOCK
                    for o in range(o, o1):
                        _add_1x3(scratch[o - o0], s0, s1, s2, kernel[o, t], kernel[o, t + 1], kernel[o, t + 2], length)
                else:
                    while o + OUT_BLOCK <= o1:
                        i = o - o0
                        _add_4x1(scratch[i], scratch[i + 1], scratch[i + 2], scratch[i + 3], s0,
                                 kernel[o:o + 4, t:t + 1], length)
                        o += OUT_BLOCK
                    for o in range(o, o1):
                        _add_1x1(scratch[o - o0], s0, kernel[o, t], length)
            for o in range(o0, o1):
                for r in range(r0, r1):
                    out[n, o, od, r, w0:w0 + width] = scratch[o - o0, (r - r0) * wq:(r - r0) * wq + width]


@njit(cache=True, nogil=True, inline="always")
def _wide(grad_output, n, o0, o1, od, r0, r1, w0, width, wq, scratch):
    """grad_output's rows ``r0:r1`` (columns ``w0:w0+width``) of channels ``o0:o1`` laid out as wide rows in
    ``scratch``, zero on the extra columns, so that they line up with the input's runs."""
    for o in range(o0, o1):
        target = scratch[o - o0]
        for r in range(r0, r1):
            start = (r - r0) * wq
            target[start:start + width] = grad_output[n, o, od, r, w0:w0 + width]
            if r + 1 < r1:
                target[start + width:start + wq] = 0


@njit(cache=True, nogil=True, inline="always")
def _gather_4(a0, s0, s1, s2, s3, w, length):
    """``a0 += sum_i w[i] * s_i``: four output channels' gradients into one run."""
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    for m in range(length):
        a0[m] += w0 * s0[m] + w1 * s1[m] + w2 * s2[m] + w3 * s3[m]


@njit(cache=True, nogil=True, fastmath={"contract"})
def input_grad_scatter(grad_output, kernel, grid, scratch, taps, runs, first, last, groups, block, sd):
    """``x_p'[n, g*C+c, p*s + j*d] += sum_o grad_output[n, g*O+o, p] * kernel[g*O+o, c, j]``, for jobs
    ``first:last``: each window's gradient added back where the forward read it, into ``grid``, the phase grid
    of the padded input's gradient.

    A job is (sample ``n``, group ``g``, block of ``block`` input channels); it
    zeroes, then writes, those channels of ``grid``. Per run, the group's
    grad_output rows go to ``scratch`` ``(O, run)`` as wide rows (zero on the
    extra columns: with an inf or NaN in the kernel the caller asks for one
    row per run, so that no zero meets it), and each tap of the block's
    channels adds four output channels' share at once into the run it read.
    """
    channels, out_per_group, wq = grid.shape[1] // groups, kernel.shape[0] // groups, grid.shape[6]
    per_channel = kernel.shape[1] // channels  # taps of one input channel
    flat = grid.reshape(*grid.shape[:5], grid.shape[5] * wq)
    for job in range(first, last):
        n, g, c0, c1 = _job(job, groups, block, channels)
        grid[n, c0:c1] = 0
        first_out = g * out_per_group
        for run in range(runs.shape[0]):
            od, r0, r1, w0, width = runs[run, 0], runs[run, 1], runs[run, 2], runs[run, 3], runs[run, 4]
            start, length = r0 * wq + w0, (r1 - r0 - 1) * wq + width
            _wide(grad_output, n, first_out, first_out + out_per_group, od, r0, r1, w0, width, wq, scratch)
            for t in range((c0 - g * channels) * per_channel, (c1 - g * channels) * per_channel):
                target = _run(flat, n, g * channels, od * sd, taps, t, start, length)
                i = 0
                while i + OUT_BLOCK <= out_per_group:
                    _gather_4(target, scratch[i], scratch[i + 1], scratch[i + 2], scratch[i + 3],
                              kernel[first_out + i:first_out + i + 4, t], length)
                    i += OUT_BLOCK
                for i in range(i, out_per_group):
                    _add_1x1(target, scratch[i], kernel[first_out + i, t], length)
