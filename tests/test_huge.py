"""Huge padding, stride and dilation: PyTorch's shapes and values, in bounded memory (issue 13, item 3).

Where the padded input would be far larger than what the windows read
(``padding=10**5`` with ``stride=10**5`` reads 9 of 200005 cells per axis), the
convolution runs on the read cells only (:func:`convolab._window.compact_reads`).
These tests compare that path with PyTorch, forward and both gradients, on the
issue's cases, on generated awkward ones (every padding mode, asymmetric
padding, dilation, groups, 1-3 d), check that its memory stays small, and that
normal layers never take it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import convolab as cl
from convolab import shapes
from convolab._window import compact_reads, sliding_windows, add_windows
from peak_memory import stays_within_peak, within_peak

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
F = torch.nn.functional

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
NUMPY_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap",
              "symmetric": "symmetric"}
def _pairs(padding, rank):
    if isinstance(padding, int):
        return ((padding, padding),) * rank
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def torch_conv_and_grads(x, w, b, g, *, stride=1, padding=0, dilation=1, groups=1, mode="zeros"):
    """PyTorch's forward and autograd gradients; symmetric zero padding stays inside torch's conv (never built)."""
    rank = x.ndim - 2
    pairs = _pairs(padding, rank)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    padded, inner = xt, []
    for axis_offset, ((low, high), size) in enumerate(zip(pairs, x.shape[2:])):
        axis = 2 + axis_offset
        if mode == "zeros":
            common = min(low, high)  # torch pads this much itself, without building it
            inner.append(common)
            widths = [0, 0] * (rank - 1 - axis_offset) + [low - common, high - common]
            padded = F.pad(padded, widths)
        else:
            inner.append(0)
            source = np.pad(np.arange(size), (low, high), mode=NUMPY_MODE[mode])
            padded = torch.index_select(padded, axis, torch.as_tensor(source))
    out = TORCH_CONV[rank](padded, wt, bt, stride, tuple(inner), dilation, groups)
    out.backward(torch.tensor(g))
    return (out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy())


def _arrays(rng, input_shape, weight_shape, output_bias=True):
    x = rng.standard_normal(input_shape)
    w = rng.standard_normal(weight_shape)
    b = rng.standard_normal(weight_shape[0]) if output_bias else None
    return x, w, b


def _check_against_torch(x, w, b, *, stride=1, padding=0, dilation=1, groups=1, mode="zeros", formulations=False):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out, pullback = cl.vjp(cl.conv, x, w, b, padding_mode=mode, **kwargs)
    g = np.random.default_rng(1).standard_normal(out.shape)
    expected = torch_conv_and_grads(x, w, b, g, mode=mode, **kwargs)
    np.testing.assert_allclose(out, expected[0], rtol=1e-10, atol=1e-10)
    grads = pullback(g)
    for got, want in zip(grads, expected[1:]):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    if formulations:  # every formulation of each gradient, through convolab.grad
        for algorithm in ("scatter", "full"):
            got = cl.grad.conv_input(x.shape, w, g, padding_mode=mode, algorithm=algorithm, **kwargs)
            np.testing.assert_allclose(got, expected[1], rtol=1e-10, atol=1e-10, err_msg=algorithm)
        for algorithm in ("im2col", "conv", "gemm"):
            got = cl.grad.conv_weight(x, w.shape, g, padding_mode=mode, algorithm=algorithm, **kwargs)
            np.testing.assert_allclose(got, expected[2], rtol=1e-10, atol=1e-10, err_msg=algorithm)


# ---------------------------------------------------------------------------
# The measured cases
# ---------------------------------------------------------------------------


def test_huge_padding_and_stride_returns_torchs_values():
    # Was MemoryError (596 GiB for the padded input); PyTorch returns (1, 3, 3, 3).
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    out = cl.conv2d(x, w, np.arange(3.0), padding=10**5, stride=10**5)
    expected = np.zeros((1, 3, 3, 3)) + np.arange(3.0)[:, None, None]
    expected[0, :, 1, 1] += 18  # only the centre window reads the input: all 2*3*3 ones
    np.testing.assert_array_equal(out, expected)


def test_stride_too_large_for_a_byte_stride_gives_one_window():
    # Was OverflowError from as_strided; PyTorch returns (1, 3, 1, 1).
    rng = np.random.default_rng(0)
    x, w, b = _arrays(rng, (1, 2, 5, 5), (3, 2, 3, 3))
    _check_against_torch(x, w, b, stride=10**18, padding=0)
    assert cl.conv2d(x, w, stride=10**18).shape == (1, 3, 1, 1)


def test_padding_too_large_for_memory_is_refused_by_name_before_allocating():
    # Was NumPy's "array is too big", naming no parameter.
    with stays_within_peak():
        with pytest.raises(MemoryError) as error:
            cl.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3)), padding=10**9)
    message = str(error.value)
    assert message.startswith("conv2d: padding=((1000000000, 1000000000), (1000000000, 1000000000))")
    assert "output of shape (1, 3, 2000000003, 2000000003)" in message and "EiB of float64" in message


def test_input_gradient_too_large_for_memory_is_refused_by_name():
    with pytest.raises(MemoryError, match=r"conv2d_input: .*stride=\(1000000000, 1000000000\).* input gradient of "
                                          r"shape \(1, 2, 1000000000, 1000000000\)"):
        cl.grad.conv2d_input((1, 2, 10**9, 10**9), np.ones((3, 2, 3, 3)), np.ones((1, 3, 1, 1)), stride=10**9)


def test_weight_gradient_too_large_for_memory_is_refused_by_name():
    # A kernel of 10**9 taps per axis fits the padding, and one window: grad_output is one cell.
    with pytest.raises(MemoryError, match=r"conv2d_weight: padding=\(\(1000000000, 1000000000\), .* weight gradient "
                                          r"of shape \(3, 2, 1000000000, 1000000000\)"):
        cl.grad.conv2d_weight(np.ones((1, 2, 5, 5)), (3, 2, 10**9, 10**9), np.ones((1, 3, 1, 1)), padding=10**9,
                              stride=2 * 10**9)


# ---------------------------------------------------------------------------
# Huge cases against PyTorch, and their memory
# ---------------------------------------------------------------------------

# (input shape, weight shape, conv arguments): PyTorch pads these itself without building the padding.
HUGE_CASES = [
    ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=10**5, stride=10**5)),
    ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=0, stride=10**18)),
    ((4, 2, 5, 5), (3, 2, 3, 3), dict(padding=1, stride=10**18)),  # gemm's batch-inner columns, its own view
    ((4, 2, 5, 5), (3, 2, 1, 1), dict(dilation=10**18)),  # one tap: the dilation is never stepped
    ((2, 2, 7), (4, 1, 3), dict(padding=10**9, stride=10**9, dilation=2, groups=2)),
    ((1, 2, 4, 5, 3), (2, 2, 2, 3, 1), dict(padding=(10**4, 7, 10**6), stride=(10**4 + 1, 3, 10**6 + 7))),
    ((1, 4, 6, 5), (4, 2, 3, 2), dict(padding=10**6, stride=999_983, dilation=5, groups=2)),
    ((1, 1, 5), (1, 1, 2), dict(padding=5 * 10**8, dilation=10**9)),  # two taps a billion apart
    ((2, 1, 6), (2, 1, 3), dict(padding=((10**5, 10**5 + 2),), stride=10**5 - 1)),  # asymmetric, not dividing
    ((2, 4, 6, 5), (4, 1, 3, 3), dict(padding=(10**5, 4), stride=(10**5, 7), groups=4)),  # depthwise
    ((1, 2, 4, 3), (2, 2, 2, 2), dict(padding=((3, 1000), (10**6, 10**6 + 1)), stride=(5, 10**6 - 3))),
]


@pytest.mark.parametrize("input_shape, weight_shape, kwargs", HUGE_CASES, ids=str)
def test_huge_cases_match_torch_forward_and_gradients(input_shape, weight_shape, kwargs):
    rng = np.random.default_rng(sum(input_shape))
    x, w, b = _arrays(rng, input_shape, weight_shape)
    _check_against_torch(x, w, b, formulations=True, **kwargs)


@pytest.mark.parametrize("input_shape, weight_shape, kwargs", HUGE_CASES, ids=str)
def test_huge_cases_stay_within_a_few_mib(input_shape, weight_shape, kwargs):
    rng = np.random.default_rng(0)
    x, w, b = _arrays(rng, input_shape, weight_shape)
    out_shape = cl.conv(x, w, **kwargs).shape
    g = rng.standard_normal(out_shape)

    def forward_and_gradients():
        out, pullback = cl.vjp(cl.conv, x, w, b, **kwargs)
        pullback(g)
        cl.grad.conv_input(x.shape, w, g, **kwargs)
        cl.grad.conv_weight(x, w.shape, g, **kwargs)

    within_peak(forward_and_gradients)


def test_huge_case_with_flip_and_unbatched_input_matches_torch():
    rng = np.random.default_rng(5)
    x, w, b = _arrays(rng, (2, 5, 4), (3, 2, 3, 2))
    kwargs = dict(padding=(10**6, (3, 10**5)), stride=(10**6 - 1, 10**5))
    out, pullback = cl.vjp(cl.conv2d, x, w, b, flip=True, **kwargs)
    g = rng.standard_normal(out.shape)
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
    expected = torch_conv_and_grads(x[np.newaxis], flipped, b, g[np.newaxis], stride=kwargs["stride"],
                                    padding=((10**6, 10**6), (3, 10**5)))
    grad_input, grad_weight, grad_bias = pullback(g)
    np.testing.assert_allclose(out, expected[0][0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_input, expected[1][0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_weight, expected[2][:, :, ::-1, ::-1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_bias, expected[3], rtol=1e-10, atol=1e-10)


def test_huge_case_with_integers_is_exact():
    x = np.arange(50).reshape(1, 2, 5, 5)
    w = np.arange(54).reshape(3, 2, 3, 3)
    out = cl.conv2d(x, w, padding=10**5, stride=10**5)
    expected = np.zeros((1, 3, 3, 3), dtype=np.int64)
    expected[0, :, 1, 1] = cl.conv2d(x[:, :, :3, :3], w)[0, :, 0, 0]  # the one window on the input
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    dx = cl.grad.conv2d_input(x.shape, w, np.ones((1, 3, 3, 3), dtype=np.int64), padding=10**5, stride=10**5)
    assert dx.dtype == np.int64 and dx[0, :, :3, :3].tolist() == w.sum(axis=0).tolist() and not dx[..., 3:].any()


def test_nan_outside_every_window_stays_out_of_the_zero_padding():
    # The compact input's zero cells are written as zeros, never as 0 * x.
    x = np.full((1, 1, 5, 5), np.nan)
    x[0, 0, :3, :3] = 1.0
    out = cl.conv2d(x, np.ones((1, 1, 3, 3)), padding=10**5, stride=10**5)
    assert out[0, 0].tolist() == [[0, 0, 0], [0, 9, 0], [0, 0, 0]]


# ---------------------------------------------------------------------------
# Generated awkward cases on the compact path, every padding mode, against PyTorch
# ---------------------------------------------------------------------------


def _awkward_cases(count, seed=5):
    """Problems whose padding or stride makes convolab take the compact path (checked), small enough for torch."""
    rng = np.random.default_rng(seed)
    modes = ["zeros", "reflect", "replicate", "circular", "symmetric"]
    cases = []
    while len(cases) < count:
        mode = modes[len(cases) % len(modes)]
        rank = 3 if mode != "zeros" else 1 + len(cases) // len(modes) % 3  # other modes pad at most the input
        groups = int(rng.integers(1, 3))
        kernel = tuple(int(k) for k in rng.integers(1, 4, rank))
        dilation = tuple(int(d) for d in rng.integers(1, 4, rank))
        size = tuple(int(n) for n in rng.integers(3 if mode != "zeros" else 1, 6, rank))
        if mode == "zeros":
            padding = tuple((int(lo), int(hi)) for lo, hi in rng.integers(0, 60, (rank, 2)))
        else:
            largest = [n - 1 if mode == "reflect" else n for n in size]
            padding = tuple((int(rng.integers(m // 2, m + 1)), int(rng.integers(m // 2, m + 1))) for m in largest)
        if any(n + lo + hi < shapes.dilated_kernel_size(k, d)
               for n, (lo, hi), k, d in zip(size, padding, kernel, dilation)):
            continue
        stride = tuple(int(s) for s in rng.integers(1, 60, rank))
        if compact_reads(size, padding, mode, kernel, stride, dilation) is None:
            continue  # not a compact case: the existing tests cover it
        batch = int(rng.integers(1, 3))
        cases.append(((batch, 2 * groups, *size), (2 * groups, 2, *kernel),
                      dict(stride=stride, padding=padding, dilation=dilation, groups=groups, mode=mode)))
    return cases


AWKWARD_CASES = _awkward_cases(40)


@pytest.mark.parametrize("input_shape, weight_shape, kwargs", AWKWARD_CASES, ids=str)
def test_awkward_compact_cases_match_torch(input_shape, weight_shape, kwargs):
    rng = np.random.default_rng(sum(input_shape))
    x, w, b = _arrays(rng, input_shape, weight_shape)
    _check_against_torch(x, w, b, formulations=True, **kwargs)


def test_awkward_cases_cover_every_mode_and_rank():
    assert {kwargs["mode"] for _, _, kwargs in AWKWARD_CASES} == set(NUMPY_MODE)
    assert {len(shape) - 2 for shape, _, _ in AWKWARD_CASES} == {1, 2, 3}


@pytest.mark.parametrize("algorithm", list(cl.ALGORITHMS))
def test_every_algorithm_runs_the_compact_problem(algorithm):
    rng = np.random.default_rng(3)
    x, w, _ = _arrays(rng, (2, 2, 5, 6), (2, 1, 3, 3), output_bias=False)
    kwargs = dict(padding=((40, 41), (3, 50)), stride=(1, 1), dilation=(1, 1), groups=2)
    try:
        out = cl.conv2d(x, w, algorithm=algorithm, **kwargs)
    except ValueError as error:  # refused by name, as on any problem it cannot run
        assert "cannot run this problem" in str(error)
        return
    expected = torch_conv_and_grads(x, w, None, np.zeros((2, 2, 84, 57)), **kwargs)[0]
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)


def test_folded_weight_gradient_keeps_the_dilation_it_needs():
    # Unfolding the taps would give the last axis a stride, which folded refuses; the span layout keeps it 1.
    rng = np.random.default_rng(4)
    x, w, _ = _arrays(rng, (1, 1, 3, 4), (1, 1, 2, 2), output_bias=False)
    kwargs = dict(padding=((100, 100), (60, 60)), stride=(7, 1), dilation=(1, 40))
    g = rng.standard_normal(cl.conv2d(x, w, **kwargs).shape)
    expected = torch_conv_and_grads(x, w, None, g, **kwargs)[2]
    got = cl.grad.conv2d_weight(x, w.shape, g, algorithm="folded", **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# Normal layers keep today's path; the geometry itself
# ---------------------------------------------------------------------------


def test_normal_layers_never_take_the_compact_path():
    # Padding smaller than the kernel and a stride within the dilated kernel: the padded path, untouched.
    for rank, size, k, d in itertools.product((1, 2, 3), (1, 2, 3, 7, 32), (1, 2, 3, 5), (1, 2, 4)):
        extent = shapes.dilated_kernel_size(k, d)
        for low, high, s in itertools.product(range(k), range(k), sorted({1, 2, extent})):
            if s > extent or size + low + high < extent:
                continue
            reads = compact_reads((size,) * rank, ((low, high),) * rank, "zeros", (k,) * rank, (s,) * rank,
                                  (d,) * rank)
            assert reads is None, (rank, size, k, d, low, high, s)


@pytest.mark.parametrize("output_size, kernel, stride, dilation",
                         list(itertools.product((1, 2, 5), (1, 2, 3), (1, 2, 3, 7, 10**6), (1, 2, 9))))
def test_compact_axis_reads_the_same_cells_in_the_same_order(output_size, kernel, stride, dilation):
    length, compact_stride, compact_dilation = shapes.compact_axis(output_size, kernel, stride, dilation)
    extent = shapes.dilated_kernel_size(kernel, dilation)
    assert length == min(output_size * kernel, (output_size - 1) * min(stride, extent) + extent)
    windows = sliding_windows(np.arange(length), [kernel], [compact_stride], [compact_dilation])  # compact cells
    assert windows.shape == (output_size, kernel)  # the same outputs and taps
    if compact_dilation == dilation:  # span: windows min(s, k_eff) apart, the gaps between them dropped
        padded = [(c // compact_stride) * stride + c % compact_stride for c in range(length)]
    else:  # unfolded: the taps only
        padded = [(c // kernel) * stride + (c % kernel) * dilation for c in range(length)]
    expected = [[o * stride + j * dilation for j in range(kernel)] for o in range(output_size)]
    assert [[padded[c] for c in window] for window in windows.tolist()] == expected


def test_sliding_windows_and_add_windows_accept_a_stride_past_any_byte_stride():
    windows = sliding_windows(np.arange(5.0), [3], [10**19], [1])
    assert windows.tolist() == [[0.0, 1.0, 2.0]]
    assert sliding_windows(np.arange(5.0), [1], [1], [10**19]).tolist() == [[0.0], [1.0], [2.0], [3.0], [4.0]]
    assert add_windows(np.ones((1, 3)), [5], [10**19], [1]).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


# ---------------------------------------------------------------------------
# unfold and fold
# ---------------------------------------------------------------------------

UNFOLD_CASES = [
    ((1, 2, 5, 5), dict(kernel_size=3, padding=10**5, stride=10**5)),
    ((1, 2, 5, 5), dict(kernel_size=3, stride=10**18)),
    ((2, 3, 4, 6), dict(kernel_size=(2, 3), padding=(10**6, 7), stride=(10**6 + 1, 4), dilation=(3, 1))),
    ((1, 1, 3, 2), dict(kernel_size=(2, 2), padding=(40, 30), stride=(33, 29), dilation=(1, 20))),
]


@pytest.mark.parametrize("input_shape, kwargs", UNFOLD_CASES, ids=str)
def test_unfold_and_fold_with_huge_arguments_match_torch(input_shape, kwargs):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(input_shape)
    columns, pullback = cl.vjp(cl.unfold, x, **kwargs)
    xt = torch.tensor(x, requires_grad=True)
    expected = F.unfold(xt, **kwargs)
    np.testing.assert_allclose(columns, expected.detach().numpy(), rtol=1e-12, atol=0)
    g = rng.standard_normal(columns.shape)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(pullback(g)[0], xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    folded = cl.fold(g, input_shape[2:], **kwargs)  # fold is unfold's transpose: the same gradient
    np.testing.assert_allclose(folded, F.fold(torch.tensor(g), input_shape[2:], **kwargs).numpy(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("input_shape, kwargs", UNFOLD_CASES, ids=str)
def test_unfold_and_fold_with_huge_arguments_stay_within_a_few_mib(input_shape, kwargs):
    x = np.ones(input_shape)
    within_peak(lambda: cl.fold(cl.unfold(x, **kwargs), input_shape[2:], **kwargs))


def test_unfold_output_too_large_for_memory_is_refused_by_name():
    with pytest.raises(MemoryError, match=r"unfold: padding=\(\(1000000000, 1000000000\), .* output of shape "
                                          r"\(1, 18, 4000000012000000009\)"):
        cl.unfold(np.ones((1, 2, 5, 5)), 3, padding=10**9)


# ---------------------------------------------------------------------------
# Transposed convolution: a huge stride cropped by a huge padding
# ---------------------------------------------------------------------------

TORCH_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
# PyTorch's transposed convolution takes strides below 2**31.
TRANSPOSE_CASES = [
    ((1, 2, 2, 2), (2, 3, 3, 3), dict(stride=2**30, padding=2**29)),
    ((2, 2, 2, 2), (2, 3, 3, 2), dict(stride=2**30, padding=2**29 - 5)),
    ((1, 2, 2, 1), (2, 3, 3, 3), dict(stride=(2**30, 3), padding=(2**29, 1), output_padding=(7, 2))),
    ((1, 4, 3), (4, 1, 2), dict(stride=10**6, padding=10**6 - 1, dilation=3, groups=2)),
    ((1, 1, 2, 2, 2), (1, 1, 2, 1, 2), dict(stride=(10**5, 4, 10**4), padding=(5 * 10**4 - 2, 0, 5 * 10**3 - 1),
                                             output_padding=(1, 3, 0), dilation=(1, 2, 5))),
    ((1, 1, 2), (1, 1, 3), dict(stride=2, padding=0, output_padding=4, dilation=5)),  # past the extent
]


@pytest.mark.parametrize("input_shape, weight_shape, kwargs", TRANSPOSE_CASES, ids=str)
def test_conv_transpose_with_huge_stride_and_padding_matches_torch(input_shape, weight_shape, kwargs):
    rng = np.random.default_rng(6)
    x, w, b = _arrays(rng, input_shape, weight_shape, output_bias=False)
    b = rng.standard_normal(weight_shape[1] * kwargs.get("groups", 1))
    out_shape = cl.conv_transpose(x, w, b, **kwargs).shape
    g = rng.standard_normal(out_shape)

    def forward_and_gradients():
        out, pullback = cl.vjp(cl.conv_transpose, x, w, b, **kwargs)
        return out, pullback(g)

    out, grads = within_peak(forward_and_gradients)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    expected = TORCH_CONV_T[x.ndim - 2](xt, wt, bt, **kwargs)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-10)
    expected.backward(torch.tensor(g))
    for got, want in zip(grads, (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)


def test_conv_transpose_output_too_large_for_memory_is_refused_by_name():
    with pytest.raises(MemoryError, match=r"conv_transpose2d: .*stride=\(1073741824, 1073741824\).* output of shape "
                                          r"\(1, 3, 1073741827, 1073741827\)"):
        cl.conv_transpose2d(np.ones((1, 2, 2, 2)), np.ones((2, 3, 3, 3)), stride=2**30)


# ---------------------------------------------------------------------------
# Pooling: a huge stride, and the huge padding a huge kernel allows
# ---------------------------------------------------------------------------

TORCH_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
# PyTorch's pools take strides below 2**31.
POOL_CASES = [
    ((1, 2, 5, 5), dict(kernel_size=3, stride=2**31 - 1)),
    ((1, 2, 5, 5), dict(kernel_size=3, stride=2**31 - 1, padding=1, ceil_mode=True)),
    ((2, 1, 5, 4), dict(kernel_size=2 * 10**5, stride=1, padding=10**5)),
    ((1, 2, 5), dict(kernel_size=2 * 10**8, stride=1, padding=10**8)),
    ((1, 1, 3, 4, 2), dict(kernel_size=(10**4, 3, 7), stride=(3, 10**6, 1), padding=(5000, 1, 3), ceil_mode=True)),
    # ceil_mode's last window starts in the low padding: the windows reach the input with taps 10**5 apart
    ((1, 2, 5, 5), dict(kernel_size=2 * 10**5, stride=10**5, padding=10**5, ceil_mode=True)),
]


@pytest.mark.parametrize("input_shape, kwargs", POOL_CASES, ids=str)
def test_max_pool_with_huge_kernel_or_stride_matches_torch(input_shape, kwargs):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(input_shape)
    x.flat[::3] = x.flat[1]  # ties: the first in window order wins
    rank = x.ndim - 2
    pool_kwargs = {**kwargs, "kernel_size": _per_axis(kwargs["kernel_size"], rank)}
    g = rng.standard_normal(cl.pooling.max_pool(x, **pool_kwargs).shape)

    def forward_and_gradient():
        (values, indices), pullback = cl.vjp(cl.pooling.max_pool, x, return_indices=True, **pool_kwargs)
        return values, indices, pullback(g)[0]

    values, indices, grad = within_peak(forward_and_gradient)
    xt = torch.tensor(x, requires_grad=True)
    expected, expected_indices = TORCH_MAX_POOL[rank](xt, return_indices=True, **kwargs)
    np.testing.assert_array_equal(values, expected.detach().numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=0)


# PyTorch's avg_pool3d refuses a kernel larger than the input, whatever the padding.
AVG_POOL_CASES = [case for case in POOL_CASES if len(case[0]) < 5] + [
    ((1, 1, 3, 4, 2), dict(kernel_size=(3, 3, 2), stride=(3, 10**6, 1), padding=(1, 1, 1), ceil_mode=True)),
]


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("input_shape, kwargs", AVG_POOL_CASES, ids=str)
def test_avg_pool_with_huge_kernel_or_stride_matches_torch(input_shape, kwargs, count_include_pad):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(input_shape)
    rank = x.ndim - 2
    pool_kwargs = {**kwargs, "count_include_pad": count_include_pad,
                   "kernel_size": _per_axis(kwargs["kernel_size"], rank)}
    g = rng.standard_normal(cl.pooling.avg_pool(x, **pool_kwargs).shape)

    def forward_and_gradient():
        out, pullback = cl.vjp(cl.pooling.avg_pool, x, **pool_kwargs)
        return out, pullback(g)[0]

    out, grad = within_peak(forward_and_gradient)
    xt = torch.tensor(x, requires_grad=True)
    expected = TORCH_AVG_POOL[rank](xt, count_include_pad=count_include_pad, **kwargs)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-300)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-300)


def _per_axis(value, rank):
    return value if isinstance(value, tuple) else (value,) * rank


@pytest.mark.parametrize("fill_with_minus_inf", [False, True])
def test_max_pool_trimmed_kernel_on_the_phase_grid_matches_torch(fill_with_minus_inf):
    # Large enough for the phase grid (not the gathered windows); -inf everywhere sends it to the reference.
    rng = np.random.default_rng(10)
    x = np.full((1, 2, 20, 20), -np.inf) if fill_with_minus_inf else rng.standard_normal((1, 2, 20, 20))
    kwargs = dict(kernel_size=(41, 41), stride=1, padding=20, dilation=1)
    values, indices = cl.max_pool2d(x, return_indices=True, **kwargs)
    expected, expected_indices = F.max_pool2d(torch.tensor(x), return_indices=True, **kwargs)
    np.testing.assert_array_equal(values, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=(3, 3), stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=(4, 4), stride=3, padding=2, dilation=2, ceil_mode=True),
])
def test_separable_max_pool_keeps_torchs_tie_and_nan_rules(kwargs):
    # The axis-by-axis path taken for huge kernels, on small ones: first maximum in window order, last NaN.
    from convolab.pooling import pool_spec
    from convolab.pooling.max import _max_pool_separable

    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float64)
    x[0, 0, 2, 3] = x[1, 2, 5, 5] = x[1, 2, 6, 4] = np.nan
    x[1, 1] = -np.inf
    spec = pool_spec(x.shape, **kwargs)
    values, indices = _max_pool_separable(x, spec)
    expected, expected_indices = F.max_pool2d(torch.tensor(x), return_indices=True, **kwargs)
    np.testing.assert_array_equal(values, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
