"""The algorithms ("direct", "im2col", "gemm", "depthwise", "fft") agree on every generated case.

Tolerances come from rounding-error bounds rather than guesses. Each output
element is a sum of ``n = C_in/groups * prod(kernel)`` products (plus the bias);
computed in a precision with unit roundoff ``u`` any summation order is within
``n * u * S`` of the exact value, where ``S`` is the same convolution of ``|x|``
and ``|w|`` (plus ``|b|``). Two such algorithms therefore differ by at most
``2 * n * u * S``: that is the tolerance for direct against im2col (a matrix
product). The FFT's error is not elementwise but relative to the size of the
whole problem (an output that is exactly zero comes back as ~1e-17), so it gets
``1e-4`` (float32) or ``1e-11`` (float64) of a global scale, ``max|x| *
max_f sum|w_f| + max|b|``, which bounds every ``S``.
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms.winograd import POINTS
from conv_cases import ConvCase, generate_cases
from test_space_to_batch import dilated_cases

CASES = generate_cases(300, seed=2)
ALGORITHMS = ("direct", "im2col", "gemm", "folded", "shifted", "depthwise", "winograd2", "winograd3", "winograd4",
              "fft", "compiled", "space_to_depth", "packed", "space_to_batch", "row_shifts", "broadcast")
#: Algorithms whose sums are exact products summed in some order (bounded like a matrix product).
SUMMING = ("im2col", "gemm", "folded", "shifted", "depthwise", "compiled", "space_to_depth", "packed", "row_shifts",
           "broadcast")
#: Algorithms that run float32 and float64 only (compiled kernels); the other dtypes keep the NumPy paths.
FLOAT_ONLY = ("compiled", "packed", "broadcast")


def runs(case: ConvCase, algorithm: str, dtype=np.float64) -> bool:
    """Whether ``algorithm`` can run ``case`` in ``dtype`` (depthwise needs one input channel per group;
    Winograd 3-tap kernels at stride 1, dilation 1 — it has its own cases below, and space_to_batch dilated
    ones (tests/test_space_to_batch.py); folded stride 1 and more than one tap along the last axis; row_shifts two
    axes at least and stride 1 on all but the last; compiled float32 and float64)."""
    if algorithm in FLOAT_ONLY and np.dtype(dtype) not in (np.float32, np.float64):
        return False
    if algorithm.startswith("winograd") or algorithm == "space_to_batch":
        return False
    if algorithm == "folded":
        return case.strides[-1] == 1 and case.kernel_size[-1] > 1
    if algorithm == "row_shifts":  # tests/test_row_shifts.py
        return case.rank >= 2 and all(s == 1 for s in case.strides[:-1])
    if algorithm == "space_to_depth":  # windows that never overlap, not 1x1 (tests/test_space_to_depth.py)
        axes = list(zip(case.kernel_size, case.strides, case.dilations))
        return all(k <= s and (d == 1 or k == 1) for k, s, d in axes) and any(k > 1 for k, _, _ in axes)
    return algorithm != "depthwise" or case.in_channels == case.groups
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32]


def winograd_cases(count: int) -> list[ConvCase]:
    """Generated cases with every kernel axis 3 taps, stride 1, dilation 1 (where the padding still fits)."""
    import dataclasses

    chosen = []
    for case in generate_cases(4 * count, seed=21):
        candidate = dataclasses.replace(case, kernel_size=(3,) * case.rank, stride=1, dilation=1)
        if case.batch > 0 and all(p >= 3 for p in candidate.padded_size):
            chosen.append(candidate)
    return chosen[:count]


def run(case: ConvCase, x, w, b, algorithm: str, **extra) -> np.ndarray:
    return cl.conv(x, w, b, **case.kwargs(), algorithm=algorithm, **extra)


def magnitude(case: ConvCase, x, w, b, **extra) -> np.ndarray:
    """``S``: the convolution of the absolute values, in float64 (the scale of each sum's terms)."""
    absolute = lambda a: None if a is None else np.abs(a).astype(np.float64)  # noqa: E731
    return run(case, absolute(x), absolute(w), absolute(b), "direct", **extra)


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def assert_within_summation_bound(actual, expected, case: ConvCase, scale, dtype) -> None:
    terms = case.terms_per_output + case.bias
    bound = 2 * terms * unit_roundoff(dtype) * scale
    error = np.abs(actual.astype(np.complex128) - expected.astype(np.complex128))
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
    assert np.all(error <= bound), f"error {error[worst]} > bound {bound[worst]} at {worst}"


def global_scale(x, w, b) -> float:
    """``max|x| * max_f sum|w_f| + max|b|``: bounds the magnitude of every output's terms."""
    if x.size == 0 or w.size == 0:
        return 0.0
    per_filter = np.abs(w.astype(np.complex128)).reshape(w.shape[0], -1).sum(axis=1)
    bias = 0.0 if b is None else float(np.abs(b.astype(np.complex128)).max())
    return float(np.abs(x.astype(np.complex128)).max() * per_filter.max()) + bias


def assert_fft_close(actual, expected, x, w, b, dtype) -> None:
    relative = 1e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-11
    np.testing.assert_allclose(actual, expected, rtol=relative, atol=relative * global_scale(x, w, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_algorithms_agree(case, dtype):
    x, w, b = case.arrays(dtype)
    scale = magnitude(case, x, w, b)
    results = {name: run(case, x, w, b, name) for name in ALGORITHMS if runs(case, name, dtype)}
    for name, out in results.items():
        assert out.dtype == dtype and out.shape == case.output_shape, name
    for name in SUMMING:
        if name in results:
            assert_within_summation_bound(results[name], results["direct"], case, scale, dtype)
    assert_fft_close(results["fft"], results["direct"], x, w, b, dtype)
    planned = cl.plan(case.input_shape, case.weight_shape, dtype, flip=False, **case.kwargs()).algorithm
    np.testing.assert_array_equal(run(case, x, w, b, "auto"), results[planned])  # auto runs the plan


@pytest.mark.parametrize("case", CASES[::6], ids=str)
def test_algorithms_agree_with_flip(case):
    x, w, b = case.arrays(np.float64)
    scale = magnitude(case, x, w, b, flip=True)
    direct = run(case, x, w, b, "direct", flip=True)
    for name in SUMMING:
        if runs(case, name):
            assert_within_summation_bound(run(case, x, w, b, name, flip=True), direct, case, scale, np.float64)
    assert_fft_close(run(case, x, w, b, "fft", flip=True), direct, x, w, b, np.float64)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["complex64", "complex128"])
@pytest.mark.parametrize("case", CASES[1::6], ids=str)
def test_algorithms_agree_on_complex(case, dtype):
    x, w, b = case.arrays(dtype)
    scale = magnitude(case, x, w, b)
    direct = run(case, x, w, b, "direct")
    assert direct.dtype == dtype
    # a complex product is 4 real products, 2 additions: allow 4x the real bound
    for name in SUMMING:
        if runs(case, name, dtype):
            assert_within_summation_bound(run(case, x, w, b, name), direct, case, 4 * scale, dtype)
    assert_fft_close(run(case, x, w, b, "fft"), direct, x, w, b, dtype)


def test_direct_is_the_definition():
    """The reference itself, checked by hand on a strided, dilated, padded, grouped case."""
    x = np.arange(1.0, 13.0).reshape(1, 2, 6)  # channel 0: 1..6, channel 1: 7..12
    w = np.array([[[1.0, -1.0]], [[2.0, 1.0]]])  # groups=2: one filter per channel
    out = cl.conv1d(x, w, np.array([0.5, -0.5]), stride=2, padding=((1, 0),), dilation=2, groups=2,
                    algorithm="direct")
    # channel 0 padded: 0 1 2 3 4 5 6; windows at 0, 2, 4 read taps (p, p+2)
    np.testing.assert_array_equal(out[0, 0], [0 - 2 + 0.5, 2 - 4 + 0.5, 4 - 6 + 0.5])
    # channel 1 padded: 0 7 8 9 10 11 12
    np.testing.assert_array_equal(out[0, 1], [0 + 8 - 0.5, 16 + 10 - 0.5, 20 + 12 - 0.5])


# -- integers: exact, and never through the FFT ---------------------------------------------------


@pytest.mark.parametrize("case", CASES[::3], ids=str)
def test_integer_inputs_identical_in_direct_and_im2col(case):
    dtype = INT_DTYPES[CASES.index(case) % len(INT_DTYPES)]
    x, w, b = case.arrays(dtype)
    direct = run(case, x, w, b, "direct")
    assert direct.dtype == np.int64
    for name in SUMMING:
        if runs(case, name, dtype):
            np.testing.assert_array_equal(run(case, x, w, b, name), direct, err_msg=name)
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    np.testing.assert_array_equal(direct, run(case, f64(x), f64(w), f64(b), "direct"))  # small values: exact in float64
    np.testing.assert_array_equal(run(case, x, w, b, "auto"), direct)


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_fft_refuses_integer_input(dtype):
    case = CASES[0]
    x, w, b = case.arrays(dtype)
    with pytest.raises(ValueError, match="fft"):
        run(case, x, w, b, "fft")


def test_integer_results_exact_beyond_float64():
    """Sums of int64 products past 2**53 stay exact (float64 would round them)."""
    rng = np.random.default_rng(0)
    x = rng.integers(2**27, 2**28, size=(2, 3, 9)).astype(np.int64)
    w = rng.integers(2**27, 2**28, size=(2, 3, 3)).astype(np.int64)
    exact = np.array([[[sum(int(x[n, c, o + j]) * int(w[f, c, j]) for c in range(3) for j in range(3))
                        for o in range(7)] for f in range(2)] for n in range(2)], dtype=np.int64)
    assert exact.max() > 2**53  # beyond float64's exact integers
    for algorithm in ("direct", "im2col", "gemm", "auto"):
        np.testing.assert_array_equal(cl.conv1d(x, w, algorithm=algorithm), exact)
    as_float = cl.conv1d(x.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    assert not np.array_equal(as_float, exact)  # the test would catch a float path


OVERFLOWING = [
    pytest.param(np.uint32, [2**32 - 1], [2**32 - 1], id="uint32-one-product"),  # one product > int64 max
    pytest.param(np.int32, [-2**31, -2**31], [-2**31, -2**31], id="int32-two-products"),  # sum == 2**63
    pytest.param(np.int64, [2**40, 2**40], [2**30, 2**30], id="int64-two-products"),
]


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "gemm"])
@pytest.mark.parametrize("dtype,x,w", OVERFLOWING)
def test_integer_results_beyond_int64_are_exact_or_refused(dtype, x, w, algorithm):
    """The dtype rule promises exact int64 results for integers up to uint32 (and refuses uint64
    because it does not fit int64). Where the true sum does not fit int64 (a single uint32
    product, (2**32 - 1)**2, already does not), the call must be refused or exact, never
    wrapped around (e.g. to a negative number)."""
    xa, wa = np.array([[x]], dtype=dtype), np.array([[w]], dtype=dtype)
    exact = sum(int(a) * int(b) for a, b in zip(x, w))
    try:
        out = cl.conv1d(xa, wa, algorithm=algorithm)
    except (TypeError, ValueError, OverflowError):
        return  # refused, as uint64 is
    assert int(out[0, 0, 0]) == exact


# -- float16: accumulated in float32, returned as float16 ----------------------------------------


def cases_for(algorithm: str, count: int, dtype=np.float64) -> list[ConvCase]:
    """``count`` generated cases ``algorithm`` can run in ``dtype``."""
    if algorithm.startswith("winograd"):
        return winograd_cases(count)
    if algorithm == "space_to_batch":
        return dilated_cases(count, seed=23)
    return [case for case in CASES if runs(case, algorithm, dtype)][:count]


@pytest.mark.parametrize("algorithm, case", [(name, case) for name in ALGORITHMS for case in cases_for(name, 30, np.float16)[::3]],
                         ids=str)
def test_float16_is_float32_computation_rounded(case, algorithm):
    x, w, b = case.arrays(np.float16)
    out = run(case, x, w, b, algorithm)
    assert out.dtype == np.float16 and out.shape == case.output_shape
    f32 = lambda a: None if a is None else a.astype(np.float32)  # noqa: E731
    np.testing.assert_array_equal(out, run(case, f32(x), f32(w), f32(b), algorithm).astype(np.float16))


@pytest.mark.parametrize("algorithm", [name for name in ALGORITHMS  # 3 taps; row_shifts refuses 1-d (its own file)
                                       if name not in FLOAT_ONLY + ("space_to_depth", "space_to_batch", "row_shifts")])
def test_float16_partial_sums_may_exceed_float16_range(algorithm):
    """60000 + 60000 overflows float16 (max 65504); accumulated in float32, the sum comes back."""
    x = np.array([[[60000.0, 60000.0, -60000.0]]], dtype=np.float16)
    w = np.ones((1, 1, 3), dtype=np.float16)
    out = cl.conv1d(x, w, algorithm=algorithm)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.array([[[60000.0]]], dtype=np.float16))


@pytest.mark.parametrize("algorithm", [name for name in ALGORITHMS if not name.startswith("winograd")  # 65 taps
                                       and name not in FLOAT_ONLY + ("space_to_depth", "space_to_batch", "row_shifts")])
def test_float16_small_terms_are_not_lost(algorithm):
    """2048 + 1 + 1 + ... : in float16 each +1 would round away; float32 keeps them."""
    x = np.concatenate([[2048.0], np.ones(64)]).astype(np.float16).reshape(1, 1, 65)
    w = np.ones((1, 1, 65), dtype=np.float16)
    out = cl.conv1d(x, w, algorithm=algorithm)
    assert out.dtype == np.float16
    assert float(out[0, 0, 0]) == 2048.0 + 64.0


# -- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Direct", "IM2COL", "winograd", None, 3])
def test_unknown_algorithm_refused(name):
    case = CASES[0]
    x, w, b = case.arrays(np.float64)
    with pytest.raises(ValueError, match="algorithm"):
        run(case, x, w, b, name)


def test_algorithms_registry():
    assert set(cl.ALGORITHMS) == set(ALGORITHMS)


def test_a_registered_algorithm_is_asked_for_by_name_and_planned_without_other_changes():
    """One class and one register call: ``algorithm=`` takes it, and "auto" weighs its estimate (plans made
    before it was registered are forgotten)."""
    from convolab.algorithms import Algorithm, Direct, register, unregister

    class Cheap(Direct):  # the definition again, with a cost model that wins every problem
        name = "cheap"
        automatic = True

        def estimate(self, spec, dtype):
            return 0.0

    shapes = ((2, 3, 8, 8), (4, 3, 3, 3))
    before = cl.plan(*shapes)
    x, w = np.random.default_rng(0).standard_normal(shapes[0]), np.ones(shapes[1])
    with pytest.raises(ValueError, match="'cheap'"):
        cl.conv2d(x, w, algorithm="cheap")
    register(Cheap())
    try:
        assert cl.plan(*shapes).algorithm == "cheap"
        np.testing.assert_array_equal(cl.conv2d(x, w, algorithm="cheap"), cl.conv2d(x, w, algorithm="direct"))
        np.testing.assert_array_equal(cl.conv2d(x, w), cl.conv2d(x, w, algorithm="direct"))
    finally:
        unregister("cheap")
    assert cl.plan(*shapes) == before
    with pytest.raises(ValueError, match="register: algorithm.name .*'gemm'"):
        register(type("Twin", (Direct,), {"name": "gemm"})())
    with pytest.raises(ValueError, match="register: algorithm.automatic needs an estimate"):
        register(type("Guess", (Algorithm,), {"name": "guess", "automatic": True})())
    with pytest.raises(TypeError, match="register: algorithm must be"):
        register(Direct)
    assert set(cl.ALGORITHMS) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inputs_not_modified(algorithm):
    for case in cases_for(algorithm, 20):
        x, w, b = case.arrays(np.float64)
        copies = [None if a is None else a.copy() for a in (x, w, b)]
        run(case, x, w, b, algorithm)
        for before, after in zip(copies, (x, w, b)):
            if before is not None:
                np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("limit", [1, 200, 5000], ids=lambda n: f"workspace{n}")
@pytest.mark.parametrize("case", CASES[::5], ids=str)
def test_gemm_blocks_agree_under_any_workspace_limit(case, limit):
    """Blocking along the batch and the first output axis changes nothing but the memory held
    (and, in floating point, the BLAS's summation order: exact on integers, to rounding on floats)."""
    x, w, b = case.arrays(np.float64)
    whole = run(case, x, w, b, "gemm")
    xi, wi, bi = case.arrays(np.int64)
    whole_int = run(case, xi, wi, bi, "gemm")
    with cl.workspace_limit(limit):
        blocked = run(case, x, w, b, "gemm")
        blocked_int = run(case, xi, wi, bi, "gemm")
        grad = cl.grad.conv_weight(x, w.shape, np.ones(case.output_shape), algorithm="gemm", **case.kwargs())
    np.testing.assert_array_equal(blocked_int, whole_int)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, cl.grad.conv_weight(x, w.shape, np.ones(case.output_shape), algorithm="im2col",
                                                         **case.kwargs()), rtol=1e-12, atol=1e-12)


def test_depthwise_refuses_grouped_channels():
    with pytest.raises(ValueError, match="depthwise needs exactly 1"):
        cl.conv2d(np.ones((1, 4, 5, 5)), np.ones((2, 2, 3, 3)), groups=2, algorithm="depthwise")


# -- Winograd: generated transforms, 3-tap stride-1 kernels ----------------------------------------


@pytest.mark.parametrize("algorithm", [f"winograd{tile}" for tile in POINTS])
@pytest.mark.parametrize("case", winograd_cases(60), ids=str)
def test_winograd_agrees_with_direct(case, algorithm):
    for dtype, relative in ((np.float64, 1e-11), (np.float32, 1e-4)):
        x, w, b = case.arrays(dtype)
        out = run(case, x, w, b, algorithm)
        assert out.dtype == dtype and out.shape == case.output_shape
        f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
        exact = run(case, f64(x), f64(w), f64(b), "direct")
        np.testing.assert_allclose(out, exact, rtol=relative, atol=relative * global_scale(x, w, b))


@pytest.mark.parametrize("tile", list(POINTS))
def test_winograd_transforms_are_exact_identities(tile):
    """sum_t A^T[i,t] G[t,k] B^T[t,j] == [j == i + k], checked in float64 on the generated matrices."""
    from convolab.algorithms.winograd import winograd_matrices

    a_t, g, b_t = winograd_matrices(tile, 3)
    product = np.einsum("it,tk,tj->ikj", a_t, g, b_t)
    expected = np.zeros_like(product)
    for i in range(tile):
        for k in range(3):
            expected[i, k, i + k] = 1
    np.testing.assert_allclose(product, expected, atol=1e-12)


def test_winograd_refusals():
    x, w = np.ones((1, 1, 8, 8)), np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        cl.conv2d(x, w, stride=2, algorithm="winograd2")
    with pytest.raises(ValueError, match="dilation"):
        cl.conv2d(x, w, dilation=2, algorithm="winograd4")
    with pytest.raises(ValueError, match="3-tap"):
        cl.conv2d(x, np.ones((1, 1, 5, 5)), algorithm="winograd4")
    with pytest.raises(ValueError, match="exact"):
        cl.conv2d(x.astype(np.int32), w.astype(np.int32), algorithm="winograd2")
