"""Show-the-work identities: traced elements, im2col, the flip, the input gradient, the conv matrix.

Every identity is checked on generated configurations (1-d to 3-d; every padding
kind and mode; stride, dilation, groups, empty and unbatched inputs; flip on
alternate cases), and the traced windows, padding masks and source coordinates
are compared with ``numpy.pad`` and index arithmetic written out here, not with
convolab's own window code. Integer arrays make every comparison exact.
"""

from __future__ import annotations

import json
import zlib
from math import prod

import numpy as np
import pytest
import scipy.sparse

import convolab as cl
from convolab.show import checks
from convolab.show import (
    Identity,
    IdentityChain,
    Trace,
    check_direct_equals_im2col,
    check_flip,
    check_input_gradient,
    conv_matrix,
    im2col_matrices,
    trace,
)
from conv_cases import generate_cases

# 168 cases: every (rank, padding kind, padding mode) combination once.
CASES = generate_cases(168, seed=7)
#: Each case with flip on every other one.
FLIPPED = [(case, i % 2 == 1) for i, case in enumerate(CASES)]
FLIP_IDS = [f"{case}-flip" if flip else str(case) for case, flip in FLIPPED]

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def _rng(case, salt: str = "") -> np.random.Generator:
    return np.random.default_rng(zlib.crc32((str(case) + salt).encode()))


def _grad_output(case, dtype=np.int64) -> np.ndarray:
    g = _rng(case, "grad").integers(-4, 5, size=case.output_shape)
    return g.astype(dtype)


def _reversed(w: np.ndarray) -> np.ndarray:
    return w[(Ellipsis, *([slice(None, None, -1)] * (w.ndim - 2)))]


# -- trace: one element, against conv and against index arithmetic written out here ----------------


def _expected_window(case, x, at):
    """``at``'s window, padding mask and sources, from ``numpy.pad`` and ``p*s + j*d`` written out here.

    Returns the window ``(C, *k)`` of ``x``'s padded group channels, the padding
    mask ``(*k)`` and the source sample of each cell as a flat spatial index
    (``-1`` for a zero of zero padding).
    """
    position = np.array(at[-case.rank:])
    taps = np.stack(np.meshgrid(*(np.arange(k) for k in case.kernel_size), indexing="ij"), axis=-1)  # (*k, rank)
    padded = position * case.strides + taps * case.dilations  # (*k, rank): padded coordinate of each cell
    cells = tuple(np.moveaxis(padded, -1, 0))
    low = np.array([lo for lo, _ in case.padding_pairs])
    is_padding = ~((padded >= low) & (padded < low + np.array(case.input_size))).all(axis=-1)
    index = np.arange(prod(case.input_size)).reshape(case.input_size)
    if case.canonical_mode == "zeros":
        sources = np.pad(index, case.padding_pairs, mode="constant", constant_values=-1)
    else:
        sources = np.pad(index, case.padding_pairs, mode=case.numpy_pad_mode)
    c_out = at[-case.rank - 1]
    per_group = case.in_channels // case.groups
    group = c_out // (case.out_channels // case.groups)
    xb = x if case.batched else x[np.newaxis]
    channels = xb[at[0] if case.batched else 0, group * per_group:(group + 1) * per_group]  # (C, *size)
    padded_x = np.pad(channels, [(0, 0), *case.padding_pairs], mode=case.numpy_pad_mode)
    window = np.stack([channel[cells] for channel in padded_x])
    return window, is_padding, sources[cells]


@pytest.mark.parametrize(("case", "flip"), FLIPPED, ids=FLIP_IDS)
def test_trace_equals_conv_at_random_elements(case, flip):
    x, w, b = case.arrays(np.int64)
    out = cl.conv(x, w, b, **case.kwargs(), flip=flip)
    if out.size == 0:  # empty batch: there is no element to trace
        with pytest.raises(ValueError, match=r"trace: at must be .*n in range\(0\)"):
            trace(x, w, b, at=(0,) * out.ndim, **case.kwargs(), flip=flip)
        return
    rng = _rng(case, "at")
    kernel = _reversed(w) if flip else w
    for _ in range(4):
        at = tuple(int(rng.integers(size)) for size in out.shape)
        t = trace(x, w, b, at=at, **case.kwargs(), flip=flip)
        assert isinstance(t, Trace) and t.at == at
        assert t.result == out[at] and t.result.dtype == out.dtype  # integers: exact
        c_out = at[-case.rank - 1]
        group = c_out // (case.out_channels // case.groups)
        per_group = case.in_channels // case.groups
        assert t.input_channels == tuple(range(group * per_group, (group + 1) * per_group))
        np.testing.assert_array_equal(t.kernel, kernel[c_out])
        np.testing.assert_array_equal(t.product, t.window * t.kernel)
        assert t.sum == t.product.sum() == t.dot
        assert (t.bias is None) == (b is None)
        assert t.result == t.sum + (0 if b is None else b[c_out])
        window, is_padding, source = _expected_window(case, x, at)
        np.testing.assert_array_equal(t.window, window)
        np.testing.assert_array_equal(t.is_padding, np.broadcast_to(is_padding, t.window.shape))
        zero = source < 0
        assert (t.source[:, zero] == -1).all() and (t.window[:, zero] == 0).all()
        read = t.source[:, ~zero]  # (C, cells, input.ndim): coordinates into x
        spatial = tuple(np.moveaxis(read[..., -case.rank:], -1, 0))
        np.testing.assert_array_equal(np.ravel_multi_index(spatial, case.input_size),
                                      np.broadcast_to(source[~zero], read.shape[:-1]))
        channel = read[..., -case.rank - 1]
        np.testing.assert_array_equal(channel, np.broadcast_to(np.array(t.input_channels)[:, np.newaxis], channel.shape))
        np.testing.assert_array_equal(x[tuple(np.moveaxis(read, -1, 0))], t.window[:, ~zero])


NONEMPTY = [(case, flip) for case, flip in FLIPPED[::3] if case.batch]


@pytest.mark.parametrize(("case", "flip"), NONEMPTY, ids=[f"{case}-{flip}" for case, flip in NONEMPTY])
def test_trace_equals_conv_in_floating_point(case, flip):
    x, w, b = case.arrays(np.float64)
    out = cl.conv(x, w, b, **case.kwargs(), flip=flip)
    rng = _rng(case, "float")
    for _ in range(3):
        at = tuple(int(rng.integers(size)) for size in out.shape)
        t = trace(x, w, b, at=at, **case.kwargs(), flip=flip)
        np.testing.assert_allclose(t.result, out[at], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(t.dot, t.sum, rtol=1e-12, atol=1e-12)


def test_trace_classic_example():
    x = np.arange(1, 10).reshape(1, 1, 3, 3)
    w = np.array([[[[9, 8], [7, 6]]]])
    t = trace(x, w, at=(0, 0, 1, 1))
    assert t.window.tolist() == [[[5, 6], [8, 9]]]
    assert t.product.tolist() == [[[45, 48], [56, 54]]]
    assert t.sum == t.dot == t.result == 203 == cl.conv(x, w)[0, 0, 1, 1]
    assert not t.is_padding.any()
    assert t.source[0, 0, 0].tolist() == [0, 0, 1, 1] and t.source[0, 1, 1].tolist() == [0, 0, 2, 2]
    assert str(t) == repr(t) == "\n".join([
        "output[0, 0, 1, 1] = 203",
        "  window: input[0, 0:1] at first tap (1, 1), stride (1, 1), dilation (1, 1)",
        "  kernel: weight[0] as stored (flip=False)",
        "  channel 0:",
        "    window    kernel    window * kernel",
        "    5 6       9 8       45 48",
        "    8 9       7 6       56 54",
        "  sum = 203",
        "  bias = none",
        "  result = sum + bias = 203",
        "  dot(window.ravel(), kernel.ravel()) = 203",
    ])
    data = json.loads(json.dumps(t.to_dict()))
    assert data["window"] == [[[5, 6], [8, 9]]] and data["product"] == [[[45, 48], [56, 54]]]
    assert data["sum"] == data["dot"] == data["result"] == 203 and data["bias"] is None
    assert data["source"][0][0][1] == [0, 0, 1, 2]


def test_trace_zero_padding_is_marked_and_has_no_source():
    x = np.arange(1, 10).reshape(1, 1, 3, 3)
    w = np.array([[[[9, 8], [7, 6]]]])
    t = trace(x, w, np.array([100]), at=(0, 0, 0, 0), padding=1)
    assert t.window.tolist() == [[[0, 0], [0, 1]]]
    assert t.is_padding.tolist() == [[[True, True], [True, False]]]
    assert (t.source[0, 0] == -1).all() and t.source[0, 1, 1].tolist() == [0, 0, 0, 0]
    assert t.result == 106 == cl.conv(x, w, np.array([100]), padding=1)[0, 0, 0, 0]
    text = str(t)
    assert "[v] marks a padding cell (zeros padding ((1, 1), (1, 1)))" in text
    assert "[0] [0]" in text and " 1 " in text and "bias = 100" in text and "result = sum + bias = 106" in text
    data = t.to_dict()
    assert data["source"][0] == [[None, None], [None, [0, 0, 0, 0]]]
    assert data["is_padding"] == [[[True, True], [True, False]]] and data["first_tap"] == [-1, -1]


def test_trace_reflect_padding_names_the_copied_sample_and_flip_reverses_the_kernel():
    x = np.array([[10, 20, 30, 40]])  # unbatched, one channel
    w = np.array([[[1, 2, 3]]])
    t = trace(x, w, at=(0, 0), padding=2, padding_mode="reflect", flip=True)
    # reflect: 30 20 | 10 20 30 40 | 30 20; the first window is 30 20 10
    assert t.window.tolist() == [[30, 20, 10]]
    assert t.is_padding.tolist() == [[True, True, False]]
    assert t.source[0].tolist() == [[0, 2], [0, 1], [0, 0]]  # (c, position) for unbatched input
    assert t.kernel.tolist() == [[3, 2, 1]]
    assert t.result == 30 * 3 + 20 * 2 + 10 == cl.conv1d(x, w, padding=2, padding_mode="reflect", flip=True)[0, 0]
    assert "reversed on every spatial axis (flip=True)" in str(t) and "[30] [20]  10" in str(t)


def test_trace_float16_and_complex():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float16)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float16)
    t = trace(x, w, at=(0, 2, 1, 3), padding=1)
    expected = cl.conv(x, w, padding=1)[0, 2, 1, 3]
    assert t.result.dtype == np.float16 and t.window.dtype == np.float32  # accumulated in float32
    assert abs(float(t.result) - float(expected)) <= 2 * np.finfo(np.float16).eps * max(abs(float(expected)), 1)
    xc = (rng.standard_normal((4,)) + 1j * rng.standard_normal((4,)))[np.newaxis]
    wc = (rng.standard_normal((1, 1, 2)) + 1j * rng.standard_normal((1, 1, 2)))
    tc = trace(xc, wc, at=(0, 1))
    np.testing.assert_allclose(tc.result, cl.conv1d(xc, wc)[0, 1], rtol=1e-14)
    data = json.loads(json.dumps(tc.to_dict()))
    assert data["result"] == pytest.approx([tc.result.real, tc.result.imag])
    assert np.array(data["window"]).shape == (1, 2, 2)  # (C, k, [real, imag])


def test_trace_is_read_only():
    t = trace(np.ones((1, 1, 3)), np.ones((1, 1, 2)), at=(0, 0, 0))
    with pytest.raises(ValueError, match="read-only"):
        t.window[0, 0] = 5.0
    with pytest.raises(AttributeError):
        t.result = 1.0  # type: ignore[misc]


def test_trace_summarizes_large_windows():
    t = trace(np.ones((1, 20, 5, 5)), np.ones((1, 20, 4, 4)), at=(0, 0, 0, 0))
    assert "320 cells, not drawn" in str(t) and "channel 0" not in str(t)
    assert float(t.result) == 320.0


X22 = np.arange(1, 10).reshape(1, 1, 3, 3)
W22 = np.array([[[[9, 8], [7, 6]]]])
RANGES = r"\(n in range\(1\), c_out in range\(1\), position\[0\] in range\(2\), position\[1\] in range\(2\)\)"


@pytest.mark.parametrize(("at", "kind", "got"), [
    ((0, 0, 0), ValueError, r"got \(0, 0, 0\) \(3 entries\)"),
    ((0, 0, 0, 0, 0), ValueError, r"got \(0, 0, 0, 0, 0\) \(5 entries\)"),
    ((1, 0, 0, 0), ValueError, r"got \(1, 0, 0, 0\) \(n=1 is outside range\(1\)\)"),
    ((0, 1, 0, 0), ValueError, r"got \(0, 1, 0, 0\) \(c_out=1 is outside range\(1\)\)"),
    ((0, 0, 2, 0), ValueError, r"got \(0, 0, 2, 0\) \(position\[0\]=2 is outside range\(2\)\)"),
    ((0, 0, 0, -1), ValueError, r"got \(0, 0, 0, -1\) \(position\[1\]=-1 is outside range\(2\)\)"),
    ((0, 0, 0.0, 0), TypeError, r"got \(0, 0, 0.0, 0\)"),
    ((True, 0, 0, 0), TypeError, r"got \(True, 0, 0, 0\)"),
    (3, TypeError, "got 3"),
])
def test_trace_rejects_bad_at(at, kind, got):
    rule = rf"trace: at must be \(n, c_out, \*position\), 4 ints indexing the output of shape \(1, 1, 2, 2\) {RANGES}"
    with pytest.raises(kind, match=rule + ", " + got):
        trace(X22, W22, at=at)


def test_trace_rejects_batched_at_for_unbatched_input():
    with pytest.raises(ValueError, match=r"at must be \(c_out, \*position\) \(unbatched input\), 3 ints indexing "
                                         r"the output of shape \(1, 2, 2\) \(c_out in range\(1\), .*\), "
                                         r"got \(0, 0, 0, 0\) \(4 entries\)"):
        trace(X22[0], W22, at=(0, 0, 0, 0))
    assert trace(X22[0], W22, at=(0, 1, 0)).result == 173


def test_trace_rejects_bad_arrays_as_conv_does():
    with pytest.raises(TypeError, match="trace: weight must have the same dtype as input"):
        trace(X22, W22.astype(np.float64), at=(0, 0, 0, 0))
    with pytest.raises(ValueError, match=r"trace: bias must be 1-D of length C_out=1"):
        trace(X22, W22, np.array([1, 2]), at=(0, 0, 0, 0))


# -- im2col ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "flip"), FLIPPED[::2], ids=FLIP_IDS[::2])
def test_im2col_matrices_product_is_the_convolution(case, flip):
    x, w, _ = case.arrays(np.int64)
    m = im2col_matrices(x, w, **case.kwargs(), flip=flip)
    rows = case.batch * prod(case.output_size)
    columns = (case.in_channels // case.groups) * prod(case.kernel_size)
    if case.groups == 1:
        assert m.unrolled.shape == (rows, columns) and m.filters.shape == (columns, case.out_channels)
        assert m.product().shape == (rows, case.out_channels)
    else:
        assert m.unrolled.shape == (case.groups, rows, columns)
        assert m.filters.shape == (case.groups, columns, case.out_channels // case.groups)
    assert len(m.row_labels) == rows and len(m.column_labels) == columns
    out = m.output()
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, cl.conv(x, w, **case.kwargs(), flip=flip))
    if rows:  # a row of the unrolled input is the window trace() shows for that position
        rng = _rng(case, "row")
        row = int(rng.integers(rows))
        c_out = int(rng.integers(case.out_channels))
        group = c_out // (case.out_channels // case.groups)
        n, *position = m.row_labels[row]
        at = (n, c_out, *position) if case.batched else (c_out, *position)
        t = trace(x, w, at=at, **case.kwargs(), flip=flip)
        unrolled = m.unrolled if case.groups == 1 else m.unrolled[group]
        filters = m.filters if case.groups == 1 else m.filters[group]
        np.testing.assert_array_equal(unrolled[row], t.window.ravel())
        np.testing.assert_array_equal(filters[:, c_out % filters.shape[1]], t.kernel.ravel())


@pytest.mark.parametrize(("case", "flip"), FLIPPED, ids=FLIP_IDS)
def test_direct_equals_im2col(case, flip):
    x, w, _ = case.arrays(np.int64)
    identity = check_direct_equals_im2col(x, w, **case.kwargs(), flip=flip)
    assert isinstance(identity, Identity) and identity.name == "direct == im2col"
    assert identity.holds and identity.max_abs_difference == 0 and identity.tolerance == 0
    assert identity.left.shape == identity.right.shape == case.output_shape
    np.testing.assert_array_equal(identity.left, cl.conv(x, w, **case.kwargs(), flip=flip))


@pytest.mark.parametrize("case", CASES[::4], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_direct_equals_im2col_in_floating_point(case, dtype):
    x, w, _ = case.arrays(dtype)
    identity = check_direct_equals_im2col(x, w, **case.kwargs())
    assert identity.holds, str(identity)
    assert identity.left.dtype == dtype
    if identity.left.size:  # a rounding bound, not a blanket pass
        assert 0 < identity.tolerance < 0.05 * np.abs(identity.left).max()


# -- the flip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_flip_is_correlation_with_the_reversed_kernel(case):
    x, w, _ = case.arrays(np.int64)
    chain = check_flip(x, w, **case.kwargs())
    assert isinstance(chain, IdentityChain) and chain.holds, str(chain)
    assert chain.labels[:2] == ("flip=True", "reversed weight")
    assert all(side.shape == case.output_shape for side in chain.sides)
    assert chain.max_abs_difference == 0
    np.testing.assert_array_equal(chain["reversed weight"], cl.conv(x, _reversed(w), **case.kwargs()))


SCIPY_SHAPES = [((11,), (3,)), ((10,), (4,)), ((7, 6), (3, 2)), ((6, 5), (2, 3)), ((5, 4, 6), (3, 2, 1))]


@pytest.mark.parametrize(("size", "kernel"), SCIPY_SHAPES)
@pytest.mark.parametrize("mode", ["valid", "full", "same"])
@pytest.mark.parametrize("batch", [(), (1,), (3,)])
def test_flip_equals_scipy_convolve(size, kernel, mode, batch):
    rng = np.random.default_rng(len(size) * 10 + len(batch))
    x = rng.integers(-9, 10, size=(*batch, 1, *size))
    w = rng.integers(-9, 10, size=(1, 1, *kernel))
    # scipy's "same" keeps in1's size, centred with the odd sample dropped low.
    padding = {"valid": 0, "full": tuple(k - 1 for k in kernel),
               "same": tuple(((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in kernel)}[mode]
    chain = check_flip(x, w, padding=padding)
    assert chain.labels[-1] == f"scipy.signal.convolve(mode={mode!r})"
    assert chain.holds and chain.max_abs_difference == 0
    expected = scipy.signal.convolve(x.reshape(-1, *size)[0], w[0, 0], mode=mode)
    np.testing.assert_array_equal(chain.sides[-1].reshape(-1, *expected.shape)[0], expected)


def test_flip_equals_scipy_convolve_in_floating_point_and_for_padding_modes_without_padding():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 1, 9, 8))
    w = rng.standard_normal((1, 1, 3, 3))
    chain = check_flip(x, w, padding="same")
    assert chain.labels[-1] == "scipy.signal.convolve(mode='same')" and chain.holds
    assert chain.max_abs_difference < 1e-13
    valid = check_flip(x, w, padding_mode="reflect")  # nothing to pad: the mode does not matter
    assert valid.labels[-1] == "scipy.signal.convolve(mode='valid')" and valid.holds


@pytest.mark.parametrize("params", [
    dict(stride=2, padding=0),
    dict(dilation=2),
    dict(padding=2, padding_mode="reflect"),
    dict(padding=(1, 0)),  # not one of scipy's modes
])
def test_flip_has_no_scipy_side_where_scipy_has_no_such_problem(params):
    x, w = np.arange(36).reshape(1, 1, 6, 6), np.arange(9).reshape(1, 1, 3, 3)
    chain = check_flip(x, w, **params)
    assert chain.labels == ("flip=True", "reversed weight") and chain.holds
    two_channels = check_flip(np.ones((1, 2, 6, 6), int), np.ones((1, 2, 3, 3), int))
    assert len(two_channels.sides) == 2 and two_channels.holds


def test_flip_check_catches_a_missing_reversal(monkeypatch):
    x, w = np.arange(16).reshape(1, 1, 4, 4), np.array([[[[1, 2], [3, 4]]]])
    assert check_flip(x, w).holds
    monkeypatch.setattr(checks, "reverse_spatial", lambda a, rank: a)  # "forget" to reverse
    broken = check_flip(x, w)
    assert not broken.holds and not broken.identities[0].holds
    assert broken.max_abs_difference > 0 and "FAILS" in str(broken)


# -- the input gradient, three ways ---------------------------------------------------------------


@pytest.mark.parametrize(("case", "flip"), FLIPPED, ids=FLIP_IDS)
def test_input_gradient_three_ways(case, flip):
    _, w, _ = case.arrays(np.int64)
    g = _grad_output(case)
    chain = check_input_gradient(case.input_shape, w, g, **case.kwargs(), flip=flip)
    assert chain.holds and chain.max_abs_difference == 0, str(chain)
    expressible = case.canonical_mode == "zeros" or all(pair == (0, 0) for pair in case.padding_pairs)
    assert chain.labels == (("scatter", "full", "conv_transpose") if expressible else ("scatter", "full"))
    assert all(side.shape == case.input_shape for side in chain.sides)
    np.testing.assert_array_equal(chain["full"], cl.grad.conv_input(case.input_shape, w, g, **case.kwargs(),
                                                                     flip=flip, algorithm="full"))


@pytest.mark.parametrize("case", CASES[1::6], ids=str)
def test_input_gradient_three_ways_in_floating_point(case):
    _, w, _ = case.arrays(np.float64)
    g = _grad_output(case, np.float64) + _rng(case, "noise").standard_normal(case.output_shape)
    chain = check_input_gradient(case.input_shape, w, g, **case.kwargs())
    assert chain.holds, str(chain)
    if g.size:  # a rounding bound, not a blanket pass
        largest = max(np.abs(side).max() for side in chain.sides)
        assert all(0 < identity.tolerance < 1e-8 * max(largest, 1) for identity in chain.identities)


def test_input_gradient_of_an_empty_input_has_no_conv_transpose_side():
    chain = check_input_gradient((1, 1, 0), np.ones((1, 1, 1)), np.ones((1, 1, 2)), padding=1)
    assert chain.holds and chain.labels == ("scatter", "full") and chain.sides[0].shape == (1, 1, 0)
    assert "conv_transpose" not in chain.name


def test_input_gradient_check_catches_a_missing_rotation(monkeypatch):
    w = np.array([[[[1, 2], [3, 4]]]])
    g = np.arange(4).reshape(1, 1, 2, 2)
    assert check_input_gradient((1, 1, 3, 3), w, g, flip=True).holds
    monkeypatch.setattr(checks, "oriented_kernel", lambda weight, flip: weight)  # conv_transpose side unflipped
    broken = check_input_gradient((1, 1, 3, 3), w, g, flip=True)
    assert [identity.holds for identity in broken.identities] == [True, False] and not broken


def test_identity_and_chain_render_as_text_and_json():
    chain = check_input_gradient((1, 1, 3, 3), np.array([[[[1, 2], [3, 4]]]]), np.ones((1, 1, 2, 2), int))
    text = str(chain)
    assert text.splitlines()[0].endswith(": holds")
    assert "  scatter == full: holds (max |left - right| = 0, tolerance 0, shape (1, 1, 3, 3))" in text
    data = json.loads(json.dumps(chain.to_dict()))
    assert data["holds"] is True and list(data["sides"]) == ["scatter", "full", "conv_transpose"]
    assert data["sides"]["scatter"][0][0] == [[1, 3, 2], [4, 10, 6], [3, 7, 4]]
    with pytest.raises(KeyError, match="label must be one of 'scatter', 'full', 'conv_transpose', got 'fft'"):
        chain["fft"]
    identity = chain.identities[0]
    assert json.loads(json.dumps(identity.to_dict()))["name"] == "scatter == full"
    assert repr(identity).startswith("Identity(name='scatter == full', holds=True")
    with pytest.raises(ValueError, match="read-only"):
        chain.sides[0][0, 0, 0, 0] = 7


# -- the convolution as one sparse matrix ---------------------------------------------------------


@pytest.mark.parametrize(("case", "flip"), FLIPPED[:100], ids=FLIP_IDS[:100])
def test_conv_matrix_forward_and_transpose(case, flip):
    x, w, _ = case.arrays(np.int64)
    M = conv_matrix(case.input_shape, w, **case.kwargs(), flip=flip)
    out_elements, in_elements = prod(case.output_shape), prod(case.input_shape)
    assert isinstance(M, scipy.sparse.csr_matrix) and M.shape == (out_elements, in_elements)
    assert M.has_canonical_format and M.dtype == np.int64
    assert M.nnz <= out_elements * case.terms_per_output
    out = cl.conv(x, w, **case.kwargs(), flip=flip)
    np.testing.assert_array_equal(M @ x.ravel(), out.ravel())
    g = _grad_output(case)
    grad_input = cl.grad.conv_input(case.input_shape, w, g, **case.kwargs(), flip=flip)
    np.testing.assert_array_equal(M.T @ g.ravel(), grad_input.ravel())


SMALL = [case for case in CASES if 0 < prod(case.input_shape) <= 150][:24]


@pytest.mark.parametrize("case", SMALL, ids=str)
def test_conv_matrix_columns_are_the_responses_to_unit_inputs(case):
    """Column j of M is conv(e_j): the obviously-right way to write a linear map as a matrix."""
    _, w, _ = case.arrays(np.int64)
    M = conv_matrix(case.input_shape, w, **case.kwargs()).toarray()
    basis = np.eye(prod(case.input_shape), dtype=np.int64).reshape(-1, *case.input_shape)
    for j, unit in enumerate(basis):
        np.testing.assert_array_equal(M[:, j], cl.conv(unit, w, **case.kwargs()).ravel())


def test_conv_matrix_sums_taps_that_read_the_same_sample():
    # reflect by 1 around (a, b): b | a b | a, so the window b a b reads b twice.
    M = conv_matrix((1, 1, 2), np.array([[[1, 10, 100]]]), padding=1, padding_mode="reflect")
    assert M.toarray().tolist() == [[10, 101], [101, 10]]
    assert M.nnz == 4 and M.has_canonical_format  # 6 taps read, duplicates summed
    circular = conv_matrix((1, 2), np.array([[[1, 2, 3, 4, 5]]]), padding=2, padding_mode="circular")
    assert circular.toarray().tolist() == [[1 + 3 + 5, 2 + 4], [2 + 4, 1 + 3 + 5]]


def test_conv_matrix_is_sparse_and_keeps_zero_taps():
    w = np.zeros((4, 3, 3, 3))
    w[:, :, 1, 1] = 1.0  # only the centre tap is non-zero
    M = conv_matrix((2, 3, 16, 16), w, padding=1)
    outputs = 2 * 4 * 16 * 16
    assert M.shape == (outputs, 2 * 3 * 16 * 16)
    # Each output reads 3 channels x the taps that land inside the image: 2 or 3 per axis (46 over 16 positions).
    assert M.nnz == 2 * 4 * 3 * 46 ** 2 < outputs * 3 * 9
    assert M.nnz / prod(M.shape) < 0.02
    assert np.count_nonzero(M.data) == outputs * 3  # zero taps are stored: the pattern shows what is read
    np.testing.assert_array_equal(M @ np.arange(1536.0), np.repeat(np.arange(1536.0).reshape(2, 1, 3, 256).sum(2),
                                                                   4, axis=1).ravel())


def test_conv_matrix_unbatched_and_float16():
    w = np.arange(12, dtype=np.float64).reshape(2, 2, 3)
    assert (conv_matrix((2, 7), w, stride=2) != conv_matrix((1, 2, 7), w, stride=2)).nnz == 0
    M16 = conv_matrix((1, 2, 7), w.astype(np.float16))
    assert M16.dtype == np.float32  # scipy.sparse has no float16: the accumulation dtype
    x = np.arange(14, dtype=np.float16).reshape(1, 2, 7)
    np.testing.assert_allclose(M16 @ x.ravel(), cl.conv(x, w.astype(np.float16)).ravel(), rtol=1e-3)


@pytest.mark.parametrize(("shape", "kind", "match"), [
    (np.zeros((1, 1, 4)), TypeError, "conv_matrix: input_shape must be a tuple of ints"),
    ((1, 1, 4.0), TypeError, "conv_matrix: input_shape must be a tuple of ints"),
    ((1, 2, 4), ValueError, r"conv_matrix: input must have 1 channels"),
])
def test_conv_matrix_rejects_bad_input_shape(shape, kind, match):
    with pytest.raises(kind, match=match):
        conv_matrix(shape, np.ones((1, 1, 2)))
