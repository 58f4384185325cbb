"""Padding, checked against its definitions: ``numpy.pad`` then a "valid" convolution.

- Any padding argument (asymmetric pairs, ``"same"`` at any stride, ``"full"``)
  and any padding mode equals padding the input with ``numpy.pad`` (the matching
  NumPy mode) and convolving with ``padding="valid"``.
- ``"same"`` follows the TensorFlow/JAX rule: output size ``ceil(in / stride)``,
  total padding ``max((out-1)*stride + dilation*(k-1) + 1 - in, 0)``, odd unit high.
- At stride 1, ``"same"`` is PyTorch's ``padding="same"``, even kernels and
  dilation included.
- Each mode fills exactly the cells ``numpy.pad`` does, and is refused exactly
  where PyTorch refuses it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import convolab as cl
from conv_cases import NUMPY_PAD_MODE, PADDING_MODES, generate_cases, same_padding

CASES = generate_cases(300, seed=1)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def _pad(x: np.ndarray, pairs, mode: str) -> np.ndarray:
    """``x`` padded by ``pairs`` on its trailing axes with ``numpy.pad``'s equivalent of ``mode``."""
    lead = [(0, 0)] * (x.ndim - len(pairs))
    return np.pad(x, [*lead, *pairs], mode=NUMPY_PAD_MODE[mode])


# -- every generated case: padding argument and mode == numpy.pad + valid -------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_padding_equals_numpy_pad_then_valid_conv(case):
    x, w, b = case.arrays(np.int64)  # integers: both sides must agree exactly
    padded = _pad(x, case.padding_pairs, case.padding_mode)
    expected = cl.conv(padded, w, b, stride=case.stride, padding="valid", dilation=case.dilation, groups=case.groups)
    out = cl.conv(x, w, b, **case.kwargs())
    assert out.shape == case.output_shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("case", CASES[:60], ids=str)
def test_resolved_padding_matches_spec(case):
    spec = cl.conv_spec(case.input_shape, case.weight_shape, stride=case.stride, padding=case.padding,
                        dilation=case.dilation, groups=case.groups, padding_mode=case.padding_mode)
    assert spec.padding == case.padding_pairs
    assert spec.output_size == case.output_size


def test_generated_cases_include_asymmetric_and_strided_same():
    kinds = {c.padding_kind for c in CASES}
    assert {"pairs", "same_strided", "full"} <= kinds
    assert any(c.padding_kind == "same_strided" and any(lo != hi for lo, hi in c.padding_pairs) for c in CASES)


# -- "same" at any stride: the formulas ------------------------------------------------------------

SAME_GRID = list(itertools.product(range(1, 13), range(1, 6), range(1, 5), range(1, 4)))  # in, k, stride, dilation


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_same_padding_formula(stride):
    for size, k, s, d in (g for g in SAME_GRID if g[2] == stride):
        out = -(-size // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
        low, high = cl.same_padding(size, k, s, d)
        assert (low, high) == (total // 2, total - total // 2), (size, k, s, d)
        assert high - low in (0, 1)  # the odd unit, if any, is on the high side
        assert cl.conv_output_size(size, k, s, (low, high), d) == out
        assert cl.output_shape((1, 1, size), (1, 1, k), stride=s, padding="same", dilation=d) == (1, 1, out)


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_same_at_any_stride_equals_numpy_pad_then_valid_conv_1d(stride):
    rng = np.random.default_rng(stride)
    for size, k, s, d in (g for g in SAME_GRID if g[2] == stride):
        x = rng.integers(-9, 10, size=(2, 3, size))
        w = rng.integers(-9, 10, size=(4, 3, k))
        low, high = same_padding(size, k, s, d)
        out = cl.conv1d(x, w, stride=s, padding="same", dilation=d)
        assert out.shape == (2, 4, -(-size // s))
        expected = cl.conv1d(np.pad(x, [(0, 0), (0, 0), (low, high)]), w, stride=s, dilation=d)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("stride", [(2, 2), (2, 3), (3, 1), (4, 2)], ids=lambda s: f"s{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
def test_same_at_stride_2d_with_padding_modes(stride, mode):
    rng = np.random.default_rng(7)
    for size, k in [((9, 8), (3, 4)), ((7, 5), (2, 2)), ((6, 9), (5, 1)), ((8, 8), (4, 3))]:
        x = rng.integers(-9, 10, size=(1, 2, *size))
        w = rng.integers(-9, 10, size=(3, 2, *k))
        pairs = [same_padding(i, kk, s) for i, kk, s in zip(size, k, stride)]
        out = cl.conv2d(x, w, stride=stride, padding="same", padding_mode=mode)
        assert out.shape[2:] == tuple(-(-i // s) for i, s in zip(size, stride))
        expected = cl.conv2d(_pad(x, pairs, mode), w, stride=stride)
        np.testing.assert_array_equal(out, expected)


def test_same_stride_2_example_pads_high_side_only():
    """in 8, k 3, stride 2: out 4, total (4-1)*2 + 3 - 8 = 1, all on the high side."""
    x = np.arange(8.0).reshape(1, 1, 8)
    w = np.array([[[1.0, 10.0, 100.0]]])
    out = cl.conv1d(x, w, stride=2, padding="same")
    # windows start at 0, 2, 4, 6; the last reads x[6], x[7] and one zero of padding
    np.testing.assert_array_equal(out[0, 0], [0 + 10 + 200, 2 + 30 + 400, 4 + 50 + 600, 6 + 70 + 0])


def test_full_padding_formula():
    for size, k, d in itertools.product(range(1, 8), range(1, 5), range(1, 4)):
        spec = cl.conv_spec((1, 1, size), (1, 1, k), padding="full", dilation=d)
        assert spec.padding == ((d * (k - 1), d * (k - 1)),)
        assert spec.output_size == (size + d * (k - 1),)


# -- asymmetric (low, high) pairs, by hand --------------------------------------------------------


@pytest.mark.parametrize("pairs", [((0, 2),), ((3, 0),), ((1, 2),)], ids=str)
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_asymmetric_pairs_1d(pairs, mode):
    x = np.arange(1, 6).reshape(1, 1, 5)
    w = np.array([[[1, -2, 4]]])
    out = cl.conv1d(x, w, padding=pairs, padding_mode=mode)
    padded = _pad(x, pairs, mode)
    assert out.shape == (1, 1, 5 + sum(pairs[0]) - 2)
    np.testing.assert_array_equal(out, cl.conv1d(padded, w))
    # written out: output j is padded[j] - 2 padded[j+1] + 4 padded[j+2]
    p = padded[0, 0]
    np.testing.assert_array_equal(out[0, 0], [p[j] - 2 * p[j + 1] + 4 * p[j + 2] for j in range(len(p) - 2)])


@pytest.mark.parametrize("padding", [((0, 1), (2, 0), (1, 1)), (1, (0, 2), 0), ((2, 0), 1, (0, 1))], ids=str)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
def test_asymmetric_and_mixed_pairs_3d(padding, mode):
    rng = np.random.default_rng(3)
    x = rng.integers(-5, 6, size=(2, 2, 4, 3, 5))
    w = rng.integers(-5, 6, size=(2, 1, 2, 3, 2))
    pairs = [p if isinstance(p, tuple) else (p, p) for p in padding]
    out = cl.conv3d(x, w, padding=padding, padding_mode=mode, groups=2, stride=(1, 2, 2))
    np.testing.assert_array_equal(out, cl.conv3d(_pad(x, pairs, mode), w, groups=2, stride=(1, 2, 2)))


# -- each mode fills the cells numpy.pad fills -----------------------------------------------------

# "a b c d" padded by 3, as the docs draw it (a=1, b=2, c=3, d=4), written out by hand.
DRAWN = {
    "zeros": [0, 0, 0, 1, 2, 3, 4, 0, 0, 0],
    "reflect": [4, 3, 2, 1, 2, 3, 4, 3, 2, 1],
    "symmetric": [3, 2, 1, 1, 2, 3, 4, 4, 3, 2],
    "replicate": [1, 1, 1, 1, 2, 3, 4, 4, 4, 4],
    "circular": [2, 3, 4, 1, 2, 3, 4, 1, 2, 3],
}
ALIAS = {"constant": "zeros", "edge": "replicate", "wrap": "circular"}


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_mode_fills_cells_as_drawn(mode):
    """A 1-tap kernel of weight 1 returns the padded input itself."""
    x = np.array([[[1, 2, 3, 4]]])
    out = cl.conv1d(x, np.ones((1, 1, 1), dtype=x.dtype), padding=3, padding_mode=mode)
    np.testing.assert_array_equal(out[0, 0], DRAWN[ALIAS.get(mode, mode)])
    np.testing.assert_array_equal(out[0, 0], np.pad(x[0, 0], 3, mode=NUMPY_PAD_MODE[mode]))


def _largest_allowed(mode: str, size: int) -> int:
    """The largest pad ``mode`` accepts on an axis of ``size`` (reflect < size; wrap/symmetric <= size)."""
    numpy_mode = NUMPY_PAD_MODE[mode]
    if numpy_mode == "reflect":
        return size - 1
    if numpy_mode in ("wrap", "symmetric"):
        return size
    return 2 * size + 1  # zeros and edge: no limit


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_mode_equals_numpy_pad_up_to_its_limit(mode, rank):
    """The identity kernel shows the padded input; every pad up to the mode's limit matches numpy.pad."""
    rng = np.random.default_rng(rank)
    size = (5, 3, 4)[:rank]
    x = rng.integers(-50, 50, size=(2, 3, *size))
    identity = np.eye(3, dtype=x.dtype).reshape(3, 3, *([1] * rank))
    for pads in itertools.product(range(0, 6), repeat=2):
        pairs = [(min(pads[0], _largest_allowed(mode, n)), min(pads[1], _largest_allowed(mode, n))) for n in size]
        pairs[-1] = pairs[-1][::-1]  # different pairs on different axes
        out = cl.conv(x, identity, padding=tuple(pairs), padding_mode=mode)
        np.testing.assert_array_equal(out, _pad(x, pairs, mode), err_msg=f"pairs={pairs}")


def test_reflect_and_symmetric_differ_by_the_repeated_edge():
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)
    w = np.ones((1, 1, 1))
    reflect = cl.conv1d(x, w, padding=2, padding_mode="reflect")[0, 0]
    symmetric = cl.conv1d(x, w, padding=2, padding_mode="symmetric")[0, 0]
    np.testing.assert_array_equal(reflect, [3, 2, 1, 2, 3, 4, 5, 4, 3])
    np.testing.assert_array_equal(symmetric, [2, 1, 1, 2, 3, 4, 5, 5, 4])


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_mode_refused_exactly_where_torch_refuses(mode):
    """reflect needs pad < size, circular pad <= size: convolab refuses just where PyTorch does."""
    torch = _torch()
    for size, low, high in itertools.product(range(1, 5), range(0, 7), range(0, 7)):
        x = np.arange(float(size)).reshape(1, 1, size)
        try:
            torch.nn.functional.pad(torch.from_numpy(x), (low, high), mode=mode)
            torch_ok = True
        except (RuntimeError, ValueError, NotImplementedError):
            torch_ok = False
        try:
            out = cl.conv1d(x, np.ones((1, 1, 1)), padding=((low, high),), padding_mode=mode)
            cl_ok = True
        except ValueError:
            cl_ok = False
        assert cl_ok == torch_ok, (mode, size, low, high)
        if cl_ok:
            expected = torch.nn.functional.pad(torch.from_numpy(x), (low, high), mode=mode).numpy()
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("size,pad,ok", [(4, 4, True), (4, 5, False), (1, 1, True), (1, 2, False)])
def test_symmetric_may_mirror_only_once(size, pad, ok):
    x = np.arange(1, size + 1).reshape(1, 1, size)
    w = np.ones((1, 1, 1), dtype=x.dtype)
    if ok:
        out = cl.conv1d(x, w, padding=pad, padding_mode="symmetric")
        np.testing.assert_array_equal(out[0, 0], np.pad(x[0, 0], pad, mode="symmetric"))
    else:
        with pytest.raises(ValueError, match="symmetric"):
            cl.conv1d(x, w, padding=pad, padding_mode="symmetric")


def test_mode_limit_applies_to_resolved_same_and_full_padding():
    x = np.ones((1, 1, 3))
    with pytest.raises(ValueError, match="reflect"):
        cl.conv1d(x, np.ones((1, 1, 4)), padding="full", padding_mode="reflect")  # pads 3 >= size 3
    out = cl.conv1d(x, np.ones((1, 1, 3)), padding="full", padding_mode="reflect")  # pads 2 < 3
    np.testing.assert_array_equal(out, cl.conv1d(np.pad(x, [(0, 0), (0, 0), (2, 2)], mode="reflect"),
                                                 np.ones((1, 1, 3))))


# -- "same" at stride 1 is PyTorch's "same" --------------------------------------------------------


@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, 6])
def test_same_stride_1_equals_torch_same_1d(kernel, dilation):
    torch = _torch()
    rng = np.random.default_rng(kernel * 10 + dilation)
    for size in (1, 2, 5, 8, 11):
        x = rng.standard_normal((2, 3, size))
        w = rng.standard_normal((2, 3, kernel))
        b = rng.standard_normal(2)
        out = cl.conv1d(x, w, b, padding="same", dilation=dilation)
        assert out.shape == (2, 2, size)
        expected = torch.nn.functional.conv1d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                              padding="same", dilation=dilation)
        torch.testing.assert_close(torch.from_numpy(out), expected)


@pytest.mark.parametrize("dilation", [(1, 1), (2, 1), (1, 3), (2, 2)], ids=lambda d: f"d{d[0]}x{d[1]}")
@pytest.mark.parametrize("kernel", [(2, 2), (4, 3), (1, 6), (5, 2), (3, 3)], ids=lambda k: f"k{k[0]}x{k[1]}")
def test_same_stride_1_equals_torch_same_2d(kernel, dilation):
    torch = _torch()
    rng = np.random.default_rng(sum(kernel) * 10 + sum(dilation))
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, *kernel)).astype(np.float32)
    out = cl.conv2d(x, w, padding="same", dilation=dilation, groups=2)
    assert out.shape == (2, 6, 7, 6)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                                          dilation=dilation, groups=2)
    torch.testing.assert_close(torch.from_numpy(out), expected)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("kernel", [(2, 3), (4, 4), (3, 2)], ids=lambda k: f"k{k[0]}x{k[1]}")
def test_same_stride_1_with_padding_mode_equals_torch_module(kernel, mode):
    torch = _torch()
    rng = np.random.default_rng(sum(kernel))
    x = rng.standard_normal((1, 2, 6, 7))
    module = torch.nn.Conv2d(2, 3, kernel, padding="same", padding_mode=mode, dilation=(1, 2), dtype=torch.float64)
    w, b = module.weight.detach().numpy().copy(), module.bias.detach().numpy().copy()
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    out = cl.conv2d(x, w, b, padding="same", padding_mode=mode, dilation=(1, 2))
    torch.testing.assert_close(torch.from_numpy(out), expected)
