"""The compiled max pooling (:mod:`convolab.algorithms._kernels_pool`) against the NumPy paths and PyTorch.

Max pooling's values and indices involve no arithmetic, and the scatter adds a
plane's gradients in output order as ``np.add.at`` does, so the compiled
results must equal the NumPy paths' bit for bit (``assert_array_equal``), NaN,
``-inf`` and ties included. Against PyTorch the values and indices are equal
too; a gradient where windows overlap sums in PyTorch's order, so it is
compared to within float rounding of a few terms.
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import _compiled
from convolab.pooling import _compiled_windows, pool_spec
from convolab.pooling import _windows as windows
from convolab.pooling import max as max_pooling
from test_compiled import HIDE_NUMBA, run_python

pytest.importorskip("numba")


def generated_configs(count: int = 36, seed: int = 15):
    """Pooling problems of rank 1 to 3: kernel, stride, padding (at most half the kernel), dilation,
    ceil_mode, float32/float64, now and then an empty batch; each one checked by :func:`pool_spec`."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        rank = int(rng.integers(1, 4))
        kernel = tuple(int(k) for k in rng.integers(1, 5, rank))
        stride = tuple(int(s) for s in rng.integers(1, 4, rank))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        dilation = tuple(int(d) for d in rng.choice([1, 1, 2, 3], rank))
        ceil_mode = bool(rng.integers(2))
        size = tuple(int(n) for n in rng.integers(3, 12 if rank < 3 else 8, rank))
        batch = 0 if len(configs) % 12 == 5 else int(rng.integers(1, 3))
        shape = (batch, int(rng.integers(1, 4)), *size)
        try:
            pool_spec(shape, kernel, stride, padding, dilation, ceil_mode)
        except ValueError:
            continue
        dtype = np.float32 if len(configs) % 2 else np.float64
        configs.append((shape, kernel, stride, padding, dilation, ceil_mode, dtype))
    return configs


CONFIGS = generated_configs()


def awkward_input(shape, dtype, rng):
    """Small integers (many ties) with NaN and -inf sprinkled in."""
    x = rng.integers(-3, 4, shape).astype(dtype)
    if x.size:
        flat = x.reshape(-1)
        flat[rng.integers(0, x.size, max(1, x.size // 40))] = -np.inf
        flat[rng.integers(0, x.size, max(1, x.size // 60))] = np.nan
    return x


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-k{c[1]}s{c[2]}p{c[3]}d{c[4]}c{int(c[5])}")
def test_compiled_values_and_indices_equal_the_reference(config):
    shape, kernel, stride, padding, dilation, ceil_mode, dtype = config
    x = awkward_input(shape, dtype, np.random.default_rng(1))
    spec = pool_spec(shape, kernel, stride, padding, dilation, ceil_mode)
    want_values, want_indices = max_pooling._max_pool_reference(x, spec)
    values, indices = _compiled_windows.max_pool_compiled(x, spec, with_indices=True)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(indices, want_indices)
    alone, none = _compiled_windows.max_pool_compiled(x, spec, with_indices=False)
    assert none is None
    np.testing.assert_array_equal(alone, want_values)
    if x.size:  # the phase grid, the NumPy path the compiled loop replaces
        grid_values, grid_indices = max_pooling._max_pool_grid(x, spec, -np.inf)
        np.testing.assert_array_equal(values, grid_values)
        np.testing.assert_array_equal(indices, grid_indices)


@pytest.mark.parametrize("config", CONFIGS[::3], ids=lambda c: f"{c[0]}-k{c[1]}s{c[2]}")
def test_compiled_scatter_equals_numpys(config, without_numba):
    shape, kernel, stride, padding, dilation, ceil_mode, dtype = config
    rng = np.random.default_rng(2)
    spec = pool_spec(shape, kernel, stride, padding, dilation, ceil_mode)
    _, indices = max_pooling._max_pool_reference(awkward_input(shape, dtype, rng), spec)
    grad = rng.standard_normal(indices.shape).astype(dtype)
    want = windows._scatter_to_planes(grad, indices, spec.input_size)  # Numba hidden: np.add.at
    got = _compiled_windows.scatter_compiled(grad, indices, spec.input_size)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("config", CONFIGS[1::3], ids=lambda c: f"{c[0]}-k{c[1]}s{c[2]}")
def test_fused_gradient_equals_argmax_then_scatter(config, without_numba):
    shape, kernel, stride, padding, dilation, ceil_mode, dtype = config
    rng = np.random.default_rng(3)
    x = awkward_input(shape, dtype, rng)
    spec = pool_spec(shape, kernel, stride, padding, dilation, ceil_mode)
    _, indices = max_pooling._max_pool_reference(x, spec)
    grad = rng.standard_normal(indices.shape).astype(np.float32)  # another dtype than x's, now and then
    want = windows._scatter_to_planes(grad, indices, spec.input_size)  # Numba hidden: np.add.at
    got = _compiled_windows.max_pool_grad_compiled(x, grad, spec)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


# Each of the kernel widths and strides the values-alone loop takes as constants, and one it does not, with
# padding (edge windows tap by tap), dilation and ceil_mode (a last window hanging past the input).
VALUES_ALONE = [((3,), 2, 0, 1, False), ((2,), 1, 1, 1, True), ((3,), 1, 1, 1, False), ((2,), 2, 0, 1, True),
                ((4,), 3, 2, 2, True), ((3, 3), 2, 1, 1, False), ((2, 3, 2), (1, 2, 1), (1, 1, 0), 1, False)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arguments", VALUES_ALONE, ids=lambda a: f"k{a[0]}s{a[1]}p{a[2]}d{a[3]}c{int(a[4])}")
def test_values_alone_equal_numpys_running_maximum(arguments, dtype):
    """The public op without indices takes the compiled loop past the gather limit; it must give the values
    of the NumPy running maximum it replaced (no arithmetic: bit for bit), NaN and -inf included."""
    kernel, stride, padding, dilation, ceil_mode = arguments
    size = {1: (300,), 2: (40, 37), 3: (9, 12, 11)}[len(kernel)]
    x = awkward_input((3, 5, *size), dtype, np.random.default_rng(10))
    spec = pool_spec(x.shape, kernel, stride, padding, dilation, ceil_mode)
    want = windows._reduce_windows(x, spec, np.maximum, -np.inf, x.dtype)
    got = cl.max_pool(x, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_array_equal(got, want)
    # unbatched and non-contiguous: the plane copied for the kernel
    reversed_plane = x[1, :, ..., ::-1]
    got = cl.max_pool(reversed_plane, kernel, stride, padding, dilation, ceil_mode)
    one = pool_spec((1, *reversed_plane.shape), kernel, stride, padding, dilation, ceil_mode)
    want = windows._reduce_windows(np.ascontiguousarray(reversed_plane)[np.newaxis], one, np.maximum, -np.inf,
                                   x.dtype)
    np.testing.assert_array_equal(got, want[0])


def test_values_alone_against_torch_on_the_suites_audio_pool():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(11).standard_normal((2, 4, 4001)).astype(np.float32)
    x[0, 1, 100] = np.nan
    np.testing.assert_array_equal(cl.max_pool1d(x, 3, 2), torch.nn.functional.max_pool1d(torch.from_numpy(x), 3, 2))


def big_pool(dtype=np.float32, shape=(2, 8, 64, 64)):
    """A problem past the gather limit (with a 3x3 stride-2 window), where the compiled path runs."""
    return np.random.default_rng(4).standard_normal(shape).astype(dtype)


def test_the_public_ops_take_the_compiled_path_and_give_numpys_results(monkeypatch):
    x = big_pool()
    x[0, 1, 3, 3] = np.nan
    x[1, 2, 10:13, 10:13] = -np.inf
    grad = np.random.default_rng(5).standard_normal((2, 8, 32, 32)).astype(np.float32)
    arguments = dict(kernel_size=3, stride=2, padding=1)
    with monkeypatch.context() as hidden:  # as the without_numba fixture hides it
        hidden.setattr(_compiled, "_checked", True)
        hidden.setattr(_compiled, "_missing", "numba is not installed (hidden by the test)")
        want_values, want_indices = cl.max_pool2d(x, return_indices=True, **arguments)  # the phase grid
        want_grad = cl.grad.max_pool2d_input(grad, x, **arguments)  # and np.add.at

    calls = []
    for name in ("max_pool_compiled", "max_pool_grad_compiled", "scatter_compiled"):
        real = getattr(_compiled_windows, name)
        monkeypatch.setattr(windows if name == "scatter_compiled" else max_pooling, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    values, indices = cl.max_pool2d(x, return_indices=True, **arguments)
    got_grad = cl.grad.max_pool2d_input(grad, x, **arguments)  # one fused pass
    _, pullback = cl.vjp(cl.max_pool2d, x, **arguments)  # the indices kept, then scattered
    (pulled,) = pullback(grad)
    assert calls == ["max_pool_compiled", "max_pool_grad_compiled", "max_pool_compiled", "scatter_compiled"]
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(got_grad, want_grad)
    np.testing.assert_array_equal(pulled, want_grad)


@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_other_dtypes_keep_the_numpy_paths(dtype):
    assert "float32 and float64 only" in _compiled_windows.compiled_pool_missing(np.dtype(dtype), 2)
    x = big_pool(np.float32).astype(dtype)
    values, indices = cl.max_pool2d(x, 3, 2, 1, return_indices=True)
    want_values, want_indices = cl.max_pool2d(x.astype(np.float64), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(values.astype(np.float64), want_values)
    np.testing.assert_array_equal(indices, want_indices)


def test_rank_four_keeps_the_numpy_path():
    assert "1 to 3 spatial dimensions" in _compiled_windows.compiled_pool_missing(np.dtype(np.float32), 4)
    x = np.random.default_rng(6).standard_normal((1, 2, 5, 4, 6, 5)).astype(np.float32)
    spec = pool_spec(x.shape, (2, 2, 3, 2), 1, (1, 0, 1, 0))
    values, indices = cl.max_pool(x, (2, 2, 3, 2), 1, (1, 0, 1, 0), return_indices=True)
    want_values, want_indices = max_pooling._max_pool_reference(x, spec)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(indices, want_indices)


def test_unbatched_and_non_contiguous_inputs():
    x = big_pool(np.float64, (8, 3, 50, 41))[::2, :, :, ::-1]  # strided and reversed: copied for the kernel
    spec = pool_spec(x[0].shape, (3, 2), (2, 1), (1, 1), (1, 2), True)
    want_values, want_indices = max_pooling._max_pool_reference(np.ascontiguousarray(x[0])[np.newaxis], spec)
    values, indices = cl.max_pool2d(x[0], (3, 2), (2, 1), (1, 1), (1, 2), True, return_indices=True)
    np.testing.assert_array_equal(values, want_values[0])
    np.testing.assert_array_equal(indices, want_indices[0])
    grad = np.random.default_rng(7).standard_normal(values.shape)[:, ::-1][:, ::-1]
    got = cl.grad.max_pool2d_input(grad, x[0], (3, 2), (2, 1), (1, 1), (1, 2), True)
    expected = np.zeros(x[0].shape).reshape(3, -1)
    np.add.at(expected, (np.arange(3)[:, None], want_indices[0].reshape(3, -1)), grad.reshape(3, -1))
    np.testing.assert_array_equal(got, expected.reshape(x[0].shape))


@pytest.mark.parametrize("config", CONFIGS[1::4], ids=lambda c: f"{c[0]}-k{c[1]}s{c[2]}p{c[3]}d{c[4]}")
def test_against_torch_forward_and_gradient(config):
    torch = pytest.importorskip("torch")
    shape, kernel, stride, padding, dilation, ceil_mode, dtype = config
    rank = len(kernel)
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(dtype)
    arguments = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    values, indices = getattr(cl, f"max_pool{rank}d")(x, return_indices=True, **arguments)
    grad = rng.standard_normal(values.shape).astype(dtype)
    got_grad = getattr(cl.grad, f"max_pool{rank}d_input")(grad, x, **arguments)
    leaf = torch.from_numpy(x).requires_grad_()
    want_values, want_indices = getattr(torch.nn.functional, f"max_pool{rank}d")(leaf, return_indices=True,
                                                                                 **arguments)
    want_values.backward(torch.from_numpy(grad))
    np.testing.assert_array_equal(values, want_values.detach().numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())
    # an input cell picked by several windows sums their gradients, maybe in another order
    tolerance = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(got_grad, leaf.grad.numpy(), rtol=tolerance, atol=tolerance)


def test_adaptive_max_pool_gradient_scatters_compiled():
    x = big_pool(np.float32, (2, 4, 30, 30))
    values, pullback = cl.vjp(cl.adaptive_max_pool2d, x, output_size=7)
    grad = np.random.default_rng(9).standard_normal(values.shape).astype(np.float32)
    (got,) = pullback(grad)
    _, indices = cl.adaptive_max_pool2d(x, 7, return_indices=True)
    expected = np.zeros((8, 900), np.float32)
    np.add.at(expected, (np.arange(8)[:, None], indices.reshape(8, -1)), grad.reshape(8, -1))
    np.testing.assert_array_equal(got, expected.reshape(x.shape))


def test_numba_hidden_falls_back_in_a_fresh_process():
    out = run_python(HIDE_NUMBA, """
        import numpy as np
        import convolab as cl
        from convolab.pooling._compiled_windows import compiled_pool_missing
        x = np.random.default_rng(0).standard_normal((2, 8, 64, 64)).astype(np.float32)
        values, indices = cl.max_pool2d(x, 3, 2, 1, return_indices=True)
        grad = cl.grad.max_pool2d_input(np.ones_like(values), x, 3, 2, 1)
        print(compiled_pool_missing(x.dtype, 2).startswith("numba is not installed"), float(grad.sum()),
              "numba" in sys.modules)
        """)
    assert out.split() == ["True", str(float(2 * 8 * 32 * 32)), "False"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_empty_batch_through_each_wrapper(dtype):
    spec = pool_spec((0, 3, 9, 9), (3, 3), 2, 1)
    x = np.zeros(spec.input_shape, dtype=dtype)
    grad = np.zeros(spec.output_shape, dtype=dtype)
    values, indices = _compiled_windows.max_pool_compiled(x, spec, with_indices=True)
    assert values.shape == indices.shape == (0, 3, 5, 5) and values.dtype == dtype
    assert _compiled_windows.max_pool_grad_compiled(x, grad, spec).shape == (0, 3, 9, 9)
    assert _compiled_windows.scatter_compiled(grad, indices, spec.input_size).shape == (0, 3, 9, 9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(32, 16, 8, 8), (2, 3, 6, 10), (1, 1, 2, 2), (3, 2, 4, 12), (0, 2, 4, 4)])
def test_two_by_two_pairs_equal_the_window_by_window_kernel(shape, dtype, monkeypatch):
    """The 2x2 stride-2 pool that tiles its planes goes by pairs (:func:`._kernels_pool.max_pool_pairs`): the
    values and indices of the window-by-window kernel, bit for bit, ties, NaN and -inf included; the digits CNN's
    pools, through the layer, like PyTorch's."""
    x = awkward_input(shape, dtype, np.random.default_rng(sum(shape)))
    spec = pool_spec(shape, (2, 2))
    assert _compiled_windows._tiling_pairs(spec)
    table = windows._window_table(spec.geometry)
    planes = x.reshape(shape[0] * shape[1], shape[2] * shape[3])
    values, indices = _compiled_windows.max_pool_table_compiled(planes, table.gather, spec, table.windows)
    monkeypatch.setattr(_compiled_windows, "_tiling_pairs", lambda spec: False)
    want_values, want_indices = _compiled_windows.max_pool_table_compiled(planes, table.gather, spec, table.windows)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(values, max_pooling._max_pool_reference(x, spec)[0])
    torch = pytest.importorskip("torch")
    expected_values, expected_indices = torch.nn.functional.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(values, expected_values.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


def test_two_by_two_pairs_only_where_the_windows_tile_the_planes():
    assert not _compiled_windows._tiling_pairs(pool_spec((1, 1, 5, 4), (2, 2)))  # odd height: a row left over
    assert not _compiled_windows._tiling_pairs(pool_spec((1, 1, 4, 4), (2, 2), (1, 1)))  # overlapping windows
    assert not _compiled_windows._tiling_pairs(pool_spec((1, 1, 4, 4), (2, 2), padding=(1, 1)))
    assert not _compiled_windows._tiling_pairs(pool_spec((1, 1, 4, 4, 4), (2, 2, 2)))  # 3-d: the other kernels
