"""gemm's 1x1 products on the pool's threads with NumPy's BLAS held to one thread (``_blas_threads``).

The pooled passes are checked against float64 sums written out with einsum, on
every shape class a 1x1 kernel has (strides, padding, groups, 1-d and 3-d, a
single sample whose rows are split, small images regrouped for the weight
gradient); the hold on the BLAS's thread count is checked to end where it
began, after an error, from many Python threads at once, and in a child forked
while it was held.
"""

from __future__ import annotations

import contextlib
import multiprocessing

import numpy as np
import pytest

import convolab as cl
from convolab import _engine
from convolab.algorithms import ALGORITHMS, _blas_threads, _threads, gemm
from threaded import results_from_threads

needs_control = pytest.mark.skipif(_blas_threads.blas_thread_control() is not None,
                                   reason=str(_blas_threads.blas_thread_control()))


def _blas_count() -> int:
    return _blas_threads._control[1]()


@pytest.fixture
def pooled_calls(monkeypatch):
    """Every problem large enough for the pool (so small ones take the pooled path), and counts of the pooled
    passes' calls."""
    monkeypatch.setattr(_threads, "COMPILED_PARALLEL_WORK", 0)
    calls = {"forward": 0, "weight_grad": 0, "regrouped": 0}
    forward, weight_grad = gemm._pooled_pointwise, gemm._pooled_pointwise_weight_grad
    regrouped = gemm._regrouped_weight_grad

    def counted_forward(*args):
        calls["forward"] += 1
        return forward(*args)

    def counted_weight_grad(*args):
        calls["weight_grad"] += 1
        return weight_grad(*args)

    def counted_regrouped(*args):
        calls["regrouped"] += 1
        return regrouped(*args)

    monkeypatch.setattr(gemm, "_pooled_pointwise", counted_forward)
    monkeypatch.setattr(gemm, "_regrouped_weight_grad", counted_regrouped)
    monkeypatch.setattr(gemm, "_pooled_pointwise_weight_grad", counted_weight_grad)
    return calls


def _reference(x, w, g, stride, padding, groups):
    """The 1x1 forward and weight gradient as float64 sums over explicit cells."""
    rank = x.ndim - 2
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *[(padding, padding)] * rank])
    cells = padded[(Ellipsis, *(slice(None, None, stride),) * rank)]
    n, o = x.shape[0], w.shape[0]
    cells = cells.reshape(n, groups, x.shape[1] // groups, -1)  # (N, G, C, P)
    filters = w.astype(np.float64).reshape(groups, o // groups, -1)  # (G, O, C)
    forward = np.einsum("goc,ngcp->ngop", filters, cells).reshape(n, o, *cells.shape[3:])
    rows = g.astype(np.float64).reshape(n, groups, o // groups, -1)
    weight_grad = np.einsum("ngop,ngcp->goc", rows, cells).reshape(w.shape)
    return forward.reshape(g.shape), weight_grad


CASES = [  # input shape, weight shape, stride, padding, groups
    ((4, 16, 9, 7), (8, 16, 1, 1), 2, 1, 1),
    ((1, 32, 20, 20), (24, 32, 1, 1), 1, 0, 1),  # one sample: its rows split among the jobs
    ((1, 8, 3, 20), (12, 8, 1, 1), 2, 0, 1),
    ((2, 12, 11, 13), (6, 4, 1, 1), 3, 2, 3),
    ((5, 8, 33), (16, 8, 1), 2, 0, 1),
    ((2, 8, 6, 7, 5), (12, 8, 1, 1, 1), 2, 1, 1),
    ((3, 8, 10, 10), (8, 8, 1, 1), 1, 0, 1),
    # Small images, many channels: each thread regroups its samples for one weight-gradient product
    ((4, 64, 5, 5), (96, 64, 1, 1), 1, 0, 1),
    ((6, 48, 7, 7), (64, 48, 1, 1), 2, 0, 1),
    ((4, 64, 6, 6), (96, 32, 1, 1), 2, 1, 2),
    ((5, 64, 3, 3, 3), (96, 64, 1, 1, 1), 1, 0, 1),
]


@needs_control
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]}-s{case[2]}-p{case[3]}-g{case[4]}")
def test_the_pooled_products_give_the_sums(case, dtype, pooled_calls):
    shape, weight_shape, stride, padding, groups = case
    rng = np.random.default_rng(len(shape) + stride)
    x, w = rng.standard_normal(shape).astype(dtype), rng.standard_normal(weight_shape).astype(dtype)
    spec = cl.conv_spec(shape, weight_shape, stride=stride, padding=padding, groups=groups)
    g = rng.standard_normal(spec.output_shape).astype(dtype)
    x_before, g_before = x.copy(), g.copy()
    with cl.thread_count(2):
        forward = cl.conv(x, w, stride=stride, padding=padding, groups=groups, algorithm="gemm")
        weight_grad = cl.grad.conv_weight(x, weight_shape, g, stride, padding, 1, groups, algorithm="gemm")
        again = cl.grad.conv_weight(x, weight_shape, g, stride, padding, 1, groups, algorithm="gemm")
    halves = (spec.batch // 2, spec.batch - spec.batch // 2)  # two threads: a job of each half's samples
    regrouped = 0 if gemm._per_sample_products_win(spec) else 2 * sum(samples > 1 for samples in halves)  # two calls
    assert pooled_calls == {"forward": 0 if gemm._pointwise_batch_wide(spec) else 1, "weight_grad": 2,
                            "regrouped": regrouped}
    want_forward, want_weight_grad = _reference(x, w, g, stride, padding, groups)
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    assert forward.dtype == weight_grad.dtype == dtype
    np.testing.assert_allclose(forward, want_forward, rtol=tolerance, atol=tolerance * np.abs(want_forward).max())
    np.testing.assert_allclose(weight_grad, want_weight_grad, rtol=tolerance,
                               atol=tolerance * np.abs(want_weight_grad).max())
    np.testing.assert_array_equal(again, weight_grad)  # each thread's range summed alone, the ranges in order
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(g, g_before)


@needs_control
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [case for case in CASES if case[2] > 1],
                         ids=lambda case: f"{case[0]}-s{case[2]}-p{case[3]}-g{case[4]}")
def test_the_pooled_placement_gives_the_input_gradient(case, dtype, monkeypatch):
    """The strided 1x1 input gradient's products and placement, one range of whole samples a thread
    (:func:`convolab._engine._placed_pointwise_grads`), where the samples' products are wide enough."""
    shape, weight_shape, stride, padding, groups = case
    monkeypatch.setattr(_threads, "COMPILED_PARALLEL_WORK", 0)
    ranges = []
    place = _engine._place_pointwise_grads

    def counted_place(*args):
        ranges.append(args[-2:])
        return place(*args)

    monkeypatch.setattr(_engine, "_place_pointwise_grads", counted_place)
    rng = np.random.default_rng(len(shape) * stride)
    w = rng.standard_normal(weight_shape).astype(dtype)
    spec = cl.conv_spec(shape, weight_shape, stride=stride, padding=padding, groups=groups)
    g = rng.standard_normal(spec.output_shape).astype(dtype)
    g_before, w_before = g.copy(), w.copy()
    with cl.thread_count(2):
        grad = cl.grad.conv_input(shape, w, g, stride, padding, 1, groups, algorithm="scatter")
    pooled = spec.batch >= 2 and gemm._per_sample_products_win(spec)
    n = spec.batch
    assert ranges == ([(0, n // 2), (n // 2, n)] if pooled else [(0, n)])
    # the reference: each output's window gradient placed in the one (padded) cell it read, the padding cropped
    rows = g.astype(np.float64).reshape(n, groups, weight_shape[0] // groups, -1)  # (N, G, O, P)
    filters = w.astype(np.float64).reshape(groups, weight_shape[0] // groups, -1)  # (G, O, C)
    windows = np.einsum("goc,ngop->ngcp", filters, rows).reshape(n, shape[1], *spec.output_size)
    padded = np.zeros((n, shape[1], *(size + 2 * padding for size in shape[2:])))
    padded[(Ellipsis, *(slice(None, stride * out, stride) for out in spec.output_size))] = windows
    want = padded[(Ellipsis, *(slice(padding, padding + size) for size in shape[2:]))]
    assert grad.dtype == dtype
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(grad, want, rtol=tolerance, atol=tolerance * np.abs(want).max())
    np.testing.assert_array_equal(g, g_before)
    np.testing.assert_array_equal(w, w_before)


SCATTER_CASES = [  # input shape, weight shape, conv_spec's arguments
    ((4, 6, 11, 10), (8, 6, 3, 3), dict(stride=2, padding=1)),
    ((5, 6, 12, 9), (8, 3, 3, 3), dict(stride=(1, 2), padding=(2, 0), dilation=2, groups=2)),
    ((3, 4, 40), (6, 4, 9), dict(stride=3, padding=4, dilation=2)),  # DeepLab-like 1-d: dilated and strided
    ((2, 3, 6, 7, 8), (4, 3, 2, 3, 3), dict(stride=2, padding=1)),
    ((3, 4, 10, 9), (5, 4, 4, 4), dict(stride=2, padding=1, padding_mode="reflect")),  # the padded gradient
]


@needs_control
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("samples_inside", [False, True], ids=["per sample", "samples inside"])
@pytest.mark.parametrize("case", SCATTER_CASES, ids=lambda case: f"{case[0]}-{case[1]}-{case[2]}")
def test_the_pooled_scatter_gives_the_input_gradient(case, samples_inside, dtype, monkeypatch):
    """The compiled scatter, one range of whole samples a thread
    (:func:`convolab.algorithms._pooled.pools_whole_samples`): each range's products on one BLAS thread, then its
    add-back on the same thread; in blocks of one sample (a workspace limit) and of the whole range. Against the
    float64 full correlation, and the same numbers as the scatter off the pool."""
    shape, weight_shape, params = case
    monkeypatch.setattr(_threads, "COMPILED_PARALLEL_WORK", 0)
    monkeypatch.setattr(_engine, "SCATTER_BATCH_WIDE_POSITIONS", 10**9 if samples_inside else 0)
    added = []  # per add-back: its samples, whether on the calling thread alone, the BLAS's threads then
    add_columns = _engine.add_columns

    def counted_add_columns(columns, out, *args, one_thread=False):
        added.append((out.shape[0], one_thread, _blas_count()))
        return add_columns(columns, out, *args, one_thread=one_thread)

    monkeypatch.setattr(_engine, "add_columns", counted_add_columns)
    rng = np.random.default_rng(len(shape) + weight_shape[-1])
    w = rng.standard_normal(weight_shape).astype(dtype)
    spec = cl.conv_spec(shape, weight_shape, **params)
    g = rng.standard_normal(spec.output_shape).astype(dtype)
    g_before, w_before = g.copy(), w.copy()
    n, blas_threads = spec.batch, _blas_count()
    want = cl.grad.conv_input(shape, w.astype(np.float64), g.astype(np.float64), **params, algorithm="full")
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    # a sample's window gradients (and with the samples inside, its grad_output's copy), for each of two threads
    one_sample = 2 * g.itemsize * int(np.prod(spec.output_size)) * (
        spec.in_channels * int(np.prod(spec.kernel_size)) + samples_inside * spec.out_channels)
    for limit, blocks in [(None, [n // 2, n - n // 2]), (one_sample, [1] * n)]:
        added.clear()
        with cl.thread_count(2), cl.workspace_limit(limit) if limit else _no_limit():
            grad = _engine._input_grad_scatter(g, w, spec, compiled=True)
        assert sorted(added) == sorted((samples, True, 1) for samples in blocks)  # whole samples, one thread
        assert _blas_count() == blas_threads
        assert grad.dtype == dtype and grad.shape == shape
        np.testing.assert_allclose(grad, want, rtol=tolerance, atol=tolerance * np.abs(want).max())
    monkeypatch.setattr(_engine, "pools_whole_samples", lambda spec, dtype: False)
    added.clear()
    with cl.thread_count(2):
        off_the_pool = _engine._input_grad_scatter(g, w, spec, compiled=True)
    assert all(not one_thread for _, one_thread, _ in added)
    np.testing.assert_allclose(grad, off_the_pool, rtol=tolerance, atol=tolerance * np.abs(want).max())
    np.testing.assert_array_equal(g, g_before)
    np.testing.assert_array_equal(w, w_before)


S2D_CASES = [  # input shape, weight shape, conv_spec's arguments: windows that never overlap
    ((4, 6, 12, 10), (8, 6, 2, 2), dict(stride=2)),  # U-Net's up-convolution's gradient, small
    ((5, 4, 9, 11), (6, 2, 3, 2), dict(stride=(3, 2), padding=((1, 2), (0, 1)), groups=2)),
    ((3, 3, 25), (4, 3, 4), dict(stride=5, padding=2)),
    ((2, 2, 6, 8, 8), (4, 2, 2, 2, 2), dict(stride=2)),
]


@needs_control
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", S2D_CASES, ids=lambda case: f"{case[0]}-{case[1]}-{case[2]}")
def test_space_to_depth_on_the_pool_gives_its_three_passes(case, dtype, monkeypatch):
    """space_to_depth's forward and both gradients, one range of whole samples a thread, each range's copies and
    products on that thread with the BLAS held to one thread: against float64 sums of other algorithms and the
    passes on the calling thread (the weight gradient's ranges summed in order: the same bits call after call)."""
    from convolab.algorithms import space_to_depth

    shape, weight_shape, params = case
    monkeypatch.setattr(_threads, "COMPILED_PARALLEL_WORK", 0)
    jobs = []  # per pooled job: its samples and the BLAS's threads while it ran
    run_pooled = space_to_depth.run_pooled

    def counted_run_pooled(pass_jobs, make_worker, spec):
        def counted_worker():
            run = make_worker()

            def counted(job):
                jobs.append((job[0], job[1], _blas_count()))
                run(job)
            return counted
        return run_pooled(pass_jobs, counted_worker, spec)

    monkeypatch.setattr(space_to_depth, "run_pooled", counted_run_pooled)
    rng = np.random.default_rng(len(shape) + weight_shape[0])
    x, w = rng.standard_normal(shape).astype(dtype), rng.standard_normal(weight_shape).astype(dtype)
    spec = cl.conv_spec(shape, weight_shape, **params)
    g = rng.standard_normal(spec.output_shape).astype(dtype)
    before = [x.copy(), w.copy(), g.copy()]
    n = spec.batch

    algorithm = ALGORITHMS["space_to_depth"]

    def passes():
        with cl.thread_count(2):
            return (cl.conv(x, w, **params, algorithm="space_to_depth"), algorithm.input_grad(g, w, spec),
                    algorithm.weight_grad(x, g, spec))

    blas_threads = _blas_count()
    pooled = passes()
    assert sorted(jobs) == sorted([(0, n // 2, 1), (n // 2, n, 1)] * 3)  # three passes, halves, one BLAS thread
    assert _blas_count() == blas_threads
    np.testing.assert_array_equal(passes()[2], pooled[2])
    wide = [x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)]
    want = (cl.conv(wide[0], wide[1], **params, algorithm="direct"),
            cl.grad.conv_input(shape, wide[1], wide[2], **params, algorithm="full"),
            cl.grad.conv_weight(wide[0], weight_shape, wide[2], **params, algorithm="im2col"))
    monkeypatch.setattr(space_to_depth, "pools_whole_samples", lambda spec, dtype: False)
    jobs.clear()
    on_the_caller = passes()
    assert not jobs
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    for got, caller, expected in zip(pooled, on_the_caller, want):
        assert got.dtype == dtype and got.shape == expected.shape
        atol = tolerance * np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=atol)
        np.testing.assert_allclose(got, caller, rtol=tolerance, atol=atol)
    for array, copy in zip((x, w, g), before):
        np.testing.assert_array_equal(array, copy)


@contextlib.contextmanager
def _no_limit():
    yield


def test_one_thread_keeps_the_blas_products(pooled_calls):
    x, w = np.ones((4, 8, 6, 6), np.float32), np.ones((8, 8, 1, 1), np.float32)
    with cl.thread_count(1):
        forward = cl.conv(x, w, algorithm="gemm")
        cl.grad.conv_weight(x, w.shape, forward, algorithm="gemm")
    assert pooled_calls == {"forward": 0, "weight_grad": 0, "regrouped": 0}
    np.testing.assert_array_equal(forward, np.full((4, 8, 6, 6), 8, np.float32))


def test_without_control_of_the_blas_the_products_stay_on_its_threads(monkeypatch, pooled_calls):
    monkeypatch.setattr(_blas_threads, "_control", "a BLAS convolab cannot hold to one thread")
    assert _blas_threads.blas_thread_control() == "a BLAS convolab cannot hold to one thread"
    x = np.arange(4 * 8 * 6 * 6, dtype=np.float64).reshape(4, 8, 6, 6) / 100
    w = np.linspace(-1, 1, 64).reshape(8, 8, 1, 1)
    with cl.thread_count(2):
        forward = cl.conv(x, w, stride=2, algorithm="gemm")
        weight_grad = cl.grad.conv_weight(x, w.shape, forward, 2, algorithm="gemm")
    assert pooled_calls == {"forward": 0, "weight_grad": 0, "regrouped": 0}
    want_forward, want_weight_grad = _reference(x, w, forward, 2, 0, 1)
    np.testing.assert_allclose(forward, want_forward, rtol=1e-12)
    np.testing.assert_allclose(weight_grad, want_weight_grad, rtol=1e-12)
    with _blas_threads.one_blas_thread():  # holds nothing, and says nothing
        pass


def test_integer_and_half_inputs_keep_numpys_products(pooled_calls):
    x, w = np.ones((2, 4, 6, 6), np.int32), np.ones((4, 4, 1, 1), np.int32)
    with cl.thread_count(2):
        assert cl.conv(x, w, algorithm="gemm").max() == 4
        assert cl.conv(x.astype(np.float16), w.astype(np.float16), algorithm="gemm").dtype == np.float16
    assert pooled_calls["forward"] == 0


@needs_control
def test_the_blas_count_comes_back_after_the_hold_and_after_an_error():
    before = _blas_count()
    with _blas_threads.one_blas_thread():
        assert _blas_count() == 1
        with _blas_threads.one_blas_thread():  # nested: the outer block still holds it after
            assert _blas_count() == 1
        assert _blas_count() == 1
    assert _blas_count() == before
    with pytest.raises(RuntimeError, match="inside"):
        with _blas_threads.one_blas_thread():
            raise RuntimeError("inside")
    assert _blas_count() == before and _blas_threads._holders == 0


@needs_control
def test_many_python_threads_at_once_leave_the_blas_count_as_it_was():
    """Eight threads running the pooled passes at once: each result as one thread alone gets it, and the count the
    first of them found is restored when the last one ends."""
    before = _blas_count()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 64, 28, 28)).astype(np.float32)
    w = rng.standard_normal((128, 64, 1, 1)).astype(np.float32)
    g = rng.standard_normal((8, 128, 14, 14)).astype(np.float32)

    def passes():
        with cl.thread_count(2):
            return (cl.conv(x, w, stride=2, algorithm="gemm"),
                    cl.grad.conv_weight(x, w.shape, g, 2, algorithm="gemm"))

    expected = passes()
    results = results_from_threads(passes, threads=8, repeats=5)
    for result in results:
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)
    assert _blas_count() == before and _blas_threads._holders == 0


def _child_blas_count() -> tuple[int, int]:
    return _blas_count(), _blas_threads._holders


@needs_control
def test_a_child_forked_during_the_hold_gets_the_count_back():
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    before = _blas_count()
    with _blas_threads.one_blas_thread():
        with multiprocessing.get_context("fork").Pool(1) as pool:  # forked while the count is held at one
            in_child = pool.apply_async(_child_blas_count).get(timeout=120)
    assert in_child == (before, 0)
    assert _blas_count() == before
