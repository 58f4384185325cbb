"""The compiled weight gradient (:mod:`convolab.algorithms._kernels_wgrad`, compiled's own pass: the dot products and
the register tiles), against the NumPy path it replaces (im2col's product), against PyTorch, and the planner's
choice of it.

Tolerance. Each filter tap's sum over the batch and positions is taken in
another order than im2col's product (four-wide vector sums, or one sum per
lane position after position, in slots of samples and runs added at the end),
so the two are compared within the bound of any summation order of the same
``N * prod(output_size)`` terms (``test_compiled.summation_bound``), and with
PyTorch to the dtype's rounding.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convolab as cl
from convolab import planner
from convolab.algorithms import ALGORITHMS
from convolab.algorithms import _wgrad_compiled
from conv_cases import generate_cases
from test_compiled import assert_within, summation_bound
from test_depthwise import assert_like_torch, batched, spec_of

#: Generated cases of every rank, padding kind and mode (strides, dilations, groups, empty batches, unbatched),
#: every third one made strided along every axis.
CASES = [dataclasses.replace(case, stride=2) if index % 3 == 0 else case
         for index, case in enumerate(generate_cases(40, seed=173))]
DTYPES = [np.float32, np.float64]
#: A 3-channel stem (stride 2) and a small DCGAN-like strided layer: taps (27, 48) and channels (5) that are not
#: all multiples of the kernel's blocks of four.
STEM = ((2, 3, 30, 28), (5, 3, 3, 3), dict(stride=2, padding=1))
DECODER = ((2, 3, 18, 18), (8, 3, 4, 4), dict(stride=2, padding=1))
#: Layers with enough output channels per group for the register tiles (a tile is 32 channels: 20 and 40 leave
#: part of one empty), strided, dilated, asymmetrically padded, grouped, 1-d to 3-d.
TILED = [((2, 6, 11, 13), (40, 6, 3, 3), dict(padding=((1, 2), (0, 1)))),
         ((3, 4, 17, 15), (20, 4, 3, 2), dict(stride=2, dilation=(2, 1), padding=1)),
         ((2, 8, 9, 10), (40, 4, 3, 3), dict(groups=2, padding=1)),
         ((2, 3, 30), (33, 3, 5), dict(stride=3, padding=((2, 1),), dilation=2)),
         ((2, 5, 4, 7, 6), (16, 5, 2, 3, 3), dict(padding=(1, 0, 1), stride=(1, 2, 1)))]
#: Rows of at least sixteen output positions, which the tiled kernel transposes in squares of sixteen channels by
#: sixteen positions (:func:`._kernels_wgrad._transpose_square`): 37 and 35 positions (two squares and a few
#: left), 48 and 70 channels (a tile of 16 channels, one square wide, and one of 6, too few for a square).
SQUARES = [((2, 3, 6, 37), (48, 3, 3, 3), dict(padding=1)),
           ((2, 2, 5, 72), (70, 2, 2, 3), dict(stride=(1, 2), dilation=(2, 1), padding=((0, 1), (2, 0))))]


def draw(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def within_any_order(actual, x, g, weight_shape, **kwargs):
    """``actual`` is the weight gradient up to the summation order (im2col's, bounded from its float64 terms)."""
    f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    terms = g.shape[0] * int(np.prod(g.shape[2:]))
    reference = cl.grad.conv_weight(x, weight_shape, g, **kwargs, algorithm="im2col")
    assert_within(actual, reference, summation_bound(terms, cl.grad.conv_weight(f64(x), weight_shape, f64(g), **kwargs,
                                                                              algorithm="im2col"), x.dtype))


@pytest.mark.parametrize("kernel_name, wrapper_name", [("TAP_BLOCK", "WGRAD_TAP_BLOCK"), ("LANES", "WGRAD_LANES")])
def test_the_wrapper_lays_out_the_blocks_its_kernel_loops_over(kernel_name, wrapper_name):
    # the wrapper repeats the kernel's block sizes so that planning never imports Numba; a layout made for other
    # sizes than the kernel's loops would be read wrongly, not refused
    from convolab.algorithms import _wgrad_compiled
    from convolab.algorithms._compiled import kernels

    assert getattr(_wgrad_compiled, wrapper_name) == getattr(kernels("wgrad"), kernel_name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_against_im2col_and_torch(case, dtype):
    spec = spec_of(case)
    x, w, _ = case.arrays(dtype)
    g = draw(case.output_shape, dtype, 2)
    grad_weight = ALGORITHMS["compiled"].weight_grad(batched(case, x), batched(case, g), spec)
    assert grad_weight.shape == spec.weight_shape and grad_weight.dtype == dtype
    within_any_order(grad_weight, batched(case, x), batched(case, g), w.shape, **case.kwargs())
    if case.batch > 0:
        kwargs = case.kwargs()
        passes = (cl.conv(x, w, **kwargs, algorithm="direct"), cl.grad.conv_input(x.shape, w, g, **kwargs),
                  grad_weight)
        assert_like_torch(case, x, w, g, passes)


@pytest.mark.parametrize("shapes", [STEM, DECODER, ((3, 8, 6, 7, 5), (6, 4, 2, 3, 3), dict(padding=(1, 0, 2),
                                                                                           groups=2)),
                                    ((2, 5, 40), (7, 5, 4), dict(stride=3, padding=2, dilation=2))],
                         ids=["stem", "decoder", "3d-groups", "1d"])
def test_threads_and_views_give_the_same_sums(shapes):
    """Non-contiguous, read-only input; one thread or two (other slots: the same sums in another order, within
    the bound); two threads twice give the same bits (slots are summed in a fixed order)."""
    input_shape, weight_shape, params = shapes
    rng = np.random.default_rng(5)
    x = rng.standard_normal((*input_shape[:-1], 2 * input_shape[-1]))[..., ::2]  # every other column: a view
    x.flags.writeable = False
    spec = cl.conv_spec(x.shape, weight_shape, **params)
    g = rng.standard_normal(spec.output_shape)
    with cl.thread_count(1):
        one = ALGORITHMS["compiled"].weight_grad(x, g, spec)
    with cl.thread_count(2):
        two = ALGORITHMS["compiled"].weight_grad(x, g, spec)
        again = ALGORITHMS["compiled"].weight_grad(x, g, spec)
    np.testing.assert_array_equal(two, again)
    within_any_order(one, x, g, weight_shape, **params)
    within_any_order(two, x, g, weight_shape, **params)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("kernel, shapes", [("dots", STEM), ("tiled", TILED[1])])
def test_an_inf_or_nan_in_the_input_reaches_only_the_taps_that_read_it(value, kernel, shapes):
    """The direct sum's pattern: the wide rows' extra columns (zero gradient) never meet the input's inf."""
    input_shape, weight_shape, params = shapes
    x = draw(input_shape, np.float64, 6)
    x[1, 2, 7, -1] = value  # the last column: wide rows would read it past a row's end
    x[0, 0, 0, 3] = value
    spec = cl.conv_spec(x.shape, weight_shape, **params)
    g = draw(spec.output_shape, np.float64, 7)
    with np.errstate(invalid="ignore"):
        actual = getattr(_wgrad_compiled, f"{kernel}_weight_grad")(x, g, spec)
        expected = cl.grad.conv_weight(x, weight_shape, g, **params, algorithm="im2col")
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-10, atol=1e-10)


def test_empty_batch_and_no_channels():
    spec = cl.conv_spec((0, 3, 9, 9), (4, 3, 3, 3), stride=2)
    assert not ALGORITHMS["compiled"].weight_grad(np.ones((0, 3, 9, 9)), np.ones(spec.output_shape), spec).any()
    assert cl.grad.conv2d_weight(np.ones((0, 3, 9, 9)), (4, 3, 3, 3), np.ones(spec.output_shape), stride=2).shape == (
        4, 3, 3, 3)


def test_auto_takes_it_where_its_estimate_beats_gemms():
    """A 3-channel stem at stride 2 (ImageNet's size) gets compiled's pass under a gemm forward, with the
    estimates in its reason, and under its own (tiled) forward; a deep ResNet 3x3 layer (7x7 positions, 512
    channels: measured 5x slower than gemm's) keeps gemm's, under compiled's forward too; and the public op runs
    what the plan says."""
    stem = cl.plan((8, 3, 224, 224), (32, 3, 3, 3), "float32", stride=2, padding=1)
    assert stem.weight_grad.method == "compiled", str(stem)
    under_gemm = planner._choose_pass("weight_grad", cl.conv_spec((8, 3, 224, 224), (32, 3, 3, 3), stride=2,
                                                                  padding=1), np.dtype(np.float32), "auto", "gemm",
                                      True)
    assert under_gemm.method == "compiled", under_gemm
    assert "estimated" in under_gemm.reason and "faster than gemm's" in under_gemm.reason
    seconds = ALGORITHMS["compiled"].pass_estimate("weight_grad", cl.conv_spec((8, 3, 224, 224), (32, 3, 3, 3),
                                                                               stride=2, padding=1),
                                                   np.dtype(np.float32))
    assert 0 < seconds < ALGORITHMS["gemm"].pass_estimate(
        "weight_grad", cl.conv_spec((8, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1), np.dtype(np.float32))
    resnet = cl.plan((8, 512, 7, 7), (512, 512, 3, 3), "float32", padding=1)
    assert resnet.weight_grad.method == "gemm", str(resnet)
    under_compiled = planner._choose_pass("weight_grad", cl.conv_spec((8, 512, 7, 7), (512, 512, 3, 3), padding=1),
                                          np.dtype(np.float32), "auto", "compiled", True)
    assert under_compiled.method == "gemm" and "gemm's pass estimated" in under_compiled.reason, under_compiled
    input_shape, weight_shape, params = STEM
    assert cl.plan(input_shape, weight_shape, "float32", **params).weight_grad.method == "compiled"
    x = draw(input_shape, np.float32, 8)
    g = draw(cl.conv_spec(input_shape, weight_shape, **params).output_shape, np.float32, 9)
    within_any_order(cl.grad.conv2d_weight(x, weight_shape, g, **params), x, g, weight_shape, **params)


def test_gemms_pass_is_charged_beside_the_pool_as_its_forward_is():
    """On two threads gemm's weight gradient (the pool's unroll, the BLAS's product) is charged its forward's
    beside-pool factor, so a stride-2 layer of 14x14 outputs, at parity with compiled's pass on one thread,
    takes compiled's on two (session 13); a 1x1 kernel's pass, which unrolls nothing, is not charged."""
    strided = cl.conv_spec((8, 128, 28, 28), (256, 128, 3, 3), stride=2, padding=1)
    pointwise = cl.conv_spec((8, 256, 28, 28), (512, 256, 1, 1))
    gemm, f32 = ALGORITHMS["gemm"], np.dtype(np.float32)
    with cl.thread_count(1):
        one = {spec: gemm.pass_estimate("weight_grad", spec, f32) for spec in (strided, pointwise)}
        assert planner.pass_for("weight_grad", strided, f32).method == "gemm"
    with cl.thread_count(2):
        assert gemm.pass_estimate("weight_grad", strided, f32) > 1.2 * one[strided]
        assert gemm.pass_estimate("weight_grad", pointwise, f32) == one[pointwise]
        chosen = planner.pass_for("weight_grad", strided, f32)
        assert chosen.method == "compiled" and "faster than gemm's" in chosen.reason, chosen


def test_without_numba_auto_keeps_gemms(without_numba):
    stem = cl.plan((8, 3, 224, 224), (32, 3, 3, 3), "float32", stride=2, padding=1)
    assert stem.weight_grad.method == "gemm"
    assert ALGORITHMS["compiled"].why_not(cl.conv_spec((8, 3, 224, 224), (32, 3, 3, 3)), np.dtype(np.float32))
    assert planner.pass_for("weight_grad", cl.conv_spec(*STEM[:2], **STEM[2]), np.dtype(np.float32)).method == "gemm"


def test_integers_and_names_keep_their_passes():
    """Integer data never reach the kernel; a pass asked for by name runs as asked."""
    spec = cl.conv_spec(*STEM[:2], **STEM[2])
    assert cl.plan(*STEM[:2], "int32", **STEM[2]).weight_grad.method == "gemm"
    assert planner.pass_for("weight_grad", spec, np.dtype(np.float32), "gemm").method == "gemm"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES[:24], ids=str)
def test_tiles_against_im2col_on_generated_cases(case, dtype):
    """The register tiles on every generated case (few channels: tiles mostly zeros, every edge of the loops)."""
    spec = spec_of(case)
    x, w, _ = case.arrays(dtype)
    g = draw(case.output_shape, dtype, 3)
    grad_weight = _wgrad_compiled.tiled_weight_grad(batched(case, x), batched(case, g), spec)
    assert grad_weight.shape == spec.weight_shape and grad_weight.dtype == dtype
    within_any_order(grad_weight, batched(case, x), batched(case, g), w.shape, **case.kwargs())


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shapes", TILED + SQUARES, ids=["asymmetric", "strided-dilated", "groups", "1d", "3d",
                                                         "squares-48-channels", "squares-70-channels-strided"])
def test_tiles_against_im2col_and_torch(shapes, dtype):
    """Non-contiguous input; one thread and two give the sums within the bound, and like PyTorch's; rows of
    sixteen positions and more transposed a square at a time, the rest a value at a time."""
    torch = pytest.importorskip("torch")
    input_shape, weight_shape, params = shapes
    rng = np.random.default_rng(11)
    x = rng.standard_normal((*input_shape[:-1], 2 * input_shape[-1])).astype(dtype)[..., ::2]  # a view
    spec = cl.conv_spec(x.shape, weight_shape, **params)
    g = rng.standard_normal(spec.output_shape).astype(dtype)
    for threads in (1, 2):
        with cl.thread_count(threads):
            grad_weight = _wgrad_compiled.tiled_weight_grad(x, g, spec)
        within_any_order(grad_weight, x, g, weight_shape, **params)
    conv_weight = getattr(torch.nn.grad, f"conv{spec.rank}d_weight")
    padded = np.pad(x, ((0, 0), (0, 0), *spec.padding))  # PyTorch pads both sides alike: pad here instead
    expected = conv_weight(torch.from_numpy(padded), list(weight_shape), torch.from_numpy(g), spec.stride, 0,
                           spec.dilation, spec.groups).numpy()
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(grad_weight, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("kernel", ["dots", "tiled"])
def test_an_inf_only_a_wide_rows_extra_column_reads_leaves_the_sums_finite(kernel):
    """The last column of a (9-wide, stride-2, 2-tap) input is in no window, but the wide rows' extra column of
    its phase reads it: the wide pass's NaN sends the pass again over the real positions alone, which give the
    direct sum's finite values."""
    x = draw((2, 3, 6, 9), np.float64, 13)
    x[1, 2, 2, 8] = np.inf  # row 2: read by output row 1, not a run's last row
    spec = cl.conv_spec(x.shape, (32, 3, 2, 2), stride=2)
    g = draw(spec.output_shape, np.float64, 14)
    with np.errstate(invalid="ignore"):
        actual = getattr(_wgrad_compiled, f"{kernel}_weight_grad")(x, g, spec)
    expected = cl.grad.conv_weight(x, (32, 3, 2, 2), g, stride=2, algorithm="im2col")
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)


def test_tiles_on_an_empty_batch():
    spec = cl.conv_spec((0, 4, 9, 9), (32, 4, 3, 3), stride=2)
    grad_weight = _wgrad_compiled.tiled_weight_grad(np.ones((0, 4, 9, 9)), np.ones(spec.output_shape), spec)
    assert grad_weight.shape == (32, 4, 3, 3) and not grad_weight.any()


def test_compiled_runs_the_kernel_estimated_faster():
    """ResNet-18's 56x56 3x3 layer (measured 0.8x gemm's pass with the tiles, 0.9x with the dot products) gets the
    tiles, and its weight gradient under "auto"; ResNeXt's 8 channels per group (tiles mostly zeros, measured 2x
    slower) and a 3-channel output keep the dot products."""
    resnet = cl.conv_spec((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    tiled = _wgrad_compiled.tiled_weight_grad_seconds(resnet, 4)
    assert tiled < _wgrad_compiled.dots_weight_grad_seconds(resnet, 4)
    assert ALGORITHMS["compiled"].pass_estimate("weight_grad", resnet, np.dtype(np.float32)) == tiled
    assert cl.plan((8, 64, 56, 56), (64, 64, 3, 3), "float32", padding=1).weight_grad.method == "compiled"
    resnext = cl.conv_spec((8, 256, 28, 28), (256, 8, 3, 3), padding=1, groups=32)
    assert not _wgrad_compiled._takes_tiles(resnext, 4)
    assert not _wgrad_compiled._takes_tiles(resnet, 8)  # float64: the dot products
    assert ALGORITHMS["compiled"].pass_estimate("weight_grad", resnext, np.dtype(np.float32)) == \
        _wgrad_compiled.dots_weight_grad_seconds(resnext, 4)
    # DCGAN's 64 -> 3 decoder's weight gradient (a 3-channel 128x128 input, 64 output channels, 48 taps): with
    # grad_output transposed in squares the tiles measured 20-30% faster than the dot products (2.4 against 3.0 ms)
    decoder = cl.conv_spec((8, 3, 128, 128), (64, 3, 4, 4), stride=2, padding=1)
    assert _wgrad_compiled.tiled_weight_grad_seconds(decoder, 4) < _wgrad_compiled.dots_weight_grad_seconds(decoder, 4)
