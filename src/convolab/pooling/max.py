"""Max pooling: each window's maximum and, on request, its flat index; the input gradient scatters back.

:func:`_max_pool_forward` chooses an engine from :mod:`convolab.pooling._windows`
by size: small problems gather every window, larger ones take the separable
running maximum for values alone and the phase grid for values and indices,
and a kernel with very many taps after trimming goes axis by axis.
:func:`_max_pool_reference` is the slow, obviously right tap-by-tap loop they
are tested against. Every path follows the tie rule of :mod:`convolab.pooling`.
"""

from __future__ import annotations

from functools import reduce
from math import prod
from typing import Any

import numpy as np

from .._checks import check_flag
from .._fixed_rank import fixed_rank_ops
from .._window import pad, sliding_windows
from ..algorithms._compiled import numba_loaded
from ._compiled_windows import (compiled_pool_missing, max_pool_compiled, max_pool_grad_compiled,
                                max_pool_table_compiled)
from ._docs import _MAX_POOL_DOC, _MAX_POOL_INPUT_DOC, _MAX_POOL_INPUT_WORDS, _MAX_POOL_WORDS
from ._spec import (PoolSpec, _batch_input, _batched_grad_output, _cached_pool_spec, _rank_from_tuple,
                    _split_values_cotangent, _unbatch)
from ._windows import (_crop, _fill_grid, _keep_max, _phase_grid, _plane_strides, _reduce_windows,
                       _scatter_to_planes, _tap_slices, _trim_kernel, _window_table)

__all__ = [
    "max_pool", "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool_input", "max_pool1d_input", "max_pool2d_input", "max_pool3d_input",
]


#: Up to this many gathered window taps (N * C * out * k^d), max pooling gathers every window at once:
#: on small inputs NumPy's per-call cost dominates, and a gather and four whole-array
#: reductions beat the 3 * k^d passes of the phase grid.
_GATHER_LIMIT = 1 << 17


def _max_pool_forward(x: np.ndarray, spec: PoolSpec,
                      with_indices: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Values and flat plane indices ``(N, C, *out)`` of the windows' maxima (tie rule: :mod:`convolab.pooling`).

    Small problems gather every window (:func:`_max_pool_gathered`); larger ones
    take the compiled loop (:func:`._compiled_windows.max_pool_compiled`) where
    it runs: with indices 2-5x faster than the phase grid on the suite's pools;
    for values alone 1.1-2x faster than NumPy's running maximum at one thread
    (each window's taps in registers), and its planes shared among threads.
    Elsewhere values alone take the separable running maximum, and indices the
    phase grid (:func:`_max_pool_grid`). Padding holds ``-inf`` (the
    integer dtype's minimum), which never beats a real sample, and every window
    has one.
    """
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    spec = _trim_kernel(spec)  # a huge kernel's taps that read only padding are never looped over
    taps = prod(spec.kernel_size)
    if taps <= _SEPARABLE_TAPS and prod(spec.output_shape) * taps <= _GATHER_LIMIT:
        return _max_pool_gathered(x, spec, fill, with_indices)
    if compiled_pool_missing(x.dtype, spec.rank) is None:
        return max_pool_compiled(x, spec, with_indices)
    if not with_indices:
        return _reduce_windows(x, spec, np.maximum, fill, x.dtype), None
    if taps > _SEPARABLE_TAPS:
        return _max_pool_separable(x, spec)
    return _max_pool_grid(x, spec, fill)


#: Beyond this many taps per window, max pooling with indices goes axis by axis (a few passes per
#: axis) instead of k^d passes on the phase grid: a huge kernel whose reaching taps are far apart
#: (``ceil_mode``'s last window under a huge stride) keeps ``10**10`` taps after trimming.
_SEPARABLE_TAPS = 1 << 12


def _max_pool_separable(x: np.ndarray, spec: PoolSpec) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_max_pool_forward` with indices, one spatial axis at a time (the last first).

    A box's row-major-first maximum is separable (as :func:`_adaptive_max_forward`):
    along an axis each tap, in window order, offers the cells it reads to the
    outputs it reaches (``WindowGeometry.axis_taps``, padding never offered), kept
    by :func:`_keep_max` with the flat index of the chosen cell carried along.
    """
    plane_strides = _plane_strides(spec.input_size)
    values, carried = x, None  # carried: flat-index contribution of the axes already reduced
    for axis in reversed(range(2, x.ndim)):
        dim = axis - 2
        out = spec.output_size[dim]
        taps = spec.geometry.axis_taps(dim)  # in window order
        lead, trailing = (slice(None),) * axis, values.ndim - axis - 1
        reduced_shape = values.shape[:axis] + (out,) + values.shape[axis + 1:]
        best = np.zeros(reduced_shape, dtype=x.dtype)
        best_index = np.full(reduced_shape, -1, dtype=np.int64)
        for reached, read in taps:
            positions = np.arange(read.start, read.stop, read.step).reshape((-1,) + (1,) * trailing)
            index = positions * plane_strides[dim]  # broadcasts like the candidate
            if carried is not None:
                index = index + carried[lead + (read,)]
            _keep_max(best[lead + (reached,)], best_index[lead + (reached,)], values[lead + (read,)], index, True)
        values, carried = best, best_index
    return values, carried




def _max_pool_gathered(x: np.ndarray, spec: PoolSpec, fill: Any,
                       with_indices: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`_max_pool_forward` by gathering every window: ``(N * C, k^d, out)``, then reducing the taps.

    The index is the first tap, in window order, equal to the maximum: the
    largest ``code`` (``k^d - tap``, 0 for padding) among the equal taps, so a
    padding cell never wins even where the maximum is ``-inf``. Windows whose
    maximum is NaN take their last NaN tap instead.
    """
    table = _window_table(spec.geometry)
    planes = x.reshape(prod(x.shape[:2]), prod(spec.input_size))  # (N * C, plane)
    if with_indices and numba_loaded() and compiled_pool_missing(x.dtype, spec.rank) is None:
        return max_pool_table_compiled(planes, table.gather, spec, table.windows)  # small pools never import Numba
    padded = np.concatenate((planes, np.full((planes.shape[0], 1), fill, dtype=x.dtype)), axis=1)  # fill last
    windows = padded[:, table.gather]  # (N * C, k^d, out)
    values = np.maximum.reduce(windows, axis=1)  # (N * C, out); NaN propagates
    if not with_indices:
        return values.reshape(spec.output_shape), None
    equal = windows == values[:, np.newaxis]
    as_code = equal.view(np.uint8) if table.code.dtype == np.uint8 else equal
    code = np.maximum.reduce(as_code * table.code, axis=1)  # (N * C, out)
    if x.dtype.kind == "f" and values.size and np.isnan(values.max()):
        count = table.code.shape[0]
        after_last_nan = np.arange(1, count + 1, dtype=table.code.dtype)[:, np.newaxis]  # tap + 1
        last_nan = np.maximum.reduce(np.isnan(windows) * after_last_nan, axis=1)  # 0 where no NaN
        code = np.where(last_nan > 0, count + 1 - last_nan.astype(np.int64), code)
    indices = np.take(table.offset_by_code, code)  # (N * C, out)
    np.add(indices, table.window_origins, out=indices)
    return values.reshape(spec.output_shape), indices.reshape(spec.output_shape)


def _max_pool_grid(x: np.ndarray, spec: PoolSpec, fill: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_max_pool_forward` with indices on the phase grid.

    The values are a running ``np.maximum`` over the grid's taps. The index is
    then the first tap, in window order, equal to the maximum: the largest of
    ``equal * (k^d - tap)`` over the taps, all branch-free passes (masked
    assignment is ~15x slower). Windows whose maximum is NaN take their last NaN
    tap instead. If some window's maximum equals the fill, a padding cell could
    tie with it, so that rare case goes to :func:`_max_pool_reference`.
    """
    grid = _phase_grid(spec.geometry)
    if x.size == 0:
        return np.zeros(spec.output_shape, dtype=x.dtype), np.zeros(spec.output_shape, dtype=np.int64)
    lead = x.shape[:2]
    cells = _fill_grid(x, grid, fill)  # (P, N * C * prod(M))
    taps = _tap_slices(cells, grid)
    best = np.empty(cells.shape[1], dtype=x.dtype)  # the grid's window cells; the tail past `span` unused
    running = best[:taps[0].size]
    np.copyto(running, taps[0])
    for tap in taps[1:]:
        np.maximum(tap, running, out=running)
    values = np.ascontiguousarray(_crop(best, grid, lead))  # (N, C, *out)
    if grid.reads_fill and np.fmin.reduce(values, axis=None) == fill:
        return _max_pool_reference(x, spec)

    count = len(taps)
    code_type = np.min_scalar_type(count)
    window_code = np.empty(best.size, dtype=code_type)  # grid layout, as `best`
    code = window_code[:running.size]  # count - (first tap equal to the maximum)
    equal, term = np.empty(running.size, dtype=bool), np.empty(running.size, dtype=code_type)
    as_code = equal.view(np.uint8) if code_type == np.uint8 else equal  # 0/1 without a cast
    for number, tap in enumerate(taps):
        np.equal(tap, running, out=equal)
        np.multiply(as_code, code_type.type(count - number), out=term if number else code)
        if number:
            np.maximum(code, term, out=code)
    if x.dtype.kind == "f" and np.isnan(np.max(values)):
        last_nan = np.zeros(running.size, dtype=code_type)  # 1 + (last NaN tap), 0 where none
        for number, tap in enumerate(taps):
            np.isnan(tap, out=equal)
            np.multiply(as_code, code_type.type(number + 1), out=term)
            np.maximum(last_nan, term, out=last_nan)
        code[...] = np.where(last_nan > 0, count + 1 - last_nan.astype(np.int64), code)
    indices = np.take(grid.offset_by_code, _crop(window_code, grid, lead))  # (N, C, *out)
    np.add(indices, grid.window_origins, out=indices)
    return values, indices


def _max_pool_reference(x: np.ndarray, spec: PoolSpec) -> tuple[np.ndarray, np.ndarray]:
    """The same as :func:`_max_pool_forward`, tap by tap with :func:`_keep_max`: slow, obviously right.

    Loops over the kernel taps only: each tap is one strided slice
    ``(N, C, *out)`` of the window view, compared against the running maximum.
    Padding taps are masked out rather than filled, so an input holding ``-inf``
    (or an integer dtype's minimum) still gets a real index, as in PyTorch.
    """
    padded = pad(x, spec.window_padding)  # (N, C, *in + padding); zeros, never read: masked below
    windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C, *out, *k)
    geometry = spec.geometry
    positions = [geometry.tap_positions(dim) for dim in range(spec.rank)]  # per dim: (out_d, k_d)
    reads = [geometry.reads_input(dim) for dim in range(spec.rank)]  # per dim: (out_d, k_d), False for padding
    strides = _plane_strides(spec.input_size)
    best = np.zeros(spec.output_shape, dtype=x.dtype)
    best_index = np.full(spec.output_shape, -1, dtype=np.int64)
    for tap in np.ndindex(*spec.kernel_size):
        candidate = windows[(..., *tap)]  # (N, C, *out)
        valid = reduce(np.logical_and.outer, [read[:, j] for read, j in zip(reads, tap)])  # (*out)
        flat = reduce(np.add.outer, [position[:, j] * st for position, j, st in zip(positions, tap, strides)])
        _keep_max(best, best_index, candidate, flat, valid)
    return best, best_index


def _max_pool(op: str, rank: int | None, input: Any, kernel_size: Any, stride: Any, padding: Any,
              dilation: Any, ceil_mode: Any,
              with_indices: bool = True) -> tuple[np.ndarray, np.ndarray | None, PoolSpec]:
    """Batched values and indices (``None`` unless ``with_indices``), and the spec, of a max pooling."""
    x, spec = _max_pool_args(op, rank, input, kernel_size, stride, padding, dilation, ceil_mode)
    values, indices = _max_pool_forward(x, spec, with_indices)
    return values, indices, spec


def _max_pool_args(op: str, rank: int | None, input: Any, kernel_size: Any, stride: Any, padding: Any,
                   dilation: Any, ceil_mode: Any) -> tuple[np.ndarray, PoolSpec]:
    """Batched input and spec of a max pooling."""
    rank = _rank_from_tuple(op, "kernel_size", kernel_size, rank)
    x, _ = _batch_input(op, input, rank)
    return x, _cached_pool_spec(input.shape, kernel_size, stride, padding, dilation, ceil_mode, op, rank)


def _max_pool_backward(x: np.ndarray, grad_output: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """``grad_input`` ``(N, C, *in)`` of a max pooling from its input, in ``grad_output``'s dtype.

    Each window's gradient goes to its maximum (the tie rule of :mod:`convolab.pooling`):
    the indices, then :func:`_scatter_to_planes`. Where the compiled loops run and
    the windows are not gathered (as :func:`_max_pool_forward` decides), one
    fused pass finds each maximum and adds there, keeping no index
    (:func:`._compiled_windows.max_pool_grad_compiled`: 6-23% faster than the two
    compiled passes on the suite's pools, the same sums in the same order).
    """
    trimmed = _trim_kernel(spec)
    taps = prod(trimmed.kernel_size)
    gathered = taps <= _SEPARABLE_TAPS and prod(trimmed.output_shape) * taps <= _GATHER_LIMIT
    if (not gathered and compiled_pool_missing(x.dtype, spec.rank) is None
            and compiled_pool_missing(grad_output.dtype, spec.rank) is None):
        return max_pool_grad_compiled(x, grad_output, trimmed)
    _, indices = _max_pool_forward(x, spec)
    return _scatter_to_planes(grad_output, indices, spec.input_size)



def _max_pool_op(
    op: str,
    rank: int | None,
    input: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """The max pooling ops (``op`` for ``rank`` spatial dimensions, ``None``: any); docs: ``_docs._MAX_POOL_DOC``."""
    return_indices = check_flag(return_indices, "return_indices", op)
    values, indices, spec = _max_pool(op, rank, input, kernel_size, stride, padding, dilation, ceil_mode,
                                      with_indices=return_indices)
    if not return_indices:
        return _unbatch(spec.batched, values)[0]
    return _unbatch(spec.batched, values, indices)


def _max_pool_vjp(
    op: str,
    rank: int | None,
    input: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> tuple[Any, Any]:
    """:func:`_max_pool_op`'s output and pullback."""
    # d out[o] / d x[i] = 1 where i is window o's selected element, else 0; so the
    # pullback adds grad_output[o] at index[o]: a scatter-add, the transpose of a gather.
    # With return_indices the output is (values, indices); only the values pull back.
    return_indices = check_flag(return_indices, "return_indices", op)
    values, indices, spec = _max_pool(op, rank, input, kernel_size, stride, padding, dilation, ceil_mode)

    def pullback(grad_output: Any) -> tuple[np.ndarray]:
        if return_indices:
            grad_output = _split_values_cotangent(op, grad_output)
        batched_grad = _batched_grad_output(op, grad_output, spec.caller_output_shape, spec.batched)
        return _unbatch(spec.batched, _scatter_to_planes(batched_grad, indices, spec.input_size))

    caller_values, caller_indices = _unbatch(spec.batched, values, indices)
    return ((caller_values, caller_indices) if return_indices else caller_values), pullback


def _max_pool_input_op(
    op: str,
    rank: int | None,
    grad_output: np.ndarray,
    input: np.ndarray,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """The max pooling input gradients (``op`` is ``max_pool2d_input`` and so on); docs: ``_MAX_POOL_INPUT_DOC``."""
    x, spec = _max_pool_args(op, rank, input, kernel_size, stride, padding, dilation, ceil_mode)
    batched_grad = _batched_grad_output(op, grad_output, spec.caller_output_shape, spec.batched)
    return _unbatch(spec.batched, _max_pool_backward(x, batched_grad, spec))[0]


max_pool, max_pool1d, max_pool2d, max_pool3d = fixed_rank_ops(
    _max_pool_op, "max_pool", _MAX_POOL_DOC, words=_MAX_POOL_WORDS, vjp=_max_pool_vjp)
max_pool_input, max_pool1d_input, max_pool2d_input, max_pool3d_input = fixed_rank_ops(
    _max_pool_input_op, "max_pool", _MAX_POOL_INPUT_DOC, suffix="_input", words=_MAX_POOL_INPUT_WORDS)
