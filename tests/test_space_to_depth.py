"""space_to_depth (non-overlapping windows: columns by a reshaped copy, one product per sample) against the
reference sums, NumPy's copies, PyTorch, and the direct sum's inf/NaN pattern.

Tolerances. The copies move values (no arithmetic), so the compiled and NumPy
copies must agree bit for bit. The products are the BLAS's, in whatever order
it sums, so each pass is compared with the float64 reference within the bound
of any summation order of its terms (``summation_bound``: ``C*K`` terms an
output, ``N*P`` a weight, ``O`` an input cell) times their magnitudes.
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab import planner
from convolab.algorithms import ALGORITHMS
from test_compiled import summation_bound

S2D = ALGORITHMS["space_to_depth"]


def generated_configs(count: int = 24, seed: int = 9):
    """Problems whose windows never overlap: per axis a kernel no longer than its stride (undilated, or a
    dilated axis of one tap), asymmetric padding, groups, float32/float64, now and then an empty batch."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        rank = int(rng.integers(1, 4))
        stride = tuple(int(s) for s in rng.integers(1, 4, rank))
        kernel = tuple(int(rng.integers(1, s + 1)) for s in stride)
        if all(k == 1 for k in kernel):
            continue
        dilation = tuple(int(rng.integers(1, 3)) if k == 1 else 1 for k in kernel)
        padding = tuple((int(rng.integers(0, 2)), int(rng.integers(0, 3))) for _ in range(rank))
        groups = int(rng.choice([1, 1, 2]))
        size = tuple(int(n) for n in rng.integers(4, 13 if rank < 3 else 8, rank))
        batch = 0 if len(configs) % 8 == 5 else int(rng.integers(1, 3))
        x_shape = (batch, groups * int(rng.integers(1, 4)), *size)
        w_shape = (groups * int(rng.integers(1, 4)), x_shape[1] // groups, *kernel)
        dtype = np.float32 if len(configs) % 2 else np.float64
        configs.append((x_shape, w_shape, dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                        dtype))
    return configs


CONFIGS = generated_configs()


def spec_and_arrays(config, seed=0):
    x_shape, w_shape, kwargs, dtype = config
    spec = cl.conv_spec(x_shape, w_shape, **kwargs)
    rng = np.random.default_rng(seed)
    x, w, g = (rng.standard_normal(shape).astype(dtype) for shape in (x_shape, w_shape, spec.output_shape))
    return spec, x, w, g


def passes(spec, x, w, g):
    """Forward (public op, asked for by name), input and weight gradients (the algorithm's own passes)."""
    kwargs = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups)
    return (cl.conv(x, w, **kwargs, algorithm="space_to_depth"), S2D.input_grad(g, w, spec),
            S2D.weight_grad(x, g, spec))


def references(spec, x, w, g):
    """The same three passes, summed in float64 by the reference paths, and each one's summed magnitudes."""
    kwargs = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups)
    values, magnitudes = [], []
    for sign in (1, -1):
        a, b, c = (np.abs(v) if sign < 0 else v for v in (x.astype(np.float64), w.astype(np.float64),
                                                           g.astype(np.float64)))
        forward = cl.conv(a, b, **kwargs, algorithm="direct")
        input_grad = cl.grad.conv_input(a.shape, b, c, **kwargs, algorithm="scatter")
        weight_grad = cl.grad.conv_weight(a, b.shape, c, **kwargs, algorithm="im2col")
        (values if sign > 0 else magnitudes).append((forward, input_grad, weight_grad))
    return values[0], magnitudes[0]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-w{c[1]}-{c[2]}")
def test_three_passes_equal_the_reference_sums(config):
    spec, x, w, g = spec_and_arrays(config)
    assert S2D.why_not(spec, np.dtype(x.dtype)) is None
    expected, magnitudes = references(spec, x, w, g)
    terms = (spec.in_channels_per_group * np.prod(spec.kernel_size), spec.out_channels_per_group,
             spec.batch * np.prod(spec.output_size))
    for got, want, scale, count in zip(passes(spec, x, w, g), expected, magnitudes, terms):
        assert got.dtype == x.dtype and got.shape == want.shape
        bound = summation_bound(int(count), scale, x.dtype) + np.finfo(x.dtype).tiny
        assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("config", CONFIGS[::3], ids=lambda c: f"{c[0]}-w{c[1]}")
def test_numpys_copies_give_the_compiled_results(config, without_numba):
    spec, x, w, g = spec_and_arrays(config, seed=1)
    numpy_passes = passes(spec, x, w, g)
    planner._forget_plans()
    from convolab.algorithms import _compiled
    _compiled._checked, _compiled._missing = True, None  # Numba back for the compiled copies
    compiled_passes = passes(spec, x, w, g)
    for got, want in zip(compiled_passes, numpy_passes):
        np.testing.assert_array_equal(got, want)


def test_auto_takes_it_for_unets_up_convolution_gradient_and_torch_agrees():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((2, 32, 14, 14)).astype(np.float32)
    w = np.random.default_rng(3).standard_normal((32, 16, 2, 2)).astype(np.float32)
    y, pullback = cl.vjp(cl.conv_transpose2d, x, w, stride=2)
    g = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
    plan = cl.plan(g.shape, w.shape, "float32", stride=2)  # the input gradient's forward convolution
    assert plan.algorithm == "space_to_depth"
    assert plan.input_grad.method == plan.weight_grad.method == "space_to_depth"
    grad_x, grad_w = pullback(g)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv_transpose2d(xt, wt, stride=2)
    yt.backward(torch.from_numpy(g))
    for got, want in ((y, yt.detach()), (grad_x, xt.grad), (grad_w, wt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4 * float(np.abs(want.numpy()).max()))


def test_unbatched_non_contiguous_and_padded_input_through_the_public_op():
    x = np.random.default_rng(5).standard_normal((6, 4, 21, 30))[::2, :, :, ::-1]  # strided and reversed
    w = np.random.default_rng(6).standard_normal((5, 4, 3, 2))
    kwargs = dict(stride=(3, 2), padding=((1, 2), (0, 1)))
    got = cl.conv(x[1], w, **kwargs, algorithm="space_to_depth")
    np.testing.assert_allclose(got, cl.conv(x[1], w, **kwargs, algorithm="direct"), rtol=1e-12, atol=1e-12)
    reflect = cl.conv(x, w, **kwargs, padding_mode="reflect", algorithm="space_to_depth")
    np.testing.assert_allclose(reflect, cl.conv(x, w, **kwargs, padding_mode="reflect", algorithm="direct"),
                               rtol=1e-12, atol=1e-12)


def test_overlapping_windows_and_a_1x1_kernel_are_refused_by_name():
    assert "overlap" in S2D.why_not(cl.conv_spec((1, 2, 8, 8), (2, 2, 3, 3), stride=2), np.dtype(np.float32))
    assert "overlap" in S2D.why_not(cl.conv_spec((1, 2, 8, 8), (2, 2, 2, 2), stride=2, dilation=2),
                                    np.dtype(np.float32))
    assert "1x1" in S2D.why_not(cl.conv_spec((1, 2, 8, 8), (2, 2, 1, 1), stride=2), np.dtype(np.float32))
    with pytest.raises(ValueError, match="overlap.*space_to_depth"):
        cl.conv(np.ones((1, 2, 8, 8)), np.ones((2, 2, 3, 3)), stride=2, algorithm="space_to_depth")


SPECIALS = (np.inf, -np.inf, np.nan)


@pytest.mark.parametrize("poisoned", ["input", "weight", "grad_output"])
@pytest.mark.parametrize("config", CONFIGS[::4], ids=lambda c: f"{c[0]}-w{c[1]}")
def test_the_direct_sums_inf_and_nan_pattern(config, poisoned):
    spec, x, w, g = spec_and_arrays(config, seed=7)
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    arrays = {"input": x, "weight": w, "grad_output": g}
    flat = arrays[poisoned].reshape(-1)
    rng = np.random.default_rng(len(poisoned))
    if flat.size:
        for position in rng.choice(flat.size, size=min(flat.size, 3), replace=False):
            flat[position] = SPECIALS[int(rng.integers(0, 3))]
    with np.errstate(invalid="ignore", over="ignore"):
        expected, _ = references(spec, x, w, g)
        for got, want in zip(passes(spec, x, w, g), expected):
            for mask in (np.isnan, np.isposinf, np.isneginf):
                np.testing.assert_array_equal(mask(got), mask(want), err_msg=mask.__name__)


def test_the_workspace_check_counts_the_dtype_the_sums_are_made_in():
    """Integers sum in int64 and float16 in float32: one sample's columns are sized in those, not the input's."""
    from convolab.algorithms.space_to_depth import _columns_bytes
    spec = cl.conv_spec((1, 4, 64, 64), (8, 4, 2, 2), stride=2)
    with cl.workspace_limit(_columns_bytes(spec, 4)):  # float32's columns fit exactly; int64's are twice that
        refused = {dtype: cl.plan((1, 4, 64, 64), (8, 4, 2, 2), dtype, stride=2).refused.get("space_to_depth")
                   for dtype in (np.int16, np.float16, np.float32)}
    assert refused[np.int16] == "one sample's columns exceed the workspace limit"
    assert refused[np.float16] is None and refused[np.float32] is None
