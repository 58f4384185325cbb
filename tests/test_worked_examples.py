"""The classic worked examples of convolution tutorials, with exact equality."""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl

EXACT_ALGORITHMS = ("auto", "direct", "im2col")
ALL_ALGORITHMS = EXACT_ALGORITHMS + ("fft",)

IMAGE_3X3 = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
KERNEL_2X2 = [[9, 8], [7, 6]]
EXPECTED_2X2 = [[83, 113], [173, 203]]

SOBEL = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
SOBEL_CORRELATION = [[13, 20, 17], [18, 24, 18], [-13, -20, -17]]
SOBEL_CONVOLUTION = [[-13, -20, -17], [-18, -24, -18], [13, 20, 17]]

IMAGE_5X5 = [
    [1, 1, 1, 0, 0],
    [0, 1, 1, 1, 0],
    [0, 0, 1, 1, 1],
    [0, 0, 1, 1, 0],
    [0, 1, 1, 0, 0],
]
X_KERNEL = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
EXPECTED_5X5 = [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


def as_batch(a, dtype) -> np.ndarray:
    return np.array(a, dtype=dtype)[np.newaxis, np.newaxis]


def check_exact(out: np.ndarray, expected, dtype, algorithm: str) -> None:
    if np.dtype(dtype).kind in "iu":
        assert out.dtype == np.int64
        assert out.tolist() == expected  # Python ints compare exactly
        assert all(type(v) is int for v in out.ravel().tolist())
    else:
        assert out.dtype == np.dtype(dtype)
        if algorithm == "fft":
            # the FFT rounds; rounded to the nearest integer it is the exact answer
            np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)
            assert np.rint(out).astype(np.int64).tolist() == expected
        else:
            assert out.tolist() == [[float(v) for v in row] for row in expected]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int32, np.int8, np.uint8])
@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_2x2_kernel_over_1_to_9(dtype, algorithm):
    if algorithm == "fft" and np.dtype(dtype).kind in "iu":
        pytest.skip("fft refuses integers")
    out = cl.conv2d(as_batch(IMAGE_3X3, dtype), as_batch(KERNEL_2X2, dtype), algorithm=algorithm)
    assert out.shape == (1, 1, 2, 2)
    check_exact(out[0, 0], EXPECTED_2X2, dtype, algorithm)


def test_2x2_example_int_results_are_int64_integers():
    out = cl.conv2d(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]))
    assert out.dtype == np.int64
    assert out.tolist() == [[EXPECTED_2X2]]
    # each element is the elementwise product of its window and the kernel, summed
    image, kernel = np.array(IMAGE_3X3), np.array(KERNEL_2X2)
    for i in range(2):
        for j in range(2):
            assert out[0, 0, i, j] == np.sum(image[i:i + 2, j:j + 2] * kernel)
    assert 1 * 9 + 2 * 8 + 4 * 7 + 5 * 6 == 83  # the first one by hand


@pytest.mark.parametrize("method", ["auto", "direct", "fft"])
def test_2x2_example_via_correlate_valid(method):
    if method == "fft":
        out = cl.correlate(np.array(IMAGE_3X3, float), np.array(KERNEL_2X2, float), mode="valid", method=method)
        assert out.dtype == np.float64
        assert np.rint(out).astype(np.int64).tolist() == EXPECTED_2X2
        np.testing.assert_allclose(out, EXPECTED_2X2, rtol=0, atol=1e-9)
        return
    ints = cl.correlate(IMAGE_3X3, KERNEL_2X2, mode="valid", method=method)
    assert ints.dtype == np.int64
    assert ints.tolist() == EXPECTED_2X2
    floats = cl.correlate(np.array(IMAGE_3X3, float), np.array(KERNEL_2X2, float), mode="valid", method=method)
    assert floats.dtype == np.float64
    assert floats.tolist() == [[83.0, 113.0], [173.0, 203.0]]
    # convolve with the kernel rotated 180 degrees is the same thing
    assert cl.convolve(IMAGE_3X3, np.rot90(KERNEL_2X2, 2), mode="valid", method=method).tolist() == EXPECTED_2X2


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int16])
@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_sobel_cross_correlation_and_convolution(dtype, algorithm):
    if algorithm == "fft" and np.dtype(dtype).kind in "iu":
        pytest.skip("fft refuses integers")
    x, k = as_batch(IMAGE_3X3, dtype), as_batch(SOBEL, dtype)
    correlation = cl.conv2d(x, k, padding=1, algorithm=algorithm)
    convolution = cl.conv2d(x, k, padding=1, flip=True, algorithm=algorithm)
    check_exact(correlation[0, 0], SOBEL_CORRELATION, dtype, algorithm)
    check_exact(convolution[0, 0], SOBEL_CONVOLUTION, dtype, algorithm)
    # flip=True is the kernel rotated 180 degrees
    rotated = cl.conv2d(x, np.ascontiguousarray(k[:, :, ::-1, ::-1]), padding=1, algorithm=algorithm)
    np.testing.assert_array_equal(convolution, rotated)


def test_sobel_matches_scipy_textbook_convolution():
    scipy_signal = pytest.importorskip("scipy.signal")
    textbook = scipy_signal.convolve2d(IMAGE_3X3, SOBEL, mode="same")
    assert textbook.tolist() == SOBEL_CONVOLUTION
    assert cl.convolve(IMAGE_3X3, SOBEL, mode="same").tolist() == SOBEL_CONVOLUTION
    assert cl.correlate(IMAGE_3X3, SOBEL, mode="same").tolist() == SOBEL_CORRELATION


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.uint8])
@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_5x5_binary_image_with_x_kernel(dtype, algorithm):
    if algorithm == "fft" and np.dtype(dtype).kind in "iu":
        pytest.skip("fft refuses integers")
    out = cl.conv2d(as_batch(IMAGE_5X5, dtype), as_batch(X_KERNEL, dtype), algorithm=algorithm)
    assert out.shape == (1, 1, 3, 3)
    if dtype == np.float16:
        assert out.dtype == np.float16
        assert out[0, 0].tolist() == [[float(v) for v in row] for row in EXPECTED_5X5]
    else:
        check_exact(out[0, 0], EXPECTED_5X5, dtype, algorithm)
    # the kernel is symmetric under 180-degree rotation: convolution and correlation agree
    flipped = cl.conv2d(as_batch(IMAGE_5X5, dtype), as_batch(X_KERNEL, dtype), flip=True, algorithm=algorithm)
    np.testing.assert_array_equal(flipped, out)


def test_5x5_example_unbatched_and_via_correlate():
    assert cl.conv2d(np.array([IMAGE_5X5]), np.array([[X_KERNEL]])).tolist() == [EXPECTED_5X5]
    assert cl.correlate(IMAGE_5X5, X_KERNEL, mode="valid").tolist() == EXPECTED_5X5


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("algorithm", EXACT_ALGORITHMS)
def test_one_output_element_is_a_dot_product(seed, algorithm):
    """A 3x3x4 window and a 3x3x4 filter: Hadamard-and-sum equals the dot product of the unrolled arrays,
    and equals one output element of a 4-channel conv2d."""
    rng = np.random.default_rng(seed)
    window = rng.integers(-9, 10, size=(3, 3, 4)).astype(np.float64)  # (H, W, C): integer values, exact sums
    filt = rng.integers(-9, 10, size=(3, 3, 4)).astype(np.float64)
    hadamard_sum = np.sum(window * filt)
    dot = np.dot(window.ravel(), filt.ravel())
    assert hadamard_sum == dot
    assert dot == sum(float(a) * float(b) for a, b in zip(window.ravel().tolist(), filt.ravel().tolist()))

    # embed the window in a larger 4-channel image at (row, col) = (2, 1)
    image = rng.integers(-9, 10, size=(4, 6, 5)).astype(np.float64)  # (C, H, W)
    image[:, 2:5, 1:4] = window.transpose(2, 0, 1)
    weight = filt.transpose(2, 0, 1)[np.newaxis]  # (C_out=1, C_in=4, 3, 3)
    out = cl.conv2d(image[np.newaxis], weight, algorithm=algorithm)
    assert out.shape == (1, 1, 4, 3)
    assert out[0, 0, 2, 1] == dot
    # and every other element is the dot product of its own window
    for i in range(4):
        for j in range(3):
            assert out[0, 0, i, j] == np.dot(image[:, i:i + 3, j:j + 3].ravel(), weight[0].ravel())


def test_one_output_element_is_a_dot_product_integer_and_fft():
    rng = np.random.default_rng(99)
    window = rng.integers(-100, 100, size=(3, 3, 4))
    filt = rng.integers(-100, 100, size=(3, 3, 4))
    dot = int(np.dot(window.ravel(), filt.ravel()))
    assert int(np.sum(window * filt)) == dot
    x = window.transpose(2, 0, 1)[np.newaxis]
    w = filt.transpose(2, 0, 1)[np.newaxis]
    out = cl.conv2d(x, w)
    assert out.dtype == np.int64
    assert out.tolist() == [[[[dot]]]]
    out_fft = cl.conv2d(x.astype(float), w.astype(float), algorithm="fft")
    assert round(float(out_fft[0, 0, 0, 0])) == dot
