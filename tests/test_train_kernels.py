"""The compiled training-step kernels (batch normalization) against the NumPy path they replace, and PyTorch.

Tolerances: the kernels sum each channel in float64 in any order where NumPy's
``einsum`` sums in the input's dtype, and evaluate ``1 / sqrt(var + eps)`` in
float64 before one rounding, so results agree to a few units in the last place
of the dtype (rtol 1e-5 float32, 1e-12 float64 against NumPy; the channel sums
of gradients are compared against their magnitude).
"""

from __future__ import annotations

import numpy as np
import pytest

from convolab import nn
from convolab.nn import functional as F

torch = pytest.importorskip("torch")

SHAPES = [(32, 16, 8, 8), (5, 3), (4, 6, 7), (2, 3, 2, 3, 4), (3, 2, 1, 1)]
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def _numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "_compiled_batch_norm_missing", lambda dtype: "the NumPy path, by the test")


def _run(x, weight, bias, g):
    out, pullback, mean, var = F.batch_norm_with_statistics(x, None, None, weight, bias, training=True)
    return (out, mean, var, *pullback(g))


def _close(actual, expected, rtol):
    if expected is None:
        assert actual is None
        return
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_compiled_batch_norm_matches_numpy_path(dtype, shape, affine, monkeypatch):
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    weight = rng.standard_normal(shape[1]).astype(dtype) if affine in ("both", "weight") else None
    bias = rng.standard_normal(shape[1]).astype(dtype) if affine in ("both", "bias") else None
    g = rng.standard_normal(shape).astype(dtype)
    compiled = _run(x, weight, bias, g)
    _numpy_path(monkeypatch)
    expected = _run(x, weight, bias, g)
    for got, want in zip(compiled, expected):
        _close(got, want, TOLERANCE[dtype])


def test_compiled_batch_norm_reads_non_contiguous_input_and_keeps_it(monkeypatch):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 4, 5, 10)).astype(np.float32)
    x = base[..., ::2]  # non-contiguous
    before = x.copy()
    g = rng.standard_normal(x.shape).astype(np.float32).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
    w, b = np.full(4, 2, np.float32), np.ones(4, np.float32)
    compiled = _run(x, w, b, g)
    assert np.array_equal(x, before)
    _numpy_path(monkeypatch)
    for got, want in zip(compiled, _run(x, w, b, g)):
        _close(got, want, 1e-5)


def test_compiled_batch_norm_keeps_the_nan_and_inf_pattern(monkeypatch):
    x = np.arange(48, dtype=np.float32).reshape(4, 3, 4)
    x[1, 0, 2] = np.nan
    x[2, 2, 0] = np.inf
    g = np.ones_like(x)
    compiled = _run(x, None, None, g)
    _numpy_path(monkeypatch)
    with np.errstate(invalid="ignore"):  # NumPy's inf - inf warns; the loops do not
        expected = _run(x, None, None, g)
    for got, want in zip(compiled, expected):
        if want is not None:
            assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))


def test_compiled_batch_norm_takes_another_dtype_gradient_by_numpy():
    x = np.random.default_rng(2).standard_normal((4, 3, 5)).astype(np.float32)
    out, pullback, _, _ = F.batch_norm_with_statistics(x, None, None, np.ones(3, np.float32), None, training=True)
    grad_input, *_ = pullback(np.ones((4, 3, 5), np.float64))  # NumPy's promotion, as before the kernels
    assert grad_input.dtype == np.float64


def test_without_numba_batch_norm_keeps_numpy(without_numba):
    assert F._compiled_batch_norm_missing(np.dtype(np.float32)) is not None
    x = np.random.default_rng(3).standard_normal((4, 3, 5)).astype(np.float32)
    out, pullback, _, _ = F.batch_norm_with_statistics(x, None, None, None, None, training=True)
    assert out.shape == x.shape and pullback(np.ones_like(x))[0].shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_batch_norm_layer_matches_torch(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 5, 6, 6)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    layer = nn.BatchNorm2d(5, dtype=dtype)
    layer.weight.data = rng.standard_normal(5).astype(dtype)
    layer.bias.data = rng.standard_normal(5).astype(dtype)
    twin = torch.nn.BatchNorm2d(5).to(torch.float32 if dtype == np.float32 else torch.float64)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in layer.state_dict().items()})
    xt = torch.from_numpy(x).requires_grad_()
    out = layer(x)
    expected = twin(xt)
    expected.backward(torch.from_numpy(g))
    grad_input = layer.backward(g)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(grad_input, xt.grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.weight.grad, twin.weight.grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.bias.grad, twin.bias.grad.numpy(), rtol=rtol, atol=rtol * 10)
    np.testing.assert_allclose(layer.running_var, twin.running_var.numpy(), rtol=rtol, atol=rtol)


# -- Adam and AdamW: the fused update gives NumPy's bits ---------------------------------------------------------


def _adam_runs(cls, kwargs, dtype, steps, monkeypatch=None, data=None):
    rng = np.random.default_rng(5)
    start = rng.standard_normal((7, 5)).astype(dtype) if data is None else data
    parameter = nn.Parameter(start.copy())
    optimizer = cls([parameter], **kwargs)
    for _ in range(steps):
        parameter.grad = rng.standard_normal(start.shape).astype(dtype)
        optimizer.step()
    return parameter.data, optimizer.state[id(parameter)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kwargs", [
    (nn.AdamW, dict(lr=2e-3, weight_decay=1e-4)), (nn.AdamW, dict(weight_decay=0.0)),
    (nn.Adam, dict(lr=1e-2, weight_decay=0.1)), (nn.Adam, dict(betas=(0.5, 0.9), eps=1e-3)),
])
def test_compiled_adam_gives_numpys_bits(cls, kwargs, dtype, monkeypatch):
    from convolab.nn import optim
    assert optim._compiled_adam_runs(np.zeros(2, dtype), np.zeros(2, dtype),
                                     dict(exp_avg=np.zeros(2, dtype), exp_avg_sq=np.zeros(2, dtype)))
    data, state = _adam_runs(cls, kwargs, dtype, 6)
    monkeypatch.setattr(optim, "_compiled_adam_runs", lambda *arrays: False)
    expected, expected_state = _adam_runs(cls, kwargs, dtype, 6)
    assert np.array_equal(data, expected) and data.dtype == expected.dtype
    assert np.array_equal(state["exp_avg"], expected_state["exp_avg"])
    assert np.array_equal(state["exp_avg_sq"], expected_state["exp_avg_sq"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_adam_gives_numpys_bits_through_its_vector_loop(dtype, monkeypatch):
    # 1,003 values: the vectorized body and its scalar tail both run (the 35 above fit in the tail).
    from convolab.nn import optim
    start = np.random.default_rng(6).standard_normal((17, 59)).astype(dtype)
    data, state = _adam_runs(nn.AdamW, dict(lr=2e-3, weight_decay=1e-4), dtype, 4, data=start)
    monkeypatch.setattr(optim, "_compiled_adam_runs", lambda *arrays: False)
    expected, expected_state = _adam_runs(nn.AdamW, dict(lr=2e-3, weight_decay=1e-4), dtype, 4, data=start)
    assert np.array_equal(data, expected) and np.array_equal(state["exp_avg_sq"], expected_state["exp_avg_sq"])


def test_compiled_adam_divides_by_zero_as_numpy_does(monkeypatch):
    # eps=0 with a zero gradient: 0 / 0 is NaN on both paths (the loop once raised ZeroDivisionError there).
    from convolab.nn import optim
    parameter = nn.Parameter(np.ones(40, np.float32))
    parameter.grad = np.zeros(40, np.float32)
    nn.Adam([parameter], eps=0.0).step()
    with np.errstate(invalid="ignore"):
        monkeypatch.setattr(optim, "_compiled_adam_runs", lambda *arrays: False)
        expected = nn.Parameter(np.ones(40, np.float32))
        expected.grad = np.zeros(40, np.float32)
        nn.Adam([expected], eps=0.0).step()
    assert np.isnan(expected.data).all() and np.isnan(parameter.data).all()


def _adam_with_data_replaced(dtype):
    rng = np.random.default_rng(9)
    parameter = nn.Parameter(rng.standard_normal(30).astype(dtype))
    optimizer = nn.AdamW([parameter], lr=1e-2, weight_decay=1e-2)
    for step in range(4):
        if step == 2:  # a new array (load_state_dict makes one): the loop must write that one, not the old
            parameter.data = (parameter.data * 2).reshape(5, 6)
            optimizer.state[id(parameter)]["exp_avg"] = optimizer.state[id(parameter)]["exp_avg"].reshape(5, 6)
            optimizer.state[id(parameter)]["exp_avg_sq"] = optimizer.state[id(parameter)]["exp_avg_sq"].reshape(5, 6)
            optimizer.state[id(parameter)]["scratch"] = np.empty((5, 6), dtype)
        parameter.grad = rng.standard_normal(parameter.shape).astype(dtype)
        optimizer.step()
    return parameter.data


def test_compiled_adam_follows_a_replaced_data_array(monkeypatch):
    from convolab.nn import optim
    data = _adam_with_data_replaced(np.float32)
    monkeypatch.setattr(optim, "_compiled_adam_runs", lambda *arrays: False)
    expected = _adam_with_data_replaced(np.float32)
    assert data.shape == (5, 6) and np.array_equal(data, expected)


def _adam_with_moments_replaced(dtype):
    rng = np.random.default_rng(10)
    parameter = nn.Parameter(rng.standard_normal((4, 5)).astype(dtype))
    optimizer = nn.Adam([parameter], lr=0.1)
    for step in range(4):
        if step == 2:  # a restored checkpoint's moments, the data array kept: the loop must use the new moments
            optimizer.state[id(parameter)]["exp_avg"] = np.full((4, 5), 5, dtype)
            optimizer.state[id(parameter)]["exp_avg_sq"] = np.ones((4, 5), dtype)
        parameter.grad = rng.standard_normal(parameter.shape).astype(dtype)
        optimizer.step()
    return parameter.data, optimizer.state[id(parameter)]["exp_avg"]


def test_compiled_adam_follows_replaced_moments(monkeypatch):
    from convolab.nn import optim
    data, exp_avg = _adam_with_moments_replaced(np.float32)
    monkeypatch.setattr(optim, "_compiled_adam_runs", lambda *arrays: False)
    expected_data, expected_exp_avg = _adam_with_moments_replaced(np.float32)
    assert np.array_equal(data, expected_data) and np.array_equal(exp_avg, expected_exp_avg)


def test_adam_keeps_numpy_for_what_the_loop_does_not_take(without_numba):
    from convolab.nn import optim
    arrays = dict(exp_avg=np.zeros(4, np.float32), exp_avg_sq=np.zeros(4, np.float32))
    assert not optim._compiled_adam_runs(np.zeros(4, np.float32), np.zeros(4, np.float32), arrays)  # no Numba


def test_adam_refuses_the_loop_for_other_layouts_and_dtypes():
    from convolab.nn import optim
    state = dict(exp_avg=np.zeros((4, 4), np.float32), exp_avg_sq=np.zeros((4, 4), np.float32))
    assert not optim._compiled_adam_runs(np.zeros((4, 4), np.float32).T, np.zeros((4, 4), np.float32), state)
    assert not optim._compiled_adam_runs(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float64), state)
    assert not optim._compiled_adam_runs(np.zeros((4, 4), np.float16), np.zeros((4, 4), np.float16), state)
    data, _ = _adam_runs(nn.Adam, {}, np.float32, 2, data=np.ones((6, 4), np.float32)[:, ::2])  # NumPy's path
    assert data.shape == (6, 2)


# -- max pooling's small problems: the window table in one compiled pass -----------------------------------------

POOLS = [((32, 16, 8, 8), 2, None, 0, 1, False), ((3, 4, 9, 7), 3, 2, 1, 1, True), ((2, 3, 11), 4, 3, 2, 2, False),
         ((2, 2, 5, 6, 7), (2, 3, 2), (1, 2, 2), (1, 1, 0), 1, True), ((0, 3, 4, 4), 2, None, 0, 1, False),
         # no window reaches padding: max_pool_inner_windows, four taps unrolled or any other count looped
         ((32, 32, 4, 4), 2, None, 0, 1, False), ((4, 3, 9, 9), 3, 2, 0, 1, False), ((2, 3, 13), 4, 4, 0, 1, False),
         ((2, 2, 4, 6, 5), 2, None, 0, 1, False), ((5, 2, 7, 8), 2, 2, 0, 2, False), ((3, 2, 6), 1, 2, 0, 1, False)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", POOLS)
def test_compiled_small_max_pool_gives_the_gathered_engines_values_and_indices(shape, kernel, stride, padding,
                                                                               dilation, ceil_mode, dtype,
                                                                               monkeypatch):
    from convolab.pooling import max as max_module
    from convolab.pooling._spec import _cached_pool_spec
    from convolab.pooling._windows import _trim_kernel
    rng = np.random.default_rng(len(shape))
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # many ties: the first tap in window order wins
    if x.size:
        x.reshape(-1)[::7] = np.nan  # the last NaN tap wins
        x.reshape(-1)[3::11] = -np.inf
    spec = _trim_kernel(_cached_pool_spec(x.shape, kernel, stride, padding, dilation, ceil_mode, "max_pool",
                                          len(shape) - 2))
    assert max_module.compiled_pool_missing(x.dtype, spec.rank) is None
    values, indices = max_module._max_pool_gathered(x, spec, -np.inf, True)
    monkeypatch.setattr(max_module, "compiled_pool_missing", lambda dtype, rank: "the NumPy path, by the test")
    expected_values, expected_indices = max_module._max_pool_gathered(x, spec, -np.inf, True)
    assert np.array_equal(values, expected_values, equal_nan=True) and values.dtype == expected_values.dtype
    assert np.array_equal(indices, expected_indices) and indices.dtype == expected_indices.dtype


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", POOLS)
def test_window_table_lists_the_windows_only_where_none_reads_padding(shape, kernel, stride, padding, dilation,
                                                                       ceil_mode):
    from convolab.pooling._spec import _cached_pool_spec
    from convolab.pooling._windows import _trim_kernel, _window_table
    spec = _trim_kernel(_cached_pool_spec(shape, kernel, stride, padding, dilation, ceil_mode, "max_pool",
                                          len(shape) - 2))
    table = _window_table(spec.geometry)
    plane = int(np.prod(spec.input_size))
    if (table.gather < plane).all() and table.gather.size:
        assert np.array_equal(table.windows, table.gather.T) and table.windows.dtype == np.int64
    else:
        assert table.windows is None


def test_small_max_pool_layer_matches_torch_forward_and_backward():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 4, 6, 6)).astype(np.float32)
    g = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    layer = nn.MaxPool2d(2)
    xt = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.max_pool2d(xt, 2)
    expected.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(layer(x), expected.detach().numpy())
    np.testing.assert_array_equal(layer.backward(g), xt.grad.numpy())


# -- the digits CNN's convolutions: the compiled stride-1 "scatter" input gradient ----------------------------------

TRAIN_CONVS = [((32, 16, 4, 4), (32, 16, 3, 3)), ((32, 1, 8, 8), (16, 1, 3, 3))]


@pytest.mark.parametrize("input_shape, weight_shape", TRAIN_CONVS)
def test_small_layers_input_gradient_takes_the_compiled_scatter_at_stride_one(input_shape, weight_shape):
    """Few input channels: the full correlation's products are thin, and the compiled scatter is estimated (and
    measured) faster; its sums are the same products as "full"'s in another order (the bound of test_compiled)."""
    import convolab as cl
    from test_compiled import assert_within, summation_bound
    chosen = cl.plan(input_shape, weight_shape, "float32", padding=1).input_grad
    assert (chosen.method, dict(chosen.options)) == ("scatter", {"col2im": "compiled"})
    assert "faster than the full correlation" in chosen.reason
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        w = rng.standard_normal(weight_shape).astype(dtype)
        g = rng.standard_normal((input_shape[0], weight_shape[0], *input_shape[2:])).astype(dtype)
        auto = cl.grad.conv2d_input(input_shape, w, g, padding=1)
        full = cl.grad.conv2d_input(input_shape, w, g, padding=1, algorithm="full")
        magnitude = cl.grad.conv2d_input(input_shape, np.abs(w).astype(np.float64), np.abs(g).astype(np.float64),
                                         padding=1, algorithm="full")
        assert_within(auto, full, summation_bound(weight_shape[0] * 9, magnitude, dtype))
        expected = torch.nn.grad.conv2d_input(input_shape, torch.from_numpy(w), torch.from_numpy(g), padding=1)
        assert_within(auto, expected.numpy(), summation_bound(weight_shape[0] * 9, magnitude, dtype))


def test_without_numba_small_layers_keep_the_full_input_gradient(without_numba):
    import convolab as cl
    assert cl.plan(*TRAIN_CONVS[0], "float32", padding=1).input_grad.method == "full"


# -- ReLU's compiled loops ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(32, 16, 8, 8), (5,), (3, 0, 2)])
def test_compiled_relu_gives_numpys_bits(shape, dtype, monkeypatch):
    """``x if x > 0 else 0`` and ``g if x > 0 else 0`` (a NaN ``x`` kept, its gradient passed) bit for bit, with
    a NaN, an inf, -0 and zeros among the values: the NumPy path's numbers (a NaN input stays NaN, an infinite
    gradient at a non-positive input gives 0)."""
    from convolab.algorithms._compiled import numba_missing
    assert numba_missing() is None  # imported, so that the loops run
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    if x.size > 8:
        x.flat[:4] = [np.nan, -0.0, 0.0, -1.0]
        g.flat[:4] = [1.0, np.inf, -2.0, np.inf]
    out, pullback = F._relu_vjp(x)
    (grad,) = pullback(g)
    monkeypatch.setattr(F, "numba_loaded", lambda: False)
    expected_out, expected_pullback = F._relu_vjp(x)
    with np.errstate(invalid="ignore"):
        (expected_grad,) = expected_pullback(g)
    for actual, expected in ((out, expected_out), (grad, expected_grad)):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(actual.view(f"u{actual.itemsize}"), expected.view(f"u{expected.itemsize}"))


@pytest.mark.parametrize("loaded", [True, False])
def test_relu_keeps_nan_as_pytorch_does(loaded, monkeypatch):
    """``relu(NaN)`` is NaN in PyTorch, and its gradient there passes ``grad_output`` (at 0 and below it is 0): on
    the compiled loop and on NumPy's path."""
    torch = pytest.importorskip("torch")
    from convolab.algorithms._compiled import numba_missing
    assert numba_missing() is None
    if not loaded:
        monkeypatch.setattr(F, "numba_loaded", lambda: False)
    x = np.array([np.nan, -1.0, 0.0, 2.0, -np.inf, np.inf] * 4, dtype=np.float32).reshape(2, 3, 4)
    out, pullback = F._relu_vjp(x)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    expected = torch.relu(xt)
    expected.backward(torch.ones_like(xt))
    np.testing.assert_array_equal(out, expected.detach().numpy())
    np.testing.assert_array_equal(pullback(np.ones_like(x))[0], xt.grad.numpy())
    # an infinite or NaN gradient where the input is not positive: PyTorch selects, so 0 there
    g = np.resize(np.array([np.inf, np.nan, -np.inf, 1.0], dtype=np.float32), x.shape)
    xt.grad = None
    torch.relu(xt).backward(torch.from_numpy(g.copy()))
    np.testing.assert_array_equal(pullback(g)[0], xt.grad.numpy())


def test_relu_takes_numpy_for_other_layouts_and_dtypes():
    x = np.random.default_rng(5).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(F.relu(x[:, ::2]), np.maximum(x[:, ::2], 0))  # not contiguous
    np.testing.assert_array_equal(F.relu(x.astype(np.float16)), np.maximum(x.astype(np.float16), 0))
    out, pullback = F._relu_vjp(x)
    np.testing.assert_array_equal(pullback(np.ones((4, 6)))[0], np.ones((4, 6)) * ~(x <= 0))  # a float64 gradient


# -- cross-entropy: one loop for the loss and the gradient's softmax part ------------------------------------------
# Tolerance: the loop sums each row's exponentials in order where NumPy sums them pairwise, so a row's
# logarithm, and from it the loss and the gradient, may differ in the last place (rtol 1e-6 float32, 1e-14 float64).

CROSS_ENTROPY_TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}


def _cross_entropy_runs(logits, labels, reduction, smoothing):
    loss, pullback = F._cross_entropy_vjp(logits, labels, reduction=reduction, label_smoothing=smoothing)
    grad_input, _ = pullback(np.full(np.shape(loss), 0.5))
    return loss, grad_input


def _numpy_cross_entropy(monkeypatch):
    monkeypatch.setattr(F, "_compiled_loops_run", lambda *arrays: False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape, label_dtype", [((32, 10), np.int64), ((5, 3), np.int32), ((0, 4), np.int64),
                                                 ((7, 1), np.uint8), ((3, 4, 2, 5), np.int64), ((6,), np.int64),
                                                 ((0, 3, 4), np.int64)])
def test_compiled_cross_entropy_matches_numpy_path(dtype, reduction, smoothing, shape, label_dtype, monkeypatch):
    F.numba_missing()  # the loop runs once Numba is loaded, as in training
    rng = np.random.default_rng(sum(shape))
    logits = (rng.standard_normal(shape) * 4).astype(dtype)
    classes = shape[1] if len(shape) > 1 else shape[0]
    label_shape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    labels = rng.integers(0, classes, label_shape).astype(label_dtype)
    loss, grad = _cross_entropy_runs(logits, labels, reduction, smoothing)
    _numpy_cross_entropy(monkeypatch)
    expected_loss, expected_grad = _cross_entropy_runs(logits, labels, reduction, smoothing)
    rtol = CROSS_ENTROPY_TOLERANCE[dtype]
    assert loss.dtype == expected_loss.dtype and loss.shape == expected_loss.shape
    assert grad.dtype == expected_grad.dtype and grad.shape == expected_grad.shape
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=rtol, equal_nan=True)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol)


def test_compiled_cross_entropy_keeps_the_nan_and_inf_pattern(monkeypatch):
    F.numba_missing()
    logits = np.zeros((4, 3), np.float32)
    logits[1, 2], logits[2, 0], logits[3, 1] = np.nan, np.inf, -np.inf
    labels = np.array([0, 1, 2, 1])
    loss, grad = _cross_entropy_runs(logits, labels, "none", 0.0)
    _numpy_cross_entropy(monkeypatch)
    with np.errstate(invalid="ignore"):
        expected_loss, expected_grad = _cross_entropy_runs(logits, labels, "none", 0.0)
    for got, want in ((loss, expected_loss), (grad, expected_grad)):
        assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_compiled_cross_entropy_matches_torch(dtype, smoothing):
    F.numba_missing()
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((16, 7)) * 3).astype(dtype)
    labels = rng.integers(0, 7, 16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    loss = loss_fn(logits, labels)
    grad = loss_fn.backward()
    xt = torch.from_numpy(logits).requires_grad_()
    expected = torch.nn.functional.cross_entropy(xt, torch.from_numpy(labels), label_smoothing=smoothing)
    expected.backward()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, expected.item(), rtol=rtol)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=rtol, atol=rtol)


def test_cross_entropy_without_numba_keeps_numpy(without_numba):
    logits, labels = np.zeros((3, 4), np.float32), np.array([0, 1, 3])
    loss, grad = _cross_entropy_runs(logits, labels, "mean", 0.0)
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-6)
    assert grad.shape == (3, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.1, None, 1.0])
def test_compiled_running_statistics_give_numpys_bits(dtype, momentum, monkeypatch):
    """Three training batches: the running mean and variance from the compiled update and from NumPy's steps."""
    from convolab.nn import layers
    F.numba_missing()  # the loop runs once Numba is loaded, as in training
    batches = [np.random.default_rng(seed).standard_normal((6, 5, 3, 3)).astype(dtype) * (seed + 1)
               for seed in range(3)]

    def run():
        layer = nn.BatchNorm2d(5, momentum=momentum, dtype=dtype)
        for x in batches:
            layer(x)
        return layer.running_mean, layer.running_var, layer.num_batches_tracked

    compiled = run()
    monkeypatch.setattr(layers, "_compiled_running_statistics", lambda *vectors: False)
    expected = run()
    for got, want in zip(compiled, expected):
        assert np.array_equal(got, want) and got.dtype == want.dtype
