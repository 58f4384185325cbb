"""Shape arithmetic against brute force: enumerated window positions and real outputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import convolab as cl
from convolab import shapes

SIZES = range(1, 9)
KERNELS = range(1, 5)
STRIDES = range(1, 4)
DILATIONS = range(1, 4)
PADS = range(0, 3)


@pytest.fixture
def torch():
    """PyTorch, for the tests that check against it; each of them skips where it is not installed."""
    return pytest.importorskip("torch")


def window_starts(padded: int, kernel: int, stride: int, dilation: int) -> list[int]:
    """Every start position, by enumeration, whose dilated window lies inside ``padded`` samples."""
    extent = dilation * (kernel - 1) + 1
    return [start for start in range(0, padded, stride) if start + extent <= padded]


def read_positions(padded: int, kernel: int, stride: int, dilation: int) -> set[int]:
    """Every padded-coordinate position some window reads."""
    return {start + tap * dilation for start in window_starts(padded, kernel, stride, dilation) for tap in range(kernel)}


def grid():
    return itertools.product(SIZES, KERNELS, STRIDES, DILATIONS, PADS, PADS)


def test_dilated_kernel_size():
    for k, d in itertools.product(KERNELS, DILATIONS):
        taps = [j * d for j in range(k)]
        assert shapes.dilated_kernel_size(k, d) == taps[-1] - taps[0] + 1


def test_conv_output_size_counts_window_positions():
    checked = 0
    for i, k, s, d, lo, hi in grid():
        padded = i + lo + hi
        starts = window_starts(padded, k, s, d)
        if not starts:
            with pytest.raises(ValueError, match="larger than the padded input"):
                shapes.conv_output_size(i, k, s, (lo, hi), d)
            continue
        assert shapes.conv_output_size(i, k, s, (lo, hi), d) == len(starts), (i, k, s, d, lo, hi)
        checked += 1
    assert checked > 1000


def test_conv_output_size_matches_real_outputs():
    """The formula agrees with the length of an actual cl.conv1d output."""
    for i, k, s, d, lo, hi in itertools.product(range(1, 7), range(1, 4), range(1, 3), range(1, 3), range(3), range(3)):
        if i + lo + hi < d * (k - 1) + 1:
            continue
        out = cl.conv1d(np.zeros((1, 1, i)), np.zeros((1, 1, k)), stride=s, padding=((lo, hi),), dilation=d)
        assert out.shape[-1] == shapes.conv_output_size(i, k, s, (lo, hi), d)


def test_conv_output_size_default_arguments():
    assert shapes.conv_output_size(7, 3) == 5
    assert shapes.conv_output_size(5, 5) == 1
    assert cl.conv_output_size(224, 7, stride=2, padding=(3, 3)) == 112


def test_same_padding_gives_ceil_outputs_with_odd_unit_high():
    for i, k, s, d in itertools.product(range(1, 13), range(1, 6), range(1, 5), range(1, 4)):
        low, high = shapes.same_padding(i, k, s, d)
        assert low >= 0 and high >= 0
        assert high - low in (0, 1), (i, k, s, d, low, high)  # the odd unit goes high
        out = len(window_starts(i + low + high, k, s, d))
        assert out == math.ceil(i / s), (i, k, s, d)
        # minimal: one unit less padding loses an output (unless no padding at all)
        total = low + high
        if total > 0:
            assert len(window_starts(i + total - 1, k, s, d)) < math.ceil(i / s)
        assert cl.same_padding(i, k, s, d) == (low, high)


def test_same_padding_through_conv_matches_ceil():
    for i, k, s, d in itertools.product(range(1, 8), range(1, 4), range(1, 4), range(1, 3)):
        out = cl.conv1d(np.zeros((1, 1, i)), np.zeros((1, 1, k)), stride=s, padding="same", dilation=d)
        assert out.shape == (1, 1, math.ceil(i / s))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_at_stride_one_is_pytorchs(torch):
    for i, k, d in itertools.product(range(1, 8), range(1, 5), range(1, 3)):
        x = torch.arange(float(i)).reshape(1, 1, i)
        w = torch.arange(1.0, k + 1).reshape(1, 1, k)
        expected = torch.nn.functional.conv1d(x, w, padding="same", dilation=d).numpy()
        got = cl.conv1d(x.numpy().astype(np.float32), w.numpy().astype(np.float32), padding="same", dilation=d)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_full_padding_reaches_every_partial_overlap():
    for k, d in itertools.product(KERNELS, DILATIONS):
        low, high = shapes.full_padding(k, d)
        extent = d * (k - 1) + 1
        assert (low, high) == (extent - 1, extent - 1)
        for i in range(1, 7):
            # window starts in input coordinates: from extent-1 before the input to its last sample
            starts = [start - low for start in window_starts(i + low + high, k, 1, d)]
            assert starts == list(range(-(extent - 1), i))
            # so every placement whose taps overlap the input at all is among them
            touching = {j for j in range(-3 * extent, i + 3 * extent) if any(0 <= j + t * d < i for t in range(k))}
            assert touching <= set(starts)


def test_full_padding_matches_numpy_full_convolution():
    rng = np.random.default_rng(0)
    for i, k in itertools.product(range(1, 7), range(1, 5)):
        a = rng.integers(-5, 6, size=i)
        v = rng.integers(-5, 6, size=k)
        out = cl.conv1d(a[None, None], v[None, None], padding="full", flip=True)
        assert out[0, 0].tolist() == np.convolve(a, v, mode="full").tolist()


def test_unread_input_count_matches_enumeration():
    checked, mismatches = 0, []
    for i, k, s, d, lo, hi in grid():
        padded = i + lo + hi
        if not window_starts(padded, k, s, d):
            continue
        read = read_positions(padded, k, s, d)
        last_read = max(read)
        # input samples (input index j sits at padded position j + lo) after the last position any window reads
        trailing = sum(1 for j in range(i) if j + lo > last_read)
        got = shapes.unread_input_count(i, k, s, (lo, hi), d)
        if got != trailing:
            mismatches.append(dict(i=i, k=k, s=s, d=d, lo=lo, hi=hi, got=got, expected=trailing))
        if d == 1 and s <= k:
            # no gaps between windows: the trailing samples are exactly the unread ones
            assert trailing == sum(1 for j in range(i) if j + lo not in read)
        checked += 1
    assert checked > 1000
    assert mismatches == []


def test_unread_input_count_never_exceeds_the_input_size():
    """One sample, padded by 2 on the left, stride 3, kernel 1: the only window reads padding.

    The input has one sample, so at most one can be unread (it is: 1)."""
    assert shapes.unread_input_count(1, 1, stride=3, padding=(2, 0)) == 1


def test_unread_input_samples_get_zero_gradient(torch):
    """What unread means: the gradient w.r.t. those samples is zero (torch autograd, stride 2)."""
    for i, k, s in [(6, 3, 2), (7, 3, 2), (10, 3, 4), (9, 2, 3)]:
        unread = shapes.unread_input_count(i, k, s)
        x = torch.ones(1, 1, i, requires_grad=True)
        torch.nn.functional.conv1d(x, torch.ones(1, 1, k), stride=s).sum().backward()
        grad = x.grad[0, 0].numpy()
        assert np.all(grad[i - unread:] == 0)
        assert grad[i - unread - 1] != 0


def test_conv_transpose_output_size_inverts_conv_output_size(torch):
    checked = 0
    for i, k, s, d, p in itertools.product(range(1, 7), KERNELS, STRIDES, DILATIONS, PADS):
        for output_padding in range(max(s, d)):  # PyTorch: output_padding < stride or < dilation
            size = shapes.conv_transpose_output_size(i, k, s, (p, p), d, output_padding)
            if size < 1:
                continue
            if output_padding < s:
                # a forward conv over the transposed output's size gives back the input size
                assert shapes.conv_output_size(size, k, s, (p, p), d) == i, (i, k, s, d, p, output_padding)
            x = torch.zeros(1, 1, i)
            w = torch.zeros(1, 1, k)
            try:
                real = torch.nn.functional.conv_transpose1d(
                    x, w, stride=s, padding=p, output_padding=output_padding, dilation=d
                )
            except RuntimeError:
                continue
            assert real.shape[-1] == size, (i, k, s, d, p, output_padding)
            checked += 1
    assert checked > 300


def test_conv_transpose_output_size_examples():
    assert shapes.conv_transpose_output_size(3, 3, stride=2, padding=(1, 1)) == 5
    assert shapes.conv_transpose_output_size(3, 3, stride=2, padding=(1, 1), output_padding=1) == 6
    assert shapes.conv_transpose_output_size(4, 1) == 4


def pool_windows(i: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Count pooling windows by enumeration (PyTorch's rule).

    Windows start at 0, s, 2s, ...; floor mode keeps those wholly inside the
    padded input. ceil mode also keeps a partial window at the end, if the one
    before it did not reach the last padded sample and it does not start in the
    right padding.
    """
    padded = i + 2 * p
    extent = d * (k - 1) + 1
    count, start = 0, 0
    while True:
        if start + extent <= padded:
            count += 1
        elif ceil_mode and start - s + extent < padded and start < i + p:
            count += 1
        else:
            return count
        start += s


def test_pool_output_size_matches_torch_and_enumeration(torch):
    checked = 0
    for i, k, s, d, p, ceil_mode in itertools.product(range(1, 9), range(1, 4), range(1, 4), range(1, 3),
                                                       range(0, 2), (False, True)):
        if p > k // 2 or i + 2 * p < d * (k - 1) + 1:
            continue
        size = shapes.pool_output_size(i, k, s, p, d, ceil_mode)
        real = torch.nn.functional.max_pool1d(torch.zeros(1, 1, i), k, s, p, d, ceil_mode=ceil_mode)
        assert real.shape[-1] == size, (i, k, s, d, p, ceil_mode)
        if not ceil_mode:
            assert size == len(window_starts(i + 2 * p, k, s, d))
        assert size == pool_windows(i, k, s, p, d, ceil_mode), (i, k, s, d, p, ceil_mode)
        checked += 1
    assert checked > 300


def test_pool_output_size_rejects_a_window_larger_than_the_input():
    with pytest.raises(ValueError, match="larger than the"):
        shapes.pool_output_size(2, 3, 1)
    assert shapes.pool_output_size(5, 2, 2) == 2
    assert shapes.pool_output_size(5, 2, 2, ceil_mode=True) == 3


OUTPUT_SHAPE_CASES = [
    # input_shape, weight_shape, kwargs
    ((1, 1, 3, 3), (1, 1, 2, 2), {}),
    ((2, 3, 7, 9), (4, 3, 3, 2), dict(stride=2, padding=1)),
    ((2, 4, 7, 9), (6, 2, 3, 3), dict(stride=(1, 3), padding=((0, 2), 1), dilation=(2, 1), groups=2)),
    ((1, 2, 10), (3, 2, 4), dict(stride=3, padding="same")),
    ((1, 2, 10), (3, 2, 4), dict(padding="full", dilation=2)),
    ((1, 2, 5, 4, 6), (2, 1, 2, 3, 2), dict(groups=2, padding=(1, 0, 2), stride=(2, 1, 3))),
    ((3, 6, 5), (6, 1, 3), dict(groups=6, padding="valid")),
    ((4, 7, 7), (2, 4, 3, 3), dict(padding=1)),  # unbatched (C_in, H, W)
    ((2, 9), (5, 2, 4), dict(stride=2)),  # unbatched 1-d
    ((1, 3, 3, 3), (2, 1, 2, 2, 2), dict(padding="same", stride=2)),  # unbatched 3-d
    ((0, 2, 5, 5), (3, 2, 3, 3), {}),  # empty batch
]


@pytest.mark.parametrize(("input_shape", "weight_shape", "kwargs"), OUTPUT_SHAPE_CASES)
def test_output_shape_is_the_real_output_shape(input_shape, weight_shape, kwargs):
    expected = cl.output_shape(input_shape, weight_shape, **kwargs)
    real = cl.conv(np.zeros(input_shape), np.zeros(weight_shape), **kwargs)
    assert expected == real.shape
    assert isinstance(expected, tuple) and all(type(n) is int for n in expected)
    # unbatched shapes keep no batch axis
    assert len(expected) == len(input_shape)


def test_output_shape_over_a_grid_matches_enumeration():
    for i, k, s, d, lo, hi in grid():
        if i + lo + hi < d * (k - 1) + 1:
            continue
        shape = cl.output_shape((2, 3, i, 4), (5, 3, k, 1), stride=(s, 1), padding=((lo, hi), 0), dilation=(d, 1))
        assert shape == (2, 5, len(window_starts(i + lo + hi, k, s, d)), 4)


def test_output_shape_unbatched_matches_batched():
    for input_shape, weight_shape, kwargs in OUTPUT_SHAPE_CASES:
        if len(input_shape) == len(weight_shape):
            unbatched = input_shape[1:]
            assert cl.output_shape(unbatched, weight_shape, **kwargs) == cl.output_shape(
                input_shape, weight_shape, **kwargs)[1:]


def test_output_shape_docstring_examples():
    assert cl.output_shape((3, 224, 224), (64, 3, 7, 7), stride=2, padding=3) == (64, 112, 112)
    assert cl.output_shape((1, 1, 10), (1, 1, 4), stride=3, padding="same") == (1, 1, 4)
    assert cl.output_shape([8, 3, 32, 32], [16, 3, 3, 3], stride=2, padding="same") == (8, 16, 16, 16)
    assert cl.output_shape(np.array([1, 1, 3, 3]), np.array([1, 1, 2, 2])) == (1, 1, 2, 2)
