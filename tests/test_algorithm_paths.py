"""Paths inside an algorithm that the generated cases are too small to reach, against the references.

gemm's batch-innermost layout (small images, large batches), the FFT's blocks (long inputs),
folded's two ways of adding its shares, and the gradients' alternative layouts.
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import fft_blocks
from convolab.algorithms._blocking import batch_inner as _batch_inner
from convolab.spec import conv_spec

CASES = [
    ((32, 16, 4, 4), (32, 16, 3, 3), dict(padding=1)),
    ((24, 6, 7, 5), (4, 3, 3, 2), dict(stride=(2, 1), padding=((1, 0), (2, 1)), groups=2)),
    ((40, 3, 9), (5, 3, 3), dict(stride=2, dilation=2, padding=2)),
    ((20, 2, 4, 5, 3), (3, 2, 2, 3, 2), dict(padding=1, stride=(1, 2, 1))),
    ((16, 4, 6, 6), (8, 4, 3, 3), dict(padding=1, padding_mode="reflect", flip=True)),
]


@pytest.mark.parametrize("numba", ["compiled", "hidden"])
@pytest.mark.parametrize("input_shape, weight_shape, params", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_inner_gemm_matches_direct_forward_and_gradients(input_shape, weight_shape, params, dtype, numba,
                                                               request):
    """Small images in large batches: NumPy's batch-inner columns (Numba hidden), or the compiled unroll's (with the
    batch innermost where there are many columns per output, else plane by plane; its products may sum in
    another order: the same tolerance)."""
    if numba == "hidden":
        request.getfixturevalue("without_numba")
    rng = np.random.default_rng(sum(input_shape))
    spec = conv_spec(input_shape, weight_shape, **params)
    padded_spec = conv_spec((spec.batch, spec.in_channels, *spec.padded_size), weight_shape,
                            stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
    assert _batch_inner(padded_spec, np.dtype(dtype).itemsize), "the case must take the batch-inner path"
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    out = cl.conv(x, w, algorithm="gemm", **params)
    np.testing.assert_allclose(out, cl.conv(x, w, algorithm="direct", **params), **tol)
    g = rng.standard_normal(out.shape).astype(dtype)
    grad_params = {k: v for k, v in params.items()}
    np.testing.assert_allclose(cl.grad.conv_weight(x, w.shape, g, algorithm="gemm", **grad_params),
                               cl.grad.conv_weight(x, w.shape, g, algorithm="im2col", **grad_params), **tol)


def test_batch_inner_is_not_taken_for_large_images_or_small_batches():
    assert not _batch_inner(conv_spec((8, 64, 58, 58), (64, 64, 3, 3)), 4)
    assert not _batch_inner(conv_spec((2, 16, 6, 6), (32, 16, 3, 3)), 4)
    assert not _batch_inner(conv_spec((32, 16, 4, 4), (32, 16, 1, 1)), 4)  # 1x1: no copy at all


FFT_CASES = [
    ((2, 3, 5000), (4, 3, 41), dict(padding=7)),
    ((1, 2, 4003), (2, 1, 33), dict(stride=3, dilation=2, groups=2, padding=((5, 11),))),
    ((1, 1, 700, 300), (1, 1, 21, 9), dict(stride=(2, 1), padding="same")),
    ((1, 2, 1200, 20, 10), (2, 2, 13, 3, 3), dict(padding_mode="circular", padding=(6, 1, 1))),
]


@pytest.mark.parametrize("input_shape, weight_shape, params", FFT_CASES)
def test_blocked_fft_matches_direct(input_shape, weight_shape, params):
    rng = np.random.default_rng(len(input_shape))
    spec = conv_spec(input_shape, weight_shape, **params)
    extent = tuple((k - 1) * d + 1 for k, d in zip(spec.kernel_size, spec.dilation))
    blocks, _ = fft_blocks(spec.padded_size, extent, spec.stride, spec.output_size)
    assert blocks[0] < spec.output_size[0], "the first axis must be cut into blocks"
    x = rng.standard_normal(input_shape)
    w = rng.standard_normal(weight_shape)
    expected = cl.conv(x, w, algorithm="direct", **params)
    np.testing.assert_allclose(cl.conv(x, w, algorithm="fft", **params), expected,
                               atol=1e-9 * np.abs(expected).max())
    xc = (x + 1j * rng.standard_normal(input_shape)).astype(np.complex128)
    np.testing.assert_allclose(cl.conv(xc, w.astype(np.complex128), algorithm="fft", **params),
                               cl.conv(xc, w.astype(np.complex128), algorithm="direct", **params), atol=1e-8)


def test_fft_blocks_keeps_short_axes_whole_and_cuts_long_ones():
    assert fft_blocks((64, 64), (5, 5), (1, 1), (60, 60)) == ((60, 60), (64, 64))
    blocks, lengths = fft_blocks((1_000_000,), (501,), (1,), (999_500,))
    assert lengths[0] < 10_000 and blocks[0] == lengths[0] - 501 + 1


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("per_sample", [True, False], ids=["per-sample", "batch-wide"])
def test_pointwise_weight_gradient_both_ways_matches_im2col(seed, per_sample, monkeypatch):
    """A 1×1 weight gradient per sample (no copies) or as one batch-wide product, against the unrolled reference."""
    from convolab.algorithms import gemm

    monkeypatch.setattr(gemm, "_per_sample_products_win", lambda spec: per_sample)
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 2]))
    channels_in, channels_out = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    x = rng.standard_normal((int(rng.integers(1, 4)), channels_in, *rng.integers(1, 7, rank)))
    kwargs = dict(stride=tuple(int(s) for s in rng.integers(1, 3, rank)), padding=int(rng.integers(0, 2)),
                  groups=groups, padding_mode=str(rng.choice(["zeros", "replicate"])))
    weight_shape = (channels_out, channels_in // groups, *([1] * rank))
    g = _random_grad_output(rng, x.shape, weight_shape, **kwargs)
    expected = cl.grad.conv_weight(x, weight_shape, g, **kwargs, algorithm="im2col")
    np.testing.assert_allclose(cl.grad.conv_weight(x, weight_shape, g, **kwargs), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_scatter_input_gradient_in_one_sample_blocks_matches_full(seed, monkeypatch):
    """The scatter input gradient adds each block's window gradients straight into its samples' rows."""
    from convolab import _engine

    monkeypatch.setattr(_engine, "CACHE_BLOCK_BYTES", 1)  # one sample per block
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    x_shape = (int(rng.integers(2, 5)), 2, *(int(n) for n in rng.integers(4, 9, rank)))
    weight = rng.standard_normal((3, 2, *(int(k) for k in rng.integers(1, 4, rank))))
    kwargs = dict(stride=tuple(int(s) for s in rng.integers(1, 4, rank)), padding=int(rng.integers(0, 2)),
                  dilation=tuple(int(d) for d in rng.integers(1, 3, rank)),
                  padding_mode=str(rng.choice(["zeros", "reflect", "circular"])))
    g = _random_grad_output(rng, x_shape, weight.shape, **kwargs)
    expected = cl.grad.conv_input(x_shape, weight, g, **kwargs, algorithm="full")
    np.testing.assert_allclose(cl.grad.conv_input(x_shape, weight, g, **kwargs, algorithm="scatter"), expected,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("transposed", [True, False], ids=["columns-g", "g-columns"])
def test_gemm_weight_gradient_in_both_product_orders_matches_im2col(seed, transposed, monkeypatch):
    """gemm's weight gradient as ``columns @ g.T`` or ``g @ columns.T``, wide, strided and batch-inner blocks."""
    from convolab.algorithms import _blocking, gemm

    monkeypatch.setattr(gemm, "TRANSPOSED_PRODUCT_MIN_POSITIONS", 0 if transposed else 10**12)
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 2]))
    batch = int(rng.choice([2, 12]))  # 12 small images: the batch-inner layout (one block)
    if batch == 2:
        monkeypatch.setattr(_blocking, "MAX_BLOCK_BYTES", 4096)  # several blocks
    x = rng.standard_normal((batch, 2 * groups, *rng.integers(3, 8, rank)))
    weight_shape = (3 * groups, 2, *(int(k) for k in rng.integers(2, 4, rank)))
    kwargs = dict(stride=tuple(int(s) for s in rng.integers(1, 3, rank)), padding=int(rng.integers(0, 2)),
                  groups=groups)
    g = _random_grad_output(rng, x.shape, weight_shape, **kwargs)
    expected = cl.grad.conv_weight(x, weight_shape, g, **kwargs, algorithm="im2col")
    np.testing.assert_allclose(cl.grad.conv_weight(x, weight_shape, g, **kwargs, algorithm="gemm"), expected,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("batch_wide", [True, False], ids=["batch-wide", "per-sample"])
def test_pointwise_forward_both_ways_matches_direct(seed, batch_wide, monkeypatch):
    """A 1×1 convolution as one batch-wide product or one per sample, strided, grouped, padded, 1-3 d."""
    from convolab.algorithms import gemm

    monkeypatch.setattr(gemm, "POINTWISE_BATCH_WIDE_POSITIONS", 10**9 if batch_wide else 0)
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 2]))
    x = rng.standard_normal((int(rng.integers(1, 4)), 2 * groups, *rng.integers(1, 7, rank)))
    w = rng.standard_normal((3 * groups, 2, *([1] * rank)))
    kwargs = dict(stride=tuple(int(s) for s in rng.integers(1, 3, rank)), padding=int(rng.integers(0, 2)),
                  groups=groups, bias=rng.standard_normal(3 * groups))
    np.testing.assert_allclose(cl.conv(x, w, **kwargs, algorithm="gemm"),
                               cl.conv(x, w, **kwargs, algorithm="direct"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("blocks", ["whole-samples", "row-chunks"])
def test_folded_in_whole_samples_and_row_chunks_matches_direct(seed, blocks, monkeypatch):
    """folded in blocks of whole samples or of a sample's rows cut into chunks (in 1-d the chunks cut the
    folded axis itself, so shares cross chunk boundaries); dilation moves the shares, strides the columns."""
    from convolab.algorithms import _blocking

    monkeypatch.setattr(_blocking, "MAX_BLOCK_BYTES", 2**20 if blocks == "whole-samples" else 64)
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 2]))
    x = rng.standard_normal((int(rng.integers(1, 4)), 2 * groups, *rng.integers(5, 10, rank)))  # fits 3 taps, dilation 2
    w = rng.standard_normal((3 * groups, 2, *rng.integers(1, 4, rank - 1), int(rng.integers(2, 4))))
    kwargs = dict(stride=(*(int(s) for s in rng.integers(1, 3, rank - 1)), 1), padding=int(rng.integers(0, 3)),
                  dilation=tuple(int(d) for d in rng.integers(1, 3, rank)), groups=groups,
                  padding_mode=str(rng.choice(["zeros", "reflect"])), bias=rng.standard_normal(3 * groups))
    np.testing.assert_allclose(cl.conv(x, w, **kwargs, algorithm="folded"),
                               cl.conv(x, w, **kwargs, algorithm="direct"), rtol=1e-10, atol=1e-12)
    kwargs.pop("bias")
    g = _random_grad_output(rng, x.shape, w.shape, **kwargs)  # the weight gradient: the fold in reverse
    np.testing.assert_allclose(cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm="folded"),
                               cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm="im2col"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("input_shape, weight_shape, folds", [
    ((2, 32, 6, 10, 10), (32, 32, 3, 3, 3), True),  # 3-d, 32 filters: copies 864 -> 384 per position
    ((2, 8, 20, 20), (8, 8, 7, 7), True),
    ((8, 64, 56, 56), (64, 64, 3, 3), False),  # ResNet 3x3: 576 -> 384, under half saved
])
def test_auto_weight_gradient_follows_a_folded_forward_where_copies_halve(input_shape, weight_shape, folds,
                                                                         without_numba):
    """Among the NumPy paths (the compiled register tiles now run these forwards faster than folded)."""
    padding = weight_shape[-1] // 2
    spec = conv_spec(input_shape, weight_shape, padding=padding)
    assert cl.plan(input_shape, weight_shape, "float32", padding=padding).algorithm == "folded"
    # The planner decides it now: the plan's weight-gradient pass (was _conv._folds_weight_grad).
    weight_pass = cl.plan(input_shape, weight_shape, "float32", padding=padding).weight_grad.method
    assert weight_pass == ("folded" if folds else "gemm")
    rng = np.random.default_rng(7)
    x = rng.standard_normal(input_shape).astype(np.float32)
    g = rng.standard_normal(spec.output_shape).astype(np.float32)
    np.testing.assert_allclose(cl.grad.conv_weight(x, weight_shape, g, padding=padding),
                               cl.grad.conv_weight(x.astype(np.float64), weight_shape, g.astype(np.float64),
                                                   padding=padding, algorithm="im2col"), rtol=2e-4, atol=2e-3)


@pytest.mark.parametrize("algorithm", ["folded", "gemm", "auto"])
@pytest.mark.parametrize("shape, weight_shape, where", [
    ((1, 1, 8), (1, 1, 3), (0, 0, 0)),
    ((1, 1, 6, 6), (1, 1, 3, 3), (0, 0, 2, 0)),
    ((1, 1, 8, 40), (1, 1, 3, 3), (0, 0, 3, 0)),  # gemm's wide rows
    ((2, 16, 16, 16, 16), (16, 16, 3, 3, 3), (0, 0, 5, 5, 0)),  # auto picks folded here
])
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_weight_gradient_keeps_a_non_finite_input_where_im2col_puts_it(shape, weight_shape, where, value, algorithm):
    """Wide and folded products give cells no window reads a zero gradient; 0 * inf must not leak into other taps."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    x[where] = value
    padding = 1 if len(shape) > 3 else 0
    g = rng.standard_normal(cl.conv(np.zeros(shape, np.float32), np.ones(weight_shape, np.float32),
                                    padding=padding).shape).astype(np.float32)
    expected = cl.grad.conv_weight(x, weight_shape, g, padding=padding, algorithm="im2col")
    got = cl.grad.conv_weight(x, weight_shape, g, padding=padding, algorithm=algorithm)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape, weight_shape, padding, algorithm", [
    *((shape, weight_shape, padding, algorithm) for algorithm in ("gemm", "folded", "auto")
      for shape, weight_shape, padding in [((2, 0, 6, 6), (3, 0, 3, 3), 0), ((2, 0, 40, 40), (3, 0, 3, 3), 1),
                                           ((2, 0, 5), (3, 0, 3), 0)]),
    # 1x1 (folded refuses a 1-tap axis): per sample, and batch-wide on small images
    *((shape, (3, 0, 1, 1), 0, algorithm) for algorithm in ("gemm", "auto") for shape in [(2, 0, 16, 16), (3, 0, 4, 4)]),
    # row_shifts (2-d and 3-d; it refuses 1-d)
    ((2, 0, 6, 6), (3, 0, 3, 3), 1, "row_shifts"), ((2, 0, 4, 5, 6), (3, 0, 3, 3, 3), 1, "row_shifts"),
])
def test_zero_input_channels_give_zeros(shape, weight_shape, padding, algorithm):
    out = cl.conv(np.zeros(shape), np.zeros(weight_shape), padding=padding, algorithm=algorithm)
    np.testing.assert_array_equal(out, cl.conv(np.zeros(shape), np.zeros(weight_shape), padding=padding,
                                               algorithm="direct"))
    assert cl.plan(shape, weight_shape, padding=padding).flops == 0
    assert cl.plan((2, 3, *shape[2:]), (0, 3, *weight_shape[2:]), padding=padding).flops == 0  # no filters


def test_folded_refusals():
    x, w = np.ones((1, 1, 6, 6)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match="stride 1 along the last axis.*folded"):
        cl.conv2d(x, w, stride=(1, 2), algorithm="folded")
    with pytest.raises(ValueError, match="one tap along the last axis.*folded"):
        cl.conv2d(x, np.ones((1, 1, 3, 1)), algorithm="folded")
    np.testing.assert_array_equal(cl.conv2d(x, w, stride=(2, 1), algorithm="folded"), np.full((1, 1, 2, 4), 9.0))
    with pytest.raises(ValueError, match="stride 1 along the last axis.*folded"):
        cl.grad.conv2d_weight(x, w.shape, np.ones((1, 1, 4, 2)), stride=(1, 2), algorithm="folded")


def _random_grad_output(rng: np.random.Generator, x_shape, weight_shape, **kwargs) -> np.ndarray:
    """A random ``grad_output`` of the shape the convolution ``kwargs`` give ``x_shape`` and ``weight_shape``."""
    return rng.standard_normal(cl.conv(np.zeros(x_shape), np.ones(weight_shape), **kwargs).shape)
