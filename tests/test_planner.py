"""The planner (``cl.plan``, ``algorithm="auto"`` and ``"measure"``) and the workspace limit."""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab._settings import DEFAULT_WORKSPACE_BYTES, WORKSPACE_ENV, current_workspace_limit
from peak_memory import within_peak


@pytest.mark.parametrize(
    "input_shape, weight_shape, params, expected",
    [
        # ResNet 3x3, 64 filters: Winograd's 4x fewer multiplications beat the register tiles (one thread each,
        # 10.5 against 17 ms); the tiles' estimate had been divided by a thread gain the others' never are
        ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), "winograd4"),
        ((8, 256, 28, 28), (512, 256, 3, 3), dict(padding=1), "winograd4"),  # VGG 3x3: 4x fewer multiplications
        ((2, 32, 16, 64, 64), (32, 32, 3, 3, 3), dict(padding=1), "compiled"),  # 3-d U-Net, 32 filters: tiles
        # strided (folded refuses): the output channels in the vector lanes, the input broadcast, no columns packed
        # (session 19, two threads: 4.7 against packed's 5.7 and PyTorch's 4.7 ms; one thread 9.0 against 11.3)
        ((8, 64, 56, 56), (128, 64, 3, 3), dict(padding=1, stride=2), "broadcast"),
        # 7x7 x 512: F(2)'s panels on the pool (session 20, two threads: 8.8-9.7 ms against gemm's 10.9-11.5 and
        # broadcast's 9.1-9.4; session 11 had gemm ahead, 9.4 against 12.8, with the BLAS then faster)
        ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), "winograd2"),
        ((64, 32, 4, 4), (64, 32, 3, 3), dict(padding=1), "gemm"),  # tiny images: batch-inner gemm
        ((8, 256, 14, 14), (1024, 256, 1, 1), {}, "gemm"),  # 1x1: a plain matrix product
        ((8, 32, 112, 112), (32, 1, 3, 3), dict(padding=1, groups=32), "depthwise"),  # MobileNet (compiled planes)
        ((1, 1, 2048, 2048), (1, 1, 63, 63), {}, "fft"),  # large-kernel image filtering
        ((1, 1, 5, 5), (1, 1, 3, 3), {}, "gemm"),  # tiny: the FFT's setup cost decides
    ],
)
def test_plan_picks(input_shape, weight_shape, params, expected):
    """The picks at two threads, this machine's count (the estimates depend on it: at one thread, which an
    ``OPENBLAS_NUM_THREADS=1`` in the environment would set, the 7x7 x 512 layer goes to F(2))."""
    with cl.thread_count(2):
        chosen = cl.plan(input_shape, weight_shape, "float32", **params)
    assert chosen.algorithm == expected, str(chosen)
    assert chosen.flops == cl.conv_spec(input_shape, weight_shape, **params).flops
    assert chosen.estimates[expected] == min(chosen.estimates.values())
    assert expected in str(chosen) and "GFLOP" in str(chosen)


def test_plan_flops_and_refusals():
    chosen = cl.plan((2, 4, 10, 10), (6, 4, 3, 3), np.float64)
    assert chosen.flops == 2 * (2 * 6 * 8 * 8) * (4 * 3 * 3)
    few = ("4 input channels per group: with fewer than 16, an output whose own terms are small takes the rounding "
           "of its tile's larger values")  # the planner's accuracy rule for Winograd
    assert chosen.refused == {"depthwise": "each group has 4 input channels; depthwise needs exactly 1",
                              "winograd2": few, "winograd3": few, "winograd4": few,
                              "space_to_depth": "kernel (3, 3), stride (1, 1), dilation (1, 1): the windows overlap "
                                                "(space to depth needs kernel <= stride, undilated, on every axis)",
                              "space_to_batch": "dilation (1, 1): nothing to split (Winograd runs undilated problems "
                                                "itself)"}
    integer = cl.plan((1, 1, 2048, 2048), (1, 1, 63, 63), np.int32)
    assert integer.algorithm != "fft" and "fft" in integer.refused


def test_plan_validates_like_conv():
    with pytest.raises(ValueError, match="plan: stride"):
        cl.plan((1, 1, 5, 5), (1, 1, 3, 3), "float32", stride=0)
    with pytest.raises(TypeError, match="plan: dtype"):
        cl.plan((1, 1, 5, 5), (1, 1, 3, 3), np.bool_)


def test_auto_runs_the_plan():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 300, 300)), rng.standard_normal((1, 1, 41, 41))
    assert cl.plan(x.shape, w.shape, x.dtype).algorithm == "fft"
    np.testing.assert_array_equal(cl.conv2d(x, w), cl.conv2d(x, w, algorithm="fft"))
    np.testing.assert_allclose(cl.conv2d(x, w), cl.conv2d(x, w, algorithm="gemm"), rtol=1e-9, atol=1e-9)


def test_auto_avoids_fft_for_non_finite_input():
    """A NaN must stay where a direct sum puts it, not spread over the whole output."""
    x = np.ones((1, 1, 300, 300))
    x[0, 0, 0, 0] = np.nan
    w = np.ones((1, 1, 41, 41))
    assert cl.plan(x.shape, w.shape, x.dtype).algorithm == "fft"
    out = cl.conv2d(x, w)
    assert np.isnan(out[0, 0, 0, 0]) and np.isfinite(out[0, 0, 100, 100])
    assert np.isnan(cl.conv2d(x, w, algorithm="fft")).all()  # what the FFT itself would give


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
def test_a_large_kernels_inf_or_nan_keeps_winograd_out(bad, dtype):
    """A kernel large enough for the compiled check (ResNet-18 layer4's shape): one inf or NaN anywhere in it,
    the first value or the last included, keeps "auto" off Winograd, and its output is the direct sum's pattern;
    a finite kernel keeps it (the compiled check and the sum agree)."""
    from convolab import planner
    from convolab._dtypes import all_finite
    from convolab.algorithms import _compiled

    _compiled.kernels("traits")  # the compiled check runs once Numba is loaded
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 512, 7, 7)).astype(dtype)
    w = rng.standard_normal((512, 512, 3, 3)).astype(dtype)
    assert cl.plan(x.shape, w.shape, dtype, padding=1).algorithm.startswith("winograd")
    for flat_index in ([0, w.size - 1, 12345] if bad is not None else [None]):
        kernel = w.copy()
        if flat_index is not None:
            kernel.reshape(-1)[flat_index] = bad
        finite = planner.data_traits(x, kernel, fft=False).finite
        assert finite == all_finite(kernel) == (bad is None)
        if bad is not None and flat_index in (0, 12345):
            out = cl.conv2d(x, kernel, padding=1)
            direct = cl.conv2d(x, kernel, padding=1, algorithm="direct")
            np.testing.assert_array_equal(np.isnan(out), np.isnan(direct))
            np.testing.assert_array_equal(np.isinf(out), np.isinf(direct))


def _counting_runs(monkeypatch) -> list[str]:
    """Every algorithm's ``run_unpadded``, wrapped to record its name on each call."""
    from convolab.algorithms import ALGORITHMS

    ran: list[str] = []
    for name, algorithm in ALGORITHMS.items():
        def counted(x, kernel, spec, name=name, run=algorithm.run_unpadded):
            ran.append(name)
            return run(x, kernel, spec)
        monkeypatch.setitem(vars(algorithm), "run_unpadded", counted)  # undone by deleting it: the class's again
    return ran


def test_a_winograd_output_vouches_for_a_larger_kernel(monkeypatch):
    """Where the output holds fewer values than the kernel, "auto" checks the output, not the kernel: a finite
    kernel costs one Winograd run and no look at the kernel; a NaN in it a Winograd run whose output holds a NaN,
    then the direct sum's pattern from a plan that looked at the kernel; a finite kernel whose sums overflow keeps
    Winograd's output, run once. Where the output is the larger, the kernel is looked at first."""
    from convolab import planner
    from convolab.spec import conv_spec

    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 128, 8, 8)).astype(np.float32)
    w = rng.standard_normal((128, 128, 3, 3)).astype(np.float32)
    assert planner.winograd_output_vouches(conv_spec(x.shape, w.shape, padding=1))
    assert not planner.winograd_output_vouches(conv_spec((8, 128, 40, 40), w.shape, padding=1))
    assert cl.plan(x.shape, w.shape, np.float32, padding=1).algorithm.startswith("winograd")
    looked_at: list[tuple[int, ...]] = []
    check = planner.values_finite
    monkeypatch.setattr(planner, "values_finite", lambda a: looked_at.append(a.shape) or check(a))
    ran = _counting_runs(monkeypatch)

    out = cl.conv2d(x, w, padding=1)
    assert len(ran) == 1 and ran[0].startswith("winograd") and w.shape not in looked_at
    np.testing.assert_allclose(out, cl.conv2d(x, w, padding=1, algorithm="direct"), rtol=1e-4, atol=1e-4)

    ran.clear()
    kernel = w.copy()
    kernel[5, 7, 2, 1] = np.nan
    out = cl.conv2d(x, kernel, padding=1)
    assert ran[0].startswith("winograd") and len(ran) == 2 and not ran[1].startswith("winograd")
    assert w.shape in looked_at
    np.testing.assert_array_equal(np.isnan(out), np.isnan(cl.conv2d(x, kernel, padding=1, algorithm="direct")))
    assert np.isnan(out).sum() == 8 * 8 * 8  # filter 5's outputs alone: no tile spread it

    ran.clear()
    huge = (x * np.float32(3e36)).astype(np.float32)  # finite, and the same dynamic range: Winograd's bound holds
    out = cl.conv2d(huge, w, padding=1)
    assert not np.isfinite(out).all() and len(ran) == 1 and ran[0].startswith("winograd")


def test_measure_times_once_and_agrees():
    from convolab import planner

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 20, 20)), rng.standard_normal((4, 3, 3, 3))
    before = len(planner._MEASURED)
    out = cl.conv2d(x, w, padding=1, algorithm="measure")
    assert len(planner._MEASURED) == before + 1
    cl.conv2d(x, w, padding=1, algorithm="measure")
    assert len(planner._MEASURED) == before + 1  # cached per signature
    np.testing.assert_allclose(out, cl.conv2d(x, w, padding=1, algorithm="direct"), rtol=1e-10, atol=1e-10)


def test_workspace_limit_settings(monkeypatch):
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    assert current_workspace_limit() == DEFAULT_WORKSPACE_BYTES == 256 * 2**20
    monkeypatch.setenv(WORKSPACE_ENV, "4096")
    assert current_workspace_limit() == 4096
    with cl.workspace_limit(123):
        assert current_workspace_limit() == 123
    assert current_workspace_limit() == 4096
    monkeypatch.setenv(WORKSPACE_ENV, "lots")
    with pytest.raises(ValueError, match=WORKSPACE_ENV):
        current_workspace_limit()
    with pytest.raises(ValueError, match="limit_bytes"):
        with cl.workspace_limit(0):
            pass


def test_gemm_keeps_its_workspace_within_the_limit():
    """Peak traced memory above input, padded copy and output stays near the limit, far below a full im2col."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 128, 128)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    full_im2col = 16 * 9 * 128 * 128 * 4  # 9.4 MiB
    limit = 1 << 20
    arrays = x.nbytes + (16 * 130 * 130 * 4) + x.nbytes  # input, padded copy, output

    def gemm_within_the_limit():
        with cl.workspace_limit(limit):
            cl.conv2d(x, w, padding=1, algorithm="gemm")

    # the second call traced: Numba's compile or load of the unroll in the first is no workspace
    within_peak(gemm_within_the_limit, arrays + 3 * limit)
    assert 3 * limit < full_im2col


def test_gradients_use_the_fast_paths():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 9, 8))
    auto = cl.grad.conv2d_input(x.shape, w, g, padding=1)
    np.testing.assert_allclose(auto, cl.grad.conv2d_input(x.shape, w, g, padding=1, algorithm="scatter"),
                               rtol=1e-12, atol=1e-12)
    auto_w = cl.grad.conv2d_weight(x, w.shape, g, padding=1)
    np.testing.assert_allclose(auto_w, cl.grad.conv2d_weight(x, w.shape, g, padding=1, algorithm="im2col"),
                               rtol=1e-12, atol=1e-12)
