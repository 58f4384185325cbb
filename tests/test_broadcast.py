"""The "broadcast" forward (output channels in the vector lanes) against the direct sum and PyTorch: each of its
tile shapes (one row of 14 positions at strides 1, 2 and 3, two rows of 7, one row of 7 for an odd last row, rows
narrower than 7), groups, dilation, asymmetric padding, 1-d to 3-d, channel counts that leave a block part empty, the filters'
layout, the same bits at any thread count, and the direct sum's inf/NaN pattern."""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import ALGORITHMS
from convolab.algorithms._compiled import kernels
from convolab.algorithms._kernel_layout import filter_rows
from test_nonfinite import assert_same_pattern

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(ALGORITHMS["broadcast"].why_not(cl.conv_spec((1, 1, 4), (1, 1, 1)),
                                                                np.dtype(np.float32)) is not None,
                                reason="numba is not importable")

#: (input, weight, arguments): each exercises one of the kernel's paths.
CASES = [
    ((2, 8, 20, 30), (40, 8, 3, 3), dict(padding=1, stride=2)),  # rows of 15: a last tile moved back, stride 2
    ((2, 8, 20, 30), (40, 8, 3, 3), dict(padding=1)),  # rows of 30 at stride 1
    ((2, 6, 16, 40), (34, 6, 3, 5), dict(padding=(1, 2), stride=3)),  # stride 3: not a literal step
    ((3, 4, 9, 9), (5, 4, 3, 3), dict(padding=1)),  # rows of 9: two-row tiles, 9 rows a sample (an odd last one)
    ((1, 4, 1, 9), (5, 4, 1, 3), dict(padding=(0, 1))),  # one row: tiles of one row's 7
    ((2, 6, 10, 5), (7, 6, 3, 3), dict(padding=1)),  # rows of 5: one position at a time
    ((2, 6, 16, 40), (34, 3, 3, 3), dict(padding=2, dilation=2, groups=2)),  # groups, dilation
    ((2, 6, 30), (34, 6, 5), dict(padding=2, stride=2)),  # 1-d
    ((1, 3, 6, 10, 30), (17, 3, 3, 3, 3), dict(padding=1, stride=(1, 2, 2))),  # 3-d
    ((2, 8, 15, 29), (40, 8, 1, 1), dict(stride=2)),  # no padding: the input read in place
    ((1, 5, 7, 7), (70, 5, 3, 3), dict(padding=((1, 0), (2, 1)))),  # asymmetric padding; 70 = 2 blocks + 6
]


def _torch_conv(x, w, kwargs):
    """PyTorch's result in float64 (asymmetric padding given to NumPy first)."""
    padding = kwargs.get("padding", 0)
    rest = {k: v for k, v in kwargs.items() if k != "padding"}
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        x = np.pad(x, ((0, 0), (0, 0), *padding))
        padding = 0
    conv = {3: torch.nn.functional.conv1d, 4: torch.nn.functional.conv2d, 5: torch.nn.functional.conv3d}[x.ndim]
    return conv(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)), padding=padding,
                **rest).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES, ids=[str(i) for i in range(len(CASES))])
def test_against_direct_and_torch(x_shape, w_shape, kwargs, dtype):
    rng = np.random.default_rng(len(x_shape) + w_shape[0])
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    got = cl.conv(x, w, **kwargs, algorithm="broadcast")
    direct = cl.conv(x, w, **kwargs, algorithm="direct")
    expected = _torch_conv(x, w, kwargs)
    assert got.dtype == dtype and got.shape == expected.shape
    # the sums' terms bound their rounding: 2 * terms * u * the sum of |terms|
    terms = np.prod(w_shape[1:])
    scale = np.abs(cl.conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), **kwargs, algorithm="direct"))
    bound = 2 * terms * np.finfo(dtype).eps / 2 * scale
    assert np.all(np.abs(got - expected) <= bound)
    assert np.all(np.abs(got - direct) <= bound)


def test_same_bits_on_one_or_two_threads_and_a_bias():
    """A position's sum is computed by one tile whichever job holds it: the bits do not depend on the threads."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 32, 28, 28)).astype(np.float32)
    w, b = rng.standard_normal((96, 32, 3, 3)).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    with cl.thread_count(1):
        one = cl.conv2d(x, w, b, stride=2, padding=1, algorithm="broadcast")
    with cl.thread_count(2):
        two = cl.conv2d(x, w, b, stride=2, padding=1, algorithm="broadcast")
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, cl.conv2d(x, w, b, stride=2, padding=1, algorithm="direct"), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("dtype, out_channels", [(np.float32, 70), (np.float64, 40), (np.float32, 32)])
def test_filters_laid_out_in_blocks_of_channels(dtype, out_channels):
    """``(G*O, K)`` rows into ``(G, blocks, K, block)``, zero past a group's last channel: squares transposed in
    registers and the edges (terms past the last whole square, a part of fewer than 16 channels) one by one."""
    groups, terms, block = 2, 37, 32 if dtype == np.float32 else 16
    rows = np.random.default_rng(1).standard_normal((groups * out_channels, terms)).astype(dtype)
    blocks = -(-out_channels // block)
    laid = np.full(groups * blocks * terms * block, np.nan, dtype=dtype)
    kernels("broadcast").lay_out_filters(rows, laid, 0, groups * blocks, out_channels, block)
    padded = np.zeros((groups, blocks * block, terms), dtype=dtype)
    padded[:, :out_channels] = rows.reshape(groups, out_channels, terms)
    expected = padded.reshape(groups, blocks, block, terms).transpose(0, 1, 3, 2).reshape(-1)
    np.testing.assert_array_equal(laid, expected)


def test_filter_rows_shape_matches_the_layout():
    assert filter_rows(np.ones((5, 2, 3, 3), dtype=np.float32), np.dtype(np.float32)).shape == (5, 18)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the direct sum's inf * 0
@pytest.mark.parametrize("kwargs", [dict(padding=1, stride=2), dict(padding=1)])
def test_inf_and_nan_reach_the_outputs_the_direct_sum_gives_them(kwargs):
    """Padding's zeros are summed as terms: an inf weight times a padding zero is NaN, as in the direct sum."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 30)).astype(np.float32)
    w = rng.standard_normal((40, 4, 3, 3)).astype(np.float32)
    x[0, 1, 4, 7], x[1, 2, 0, 0] = np.inf, np.nan
    w[3, 0, 0, 0] = -np.inf
    got = cl.conv2d(x, w, **kwargs, algorithm="broadcast")
    direct = cl.conv2d(x, w, **kwargs, algorithm="direct")
    assert_same_pattern(got, direct, tolerance=1e-3)


def test_auto_takes_it_for_strided_layers_only_and_refuses_other_dtypes():
    """At two threads "auto" takes it for ResNet's stride-2 3x3 layers, on 28x28 outputs and on 7x7 ones (its
    two-row tiles; session 20, ResNet-50 layer4.0, two threads: 9.6-9.8 ms against gemm's 10.6-11.1), not where
    Winograd or depthwise win."""
    with cl.thread_count(2):
        assert cl.plan((8, 128, 28, 28), (256, 128, 3, 3), "float32", padding=1, stride=2).algorithm == "broadcast"
        assert cl.plan((8, 512, 14, 14), (512, 512, 3, 3), "float32", padding=1, stride=2).algorithm == "broadcast"
        assert cl.plan((8, 64, 56, 56), (64, 64, 3, 3), "float32", padding=1).algorithm != "broadcast"
        assert cl.plan((8, 32, 56, 56), (32, 1, 3, 3), "float32", padding=1, groups=32).algorithm != "broadcast"
    spec = cl.conv_spec((1, 2, 8, 8), (3, 2, 3, 3), padding=1)
    assert "float32 and float64 only" in ALGORITHMS["broadcast"].why_not(spec, np.dtype(np.float16))
    with pytest.raises(ValueError, match="algorithm"):
        cl.conv2d(np.ones((1, 2, 8, 8), dtype=np.int32), np.ones((3, 2, 3, 3), dtype=np.int32), padding=1,
                  algorithm="broadcast")


def test_zero_batch_and_no_channels():
    w = np.ones((3, 2, 3, 3), dtype=np.float32)
    assert cl.conv2d(np.ones((0, 2, 8, 8), dtype=np.float32), w, padding=1, algorithm="broadcast").shape == (0, 3, 8, 8)
    empty = cl.conv2d(np.ones((2, 0, 8, 8), dtype=np.float32), np.ones((3, 0, 3, 3), dtype=np.float32), padding=1,
                      algorithm="broadcast")
    np.testing.assert_array_equal(empty, np.zeros((2, 3, 8, 8), dtype=np.float32))


def test_workspace_limit_refuses_grids_and_filters_too_large():
    spec = cl.conv_spec((8, 64, 56, 56), (128, 64, 3, 3), padding=1, stride=2)
    with cl.workspace_limit(2**18):
        assert "exceeds the workspace limit" in ALGORITHMS["broadcast"].why_not(spec, np.dtype(np.float32))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_other_padding_modes_read_the_padded_input_in_place(mode):
    """Another padding mode pads first: the kernel then reads the padded input, whose size the grid follows (it
    once followed the spec's input size and wrote past the grid)."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, 3, 4, 4, 4)), rng.standard_normal((3, 1, 1, 2, 2))
    kwargs = dict(stride=(1, 3, 2), padding=(2, 2, 1), groups=3, padding_mode=mode)
    np.testing.assert_allclose(cl.conv(x, w, **kwargs, algorithm="broadcast"),
                               cl.conv(x, w, **kwargs, algorithm="direct"), rtol=1e-12, atol=1e-12)


def test_the_wrappers_mirrored_constants_match_the_kernels():
    """The wrapper sizes the scratch and the cost model without importing the kernel module (it imports Numba):
    its copies of the tile's positions, the grid's lanes and a tile's channels must be the kernel's."""
    from convolab.algorithms import broadcast
    kernel = kernels("broadcast")
    assert (broadcast.TILE_POSITIONS, broadcast.LANE_CHANNELS) == (kernel.TILE_POSITIONS, kernel.LANE_CHANNELS)
    assert [broadcast._block(size) for size in (4, 8)] == [kernel.block_channels(size) for size in (4, 8)]
