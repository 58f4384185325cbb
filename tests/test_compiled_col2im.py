"""The compiled col2im (the "scatter" input gradient's add-back) and the fused pad + unroll (gemm's and folded's
columns straight from the input before padding), against the NumPy paths they replace and against PyTorch.

Tolerances. The col2im adds each cell's taps in the same order as NumPy's
``add_windows`` (from zero, one term per tap, in the kernel's C order), and
the unroll copies values: both are compared for *equality* with the NumPy
path. Only the forward and weight gradient through gemm and folded change
their matrix products' shapes (exact columns instead of wide rows, other
blocks), so the BLAS may sum in another order: those are compared within the
bound of any summation order (as in test_compiled.py), and with PyTorch to
the dtype's rounding.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convolab as cl
from convolab import _engine, planner
from convolab._window import pad, pad_adjoint
from convolab.algorithms import ALGORITHMS
from convolab.algorithms import _columns
from convolab.algorithms import gemm as gemm_module
from convolab.algorithms._blocking import unrolled_blocks
from convolab.algorithms._columns import _unroll_layout, unrolled_blocks_unpadded
from conv_cases import generate_cases
from test_compiled import HIDE_NUMBA, assert_within, run_python, summation_bound
from test_depthwise import assert_like_torch, batched, spec_of

#: Generated cases of every rank, padding kind and mode (strides, dilations, groups, empty batches, unbatched),
#: every third one made strided along every axis (where col2im is what "auto" runs).
CASES = [dataclasses.replace(case, stride=2) if index % 3 == 0 else case
         for index, case in enumerate(generate_cases(60, seed=151))]
DTYPES = [np.float32, np.float64]


def draw(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_col2im_gives_the_numpy_scatter_bit_for_bit(case, dtype):
    spec = spec_of(case)
    kernel = draw(spec.weight_shape, dtype, 1)
    g = draw(spec.output_shape, dtype, 2)
    expected = pad_adjoint(_engine._input_grad_scatter(g, kernel, spec), spec.padding, spec.padding_mode,
                           spec.input_size)
    actual = _engine._input_grad_scatter(g, kernel, spec, compiled=True)
    assert actual.shape == spec.input_shape and actual.dtype == dtype
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES[::2], ids=str)
def test_unrolled_columns_are_the_padded_inputs(case, dtype):
    """Every block of the fused unroll holds exactly NumPy's exact columns of the padded input, also in
    blocks of rows (a workspace limit a few rows wide)."""
    spec = spec_of(case)
    if spec.batch == 0:
        return  # no blocks
    x = draw(spec.input_shape, dtype, 3)
    for limit in (2**30, 3 * spec.in_channels * int(np.prod(spec.kernel_size)) * dtype().itemsize):
        with cl.workspace_limit(limit):
            pairs = zip(unrolled_blocks_unpadded(x, spec), unrolled_blocks(pad(x, spec.padding, spec.padding_mode),
                                                                           spec, wide=False))
            for (block, columns, grid), (expected_block, expected, expected_grid) in pairs:
                assert (block, grid) == (expected_block, expected_grid)
                np.testing.assert_array_equal(columns, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("input_shape, weight_shape, params", [
    ((32, 16, 4, 4), (32, 16, 3, 3), dict(padding=1)),  # the digits CNN's second layer
    ((5, 3, 9, 7), (4, 3, 3, 2), dict(stride=(2, 1), dilation=(1, 2), padding=((2, 0), (1, 3)))),
    ((3, 2, 6, 5), (2, 2, 3, 3), dict(padding=2, padding_mode="reflect")),
    ((2, 4, 5), (2, 2, 3), dict(padding=1, padding_mode="circular", groups=2, stride=3)),
    ((2, 2, 4, 3, 5), (3, 2, 2, 3, 2), dict(padding=(1, 0, 2), padding_mode="replicate", dilation=(2, 1, 1))),
])
def test_plane_by_plane_unroll_copies_what_the_row_unroll_does(input_shape, weight_shape, params, dtype):
    """Short rows are unrolled plane by plane through a padded scratch plane: the same columns as the row by row
    loop (and so as NumPy's, above), for every padding mode, stride and dilation."""
    spec = cl.spec.conv_spec(input_shape, weight_shape, **params)
    x = draw((*spec.input_shape[:-1], 2 * spec.input_shape[-1]), dtype, 8)[..., ::2]  # not contiguous
    assert _unroll_layout(spec, x.itemsize, 0, 2**30).by_planes, "the case must be unrolled plane by plane"
    (block, columns, grid), = unrolled_blocks_unpadded(x, spec)
    (expected_block, expected, expected_grid), = unrolled_blocks(pad(x, spec.padding, spec.padding_mode), spec,
                                                                 wide=False)
    assert (block, grid) == (expected_block, expected_grid)
    np.testing.assert_array_equal(columns, expected)


def three_passes(x, w, g, algorithm, **kwargs):
    return (cl.conv(x, w, **kwargs, algorithm=algorithm), cl.grad.conv_input(x.shape, w, g, **kwargs),
            cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm=algorithm))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES[::3], ids=str)
def test_gemm_and_folded_unpadded_against_the_references_and_torch(case, dtype):
    x, w, _ = case.arrays(dtype)
    g = draw(case.output_shape, dtype, 4)
    kwargs = case.kwargs()
    f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    for algorithm in ("gemm", "folded"):
        if ALGORITHMS[algorithm].why_not(spec_of(case), np.dtype(dtype)) is not None:
            continue
        out, grad_input, grad_weight = passes = three_passes(x, w, g, algorithm, **kwargs)
        assert_within(out, cl.conv(x, w, **kwargs, algorithm="direct"),
                      summation_bound(case.terms_per_output, cl.conv(f64(x), f64(w), **kwargs, algorithm="direct"),
                                      dtype))
        terms = case.batch * int(np.prod(case.output_size))
        assert_within(grad_weight, cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm="im2col"),
                      summation_bound(terms, cl.grad.conv_weight(f64(x), w.shape, f64(g), **kwargs,
                                                                 algorithm="im2col"), dtype))
        if case.batch > 0:
            assert_like_torch(case, x, w, g, passes)


def test_the_plan_reports_the_compiled_col2im_and_auto_runs_it(monkeypatch, request):
    chosen = cl.plan((8, 128, 32, 32), (256, 128, 4, 4), "float32", stride=2, padding=1)  # DCGAN's decoder conv
    assert chosen.input_grad.method == "scatter"
    assert dict(chosen.input_grad.options) == {"col2im": "compiled"}
    assert "compiled col2im" in str(chosen.input_grad) and "faster than NumPy's" in chosen.input_grad.reason
    x, w = draw((2, 64, 17, 15), np.float32, 5), draw((64, 32, 4, 3), np.float32, 6)
    params = dict(stride=2, padding=(1, 2), groups=2)
    # the forward on gemm, as planned before compiled's register tiles (whose own scatter pass would run)
    monkeypatch.setattr(type(ALGORITHMS["compiled"]), "estimate", lambda self, spec, dtype: float("inf"))
    planner._forget_plans()
    request.addfinalizer(planner._forget_plans)  # no plan made so outlives the test
    assert dict(cl.plan(x.shape, w.shape, "float32", **params).input_grad.options) == {"col2im": "compiled"}
    g = draw(cl.conv2d(x, w, **params).shape, np.float32, 7)
    auto = cl.grad.conv2d_input(x.shape, w, g, **params)
    np.testing.assert_array_equal(auto, cl.grad.conv2d_input(x.shape, w, g, **params, algorithm="scatter"))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("rank, size, kernel, padding", [(2, 9, 4, 1), (2, 7, 2, 0), (1, 20, 4, 1), (3, 5, 2, 0)])
def test_transposed_decoders_like_torch(rank, size, kernel, padding, dtype):
    """The decoders' transposed convolutions (stride 2) run the compiled col2im, threaded, and match PyTorch."""
    torch = pytest.importorskip("torch")
    x = draw((3, 16, *(size,) * rank), dtype, 8)
    w = draw((16, 6, *(kernel,) * rank), dtype, 9)
    with cl.thread_count(2):
        out = cl.conv_transpose(x, w, stride=2, padding=padding)
    functional = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
                  3: torch.nn.functional.conv_transpose3d}[rank]
    expected = functional(torch.tensor(x), torch.tensor(w), stride=2, padding=padding).numpy()
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out, expected, **tolerance)


def test_threaded_and_not_contiguous_with_a_padding_mode():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 4, 40, 2 * 37))[..., ::2]  # every other column: a view
    w = rng.standard_normal((8, 2, 5, 3))
    params = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, padding_mode="reflect")
    g = rng.standard_normal(cl.conv2d(x, w, **params, algorithm="direct").shape)
    for array in (x, w, g):
        array.flags.writeable = False
    with cl.thread_count(2):
        for algorithm in ("gemm", "folded"):
            np.testing.assert_allclose(cl.conv2d(x, w, **params, algorithm=algorithm),
                                       cl.conv2d(x, w, **params, algorithm="direct"), rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm=algorithm),
                                       cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="im2col"),
                                       rtol=1e-10, atol=1e-10)
        spec = cl.conv_spec(x.shape, w.shape, **params)
        np.testing.assert_array_equal(
            _engine._input_grad_scatter(g, w, spec, compiled=True),
            pad_adjoint(_engine._input_grad_scatter(g, w, spec), spec.padding, spec.padding_mode, spec.input_size))


def test_nonfinite_pattern_of_the_direct_sum():
    """An inf or NaN reaches only what its windows reach: the col2im adds real products only, and the unroll's
    padding cells are zeros, never ``0 * x``."""
    x = np.ones((1, 2, 9, 9))
    x[0, 1, 4, 4] = np.inf
    w = np.ones((3, 2, 3, 3))
    w[1, 0, 1, 1] = np.nan
    g = np.ones(cl.conv2d(x, w, stride=2, padding=1, algorithm="direct").shape)
    for algorithm in ("gemm", "folded"):
        if ALGORITHMS[algorithm].why_not(cl.conv_spec(x.shape, w.shape, stride=2, padding=1), x.dtype) is None:
            np.testing.assert_array_equal(cl.conv2d(x, w, stride=2, padding=1, algorithm=algorithm),
                                          cl.conv2d(x, w, stride=2, padding=1, algorithm="direct"))
    np.testing.assert_array_equal(cl.grad.conv2d_input(x.shape, w, g, stride=2, padding=1),
                                  cl.grad.conv2d_input(x.shape, w, g, stride=2, padding=1, algorithm="scatter"))


def test_without_numba_the_numpy_paths_run(without_numba):
    chosen = cl.plan((8, 128, 32, 32), (256, 128, 4, 4), "float32", stride=2, padding=1)
    assert chosen.input_grad.method == "scatter" and chosen.input_grad.options == ()
    x, w = draw((2, 3, 11, 11), np.float64, 10), draw((4, 3, 3, 3), np.float64, 11)
    g = draw(cl.conv2d(x, w, stride=2, padding=1).shape, np.float64, 12)
    np.testing.assert_allclose(cl.conv2d(x, w, stride=2, padding=1, algorithm="gemm"),
                               cl.conv2d(x, w, stride=2, padding=1, algorithm="direct"), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cl.grad.conv2d_input(x.shape, w, g, stride=2, padding=1),
                                  cl.grad.conv2d_input(x.shape, w, g, stride=2, padding=1, algorithm="scatter"))


def test_float16_and_integers_keep_the_numpy_scatter():
    for dtype in ("float16", "int32"):
        chosen = cl.plan((2, 8, 16, 16), (8, 8, 4, 4), dtype, stride=2, padding=1)
        assert chosen.input_grad.method == "scatter" and chosen.input_grad.options == (), dtype


def test_with_numba_hidden_in_a_fresh_process_everything_falls_back():
    out = run_python(HIDE_NUMBA, """
        import sys
        import numpy as np
        import convolab as cl
        chosen = cl.plan((8, 128, 32, 32), (256, 128, 4, 4), "float32", stride=2, padding=1)
        assert chosen.input_grad.options == (), chosen.input_grad
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((2, 8, 13, 11)), rng.standard_normal((6, 8, 4, 3))
        params = dict(stride=2, padding=(1, 2), padding_mode="circular")
        g = rng.standard_normal(cl.conv2d(x, w, **params, algorithm="direct").shape)
        assert np.allclose(cl.conv2d(x, w, **params, algorithm="gemm"), cl.conv2d(x, w, **params, algorithm="direct"))
        assert np.allclose(cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="gemm"),
                           cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="im2col"))
        assert np.allclose(cl.grad.conv2d_input(x.shape, w, g, **params),
                           cl.grad.conv2d_input(x.shape, w, g, **params, algorithm="scatter"))
        print("numba" in sys.modules)
        """)
    assert out.split() == ["False"]


#: Short rows the col2im takes plane by plane: the digits CNN's second layer, strides that do not divide, dilation,
#: asymmetric padding, groups, a padding mode (the whole padded gradient), 1-d and 3-d, unbatched input, and a
#: layer with the work to share among threads.
PLANE_CASES = [
    ((32, 16, 4, 4), (32, 16, 3, 3), dict(padding=1)),
    ((64, 16, 8, 8), (32, 16, 3, 3), dict(padding=1)),  # work enough for two threads
    ((5, 3, 9, 7), (4, 3, 3, 2), dict(stride=(2, 3), dilation=(1, 2), padding=((2, 0), (1, 3)))),
    ((3, 4, 6, 5), (6, 2, 3, 3), dict(padding=2, padding_mode="reflect", groups=2)),
    ((2, 4, 11), (2, 2, 3), dict(padding=((0, 2),), padding_mode="circular", groups=2, stride=3)),
    ((2, 2, 4, 3, 5), (3, 2, 2, 3, 2), dict(padding=(1, 0, 2), padding_mode="replicate", dilation=(2, 1, 1))),
    ((3, 7, 7), (5, 3, 5, 5), dict(stride=2, padding=2)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("input_shape, weight_shape, params", PLANE_CASES)
def test_plane_by_plane_col2im_gives_the_row_by_row_bits(input_shape, weight_shape, params, dtype, monkeypatch):
    """Short rows are added back plane by plane through a scratch plane: the same bits as the row by row loop
    (and so as NumPy's scatter), one thread and two, from grad_output that is not contiguous; and PyTorch's input
    gradient to the dtype's rounding."""
    torch = pytest.importorskip("torch")
    spec = cl.spec.conv_spec(input_shape, weight_shape, **params)
    kernel = draw(spec.weight_shape, dtype, 13)
    g = draw((*spec.output_shape[:-1], 2 * spec.output_shape[-1]), dtype, 14)[..., ::2]
    first_row = (0, 0, *(0,) * (spec.rank - 1), slice(0, 3))
    g[first_row] = [np.inf, np.nan, -np.inf][:g.shape[-1]]  # each reaches only its windows
    sizes = spec.input_size if spec.padding_mode == "zeros" else spec.padded_size
    lows = [low for low, _ in spec.padding] if spec.padding_mode == "zeros" else [0] * spec.rank
    assert _columns._scratch_plane(sizes, spec.kernel_size, spec.output_size, spec.stride, spec.dilation,
                                   tuple(lows)) is not None, "the case must take the plane by plane col2im"
    finite = g.copy()
    finite[first_row] = 1  # for PyTorch's sums to compare with
    by_planes = _engine._input_grad_scatter(finite, kernel, spec, compiled=True)
    results = []
    for threads in (1, 2):
        with cl.thread_count(threads), cl.workspace_limit(2**30), np.errstate(invalid="ignore"):  # inf - inf
            results.append(_engine._input_grad_scatter(g, kernel, spec, compiled=True))
    monkeypatch.setattr(_columns, "_scratch_plane", lambda *args: None)
    with np.errstate(invalid="ignore"):
        by_rows = _engine._input_grad_scatter(g, kernel, spec, compiled=True)
    for result in results:
        assert result.shape == spec.input_shape and result.dtype == dtype
        np.testing.assert_array_equal(result, by_rows)
    x = draw(input_shape, dtype, 15)
    xt = torch.tensor(x if spec.batched else x[np.newaxis], requires_grad=True)
    case_padding = [pad for pair in reversed(spec.padding) for pad in pair]
    mode = {"zeros": "constant", "reflect": "reflect", "circular": "circular", "replicate": "replicate"}
    padded = torch.nn.functional.pad(xt, case_padding, mode=mode[spec.padding_mode])
    functional = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    out = functional[spec.rank](padded, torch.tensor(kernel), None, spec.stride, 0, spec.dilation, spec.groups)
    out.backward(torch.tensor(finite))
    expected = xt.grad.numpy()
    rounding = 1e-5 if dtype == np.float32 else 1e-10  # sums of up to 288 terms, some cancelling: scaled
    np.testing.assert_allclose(by_planes, expected, rtol=rounding, atol=rounding * np.abs(expected).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("width, padding", [(56, (1, 1)), (28, (1, 1)), (29, (1, 1)), (20, (0, 0)), (19, (2, 2)),
                                            (20, (0, 3)), (21, (3, 0)), (18, (1, 2))])
def test_three_taps_at_stride_2_give_the_numpy_scatter_bit_for_bit(width, padding, dtype):
    """ResNet's stride-2 3x3 rows take their three taps along the row in one pass over pairs of cells, the
    edges apart (:func:`convolab.algorithms._kernels_col2im._three_taps_at_stride_2`): each cell's taps in the
    kernel's order, so NumPy's scatter's bits, an inf or NaN of grad_output reaching only its windows' cells;
    on one thread and two, with a 3-d layer and a dilation along another axis."""
    cases = [cl.spec.conv_spec((3, 4, 11, width), (5, 4, 3, 3), stride=2, padding=((1, 1), padding)),
             cl.spec.conv_spec((2, 3, 5, 6, width), (4, 3, 2, 3, 3), stride=(1, 2, 2), dilation=(1, 2, 1),
                               padding=((0, 1), (2, 2), padding))]
    for spec in cases:
        assert spec.output_size[-1] >= _columns.COL2IM_PLANE_ROW, "the case must take the row by row col2im"
        kernel = draw(spec.weight_shape, dtype, 21)
        g = draw(spec.output_shape, dtype, 22)
        g[(0, 0, *(0,) * (spec.rank - 1), slice(0, 3))] = [np.inf, np.nan, -np.inf]
        with np.errstate(invalid="ignore"):
            expected = pad_adjoint(_engine._input_grad_scatter(g, kernel, spec), spec.padding, spec.padding_mode,
                                   spec.input_size)
            for threads in (1, 2):
                with cl.thread_count(threads), cl.workspace_limit(2**30):
                    np.testing.assert_array_equal(_engine._input_grad_scatter(g, kernel, spec, compiled=True),
                                                  expected)


@pytest.mark.parametrize("kernel, padding, dilation", [(2, 0, 1), (3, 1, 1), (4, 1, 1), (5, 2, 1), (4, 3, 1),
                                                       (7, 3, 1), (4, 1, 2)])
def test_stride_two_rows_take_their_taps_in_pairs_with_numpys_bits(kernel, padding, dilation):
    """At stride 2 along the last axis the compiled add-back takes taps kw and kw + 1 in one loop (rows of 9
    outputs or more, dilation 1): the same sums in the same order as NumPy's strided adds, to the bit, where the
    two taps' outputs start and end apart (the padding) and with an odd tap left over."""
    rng = np.random.default_rng(kernel * 10 + padding)
    x_shape, w = (2, 3, 6, 41), rng.standard_normal((4, 3, 3, kernel)).astype(np.float32)
    spec = cl.conv_spec(x_shape, w.shape, stride=(1, 2), padding=(1, padding), dilation=(1, dilation))
    assert spec.output_size[-1] >= 9  # the row path, not the plane by plane one
    g = rng.standard_normal(spec.output_shape).astype(np.float32)
    np.testing.assert_array_equal(
        _engine._input_grad_scatter(g, w, spec, compiled=True),
        pad_adjoint(_engine._input_grad_scatter(g, w, spec), spec.padding, spec.padding_mode, spec.input_size))


#: Small images in batches at least twice their rows long, with more columns' rows than filters: the compiled
#: batch-inner unroll and add-back (``_columns.compiled_batch_inner``). Every rank, groups, strides that do not
#: divide the input, dilation, asymmetric padding, and each padding mode for the unroll.
BATCH_INNER_CASES = [
    ((32, 16, 4, 4), (32, 16, 3, 3), dict(padding=1)),  # the digits CNN's second layer
    ((24, 6, 7, 5), (4, 3, 3, 2), dict(stride=(2, 1), padding=((1, 0), (2, 1)), groups=2)),
    ((40, 3, 9), (2, 3, 3), dict(stride=2, dilation=2, padding=2)),
    ((20, 2, 4, 5, 3), (3, 2, 2, 3, 2), dict(padding=1, stride=(1, 2, 1))),
    ((16, 4, 6, 6), (8, 4, 3, 3), dict(padding=1, padding_mode="reflect")),
    ((17, 5, 5, 3), (4, 5, 3, 3), dict(padding=(2, 1), dilation=(2, 1), padding_mode="circular")),
    ((18, 3, 4, 4), (2, 3, 2, 2), dict(padding=((0, 3), (1, 0)), stride=3, padding_mode="replicate")),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("input_shape, weight_shape, params", BATCH_INNER_CASES)
def test_batch_inner_columns_and_add_back(input_shape, weight_shape, params, dtype, monkeypatch):
    """The batch-inner unroll copies exactly NumPy's batch-inner columns of the padded input, and its add-back
    gives the plane by plane (or row by row) col2im's bits from the same window gradients (zero padding: the only
    mode it runs), on one thread and on two. The passes through them (the scatter input gradient, gemm's forward
    and weight gradient) are within any summation order's bound of the references: the BLAS may round a product
    over other columns otherwise."""
    spec = cl.spec.conv_spec(input_shape, weight_shape, **params)
    assert _columns.compiled_batch_inner(spec, np.dtype(dtype).itemsize), "the case must take the batch-inner path"
    x, kernel = draw(input_shape, dtype, 21), draw(weight_shape, dtype, 22)
    padded = pad(x, spec.padding, spec.padding_mode)
    padded_spec = cl.spec.conv_spec(padded.shape, weight_shape, stride=spec.stride, dilation=spec.dilation,
                                    groups=spec.groups)
    expected_columns = gemm_module._batch_inner_columns(padded, padded_spec)
    for threads in (1, 2):
        monkeypatch.setattr(_columns, "threads_for", lambda work: threads)
        np.testing.assert_array_equal(_columns.batch_inner_columns(x, spec), expected_columns)
    g = draw(spec.output_shape, dtype, 23)
    zero_spec = dataclasses.replace(spec, padding_mode="zeros")
    # The add-back alone: the same window gradients, in either layout, give the same bits.
    taps = spec.in_channels_per_group * int(np.prod(spec.kernel_size))
    windows = draw((spec.groups, taps, spec.batch, int(np.prod(spec.output_size))), dtype, 24)  # (G, C*K, N, P)
    lows = [low for low, _ in spec.padding]
    by_planes = _columns.add_columns(windows.reshape(spec.in_channels, *spec.kernel_size, spec.batch,
                                                     *spec.output_size),
                                     np.empty(spec.input_shape, dtype), spec.stride, spec.dilation, lows, True)
    batch_inner = np.ascontiguousarray(windows.transpose(0, 1, 3, 2)).reshape(spec.groups, taps, -1)
    for threads in (1, 2):
        monkeypatch.setattr(_columns, "threads_for", lambda work: threads)
        np.testing.assert_array_equal(
            _columns.add_batch_inner_columns(batch_inner, np.full(spec.input_shape, np.nan, dtype), zero_spec),
            by_planes)
        # The whole input gradient: its product is the BLAS's on other columns, so within any order's bound.
        f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
        assert_within(_engine._input_grad_scatter(g, kernel, zero_spec, compiled=True),
                      pad_adjoint(_engine._input_grad_scatter(g, kernel, zero_spec), spec.padding, "zeros",
                                  spec.input_size),
                      summation_bound(spec.out_channels_per_group * int(np.prod(spec.kernel_size)),
                                      pad_adjoint(_engine._input_grad_scatter(f64(g), f64(kernel), zero_spec),
                                                  spec.padding, "zeros", spec.input_size), dtype))
    monkeypatch.undo()
    gemm = ALGORITHMS["gemm"]
    f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    terms = spec.in_channels_per_group * int(np.prod(spec.kernel_size))
    assert_within(gemm.run_unpadded(x, kernel, spec), ALGORITHMS["direct"].run(padded, kernel, padded_spec),
                  summation_bound(terms, ALGORITHMS["direct"].run(f64(padded), f64(kernel), padded_spec), dtype))
    terms = spec.batch * int(np.prod(spec.output_size))
    assert_within(gemm.weight_grad(x, g, spec), cl.grad.conv_weight(x, weight_shape, g, algorithm="im2col", **params),
                  summation_bound(terms, cl.grad.conv_weight(f64(x), weight_shape, f64(g), algorithm="im2col",
                                                             **params), dtype))


def test_batch_inner_is_left_to_layers_with_few_columns_per_output():
    """The digits CNN's first layer (one input channel, 9 columns' rows for 16 filters) keeps the plane by plane
    unroll: its output's transposing copy would cost more than its columns' copy saves."""
    assert not _columns.compiled_batch_inner(cl.spec.conv_spec((32, 1, 8, 8), (16, 1, 3, 3), padding=1), 4)
    assert _columns.compiled_batch_inner(cl.spec.conv_spec((32, 16, 4, 4), (32, 16, 3, 3), padding=1), 4)
    assert not _columns.compiled_batch_inner(cl.spec.conv_spec((4, 16, 4, 4), (32, 16, 3, 3), padding=1), 4)


def test_a_pullback_copies_grad_output_batch_last_once(monkeypatch):
    """A convolution's pullback takes both gradients inside ``sharing_batch_last``: the digits CNN's second layer
    copies grad_output batch-last once, not once per gradient, with the same bits as the two public gradients."""
    x, w, b = draw((32, 16, 4, 4), np.float32, 31), draw((32, 16, 3, 3), np.float32, 32), draw(32, np.float32, 33)
    g = draw((32, 32, 4, 4), np.float32, 34)
    copies = []
    real = _columns.transposed_matrix
    monkeypatch.setattr(_columns, "transposed_matrix", lambda a: copies.append(a.shape) or real(a))
    out, pullback = cl.vjp(cl.conv2d, x, w, b, padding=1)
    copies.clear()
    grad_input, grad_weight, _ = pullback(g)
    assert copies.count((32, 32 * 4 * 4)) == 1, copies  # (N, G*O*P) transposed: made once, used twice
    monkeypatch.undo()
    np.testing.assert_array_equal(grad_input, cl.grad.conv2d_input(x.shape, w, g, padding=1))
    np.testing.assert_array_equal(grad_weight, cl.grad.conv2d_weight(x, w.shape, g, padding=1))
    with _columns.sharing_batch_last():
        spec = cl.spec.conv_spec(x.shape, w.shape, padding=1)
        first = _columns.batch_last(g, spec)
        assert _columns.batch_last(g, spec) is first
        assert _columns.batch_last(g.copy(), spec) is not first  # another array: another copy
    assert _columns.batch_last(g, spec) is not _columns.batch_last(g, spec)  # outside the block: none shared


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(32, 512), (512, 32), (17, 33), (16, 16), (3, 100), (100, 3), (1, 1), (0, 5),
                                   (5, 0)])
def test_the_compiled_transpose_gives_numpys_transpose(shape, dtype, monkeypatch):
    """:func:`_columns.transposed_matrix`: whole squares of sixteen through registers, the edges a value at a
    time; from a non-contiguous view as from an array; with Numba not loaded, NumPy's copy (no import)."""
    assert _columns.numba_missing() is None  # Numba loaded: the compiled transpose runs
    matrix = draw(shape, dtype, 35)
    for source in (matrix, np.asfortranarray(matrix), draw((shape[0], 2 * shape[1]), dtype, 36)[:, ::2]):
        out = _columns.transposed_matrix(source)
        assert out.flags.c_contiguous and out.dtype == dtype
        np.testing.assert_array_equal(out, source.T)
    monkeypatch.setattr(_columns, "numba_loaded", lambda: False)
    np.testing.assert_array_equal(_columns.transposed_matrix(matrix), matrix.T)
