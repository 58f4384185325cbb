"""Edge cases of the forward convolution: empty batches, unbatched input, memory, layouts, dtypes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import convolab as cl
from convolab.spec import PADDING_MODES

ALGORITHMS = ("auto", "direct", "im2col", "fft")
EXACT_ALGORITHMS = ("auto", "direct", "im2col")
OPS = {1: cl.conv1d, 2: cl.conv2d, 3: cl.conv3d}


def integer_valued(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Small integers stored as floats: every sum is exact, so layouts can be compared bit for bit."""
    return rng.integers(-4, 5, size=shape).astype(dtype)


def reference_conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Zero-padded grouped cross-correlation in Python integers (object arrays): no overflow, no rounding.

    ``x`` is ``(N, C_in, *spatial)``, ``w`` ``(C_out, C_in/groups, *kernel)``; ints for stride/padding/dilation.
    """
    x = np.asarray(x).astype(object)  # NumPy integers become Python ints
    w = np.asarray(w).astype(object)
    rank = w.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * rank, mode="constant", constant_values=0)
    kernel = w.shape[2:]
    out_size = [(xp.shape[2 + i] - dilation * (kernel[i] - 1) - 1) // stride + 1 for i in range(rank)]
    c_out, c_per_group = w.shape[0], w.shape[1]
    o_per_group = c_out // groups
    out = np.empty((x.shape[0], c_out, *out_size), dtype=object)
    for n, o, *pos in np.ndindex(*out.shape):
        g = o // o_per_group
        total = 0 if bias is None else int(bias[o])
        for c in range(c_per_group):
            for tap in np.ndindex(*kernel):
                index = tuple(p * stride + t * dilation for p, t in zip(pos, tap))
                total += int(xp[(n, g * c_per_group + c, *index)]) * int(w[(o, c, *tap)])
        out[(n, o, *pos)] = total
    return out


def test_reference_conv_on_the_classic_example():
    """The Python-int reference itself gives the textbook numbers."""
    out = reference_conv(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]))
    assert out.tolist() == [[[[83, 113], [173, 203]]]]


# ---------------------------------------------------------------- empty batch


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int8, np.int32, np.uint8, np.complex128])
def test_empty_batch_gives_empty_result_of_right_shape_and_dtype(rank, dtype):
    x = np.ones((0, 4, *(5,) * rank), dtype=dtype)
    w = np.ones((6, 2, *(3,) * rank), dtype=dtype)
    b = np.ones(6, dtype=dtype)
    out = OPS[rank](x, w, b, stride=2, padding=1, groups=2)
    expected_shape = cl.output_shape(x.shape, w.shape, stride=2, padding=1, groups=2)
    assert expected_shape == (0, 6, *(3,) * rank)
    assert out.shape == expected_shape
    assert out.dtype == (np.int64 if np.dtype(dtype).kind in "iu" else dtype)
    assert out.size == 0


@pytest.mark.parametrize("algorithm", EXACT_ALGORITHMS + ("fft",))
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular", "replicate"])
def test_empty_batch_every_algorithm_and_mode(algorithm, padding_mode):
    x = np.ones((0, 3, 4, 6))
    w = np.ones((3, 1, 3, 2))
    out = cl.conv2d(x, w, np.zeros(3), padding="same", groups=3, padding_mode=padding_mode, algorithm=algorithm)
    assert out.shape == (0, 3, 4, 6)
    assert out.dtype == np.float64


def test_empty_batch_nd_and_unbatched_zero_channels():
    out = cl.conv(np.ones((0, 2, 3, 3, 3, 3)), np.ones((4, 2, 2, 2, 2, 2)))
    assert out.shape == (0, 4, 2, 2, 2, 2)
    # zero output channels: an empty result, not an error
    out = cl.conv2d(np.ones((2, 3, 5, 5)), np.ones((0, 3, 3, 3)))
    assert out.shape == (2, 0, 3, 3)


# ---------------------------------------------------------------- unbatched


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_unbatched_input_gives_unbatched_output(rank, algorithm):
    rng = np.random.default_rng(rank)
    x = integer_valued(rng, (4, *(5,) * rank))
    w = integer_valued(rng, (6, 2, *(2,) * rank))
    b = integer_valued(rng, (6,))
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2)
    out = OPS[rank](x, w, b, algorithm=algorithm, **kwargs)
    batched = OPS[rank](x[np.newaxis], w, b, algorithm=algorithm, **kwargs)
    assert out.shape == (6, *(3,) * rank)
    assert out.shape == cl.output_shape(x.shape, w.shape, **kwargs)
    np.testing.assert_allclose(out, batched[0], rtol=0, atol=1e-9)
    expected = reference_conv(x[np.newaxis], w, b, **kwargs)[0].astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)


def test_unbatched_generic_conv_reads_rank_from_weight():
    x = np.arange(2 * 4 * 4, dtype=np.int64).reshape(2, 4, 4)  # (C, H, W)
    w = np.ones((3, 2, 2, 2), dtype=np.int64)
    out = cl.conv(x, w)
    assert out.shape == (3, 3, 3)
    assert out.tolist() == reference_conv(x[None], w)[0].tolist()


# ---------------------------------------------------------------- inputs untouched


def _snapshot(*arrays: np.ndarray) -> list[bytes]:
    return [a.tobytes() for a in arrays]


@pytest.mark.parametrize("padding_mode", list(PADDING_MODES))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("flip", [False, True])
def test_inputs_are_never_modified(padding_mode, algorithm, flip):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 4, 5))
    w = rng.standard_normal((4, 2, 3, 2))
    b = rng.standard_normal(4)
    before = _snapshot(x, w, b)
    flags_before = [(a.flags.writeable, a.flags.c_contiguous) for a in (x, w, b)]
    out = cl.conv2d(x, w, b, stride=(1, 2), padding=(1, (2, 1)), groups=2,
                    padding_mode=padding_mode, flip=flip, algorithm=algorithm)
    assert out.shape == (2, 4, 4, 4)
    assert _snapshot(x, w, b) == before
    assert [(a.flags.writeable, a.flags.c_contiguous) for a in (x, w, b)] == flags_before


@pytest.mark.parametrize("dtype", [np.int8, np.float16, np.float32, np.complex64])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inputs_of_other_dtypes_are_never_modified(dtype, algorithm):
    if algorithm == "fft" and np.dtype(dtype).kind == "i":
        pytest.skip("fft refuses integers (tested in test_errors)")
    x = (np.arange(2 * 2 * 6) % 7 - 3).reshape(2, 2, 6).astype(dtype)
    w = (np.arange(3 * 2 * 3) % 5 - 2).reshape(3, 2, 3).astype(dtype)
    b = np.array([1, -2, 3]).astype(dtype)
    before = _snapshot(x, w, b)
    out = cl.conv1d(x, w, b, padding="same", padding_mode="reflect", algorithm=algorithm)
    assert out.shape == (2, 3, 6)
    assert _snapshot(x, w, b) == before


@pytest.mark.parametrize("method", ["auto", "direct", "fft"])
@pytest.mark.parametrize("mode", ["full", "valid", "same"])
def test_correlate_and_convolve_leave_their_arguments_alone(method, mode):
    a = np.arange(12.0).reshape(3, 4)
    v = np.array([[1.0, -2.0], [0.5, 3.0]])
    before = _snapshot(a, v)
    for fn in (cl.correlate, cl.convolve):
        out = fn(a, v, mode=mode, method=method)
        assert out.size > 0
        assert not np.shares_memory(out, a) and not np.shares_memory(out, v)
    assert _snapshot(a, v) == before


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_read_only_arrays_are_accepted(padding_mode, algorithm):
    rng = np.random.default_rng(3)
    x = integer_valued(rng, (2, 3, 5, 5))
    w = integer_valued(rng, (3, 1, 3, 3))
    b = integer_valued(rng, (3,))
    expected = cl.conv2d(x, w, b, padding=1, groups=3, padding_mode=padding_mode, algorithm=algorithm)
    before = _snapshot(x, w, b)
    for a in (x, w, b):
        a.flags.writeable = False
    out = cl.conv2d(x, w, b, padding=1, groups=3, padding_mode=padding_mode, algorithm=algorithm)
    np.testing.assert_array_equal(out, expected)
    assert out.flags.writeable  # the result is the caller's own array
    out[...] = 0  # and writing into it must not touch the read-only inputs
    assert _snapshot(x, w, b) == before


def test_read_only_integer_and_unpadded_inputs():
    """No padding and no cast: the only path where the input itself reaches the algorithm."""
    x = np.arange(1, 10, dtype=np.int64).reshape(1, 1, 3, 3)
    w = np.array([[[[9, 8], [7, 6]]]], dtype=np.int64)
    x.flags.writeable = False
    w.flags.writeable = False
    for algorithm in EXACT_ALGORITHMS:
        assert cl.conv2d(x, w, algorithm=algorithm).tolist() == [[[[83, 113], [173, 203]]]]
    assert cl.correlate(x[0, 0], w[0, 0], mode="valid").tolist() == [[83, 113], [173, 203]]


def test_read_only_broadcast_input():
    """A zero-stride broadcast view (read-only, every element the same memory) works."""
    x = np.broadcast_to(np.arange(5.0), (2, 3, 4, 5))
    assert not x.flags.writeable
    w = np.ones((1, 3, 2, 2))
    out = cl.conv2d(x, w)
    np.testing.assert_array_equal(out, cl.conv2d(np.ascontiguousarray(x), w))


# ---------------------------------------------------------------- layouts


def _layouts(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Non-contiguous (N=2, C=4, H=5, W=6) views, each holding integer-valued floats."""
    big = integer_valued(rng, (2, 4, 10, 18))
    nhwc = integer_valued(rng, (2, 5, 6, 4))
    return {
        "step-slices": big[:, :, ::2, ::3],
        "transposed": nhwc.transpose(0, 3, 1, 2),
        "fortran": np.asfortranarray(integer_valued(rng, (2, 4, 5, 6))),
        "reversed": integer_valued(rng, (2, 4, 5, 6))[:, ::-1, ::-1, :],
        "offset-slice": big[:, :, 3:8, 5:11],
        "broadcast": np.broadcast_to(integer_valued(rng, (1, 4, 5, 6)), (2, 4, 5, 6)),
    }


@pytest.mark.parametrize("layout", ["step-slices", "transposed", "fortran", "reversed", "offset-slice", "broadcast"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_non_contiguous_input_matches_contiguous_copy(layout, algorithm, padding_mode):
    rng = np.random.default_rng(11)
    x = _layouts(rng)[layout]
    assert x.shape == (2, 4, 5, 6)
    assert not x.flags.c_contiguous
    w_store = integer_valued(rng, (3, 3, 2, 6))
    w = w_store.transpose(3, 2, 1, 0)[:, :, ::-1, :]  # (6, 2, 3, 3), non-contiguous
    b = integer_valued(rng, (12,))[::2]  # (6,), strided
    kwargs = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2, padding_mode=padding_mode,
                  algorithm=algorithm)
    out = cl.conv2d(x, w, b, **kwargs)
    expected = cl.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(b), **kwargs)
    assert out.shape == expected.shape == (2, 6, 3, 4)
    if algorithm == "fft":
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-10)
    else:
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("rank", [1, 3])
def test_non_contiguous_other_ranks(rank):
    rng = np.random.default_rng(rank)
    big = integer_valued(rng, (2, 3, *(9,) * rank))
    x = big[(slice(None), slice(None), *(slice(None, None, 2),) * rank)]  # spatial 5
    w = np.asfortranarray(integer_valued(rng, (2, 3, *(2,) * rank)))
    for algorithm in ALGORITHMS:
        out = OPS[rank](x, w, padding=1, algorithm=algorithm)
        expected = OPS[rank](np.ascontiguousarray(x), np.ascontiguousarray(w), padding=1, algorithm=algorithm)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float16_returns_float16(algorithm):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float16)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    b = rng.standard_normal(4).astype(np.float16)
    out = cl.conv2d(x, w, b, padding=1, algorithm=algorithm)
    assert out.dtype == np.float16
    reference = cl.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1)
    np.testing.assert_allclose(out.astype(np.float64), reference, rtol=2e-3, atol=2e-2)


def test_float16_is_accumulated_in_float32():
    """4099 ones: a float16 running sum would stall at 2048 (2049 is not a float16); float32 gets 4099, rounded once."""
    x = np.ones((1, 1, 4099), dtype=np.float16)
    w = np.ones((1, 1, 4099), dtype=np.float16)
    out = cl.conv1d(x, w)
    assert out.dtype == np.float16
    assert float(out[0, 0, 0]) == float(np.float16(4099))  # 4100: rounded once, at the end


def test_float16_correlate_keeps_float16():
    out = cl.correlate(np.ones(5, np.float16), np.ones(2, np.float16), mode="valid")
    assert out.dtype == np.float16
    assert out.tolist() == [2.0] * 4


INTEGER_CASES = [
    # dtype, low, high (inclusive): the extremes are included explicitly
    (np.int8, -128, 127),
    (np.int16, -(2**15), 2**15 - 1),
    (np.int32, -(2**20), 2**20),
    (np.uint8, 0, 255),
]


@pytest.mark.parametrize(("dtype", "low", "high"), INTEGER_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("algorithm", EXACT_ALGORITHMS)
def test_integer_inputs_give_exact_int64(dtype, low, high, algorithm):
    rng = np.random.default_rng(int(np.dtype(dtype).itemsize) + len(algorithm))
    x = rng.integers(low, high, size=(2, 4, 5, 5), endpoint=True).astype(dtype)
    w = rng.integers(low, high, size=(4, 2, 3, 3), endpoint=True).astype(dtype)
    b = rng.integers(low, high, size=4, endpoint=True).astype(dtype)
    x[0, :, :3, :3] = high  # a window of extremes: the sum overflows the input dtype
    w[0] = high
    x[1, :, :3, :3] = low
    out = cl.conv2d(x, w, b, padding=1, groups=2, algorithm=algorithm)
    assert out.dtype == np.int64
    expected = reference_conv(x, w, b, padding=1, groups=2)
    assert out.tolist() == expected.tolist()
    assert max(abs(v) for v in expected.ravel()) > np.iinfo(dtype).max  # the case really overflows the input dtype


@pytest.mark.parametrize("algorithm", EXACT_ALGORITHMS)
def test_int32_results_beyond_int32_are_exact(algorithm):
    """Two taps of near-extreme int32 values: the sum needs 63 bits, and int64 holds it."""
    top = 2**31 - 1
    x = np.array([[[top, -top, top, top]]], dtype=np.int32)
    w = np.array([[[top, -top]]], dtype=np.int32)
    out = cl.conv1d(x, w, algorithm=algorithm)
    assert out.dtype == np.int64
    assert out.tolist() == [[[2 * top * top, -2 * top * top, 0]]]
    assert out.tolist() == reference_conv(x, w).tolist()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8])
def test_integer_correlate_and_convolve_are_exact_int64(dtype):
    info = np.iinfo(dtype)
    a = np.array([info.max, info.max, info.min, info.max], dtype=dtype)
    v = np.array([info.max, info.max], dtype=dtype)
    big_a, big_v = [int(t) for t in a], [int(t) for t in v]
    corr = cl.correlate(a, v, mode="valid")
    conv = cl.convolve(a, v, mode="full")
    assert corr.dtype == conv.dtype == np.int64
    assert corr.tolist() == [big_a[i] * big_v[0] + big_a[i + 1] * big_v[1] for i in range(3)]
    full = [sum(big_a[k] * big_v[n - k] for k in range(4) if 0 <= n - k < 2) for n in range(5)]
    assert conv.tolist() == full


def test_uint32_results_are_exact_or_refused():
    """uint32 is documented as exact in int64, but (2**32 - 1)**2 does not fit int64.

    The result must either be exact or be refused; a silently wrapped number is a bug.
    """
    top = 2**32 - 1
    x = np.full((1, 1, 1), top, dtype=np.uint32)
    try:
        out = cl.conv1d(x, x)
    except (OverflowError, ValueError, TypeError):
        return
    assert int(out[0, 0, 0]) == top * top, f"silently wrapped: {out[0, 0, 0]} instead of {top * top}"


# ---------------------------------------------------------------- aliasing


ALIAS_CASES = {
    "1x1-kernel": (np.arange(12.0).reshape(1, 1, 3, 4), np.ones((1, 1, 1, 1))),
    "1x1-unbatched": (np.arange(12.0).reshape(1, 3, 4), np.ones((1, 1, 1, 1))),
    "identity-ints": (np.arange(12).reshape(1, 1, 3, 4), np.ones((1, 1, 1, 1), dtype=np.int64)),
    "full-size-kernel": (np.arange(12.0).reshape(1, 1, 3, 4), np.ones((1, 1, 3, 4))),
    "multi-channel": (np.arange(24.0).reshape(2, 3, 2, 2), np.eye(3).reshape(3, 3, 1, 1)),
}


@pytest.mark.parametrize("case", list(ALIAS_CASES))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_result_never_aliases_the_inputs(case, algorithm):
    x, w = ALIAS_CASES[case]
    if algorithm == "fft" and x.dtype.kind == "i":
        pytest.skip("fft refuses integers")
    x_before, w_before = x.copy(), w.copy()
    out = cl.conv2d(x, w, algorithm=algorithm)
    assert not np.shares_memory(out, x)
    assert not np.shares_memory(out, w)
    out[...] = -1
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)


def test_result_never_aliases_bias_or_empty_inputs():
    x = np.zeros((1, 2, 1, 1))
    w = np.zeros((2, 2, 1, 1))
    b = np.array([1.0, 2.0])
    out = cl.conv2d(x, w, b)
    assert out.ravel().tolist() == [1.0, 2.0]
    assert not np.shares_memory(out, b)
    empty = np.zeros((0, 2, 3, 3))
    out = cl.conv2d(empty, w, b)
    assert out.shape == (0, 2, 3, 3)
    assert not np.shares_memory(out, empty)


def test_repeated_calls_give_identical_results():
    """No hidden state: the same call twice, and after other calls, returns the same bits."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    results = []
    for algorithm, _ in itertools.product(ALGORITHMS, range(2)):
        results.append((algorithm, cl.conv2d(x, w, padding=1, algorithm=algorithm)))
    for (a1, r1), (a2, r2) in zip(results[::2], results[1::2]):
        assert a1 == a2
        np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("before_2_1", [False, True])
def test_reshaped_view_without_numpy_2_1s_copy_argument(monkeypatch, before_2_1):
    """gemm and Winograd read a kernel through ``_window.reshaped_view``: a view or None, also on NumPy
    before 2.1, whose ``reshape`` takes no ``copy`` (simulated: a TypeError for it)."""
    from convolab import _window

    if before_2_1:
        plain = np.reshape

        def old_reshape(a, shape, **keywords):
            if keywords:
                raise TypeError("reshape() got an unexpected keyword argument 'copy'")
            return plain(a, shape)

        monkeypatch.setattr(_window.np, "reshape", old_reshape)
    a = np.arange(24.0).reshape(2, 3, 4)
    view = _window.reshaped_view(a, (6, 4))
    assert view is not None and np.shares_memory(view, a) and view.shape == (6, 4)
    assert _window.reshaped_view(a.transpose(0, 2, 1), (2, 12)) is None
    x, w = np.random.default_rng(0).standard_normal((2, 3, 8, 8)), np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(cl.conv(x, w, padding=1, algorithm="gemm"), cl.conv(x, w, padding=1, algorithm="direct"),
                               rtol=1e-12, atol=1e-12)
