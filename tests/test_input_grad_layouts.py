"""The input gradient's layouts: the scatter's one product per block of samples, and gemm's filters copied
from the full correlation's swapped, reversed view of the weight by the compiled tiled copy.

Tolerances. The tiled copy moves values, so it is compared for *equality*
with NumPy's copy. The scatter's products change width with the block of
samples, and gemm's full correlation sums in another order than the direct
sum, so the BLAS may add in another order: those are compared within the bound
of any summation order (as in test_compiled.py), and with PyTorch to the
dtype's rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab import _engine, _grad_problems
from convolab._window import pad_adjoint
from convolab.algorithms import ALGORITHMS
from convolab.algorithms._columns import TILED_COPY_VALUES, contiguous_filters
from test_compiled import assert_within, summation_bound

DTYPES = [np.float32, np.float64]


def draw(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _reversed(a):
    return a[(Ellipsis, *([slice(None, None, -1)] * (a.ndim - 2)))]


#: Views of a weight as gemm may be handed them: the full correlation's (swapped and reversed), a true
#: convolution's (reversed), swapped only, the weight itself, and one the tiled copy does not take (every
#: other filter), which NumPy copies.
VIEWS = {"swapped and reversed": lambda w: _reversed(w.swapaxes(0, 1)), "reversed": _reversed,
         "swapped": lambda w: w.swapaxes(0, 1), "contiguous": lambda w: w, "every other filter": lambda w: w[::2]}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(70, 37, 5, 5), (33, 40, 7, 7), (400, 300, 3), (61, 50, 3, 3, 3), (3, 2, 4, 4)],
                         ids=str)
@pytest.mark.parametrize("view", VIEWS, ids=str)
def test_tiled_copy_copies_every_view_exactly(view, shape, dtype):
    """Filters and channels not multiples of the tile, every rank; the last shape is below the compiled copy's
    threshold (NumPy copies it)."""
    weight = draw(shape, dtype, 1)
    kernel = VIEWS[view](weight)
    copied = contiguous_filters(kernel)
    assert copied.flags.c_contiguous and copied.dtype == dtype
    np.testing.assert_array_equal(copied, kernel)
    assert np.array_equal(weight, draw(shape, dtype, 1))  # the weight is not written
    if view != "every other filter" and weight.size >= TILED_COPY_VALUES:
        assert copied.base is None or copied.base is not weight


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("groups", [1, 2])
def test_gemm_full_correlation_on_the_swapped_view_like_direct_and_torch(groups, dtype):
    """gemm's run of the full problem on the kernel as the engine makes it (a view of the weight where there
    is one group), against direct on a contiguous copy and against PyTorch's input gradient."""
    torch = pytest.importorskip("torch")
    x_shape, weight = (3, 128, 9, 8), draw((128, 128 // groups, 3, 3), dtype, 3)
    spec = cl.conv_spec(x_shape, weight.shape, padding=1, groups=groups)
    g = draw(spec.output_shape, dtype, 4)
    full_spec, on_input, _ = _grad_problems.full_problem(spec)
    assert on_input
    grouped = weight.reshape(groups, spec.out_channels_per_group, spec.in_channels_per_group, 3, 3)
    swapped = grouped.swapaxes(1, 2).reshape(spec.in_channels, spec.out_channels_per_group, 3, 3)
    kernel = _engine.oriented_kernel(swapped, full_spec.flip)
    assert not kernel.flags.c_contiguous and kernel.size >= TILED_COPY_VALUES
    got = ALGORITHMS["gemm"].run_unpadded(g, kernel, full_spec)
    expected = ALGORITHMS["direct"].run_unpadded(g, np.ascontiguousarray(kernel), full_spec)
    bound = summation_bound(spec.out_channels_per_group * 9, np.abs(g).max() * np.abs(weight).max(), dtype)
    assert_within(got, expected, bound)
    grad = torch.nn.grad.conv2d_input(x_shape, torch.from_numpy(weight), torch.from_numpy(g), padding=1,
                                      groups=groups).numpy()
    assert_within(cl.grad.conv2d_input(x_shape, weight, g, padding=1, groups=groups, algorithm="full"), grad, bound)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("params", [dict(stride=2, padding=1), dict(padding=(0, 2), dilation=2),
                                    dict(stride=(1, 3), groups=2)], ids=str)
def test_scatter_in_blocks_of_one_sample_like_one_block_of_all(params, dtype):
    """A workspace limit of one sample's window gradients gives blocks of one sample, products as narrow as
    before the blocks took many: the same gradient within any summation order, the compiled add-back and
    NumPy's alike."""
    x_shape, weight = (5, 6, 11, 10), draw((8, 6 // params.get("groups", 1), 3, 3), dtype, 5)
    spec = cl.conv_spec(x_shape, weight.shape, **params)
    g = draw(spec.output_shape, dtype, 6)
    whole = _engine._input_grad_scatter(g, weight, spec, compiled=True)
    per_sample = spec.in_channels * 9 * int(np.prod(spec.output_size)) * g.itemsize
    with cl.workspace_limit(per_sample):
        one_by_one = _engine._input_grad_scatter(g, weight, spec, compiled=True)
        numpy_one_by_one = _engine._input_grad_scatter(g, weight, spec)
    bound = summation_bound(spec.out_channels_per_group * 9, np.abs(g).max() * np.abs(weight).max(), dtype)
    assert_within(one_by_one, whole, bound)
    assert_within(numpy_one_by_one[(Ellipsis, *(slice(low, low + size) for (low, _), size in
                                                 zip(spec.padding, spec.input_size)))], whole, bound)


def test_without_numba_gemm_reshapes_the_view_itself(without_numba):
    """Where Numba is missing gemm takes NumPy's copy of the view: the same numbers."""
    weight = draw((40, 36, 3, 3), np.float32, 7)
    spec = cl.conv_spec((2, 36, 6, 6), weight.shape, padding=1)
    g = draw(spec.output_shape, np.float32, 8)
    full_spec = _grad_problems.full_problem(spec)[0]
    kernel = _engine.oriented_kernel(weight.swapaxes(0, 1), full_spec.flip)
    np.testing.assert_array_equal(ALGORITHMS["gemm"].run_unpadded(g, kernel, full_spec),
                                  ALGORITHMS["gemm"].run_unpadded(g, np.ascontiguousarray(kernel), full_spec))


@pytest.mark.parametrize("threads", [1, 2])
def test_plans_of_the_stride_one_input_gradient(threads):
    """ResNet-18 layer4's input gradient takes the compiled scatter (one (4608, 512) @ (512, 392) product and
    the add-back, faster than the full correlation's forward); a 1x1 kernel never does (its full correlation
    is the same product with no add-back)."""
    with cl.thread_count(threads):
        layer4 = cl.plan((8, 512, 7, 7), (512, 512, 3, 3), "float32", padding=1).input_grad
        assert (layer4.method, dict(layer4.options)) == ("scatter", {"col2im": "compiled"})
        for weight_shape in [(256, 64, 1, 1), (512, 128, 1, 1), (64, 256, 1, 1)]:
            pointwise = cl.plan((8, weight_shape[1], 28, 28), weight_shape, "float32").input_grad
            assert pointwise.method == "full", pointwise


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("x_shape, weight_shape, params", [
    ((3, 4, 30, 40), (5, 4, 3, 3), dict(padding=1)),
    ((2, 6, 700), (4, 3, 5), dict(stride=2, padding=((3, 1),), groups=2)),
    ((2, 3, 9, 10, 12), (4, 3, 2, 3, 3), dict(dilation=(1, 2, 1), padding_mode="reflect", padding=1)),
], ids=str)
@pytest.mark.parametrize("samples_inside", [False, True], ids=["per sample", "samples inside"])
def test_scatter_layouts_bit_for_bit_and_like_direct(samples_inside, x_shape, weight_shape, params, dtype,
                                                     monkeypatch):
    """Both layouts of the window gradients (forced by the positions' threshold), every rank: the compiled
    add-back gives NumPy's bits, and the full correlation's gradient within any summation order."""
    monkeypatch.setattr(_engine, "SCATTER_BATCH_WIDE_POSITIONS", 10**9 if samples_inside else 0)
    weight = draw(weight_shape, dtype, 9)
    spec = cl.conv_spec(x_shape, weight_shape, **params)
    g = draw(spec.output_shape, dtype, 10)
    compiled = _engine._input_grad_scatter(g, weight, spec, compiled=True)
    numpy = _engine._input_grad_scatter(g, weight, spec)
    np.testing.assert_array_equal(compiled, pad_adjoint(numpy, spec.padding, spec.padding_mode, spec.input_size))
    # the other formulation, in float64: the float64 sums within any summation order, plus the dtype's rounding
    full = cl.grad.conv_input(x_shape, weight.astype(np.float64), g.astype(np.float64), **params, algorithm="full")
    bound = summation_bound(spec.out_channels_per_group * int(np.prod(weight_shape[2:])) * 2,
                            np.abs(g).max() * np.abs(weight).max(), dtype)
    assert_within(compiled.astype(np.float64), full, bound + np.finfo(dtype).eps * np.abs(full))


@pytest.mark.parametrize("compiled", [False, True])
def test_the_block_wide_scatter_keeps_its_copy_of_grad_output_within_the_workspace_limit(compiled):
    """With many more filters than window values per position (512 against 8 x 9), grad_output's block copied
    into the wide product's order outweighs the window gradients: it counts in the block's size."""
    from peak_memory import within_peak

    spec = cl.conv_spec((16, 8, 14, 14), (512, 8, 3, 3), stride=2, padding=1)
    rng = np.random.default_rng(8)
    w = rng.standard_normal(spec.weight_shape).astype(np.float32)
    g = rng.standard_normal(spec.output_shape).astype(np.float32)
    expected = _engine._input_grad_scatter(g, w, spec, compiled=compiled)
    limit = 2**18
    result_bytes = 16 * 8 * 16 * 16 * 4  # the padded gradient the scatter adds into, at most
    with cl.workspace_limit(limit):
        got = within_peak(lambda: _engine._input_grad_scatter(g, w, spec, compiled=compiled),
                          limit + result_bytes + 2**16)
    # Smaller blocks mean narrower products, which some OpenBLAS kernels (this machine's pinned
    # OPENBLAS_CORETYPE on an AMD EPYC) sum in another order: the same gradient to float32's rounding.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_the_scatter_by_name_with_no_filters_gives_zeros(padding_mode):
    """Zero output channels: no filter reads the input, so the named scatter's gradient is zeros, as auto's."""
    weight = np.ones((0, 3, 3, 3), np.float32)
    grad_output = np.ones((2, 0, 4, 4), np.float32)
    for algorithm in ("scatter", "auto"):
        got = cl.grad.conv2d_input((2, 3, 8, 8), weight, grad_output, stride=2, padding=1,
                                   padding_mode=padding_mode, algorithm=algorithm)
        assert got.shape == (2, 3, 8, 8) and got.dtype == np.float32
        assert not got.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, weight_shape, params", [
    ((2, 4, 14, 14), (6, 4, 1, 1), dict(stride=2)),
    ((2, 4, 15, 13), (6, 2, 1, 1), dict(stride=(3, 2), padding=((2, 0), (1, 3)), groups=2)),
    ((3, 3, 17), (5, 3, 1), dict(stride=4, padding=5)),  # windows wholly in the padding at both ends
    ((2, 2, 5, 6, 7), (3, 2, 1, 1, 1), dict(stride=2, padding=1, padding_mode="circular")),
    ((2, 4, 9, 9), (4, 4, 1, 1), dict(padding=2, padding_mode="reflect")),
], ids=str)
def test_a_pointwise_scatter_places_each_window_in_its_cell(x_shape, weight_shape, params, dtype):
    """A 1x1 kernel's windows never share a cell, so the scatter places each window's gradient (session 22):
    against the full correlation within any summation order, and exact zeros on the cells no window reads."""
    weight = draw(weight_shape, dtype, 11)
    spec = cl.conv_spec(x_shape, weight_shape, **params)
    g = draw(spec.output_shape, dtype, 12)
    full = cl.grad.conv_input(x_shape, weight.astype(np.float64), g.astype(np.float64), **params, algorithm="full")
    bound = summation_bound(spec.out_channels_per_group * 2, np.abs(g).max() * np.abs(weight).max(), dtype)
    numpy = pad_adjoint(_engine._input_grad_scatter(g, weight, spec), spec.padding, spec.padding_mode,
                        spec.input_size)
    for got in (numpy, _engine._input_grad_scatter(g, weight, spec, compiled=True),
                cl.grad.conv_input(x_shape, weight, g, **params)):  # NumPy's, compiled, auto's
        assert got.shape == x_shape and got.dtype == dtype
        assert_within(got.astype(np.float64), full, bound + np.finfo(dtype).eps * np.abs(full))
        np.testing.assert_array_equal(got[full == 0], 0)  # the cells between the strides: nothing read them
