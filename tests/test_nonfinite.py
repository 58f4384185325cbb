"""inf and NaN: every path "auto" or "measure" can take gives the direct sum's (and PyTorch's) pattern.

The policy (module notes of :mod:`convolab.planner`): an algorithm that sums
products of the values its windows read gives, for data holding inf or NaN,
exactly the pattern of the direct sum, whatever its summation order (``inf +
x = inf``, ``inf - inf = NaN``, ``0 * inf = NaN`` in every order). Algorithms
that mix values across outputs (``mixes_outputs``: the FFT, Winograd, space_to_batch) and the
"full" input gradient (which multiplies zeros that are not data) cannot, so the
planner keeps them from such data. Each generated case below puts an inf, a
-inf or a NaN into one operand of one pass and compares NaN, +inf and -inf
masks, and the finite values, with the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convolab as cl
from convolab import planner
from convolab.algorithms import ALGORITHMS, transform_length
from conv_cases import ConvCase, generate_cases

CASES = [case for case in generate_cases(120, seed=13) if case.batch > 0][:48]
#: Forward algorithms that sum products (their pattern must be exact) and those that mix outputs.
SUMMING = ("im2col", "gemm", "folded", "shifted", "depthwise")
MIXING = tuple(name for name, algorithm in ALGORITHMS.items() if algorithm.mixes_outputs)
SPECIALS = (np.inf, -np.inf, np.nan)


def runs(case: ConvCase, algorithm: str) -> bool:
    if algorithm == "folded":
        return case.strides[-1] == 1 and case.kernel_size[-1] > 1
    return algorithm != "depthwise" or case.in_channels == case.groups


def poison(a: np.ndarray, seed: int) -> np.ndarray:
    """A copy of ``a`` with one to three cells set to inf, -inf or NaN (which, and where, by ``seed``)."""
    rng = np.random.default_rng(seed)
    out = a.copy()
    flat = out.reshape(-1)
    if flat.size:
        for position in rng.choice(flat.size, size=min(flat.size, int(rng.integers(1, 4))), replace=False):
            flat[position] = SPECIALS[int(rng.integers(0, 3))]
    return out


def assert_same_pattern(got: np.ndarray, expected: np.ndarray, tolerance: float = 1e-9) -> None:
    """The same NaN, +inf and -inf cells, and the finite cells equal within ``tolerance`` (relative and
    absolute: rounding)."""
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(got), mask(expected), err_msg=mask.__name__)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=tolerance, atol=tolerance)


def operands(case: ConvCase, poisoned: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input, weight and grad_output in float64, ``poisoned`` (one of the three) holding specials."""
    x, w, _ = case.arrays(np.float64)
    g = np.random.default_rng(seed).standard_normal(case.output_shape)
    arrays = {"input": x, "weight": w, "grad_output": g}
    arrays[poisoned] = poison(arrays[poisoned], seed)
    return arrays["input"], arrays["weight"], arrays["grad_output"]


@pytest.mark.parametrize("poisoned", ["input", "weight"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_forward_patterns_match_direct(case: ConvCase, poisoned: str) -> None:
    x, w, _ = operands(case, poisoned, seed=len(case.id))
    with np.errstate(invalid="ignore", over="ignore"):
        expected = cl.conv(x, w, **case.kwargs(), algorithm="direct")
        for algorithm in (*SUMMING, "auto", "measure"):
            if algorithm in ("auto", "measure") or runs(case, algorithm):
                assert_same_pattern(cl.conv(x, w, **case.kwargs(), algorithm=algorithm), expected)


@pytest.mark.parametrize("poisoned", ["weight", "grad_output"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_input_gradient_patterns_match_scatter_and_torch(case: ConvCase, poisoned: str) -> None:
    x, w, g = operands(case, poisoned, seed=len(case.id) + 1)
    params = dict(case.kwargs(), input_size=x.shape, weight=w, grad_output=g)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = cl.grad.conv_input(**params, algorithm="scatter")
        assert_same_pattern(cl.grad.conv_input(**params), expected)
        symmetric = all(low == high for low, high in case.padding_pairs)
        if case.padding_mode == "zeros" and symmetric and case.batched:
            xt = torch.zeros(x.shape, dtype=torch.float64, requires_grad=True)
            conv = getattr(torch.nn.functional, f"conv{case.rank}d")
            conv(xt, torch.from_numpy(w), stride=case.strides, padding=tuple(low for low, _ in case.padding_pairs),
                 dilation=case.dilations, groups=case.groups).backward(torch.from_numpy(g))
            assert_same_pattern(expected, xt.grad.numpy())


@pytest.mark.parametrize("poisoned", ["input", "grad_output"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_weight_gradient_patterns_match_im2col(case: ConvCase, poisoned: str) -> None:
    x, w, g = operands(case, poisoned, seed=len(case.id) + 2)
    params = dict(case.kwargs(), input=x, weight_size=w.shape, grad_output=g)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = cl.grad.conv_weight(**params, algorithm="im2col")
        for algorithm in ("auto", "gemm", "conv") + (("folded",) if runs(case, "folded") else ()):
            assert_same_pattern(cl.grad.conv_weight(**params, algorithm=algorithm), expected)


def test_the_algorithms_that_mix_outputs_say_so() -> None:
    assert set(MIXING) == {"fft", "winograd2", "winograd3", "winograd4", "space_to_batch"}
    assert planner.DataTraits(finite=False).why_not_mixing() is not None
    assert planner.DataTraits(fft_error=10 * planner.FFT_ERROR_BOUND).why_not_mixing() is not None
    assert planner.DataTraits().why_not_mixing() is None


# -- the cases the issue measured ------------------------------------------------------------------------------


def test_inf_in_the_weight_keeps_the_default_input_gradient_exact() -> None:
    w = np.array([[[1.0, np.inf]]])
    expected = [[[1.0, np.inf, np.inf, np.inf]]]  # PyTorch's, and "scatter"'s
    np.testing.assert_array_equal(cl.grad.conv1d_input((1, 1, 4), w, np.ones((1, 1, 3))), expected)
    np.testing.assert_array_equal(cl.conv_transpose1d(np.ones((1, 1, 3)), w), expected)
    _, pullback = cl.vjp(cl.conv1d, np.ones((1, 1, 4)), w)
    np.testing.assert_array_equal(pullback(np.ones((1, 1, 3)))[0], expected)
    assert planner.input_grad_formulation(cl.spec.conv_spec((1, 1, 4), (1, 1, 2)), False)[0] == "scatter"


def test_nn_backward_through_an_inf_weight_matches_torch() -> None:
    from convolab import nn

    layer = nn.Conv1d(1, 1, 2, bias=False)
    layer.weight.data[...] = [[[1.0, np.inf]]]
    with np.errstate(invalid="ignore"):  # NumPy reports the inf the products meet
        layer(np.ones((1, 1, 4), np.float32))
        grad_input = layer.backward(np.ones((1, 1, 3), np.float32))
    np.testing.assert_array_equal(grad_input, [[[1.0, np.inf, np.inf, np.inf]]])


def test_measure_does_not_reuse_a_winner_timed_on_finite_data() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.random((1, 1, 128, 128)), rng.random((1, 1, 15, 15))
    cl.conv2d(x, w, algorithm="measure")  # remembers a winner for finite data (often the FFT)
    x[0, 0, 64, 64] = np.inf
    with np.errstate(invalid="ignore"):
        expected = cl.conv2d(x, w, algorithm="direct")
        assert_same_pattern(cl.conv2d(x, w, algorithm="measure"), expected)
    assert np.isnan(expected).sum() == 0


@pytest.mark.parametrize("operand", ["input", "weight"])
def test_auto_keeps_the_fft_from_an_inf_in_either_operand(operand: str) -> None:
    rng = np.random.default_rng(1)
    x, w = rng.random((1, 1, 128, 128)), rng.random((1, 1, 15, 15))
    assert cl.plan(x.shape, w.shape, x.dtype).algorithm == "fft"  # what finite data of these shapes get
    (x if operand == "input" else w)[0, 0, 7, 7] = np.inf
    with np.errstate(invalid="ignore"):
        got, expected = cl.conv2d(x, w), cl.conv2d(x, w, algorithm="direct")
    assert_same_pattern(got, expected)
    assert np.isnan(got).sum() == 0


def test_auto_keeps_the_fft_from_data_whose_range_it_would_round_away() -> None:
    rng = np.random.default_rng(2)
    x = rng.random((1, 1, 512, 512)).astype(np.float32)
    w = rng.random((1, 1, 31, 31)).astype(np.float32)
    assert cl.plan(x.shape, w.shape, x.dtype).algorithm == "fft"
    x[0, 0, 10, 10] = 1e9
    got = cl.conv2d(x, w)
    exact = cl.conv2d(x.astype(np.float64), w.astype(np.float64))
    terms = cl.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64))
    assert (np.abs(got - exact) / terms).max() < 1e-5  # the FFT in float32 was 46% off where the spike isn't read
    # Ordinary data of the same shapes still get the FFT, within the documented bound.
    x[0, 0, 10, 10] = 0.5
    traits = planner.data_traits(x, w, transform_length=transform_length(cl.spec.conv_spec(x.shape, w.shape)))
    assert traits.fft_error <= planner.FFT_ERROR_BOUND
    got = cl.conv2d(x, w)
    terms = cl.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64))
    assert (np.abs(got - cl.conv2d(x.astype(np.float64), w.astype(np.float64))) / terms).max() < 1e-5
