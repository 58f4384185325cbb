"""Gradients, transposed convolution and unfold/fold against PyTorch autograd.

Every element of every gradient is compared (a check of the mean alone passes
with a wrongly rotated filter). Both input-gradient formulations ("scatter",
"full") and both weight-gradient formulations ("im2col", "conv") are checked on
every configuration.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import convolab as cl
from conv_cases import generate_cases

torch = pytest.importorskip("torch")
torch.set_num_threads(2)
F = torch.nn.functional

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
TOLERANCE = {np.float64: dict(rtol=1e-7, atol=1e-7), np.float32: dict(rtol=1.3e-6 * 10, atol=1e-5 * 5)}

CASES = [case for case in generate_cases(240, seed=3) if case.batch > 0]


def torch_pad(x, case):
    """Pad with torch ops whose autograd folds the border back (gather by numpy.pad's source map)."""
    rank = case.rank
    for axis_offset, ((low, high), size) in enumerate(zip(case.padding_pairs, case.input_size)):
        if not (low or high):
            continue
        axis = x.ndim - rank + axis_offset
        if case.canonical_mode == "zeros":
            widths = [0, 0] * (x.ndim - axis - 1) + [low, high]
            x = F.pad(x, widths)
        else:
            source = np.pad(np.arange(size), (low, high), mode=case.numpy_pad_mode)
            x = torch.index_select(x, axis, torch.as_tensor(source))
    return x


def torch_conv_grads(case, x, w, b, g, flip):
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    xb = xt if case.batched else xt.unsqueeze(0)
    kernel = torch.flip(wt, dims=list(range(2, 2 + case.rank))) if flip else wt
    out = TORCH_CONV[case.rank](torch_pad(xb, case), kernel, bt, case.strides, 0, case.dilations, case.groups)
    if not case.batched:
        out = out.squeeze(0)
    out.backward(torch.tensor(g))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


def check_conv_grads(case, dtype, flip):
    x, w, b = case.arrays(dtype)
    rng = np.random.default_rng(7)
    out, pullback = cl.vjp(cl.conv, x, w, b, flip=flip, **case.kwargs())
    g = rng.standard_normal(out.shape).astype(dtype)
    want_out, want_x, want_w, want_b = torch_conv_grads(case, x, w, b, g, flip)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(out, want_out, **tol)
    grad_x, grad_w, grad_b = pullback(g)
    np.testing.assert_allclose(grad_x, want_x, **tol)
    np.testing.assert_allclose(grad_w, want_w, **tol)
    if b is None:
        assert grad_b is None
    else:
        np.testing.assert_allclose(grad_b, want_b, **tol)
    for algorithm in ("scatter", "full", "phases"):
        grad_x = cl.grad.conv_input(x.shape, w, g, flip=flip, algorithm=algorithm, **case.kwargs())
        assert grad_x.dtype == dtype
        np.testing.assert_allclose(grad_x, want_x, **tol, err_msg=algorithm)
    for algorithm in ("im2col", "conv", "gemm"):
        grad_w = cl.grad.conv_weight(x, w.shape, g, flip=flip, algorithm=algorithm, **case.kwargs())
        assert grad_w.dtype == dtype
        np.testing.assert_allclose(grad_w, want_w, **tol, err_msg=algorithm)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_gradients_float64_match_torch(case):
    # Half the cases flip, chosen by a checksum of the id: hash() of a str changes between runs.
    check_conv_grads(case, np.float64, flip=zlib.crc32(case.id.encode()) % 2 == 0)


@pytest.mark.parametrize("case", CASES[::4], ids=str)
def test_conv_gradients_float32_match_torch(case):
    check_conv_grads(case, np.float32, flip=False)


@pytest.mark.parametrize("case", CASES[:60], ids=str)
def test_input_gradient_formulations_agree_exactly_on_integers(case):
    x, w, _ = case.arrays(np.int32)
    g = np.random.default_rng(1).integers(-3, 4, size=case.output_shape).astype(np.int32)
    scatter = cl.grad.conv_input(x.shape, w, g, algorithm="scatter", **case.kwargs())
    full = cl.grad.conv_input(x.shape, w, g, algorithm="full", **case.kwargs())
    phases = cl.grad.conv_input(x.shape, w, g, algorithm="phases", **case.kwargs())
    assert scatter.dtype == np.int64
    np.testing.assert_array_equal(scatter, full)
    np.testing.assert_array_equal(scatter, phases)
    by_im2col = cl.grad.conv_weight(x, w.shape, g, algorithm="im2col", **case.kwargs())
    by_conv = cl.grad.conv_weight(x, w.shape, g, algorithm="conv", **case.kwargs())
    np.testing.assert_array_equal(by_im2col, by_conv)


def test_unread_rows_get_zero_gradient():
    # 6 samples, kernel 3, stride 2: windows at 0..2 and 2..4; sample 5 is never read.
    x, w = np.ones((1, 1, 6)), np.ones((1, 1, 3))
    for algorithm in ("scatter", "full", "phases"):
        grad = cl.grad.conv1d_input(x.shape, w, np.ones((1, 1, 2)), stride=2, algorithm=algorithm)
        np.testing.assert_array_equal(grad[0, 0], [1, 1, 2, 1, 1, 0])


def test_rotation_matters_elementwise():
    """The input gradient is the full correlation with the filter rotated 180°, not unrotated."""
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    g = np.array([[[[1.0, 0.0], [0.0, 0.0]]]])
    grad = cl.grad.conv2d_input((1, 1, 3, 3), w, g)
    # Output (0, 0) read x[0:2, 0:2] with weights w: its gradient lands there unrotated.
    np.testing.assert_array_equal(grad[0, 0], [[1, 2, 0], [3, 4, 0], [0, 0, 0]])
    rotated = w[..., ::-1, ::-1]
    full = cl.conv2d(np.pad(g, ((0, 0), (0, 0), (1, 1), (1, 1))), rotated)
    np.testing.assert_array_equal(full, grad)


def test_empty_batch_gradients():
    x, w = np.zeros((0, 2, 5, 5)), np.ones((3, 2, 3, 3))
    out, pullback = cl.vjp(cl.conv2d, x, w, np.zeros(3), padding=1)
    grad_x, grad_w, grad_b = pullback(np.zeros(out.shape))
    assert grad_x.shape == x.shape and grad_w.shape == w.shape and grad_b.shape == (3,)
    assert not grad_w.any() and not grad_b.any()


def test_float16_gradients_keep_dtype():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 5, 5)).astype(np.float16), rng.standard_normal((2, 2, 3, 3)).astype(np.float16)
    out, pullback = cl.vjp(cl.conv2d, x, w)
    grad_x, grad_w = pullback(np.ones_like(out))
    assert grad_x.dtype == grad_w.dtype == np.float16
    want_x, want_w = cl.vjp(cl.conv2d, x.astype(np.float32), w.astype(np.float32))[1](np.ones(out.shape, np.float32))
    np.testing.assert_allclose(grad_x, want_x, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(grad_w, want_w, rtol=1e-2, atol=2e-2)


# -- transposed convolution ---------------------------------------------------


def transpose_cases(count, seed=5):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        rank = int(rng.integers(1, 4))
        groups = int(rng.choice([1, 2]))
        stride = tuple(int(v) for v in rng.integers(1, 4, rank))
        dilation = tuple(int(v) for v in rng.integers(1, 3, rank))
        case = dict(
            rank=rank, batch=int(rng.integers(1, 3)), groups=groups,
            in_channels=groups * int(rng.integers(1, 3)), out_channels=groups * int(rng.integers(1, 3)),
            size=tuple(int(v) for v in rng.integers(1, 6 if rank < 3 else 4, rank)),
            kernel=tuple(int(v) for v in rng.integers(1, 4, rank)), stride=stride, dilation=dilation,
            padding=tuple(int(v) for v in rng.integers(0, 3, rank)),
            output_padding=tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation)),
            bias=bool(rng.integers(0, 2)),
        )
        smallest = [(i - 1) * s - 2 * p + d * (k - 1) + 1 for i, s, p, d, k in
                    zip(case["size"], stride, case["padding"], dilation, case["kernel"])]
        if min(smallest) >= 1:
            cases.append(case)
    return cases


@pytest.mark.parametrize("case", transpose_cases(150), ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_conv_transpose_matches_torch(case):
    rng = np.random.default_rng(0)
    rank, groups = case["rank"], case["groups"]
    x = rng.standard_normal((case["batch"], case["in_channels"], *case["size"]))
    w = rng.standard_normal((case["in_channels"], case["out_channels"] // groups, *case["kernel"]))
    b = rng.standard_normal(case["out_channels"]) if case["bias"] else None
    params = dict(stride=case["stride"], padding=case["padding"], output_padding=case["output_padding"],
                  groups=groups, dilation=case["dilation"])
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    want = TORCH_CONV_T[rank](xt, wt, bt, **params)
    g = rng.standard_normal(tuple(want.shape))
    want.backward(torch.tensor(g))
    fixed_rank = {1: cl.conv_transpose1d, 2: cl.conv_transpose2d, 3: cl.conv_transpose3d}[rank]
    out, pullback = cl.vjp(fixed_rank, x, w, b, **params)
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-10, atol=1e-10)
    grad_x, grad_w, grad_b = pullback(g)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_w, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    if b is not None:
        np.testing.assert_allclose(grad_b, bt.grad.numpy(), rtol=1e-10, atol=1e-10)
    # output_size= gives the same result as the output_padding it implies (it may only add < stride)
    if all(p < s for p, s in zip(case["output_padding"], case["stride"])):
        by_size = cl.conv_transpose(x, w, b, case["stride"], case["padding"], 0, groups, case["dilation"],
                                    output_size=out.shape[2:])
        np.testing.assert_array_equal(by_size, out)


# conv_transpose takes symmetric zero padding (PyTorch's); the other kinds are covered through conv_input.
SYMMETRIC_ZERO_PADDED = [case for case in generate_cases(400, seed=11)
                         if case.canonical_mode == "zeros" and case.padding_kind in ("int", "per_dim")
                         and case.batch > 0][:60]


@pytest.mark.parametrize("case", SYMMETRIC_ZERO_PADDED, ids=str)
def test_conv_transpose_is_the_input_gradient(case):
    x, w, _ = case.arrays(np.float64)
    g = np.random.default_rng(2).standard_normal(case.output_shape)
    grad = cl.grad.conv_input(x.shape, w, g, **case.kwargs())
    transposed = cl.conv_transpose(g, w, None, case.stride, case.padding, 0, case.groups, case.dilation,
                                   output_size=case.input_size)
    np.testing.assert_allclose(transposed, grad, rtol=1e-12, atol=1e-12)


def test_conv_transpose_unbatched_and_empty():
    w = np.ones((2, 3, 2, 2))
    assert cl.conv_transpose2d(np.ones((2, 3, 3)), w, stride=2).shape == (3, 6, 6)
    assert cl.conv_transpose2d(np.ones((0, 2, 3, 3)), w, stride=2).shape == (0, 3, 6, 6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stride=2, output_padding=2), "output_padding"),
        (dict(stride=1, dilation=1, output_padding=1), "output_padding"),
        (dict(stride=2, output_size=(9, 9)), "output_size"),
        (dict(stride=2, output_size=(4, 4)), "output_size"),
        (dict(stride=2, output_size=(7,)), "output_size"),
        (dict(padding=5), "padding"),
        (dict(padding="same"), "padding"),
    ],
)
def test_conv_transpose_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cl.conv_transpose2d(np.ones((1, 2, 3, 3)), np.ones((2, 1, 3, 3)), **kwargs)


def test_conv_transpose_rejects_channel_mismatch():
    with pytest.raises(ValueError, match=r"input must have weight.shape\[0\]=2 channels, got 3"):
        cl.conv_transpose2d(np.ones((1, 3, 3, 3)), np.ones((2, 1, 3, 3)))


# -- unfold / fold --------------------------------------------------------------


UNFOLD_2D = [
    dict(kernel_size=k, dilation=d, padding=p, stride=s)
    for k in (1, 2, (3, 2)) for d in (1, (2, 1)) for p in (0, 1, (0, 2)) for s in (1, (2, 3))
]


@pytest.mark.parametrize("params", UNFOLD_2D, ids=str)
def test_unfold_fold_match_torch_2d(params):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 8))
    columns = cl.unfold(x, **params)
    np.testing.assert_array_equal(columns, F.unfold(torch.tensor(x), **params).numpy())
    y = rng.standard_normal(columns.shape)
    np.testing.assert_allclose(cl.fold(y, (7, 8), **params), F.fold(torch.tensor(y), (7, 8), **params).numpy(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.vdot(columns, y), np.vdot(x, cl.fold(y, (7, 8), **params)), rtol=1e-10)


def unfold_by_definition(x, kernel, stride, padding, dilation):
    """Column l, row c*K + j: x_padded[c, o_l*s + j*d], one element at a time."""
    rank = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0), *[(p, p) for p in padding]])
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(padded.shape[2:], kernel, stride, dilation)]
    columns = np.zeros((x.shape[0], x.shape[1] * int(np.prod(kernel)), int(np.prod(out))))
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for j_index, j in enumerate(np.ndindex(*kernel)):
                for l_index, o in enumerate(np.ndindex(*out)):
                    where = tuple(oo * s + jj * d for oo, jj, s, d in zip(o, j, stride, dilation))
                    columns[n, c * len(list(np.ndindex(*kernel))) + j_index, l_index] = padded[(n, c, *where)]
    assert rank == len(out)
    return columns


@pytest.mark.parametrize("rank", [1, 3])
def test_unfold_fold_other_ranks_by_definition(rank):
    rng = np.random.default_rng(rank)
    size = (9,) if rank == 1 else (4, 5, 3)
    kernel, stride, padding, dilation = ((3,), (2,), (1,), (2,)) if rank == 1 else ((2, 2, 2), (1, 2, 1), (1, 0, 1), (1, 1, 2))
    x = rng.standard_normal((2, 2, *size))
    columns = cl.unfold(x, kernel, dilation, padding, stride)
    np.testing.assert_array_equal(columns, unfold_by_definition(x, kernel, stride, padding, dilation))
    y = rng.standard_normal(columns.shape)
    np.testing.assert_allclose(np.vdot(columns, y), np.vdot(x, cl.fold(y, size, kernel, dilation, padding, stride)),
                               rtol=1e-10)


def test_unfold_is_the_im2col_of_conv():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2))
    columns = cl.unfold(x, (3, 2), padding=1, stride=(2, 1))  # (N, C*K, L)
    out = (w.reshape(4, -1) @ columns).reshape(2, 4, 3, 6)
    np.testing.assert_allclose(out, cl.conv2d(x, w, padding=1, stride=(2, 1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: cl.fold(np.ones((1, 5, 4)), (3, 3), 2), "prod"),
        (lambda: cl.fold(np.ones((1, 4, 5)), (3, 3), 2), "column"),
        (lambda: cl.unfold(np.ones((1, 1, 2, 2)), 3), "kernel_size"),
        (lambda: cl.unfold(np.ones((1, 1, 4, 4)), 2, stride=0), "stride"),
        (lambda: cl.unfold(np.ones((4, 4)), 2), "input"),
    ],
)
def test_unfold_fold_reject(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- gradcheck ------------------------------------------------------------------


GRADCHECKS = [
    (cl.conv1d, ((1, 2, 7), (3, 2, 3), (3,)), dict(stride=2, padding=((1, 2),), dilation=2, padding_mode="reflect")),
    (cl.conv2d, ((2, 2, 5, 4), (2, 1, 3, 2), (2,)), dict(groups=2, padding="same", stride=2, padding_mode="circular")),
    (cl.conv3d, ((1, 1, 4, 3, 4), (2, 1, 2, 2, 2), None), dict(padding=1, flip=True, padding_mode="symmetric")),
    (cl.conv, ((1, 2, 6, 5), (2, 2, 2, 3), (2,)), dict(padding="full", dilation=(2, 1))),
    (cl.conv_transpose1d, ((1, 2, 4), (2, 3, 3), (3,)), dict(stride=3, padding=1, output_padding=2)),
    (cl.conv_transpose2d, ((1, 2, 3, 3), (2, 1, 3, 2), (2,)), dict(stride=2, groups=2, dilation=(1, 2))),
    (cl.conv_transpose3d, ((1, 1, 2, 2, 2), (1, 2, 2, 2, 2), None), dict(stride=2)),
    (cl.unfold, ((1, 2, 5, 4),), dict(kernel_size=(2, 3), padding=1, stride=(2, 1))),
    (cl.fold, ((1, 4, 6),), dict(output_size=(3, 4), kernel_size=2)),
]


@pytest.mark.parametrize("op, shapes, params", GRADCHECKS, ids=lambda v: getattr(v, "__name__", None))
def test_gradcheck_passes(op, shapes, params):
    rng = np.random.default_rng(0)
    arrays = [None if shape is None else rng.standard_normal(shape) for shape in shapes]
    assert cl.gradcheck(op, *arrays, **params) is True


def test_gradcheck_probes_large_inputs_along_directions():
    rng = np.random.default_rng(0)
    assert cl.gradcheck(cl.conv2d, rng.standard_normal((2, 3, 20, 20)), rng.standard_normal((4, 3, 3, 3)),
                        padding=1, max_elements=100, directions=4)


def test_gradcheck_catches_a_wrong_pullback():
    from convolab._vjp import defines_vjp

    def unrotated_conv2d(x, w):
        return cl.conv2d(x, w)

    @defines_vjp(unrotated_conv2d)
    def _wrong(x, w):
        def pullback(g):
            # The mistake learners fear: the "full" correlation without rotating the filter.
            kh, kw = w.shape[2:]
            padded = np.pad(g, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
            wrong = cl.conv2d(padded, np.ascontiguousarray(w.swapaxes(0, 1)))
            return wrong, cl.grad.conv2d_weight(x, w.shape, g)

        return cl.conv2d(x, w), pullback

    rng = np.random.default_rng(0)
    with pytest.raises(cl.GradcheckError, match=r"argument 0 .* index \(.*pullback gives .* finite differences give"):
        cl.gradcheck(unrotated_conv2d, rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 1, 2, 2)))


def test_vjp_unknown_op_and_grad_output_shape():
    with pytest.raises(ValueError, match="no registered pullback"):
        cl.vjp(np.sum, np.ones(3))
    _, pullback = cl.vjp(cl.conv2d, np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="grad_output"):
        pullback(np.ones((1, 1, 3, 3)))


def test_grad_functions_reject_bad_arguments():
    w = np.ones((1, 1, 2, 2))
    with pytest.raises(ValueError, match="grad_output"):
        cl.grad.conv2d_input((1, 1, 3, 3), w, np.ones((1, 1, 3, 3)))
    with pytest.raises(TypeError, match="input_size"):
        cl.grad.conv2d_input("3x3", w, np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="algorithm"):
        cl.grad.conv2d_input((1, 1, 3, 3), w, np.ones((1, 1, 2, 2)), algorithm="rot180")
    with pytest.raises(ValueError, match="algorithm"):
        cl.grad.conv2d_weight(np.ones((1, 1, 3, 3)), (1, 1, 2, 2), np.ones((1, 1, 2, 2)), algorithm="fast")
    with pytest.raises(TypeError, match="grad_output"):
        cl.grad.conv2d_weight(np.ones((1, 1, 3, 3)), (1, 1, 2, 2), np.ones((1, 1, 2, 2), np.float32))
