"""Pooling against PyTorch (forward, indices, backward), a loop reference, the tie rule, gradcheck, errors."""

from __future__ import annotations

import itertools
import random
import re
from math import prod

import numpy as np
import pytest

import convolab.pooling as P
from convolab.pooling import adaptive
from convolab._vjp import gradcheck, vjp

torch = pytest.importorskip("torch")
F = torch.nn.functional


# ---------------------------------------------------------------------------
# Helpers and generated configurations
# ---------------------------------------------------------------------------


def distinct(shape, dtype=np.float64, seed=0):
    """Tie-free values: a shuffled arange, scaled by 1/4 (exact in float32)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(prod(shape)).reshape(shape) * 0.25 - prod(shape) / 8).astype(dtype)


def with_ties(shape, seed=0):
    """Values drawn from {0, 1, 2}: windows full of equal maxima."""
    return np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float64)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def fits(op, shape, **kw):
    try:
        P.pool_spec(shape, kw.pop("kernel_size"), op=op, **kw)
        return True
    except ValueError:
        return False


def max_configs(count_per_rank=14, seed=1):
    rng = random.Random(seed)
    configs = []
    for rank in (1, 2, 3):
        made = 0
        while made < count_per_rank:
            kernel = tuple(rng.randint(1, 3) for _ in range(rank))
            stride = tuple(rng.randint(1, 3) for _ in range(rank)) if rng.random() < 0.8 else None
            padding = tuple(rng.randint(0, k // 2) for k in kernel)
            dilation = tuple(rng.randint(1, 2) for _ in range(rank))
            ceil_mode = rng.random() < 0.5
            spatial = tuple(rng.randint(max(1, d * (k - 1) + 1 - 2 * p), 7 if rank < 3 else 5)
                            for k, p, d in zip(kernel, padding, dilation))
            batched = rng.random() < 0.7
            shape = ((rng.randint(1, 2),) if batched else ()) + (rng.randint(1, 3),) + spatial
            dtype = rng.choice([np.float32, np.float64])
            kw = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
            if not fits("max_pool", shape, **kw):
                continue
            configs.append(pytest.param(rank, shape, dtype, kw, id=f"{rank}d-{made}"))
            made += 1
    return configs


def avg_configs(count_per_rank=14, seed=2):
    rng = random.Random(seed)
    configs = []
    for rank in (1, 2, 3):
        made = 0
        while made < count_per_rank:
            kernel = tuple(rng.randint(1, 4) for _ in range(rank))
            stride = tuple(rng.randint(1, 3) for _ in range(rank)) if rng.random() < 0.8 else None
            padding = tuple(rng.randint(0, k // 2) for k in kernel)
            # PyTorch's avg_pool3d alone also wants the unpadded input at least the kernel size
            spatial = tuple(rng.randint(k if rank == 3 else max(1, k - 2 * p), 7 if rank < 3 else 5)
                            for k, p in zip(kernel, padding))
            batched = rng.random() < 0.7
            shape = ((rng.randint(1, 2),) if batched else ()) + (rng.randint(1, 3),) + spatial
            kw = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=rng.random() < 0.6,
                      count_include_pad=rng.random() < 0.5,
                      divisor_override=rng.choice([None, None, 3, -2]))
            if not fits("avg_pool", shape, kernel_size=kernel, stride=stride, padding=padding,
                        ceil_mode=kw["ceil_mode"]):
                continue
            configs.append(pytest.param(rank, shape, rng.choice([np.float32, np.float64]), kw,
                                        id=f"{rank}d-{made}"))
            made += 1
    return configs


def torch_avg_pool(x, rank, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """PyTorch's avg pool; its avg_pool1d has no divisor_override, so rank 1 goes through avg_pool2d."""
    if rank == 1:
        out = F.avg_pool2d(x.unsqueeze(-2), (1, kernel_size[0]), (1, (stride or kernel_size)[0]), (0, padding[0]),
                           ceil_mode, count_include_pad, divisor_override)
        return out.squeeze(-2)
    pool = F.avg_pool2d if rank == 2 else F.avg_pool3d
    return pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# A slow, obviously-right reference: PyTorch's loops, one output at a time
# ---------------------------------------------------------------------------


def reference_pool(x, kernel_size, stride, padding, dilation=None, ceil_mode=False, kind="max",
                   count_include_pad=True, divisor_override=None):
    """Batched x; returns values (and indices for max); any rank."""
    rank = len(kernel_size)
    stride = stride or kernel_size
    dilation = dilation or (1,) * rank
    insize = x.shape[2:]
    outsize = [P.pool_spec(x.shape, kernel_size, stride, padding, dilation, ceil_mode).output_size[d]
               for d in range(rank)]
    values = np.zeros(x.shape[:2] + tuple(outsize))
    indices = np.zeros(values.shape, dtype=np.int64)
    for lead in np.ndindex(*x.shape[:2]):
        for o in np.ndindex(*outsize):
            best, best_at = None, None
            total = 0.0
            for j in np.ndindex(*kernel_size):
                pos = [o[d] * stride[d] + j[d] * dilation[d] - padding[d] for d in range(rank)]
                if all(0 <= pos[d] < insize[d] for d in range(rank)):
                    v = x[lead + tuple(pos)]
                    total += v
                    if best is None or v > best:
                        best, best_at = v, np.ravel_multi_index(pos, insize)
            if kind == "max":
                values[lead + o], indices[lead + o] = best, best_at
            else:
                start = [o[d] * stride[d] - padding[d] for d in range(rank)]
                end = [min(start[d] + kernel_size[d], insize[d] + padding[d]) for d in range(rank)]
                if divisor_override is not None:
                    divisor = divisor_override
                elif count_include_pad:
                    divisor = prod(e - s for s, e in zip(start, end))
                else:
                    divisor = prod(min(e, n) - max(s, 0) for s, e, n in zip(start, end, insize))
                values[lead + o] = total / divisor
    return values, indices


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_nd_pools_match_loop_reference_including_rank_4(rank):
    rng = random.Random(rank)
    for trial in range(4):
        kernel = tuple(rng.randint(1, 3) for _ in range(rank))
        stride = tuple(rng.randint(1, 2) for _ in range(rank))
        padding = tuple(rng.randint(0, k // 2) for k in kernel)
        shape = (1, 2) + tuple(rng.randint(k, k + 3) for k in kernel)
        ceil_mode = trial % 2 == 1
        x = with_ties(shape, seed=trial) if trial < 2 else distinct(shape, seed=trial)
        values, indices = P.max_pool(x, kernel, stride, padding, 1, ceil_mode, return_indices=True)
        want_values, want_indices = reference_pool(x, kernel, stride, padding, None, ceil_mode)
        np.testing.assert_array_equal(values, want_values)
        np.testing.assert_array_equal(indices, want_indices)
        for count_include_pad in (True, False):
            got = P.avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad)
            want, _ = reference_pool(x, kernel, stride, padding, None, ceil_mode, "avg", count_include_pad)
            np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------------------
# Max pooling against PyTorch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rank, shape, dtype, kw", max_configs())
def test_max_pool_forward_indices_backward_match_torch(rank, shape, dtype, kw):
    x = distinct(shape, dtype, seed=len(shape))
    ours = getattr(P, f"max_pool{rank}d")
    values, indices = ours(x, **kw, return_indices=True)
    xt = t(x).requires_grad_(True)
    want, want_indices = getattr(F, f"max_pool{rank}d")(xt, **kw, return_indices=True)
    assert values.dtype == dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(values, want.detach().numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    # the N-d op with a tuple kernel is the same op
    np.testing.assert_array_equal(P.max_pool(x, **kw), values)

    grad_output = distinct(values.shape, dtype, seed=7)
    want.backward(t(grad_output))
    grad_input = getattr(P, f"max_pool{rank}d_input")(grad_output, x, **kw)
    assert grad_input.dtype == dtype and grad_input.shape == x.shape
    np.testing.assert_allclose(grad_input, xt.grad.numpy(), **tol(dtype))
    out, pullback = vjp(ours, x, **kw)
    np.testing.assert_array_equal(out, values)
    np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("rank, shape, dtype, kw", max_configs(count_per_rank=8, seed=11))
def test_max_pool_ties_follow_torch_first_maximum(rank, shape, dtype, kw):
    x = with_ties(shape, seed=rank).astype(dtype)
    values, indices = getattr(P, f"max_pool{rank}d")(x, **kw, return_indices=True)
    xt = t(x).requires_grad_(True)
    want, want_indices = getattr(F, f"max_pool{rank}d")(xt, **kw, return_indices=True)
    np.testing.assert_array_equal(values, want.detach().numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    grad_output = distinct(values.shape, dtype, seed=3)
    want.backward(t(grad_output))
    np.testing.assert_allclose(getattr(P, f"max_pool{rank}d_input")(grad_output, x, **kw), xt.grad.numpy(),
                               **tol(dtype))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_all_equal_overlapping_windows_send_whole_gradient_to_first_tap(rank):
    x = np.ones((1, 2) + (4,) * rank)
    kw = dict(kernel_size=3, stride=1, padding=1)
    _, indices = getattr(P, f"max_pool{rank}d")(x, **kw, return_indices=True)
    grad = getattr(P, f"max_pool{rank}d_input")(np.ones((1, 2) + (4,) * rank), x, **kw)
    xt = t(x).requires_grad_(True)
    out, want_indices = getattr(F, f"max_pool{rank}d")(xt, **kw, return_indices=True)
    out.sum().backward()
    np.testing.assert_array_equal(indices, want_indices.numpy())
    np.testing.assert_array_equal(grad, xt.grad.numpy())
    # each window's first valid tap: the corner window (o = 0) picks element 0, interior ones o - 1
    assert indices[(0, 0) + (0,) * rank] == 0
    assert indices[(0, 0) + (2,) * rank] == np.ravel_multi_index((1,) * rank, (4,) * rank)
    assert grad.sum() == 2 * 4 ** rank  # every window's gradient lands exactly once


def test_tie_rule_by_hand():
    x = np.array([[2., 2., 1., 5., 5.]])
    values, indices = P.max_pool1d(x, 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(values, [[2., 2., 5., 5.]])
    np.testing.assert_array_equal(indices, [[0, 1, 3, 3]])  # (2, 2) -> first; (5, 5) -> first
    np.testing.assert_array_equal(P.max_pool1d_input(np.ones((1, 4)), x, 2, stride=1), [[1., 1., 0., 2., 0.]])


def test_minus_inf_and_integer_minimum_get_torch_indices_not_padding():
    x = np.full((1, 1, 3, 3), -np.inf)
    values, indices = P.max_pool2d(x, 2, padding=1, return_indices=True)
    want, want_indices = F.max_pool2d(t(x), 2, padding=1, return_indices=True)
    np.testing.assert_array_equal(values, want.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    xi = np.full((1, 1, 3, 3), np.iinfo(np.int64).min)
    values, indices = P.max_pool2d(xi, 2, padding=1, return_indices=True)
    want, want_indices = F.max_pool2d(t(xi), 2, padding=1, return_indices=True)
    assert values.dtype == np.int64
    np.testing.assert_array_equal(values, want.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())


def test_nan_propagates_with_index_of_last_nan_as_torch():
    x = np.array([[[1., np.nan, 2., np.nan, 0.], [4., 3., np.nan, 1., 0.]]])
    for ours, theirs, arg in [(P.max_pool2d, F.max_pool2d, (2, 5)), (P.adaptive_max_pool2d, F.adaptive_max_pool2d, 1)]:
        values, indices = ours(x, arg, return_indices=True)
        want, want_indices = theirs(t(x), arg, return_indices=True)
        np.testing.assert_array_equal(values, want.numpy())
        np.testing.assert_array_equal(indices, want_indices.numpy())
        assert indices.ravel()[0] == 7


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_max_pool_keeps_integer_dtype(dtype):
    x = np.random.default_rng(0).integers(0, 100, size=(2, 3, 5, 6)).astype(dtype)
    values, indices = P.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    want, want_indices = F.max_pool2d(t(x.astype(np.float64)), 3, 2, 1, ceil_mode=True, return_indices=True)
    assert values.dtype == dtype
    np.testing.assert_array_equal(values, want.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    assert P.adaptive_max_pool2d(x, (2, 4)).dtype == dtype
    np.testing.assert_array_equal(P.max_pool1d(x[0], 2), P.max_pool1d(x[0].astype(np.float64), 2))


def test_float16_keeps_dtype():
    x = distinct((1, 2, 6, 6), np.float16)
    assert P.max_pool2d(x, 2).dtype == np.float16
    np.testing.assert_array_equal(P.max_pool2d(x, 2), P.max_pool2d(x.astype(np.float32), 2))
    for op, kw in [(P.avg_pool3d, dict(kernel_size=2, padding=1)), (P.adaptive_avg_pool3d, dict(output_size=4))]:
        got = op(x, **kw)
        assert got.dtype == np.float16
        np.testing.assert_allclose(got, op(x.astype(np.float32), **kw), rtol=1e-3)


def test_empty_batch_matches_torch_shapes():
    x = np.zeros((0, 2, 5, 5))
    assert P.max_pool2d(x, 2, padding=1, ceil_mode=True).shape == F.max_pool2d(t(x), 2, padding=1, ceil_mode=True).shape
    assert P.avg_pool2d(x, 3, stride=2).shape == F.avg_pool2d(t(x), 3, stride=2).shape
    assert P.adaptive_max_pool2d(x, 3).shape == (0, 2, 3, 3)
    assert P.max_pool2d_input(np.zeros((0, 2, 2, 2)), x, 2).shape == x.shape
    assert P.avg_pool2d_input(np.zeros((0, 2, 2, 2)), x, 2).shape == x.shape


def test_inputs_are_never_modified():
    x = distinct((2, 2, 5, 5))
    kept = x.copy()
    x.setflags(write=False)
    g = np.ones((2, 2, 3, 3))
    g.setflags(write=False)
    P.max_pool2d(x, 2, ceil_mode=True)
    P.avg_pool2d(x, 3, stride=2, padding=1)
    P.adaptive_avg_pool2d(x, 3)
    P.adaptive_max_pool2d(x, 3)
    P.max_pool2d_input(g, x, 2, ceil_mode=True)
    P.avg_pool2d_input(g, x, 3, stride=2, padding=1)
    _, pullback = vjp(P.adaptive_avg_pool2d, x, output_size=3)
    pullback(g)
    values, indices = P.max_pool2d(x, 2, return_indices=True)
    P.max_unpool2d(values, indices, 2, output_size=(5, 5))
    np.testing.assert_array_equal(x, kept)


# ---------------------------------------------------------------------------
# Average pooling against PyTorch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rank, shape, dtype, kw", avg_configs())
def test_avg_pool_forward_backward_match_torch(rank, shape, dtype, kw):
    x = distinct(shape, dtype, seed=len(shape) + 1)
    ours = getattr(P, f"avg_pool{rank}d")
    got = ours(x, **kw)
    xt = t(x).requires_grad_(True)
    want = torch_avg_pool(xt, rank, **kw)
    assert got.dtype == dtype and got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(P.avg_pool(x, **kw), got, **tol(dtype))

    grad_output = distinct(got.shape, dtype, seed=5)
    want.backward(t(grad_output))
    grad_input = getattr(P, f"avg_pool{rank}d_input")(grad_output, x, **kw)
    assert grad_input.dtype == dtype and grad_input.shape == x.shape
    np.testing.assert_allclose(grad_input, xt.grad.numpy(), **tol(dtype))
    _, pullback = vjp(ours, x, **kw)
    np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_ceil_window_past_padded_input_divisor(count_include_pad):
    # in=6, k=3, s=2, p=1, ceil: the last window starts at 5 and hangs past in + p = 7
    x = np.arange(1., 7.).reshape(1, 1, 6)
    got = P.avg_pool1d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=count_include_pad)
    want = F.avg_pool1d(t(x), 3, stride=2, padding=1, ceil_mode=True, count_include_pad=count_include_pad)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)
    assert got[0, 0, -1] == (6 / 2 if count_include_pad else 6 / 1)


def test_avg_pool_of_integers_is_exact_float64():
    x = np.array([[[1, 2, 4, -7]]], dtype=np.int32)
    got = P.avg_pool1d(x, 2)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[[1.5, -1.5]]])  # PyTorch's int64 kernel truncates to [1, -1]
    np.testing.assert_array_equal(P.adaptive_avg_pool1d(x, 1), [[[0.0]]])
    assert P.avg_pool2d(np.arange(16, dtype=np.uint8).reshape(1, 4, 4), 2).dtype == np.float64


# ---------------------------------------------------------------------------
# Adaptive pooling against PyTorch
# ---------------------------------------------------------------------------


def adaptive_configs(seed=3):
    rng = random.Random(seed)
    configs = []
    for rank in (1, 2, 3):
        for trial in range(8):
            spatial = tuple(rng.randint(1, 9 if rank < 3 else 6) for _ in range(rank))
            output = tuple(rng.choice([rng.randint(1, 2 * n + 1), None] if rank > 1 else [rng.randint(1, 2 * n + 1)])
                           for n in spatial)
            batched = trial % 3 != 0
            shape = ((2,) if batched else ()) + (rng.randint(1, 3),) + spatial
            configs.append(pytest.param(rank, shape, output, rng.choice([np.float32, np.float64]),
                                        id=f"{rank}d-{spatial}->{output}"))
    return configs


@pytest.mark.parametrize("rank, shape, output_size, dtype", adaptive_configs())
def test_adaptive_pools_match_torch(rank, shape, output_size, dtype):
    for values_of in (distinct, with_ties):
        x = values_of(shape, seed=rank).astype(dtype)
        xt = t(x).requires_grad_(True)
        want = getattr(F, f"adaptive_avg_pool{rank}d")(xt, output_size)
        got = getattr(P, f"adaptive_avg_pool{rank}d")(x, output_size)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want.detach().numpy(), **tol(dtype))
        np.testing.assert_allclose(P.adaptive_avg_pool(x, output_size), got, **tol(dtype))
        grad_output = distinct(got.shape, dtype, seed=9)
        want.backward(t(grad_output))
        _, pullback = vjp(getattr(P, f"adaptive_avg_pool{rank}d"), x, output_size=output_size)
        np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), **tol(dtype))

        xt = t(x).requires_grad_(True)
        want, want_indices = getattr(F, f"adaptive_max_pool{rank}d")(xt, output_size, return_indices=True)
        got, indices = getattr(P, f"adaptive_max_pool{rank}d")(x, output_size, return_indices=True)
        np.testing.assert_array_equal(got, want.detach().numpy())
        np.testing.assert_array_equal(indices, want_indices.numpy())
        np.testing.assert_array_equal(P.adaptive_max_pool(x, output_size), got)
        want.backward(t(grad_output))
        _, pullback = vjp(getattr(P, f"adaptive_max_pool{rank}d"), x, output_size=output_size)
        np.testing.assert_allclose(pullback(grad_output)[0], xt.grad.numpy(), **tol(dtype))


def test_adaptive_zero_output_size_is_empty_as_torch():
    x = distinct((1, 2, 4, 5))
    assert P.adaptive_avg_pool2d(x, (0, 3)).shape == tuple(F.adaptive_avg_pool2d(t(x), (0, 3)).shape)
    assert P.adaptive_max_pool2d(x, (0, 3)).shape == tuple(F.adaptive_max_pool2d(t(x), (0, 3)).shape)


def test_adaptive_windows_are_torch_bounds():
    start, end = adaptive._adaptive_bounds(7, 3)
    np.testing.assert_array_equal(start, [0, 2, 4])
    np.testing.assert_array_equal(end, [3, 5, 7])
    start, end = adaptive._adaptive_bounds(3, 5)  # more outputs than inputs: windows repeat
    np.testing.assert_array_equal(start, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(end, [1, 2, 2, 3, 3])


# ---------------------------------------------------------------------------
# Max unpooling against PyTorch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rank, spatial, kernel, stride, padding, explicit_size, batched", [
    (1, (9,), 2, None, 0, True, True),
    (1, (7,), 3, 2, 1, False, False),
    (2, (5, 7), 2, None, 0, True, True),
    (2, (7, 7), 3, 2, 1, False, True),
    (2, (7, 5), (3, 2), (2, 1), (1, 0), True, False),
    (3, (4, 5, 4), 2, None, 0, True, True),
    (3, (5, 4, 5), (3, 2, 3), 2, (1, 0, 1), False, False),
])
def test_max_unpool_matches_torch(rank, spatial, kernel, stride, padding, explicit_size, batched):
    shape = ((2,) if batched else ()) + (3,) + spatial
    x = distinct(shape, seed=rank)
    values_t, indices_t = getattr(F, f"max_pool{rank}d")(t(x), kernel, stride, padding, return_indices=True)
    values, indices = values_t.numpy(), indices_t.numpy()
    size = spatial if explicit_size else None
    got = getattr(P, f"max_unpool{rank}d")(values, indices, kernel, stride, padding, size)
    vt = values_t.clone().requires_grad_(True)
    want = getattr(F, f"max_unpool{rank}d")(vt, indices_t, kernel, stride, padding, size)
    np.testing.assert_array_equal(got, want.detach().numpy())
    kernel_tuple = (kernel,) * rank if isinstance(kernel, int) else kernel
    np.testing.assert_array_equal(P.max_unpool(values, indices, kernel_tuple, stride, padding, size), got)
    grad_output = distinct(got.shape, seed=4)
    want.backward(t(grad_output))
    _, pullback = vjp(getattr(P, f"max_unpool{rank}d"), values, indices, kernel_size=kernel, stride=stride,
                      padding=padding, output_size=size)
    grad_input, grad_indices = pullback(grad_output)
    assert grad_indices is None
    np.testing.assert_array_equal(grad_input, vt.grad.numpy())


def test_max_unpool_full_output_size_and_pool_roundtrip():
    x = distinct((1, 1, 5, 5))
    values, indices = P.max_pool2d(x, 2, return_indices=True)
    restored = P.max_unpool2d(values, indices, 2, output_size=(1, 1, 5, 5))
    assert restored.shape == x.shape
    np.testing.assert_array_equal(P.max_pool2d(restored, 2), values)
    assert np.count_nonzero(restored) == values.size - np.count_nonzero(values == 0)


# ---------------------------------------------------------------------------
# vjp details and gradcheck on every op
# ---------------------------------------------------------------------------


def test_vjp_with_return_indices_pulls_back_values_only():
    x = distinct((2, 3, 5, 5))
    for op, params in [(P.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
                       (P.adaptive_max_pool2d, dict(output_size=(2, 3)))]:
        (values, indices), pullback = vjp(op, x, return_indices=True, **params)
        np.testing.assert_array_equal(indices, op(x, return_indices=True, **params)[1])
        g = distinct(values.shape, seed=1)
        plain_values, plain_pullback = vjp(op, x, **params)
        np.testing.assert_array_equal(values, plain_values)
        np.testing.assert_array_equal(pullback(g)[0], plain_pullback(g)[0])
        np.testing.assert_array_equal(pullback((g, None))[0], plain_pullback(g)[0])
        with pytest.raises(ValueError, match="grad_output"):
            pullback((g, g))


GRADCHECKS = [
    (P.max_pool, (1, 2, 5, 6), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2),
                                    ceil_mode=True)),
    (P.max_pool1d, (2, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (P.max_pool2d, (1, 2, 5, 5), dict(kernel_size=2, stride=1, dilation=2)),
    (P.max_pool3d, (1, 1, 4, 4, 5), dict(kernel_size=(2, 3, 2), stride=2, padding=(1, 1, 0))),
    (P.avg_pool, (2, 5, 5), dict(kernel_size=(3, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    (P.avg_pool1d, (1, 2, 8), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    (P.avg_pool2d, (1, 2, 5, 6), dict(kernel_size=(2, 3), padding=(1, 1), divisor_override=5)),
    (P.avg_pool3d, (1, 1, 4, 5, 4), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    (P.adaptive_avg_pool, (1, 2, 7, 5), dict(output_size=(3, None))),
    (P.adaptive_avg_pool1d, (2, 7), dict(output_size=4)),
    (P.adaptive_avg_pool2d, (1, 1, 5, 7), dict(output_size=(3, 9))),
    (P.adaptive_avg_pool3d, (1, 1, 4, 5, 3), dict(output_size=(3, 2, 2))),
    (P.adaptive_max_pool, (1, 2, 7, 5), dict(output_size=(3, 2))),
    (P.adaptive_max_pool1d, (2, 7), dict(output_size=3)),
    (P.adaptive_max_pool2d, (1, 1, 5, 7), dict(output_size=(3, 4))),
    (P.adaptive_max_pool3d, (1, 1, 4, 5, 3), dict(output_size=(2, 3, 2))),
]


@pytest.mark.parametrize("op, shape, params", GRADCHECKS, ids=lambda v: getattr(v, "__name__", None))
def test_gradcheck(op, shape, params):
    assert gradcheck(op, distinct(shape, seed=2), **params)


@pytest.mark.parametrize("rank", [None, 1, 2, 3])
def test_gradcheck_max_unpool(rank):
    spatial = {None: (5, 4), 1: (7,), 2: (5, 4), 3: (4, 3, 5)}[rank]
    kernel = (2,) * len(spatial)
    values, indices = P.max_pool(distinct((1, 2) + spatial), kernel, return_indices=True)
    op = P.max_unpool if rank is None else getattr(P, f"max_unpool{rank}d")
    # indices go by keyword: gradcheck casts every positional array to float64
    assert gradcheck(op, values, indices=indices, kernel_size=kernel, output_size=spatial)


# ---------------------------------------------------------------------------
# Every rejected input: exception type, and a message naming the op and parameter
# ---------------------------------------------------------------------------

X2 = np.zeros((1, 1, 5, 5))
G2 = np.zeros((1, 1, 2, 2))
VALUES, INDICES = P.max_pool2d(distinct((1, 1, 4, 4)), 2, return_indices=True)

ERRORS = [
    # max pooling
    ("max_pool2d", "input", TypeError, lambda: P.max_pool2d([[[1.0]]], 1)),
    ("max_pool2d", "input", TypeError, lambda: P.max_pool2d(X2.astype(np.complex128), 2)),
    ("max_pool2d", "input", TypeError, lambda: P.max_pool2d(X2.astype(bool), 2)),
    ("max_pool2d", "input", ValueError, lambda: P.max_pool2d(np.zeros((5, 5)), 2)),
    ("max_pool2d", "input", ValueError, lambda: P.max_pool2d(np.zeros((1, 1, 1, 5, 5)), 2)),
    ("max_pool2d", "kernel_size", ValueError, lambda: P.max_pool2d(X2, 0)),
    ("max_pool2d", "kernel_size", ValueError, lambda: P.max_pool2d(X2, (2, 2, 2))),
    ("max_pool2d", "kernel_size", TypeError, lambda: P.max_pool2d(X2, 2.0)),
    ("max_pool2d", "kernel_size", ValueError, lambda: P.max_pool2d(X2, 6)),
    ("max_pool2d", "kernel_size", ValueError, lambda: P.max_pool2d(X2, 3, dilation=3)),
    ("max_pool", "kernel_size", TypeError, lambda: P.max_pool(X2, 2)),
    ("max_pool", "input", ValueError, lambda: P.max_pool(X2, (2,))),
    ("max_pool2d", "stride", ValueError, lambda: P.max_pool2d(X2, 2, stride=0)),
    ("max_pool2d", "stride", ValueError, lambda: P.max_pool2d(X2, 2, stride=(1, 1, 1))),
    ("max_pool2d", "dilation", ValueError, lambda: P.max_pool2d(X2, 2, dilation=0)),
    ("max_pool1d", "dilation", ValueError, lambda: P.max_pool1d(np.zeros((1, 1)), 2, stride=1, padding=1, dilation=2)),
    ("max_pool2d", "padding", ValueError, lambda: P.max_pool2d(X2, 2, padding=-1)),
    ("max_pool2d", "padding", ValueError, lambda: P.max_pool2d(X2, 3, padding=2)),
    ("max_pool2d", "padding", ValueError, lambda: P.max_pool2d(X2, 2, padding=2, dilation=3)),
    ("max_pool2d", "ceil_mode", TypeError, lambda: P.max_pool2d(X2, 2, ceil_mode=1)),
    ("max_pool2d", "return_indices", TypeError, lambda: P.max_pool2d(X2, 2, return_indices="yes")),
    ("max_pool2d_input", "grad_output", ValueError, lambda: P.max_pool2d_input(np.zeros((1, 1, 3, 3)), X2, 2)),
    ("max_pool2d_input", "grad_output", TypeError, lambda: P.max_pool2d_input(G2.astype(int), X2, 2)),
    ("max_pool2d_input", "grad_output", TypeError, lambda: P.max_pool2d_input(G2.tolist(), X2, 2)),
    ("max_pool_input", "kernel_size", TypeError, lambda: P.max_pool_input(G2, X2, 2)),
    ("avg_pool_input", "kernel_size", TypeError, lambda: P.avg_pool_input(G2, X2, [])),
    ("max_pool2d_input", "padding", ValueError, lambda: P.max_pool2d_input(G2, X2, 2, padding=2)),
    ("max_pool2d", "grad_output", ValueError, lambda: vjp(P.max_pool2d, X2, kernel_size=2)[1](np.zeros((2, 2)))),
    # average pooling
    ("avg_pool2d", "input", TypeError, lambda: P.avg_pool2d(None, 2)),
    ("avg_pool3d", "input", ValueError, lambda: P.avg_pool3d(X2[0], 2)),
    ("avg_pool2d", "kernel_size", ValueError, lambda: P.avg_pool2d(X2, (0, 1))),
    ("avg_pool2d", "kernel_size", ValueError, lambda: P.avg_pool2d(X2, 8, padding=1)),
    ("avg_pool", "kernel_size", TypeError, lambda: P.avg_pool(X2, 2)),
    ("avg_pool2d", "stride", TypeError, lambda: P.avg_pool2d(X2, 2, stride="2")),
    ("avg_pool2d", "padding", ValueError, lambda: P.avg_pool2d(X2, 2, padding=(0, 2))),
    ("avg_pool2d", "padding", ValueError, lambda: P.avg_pool2d(X2, 2, padding=-1)),
    ("avg_pool2d", "ceil_mode", TypeError, lambda: P.avg_pool2d(X2, 2, ceil_mode=None)),
    ("avg_pool2d", "count_include_pad", TypeError, lambda: P.avg_pool2d(X2, 2, count_include_pad=0)),
    ("avg_pool2d", "divisor_override", ValueError, lambda: P.avg_pool2d(X2, 2, divisor_override=0)),
    ("avg_pool2d", "divisor_override", TypeError, lambda: P.avg_pool2d(X2, 2, divisor_override=1.5)),
    ("avg_pool2d_input", "grad_output", ValueError, lambda: P.avg_pool2d_input(np.zeros((1, 1, 2)), X2, 2)),
    ("avg_pool2d_input", "grad_output", TypeError, lambda: P.avg_pool2d_input(G2.astype(np.int64), X2, 2)),
    ("avg_pool1d", "grad_output", ValueError, lambda: vjp(P.avg_pool1d, X2[0], kernel_size=2)[1](G2)),
    # adaptive pooling
    ("adaptive_avg_pool2d", "input", TypeError, lambda: P.adaptive_avg_pool2d(3.0, 2)),
    ("adaptive_avg_pool2d", "input", ValueError, lambda: P.adaptive_avg_pool2d(np.zeros(5), 2)),
    ("adaptive_avg_pool2d", "input", ValueError, lambda: P.adaptive_avg_pool2d(np.zeros((1, 1, 0, 4)), 2)),
    ("adaptive_max_pool1d", "input", ValueError, lambda: P.adaptive_max_pool1d(np.zeros((1, 0)), 2)),
    ("adaptive_avg_pool2d", "output_size", ValueError, lambda: P.adaptive_avg_pool2d(X2, -1)),
    ("adaptive_avg_pool2d", "output_size", ValueError, lambda: P.adaptive_avg_pool2d(X2, (2, 2, 2))),
    ("adaptive_max_pool2d", "output_size", TypeError, lambda: P.adaptive_max_pool2d(X2, 2.5)),
    ("adaptive_max_pool2d", "output_size", TypeError, lambda: P.adaptive_max_pool2d(X2, (2, "a"))),
    ("adaptive_avg_pool", "output_size", TypeError, lambda: P.adaptive_avg_pool(X2, 2)),
    ("adaptive_max_pool", "output_size", TypeError, lambda: P.adaptive_max_pool(X2, ())),
    ("adaptive_max_pool2d", "return_indices", TypeError, lambda: P.adaptive_max_pool2d(X2, 2, return_indices=1)),
    ("adaptive_max_pool2d", "grad_output", ValueError,
     lambda: vjp(P.adaptive_max_pool2d, X2, output_size=2)[1](np.zeros((1, 1, 3, 3)))),
    # max unpooling
    ("max_unpool2d", "input", TypeError, lambda: P.max_unpool2d(VALUES.tolist(), INDICES, 2)),
    ("max_unpool2d", "input", ValueError, lambda: P.max_unpool2d(VALUES[0, 0], INDICES[0, 0], 2)),
    ("max_unpool2d", "indices", TypeError, lambda: P.max_unpool2d(VALUES, INDICES.tolist(), 2)),
    ("max_unpool2d", "indices", TypeError, lambda: P.max_unpool2d(VALUES, INDICES.astype(float), 2)),
    ("max_unpool2d", "indices", ValueError, lambda: P.max_unpool2d(VALUES, INDICES[..., :1], 2)),
    ("max_unpool2d", "indices", ValueError, lambda: P.max_unpool2d(VALUES, INDICES + 20, 2)),
    ("max_unpool2d", "indices", ValueError, lambda: P.max_unpool2d(VALUES, INDICES - 20, 2)),
    ("max_unpool2d", "kernel_size", ValueError, lambda: P.max_unpool2d(VALUES, INDICES, 0)),
    ("max_unpool", "kernel_size", TypeError, lambda: P.max_unpool(VALUES, INDICES, 2)),
    ("max_unpool2d", "stride", ValueError, lambda: P.max_unpool2d(VALUES, INDICES, 2, stride=-1)),
    ("max_unpool2d", "padding", ValueError, lambda: P.max_unpool2d(VALUES, INDICES, 2, padding=-1)),
    ("max_unpool2d", "padding", ValueError, lambda: P.max_unpool2d(VALUES, INDICES, 2, padding=3)),
    ("max_unpool2d", "output_size", ValueError, lambda: P.max_unpool2d(VALUES, INDICES, 2, output_size=(6, 4))),
    ("max_unpool2d", "output_size", ValueError, lambda: P.max_unpool2d(VALUES, INDICES, 2, output_size=(4, 4, 4))),
    ("max_unpool2d", "output_size", TypeError, lambda: P.max_unpool2d(VALUES, INDICES, 2, output_size=4)),
    ("max_unpool2d", "output_size", TypeError, lambda: P.max_unpool2d(VALUES, INDICES, 2, output_size=(4, 4.0))),
    ("max_unpool2d", "grad_output", ValueError,
     lambda: vjp(P.max_unpool2d, VALUES, INDICES, kernel_size=2)[1](np.zeros((1, 1, 2, 2)))),
    # the spec on its own
    ("max_pool", "input", ValueError, lambda: P.pool_spec((4, 4), (2, 2, 2))),
    ("max_pool", "input_shape", TypeError, lambda: P.pool_spec((1, 1, 4.0), (2,))),
    ("avg_pool", "input_shape", TypeError, lambda: P.pool_spec("abc", (2,), op="avg_pool")),
]


@pytest.mark.parametrize("op, name, kind, call", ERRORS,
                         ids=[f"{op}-{name}-{i}" for i, (op, name, _, _) in enumerate(ERRORS)])
def test_rejected_input_names_op_and_parameter(op, name, kind, call):
    with pytest.raises(kind) as caught:
        call()
    message = str(caught.value)
    assert message.startswith(f"{op}: {name} "), message
    assert ", got " in message, message  # the value is echoed


def test_nd_rank_error_points_to_the_fixed_rank_ops():
    with pytest.raises(TypeError, match="use max_pool1d_input, max_pool2d_input, max_pool3d_input"):
        P.max_pool_input(G2, X2, 2)
    with pytest.raises(TypeError, match="use adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d"):
        P.adaptive_avg_pool(X2, 2)


def test_padding_rule_is_torchs_plain_kernel_half():
    # padding 2 <= effective kernel 4 // 2, but > kernel_size 2 // 2: PyTorch refuses, and so do we
    with pytest.raises(RuntimeError, match="half of kernel size"):
        F.max_pool1d(torch.ones(1, 1, 5), 2, stride=1, padding=2, dilation=3, return_indices=True)
    with pytest.raises(ValueError, match=re.escape("padding <= kernel_size // 2")):
        P.max_pool1d(np.ones((1, 1, 5)), 2, stride=1, padding=2, dilation=3)


def test_public_names_are_all_defined_and_differentiable_ops_registered():
    from convolab._vjp import _RULES

    for name in P.__all__:
        assert hasattr(P, name), name
    forward = [n for n in P.__all__ if not n.endswith("_input") and n not in ("PoolSpec", "pool_spec")]
    assert len(forward) == 20
    assert all(getattr(P, n) in _RULES for n in forward)
    assert all(getattr(P, n).__name__ == n for n in P.__all__ if n != "PoolSpec")
    assert all("Shape\n    -----" in getattr(P, n).__doc__ for n in P.__all__ if n not in ("PoolSpec", "pool_spec"))


def test_pool_spec_window_padding_covers_ceil_windows():
    for size, k, s, p, d in itertools.product(range(1, 9), range(1, 4), range(1, 4), range(0, 2), range(1, 3)):
        if p > k // 2 or size + 2 * p < d * (k - 1) + 1:
            continue
        try:
            spec = P.pool_spec((1, 1, size), (k,), s, p, d, True)
        except ValueError:  # a window reading only padding
            continue
        (low, high), = spec.window_padding
        out, = spec.output_size
        assert (size + low + high - d * (k - 1) - 1) // s + 1 == out
        assert high >= p
