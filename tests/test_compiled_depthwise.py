"""depthwise's compiled kernels (Numba, :mod:`convolab.algorithms._kernels_depthwise`): all three passes.

Generated 1-d and 2-d depthwise cases (channel multipliers 1 to 3, every
padding kind and mode, strides, dilations, empty batches, unbatched inputs)
run through the public ops with the planner made to pick "depthwise" for
everything, so that the compiled forward and both gradient passes run as users
reach them. They are compared

- with the references ("direct", "scatter", "im2col") within the bound of any
  summation order (``test_compiled.summation_bound``): the kernels add the taps
  in another order than the references, never other terms;
- with the NumPy path they replace (Numba hidden), within that same bound
  (both are sums of the same products in two orders);
- with PyTorch, to the dtype's rounding.

Besides: the input gradient's gather against its scatter (kept for a kernel
holding an inf or NaN), threads, read-only and non-contiguous arrays, the
direct sum's inf and NaN pattern (the wide rows' extra columns never meet
one), the refusals that send a problem to the NumPy path, and the plans of
the benchmark's depthwise layers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convolab as cl
from convolab import planner
from convolab.algorithms import ALGORITHMS, register, unregister
from convolab.algorithms import _depthwise_compiled
from convolab.algorithms._kernel_layout import filter_rows
from convolab.algorithms.depthwise import Depthwise, compiled_missing
from conv_cases import generate_cases
from test_compiled import assert_within, summation_bound, three_passes
from test_depthwise import assert_like_torch, batched
from test_nonfinite import assert_same_pattern

#: Generated 1-d and 2-d cases, all made depthwise, with a channel multiplier of 1, 2 or 3.
CASES = [dataclasses.replace(case, groups=case.in_channels, out_channels=case.in_channels * (1 + index % 3))
         for index, case in enumerate(generate_cases(48, seed=21, ranks=(1, 2)))]
DTYPES = [np.float32, np.float64]


@pytest.fixture
def depthwise_everywhere():
    """The planner picks "depthwise" for every problem it can run (its estimate is zero)."""

    class Everywhere(Depthwise):
        def estimate(self, spec, dtype):
            return 0.0

    original = ALGORITHMS["depthwise"]
    unregister("depthwise")
    register(Everywhere())
    try:
        yield
    finally:
        unregister("depthwise")
        register(original)


def reference_passes(x, w, g, **kwargs):
    """The references' forward, input gradient and weight gradient, and each one's bound of any summation order
    (from the same sums of absolute values in float64)."""
    f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    return ((cl.conv(x, w, **kwargs, algorithm="direct"), cl.conv(f64(x), f64(w), **kwargs, algorithm="gemm")),
            (cl.grad.conv_input(x.shape, w, g, **kwargs, algorithm="scatter"),
             cl.grad.conv_input(x.shape, f64(w), f64(g), **kwargs, algorithm="scatter")),
            (cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm="im2col"),
             cl.grad.conv_weight(f64(x), w.shape, f64(g), **kwargs, algorithm="im2col")))


def terms(case) -> tuple[int, int, int]:
    """Products per output, per input-gradient cell and per weight-gradient cell."""
    taps = int(np.prod(case.kernel_size))
    return taps, (case.out_channels // case.groups) * taps, case.batch * int(np.prod(case.output_size))


def case_arrays(case, dtype):
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(len(case.id)).standard_normal(case.output_shape).astype(dtype)
    return x, w, g


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_agrees_with_the_references_and_the_numpy_path(case, dtype, depthwise_everywhere, numpy_path_passes):
    x, w, g = case_arrays(case, dtype)
    kwargs = case.kwargs()
    assert compiled_missing(cl.conv_spec(batched(case, x).shape, w.shape, **kwargs), np.dtype(dtype)) is None
    chosen = cl.plan(batched(case, x).shape, w.shape, dtype, **kwargs)
    assert (chosen.algorithm, chosen.input_grad.method, chosen.weight_grad.method) == ("depthwise",) * 3
    compiled = three_passes(x, w, g, **kwargs)
    numpy_path = numpy_path_passes(x, w, g, **kwargs)
    for got, numpy_got, (reference, scale), count in zip(compiled, numpy_path, reference_passes(x, w, g, **kwargs),
                                                         terms(case)):
        assert_within(got, reference, summation_bound(count, scale, dtype))
        assert_within(got, numpy_got, summation_bound(count, scale, dtype))


@pytest.fixture
def numpy_path_passes(monkeypatch):
    """:func:`three_passes` on depthwise's NumPy path: Numba hidden from depthwise alone, for the call."""

    def passes(x, w, g, **kwargs):
        with monkeypatch.context() as hidden:
            hidden.setattr(_depthwise_compiled, "numba_missing", lambda: "numba is not installed (hidden by the test)")
            planner._forget_plans()
            try:
                return three_passes(x, w, g, **kwargs)
            finally:
                planner._forget_plans()

    return passes


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::3], ids=str)
def test_agrees_with_torch(case, dtype, depthwise_everywhere):
    x, w, g = case_arrays(case, dtype)
    assert_like_torch(case, x, w, g, three_passes(x, w, g, **case.kwargs()))


#: Larger problems: many jobs shared among threads, strides and dilations on both axes, a flipped kernel,
#: a padding wider than the kernel reaches, read-only arrays and an input that is not contiguous.
LARGER = [
    ((2, 24, 33, 41), (48, 1, 3, 3), dict(padding=1, groups=24)),
    ((3, 16, 41, 37), (16, 1, 5, 5), dict(padding=(2, 1), stride=2, dilation=(1, 2), groups=16)),
    ((2, 12, 3000), (12, 1, 9), dict(padding=4, groups=12, flip=True)),
    ((2, 12, 3001), (36, 1, 4), dict(padding=((5, 2),), stride=3, dilation=2, groups=12)),
    ((2, 8, 20, 20), (8, 1, 3, 3), dict(padding=3, groups=8, padding_mode="reflect")),
    ((1, 4, 5, 1100), (4, 1, 3, 3), dict(padding=1, groups=4)),  # rows too long for two: each summed in place
]


@pytest.mark.parametrize("input_shape, weight_shape, params", LARGER)
def test_larger_problems_threaded_and_not_contiguous(input_shape, weight_shape, params, depthwise_everywhere):
    rng = np.random.default_rng(sum(input_shape))
    x = rng.standard_normal((*input_shape[:-1], 2 * input_shape[-1]))[..., ::2]  # every other column: a view
    w = rng.standard_normal(weight_shape)
    g = rng.standard_normal(cl.conv(x, w, **params, algorithm="direct").shape)
    for array in (x, w, g):
        array.flags.writeable = False
    with cl.thread_count(3):
        got = three_passes(x, w, g, **params)
    for actual, (reference, _) in zip(got, reference_passes(x, w, g, **params)):
        np.testing.assert_allclose(actual, reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("params", [dict(padding=1, groups=4), dict(padding=(2, 1), stride=(2, 3), groups=4)],
                         ids=["stride 1", "stride 2x3"])
@pytest.mark.parametrize("poisoned", ["input", "weight", "grad_output"])
def test_inf_and_nan_land_where_the_direct_sum_puts_them(poisoned, params, depthwise_everywhere):
    """An extra column's zero never meets an inf or NaN: the weight gradient sums such a plane again over its
    real columns, the scatter takes real columns only for a kernel holding one."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 4, 12, 14)), rng.standard_normal((8, 1, 3, 3))
    g = rng.standard_normal(cl.conv(x, w, **params, algorithm="direct").shape)
    operand = {"input": x, "weight": w, "grad_output": g}[poisoned]
    operand[0, 0, 2, 1], operand[1, -1, 1, 2] = np.inf, np.nan
    operand[0, -1, 0, -1] = -np.inf  # at the end of a row: next to the padding, and to an extra column
    with np.errstate(invalid="ignore", over="ignore"):
        got = three_passes(x, w, g, **params)
        expected = [reference for reference, _ in reference_passes(x, w, g, **params)]
    for actual, reference in zip(got, expected):
        assert_same_pattern(actual, reference, 1e-12)


@pytest.mark.parametrize("input_shape, weight_shape, params", [
    ((2, 3, 13, 15), (6, 1, 5, 5), dict(padding=2, stride=2, groups=3)),
    ((2, 3, 12, 11), (3, 1, 3, 3), dict(padding=((1, 2), (3, 0)), stride=(2, 3), dilation=(1, 2), groups=3)),
    ((1, 2, 1, 40), (4, 1, 1, 4), dict(padding=((0, 0), (1, 2)), stride=(1, 3), groups=2)),
], ids=["5x5 s2 x2", "odd padding s2x3", "one row"])
def test_the_gather_equals_the_scatter(input_shape, weight_shape, params):
    """With a finite kernel the input gradient is the gather (:func:`_kernels_depthwise.input_grad`); the
    scatter runs only for a kernel holding an inf or NaN, so it is checked against the gather here, on the same
    arrays: the same products, summed in another order (float64, so 1e-12 covers any order)."""
    from convolab.algorithms._compiled import kernels

    spec = cl.conv_spec(input_shape, weight_shape, **params)
    planes = _depthwise_compiled.Planes(spec, spec.padding)
    rng = np.random.default_rng(2)
    g, w = rng.standard_normal(planes.output_shape), rng.standard_normal(weight_shape)
    weights, geometry = filter_rows(w, g.dtype), (spec.groups, *planes.stride, *planes.lows, planes.wq)
    got = {}
    for name, scratch in (("input_grad", planes.gather_size()), ("input_grad_scatter", None)):
        grad = np.empty(planes.source_shape)
        size = planes.output_shape[2] * planes.wq if scratch is None else scratch
        getattr(kernels("depthwise"), name)(g, weights, grad, planes.grid(g.dtype), np.zeros(size), planes.taps,
                                            0, planes.jobs, *geometry)
        got[name] = grad
    np.testing.assert_allclose(got["input_grad"], got["input_grad_scatter"], rtol=1e-12, atol=1e-12)


#: Problems the forward runs with the channels in the vector lanes (:func:`_kernels_depthwise.forward_lanes`):
#: rows of exactly eight output positions, planes whose size is no multiple of sixteen (the transposes' last
#: positions one at a time), uneven padding, dilation, a kernel wider than tall, three blocks of channels; a 7x7
#: kernel on rows of 36 (two blocks of sixteen positions, then eight moved back; the input's rows transposed in
#: three squares, the last moved back), a dilation along the row and a kernel four wide (whose rows
#: :func:`_kernels_depthwise._row_sums` is not built for).
LANES = [((2, 16, 9, 6), (16, 1, 3, 3), dict(padding=(1, 2), groups=16)),
         ((3, 32, 13, 19), (32, 1, 3, 5), dict(padding=((1, 2), (0, 3)), dilation=(2, 1), groups=32)),
         ((1, 48, 28, 28), (48, 1, 5, 5), dict(padding=2, groups=48)),
         ((2, 16, 12, 36), (16, 1, 7, 7), dict(padding=3, groups=16)),
         ((1, 32, 10, 21), (32, 1, 2, 4), dict(padding=(1, 2), dilation=(1, 2), groups=32))]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("input_shape, weight_shape, params", LANES,
                         ids=["rows of 8", "dilated", "5x5", "7x7 rows of 36", "dilated along rows"])
def test_the_channels_in_lanes_equal_the_plane_loops(input_shape, weight_shape, params, dtype, monkeypatch,
                                                    depthwise_everywhere):
    """The same products added in the same order as the plane loops: the same bits, on one thread and two,
    from an input that is not contiguous; within any order's bound of "direct", and like PyTorch. Also the
    stride-1 input gradient, which is this forward on grad_output."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((*input_shape[:-1], 2 * input_shape[-1])).astype(dtype)[..., ::2]  # a view
    w = rng.standard_normal(weight_shape).astype(dtype)
    spec = cl.conv_spec(x.shape, w.shape, **params)
    assert _depthwise_compiled.takes_lanes(spec, spec.padding, np.dtype(dtype).itemsize)
    g = rng.standard_normal(spec.output_shape).astype(dtype)
    passes = lambda: (cl.conv(x, w, **params, algorithm="depthwise"),  # noqa: E731
                      cl.grad.conv_input(x.shape, w, g, **params))  # depthwise's, planned: the forward on g
    got = []
    for threads in (1, 2):
        with cl.thread_count(threads):
            got.append(passes())
    with monkeypatch.context() as planes_only:
        planes_only.setattr(_depthwise_compiled, "takes_lanes", lambda *args: False)
        planes = passes()
    for by_threads in got:
        for lanes, plane in zip(by_threads, planes):
            np.testing.assert_array_equal(lanes, plane)
    f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    scale = cl.conv(f64(x), f64(w), **params, algorithm="gemm")
    assert_within(got[0][0], cl.conv(x, w, **params, algorithm="direct"),
                  summation_bound(int(np.prod(weight_shape[2:])), scale, dtype))
    padded = np.pad(x, ((0, 0), (0, 0), *spec.padding))  # PyTorch pads both sides alike: pad here instead
    expected = torch.nn.functional.conv2d(torch.from_numpy(padded), torch.from_numpy(w), None, 1, 0,
                                          spec.dilation, spec.groups).numpy()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[0][0], expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("poisoned", ["input", "weight"])
def test_the_channels_in_lanes_keep_the_direct_sums_inf_and_nan(poisoned):
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 16, 10, 12)), rng.standard_normal((16, 1, 3, 3))
    operand = {"input": x, "weight": w}[poisoned]
    operand.reshape(-1)[[25, 100, -7]] = np.inf, np.nan, -np.inf  # a view: both are C-contiguous
    spec = cl.conv_spec(x.shape, w.shape, padding=1, groups=16)
    assert _depthwise_compiled.takes_lanes(spec, spec.padding, 8)
    with np.errstate(invalid="ignore", over="ignore"):
        assert_same_pattern(cl.conv(x, w, padding=1, groups=16, algorithm="depthwise"),
                            cl.conv(x, w, padding=1, groups=16, algorithm="direct"), 1e-12)


def test_what_the_channels_in_lanes_refuse():
    """Strides, a channel multiplier, part-filled blocks of channels, short rows, 1-d problems and scratch past
    :data:`LANES_SCRATCH_BYTES` (160x160 planes) go to the plane loops; 112x112 planes take the lanes; the
    wrapper's block sizes are the kernel's."""
    from convolab.algorithms._compiled import kernels

    assert (kernels("depthwise").CHANNEL_BLOCK, kernels("depthwise").POSITION_BLOCK) == (
        _depthwise_compiled.LANES_CHANNELS, _depthwise_compiled.LANES_POSITIONS)
    refused = [((1, 16, 12, 12), (16, 1, 3, 3), dict(stride=2, groups=16)),
               ((1, 16, 12, 12), (32, 1, 3, 3), dict(groups=16)),
               ((1, 24, 12, 12), (24, 1, 3, 3), dict(groups=24)),
               ((1, 16, 12, 9), (16, 1, 3, 3), dict(groups=16)),
               ((1, 16, 40), (16, 1, 3), dict(groups=16)),
               ((1, 16, 160, 160), (16, 1, 3, 3), dict(padding=1, groups=16))]
    for input_shape, weight_shape, params in refused:
        spec = cl.conv_spec(input_shape, weight_shape, **params)
        assert not _depthwise_compiled.takes_lanes(spec, spec.padding, 4), (input_shape, weight_shape, params)
    spec = cl.conv_spec((1, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32)
    assert _depthwise_compiled.takes_lanes(spec, spec.padding, 4)


def test_the_channels_in_lanes_count_every_threads_scratch_against_the_workspace_limit():
    """Each thread's grid and sums count in the workspace (the plane loops take over where all of them do not
    fit the limit), and the algorithm reports them."""
    spec = cl.conv_spec((4, 16, 28, 28), (16, 1, 3, 3), padding=1, groups=16)
    per_thread = sum(_depthwise_compiled._lanes_scratch(spec, spec.padding)) * 4
    with cl.thread_count(2):
        assert _depthwise_compiled.takes_lanes(spec, spec.padding, 4)
        assert ALGORITHMS["depthwise"].workspace_bytes(spec, 4) == 2 * per_thread
        with cl.workspace_limit(int(1.5 * per_thread)):
            assert not _depthwise_compiled.takes_lanes(spec, spec.padding, 4)
            assert ALGORITHMS["depthwise"].workspace_bytes(spec, 4) <= 1.5 * per_thread


def test_refusals_send_the_problem_to_the_numpy_path():
    spec = cl.conv_spec((1, 2, 5, 5), (2, 1, 3, 3), groups=2)
    for dtype in (np.int32, np.float16, np.complex64):
        assert compiled_missing(spec, np.dtype(dtype)).startswith("the compiled kernels run float32 and float64 only")
    assert "1 or 2 spatial dimensions, not 3" in compiled_missing(cl.conv_spec((1, 2, 3, 3, 3), (2, 1, 1, 1, 1),
                                                                               groups=2), np.dtype(np.float32))
    with cl.workspace_limit(4 * 5 * 5 - 1):  # a thread's plane grid (one 5x5 plane) would not fit
        assert compiled_missing(spec, np.dtype(np.float32)).startswith("a plane grid")
    x, w = np.arange(50, dtype=np.int64).reshape(1, 2, 5, 5), np.ones((2, 1, 3, 3), np.int64)
    np.testing.assert_array_equal(cl.conv2d(x, w, groups=2, algorithm="depthwise"),
                                  cl.conv2d(x, w, groups=2, algorithm="direct"))  # exact: the NumPy path


def test_without_numba_the_numpy_path_runs(without_numba):
    spec = cl.conv_spec((2, 8, 30, 30), (8, 1, 3, 3), padding=1, groups=8)
    assert compiled_missing(spec, np.dtype(np.float32)).startswith("numba is not installed")
    x, w = np.random.default_rng(8).standard_normal((2, 8, 30, 30)), np.ones((8, 1, 3, 3))
    np.testing.assert_allclose(cl.conv2d(x, w, padding=1, groups=8, algorithm="depthwise"),
                               cl.conv2d(x, w, padding=1, groups=8, algorithm="direct"), rtol=1e-12, atol=1e-12)


#: The benchmark suite's depthwise layers (MobileNet v2, EfficientNet-B0, 1-d audio).
SUITE = [
    ((8, 96, 112, 112), (96, 1, 3, 3), dict(stride=2, padding=1, groups=96)),
    ((8, 144, 56, 56), (144, 1, 3, 3), dict(padding=1, groups=144)),
    ((8, 32, 112, 112), (32, 1, 3, 3), dict(padding=1, groups=32)),
    ((8, 144, 56, 56), (144, 1, 5, 5), dict(stride=2, padding=2, groups=144)),
    ((8, 240, 28, 28), (240, 1, 5, 5), dict(padding=2, groups=240)),
    ((8, 256, 4000), (256, 1, 9), dict(padding=4, groups=256)),
]


@pytest.mark.parametrize("input_shape, weight_shape, params", SUITE)
def test_auto_runs_the_compiled_planes_for_every_pass(input_shape, weight_shape, params):
    """Measured 1.7-3x faster than the "compiled" algorithm's general loops on every pass of these layers
    (single thread, in one process), and the estimates say so."""
    for dtype in ("float32", "float64"):
        chosen = cl.plan(input_shape, weight_shape, dtype, **params)
        assert (chosen.algorithm, chosen.input_grad.method, chosen.weight_grad.method) == ("depthwise",) * 3
        assert chosen.estimates["depthwise"] < chosen.estimates["compiled"]


STRIDED = ((4, 32, 40, 40), (32, 1, 3, 3), dict(padding=1, groups=32, stride=2))


def _strided_passes(x, w, g):
    with cl.thread_count(2):
        return three_passes(x, w, g, **STRIDED[2])


def test_many_python_threads_at_once_and_a_forked_child():
    """Six threads, each running all three passes (each pass shares its jobs among pool threads too), then a
    forked child after the parent has used the kernels and the pool: the same bits as one thread alone."""
    import multiprocessing
    import threading

    rng = np.random.default_rng(5)
    x, w, g = rng.standard_normal(STRIDED[0]), rng.standard_normal(STRIDED[1]), rng.standard_normal((4, 32, 20, 20))
    expected = _strided_passes(x, w, g)
    results: list = [None] * 6
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _strided_passes(x, w, g)))
               for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(1) as pool:
            results.append(pool.apply_async(_strided_passes, (x, w, g)).get(timeout=120))
    for result in results:
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)  # the same jobs, summed in the same order
