"""Depthwise convolution (``groups == C_in``) and its gradients, against "direct", the other
formulations and PyTorch, on generated cases.

The cases are :func:`conv_cases.generate_cases` made depthwise: every padding kind and mode,
1-d/2-d/3-d, strides, dilations, unbatched inputs and empty batches, with channel multiplier 1
and 2. Each runs twice: with the default blocking, and with blocks of one channel, a few rows
per chunk and several threads, so that the chunked and threaded paths meet every shape.
Forward results are compared with "direct" within the bound of any summation order (as in
test_algorithms.py); the gradients with the reference formulations ("scatter", "im2col"),
which sum the same products in another order.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

import convolab as cl
from convolab import algorithms
from convolab._engine import oriented_kernel
from convolab.algorithms import Depthwise, _threads, depthwise
from convolab._settings import current_thread_count, thread_count
from conv_cases import ConvCase, generate_cases

#: Depthwise versions of generated cases, multiplier 1 and 2 in turn.
CASES = [
    dataclasses.replace(case, groups=case.in_channels, out_channels=case.in_channels * (1 + index % 2))
    for index, case in enumerate(generate_cases(180, seed=11))
]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=["default", "blocked"])
def blocking(request, monkeypatch):
    """Default blocks, or the smallest ones: one channel a block, a few rows a chunk, three threads."""
    if request.param == "blocked":
        monkeypatch.setattr(depthwise, "DEPTHWISE_BLOCK_BYTES", 1)
        monkeypatch.setattr(depthwise, "DEPTHWISE_COLUMN_BYTES", 64)
        monkeypatch.setattr(depthwise, "DEPTHWISE_PARALLEL_WORK", 0)
        monkeypatch.setenv("CONVOLAB_THREADS", "3")
    return request.param


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def summation_bound(terms: int, scale: np.ndarray, dtype) -> np.ndarray:
    """Two sums of the same ``terms`` products, in any orders, differ by at most this (see test_algorithms)."""
    return 2 * terms * unit_roundoff(dtype) * scale


def batched(case: ConvCase, array: np.ndarray) -> np.ndarray:
    return array if case.batched else array[np.newaxis]


def spec_of(case: ConvCase):
    input_shape = case.input_shape if case.batched else (1, *case.input_shape)
    return cl.conv_spec(input_shape, case.weight_shape, **case.kwargs())


def gradients(case: ConvCase, x, w, g, algorithm_input: str, algorithm_weight: str):
    kwargs = case.kwargs()
    grad_input = cl.grad.conv_input(x.shape, w, g, **kwargs, algorithm=algorithm_input)
    grad_weight = cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm=algorithm_weight)
    return grad_input, grad_weight


def depthwise_gradients(case: ConvCase, x, w, g, flip: bool = False):
    """The depthwise formulations themselves, whatever the planner would pick for this small case."""
    spec = dataclasses.replace(spec_of(case), flip=flip)
    kernel = oriented_kernel(w, flip)
    grad_input = Depthwise().input_grad(batched(case, g), kernel, spec)
    grad_weight = oriented_kernel(Depthwise().weight_grad(batched(case, x), batched(case, g), spec), flip)
    return (grad_input if case.batched else grad_input[0]), grad_weight


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_agrees_with_direct(case, dtype, blocking):
    x, w, b = case.arrays(dtype)
    out = cl.conv(x, w, b, **case.kwargs(), algorithm="depthwise")
    assert out.dtype == dtype and out.shape == case.output_shape
    direct = cl.conv(x, w, b, **case.kwargs(), algorithm="direct")
    absolute = lambda a: None if a is None else np.abs(a).astype(np.float64)  # noqa: E731
    scale = cl.conv(absolute(x), absolute(w), absolute(b), **case.kwargs(), algorithm="direct")
    bound = summation_bound(case.terms_per_output + case.bias, scale, dtype)
    assert np.all(np.abs(out.astype(np.float64) - direct) <= bound)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_agree_with_reference_formulations(case, dtype, blocking):
    """Input gradient against "scatter", weight gradient against "im2col", each within its summation bound."""
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(3).standard_normal(case.output_shape).astype(dtype)
    grad_input, grad_weight = depthwise_gradients(case, x, w, g)
    reference_input, reference_weight = gradients(case, x, w, g, "scatter", "im2col")
    assert grad_input.dtype == dtype and grad_input.shape == x.shape
    assert grad_weight.dtype == dtype and grad_weight.shape == w.shape
    # Bounds from the same sums of absolute values, in float64.
    scale_input, scale_weight = gradients(case, np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                          np.abs(g).astype(np.float64), "scatter", "im2col")
    per_input = (case.out_channels // case.groups) * int(np.prod(case.kernel_size))
    per_weight = max(1, case.batch * int(np.prod(case.output_size)))
    assert np.all(np.abs(grad_input.astype(np.float64) - reference_input)
                  <= summation_bound(per_input, scale_input, dtype))
    assert np.all(np.abs(grad_weight.astype(np.float64) - reference_weight)
                  <= summation_bound(per_weight, scale_weight, dtype))


@pytest.mark.parametrize("case", CASES[::4], ids=str)
def test_flip_is_the_reversed_kernel(case):
    x, w, b = case.arrays(np.float64)
    flipped = w[(Ellipsis, *([slice(None, None, -1)] * case.rank))]
    np.testing.assert_allclose(cl.conv(x, w, b, **case.kwargs(), flip=True, algorithm="depthwise"),
                               cl.conv(x, flipped, b, **case.kwargs(), algorithm="depthwise"), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(4).standard_normal(case.output_shape)
    grad_input, grad_weight = depthwise_gradients(case, x, w, g, flip=True)
    reference_input = cl.grad.conv_input(x.shape, w, g, **case.kwargs(), flip=True, algorithm="scatter")
    reference_weight = cl.grad.conv_weight(x, w.shape, g, **case.kwargs(), flip=True, algorithm="im2col")
    np.testing.assert_allclose(grad_input, reference_input, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_weight, reference_weight, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::3], ids=str)
def test_blocks_and_threads_change_nothing(case, monkeypatch):
    """Forward and input gradient come out bit for bit the same however the work is split;
    the weight gradient sums chunks in another grouping, so it agrees to rounding."""
    x, w, _ = case.arrays(np.float64)
    g = np.random.default_rng(5).standard_normal(case.output_shape)
    whole = cl.conv(x, w, **case.kwargs(), algorithm="depthwise"), *depthwise_gradients(case, x, w, g)
    monkeypatch.setattr(depthwise, "DEPTHWISE_BLOCK_BYTES", 1)
    monkeypatch.setattr(depthwise, "DEPTHWISE_PARALLEL_WORK", 0)
    monkeypatch.setenv("CONVOLAB_THREADS", "4")
    split = cl.conv(x, w, **case.kwargs(), algorithm="depthwise"), *depthwise_gradients(case, x, w, g)
    np.testing.assert_array_equal(split[0], whole[0])
    np.testing.assert_array_equal(split[1], whole[1])
    monkeypatch.setattr(depthwise, "DEPTHWISE_COLUMN_BYTES", 1)
    np.testing.assert_allclose(depthwise_gradients(case, x, w, g)[1], whole[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::5], ids=str)
def test_integers_exact(case):
    x, w, b = case.arrays(np.int32)
    direct = cl.conv(x, w, b, **case.kwargs(), algorithm="direct")
    np.testing.assert_array_equal(cl.conv(x, w, b, **case.kwargs(), algorithm="depthwise"), direct)
    g = np.random.default_rng(6).integers(-3, 4, size=case.output_shape)
    grad_input, grad_weight = depthwise_gradients(case, x.astype(np.int64), w.astype(np.int64), g)
    reference_input, reference_weight = gradients(case, x.astype(np.int64), w.astype(np.int64), g, "scatter", "im2col")
    np.testing.assert_array_equal(grad_input, reference_input)
    np.testing.assert_array_equal(grad_weight, reference_weight)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["complex64", "complex128"])
def test_complex(dtype):
    case = next(case for case in CASES if case.batch > 1 and case.rank == 2)
    x, w, b = case.arrays(dtype)
    tolerance = 1e-5 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(cl.conv(x, w, b, **case.kwargs(), algorithm="depthwise"),
                               cl.conv(x, w, b, **case.kwargs(), algorithm="direct"), rtol=tolerance, atol=tolerance)


def test_float16_is_float32_rounded():
    case = next(case for case in CASES if case.batch > 0 and case.rank == 2)
    x, w, b = case.arrays(np.float16)
    out = cl.conv(x, w, b, **case.kwargs(), algorithm="depthwise")
    assert out.dtype == np.float16
    f32 = lambda a: None if a is None else a.astype(np.float32)  # noqa: E731
    np.testing.assert_array_equal(out, cl.conv(f32(x), f32(w), f32(b), **case.kwargs(),
                                               algorithm="depthwise").astype(np.float16))


@pytest.mark.parametrize("multiplier", [1, 2])
def test_empty_batch(multiplier):
    x = np.ones((0, 3, 8, 8), dtype=np.float32)
    w = np.ones((3 * multiplier, 1, 3, 3), dtype=np.float32)
    out = cl.conv2d(x, w, padding=1, groups=3, algorithm="depthwise")
    assert out.shape == (0, 3 * multiplier, 8, 8)
    g = np.ones(out.shape, dtype=np.float32)
    assert cl.grad.conv2d_input(x.shape, w, g, padding=1, groups=3).shape == x.shape
    np.testing.assert_array_equal(cl.grad.conv2d_weight(x, w.shape, g, padding=1, groups=3), np.zeros(w.shape))


def test_inputs_not_modified_and_views_accepted():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((3, 6, 20, 17)).astype(np.float32)
    x = base.transpose(1, 0, 2, 3)[:, :, ::2]  # (6, 3, 10, 17), not contiguous
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    g = rng.standard_normal((6, 12, 10, 17)).astype(np.float32)[:, ::2]  # (6, 6, 10, 17), not contiguous
    kept = [a.copy() for a in (x, w, g)]
    out = cl.conv2d(x, w, padding=1, groups=3, algorithm="depthwise")
    np.testing.assert_allclose(out, cl.conv2d(np.ascontiguousarray(x), w, padding=1, groups=3, algorithm="direct"),
                               rtol=1e-5, atol=1e-5)
    spec = cl.conv_spec(x.shape, w.shape, padding=1, groups=3)
    Depthwise().input_grad(g, w, spec)
    Depthwise().weight_grad(x, g, spec)
    for before, after in zip(kept, (x, w, g)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2), dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))],
                         ids=["stride1", "stride2", "mixed"])
def test_non_finite_values_stay_in_their_windows(kwargs, blocking):
    """An infinity reaches only the taps (weight gradient) and cells (input gradient) whose windows hold it,
    as in "im2col"/"scatter" and PyTorch; the wide rows' cropped columns (0 * inf) must not spread it as NaN."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 9))
    x[0, 1, 3, -1] = np.inf  # the last column: read by some taps only, or (stride 2) by none
    x[1, 2, -1, 4] = -np.inf
    w = rng.standard_normal((6, 1, 3, 3))
    spec = cl.conv_spec(x.shape, w.shape, groups=3, **kwargs)
    g = rng.standard_normal(spec.output_shape)
    with np.errstate(invalid="ignore"):
        grad_weight = Depthwise().weight_grad(x, g, spec)
        reference_weight = cl.grad.conv2d_weight(x, w.shape, g, groups=3, **kwargs, algorithm="im2col")
        np.testing.assert_allclose(grad_weight, reference_weight, rtol=1e-12, atol=1e-12)
        w[1, 0, 0, 0], w[4, 0, 2, 1] = np.inf, -np.inf
        grad_input = Depthwise().input_grad(g, w, spec)
        reference_input = cl.grad.conv2d_input(x.shape, w, g, groups=3, **kwargs, algorithm="scatter")
    np.testing.assert_allclose(grad_input, reference_input, rtol=1e-12, atol=1e-12)
    assert np.isfinite(reference_weight).any() and np.isfinite(reference_input).any()


@pytest.mark.usefixtures("without_numba")  # where it can, compiled takes these (test_compiled.py)
def test_auto_uses_depthwise_for_its_gradients_too():
    """A MobileNet-like layer: the planner picks depthwise, and "auto" gradients are depthwise's own."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 32, 40, 40)).astype(np.float32)
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    kwargs = dict(stride=2, padding=1, groups=32)
    assert cl.plan(x.shape, w.shape, x.dtype, **kwargs).algorithm == "depthwise"
    g = rng.standard_normal(cl.output_shape(x.shape, w.shape, **kwargs)).astype(np.float32)
    spec = cl.conv_spec(x.shape, w.shape, **kwargs)
    np.testing.assert_array_equal(cl.grad.conv2d_input(x.shape, w, g, **kwargs),
                                  Depthwise().input_grad(g, w, spec))
    np.testing.assert_array_equal(cl.grad.conv2d_weight(x, w.shape, g, **kwargs),
                                  Depthwise().weight_grad(x, g, spec))
    np.testing.assert_allclose(cl.grad.conv2d_input(x.shape, w, g, **kwargs, algorithm="scatter"),
                               cl.grad.conv2d_input(x.shape, w, g, **kwargs), rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("without_numba")  # where it can, compiled takes these (test_compiled.py)
def test_plan_prefers_depthwise_for_mobilenet_layers():
    for input_shape, weight_shape, kwargs in [
        ((8, 144, 56, 56), (144, 1, 3, 3), dict(padding=1, groups=144)),
        ((8, 96, 112, 112), (96, 1, 3, 3), dict(stride=2, padding=1, groups=96)),
    ]:
        chosen = cl.plan(input_shape, weight_shape, "float32", **kwargs)
        assert chosen.algorithm == "depthwise", str(chosen)
        assert chosen.workspace_bytes < 64 * 2**20


def test_threads_follow_the_blas_variables(monkeypatch):
    for name in ("CONVOLAB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert algorithms.depthwise_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert algorithms.depthwise_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "many")  # not a count: the next variable decides
    assert algorithms.depthwise_threads() == 3


def test_thread_count_setting(monkeypatch):
    """A thread_count block, then CONVOLAB_THREADS, then the BLAS's variables decide."""
    for name in ("CONVOLAB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("CONVOLAB_THREADS", "2")
    assert current_thread_count() == algorithms.depthwise_threads() == 2
    with thread_count(5):
        assert algorithms.depthwise_threads() == 5
        with thread_count(1):
            assert algorithms.depthwise_threads() == 1
        assert algorithms.depthwise_threads() == 5
    assert algorithms.depthwise_threads() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("CONVOLAB_THREADS", bad)
        with pytest.raises(ValueError, match="CONVOLAB_THREADS"):
            algorithms.depthwise_threads()
    for bad in (0, 2.0, True, "2"):
        with pytest.raises(ValueError, match="thread_count"):
            with thread_count(bad):
                pass



def test_settings_read_the_live_environment(monkeypatch):
    """The settings' reader (the mapping's own dictionary, its keys encoded once) answers as ``os.environ.get``
    after every kind of change: set, changed, deleted, and ``os.environ`` replaced by another mapping."""
    from convolab import _settings
    monkeypatch.delenv("CONVOLAB_WORKSPACE_BYTES", raising=False)
    assert _settings._environment("CONVOLAB_WORKSPACE_BYTES") is None
    assert _settings.current_workspace_limit() == _settings.DEFAULT_WORKSPACE_BYTES
    for value in ("4096", "8192"):
        monkeypatch.setenv("CONVOLAB_WORKSPACE_BYTES", value)
        assert _settings.current_workspace_limit() == int(value)
    monkeypatch.setenv("CONVOLAB_THREADS", "\u00e9")  # not ASCII: decoded as os.environ decodes it
    assert _settings._environment("CONVOLAB_THREADS") == os.environ.get("CONVOLAB_THREADS") == "\u00e9"
    monkeypatch.delenv("CONVOLAB_WORKSPACE_BYTES")
    assert _settings.current_workspace_limit() == _settings.DEFAULT_WORKSPACE_BYTES
    monkeypatch.setattr(os, "environ", {"CONVOLAB_WORKSPACE_BYTES": "1024"})
    assert _settings.current_workspace_limit() == 1024

# -- against PyTorch ---------------------------------------------------------------------------


def torch_padded(torch, x, case: ConvCase):
    """Pad with torch ops whose autograd folds the border back: zeros, or a gather by numpy.pad's source map."""
    for axis_offset, ((low, high), size) in enumerate(zip(case.padding_pairs, case.input_size)):
        if not (low or high):
            continue
        axis = x.ndim - case.rank + axis_offset
        if case.canonical_mode == "zeros":
            x = torch.nn.functional.pad(x, [0, 0] * (x.ndim - axis - 1) + [low, high])
        else:
            source = np.pad(np.arange(size), (low, high), mode=case.numpy_pad_mode)
            x = torch.index_select(x, axis, torch.as_tensor(source))
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::2], ids=str)
def test_against_torch(case, dtype):
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(9).standard_normal(case.output_shape).astype(dtype)
    out = cl.conv(x, w, **case.kwargs(), algorithm="depthwise")
    assert_like_torch(case, x, w, g, (out, *depthwise_gradients(case, x, w, g)))


def assert_like_torch(case: ConvCase, x, w, g, passes) -> None:
    """``passes``, the forward and both gradients for grad_output ``g``, are PyTorch's (padding through
    :func:`torch_padded`) to the dtype's rounding."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    functional = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    xt = torch.tensor(batched(case, x), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    out_t = functional[case.rank](torch_padded(torch, xt, case), wt, None, case.strides, 0, case.dilations, case.groups)
    out_t.backward(torch.tensor(batched(case, g)))
    out, grad_input, grad_weight = passes
    tolerance = dict(rtol=1e-5, atol=1e-5) if x.dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(batched(case, out), out_t.detach().numpy(), **tolerance)
    np.testing.assert_allclose(batched(case, grad_input), xt.grad.numpy(), **tolerance)
    np.testing.assert_allclose(grad_weight, wt.grad.numpy(), **tolerance)


def test_threads_work_in_a_forked_child():
    """The shared thread pool does not survive a fork; a child makes its own instead of waiting forever."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    x = np.random.default_rng(10).standard_normal((4, 32, 40, 40))
    w = np.ones((32, 1, 3, 3))
    expected = cl.conv2d(x, w, padding=1, groups=32, algorithm="depthwise")  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(_child_conv, (x, w)).get(timeout=60)
    np.testing.assert_array_equal(result, expected)


def test_fork_while_another_thread_holds_the_pool_lock(monkeypatch):
    """A fork can copy the pool's lock held (another thread was just creating the pool); the child
    must not wait for it forever."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setenv("CONVOLAB_THREADS", "2")
    x = np.random.default_rng(12).standard_normal((4, 32, 40, 40))
    w = np.ones((32, 1, 3, 3))
    expected = cl.conv2d(x, w, padding=1, groups=32, algorithm="depthwise")
    with _threads._pool_lock:  # held, as by another thread, while the child is forked
        pool = multiprocessing.get_context("fork").Pool(1)
    with pool:
        result = pool.apply_async(_child_conv, (x, w)).get(timeout=60)
    np.testing.assert_array_equal(result, expected)


def _child_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return cl.conv2d(x, w, padding=1, groups=32, algorithm="depthwise")
