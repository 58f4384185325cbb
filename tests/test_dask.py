"""convolab.dask against the eager ops, on a dask.distributed LocalCluster of two worker processes.

Every chunked result is compared with the eager op on the whole array: exactly
for integer data (whatever algorithm a block picks, integers are exact), to
rounding for floating point. Chunkings are drawn at random per axis: chunks of
one cell (smaller than any halo), uneven cuts, or one chunk.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from itertools import accumulate, pairwise

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import convolab as cl  # noqa: E402
import convolab.dask as cld  # noqa: E402
from convolab import shapes  # noqa: E402

MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")
# Per worker; the memory test's image is 2.3 times this (1.14 times both). A worker process that has run a
# compiled kernel carries about 100 MiB of Numba and LLVM beside its chunks, hence 448 rather than 320.
WORKER_MEMORY = 448 * 2**20


@pytest.fixture(scope="module")
def client():
    # No spilling to disk and no pausing: a worker that outgrows 95% of its limit is killed and restarted.
    memory = {"distributed.worker.memory." + key: False for key in ("target", "spill", "pause")}
    # A nanny writes its workers' environment (OMP_NUM_THREADS=1 and the BLAS's) into this process's
    # os.environ and leaves it there; convolab reads those variables for its thread count, so every later
    # test module would plan for one thread.
    environment = dict(os.environ)
    try:
        with dask.config.set(memory):
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               memory_limit=WORKER_MEMORY, dashboard_address=None)
        with cluster, distributed.Client(cluster) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(environment)


# ---------------------------------------------------------------------------
# Generated problems
# ---------------------------------------------------------------------------


def _chunks(rng: np.random.Generator, n: int, ones: bool = True) -> tuple[int, ...]:
    """Chunk sizes for an axis of ``n``: all ones (smaller than any halo), uneven cuts, or one chunk.

    Kept to a few chunks per axis: each block is a dozen tasks, and the cluster's
    overhead per task, not the arithmetic, is what these tests spend their time on.
    """
    style = rng.choice(["ones", "cuts", "single"], p=[0.3, 0.5, 0.2])
    if n <= 1 or style == "single":
        return (n,)
    if style == "ones" and n <= 6 and ones:
        return (1,) * n
    cuts = sorted(set(rng.integers(1, n, size=rng.integers(1, min(n, 4))).tolist()))
    return tuple(b - a for a, b in pairwise([0, *cuts, n]))


def _conv_case(rng: np.random.Generator, rank: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                      dict, tuple]:
    """A random convolution that the eager op accepts, and a chunking of its input."""
    while True:
        kernel = tuple(int(k) for k in rng.integers(1, 5 if rank < 3 else 4, rank))
        dilation = tuple(int(d) for d in rng.integers(1, 4 if rank < 3 else 3, rank))
        stride = tuple(int(s) for s in rng.integers(1, 4, rank))
        size = tuple(int(n) for n in rng.integers(1, (16, 10, 6)[rank - 1], rank))
        style = rng.integers(4)  # with a padding mode, never "valid": the mode must be exercised
        if style == 0:
            padding = "same"
        elif style == 1 and mode == "zeros":
            padding = "valid"
        else:
            limit = [n - 1 if mode == "reflect" else n for n in size]
            padding = tuple((int(rng.integers(0, min(m, 6) + 1)), int(rng.integers(0, min(m, 6) + 1))) for m in limit)
        groups = int(rng.choice([1, 2]))
        batch = int(rng.integers(1, 3))
        x = rng.integers(-9, 10, (batch, 2 * groups, *size))
        w = rng.integers(-9, 10, (2 * groups, 2, *kernel))
        bias = rng.integers(-9, 10, 2 * groups) if rng.random() < 0.5 else None
        params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode,
                      flip=bool(rng.random() < 0.3))
        try:
            cl.conv(x[:1], w, bias, **params)  # the kernel must fit, the padding must suit the mode
        except ValueError:
            continue
        chunks = (_chunks(rng, batch), _chunks(rng, x.shape[1]), *_spatial_chunks(rng, size))
        return x, w, bias, params, chunks


def _spatial_chunks(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Chunks per spatial axis; in 3-d, one-cell chunks on the first axis only (a block grid of 6**3 is slow)."""
    return tuple(_chunks(rng, n, ones=len(size) < 3 or axis == 0) for axis, n in enumerate(size))


def _assert_each_equal(results, expected, labels) -> None:
    for got, want, label in zip(results, expected, labels):
        assert got.dtype == want.dtype, label
        np.testing.assert_array_equal(got, want, err_msg=str(label))


# ---------------------------------------------------------------------------
# The chunk planner: integers only, no dask arrays
# ---------------------------------------------------------------------------


def test_plan_axis_geometry_on_generated_axes():
    rng = np.random.default_rng(0)
    for _ in range(400):
        size = int(rng.integers(1, 30))  # cut anywhere: many one- and two-cell chunks, some empty ones
        cuts = sorted(rng.integers(0, size + 1, size=rng.integers(0, size + 1)).tolist())
        chunks = tuple(b - a for a, b in pairwise([0, *cuts, size]))
        k, s, d = (int(v) for v in rng.integers(1, 6, 3))
        low, high = (int(v) for v in rng.integers(0, 6, 2))
        extent = shapes.dilated_kernel_size(k, d)
        if size + low + high < extent:
            continue
        plan = cld.plan_axis(chunks, k, s, (low, high), d)
        out = shapes.conv_output_size(size, k, s, (low, high), d)
        assert plan.output_size == out and min(plan.output_chunks) >= 1
        offsets = plan.output_offsets
        assert len(plan.input_ranges) == len(plan.output_chunks) == len(offsets)
        for p0, n, (start, stop) in zip(offsets, plan.output_chunks, plan.input_ranges):
            assert start == p0 * s - low  # on the stride grid
            assert stop - start == (n - 1) * s + extent  # exactly the cells the block's windows span
            assert -low <= start and stop <= size + high
        # Each output belongs to the chunk holding its window's centre: block boundaries come from chunk boundaries.
        anchor = (extent - 1) // 2
        expected = sorted({0, out, *(min(max(-(-(b + low - anchor) // s), 0), out) for b in accumulate(chunks[:-1]))})
        assert list(accumulate(plan.output_chunks, initial=0)) == expected
        # The input gradient: every padded block lists exactly the outputs whose windows reach it.
        assert sum(plan.grad_chunks) == size + low + high
        for u, n, reach in zip(plan.grad_offsets, plan.grad_chunks, plan.grad_output_ranges):
            touching = [p for p in range(out) if p * s < u + n and p * s + extent > u]
            assert reach == ((touching[0], touching[-1] + 1) if touching and n else None)


def test_plan_axis_keeps_chunks_at_stride_one_with_same_padding():
    for chunks in [(5, 5), (1, 1, 1, 4), (7, 2, 9)]:
        for k in (1, 3, 5):
            padding = shapes.same_padding(sum(chunks), k)
            assert cld.plan_axis(chunks, k, 1, padding).output_chunks == chunks


def test_plan_chunks_resolves_padding_strings():
    (plan,) = cld.plan_chunks(((4, 4, 2),), 3, stride=2, padding="full")
    assert plan.padding == (2, 2) and plan.output_size == 6
    rows, cols = cld.plan_chunks(((6, 5), (3, 3)), (2, 3), stride=(2, 1), padding="same", dilation=(1, 2))
    assert rows.padding == shapes.same_padding(11, 2, 2) and cols.padding == shapes.same_padding(6, 3, 1, 2)
    assert rows.output_size == 6 and cols.output_size == 6
    assert cld.plan_chunks(((5,),), 2, padding="valid")[0].input_ranges == ((0, 5),)


# ---------------------------------------------------------------------------
# Convolution: random chunkings against the eager op, on the cluster
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_conv_matches_eager_on_random_chunkings(client, mode):
    rng = np.random.default_rng(MODES.index(mode))
    cases = [_conv_case(rng, rank, mode) for rank in (1, 1, 2, 2, 3, 3)]
    ops = {1: cld.conv1d, 2: cld.conv2d, 3: cld.conv3d}
    lazy = [ops[x.ndim - 2](da.from_array(x, chunks=chunks), w, bias, **params) for x, w, bias, params, chunks in cases]
    expected = [cl.conv(x, w, bias, **params) for x, w, bias, params, _ in cases]
    for y, (x, *_, chunks) in zip(lazy, cases):
        assert y.chunks[0] == chunks[0]  # batch chunks ride along
    _assert_each_equal(dask.compute(*lazy), expected, [(params, chunks) for *_, params, chunks in cases])


def test_conv_halo_wider_than_many_chunks(client):
    # Dilation 3 and kernel 5 reach 12 cells beyond a block, over one-cell chunks; stride 3 and
    # circular padding equal to the whole axis (every padding cell from the far side).
    x = np.arange(3 * 13).reshape(1, 3, 13) ** 2 % 101
    w = np.arange(2 * 3 * 5).reshape(2, 3, 5) - 15
    lazy, expected = [], []
    for mode in MODES:
        padding = ((12, 6),) if mode != "reflect" else ((12, 5),)
        params = dict(stride=3, padding=padding, dilation=3, padding_mode=mode)
        lazy.append(cld.conv1d(da.from_array(x, chunks=(1, 1, 1)), w, **params))
        expected.append(cl.conv1d(x, w, **params))
    _assert_each_equal(dask.compute(*lazy), expected, MODES)


def test_conv_same_padding_at_strides_the_chunks_do_not_divide(client):
    rng = np.random.default_rng(5)
    x = rng.integers(-5, 6, (2, 2, 23, 17))
    w = rng.integers(-5, 6, (4, 2, 4, 3))
    lazy, expected = [], []
    for stride, dilation in [((1, 1), 1), ((2, 3), 1), ((3, 5), (3, 1)), ((7, 2), (2, 4))]:
        for chunks in [(2, 2, (5, 7, 11), (4, 4, 9)), (2, 2, (2,) * 11 + (1,), (17,))]:
            params = dict(padding="same", stride=stride, dilation=dilation)
            lazy.append(cld.conv2d(da.from_array(x, chunks=chunks), w, **params))
            expected.append(cl.conv2d(x, w, **params))
    assert lazy[0].chunks[2:] == ((5, 7, 11), (4, 4, 9))  # stride 1, "same": the output is chunked like the input
    _assert_each_equal(dask.compute(*lazy), expected, range(len(lazy)))


def test_empty_chunks_forward_and_backward(client):
    x = np.arange(2 * 2 * 9).reshape(2, 2, 9)
    xd = da.from_array(x, chunks=((1, 1), (2,), (3, 0, 4, 0, 2)))
    w = np.arange(2 * 2 * 3).reshape(2, 2, 3) - 5
    g = np.arange(2 * 2 * 6).reshape(2, 2, 6) % 7
    gd = da.from_array(g, chunks=(1, 2, (0, 4, 2)))
    lazy, expected = [], []
    for mode in MODES:
        params = dict(padding=2, stride=2, padding_mode=mode)
        grad_input = cld.conv1d_input(x.shape, w, gd, chunks=xd.chunks, **params)
        assert grad_input.chunks == xd.chunks
        lazy += [cld.conv1d(xd, w, **params), grad_input, cld.conv1d_weight(xd, w.shape, gd, **params)]
        expected += [cl.conv1d(x, w, **params), cl.grad.conv1d_input(x.shape, w, g, **params),
                     cl.grad.conv1d_weight(x, w.shape, g, **params)]
    _assert_each_equal(dask.compute(*lazy), expected, range(len(lazy)))


def test_conv_unbatched_input_dask_weight_and_bias(client):
    rng = np.random.default_rng(6)
    x = rng.integers(-5, 6, (4, 9, 10))
    w = rng.integers(-5, 6, (6, 2, 3, 3))
    bias = rng.integers(-5, 6, 6)
    y = cld.conv2d(da.from_array(x, chunks=(1, 4, 3)), da.from_array(w, chunks=(2, 1, 2, 3)),
                   da.from_array(bias, chunks=4), padding=(1, (0, 2)), groups=2, padding_mode="symmetric")
    assert y.shape == (6, 9, 10) and y.chunks[0] == (6,)
    np.testing.assert_array_equal(y.compute(), cl.conv2d(x, w, bias, padding=(1, (0, 2)), groups=2,
                                                         padding_mode="symmetric"))


def test_conv_floating_dtypes_and_empty_batch(client):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 12, 11))
    w = rng.standard_normal((5, 3, 3, 2))
    lazy, expected = [], []
    for dtype in (np.float64, np.float32, np.float16, np.complex128):
        xs, ws = x.astype(dtype), w.astype(dtype)
        lazy.append(cld.conv2d(da.from_array(xs, chunks=(1, 3, 5, 4)), ws, stride=2, padding=1, padding_mode="reflect"))
        expected.append(cl.conv2d(xs, ws, stride=2, padding=1, padding_mode="reflect"))
    empty = cld.conv2d(da.from_array(x[:0], chunks=(1, 3, 5, 4)), w, padding="same")
    results = dask.compute(*lazy, empty)
    for got, want in zip(results, expected):
        assert got.dtype == want.dtype
        tolerance = 1e-2 if want.dtype == np.float16 else 1e-5 if want.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
    assert results[-1].shape == (0, 5, 12, 11)


def _explode(block: np.ndarray) -> np.ndarray:
    raise RuntimeError("the input was read while building the graph")


def test_conv_is_lazy_and_sends_the_weight_once(client):
    untouchable = da.zeros((2, 3, 40, 40), chunks=(1, 3, 8, 8)).map_blocks(_explode, dtype=float)
    small, large = np.ones((1, 3, 9, 9)), np.ones((33, 3, 9, 9))  # 62 KiB more: 3 MiB if copied into 50 tasks
    ys, yl = (cld.conv2d(untouchable, w, padding="same") for w in (small, large))
    assert isinstance(yl, da.Array) and yl.numblocks == (2, 1, 5, 5)
    size_small, size_large = (len(pickle.dumps(dict(y.__dask_graph__()))) for y in (ys, yl))
    assert size_large - size_small < 1.2 * (large.nbytes - small.nbytes)  # the weight is in the graph once
    with pytest.raises(RuntimeError, match="while building"):
        yl.compute()


# ---------------------------------------------------------------------------
# correlate / convolve, pooling
# ---------------------------------------------------------------------------


def test_correlate_and_convolve_match_eager_and_scipy(client):
    scipy_signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(8)
    lazy, expected, labels = [], [], []
    for rank in (1, 2, 3):
        for mode in ("full", "same", "valid"):
            for name in ("correlate", "convolve"):
                size = tuple(int(n) for n in rng.integers(4, (16, 10, 5)[rank - 1], rank))
                kernel = rng.integers(-4, 5, tuple(int(k) for k in rng.integers(1, 5, rank)))
                if mode == "valid":
                    kernel = kernel[tuple(slice(0, n) for n in size)]
                signal = rng.integers(-9, 10, size)
                if rank == 2 and name == "correlate":
                    signal = signal + 1j * rng.integers(-9, 10, size)  # conjugated kernel, complex result
                chunks = _spatial_chunks(rng, size)
                given = kernel if rank != 1 else da.from_array(kernel, chunks=2)
                lazy.append(getattr(cld, name)(da.from_array(signal, chunks=chunks), given, mode))
                expected.append(getattr(cl, name)(signal, kernel, mode, method="direct"))
                np.testing.assert_allclose(expected[-1], getattr(scipy_signal, name)(signal, kernel, mode), atol=1e-9)
                labels.append((name, mode, size, kernel.shape, chunks))
    for got, want, label in zip(dask.compute(*lazy), expected, labels):
        assert got.shape == want.shape and got.dtype == want.dtype, label
        np.testing.assert_allclose(got, want, atol=1e-9, err_msg=str(label))


def test_correlate_and_convolve_of_empty_arrays_match_eager(client):
    cases = [
        (np.zeros((0, 4), np.uint8), np.ones((2, 2), np.int32), "same", "auto"),  # the eager dtype: result_type
        (np.arange(4), np.zeros(0, np.int64), "same", "fft"),  # no data, so no refusal of the FFT on integers
        (np.zeros((3, 0)), da.ones((2, 2), chunks=1), "full", "direct"),
    ]
    for signal, kernel, mode, method in cases:
        for name in ("correlate", "convolve"):
            got = getattr(cld, name)(da.from_array(signal), kernel, mode, method).compute()
            want = getattr(cl, name)(signal, np.asarray(kernel), mode, method)
            assert got.shape == want.shape and got.dtype == want.dtype, (name, signal.shape, mode, method)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_pools_match_eager_on_random_chunkings(client, rank):
    rng = np.random.default_rng([9, rank])
    lazy, expected, labels = [], [], []
    while len(lazy) < 8:
        size = tuple(int(n) for n in rng.integers(1, (14, 9, 5)[rank - 1], rank))
        kernel = tuple(int(k) for k in rng.integers(1, 5, rank))
        stride = None if rng.random() < 0.3 else tuple(int(s) for s in rng.integers(1, 4, rank))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        ceil_mode = bool(rng.random() < 0.5)
        x = rng.integers(-50, 50, (2, 2, *size))
        if len(lazy) % 2 == 0:  # max pooling, also over float data holding -inf
            dilation = tuple(int(d) for d in rng.integers(1, 3, rank))
            if len(lazy) % 4 == 0:
                x = np.where(x > 40, -np.inf, x.astype(np.float32))
            params = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
            eager, chunked = cl.max_pool, cld.max_pool
        else:  # average pooling of integers: the window sums are exact in float64
            params = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                          count_include_pad=bool(rng.random() < 0.5),
                          divisor_override=None if rng.random() < 0.7 else int(rng.integers(1, 5)))
            eager, chunked = cl.avg_pool, cld.avg_pool
        try:
            expected.append(eager(x, kernel, **params))
        except ValueError:
            continue
        chunks = (_chunks(rng, 2), _chunks(rng, 2), *_spatial_chunks(rng, size))
        lazy.append(chunked(da.from_array(x, chunks=chunks), kernel, **params))
        labels.append((chunked.__name__, kernel, params, chunks))
    _assert_each_equal(dask.compute(*lazy), expected, labels)


def test_fixed_rank_pools_and_float_average(client):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 4, 9, 8, 7)).astype(np.float32)
    xd = da.from_array(x, chunks=(2, 2, 4, 3, 7))
    cases = [
        (cld.max_pool1d(xd[:, :, 0, 0], 3, 2, 1, ceil_mode=True),
         cl.max_pool1d(x[:, :, 0, 0], 3, 2, 1, ceil_mode=True)),
        (cld.max_pool2d(xd[0, :, 0], 2, dilation=2), cl.max_pool2d(x[0, :, 0], 2, dilation=2)),
        (cld.max_pool3d(xd, (3, 2, 3), stride=(2, 1, 2), padding=1), cl.max_pool3d(x, (3, 2, 3), (2, 1, 2), 1)),
        (cld.avg_pool1d(xd[:, :, 0, 0], 3, 2, 1, ceil_mode=True, count_include_pad=False),
         cl.avg_pool1d(x[:, :, 0, 0], 3, 2, 1, ceil_mode=True, count_include_pad=False)),
        (cld.avg_pool2d(xd[0, :, 0], 3, 1, 1), cl.avg_pool2d(x[0, :, 0], 3, 1, 1)),
        (cld.avg_pool3d(xd, 2, ceil_mode=True, divisor_override=3), cl.avg_pool3d(x, 2, ceil_mode=True,
                                                                                  divisor_override=3)),
    ]
    results = dask.compute(*(lazy for lazy, _ in cases))
    for got, (_, want) in zip(results, cases):
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert cld.max_pool2d(xd[0, :, 0], 2).chunks[0] == (2, 2)  # pooling keeps the channel chunks


def test_average_pooling_tasks_do_not_carry_whole_axis_divisors():
    # Each task computes its own outputs' divisors from integers: its payload must not grow with the image
    # (shipping the whole axes' divisors to every task made a 1 GiB image's graph 32 MiB).
    x = da.zeros((1, 1, 4096, 4096), chunks=(1, 1, 256, 256), dtype=np.float32)
    for params in (dict(), dict(count_include_pad=False), dict(ceil_mode=True, divisor_override=3)):
        y = cld.avg_pool2d(x, 3, stride=2, padding=1, **params)
        sizes = [len(pickle.dumps(task)) for key, task in dict(y.__dask_graph__()).items() if key[0] == y.name]
        assert len(sizes) == 256 and max(sizes) < 4096, params  # 2 axes x 2048 int64 divisors would be 32 KiB


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_eager(client, mode):
    rng = np.random.default_rng([11, MODES.index(mode)])
    lazy, expected, labels = [], [], []
    for rank in (1, 2, 3):
        x, w, _, params, chunks = _conv_case(rng, rank, mode)
        chunks = (x.shape[0], x.shape[1], *chunks[2:])  # spatial chunks only: each grid cell costs ~20 tasks here
        out_shape = cl.output_shape(x.shape, w.shape, params["stride"], params["padding"], params["dilation"],
                                    params["groups"])
        g = rng.integers(-5, 6, out_shape)
        g_chunks = (1, -1, *_spatial_chunks(rng, out_shape[2:]))
        xd, gd = da.from_array(x, chunks=chunks), da.from_array(g, chunks=g_chunks)
        grad_input = cld.conv_input(x.shape, w, gd, chunks=chunks, **params)
        assert grad_input.chunks == xd.chunks  # chunked like the input
        lazy += [grad_input, cld.conv_weight(xd, w.shape, gd, **params)]
        expected += [cl.grad.conv_input(x.shape, w, g, **params), cl.grad.conv_weight(x, w.shape, g, **params)]
        labels += [("input", params, chunks), ("weight", params, chunks)]
    _assert_each_equal(dask.compute(*lazy), expected, labels)


def test_weight_gradient_is_a_tree_reduction_over_batch_chunks(client):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((16, 3, 10, 10))
    w = rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((16, 4, 5, 5))
    xd, gd = da.from_array(x, chunks=(1, 3, 10, 10)), da.from_array(g, chunks=(2, 4, 5, 5))
    dw = cld.conv2d_weight(xd, w.shape, gd, stride=2, padding=1, split_every=2)
    levels = [name for name in dw.__dask_graph__().layers if "partial" in name]
    assert len(levels) >= 2  # sixteen shares, summed two at a time
    np.testing.assert_allclose(dw.compute(), cl.grad.conv2d_weight(x, w.shape, g, stride=2, padding=1), rtol=1e-12)
    grad_input = cld.conv2d_input(x.shape, w, gd, stride=2, padding=1)
    assert grad_input.chunks[0] == gd.chunks[0]
    np.testing.assert_allclose(grad_input.compute(), cl.grad.conv2d_input(x.shape, w, g, stride=2, padding=1),
                               rtol=1e-12)


def test_integer_weight_gradient_that_would_wrap_int64_is_refused(client):
    # Each batch chunk's share fits int64, their sum does not: refused as the eager op refuses, never wrapped.
    x = np.full((4, 1, 1), 2**31, dtype=np.int64)
    g = np.full((4, 1, 1), 2**31 - 1, dtype=np.int64)
    message = "conv1d_weight: input must give results that fit int64"
    with pytest.raises(ValueError, match=message):
        cl.grad.conv1d_weight(x, (1, 1, 1), g)
    dw = cld.conv1d_weight(da.from_array(x, chunks=1), (1, 1, 1), da.from_array(g, chunks=1), split_every=2)
    with pytest.raises(ValueError, match=message):
        dw.compute()
    fits = cld.conv1d_weight(da.from_array(x // 2, chunks=((0, 2, 0, 2), 1, 1)), (1, 1, 1),
                             da.from_array(g, chunks=1))  # empty batch chunks: the range check still runs
    np.testing.assert_array_equal(fits.compute(), cl.grad.conv1d_weight(x // 2, (1, 1, 1), g))


def test_gradients_unbatched_and_fixed_rank(client):
    rng = np.random.default_rng(13)
    x = rng.integers(-5, 6, (2, 7, 6, 5))
    w = rng.integers(-5, 6, (3, 2, 2, 3, 2))
    g = rng.integers(-5, 6, (3, 4, 3, 6))
    params = dict(stride=(2, 2, 1), padding=((1, 1), (0, 1), 1), padding_mode="replicate")
    xd, gd = da.from_array(x, chunks=(2, 4, 3, 5)), da.from_array(g, chunks=(3, 2, 2, 3))
    got_input, got_weight = dask.compute(cld.conv3d_input(x.shape, w, gd, chunks=xd.chunks, **params),
                                         cld.conv3d_weight(xd, w.shape, gd, **params))
    np.testing.assert_array_equal(got_input, cl.grad.conv3d_input(x.shape, w, g, **params))
    np.testing.assert_array_equal(got_weight, cl.grad.conv3d_weight(x, w.shape, g, **params))


# ---------------------------------------------------------------------------
# Errors: every rejected argument names itself, its value and the rule
# ---------------------------------------------------------------------------

_X = da.zeros((1, 2, 6, 6), chunks=3)
_W = np.zeros((1, 2, 3, 3))
_UNKNOWN = da.zeros((1, 2, 6, 6), chunks=3)[da.zeros(1, chunks=1) == 0]

ERROR_CASES = [
    (lambda: cld.conv2d(np.zeros((1, 2, 6, 6)), _W), TypeError,
     "conv2d: input must be a dask.array.Array (wrap NumPy data with dask.array.from_array, or call convolab's "
     "eager op), got an object of type ndarray"),
    (lambda: cld.conv2d(_UNKNOWN, _W), ValueError, "conv2d: input must have known chunk sizes"),
    (lambda: cld.conv2d(_X, [[1]]), TypeError,
     "conv2d: weight must be a numpy.ndarray or a dask array, got an object of type list"),
    (lambda: cld.conv2d(_X, _W, stride=0), ValueError, "conv2d: stride must be >= 1 in every dimension, got 0"),
    (lambda: cld.conv2d(_X, _W, padding_mode="mirror"), ValueError, "conv2d: padding_mode must be one of"),
    (lambda: cld.conv2d(_X, _W, padding=6, padding_mode="reflect"), ValueError,
     "must be smaller than the input size for padding_mode='reflect'"),
    (lambda: cld.conv2d(_X, _W.astype(np.float32)), TypeError, "conv2d: weight must have the same dtype as input"),
    (lambda: cld.conv2d(_X, _W, np.zeros(3)), ValueError, "conv2d: bias must be 1-D of length C_out=1"),
    (lambda: cld.conv2d(_X, _W, algorithm="magic"), ValueError, "conv2d: algorithm must be one of"),
    (lambda: cld.conv(_X, np.zeros((1, 3, 3, 3))), ValueError, "conv: input must have 3 channels"),
    (lambda: cld.max_pool2d(_X, 3, padding=2), ValueError, "max_pool2d: padding must be at most half the kernel size"),
    (lambda: cld.max_pool2d(_X, 2, return_indices=True), ValueError,
     "max_pool2d: return_indices is not supported on dask arrays"),
    (lambda: cld.max_pool2d(_X, 2, return_indices=1), TypeError, "max_pool2d: return_indices must be a bool (True or False), got 1"),
    (lambda: cld.max_pool(_X, 2), TypeError, "max_pool: kernel_size must be a non-empty tuple"),
    (lambda: cld.max_pool2d(_X.astype(complex), 2), TypeError, "max_pool2d: input must be real"),
    (lambda: cld.avg_pool2d(_X, 2, divisor_override=0), ValueError, "avg_pool2d: divisor_override must be nonzero"),
    (lambda: cld.avg_pool2d(_X, 2, count_include_pad="yes"), TypeError, "avg_pool2d: count_include_pad must be a bool"),
    (lambda: cld.correlate(np.zeros(5), [1, 2]), TypeError, "correlate: in1 must be a dask.array.Array"),
    (lambda: cld.correlate(da.zeros(5, chunks=2), [[1, 2]]), ValueError,
     "correlate: in2 must have the same number of dimensions as in1"),
    (lambda: cld.convolve(da.zeros(3, chunks=2), [1, 2, 3, 4], "valid"), ValueError,
     "convolve: in2 must fit inside in1 in every dimension for mode='valid'"),
    (lambda: cld.convolve(da.zeros(3, chunks=2), [1, 2], "middle"), ValueError, "convolve: mode must be one of"),
    (lambda: cld.convolve(da.zeros(3, chunks=2), [1, 2], method="fft2"), ValueError, "convolve: method must be one of"),
    (lambda: cld.convolve(da.zeros((), chunks=()), 1), ValueError, "convolve: in1 must have at least one dimension"),
    (lambda: cld.conv2d_input((1, 2, 6, 6), _W, da.zeros((1, 1, 3, 3), chunks=2)), ValueError,
     "conv2d_input: grad_output must have the forward output's shape (1, 1, 4, 4), got shape (1, 1, 3, 3)"),
    (lambda: cld.conv2d_input((1, 2, 6, 6), _W, da.zeros((1, 1, 4, 4), chunks=2, dtype=np.float32)), TypeError,
     "conv2d_input: grad_output must have dtype float64, got dtype float32"),
    (lambda: cld.conv2d_input((1, 2, 6, 6), _W, da.zeros((1, 1, 4, 4), chunks=2), chunks=((1,), (2,), (5,), (6,))),
     ValueError, "conv2d_input: chunks must be a dask chunks specification for shape (1, 2, 6, 6)"),
    (lambda: cld.conv2d_input((1, 2, 6, 6), _W, da.zeros((1, 1, 4, 4), chunks=2), algorithm="fast"), ValueError,
     "conv2d_input: algorithm must be one of"),
    (lambda: cld.conv2d_weight(_X, (1, 2, 3, 3), np.zeros((1, 1, 4, 4))), TypeError,
     "conv2d_weight: grad_output must be a dask.array.Array"),
    (lambda: cld.conv2d_weight(_X, (1, 2, 3, 3), da.zeros((1, 1, 4, 4), chunks=2), split_every=1), ValueError,
     "conv2d_weight: split_every must be None or an int >= 2, got 1"),
    (lambda: cld.conv2d_weight(_X, (1, 2, 3, 3), da.zeros((1, 1, 4, 4), chunks=2), split_every=2.5), TypeError,
     "conv2d_weight: split_every must be None or an int >= 2, got 2.5 of type float"),
    (lambda: cld.conv2d_weight(_X, (1, 2, 3), da.zeros((1, 1, 4, 4), chunks=2)), ValueError,
     "conv2d_weight: weight must have 4 dimensions"),
    (lambda: cld.plan_axis((), 3), ValueError, "plan_axis: input_chunks must hold at least one chunk size, got ()"),
    (lambda: cld.plan_axis((2, -1), 3), ValueError, "plan_axis: input_chunks must have no negative sizes"),
    (lambda: cld.plan_axis((4,), 3, padding="same"), TypeError,
     "plan_axis: padding must be an int or a (low, high) pair of ints, got 'same'"),
    (lambda: cld.plan_axis((4,), 3, dilation=3), ValueError,
     "plan_axis: kernel_size must fit inside the padded input, got dilated extent 7"),
    (lambda: cld.plan_axis((4,), 3, stride=0), ValueError, "plan_axis: stride must be >= 1"),
    (lambda: cld.plan_chunks([], 3), TypeError, "plan_chunks: chunks must be a non-empty sequence"),
    (lambda: cld.plan_chunks(((4,), (4,)), (3, 3, 3)), ValueError,
     "plan_chunks: kernel_size must be one int or 2 ints"),
]


@pytest.mark.parametrize("call, kind, message", ERROR_CASES, ids=[m[:48] for _, _, m in ERROR_CASES])
def test_errors_name_the_argument_and_the_rule(call, kind, message):
    with pytest.raises(kind, match=re.escape(message)):
        call()


def test_core_never_imports_dask():
    code = "import sys, convolab; convolab.conv; print(sorted(m for m in sys.modules if m.split('.')[0] == 'dask'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert cld.da.__name__ == "dask.array"  # convolab/dask.py imported the real package, not itself


# ---------------------------------------------------------------------------
# Larger than a worker's memory
# ---------------------------------------------------------------------------


def test_image_larger_than_the_workers_memory_is_filtered_chunk_by_chunk(client):
    """A 1 GiB image, generated on the workers, filtered by two workers of 448 MiB each.

    The client never holds the image: it is drawn chunk by chunk with
    ``da.random`` (a chunk's values depend only on the seed and its position),
    reduced to one number on the cluster, and a slice of the result that
    crosses chunk boundaries and two true edges is checked against the eager
    op on the matching slice of the input (with the halo it reads).
    Spilling and pausing are off, so a worker that outgrew its limit would be
    killed and restarted (at ``0.95 * memory_limit``); the process ids show none was.
    """
    height, width, chunk = 16384, 16384, 1024
    x = da.random.default_rng(2024).random((1, 1, height, width), dtype=np.float32, chunks=(1, 1, chunk, chunk))
    assert x.nbytes == 1024 * 2**20 > 2 * WORKER_MEMORY
    w = np.array([[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]], dtype=np.float32) / 16
    y = cld.conv2d(x, w, padding="same", padding_mode="reflect")
    rows, first_column = chunk + 7, width - 300  # top and right true edges, one interior row boundary
    corner = y[:, :, :rows, first_column:]
    window = x[:, :, :rows + 1, first_column - 1:]  # the input the corner reads, with its halo
    workers_before = client.run(os.getpid)

    # One computation: the whole image, reduced to one number, and the two slices.
    futures = client.compute([y.sum(dtype=np.float64), corner, window])
    distributed.wait(futures, timeout=240)
    total, got, window = client.gather(futures)

    assert client.run(os.getpid) == workers_before  # no worker was killed and restarted
    peaks = client.run(lambda dask_worker: max(dask_worker.monitor.quantities["memory"]))
    assert max(peaks.values()) < 0.95 * WORKER_MEMORY
    assert abs(total / (height * width) - 0.5) < 1e-3  # a blur (weights summing to 1) of U(0, 1) noise: mean 0.5
    want = cl.conv2d(window, w, padding=((1, 0), (0, 1)), padding_mode="reflect")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Huge padding and stride: the eager ops' compact form, chunk by chunk (issue 13)
# ---------------------------------------------------------------------------

# (input shape, input chunks, weight shape, conv arguments)
HUGE_CASES = [
    ((1, 2, 5, 5), (1, 2, 5, 5), (3, 2, 3, 3), dict(padding=10**5, stride=10**5)),
    ((1, 2, 5, 5), (1, 2, 2, 3), (3, 2, 3, 3), dict(padding=10**5, stride=10**5)),
    ((2, 2, 5, 5), (1, 1, 1, 2), (3, 2, 3, 3), dict(stride=10**18)),
    ((2, 4, 7), (1, 4, 3), (4, 2, 3), dict(padding=((10**9, 10**9 + 5),), stride=10**9 - 1, dilation=2, groups=2)),
    ((1, 2, 4, 5, 3), (1, 2, 2, 2, 3), (2, 2, 2, 3, 1), dict(padding=(10**4, 7, 10**6), stride=(10**4 + 1, 3, 10**6))),
    ((1, 1, 5), (1, 1, 2), (1, 1, 2), dict(padding=5 * 10**8, dilation=10**9)),
    ((1, 2, 4, 4, 4), (1, 1, 3, 2, 4), (2, 2, 2, 1, 2), dict(padding=4, stride=7, padding_mode="circular")),
    ((1, 2, 5, 5, 5), (1, 2, 2, 5, 3), (2, 2, 1, 2, 2), dict(padding=4, stride=(9, 6, 11), padding_mode="reflect")),
]


@pytest.mark.parametrize("input_shape, chunks, weight_shape, kwargs", HUGE_CASES, ids=str)
def test_huge_padding_and_stride_match_eager_in_bounded_memory(input_shape, chunks, weight_shape, kwargs):
    import tracemalloc

    rng = np.random.default_rng(12)
    x = rng.standard_normal(input_shape)
    w = rng.standard_normal(weight_shape)
    b = rng.standard_normal(weight_shape[0])
    out = cl.conv(x, w, b, **kwargs)  # the eager op, checked against PyTorch in test_huge.py
    g = rng.standard_normal(out.shape)
    xd, gd = da.from_array(x, chunks=chunks), da.from_array(g, chunks=1)
    with dask.config.set(scheduler="synchronous"):
        cld.conv(xd, w, b, **kwargs).compute()  # warm: dask's own first-call imports and caches
        tracemalloc.start()
        try:
            got = cld.conv(xd, w, b, **kwargs).compute()
            got_weight = cld.conv_weight(xd, w.shape, gd, **kwargs).compute()
            got_input = cld.conv_input(x.shape, w, gd, chunks=chunks, **kwargs).compute()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * 2**20
    np.testing.assert_allclose(got, out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_weight, cl.grad.conv_weight(x, w.shape, g, **kwargs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_input, cl.grad.conv_input(x.shape, w, g, **kwargs), rtol=1e-12, atol=1e-12)


def test_huge_padding_never_read_keeps_nan_out_of_the_zeros():
    x = np.full((1, 1, 5, 5), np.nan)
    x[0, 0, :3, :3] = 1.0
    got = cld.conv2d(da.from_array(x, chunks=2), np.ones((1, 1, 3, 3)), padding=10**5, stride=10**5)
    assert got.compute(scheduler="synchronous")[0, 0].tolist() == [[0, 0, 0], [0, 9, 0], [0, 0, 0]]


def test_output_block_too_large_for_memory_is_refused_by_name_while_building_the_graph():
    x = da.ones((1, 2, 5, 5), chunks=(1, 2, 2, 5))
    with pytest.raises(MemoryError, match=r"conv2d: padding=\(\(1000000000, 1000000000\), .* output block of shape "
                                          r"\(1, 3, \d+, 2000000003\)"):
        cld.conv2d(x, np.ones((3, 2, 3, 3)), padding=10**9)


POOL_HUGE_CASES = [
    ((1, 2, 5, 5), (1, 1, 2, 3), dict(kernel_size=3, stride=10**18, padding=1)),
    ((2, 1, 5, 4), (1, 1, 2, 3), dict(kernel_size=2 * 10**5, stride=1, padding=10**5)),
    ((1, 2, 5, 5), (1, 2, 5, 5), dict(kernel_size=2 * 10**5, stride=10**5, padding=10**5, ceil_mode=True)),
    ((2, 2, 5, 6), (1, 1, 2, 4), dict(kernel_size=2 * 10**5, stride=10**5, padding=10**5, ceil_mode=True)),
    ((1, 2, 7), (1, 1, 3), dict(kernel_size=2 * 10**8, stride=3, padding=10**8)),
]


@pytest.mark.parametrize("input_shape, chunks, kwargs", POOL_HUGE_CASES, ids=str)
def test_pools_with_huge_kernel_or_stride_match_eager_in_bounded_memory(input_shape, chunks, kwargs):
    import tracemalloc

    x = np.random.default_rng(13).standard_normal(input_shape)
    xd = da.from_array(x, chunks=chunks)
    rank = x.ndim - 2
    kwargs = {**kwargs, "kernel_size": (kwargs["kernel_size"],) * rank}
    with dask.config.set(scheduler="synchronous"):
        cld.max_pool(xd, **kwargs).compute()  # warm: dask's own first-call imports and caches
        tracemalloc.start()
        try:
            got_max = cld.max_pool(xd, **kwargs).compute()
            got_avg = [cld.avg_pool(xd, count_include_pad=flag, **kwargs).compute() for flag in (True, False)]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * 2**20
    np.testing.assert_array_equal(got_max, cl.max_pool(x, **kwargs))  # eager: against PyTorch in test_huge.py
    for flag, got in zip((True, False), got_avg):
        np.testing.assert_allclose(got, cl.avg_pool(x, count_include_pad=flag, **kwargs), rtol=1e-12, atol=0)
