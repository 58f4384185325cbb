"""The "phases" input gradient: each stride phase of the input a stride-1 forward convolution of grad_output.

Oracles: the direct sum, written here tap by tap (every window's gradient added
where it was read: only real products), and PyTorch's input gradient and
conv_transpose. The phases' products run through the forward planner (gemm,
compiled, packed...), which sums in another order than the oracle: compared
within the bound of any summation order (as in test_compiled.py); integers
exactly.
"""

from __future__ import annotations

import functools
from math import prod

import numpy as np
import pytest

import convolab as cl
from convolab import _engine, _grad_problems, planner, transposed
from test_compiled import assert_within, summation_bound

DTYPES = [np.float32, np.float64]


def draw(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def direct_input_grad(x_shape, weight, grad_output, stride, padding, dilation, groups):
    """The input gradient of a zero-padded correlation, tap by tap, in float64: each tap's products added onto
    the padded cells that tap read, then the padding cropped."""
    rank = weight.ndim - 2
    n, c_in = x_shape[:2]
    o = weight.shape[0] // groups
    padded = np.zeros((n, c_in, *(size + low + high for size, (low, high) in zip(x_shape[2:], padding))))
    outputs = grad_output.shape[2:]
    g = grad_output.astype(np.float64).reshape(n, groups, o, *outputs)
    k = weight.astype(np.float64).reshape(groups, o, c_in // groups, *weight.shape[2:])
    for tap in np.ndindex(*weight.shape[2:]):
        cells = tuple(slice(j * d, j * d + (p - 1) * s + 1, s) for j, d, p, s in zip(tap, dilation, outputs, stride))
        product = np.einsum("ngo...,goc->ngc...", g, k[(Ellipsis, *tap)])  # (N, G, C, *out)
        padded[(slice(None), slice(None), *cells)] += product.reshape(n, c_in, *outputs)
    return padded[(Ellipsis, *(slice(low, low + size) for size, (low, _) in zip(x_shape[2:], padding)))]


#: (input shape, weight shape, stride, padding as (low, high) pairs, dilation, groups): 1-, 2- and 3-d, DCGAN's
#: 4x4 stride 2, U-Net's 2x2 stride 2 (no col2im at all), 3x3 stride 2, strides that do not divide the input,
#: kernels shorter than the stride (phases without taps), asymmetric padding, dilation and groups.
CASES = [
    ((2, 3, 9), (4, 3, 3), (2,), ((1, 1),), (1,), 1),
    ((2, 3, 17), (4, 3, 5), (3,), ((2, 0),), (2,), 1),
    ((2, 4, 10), (6, 2, 1), (3,), ((0, 0),), (1,), 2),
    ((3, 6, 8, 8), (5, 6, 4, 4), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 6, 8, 8), (5, 6, 2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),
    ((2, 4, 9, 7), (6, 4, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 4, 11, 10), (6, 2, 3, 2), (2, 3), ((1, 0), (2, 1)), (2, 1), 2),
    ((1, 3, 9, 9), (2, 3, 2, 3), (3, 4), ((0, 1), (0, 0)), (1, 2), 1),
    ((1, 4, 6, 12), (4, 4, 3, 3), (2, 4), ((2, 2), (1, 3)), (3, 2), 1),
    ((2, 4, 5, 6, 7), (3, 4, 3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1)), (1, 1, 1), 1),
    ((1, 2, 7, 6, 5), (3, 2, 2, 3, 1), (2, 3, 2), ((0, 1), (1, 0), (0, 0)), (2, 1, 1), 1),
]


def case_id(case):
    return f"x{case[0]}-w{case[1]}-s{case[2]}-p{case[3]}-d{case[4]}-g{case[5]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_phases_match_the_direct_sum_and_torch(case, dtype):
    x_shape, w_shape, stride, padding, dilation, groups = case
    weight = draw(w_shape, dtype, 1)
    spec = cl.conv_spec(x_shape, w_shape, stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad_output = draw(spec.output_shape, dtype, 2)
    got = cl.grad.conv_input(x_shape, weight, grad_output, stride=stride, padding=padding, dilation=dilation,
                             groups=groups, algorithm="phases")
    expected = direct_input_grad(x_shape, weight, grad_output, stride, padding, dilation, groups)
    terms = spec.out_channels_per_group * prod(w_shape[2:])
    bound = summation_bound(terms, np.abs(grad_output).max() * np.abs(weight).max(), dtype)
    assert_within(got, expected.astype(dtype), bound + float(np.finfo(dtype).eps) * np.abs(expected))
    torch = pytest.importorskip("torch")
    if all(low == high for low, high in padding):  # PyTorch's padding is symmetric
        input_grad = getattr(torch.nn.grad, f"conv{len(stride)}d_input")
        want = input_grad(x_shape, torch.from_numpy(weight), torch.from_numpy(grad_output), stride=stride,
                          padding=[low for low, _ in padding], dilation=dilation, groups=groups).numpy()
        assert_within(got, want, 2 * bound)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("output_padding", [0, 1])
def test_conv_transpose_by_phases_matches_torch(rank, output_padding, dtype, monkeypatch):
    """conv_transpose's forward (the input gradient it is) run by the phases: 4-tap stride-2 kernels as in
    DCGAN's decoder, with and without output_padding, grouped, on a non-contiguous input."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(transposed, "conv_input_grad", functools.partial(_engine.conv_input_grad,
                                                                         algorithm="phases"))
    x = draw((2, 6, *([5, 4, 3][:rank])), dtype, 3).swapaxes(0, 1).copy().swapaxes(0, 1)[:, ::-1]
    assert not x.flags.c_contiguous
    weight = draw((6, 2, *([4, 3, 4][:rank])), dtype, 4)
    got = cl.conv_transpose(x, weight, stride=2, padding=1, output_padding=output_padding, groups=2)
    op = getattr(torch.nn.functional, f"conv_transpose{rank}d")
    want = op(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(weight), stride=2, padding=1,
              output_padding=output_padding, groups=2).numpy()
    bound = summation_bound(3 * 4**rank, np.abs(x).max() * np.abs(weight).max(), dtype)
    assert_within(got, want, 2 * bound)


def test_empty_batch_and_no_filters():
    weight = draw((4, 3, 4, 4), np.float32, 5)
    empty = cl.grad.conv2d_input((0, 3, 8, 8), weight, np.zeros((0, 4, 4, 4), np.float32), stride=2, padding=1,
                                 algorithm="phases")
    assert empty.shape == (0, 3, 8, 8) and empty.dtype == np.float32
    no_filters = cl.grad.conv2d_input((2, 3, 8, 8), weight[:0], np.zeros((2, 0, 4, 4), np.float32), stride=2,
                                      padding=1, algorithm="phases")
    np.testing.assert_array_equal(no_filters, np.zeros((2, 3, 8, 8), np.float32))


def test_a_kernel_shorter_than_the_stride_leaves_zeros():
    """1 tap at stride 3: two of every three cells are read by no window, and get exactly zero."""
    weight, grad_output = np.full((1, 1, 1), 2.0), np.arange(1.0, 5.0).reshape(1, 1, 4)
    grad = cl.grad.conv1d_input((1, 1, 11), weight, grad_output, stride=3, algorithm="phases")
    np.testing.assert_array_equal(grad[0, 0], [2, 0, 0, 4, 0, 0, 6, 0, 0, 8, 0])


def test_inf_and_nan_in_grad_output_reach_only_the_cells_their_windows_read():
    """An inf and a NaN in grad_output: the phases' products are real products (plus padding zeros times a
    finite weight), so the non-finite pattern is the direct sum's."""
    weight = draw((4, 3, 4, 4), np.float64, 6)
    grad_output = draw((2, 4, 4, 4), np.float64, 7)
    grad_output[0, 1, 2, 3], grad_output[1, 0, 0, 0] = np.inf, np.nan
    got = cl.grad.conv2d_input((2, 3, 8, 8), weight, grad_output, stride=2, padding=1, algorithm="phases")
    expected = direct_input_grad((2, 3, 8, 8), weight, grad_output, (2, 2), ((1, 1), (1, 1)), (1, 1), 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_auto_keeps_the_scatter_for_a_weight_with_inf():
    """The phases' padding zeros would meet the weight: with an inf in it, "auto" runs the scatter, whose
    pattern is the direct sum's (a NaN only where an inf met a zero of grad_output)."""
    spec = cl.conv_spec((8, 128, 32, 32), (256, 128, 4, 4), stride=2, padding=1)
    assert planner.pass_for("input_grad", spec, np.dtype(np.float32), finite=False).method == "scatter"
    weight = draw((4, 3, 4, 4), np.float64, 8)
    weight[1, 2, 0, 0] = np.inf
    grad_output = draw((1, 4, 4, 4), np.float64, 9)
    got = cl.grad.conv2d_input((1, 3, 8, 8), weight, grad_output, stride=2, padding=1)
    expected = direct_input_grad((1, 3, 8, 8), weight, grad_output, (2, 2), ((1, 1), (1, 1)), (1, 1), 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))


def test_phase_problems_split_the_taps():
    """DCGAN's 4x4 stride 2 padding 1: four phases of 2x2 taps, together every tap once, each a stride-1
    problem with the original FLOPs split four ways."""
    spec = cl.conv_spec((8, 128, 32, 32), (256, 128, 4, 4), stride=2, padding=1)
    phases = _grad_problems.phase_problems(spec)
    assert sorted(phase.residue for phase in phases) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted((a, b) for phase in phases for a in phase.taps[0] for b in phase.taps[1]) == \
        [(a, b) for a in range(4) for b in range(4)]
    assert all(phase.spec.stride == (1, 1) and phase.spec.kernel_size == (2, 2) for phase in phases)
    assert sum(phase.spec.flops for phase in phases) == spec.flops
