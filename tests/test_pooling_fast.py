"""The fast pooling paths against the slow references beside them, and against PyTorch on the hard cases.

Max pooling has three fast paths (small problems gather every window; larger
ones take the separable running maximum for values alone and the phase grid for
values and indices) and a tap-by-tap reference; average
pooling has the separable window sum and its transpose, with the window-view
references; adaptive average pooling has dense and sparse window matrices. Each
is compared on generated geometries (padding, dilation, ceil_mode, ranks 1-4),
on ties, NaN, -inf and integer minima, in every dtype, and on odd memory layouts.
"""

from __future__ import annotations

import random
import warnings
from math import prod

import numpy as np
import pytest

import convolab.pooling as P
from convolab.pooling import _spec as spec_module
from convolab.pooling import _windows as windows
from convolab.pooling import adaptive, average
from convolab.pooling import max as max_pooling
from convolab._vjp import vjp

torch = pytest.importorskip("torch")
F = torch.nn.functional


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def geometries(count, seed, max_rank=4, dilate=True):
    """``count`` valid (shape, kernel, stride, padding, dilation, ceil_mode) of ranks 1..max_rank, batched."""
    rng = random.Random(seed)
    found = []
    while len(found) < count:
        rank = rng.randint(1, max_rank)
        kernel = tuple(rng.randint(1, 4 if rank < 3 else 3) for _ in range(rank))
        stride = tuple(rng.randint(1, 3) for _ in range(rank))
        padding = tuple(rng.randint(0, k // 2) for k in kernel)
        dilation = tuple(rng.randint(1, 2) if dilate else 1 for _ in range(rank))
        ceil_mode = rng.random() < 0.5
        spatial = tuple(rng.randint(1, 9 if rank < 3 else 5) for _ in range(rank))
        shape = (rng.randint(1, 2), rng.randint(1, 3), *spatial)
        try:
            P.pool_spec(shape, kernel, stride, padding, dilation, ceil_mode)
        except ValueError:
            continue
        found.append((shape, kernel, stride, padding, dilation, ceil_mode))
    return found


def values_of(kind, shape, dtype, seed):
    """Test data: distinct values, heavy ties, NaN, -inf, or an integer dtype's extremes."""
    rng = np.random.default_rng(seed)
    size = prod(shape)
    if kind == "distinct":
        data = rng.permutation(size).astype(np.float64) - size / 2
    elif kind == "ties":
        data = rng.integers(0, 3, size=size).astype(np.float64)
    elif kind == "nan":
        data = rng.integers(0, 4, size=size).astype(np.float64)
        data[rng.random(size) < 0.2] = np.nan
    elif kind == "-inf":
        data = rng.integers(0, 3, size=size).astype(np.float64)
        data[rng.random(size) < 0.6] = -np.inf
    else:
        raise ValueError(kind)
    return data.reshape(shape).astype(dtype)


def integer_extremes(shape, dtype, seed):
    """Mostly the dtype's minimum (the fill the phase grid uses), some maximum, some ordinary."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([info.min, info.min, info.min, info.max, 0, 1], dtype=dtype), size=shape)


@pytest.fixture(params=["gathered", "grid"])
def max_path(request, monkeypatch):
    """Run a max pooling test through the gathering path, or through the separable and phase-grid paths."""
    monkeypatch.setattr(max_pooling, "_GATHER_LIMIT", 1 << 62 if request.param == "gathered" else 0)
    return request.param


MAX_CASES = [
    pytest.param(geometry, kind, dtype, id=f"{i}-{kind}-{np.dtype(dtype).name}")
    for i, geometry in enumerate(geometries(24, seed=5))
    for kind, dtype in [("distinct", np.float64), ("ties", np.float32), ("nan", np.float64), ("-inf", np.float32),
                        ("ties", np.float16)]
]


@pytest.mark.parametrize("geometry, kind, dtype", MAX_CASES)
def test_max_pool_fast_paths_match_the_reference(geometry, kind, dtype, max_path):
    shape, kernel, stride, padding, dilation, ceil_mode = geometry
    x = values_of(kind, shape, dtype, seed=len(shape))
    spec = P.pool_spec(shape, kernel, stride, padding, dilation, ceil_mode)
    want_values, want_indices = max_pooling._max_pool_reference(x, spec)
    values, indices = max_pooling._max_pool_forward(x, spec, with_indices=True)
    assert values.dtype == dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(values, want_values)  # NaN where NaN
    np.testing.assert_array_equal(indices, want_indices)
    alone, none = max_pooling._max_pool_forward(x, spec, with_indices=False)
    assert none is None and alone.dtype == dtype
    np.testing.assert_array_equal(alone, want_values)


@pytest.mark.parametrize("geometry", geometries(12, seed=6), ids=lambda g: f"{g[0]}-k{g[1]}")
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_max_pool_integer_extremes_match_the_reference(geometry, dtype, max_path):
    # the dtype's minimum is the fill: on the grid, windows whose maximum it is take the reference path
    shape, kernel, stride, padding, dilation, ceil_mode = geometry
    x = integer_extremes(shape, dtype, seed=len(shape))
    spec = P.pool_spec(shape, kernel, stride, padding, dilation, ceil_mode)
    want_values, want_indices = max_pooling._max_pool_reference(x, spec)
    values, indices = max_pooling._max_pool_forward(x, spec)
    assert values.dtype == dtype
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(max_pooling._max_pool_forward(x, spec, with_indices=False)[0], want_values)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 1)])
def test_max_pool_nan_ties_and_minus_inf_match_torch(rank, dtype, kernel, stride, padding, max_path):
    # NaN anywhere in a window (first tap, last tap, beside padding, several), ties, -inf beside padding
    rng = np.random.default_rng(rank)
    x = rng.integers(0, 3, size=(2, 3) + (7,) * rank).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.random(flat.size) < 0.1] = np.nan
    flat[rng.random(flat.size) < 0.1] = -np.inf
    x[0, 0] = -np.inf  # a whole plane of -inf: every window's maximum is the fill
    x[1, 2, (0,) * rank] = np.nan  # NaN in a corner, next to the padding
    kw = dict(kernel_size=kernel, stride=stride, padding=padding)
    ours = getattr(P, f"max_pool{rank}d")
    theirs = getattr(F, f"max_pool{rank}d")
    values, indices = ours(x, **kw, return_indices=True)
    xt = t(x).requires_grad_(True)
    want, want_indices = theirs(xt, **kw, return_indices=True)
    np.testing.assert_array_equal(values, want.detach().numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    np.testing.assert_array_equal(ours(x, **kw), values)
    grad_output = rng.standard_normal(values.shape).astype(dtype)
    want.backward(t(grad_output))
    _, pullback = vjp(ours, x, **kw)
    np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_max_pool_first_tap_nan_and_last_nan_by_hand(max_path):
    x = np.array([[[np.nan, 1., np.nan, 5., 2., np.nan]]])
    values, indices = P.max_pool1d(x, 3, stride=1, padding=1, return_indices=True)
    want, want_indices = F.max_pool1d(t(x), 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(values, want.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    np.testing.assert_array_equal(indices, [[[0, 2, 2, 2, 5, 5]]])  # the window's last NaN


def test_many_taps_use_a_wider_code_type(max_path):
    # 16 * 17 = 272 taps: more than a uint8 code holds
    x = values_of("ties", (1, 2, 20, 19), np.float64, seed=3)
    spec = P.pool_spec(x.shape, (16, 17), 1, (8, 8), 1, True)
    want_values, want_indices = max_pooling._max_pool_reference(x, spec)
    values, indices = max_pooling._max_pool_forward(x, spec)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(indices, want_indices)


AVG_CASES = [
    pytest.param(geometry[:4] + (geometry[5],), dtype, count_include_pad, divisor,
                 id=f"{i}-{np.dtype(dtype).name}-{count_include_pad}-{divisor}")
    for i, geometry in enumerate(geometries(24, seed=7, dilate=False))
    for dtype, count_include_pad, divisor in [(np.float64, True, None), (np.float32, False, None),
                                              (np.float64, False, -3), (np.int16, True, None)]
]


@pytest.mark.parametrize("geometry, dtype, count_include_pad, divisor_override", AVG_CASES)
def test_avg_pool_separable_paths_match_the_window_references(geometry, dtype, count_include_pad,
                                                               divisor_override):
    shape, kernel, stride, padding, ceil_mode = geometry
    x = values_of("distinct", shape, np.float64, seed=2).astype(dtype)
    spec = P.pool_spec(shape, kernel, stride, padding, 1, ceil_mode, op="avg_pool")
    divisor = average._avg_divisor(spec, count_include_pad, divisor_override)
    want = average._avg_pool_reference(x, spec, divisor)
    got = average._avg_pool_forward(x, spec, divisor)
    assert got.dtype == want.dtype == (np.float32 if dtype == np.float32 else np.float64)
    tolerance = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got, want, **tolerance)
    grad_output = values_of("distinct", want.shape, np.float64, seed=3).astype(got.dtype)
    np.testing.assert_allclose(average._avg_pool_backward(grad_output, spec, divisor),
                               average._avg_pool_backward_reference(grad_output, spec, divisor), **tolerance)


@pytest.mark.parametrize("shape, kernel", [((2, 3, 8, 6), (2, 2)), ((2, 3, 9, 6), (3, 2)), ((2, 3, 9, 7), (2, 2)),
                                           ((1, 2, 4, 6, 8), (2, 3, 4)), ((3, 5), (1,))])
def test_avg_pool_tiled_axes_spread_by_repeat(shape, kernel):
    # stride = kernel: where the windows tile an axis exactly its transpose is a repeat, else the slice adds
    x = values_of("distinct", shape, np.float64, seed=8)
    spec = P.pool_spec(shape, kernel, op="avg_pool")
    divisor = average._avg_divisor(spec, True, None)
    grad_output = values_of("distinct", spec.caller_output_shape, np.float64, seed=2)
    batched_grad = grad_output if spec.batched else grad_output[np.newaxis]
    np.testing.assert_allclose(average._avg_pool_backward(batched_grad, spec, divisor),
                               average._avg_pool_backward_reference(batched_grad, spec, divisor), rtol=1e-12)
    reference = average._avg_pool_reference(x.reshape(spec.input_shape), spec, divisor)
    np.testing.assert_allclose(P.avg_pool(x, kernel), reference.reshape(spec.caller_output_shape), rtol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", [
    (2, 2, 0, 1, False), (3, 2, 1, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False), ((2, 3), (1, 2), (1, 0), 1, True),
])
def test_medium_inputs_take_the_grid_and_separable_paths_and_match_torch(kernel, stride, padding, dilation,
                                                                          ceil_mode):
    x = values_of("ties", (4, 24, 45, 42), np.float32, seed=1)
    x[0, 0, 3, :7] = np.nan
    kw = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    values, indices = P.max_pool2d(x, **kw, return_indices=True)
    assert values.size * prod((kernel,) * 2 if isinstance(kernel, int) else kernel) > max_pooling._GATHER_LIMIT
    xt = t(x).requires_grad_(True)
    want, want_indices = F.max_pool2d(xt, **kw, return_indices=True)
    np.testing.assert_array_equal(values, want.detach().numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    np.testing.assert_array_equal(P.max_pool2d(x, **kw), values)
    grad_output = values_of("distinct", values.shape, np.float64, seed=3).astype(np.float32)
    want.backward(t(grad_output))
    _, pullback = vjp(P.max_pool2d, x, **kw)
    np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), rtol=1e-6)
    if dilation == 1:
        avg_kw = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
        x = np.nan_to_num(x)
        xt = t(x).requires_grad_(True)
        want = F.avg_pool2d(xt, **avg_kw)
        got, pullback = vjp(P.avg_pool2d, x, **avg_kw)
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)
        want.backward(t(grad_output))
        np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), rtol=1e-5, atol=1e-3)


def test_avg_pool_window_reaching_no_output_along_an_axis_starts_from_zero():
    # in 4, kernel 2, stride 2, padding 1: no tap reaches all three outputs, so the sum starts at 0
    geometry = P.pool_spec((1, 1, 4), (2,), 2, 1, op="avg_pool").geometry  # the per-tap slices live there now
    assert all(reached != slice(0, 3) for reached, _ in geometry.axis_taps(0, whole_first=True))
    x = np.arange(1., 5.).reshape(1, 1, 4)
    np.testing.assert_array_equal(P.avg_pool1d(x, 2, stride=2, padding=1), F.avg_pool1d(t(x), 2, 2, 1).numpy())
    np.testing.assert_array_equal(P.max_pool1d(-x, 2, stride=2, padding=1), F.max_pool1d(t(-x), 2, 2, 1).numpy())


def test_integer_sums_do_not_overflow_their_dtype():
    x = np.full((1, 1, 4, 4), 100, dtype=np.int8)  # 4 * 100 overflows int8
    np.testing.assert_array_equal(P.avg_pool2d(x, 2), np.full((1, 1, 2, 2), 100.0))
    np.testing.assert_array_equal(P.avg_pool2d(x, 2, divisor_override=1), np.full((1, 1, 2, 2), 400.0))
    np.testing.assert_array_equal(P.adaptive_avg_pool2d(x, 1), [[[[100.0]]]])


def test_max_pool_backward_ufunc_at_and_bincount_agree(monkeypatch):
    x = values_of("ties", (2, 3, 9, 8), np.float32, seed=4)
    grad_output = values_of("distinct", (2, 3, 5, 5), np.float64, seed=5).astype(np.float32)
    fast = P.max_pool2d_input(grad_output, x, 3, stride=2, padding=1, ceil_mode=True)
    monkeypatch.setattr(windows, "_FAST_UFUNC_AT", False)
    slow = P.max_pool2d_input(grad_output, x, 3, stride=2, padding=1, ceil_mode=True)
    assert fast.dtype == slow.dtype == np.float32
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


@pytest.mark.parametrize("layout", ["transposed", "reversed", "strided"])
def test_any_memory_layout(layout, max_path):
    base = values_of("ties", (3, 2, 11, 10), np.float64, seed=6)
    x = {"transposed": base.transpose(1, 0, 3, 2), "reversed": base[:, :, ::-1, ::-1],
         "strided": base[:, :, ::2, 1::2]}[layout]
    assert not x.flags.c_contiguous
    dense = np.ascontiguousarray(x)
    kw = dict(kernel_size=3, stride=2, padding=1)
    for op in (P.max_pool2d, P.avg_pool2d):
        np.testing.assert_array_equal(op(x, **kw), op(dense, **kw))
    np.testing.assert_array_equal(P.max_pool2d(x, **kw, return_indices=True)[1],
                                  P.max_pool2d(dense, **kw, return_indices=True)[1])
    np.testing.assert_array_equal(P.adaptive_avg_pool2d(x, (2, 3)), P.adaptive_avg_pool2d(dense, (2, 3)))
    grad_output = np.ones(P.max_pool2d(dense, **kw).shape)[:, :, ::-1]
    np.testing.assert_array_equal(P.max_pool2d_input(grad_output, x, **kw),
                                  P.max_pool2d_input(np.ascontiguousarray(grad_output), dense, **kw))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int16])
def test_non_native_byte_order(dtype, max_path):
    # Big-endian data (from a file) once crashed the ufuncs that take dtype=, which accepts no byte order.
    x = values_of("ties", (2, 3, 9, 8), np.float64, seed=2).astype(dtype)
    swapped = x.astype(x.dtype.newbyteorder("S"))
    kw = dict(kernel_size=3, stride=2, padding=1)
    grad_output = values_of("distinct", P.max_pool2d(x, **kw).shape, np.float64, seed=3)
    swapped_grad = grad_output.astype(grad_output.dtype.newbyteorder("S"))
    cases = [(P.max_pool2d, (), kw), (P.avg_pool2d, (), kw), (P.adaptive_avg_pool2d, (3,), {}),
             (P.adaptive_max_pool2d, (3,), {}), (P.max_pool2d_input, (), kw), (P.avg_pool2d_input, (), kw)]
    for op, args, kwargs in cases:
        if op.__name__.endswith("_input"):
            want, got = op(grad_output, x, *args, **kwargs), op(swapped_grad, swapped, *args, **kwargs)
        else:
            want, got = op(x, *args, **kwargs), op(swapped, *args, **kwargs)
        np.testing.assert_array_equal(got, want)
    for op, size in [(P.adaptive_avg_pool2d, (3, 5)), (P.adaptive_avg_pool2d, (9, 2))]:
        out, pullback = vjp(op, swapped, size)
        cotangent = np.ones(out.shape)
        np.testing.assert_array_equal(pullback(cotangent.astype(cotangent.dtype.newbyteorder("S")))[0],
                                      vjp(op, x, size)[1](cotangent)[0])


def test_results_are_fresh_writable_arrays(max_path):
    x = values_of("distinct", (1, 2, 4, 4), np.float64, seed=1)
    kept = x.copy()
    outputs = [P.max_pool2d(x, 1), P.max_pool2d(x, 1, return_indices=True)[0], P.avg_pool2d(x, 1),
               P.adaptive_avg_pool2d(x, 4), P.adaptive_avg_pool2d(x, (4, None)),
               P.avg_pool2d_input(x, x, 1), P.max_pool2d_input(x, x, 1)]
    for out in outputs:
        assert out.flags.writeable and not np.shares_memory(out, x)
        out += 1
    np.testing.assert_array_equal(x, kept)


@pytest.mark.parametrize("shape", [(0, 3, 6, 6), (2, 0, 6, 6)])
def test_empty_batch_or_channels_forward_and_backward(shape, max_path):
    x = np.zeros(shape, dtype=np.float32)
    for op, kw in [(P.max_pool2d, dict(kernel_size=3, stride=2, padding=1)), (P.avg_pool2d, dict(kernel_size=2)),
                   (P.adaptive_avg_pool2d, dict(output_size=(2, 4))), (P.adaptive_max_pool2d, dict(output_size=3))]:
        out, pullback = vjp(op, x, **kw)
        one_plane = t(np.zeros((1, 1) + shape[2:], dtype=np.float32))  # PyTorch refuses C = 0
        assert out.shape == shape[:2] + tuple(getattr(F, op.__name__)(one_plane, **kw).shape[2:])
        assert pullback(np.zeros_like(out))[0].shape == shape
    values, indices = P.max_pool2d(x, 2, return_indices=True)
    assert values.shape == indices.shape == shape[:2] + (3, 3) and indices.dtype == np.int64


# ---------------------------------------------------------------------------
# Adaptive average pooling: the window matrices
# ---------------------------------------------------------------------------


def adaptive_reference(x, output_size):
    """A loop over output positions, each the mean of its window (float64)."""
    out = np.zeros(x.shape[:2] + tuple(output_size))
    for o in np.ndindex(*output_size):
        box = tuple(slice(*(int(b[i]) for b in adaptive._adaptive_bounds(n, m))) for i, n, m in
                    zip(o, x.shape[2:], output_size))
        out[(..., *o)] = x[(..., *box)].mean(axis=tuple(range(2, x.ndim)))
    return out


@pytest.mark.parametrize("spatial, output_size", [
    ((7, 7), (1, 1)), ((7, 7), (7, 7)), ((8, 12), (4, 3)), ((9, 7), (4, 5)), ((5, 3), (7, 8)),
    ((6,), (4,)), ((4, 5, 6), (2, 5, 4)), ((3, 4, 2, 5), (2, 4, 3, 1)), ((100,), (70,)), ((90, 5), (66, 2)),
])
@pytest.mark.parametrize("sparse", [False, True])
def test_adaptive_avg_pool_matches_loop_reference_and_torch(spatial, output_size, sparse, monkeypatch):
    if sparse:  # every axis through scipy.sparse
        monkeypatch.setattr(adaptive, "_DENSE_ADAPTIVE_OUTPUTS", 0)
        adaptive._adaptive_matrix.cache_clear()
    x = values_of("distinct", (2, 3) + spatial, np.float64, seed=len(spatial))
    out, pullback = vjp(P.adaptive_avg_pool, x, output_size=output_size)
    np.testing.assert_allclose(out, adaptive_reference(x, output_size), rtol=1e-12, atol=1e-12)
    if len(spatial) <= 3:
        xt = t(x).requires_grad_(True)
        want = getattr(F, f"adaptive_avg_pool{len(spatial)}d")(xt, output_size)
        np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-12, atol=1e-12)
        grad_output = values_of("distinct", out.shape, np.float64, seed=9)
        want.backward(t(grad_output))
        np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    adaptive._adaptive_matrix.cache_clear()


def test_adaptive_avg_pool_float32_stays_float32():
    x = values_of("distinct", (4, 3, 14, 10), np.float32, seed=1)
    for size in [1, (7, 5), (5, 3), (14, 10)]:
        out, pullback = vjp(P.adaptive_avg_pool2d, x, output_size=size)
        assert out.dtype == np.float32 and pullback(np.ones_like(out))[0].dtype == np.float32
        np.testing.assert_allclose(out, F.adaptive_avg_pool2d(t(x), size).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial, output_size", [((5,), (2,)), ((6,), (3,)), ((3, 7), (2, 3)), ((4, 5, 6), (3, 2, 4))])
def test_adaptive_avg_pool_inf_and_nan_stay_in_their_windows(spatial, output_size):
    # The dense window matrix multiplies every input by the 0s of the windows it is not in; 0 * inf is NaN.
    x = values_of("distinct", (2, 3) + spatial, np.float64, seed=3)
    x[0, 0].flat[0], x[1, 2].flat[-1], x[0, 1].flat[1] = np.inf, -np.inf, np.nan
    xt = t(x).requires_grad_(True)
    want = getattr(F, f"adaptive_avg_pool{len(spatial)}d")(xt, output_size)
    grad_output = values_of("distinct", want.shape, np.float64, seed=4)
    grad_output[0, 0].flat[0], grad_output[1, 1].flat[-1] = np.inf, np.nan
    want.backward(t(grad_output))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no spurious "invalid value encountered in matmul"
        out, pullback = vjp(P.adaptive_avg_pool, x, output_size=output_size)
        np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# The spec cache
# ---------------------------------------------------------------------------


def test_spec_cache_never_accepts_what_the_check_rejects():
    x = np.zeros((1, 1, 5, 5))
    P.max_pool2d(x, 2)  # (int) 2 is now cached
    with pytest.raises(TypeError, match="kernel_size"):
        P.max_pool2d(x, 2.0)  # 2.0 == 2 and hashes alike
    P.max_pool2d(x, 2, ceil_mode=False)
    with pytest.raises(TypeError, match="ceil_mode"):
        P.max_pool2d(x, 2, ceil_mode=0)  # 0 == False
    P.avg_pool2d(x, 1)
    with pytest.raises(TypeError, match="kernel_size"):
        P.avg_pool2d(x, True)  # True == 1
    assert spec_module._plain_key(((1, 2), 2, None, [1, 1], False, "op", 2)) is not None
    assert spec_module._plain_key(((1, 2), np.int64(2))) is None  # numpy scalars are checked every time
    assert spec_module._plain_key(((1, 2), (2, 2.0))) is None


def test_spec_cache_returns_the_same_spec_for_numpy_and_python_ints():
    x = np.zeros((1, 2, 6, 6))
    np.testing.assert_array_equal(P.max_pool2d(x, np.int64(3), stride=(2, 2), padding=[1, 1]),
                                  P.max_pool2d(x, 3, stride=2, padding=1))
    first = spec_module._cached_pool_spec((1, 2, 6, 6), 3, 2, 1, 1, False, "max_pool2d", 2)
    assert spec_module._cached_pool_spec((1, 2, 6, 6), 3, 2, 1, 1, False, "max_pool2d", 2) is first
    assert first == P.pool_spec((1, 2, 6, 6), 3, 2, 1, op="max_pool2d", rank=2)
