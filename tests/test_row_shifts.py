"""row_shifts (the last kernel axis unrolled, the other axes' taps as shifts of whole rows) against the direct sum
and PyTorch, forward and both gradients, its refusals, and where the planner takes it.

Tolerances: every path sums exact products in some order, so two of them differ by at most ``2*n*u`` of the
largest magnitude of a result's terms (``n`` terms per result, ``u`` the unit roundoff), as
tests/test_algorithms.py bounds every summing algorithm.
"""

from __future__ import annotations

from math import prod

import numpy as np
import pytest

import convolab as cl
from convolab import _grad_problems, planner
from convolab.algorithms import ALGORITHMS
from conv_cases import generate_cases
from test_depthwise import batched, torch_padded
from test_space_to_batch import dilated_cases

ROWS = ALGORITHMS["row_shifts"]
DTYPES = [np.float32, np.float64]


def runnable(case) -> bool:
    """Two axes at least, stride 1 on every axis but the last (:meth:`RowShifts.why_not`)."""
    return case.rank >= 2 and all(s == 1 for s in case.strides[:-1])


CASES = ([case for case in generate_cases(300, seed=31) if runnable(case)][:40]
         + [case for case in dilated_cases(40, seed=37) if runnable(case)][:20])


def normwise_error(actual: np.ndarray, expected: np.ndarray, magnitude: np.ndarray) -> float:
    """The largest error over the largest magnitude of a result's terms (0 for empty results)."""
    if not actual.size:
        return 0.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected)) / max(magnitude.max(), 1e-300))


def bound(terms: int, dtype) -> float:
    return 2 * max(terms, 1) * float(np.finfo(dtype).eps) / 2


def f64(a):
    return None if a is None else a.astype(np.float64)


def absolute(a):
    return None if a is None else np.abs(a).astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_weight_gradient_agree_with_direct(case, dtype):
    """Every rank 2-3, padding kind and mode, groups, dilations, last-axis strides, zero-size batches."""
    x, w, b = case.arrays(dtype)
    g = np.random.default_rng(5).standard_normal(case.output_shape).astype(dtype)
    kwargs = case.kwargs()
    got = cl.conv(x, w, b, **kwargs, algorithm="row_shifts")
    expected = cl.conv(f64(x), f64(w), f64(b), **kwargs, algorithm="direct")
    magnitude = cl.conv(absolute(x), absolute(w), absolute(b), **kwargs, algorithm="direct")
    assert got.dtype == dtype and got.shape == expected.shape
    assert normwise_error(got, expected, magnitude) <= bound(case.terms_per_output + case.bias, dtype)
    got = cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm="row_shifts")
    expected = cl.grad.conv_weight(f64(x), w.shape, f64(g), **kwargs, algorithm="im2col")
    magnitude = cl.grad.conv_weight(absolute(x), w.shape, absolute(g), **kwargs, algorithm="im2col")
    assert got.dtype == dtype and got.shape == w.shape
    assert normwise_error(got, expected, magnitude) <= bound(case.batch * prod(case.output_shape[2:]), dtype)


@pytest.fixture
def everywhere(monkeypatch):
    """The planner picks row_shifts for every problem it can run (its estimate is zero), so that the input
    gradient's "full" correlation runs it too."""
    monkeypatch.setattr(type(ROWS), "estimate", lambda self, spec, dtype: 0.0)
    planner._forget_plans()
    yield
    monkeypatch.undo()
    planner._forget_plans()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::3], ids=str)
def test_forward_and_gradients_agree_with_torch(case, dtype, everywhere):
    """By name for the forward and the weight gradient; the input gradient through "auto" made to pick it."""
    torch = pytest.importorskip("torch")
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(9).standard_normal(case.output_shape).astype(dtype)
    kwargs = case.kwargs()
    functional = {2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    xt = torch.tensor(batched(case, x).astype(np.float64), requires_grad=True)
    wt = torch.tensor(w.astype(np.float64), requires_grad=True)
    out_t = functional[case.rank](torch_padded(torch, xt, case), wt, None, case.strides, 0, case.dilations,
                                  case.groups)
    out_t.backward(torch.tensor(batched(case, g).astype(np.float64)))
    spec = cl.conv_spec(batched(case, x).shape, w.shape, **kwargs)
    if planner.plan_for(spec, dtype).input_grad.method == "full":
        full = _grad_problems.full_problem(spec)[0]
        if ROWS.why_not(full, np.dtype(dtype)) is None:
            assert planner.plan_for(full, dtype).algorithm == "row_shifts"
    got = (cl.conv(x, w, **kwargs, algorithm="row_shifts"), cl.grad.conv_input(x.shape, w, g, **kwargs),
           cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm="row_shifts"))
    terms = (cl.conv(absolute(x), absolute(w), **kwargs, algorithm="direct"),
             cl.grad.conv_input(x.shape, absolute(w), absolute(g), **kwargs, algorithm="scatter"),
             cl.grad.conv_weight(absolute(x), w.shape, absolute(g), **kwargs, algorithm="im2col"))
    counts = (case.terms_per_output, case.out_channels * prod(case.kernel_size),
              case.batch * prod(case.output_shape[2:]))
    references = (out_t.detach().numpy(), xt.grad.numpy(), wt.grad.numpy())
    for actual, reference, magnitude, count in zip(got, references, terms, counts):
        reference = reference if case.batched or reference.shape == actual.shape else reference[0]
        assert actual.dtype == dtype and actual.shape == reference.shape
        assert normwise_error(actual, reference, magnitude) <= bound(count, dtype)


def test_aspp_shape_against_torch():
    """The layer it was made for, scaled down in channels: dilation 6 on 33x33 rows, so each of the outer rows'
    taps reads padding for six rows and its product leaves them out."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 24, 33, 33)).astype(np.float32)
    w = rng.standard_normal((16, 24, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 16, 33, 33)).astype(np.float32)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    out_t = torch.nn.functional.conv2d(xt, wt, padding=6, dilation=6)
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(cl.conv2d(x, w, padding=6, dilation=6, algorithm="row_shifts"),
                               out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cl.grad.conv2d_weight(x, w.shape, g, padding=6, dilation=6, algorithm="row_shifts"),
                               wt.grad.numpy(), rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_a_view_and_every_padding_mode(mode):
    """A non-contiguous input (channels stepped, the last axis reversed), asymmetric padding, a last-axis stride
    that does not divide; modes other than zeros store every padded row."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 14, 19))[:, ::2, :, ::-1]
    w = rng.standard_normal((4, 3, 3, 3))
    g_shape = cl.conv_spec(x.shape, w.shape, padding=((2, 1), (3, 2)), dilation=(2, 3), stride=(1, 2)).output_shape
    g = rng.standard_normal(g_shape)
    params = dict(padding=((2, 1), (3, 2)), dilation=(2, 3), stride=(1, 2), padding_mode=mode)
    np.testing.assert_allclose(cl.conv2d(x, w, **params, algorithm="row_shifts"),
                               cl.conv2d(x, w, **params, algorithm="direct"), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="row_shifts"),
                               cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="im2col"),
                               rtol=1e-10, atol=1e-10)


def test_without_numba_the_numpy_unroll_runs(without_numba):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 11, 9, 7)), rng.standard_normal((4, 3, 3, 2, 3))
    g = rng.standard_normal(cl.conv_spec(x.shape, w.shape, padding=2, dilation=2).output_shape)
    params = dict(padding=2, dilation=2)
    np.testing.assert_allclose(cl.conv3d(x, w, **params, algorithm="row_shifts"),
                               cl.conv3d(x, w, **params, algorithm="direct"), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cl.grad.conv3d_weight(x, w.shape, g, **params, algorithm="row_shifts"),
                               cl.grad.conv3d_weight(x, w.shape, g, **params, algorithm="im2col"),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("where", ["kernel", "input"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_values_give_the_direct_sums_pattern(where, value):
    """A padding row left out must not hide ``0 * inf``: a kernel holding inf or NaN keeps the padding rows."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    if where == "kernel":
        w[1, 2, 0, 1] = value
    else:
        x[1, 0, 4, 3] = value
    params = dict(padding=((4, 3), (2, 2)), dilation=(3, 2))
    with np.errstate(invalid="ignore", over="ignore"):
        got = cl.conv2d(x, w, **params, algorithm="row_shifts")
        direct = cl.conv2d(x, w, **params, algorithm="direct")
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(got), mask(direct))
    finite = np.isfinite(direct)
    np.testing.assert_allclose(got[finite], direct[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_a_non_finite_grad_output_reaches_the_weight_gradient_as_in_the_direct_sum(value):
    """Its padding rows stay in the products where ``g`` holds inf or NaN: ``0 * inf`` is NaN there, as in im2col."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    params = dict(padding=((4, 3), (2, 2)), dilation=(3, 2))
    g = rng.standard_normal(cl.conv2d(x, w, **params, algorithm="direct").shape)
    g[1, 2, 0, 3] = value  # the first output row: its top taps read padding rows
    with np.errstate(invalid="ignore", over="ignore"):
        got = cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="row_shifts")
        expected = cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="im2col")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(expected).any()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-10)


def test_a_non_finite_input_keeps_the_3d_weight_gradient_from_it():
    spec = cl.conv_spec((1, 2, 6, 6, 6), (2, 2, 3, 3, 3), padding=1)
    assert isinstance(ROWS.pass_formulation("weight_grad", spec, np.dtype(np.float64), finite=False), str)
    spec = cl.conv_spec((1, 2, 6, 6), (2, 2, 3, 3), padding=1)
    assert not isinstance(ROWS.pass_formulation("weight_grad", spec, np.dtype(np.float64), finite=False), str)


@pytest.mark.parametrize("limit", [2**10, 2**14])
def test_a_workspace_limit_under_one_sample_hands_it_to_gemm(limit):
    """A row shift needs a sample's rows whole: under a limit that splits them, gemm's passes run."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 5, 13, 12)), rng.standard_normal((3, 5, 3, 3))
    g = rng.standard_normal(cl.conv_spec(x.shape, w.shape, padding=3, dilation=3).output_shape)
    with cl.workspace_limit(limit):
        got = cl.conv2d(x, w, padding=3, dilation=3, algorithm="row_shifts")
        grad = cl.grad.conv2d_weight(x, w.shape, g, padding=3, dilation=3, algorithm="row_shifts")
    np.testing.assert_allclose(got, cl.conv2d(x, w, padding=3, dilation=3, algorithm="direct"), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(grad, cl.grad.conv2d_weight(x, w.shape, g, padding=3, dilation=3, algorithm="im2col"),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("input_shape, weight_shape, params, reason", [
    ((1, 4, 20), (4, 4, 3), dict(padding=1), "gemm"),
    ((1, 4, 20, 20), (4, 4, 3, 3), dict(stride=2), "stride"),
    ((1, 4, 8, 8, 8), (4, 4, 3, 3, 3), dict(stride=(1, 2, 1)), "stride"),
])
def test_refuses_what_it_cannot_run(input_shape, weight_shape, params, reason):
    spec = cl.conv_spec(input_shape, weight_shape, **params)
    assert reason in ROWS.why_not(spec, np.dtype(np.float32))
    with pytest.raises(ValueError, match="algorithm cannot run this problem.*got 'row_shifts'"):
        cl.conv(np.ones(input_shape), np.ones(weight_shape), **params, algorithm="row_shifts")


def test_inputs_not_modified():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 9, 9))
    copies = x.copy(), w.copy(), g.copy()
    cl.conv2d(x, w, padding=2, dilation=2, algorithm="row_shifts")
    cl.grad.conv2d_weight(x, w.shape, g, padding=2, dilation=2, algorithm="row_shifts")
    for array, copy in zip((x, w, g), copies):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("input_shape, weight_shape, params, picked, weight_grad", [
    # ASPP: 26.2 ms against gemm's 28.8 (one thread, CPU), and since session 13 space_to_batch's phases in place ran
    # it in 17.8 against row_shifts' 22.7 (docs/compiled.md); its weight gradient stays row_shifts': 27.0 against
    # gemm's 30.9
    ((2, 512, 33, 33), (256, 512, 3, 3), dict(padding=6, dilation=6), False, True),
    ((2, 256, 33, 33), (256, 256, 3, 3), dict(padding=2, dilation=2), False, False),  # 14.1 against 11.9
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), False, False),  # 49 columns a product: 22.0 against 11.7
    ((2, 32, 16, 64, 64), (32, 32, 3, 3, 3), dict(padding=1), False, False),  # 3-d, 32 filters: 84.8 against 55.5
    ((2, 32, 6, 10, 10), (32, 32, 3, 3, 3), dict(padding=1), False, False),  # 0.88 against folded's 0.80
])
def test_auto_picks_it_where_it_measured_faster(input_shape, weight_shape, params, picked, weight_grad):
    """At one thread, by its estimate; never at two, where its BLAS products were not measured to scale. Its weight
    gradient where ``weight_grad`` says (ASPP's: the forward runs space_to_batch, which has none of its own)."""
    spec = cl.conv_spec(input_shape, weight_shape, **params)
    with cl.thread_count(1):
        chosen = cl.plan(input_shape, weight_shape, "float32", **params)
        assert (chosen.algorithm == "row_shifts") == picked, str(chosen)
        assert (chosen.weight_grad.method == "row_shifts") == weight_grad, str(chosen)
        full = planner.plan_for(_grad_problems.full_problem(spec)[0], np.float32).algorithm
        assert (full == "row_shifts") == picked, full
    with cl.thread_count(2):  # its forward not measured there (docs/compiled.md, session 12): it stays as it was
        chosen = cl.plan(input_shape, weight_shape, "float32", **params)
        assert chosen.algorithm != "row_shifts", str(chosen)
        assert planner.plan_for(_grad_problems.full_problem(spec)[0], np.float32).algorithm != "row_shifts"
        # ASPP's weight gradient, BLAS products as gemm's own, replaces gemm's within planner.CHEAPER_PASS_MARGIN
        assert (chosen.weight_grad.method == "row_shifts") == weight_grad, str(chosen)


def test_float16_is_accumulated_in_float32():
    """tests/test_algorithms.py's float16 checks, in 2-d (it refuses 1-d): 60000 + 60000 overflows float16 but
    comes back from a float32 sum, and 2048 + 64 ones would round away in float16."""
    x = np.array([[[[60000.0, 60000.0, -60000.0]]]], dtype=np.float16)
    out = cl.conv2d(x, np.ones((1, 1, 1, 3), dtype=np.float16), algorithm="row_shifts")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.array([[[[60000.0]]]], dtype=np.float16))
    x = np.concatenate([[2048.0], np.ones(64)]).astype(np.float16).reshape(1, 1, 5, 13)
    out = cl.conv2d(x, np.ones((1, 1, 5, 13), dtype=np.float16), algorithm="row_shifts")
    assert out.dtype == np.float16 and float(out[0, 0, 0, 0]) == 2048.0 + 64.0
