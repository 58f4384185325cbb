"""``correlate`` and ``convolve`` against ``scipy.signal``; ``conv(flip=True)`` against ``scipy.signal.convolve``.

Every rank (1-d to 3-d), mode (full/same/valid, even kernels, ``in2`` larger than
``in1``, which SciPy handles by swapping), method (auto/direct/fft), real,
complex and integer data, and mixed dtypes. Deliberate, documented differences
from SciPy are tested as such: integer results are exact int64 (SciPy keeps the
input width), and ``method="fft"`` refuses integer input (SciPy rounds).
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl

signal = pytest.importorskip("scipy.signal")

# (in1 shape, in2 shape) per rank: odd and even kernels, in2 larger in every
# dimension, equal sizes, a size-1 axis, and one pair where neither fits inside
# the other (full and same only; valid refuses it, as SciPy does).
SHAPES = {
    1: [((9,), (3,)), ((8,), (4,)), ((3,), (7,)), ((4,), (6,)), ((5,), (5,)), ((1,), (3,)), ((6,), (1,))],
    2: [((6, 7), (3, 3)), ((5, 6), (2, 4)), ((3, 4), (5, 6)), ((4, 4), (4, 4)), ((1, 5), (1, 2)), ((4, 5), (2, 6))],
    3: [((4, 5, 3), (3, 2, 3)), ((3, 4, 4), (2, 2, 2)), ((2, 3, 2), (3, 4, 3)), ((3, 2, 4), (2, 3, 2))],
}
MODES = ("full", "same", "valid")
METHODS = ("auto", "direct", "fft")
OPS = ("correlate", "convolve")


def _fits(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b)) or all(y >= x for x, y in zip(a, b))


def _draw(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    if kind == "real":
        return rng.standard_normal(shape)
    if kind == "complex":
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return rng.integers(-20, 21, size=shape)  # int64


@pytest.mark.parametrize("kind", ["real", "complex"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("rank", [1, 2, 3], ids=lambda r: f"{r}d")
def test_matches_scipy_floating(rank, op, mode, method, kind):
    rng = np.random.default_rng([rank, len(mode), len(method)])
    for s1, s2 in SHAPES[rank]:
        a, b = _draw(rng, s1, kind), _draw(rng, s2, kind)
        if mode == "valid" and not _fits(s1, s2):
            with pytest.raises(ValueError):
                getattr(signal, op)(a, b, mode=mode, method=method)
            with pytest.raises(ValueError):
                getattr(cl, op)(a, b, mode=mode, method=method)
            continue
        expected = getattr(signal, op)(a, b, mode=mode, method=method)
        out = getattr(cl, op)(a, b, mode=mode, method=method)
        assert out.dtype == expected.dtype, (s1, s2)
        assert out.shape == expected.shape, (s1, s2)
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12, err_msg=f"{s1} {s2}")


@pytest.mark.parametrize("method", ["auto", "direct"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("rank", [1, 2, 3], ids=lambda r: f"{r}d")
def test_matches_scipy_integers_exactly(rank, op, mode, method):
    rng = np.random.default_rng([rank, len(mode), len(method), 9])
    for s1, s2 in SHAPES[rank]:
        if mode == "valid" and not _fits(s1, s2):
            continue
        a, b = _draw(rng, s1, "int"), _draw(rng, s2, "int")
        expected = getattr(signal, op)(a, b, mode=mode, method=method)
        out = getattr(cl, op)(a, b, mode=mode, method=method)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, expected, err_msg=f"{s1} {s2}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32])
@pytest.mark.parametrize("op", OPS)
def test_narrow_integers_are_exact_int64(op, dtype):
    """SciPy keeps int8 and wraps around; convolab returns the exact sums as int64."""
    a = np.full((6, 5), 100, dtype=dtype)
    b = np.full((3, 3), 100, dtype=dtype)
    out = getattr(cl, op)(a, b)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, getattr(signal, op)(a.astype(np.int64), b.astype(np.int64)))
    assert out.max() == 9 * 100 * 100


@pytest.mark.parametrize("op", OPS)
def test_uint32_beyond_int64_is_exact_or_refused(op):
    """(2**32 - 1)**2 does not fit the int64 result: refuse, or be exact; never wrap around."""
    big = np.array([2**32 - 1, 1], dtype=np.uint32)
    try:
        out = getattr(cl, op)(big, big)
    except (TypeError, ValueError, OverflowError):
        return
    exact = getattr(signal, op)(big.astype(object), big.astype(object), method="direct")
    assert [int(v) for v in out] == [int(v) for v in exact]


@pytest.mark.parametrize("op", OPS)
def test_fft_method_refuses_integers(op):
    with pytest.raises(ValueError, match="integer"):
        getattr(cl, op)(np.arange(6), np.array([1, 2]), method="fft")
    # floats are fine, and agree with SciPy
    np.testing.assert_allclose(getattr(cl, op)(np.arange(6.0), [1.0, 2.0], method="fft"),
                               getattr(signal, op)(np.arange(6.0), [1.0, 2.0], method="fft"), atol=1e-12)


MIXED = [
    (np.int64, np.float64),
    (np.int32, np.float32),
    (np.float32, np.complex64),
    (np.float64, np.complex64),
    (np.float16, np.float32),
    (np.float16, np.float16),
    (np.uint8, np.float64),
    (np.int8, np.uint8),
    (np.int16, np.int64),
    (np.float32, np.float32),
    (np.complex64, np.complex64),
]


MIXED_RUNS = [pytest.param(dtypes, method, id=f"{np.dtype(dtypes[0]).name}-{np.dtype(dtypes[1]).name}-{method}")
              for dtypes in MIXED for method in ("auto", "fft")
              if method == "auto" or np.result_type(*dtypes).kind not in "iu"]  # fft refuses integers


@pytest.mark.parametrize("dtypes,method", MIXED_RUNS)
@pytest.mark.parametrize("op", OPS)
def test_mixed_dtypes_promote_as_scipy(op, dtypes, method):
    rng = np.random.default_rng(5)
    promoted = np.result_type(*dtypes)

    def draw(shape, dtype):
        values = rng.integers(-6, 7, size=shape) if np.dtype(dtype).kind in "iuf" else \
            rng.integers(-6, 7, size=shape) + 1j * rng.integers(-6, 7, size=shape)
        return np.abs(values).astype(dtype) if np.dtype(dtype).kind == "u" else values.astype(dtype)

    for mode in MODES:
        a, b = draw((7, 6), dtypes[0]), draw((3, 4), dtypes[1])
        out = getattr(cl, op)(a, b, mode=mode, method=method)
        expected_dtype = np.dtype(np.int64) if promoted.kind in "iu" else promoted
        assert out.dtype == expected_dtype
        # reference: SciPy in the widest type of the same kind, where its arithmetic is exact
        wide = np.complex128 if promoted.kind == "c" else np.float64
        expected = getattr(signal, op)(a.astype(wide), b.astype(wide), mode=mode, method="direct")
        if method == "auto":
            # small integer values (|sum| <= 12 * 36 < 2048): every product and partial sum is
            # exact in any accumulation dtype, float16's float32 included
            np.testing.assert_array_equal(out, expected.astype(out.dtype))
        else:
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_array_likes_and_bool():
    np.testing.assert_array_equal(cl.convolve([1, 2, 3], [0, 1, 0.5]), signal.convolve([1, 2, 3], [0, 1, 0.5]))
    np.testing.assert_array_equal(cl.correlate([[1, 2], [3, 4]], [[1, 0]], mode="same"),
                                  signal.correlate([[1, 2], [3, 4]], [[1, 0]], mode="same"))
    mask = np.array([True, False, True, True])
    np.testing.assert_array_equal(cl.convolve(mask, [1, 1]), signal.convolve(mask.astype(int), [1, 1]))


def test_zero_dimensional_and_empty_inputs():
    assert cl.convolve(np.array(3.0), np.array(2.0)) == signal.convolve(np.array(3.0), np.array(2.0)) == 6.0
    assert cl.correlate(np.array(3.0), np.array(2.0j)) == signal.correlate(np.array(3.0), np.array(2.0j)) == -6.0j
    # empty inputs give an empty result (older SciPy returned np.array([]); SciPy 1.17 raises instead)
    assert cl.correlate(np.array([]), np.array([])).size == 0
    assert cl.convolve(np.zeros((0, 3)), np.ones((2, 2))).size == 0


@pytest.mark.parametrize("op", OPS)
def test_rank_mismatch_and_bad_arguments_refused(op):
    with pytest.raises(ValueError):
        getattr(cl, op)(np.ones((3, 3)), np.ones(3))
    with pytest.raises(ValueError):
        getattr(cl, op)(np.ones(5), np.ones(3), mode="circular")
    with pytest.raises(ValueError):
        getattr(cl, op)(np.ones(5), np.ones(3), method="overlap-add")


@pytest.mark.parametrize("op", OPS)
def test_correlate_conjugates_in2_convolve_does_not(op):
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1j, 0.0])
    out = getattr(cl, op)(a, b)
    np.testing.assert_allclose(out, getattr(signal, op)(a, b), atol=1e-14)
    if op == "correlate":  # sum a[n+k] conj(b[k]), b reversed: out[0] = a[0] * conj(b[1]) ... = conj(1j) * a
        np.testing.assert_allclose(out, [0, -1j, -2j, -3j], atol=1e-14)
    else:
        np.testing.assert_allclose(out, [1j, 2j, 3j, 0], atol=1e-14)


# -- conv(flip=True) is scipy.signal.convolve on one channel --------------------------------------

FLIP_SHAPES = [
    ((9,), (3,)), ((10,), (4,)), ((7,), (1,)),
    ((7, 8), (3, 3)), ((6, 5), (2, 4)), ((5, 5), (5, 1)),
    ((5, 4, 6), (3, 3, 2)), ((4, 4, 4), (2, 2, 2)),
]


def _one_channel(a: np.ndarray) -> np.ndarray:
    return a[np.newaxis, np.newaxis]


@pytest.mark.parametrize("kind", ["real", "complex", "int"])
@pytest.mark.parametrize("shapes", FLIP_SHAPES, ids=lambda s: f"{'x'.join(map(str, s[0]))}-k{'x'.join(map(str, s[1]))}")
def test_conv_flip_equals_scipy_convolve(shapes, kind):
    rng = np.random.default_rng(len(shapes[0]) * 100 + sum(shapes[1]))
    x, w = _draw(rng, shapes[0], kind), _draw(rng, shapes[1], kind)
    check = np.testing.assert_array_equal if kind == "int" else \
        (lambda actual, desired: np.testing.assert_allclose(actual, desired, rtol=1e-12, atol=1e-12))
    for padding, mode in (("valid", "valid"), ("full", "full")):
        out = cl.conv(_one_channel(x), _one_channel(w), padding=padding, flip=True)[0, 0]
        check(out, signal.convolve(x, w, mode=mode, method="direct"))
    # SciPy's "same" centres with the odd unit low: padding ((k-1) - (k-1)//2, (k-1)//2)
    scipy_same = tuple(((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in w.shape)
    out = cl.conv(_one_channel(x), _one_channel(w), padding=scipy_same, flip=True)[0, 0]
    check(out, signal.convolve(x, w, mode="same", method="direct"))
    # convolab's "same" puts the odd unit high: the full result read from ceil((k-1)/2), not floor
    full = signal.convolve(x, w, mode="full", method="direct")
    start = tuple(-(-(k - 1) // 2) for k in w.shape)
    out = cl.conv(_one_channel(x), _one_channel(w), padding="same", flip=True)[0, 0]
    check(out, full[tuple(slice(s, s + n) for s, n in zip(start, x.shape))])
    if all(k % 2 for k in w.shape):  # odd kernels: the two "same" agree
        check(out, signal.convolve(x, w, mode="same", method="direct"))


@pytest.mark.parametrize("stride,dilation", [(1, 2), (2, 1), (3, 2), (2, 3)], ids=lambda v: str(v))
@pytest.mark.parametrize("rank", [1, 2, 3], ids=lambda r: f"{r}d")
def test_conv_flip_strided_dilated_equals_scipy_convolve(rank, stride, dilation):
    """Stride subsamples SciPy's valid result; dilation is a kernel spread with zeros."""
    rng = np.random.default_rng(rank * 10 + stride + dilation)
    x = rng.standard_normal((11, 9, 8)[:rank])
    w = rng.standard_normal((2, 3, 2)[:rank])
    spread = np.zeros(tuple(dilation * (k - 1) + 1 for k in w.shape))
    spread[tuple(slice(None, None, dilation) for _ in w.shape)] = w
    expected = signal.convolve(x, spread, mode="valid", method="direct")[tuple(slice(None, None, stride)
                                                                                for _ in w.shape)]
    for algorithm in ("direct", "im2col", "fft"):
        out = cl.conv(_one_channel(x), _one_channel(w), stride=stride, dilation=dilation, flip=True,
                      algorithm=algorithm)[0, 0]
        np.testing.assert_allclose(out, expected, rtol=1e-11, atol=1e-12, err_msg=algorithm)


def test_conv_without_flip_is_scipy_correlate():
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((6, 7)), rng.standard_normal((3, 2))
    np.testing.assert_allclose(cl.conv2d(_one_channel(x), _one_channel(w))[0, 0],
                               signal.correlate(x, w, mode="valid", method="direct"), rtol=1e-12, atol=1e-12)
