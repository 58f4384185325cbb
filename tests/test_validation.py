"""Validation as strict as PyTorch's (issue 13, item 4).

Each case the issue measured is a test here: output_size of a transposed
convolution takes ints only; boolean flags take bools only; ``ceil_mode``
follows PyTorch's output-size rule, checked against torch on a generated grid;
byte order is not a dtype; masked arrays are refused by name; and an
``nn`` backward needs a fresh forward. The last table names, for every public
op, one bad value of each parameter: the exception type and the parameter the
message must name.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import convolab as cl
from convolab import nn
from convolab.spec import check_flag

torch = pytest.importorskip("torch")
F = torch.nn.functional


def named(op: str, name: str, rule: str = "", got: str = "") -> str:
    """Regex: the message is ``"{op}: {name} ...{rule}..., got ...{got}..."``."""
    return rf"(?s)^{re.escape(op)}: {re.escape(name)} .*{re.escape(rule)}.*, got .*{re.escape(got)}"


X2 = np.ones((1, 1, 4, 4))
W2 = np.ones((1, 1, 2, 2))


# -- boolean flags ------------------------------------------------------------------------------------------------

FLAG_CALLS = {
    "conv2d flip": lambda v: cl.conv2d(X2, W2, flip=v),
    "conv flip": lambda v: cl.conv(X2, W2, flip=v),
    "conv2d_input flip": lambda v: cl.grad.conv2d_input(X2.shape, W2, np.ones((1, 1, 3, 3)), flip=v),
    "conv2d_weight flip": lambda v: cl.grad.conv2d_weight(X2, W2.shape, np.ones((1, 1, 3, 3)), flip=v),
    "max_pool2d ceil_mode": lambda v: cl.max_pool2d(X2, 2, ceil_mode=v),
    "max_pool2d return_indices": lambda v: cl.max_pool2d(X2, 2, return_indices=v),
    "avg_pool2d ceil_mode": lambda v: cl.avg_pool2d(X2, 2, ceil_mode=v),
    "avg_pool2d count_include_pad": lambda v: cl.avg_pool2d(X2, 2, count_include_pad=v),
    "adaptive_max_pool2d return_indices": lambda v: cl.adaptive_max_pool2d(X2, 2, return_indices=v),
    "max_pool2d_input ceil_mode": lambda v: cl.grad.max_pool2d_input(np.ones((1, 1, 2, 2)), X2, 2, ceil_mode=v),
    "avg_pool2d_input count_include_pad":
        lambda v: cl.grad.avg_pool2d_input(np.ones((1, 1, 2, 2)), X2, 2, count_include_pad=v),
    "dropout training": lambda v: nn.functional.dropout(X2, 0.5, training=v, rng=0),
    "batch_norm training": lambda v: nn.functional.batch_norm(X2, np.zeros(1), np.ones(1), training=v),
    "Conv2d bias": lambda v: nn.Conv2d(1, 1, 2, bias=v),
    "MaxPool2d ceil_mode": lambda v: nn.MaxPool2d(2, ceil_mode=v),
    "MaxPool2d return_indices": lambda v: nn.MaxPool2d(2, return_indices=v),
    "AvgPool2d count_include_pad": lambda v: nn.AvgPool2d(2, count_include_pad=v),
    "BatchNorm2d affine": lambda v: nn.BatchNorm2d(1, affine=v),
    "BatchNorm2d track_running_stats": lambda v: nn.BatchNorm2d(1, track_running_stats=v),
    "Linear bias": lambda v: nn.Linear(2, 2, bias=v),
    "SGD nesterov": lambda v: nn.SGD([nn.Parameter(np.zeros(1))], lr=0.1, momentum=0.9, nesterov=v),
    "Module.train mode": lambda v: nn.ReLU().train(v),
    "Module.load_state_dict strict": lambda v: nn.ReLU().load_state_dict({}, strict=v),
}


@pytest.mark.parametrize("case", sorted(FLAG_CALLS))
@pytest.mark.parametrize("bad", ["False", 0, 1, None, 1.0, np.int64(1)], ids=repr)
def test_boolean_flags_take_bools_only(case, bad):
    name = case.split()[1]
    with pytest.raises(TypeError,
                       match=rf"{re.escape(name)} must be a bool \(True or False\), got {re.escape(repr(bad))}"):
        FLAG_CALLS[case](bad)


@pytest.mark.parametrize("case", sorted(FLAG_CALLS))
def test_boolean_flags_accept_python_and_numpy_bools(case):
    for good in (False, np.False_, True, np.True_):
        FLAG_CALLS[case](good)


def test_flip_string_false_is_refused_not_taken_as_true():
    x, w = np.arange(16.).reshape(1, 1, 4, 4), np.arange(4.).reshape(1, 1, 2, 2)
    with pytest.raises(TypeError, match=named("conv2d", "flip")):
        cl.conv2d(x, w, flip="False")
    np.testing.assert_array_equal(cl.conv2d(x, w, flip=np.False_), cl.conv2d(x, w))


def test_check_flag_is_the_one_flag_check():
    assert check_flag(np.True_, "flip", "conv2d") is True
    with pytest.raises(TypeError, match=named("op", "name")):
        check_flag("yes", "name", "op")


# -- conv_transpose output_size: ints only, the valid range in the message -----------------------------------------

def _transpose_case():
    rng = np.random.default_rng(0)
    return rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 1, 3, 3))


@pytest.mark.parametrize("bad", ["78", (7.9, 7.9), (7.0, 8), [7, 8.0], (True, 8), 7, {7, 8}], ids=repr)
def test_conv_transpose_output_size_takes_ints_only(bad):
    x, w = _transpose_case()
    with pytest.raises(TypeError, match=named("conv_transpose2d", "output_size", "must be a tuple of ints", repr(bad))):
        cl.conv_transpose2d(x, w, stride=2, output_size=bad)


@pytest.mark.parametrize("size", [(7, 7), (7, 8), (8, 7), (8, 8), [8, 8], (1, 1, 8, 7), (np.int64(8), np.int32(7)),
                                  np.array([7, 8])], ids=repr)
def test_conv_transpose_output_size_in_range_matches_torch(size):
    x, w = _transpose_case()
    out = cl.conv_transpose2d(x, w, stride=2, output_size=size)
    layer = torch.nn.ConvTranspose2d(2, 1, 3, stride=2, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        expected = layer(torch.from_numpy(x), output_size=[int(n) for n in size]).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [(6, 7), (9, 8), (7, 9), (0, 7), (-7, 8)], ids=repr)
def test_conv_transpose_output_size_out_of_range_says_the_valid_range(size):
    x, w = _transpose_case()
    layer = torch.nn.ConvTranspose2d(2, 1, 3, stride=2).double()
    with pytest.raises(ValueError, match="valid sizes range from"):
        layer(torch.from_numpy(x), output_size=list(size))
    with pytest.raises(ValueError, match=named("conv_transpose2d", "output_size", "must lie between (7, 7) and (8, 8)",
                                               repr(size))):
        cl.conv_transpose2d(x, w, stride=2, output_size=size)


def test_conv_transpose_output_size_range_per_dimension_and_rank():
    x = np.ones((1, 1, 4, 5, 2))
    w = np.ones((1, 1, 2, 3, 3))
    # smallest (4-1)*3 + 2 = 11, (5-1)*2 + 3 = 11, (2-1)*1 + 3 = 4; largest adds stride - 1
    with pytest.raises(ValueError, match=re.escape("between (11, 11, 4) and (13, 12, 4)")):
        cl.conv_transpose3d(x, w, stride=(3, 2, 1), output_size=(11, 11, 5))
    assert cl.conv_transpose3d(x, w, stride=(3, 2, 1), output_size=(13, 12, 4)).shape == (1, 1, 13, 12, 4)


# -- byte order is storage, not a dtype -----------------------------------------------------------------------------

def swapped(a: np.ndarray) -> np.ndarray:
    """The same values stored in the other byte order (``>f8`` on a little-endian machine)."""
    return a.astype(a.dtype.newbyteorder("S"))


RNG = np.random.default_rng(13)
XB, WB, BB = RNG.standard_normal((2, 2, 5, 5)), RNG.standard_normal((3, 2, 3, 3)), RNG.standard_normal(3)

BYTE_ORDER_CASES = {
    "conv2d": lambda x, w, b: cl.conv2d(x, w, b, padding=1),
    "conv": lambda x, w, b: cl.conv(x, w, b, stride=2),
    "conv_transpose2d": lambda x, w, b: cl.conv_transpose2d(x, w[:2], b[:2], stride=2, output_size=(11, 12)),
    "conv2d_input": lambda x, w, b: cl.grad.conv2d_input((2, 2, 5, 5), w, x[:, :1].repeat(3, 1)[:, :, 1:4, 1:4]),
    "conv2d_weight": lambda x, w, b: cl.grad.conv2d_weight(x, (3, 2, 3, 3), x[:, :1].repeat(3, 1)[:, :, :3, :3]),
    "correlate": lambda x, w, b: cl.correlate(x[0, 0], w[0, 0]),
    "unfold": lambda x, w, b: cl.unfold(x, 2),
    "max_pool2d": lambda x, w, b: cl.max_pool2d(x, 2, return_indices=True)[0],
    "avg_pool2d": lambda x, w, b: cl.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    "adaptive_avg_pool2d": lambda x, w, b: cl.adaptive_avg_pool2d(x, 3),
    "linear": lambda x, w, b: nn.functional.linear(x.reshape(2, -1)[:, :18], w.reshape(3, 18), b),
    "batch_norm": lambda x, w, b: nn.functional.batch_norm(x[:, :2], b[:2], b[:2] ** 2, training=False),
    "mse_loss": lambda x, w, b: nn.functional.mse_loss(x, x[::-1]),
}


@pytest.mark.parametrize("op", sorted(BYTE_ORDER_CASES))
@pytest.mark.parametrize("which", ["input", "weight", "all"])
def test_byte_order_is_not_a_dtype_difference(op, which):
    call = BYTE_ORDER_CASES[op]
    expected = call(XB, WB, BB)
    x, w, b = (swapped(a) if which in (name, "all") else a for a, name in ((XB, "input"), (WB, "weight"),
                                                                              (BB, "weight")))
    got = call(x, w, b)
    assert got.dtype == expected.dtype and got.dtype.isnative, got.dtype
    np.testing.assert_array_equal(got, expected)


def test_big_endian_input_with_native_weight_is_convolved():
    x, w = np.arange(16.).reshape(1, 1, 4, 4), np.ones((1, 1, 2, 2))
    out = cl.conv2d(x.astype(">f8"), w)
    assert out.dtype == np.float64 and out.dtype.isnative
    np.testing.assert_array_equal(out, cl.conv2d(x, w))
    out, pullback = cl.vjp(cl.conv2d, x.astype(">f8"), w.astype(">f8"), np.zeros(1, ">f8"))
    grads = pullback(np.ones_like(out).astype(">f8"))
    assert all(g.dtype.isnative for g in grads)
    np.testing.assert_array_equal(grads[0], cl.vjp(cl.conv2d, x, w)[1](np.ones_like(out))[0])


def test_byte_order_in_vjp_of_conv_transpose_and_nn():
    x, w = swapped(XB[:, :, :3, :3]), swapped(RNG.standard_normal((2, 1, 2, 2)))
    out, pullback = cl.vjp(cl.conv_transpose2d, x, w, stride=2)
    native_out, native_pullback = cl.vjp(cl.conv_transpose2d, XB[:, :, :3, :3], w.astype("=f8"), stride=2)
    cotangent = RNG.standard_normal(out.shape)
    for got, expected in zip(pullback(swapped(cotangent)), native_pullback(cotangent)):
        assert got.dtype.isnative
        np.testing.assert_array_equal(got, expected)
    layer = nn.Linear(4, 2, dtype=np.float64, rng=0)
    y = layer(swapped(np.ones((3, 4))))
    assert y.dtype.isnative and layer.backward(np.ones_like(y)).dtype.isnative


# -- masked arrays are refused by name; other subclasses are read as their data -------------------------------------

MASKED_CASES = [
    ("conv2d", "input", lambda m: cl.conv2d(m, W2)),
    ("conv2d", "weight", lambda m: cl.conv2d(X2, np.ma.ones((1, 1, 2, 2)))),
    ("conv2d", "bias", lambda m: cl.conv2d(X2, W2, np.ma.ones(1))),
    ("conv_transpose2d", "input", lambda m: cl.conv_transpose2d(m, W2)),
    ("conv2d_input", "grad_output", lambda m: cl.grad.conv2d_input(X2.shape, W2, np.ma.ones((1, 1, 3, 3)))),
    ("conv2d_weight", "input", lambda m: cl.grad.conv2d_weight(m, W2.shape, np.ones((1, 1, 3, 3)))),
    ("max_pool2d", "input", lambda m: cl.max_pool2d(m, 2)),
    ("avg_pool2d", "input", lambda m: cl.avg_pool2d(m, 2)),
    ("adaptive_avg_pool2d", "input", lambda m: cl.adaptive_avg_pool2d(np.ma.ones((1, 2, 5, 5)), 2)),
    ("adaptive_max_pool2d", "input", lambda m: cl.adaptive_max_pool2d(m, 2)),
    ("max_unpool2d", "indices", lambda m: cl.max_unpool2d(np.ones((1, 1, 2, 2)), np.ma.zeros((1, 1, 2, 2), int), 2)),
    ("max_pool2d_input", "grad_output", lambda m: cl.grad.max_pool2d_input(np.ma.ones((1, 1, 2, 2)), X2, 2)),
    ("unfold", "input", lambda m: cl.unfold(m, 2)),
    ("fold", "input", lambda m: cl.fold(np.ma.ones((1, 4, 9)), (4, 4), 2)),
    ("correlate", "in1", lambda m: cl.correlate(np.ma.ones((4, 4)), np.ones((2, 2)))),
    ("convolve", "in2", lambda m: cl.convolve(np.ones(4), np.ma.ones(2))),
    ("relu", "input", lambda m: nn.functional.relu(m)),
    ("linear", "weight", lambda m: nn.functional.linear(np.ones((2, 3)), np.ma.ones((2, 3)))),
    ("cross_entropy", "target", lambda m: nn.functional.cross_entropy(np.ones((2, 3)), np.ma.zeros(2, int))),
    ("conv2d", "input", lambda m: nn.Conv2d(1, 1, 2, dtype=np.float64)(m)),  # the layer's op names it
    ("Flatten", "input", lambda m: nn.Flatten()(m)),
]


@pytest.mark.parametrize("op, name, call", MASKED_CASES, ids=[f"{op}-{name}" for op, name, _ in MASKED_CASES])
def test_masked_arrays_are_refused_by_name(op, name, call):
    masked = np.ma.masked_array(X2, mask=X2 > 0)
    with pytest.raises(TypeError, match=named(op, name, "must not be a numpy.ma.MaskedArray", "MaskedArray")):
        call(masked)


def test_adaptive_avg_pool_of_a_masked_array_names_it():
    with pytest.raises(TypeError, match=r"adaptive_avg_pool2d: input must not be a numpy.ma.MaskedArray"):
        cl.adaptive_avg_pool2d(np.ma.ones((1, 2, 5, 5)), 2)


class Tagged(np.ndarray):
    """An ndarray subclass that would misbehave if an op kept it: ``*`` is refused."""

    def __mul__(self, other):
        raise AssertionError("the op multiplied the subclass itself")


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_other_subclasses_are_read_as_plain_data(tmp_path):
    x = RNG.standard_normal((1, 2, 5, 5))
    w = RNG.standard_normal((2, 2, 3, 3))
    mapped = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="w+", shape=x.shape)
    mapped[...] = x
    for variant in (mapped, x.view(Tagged)):
        for call in (lambda a: cl.conv2d(a, w), lambda a: cl.max_pool2d(a, 2), lambda a: cl.avg_pool2d(a, 2),
                     lambda a: cl.unfold(a, 2), lambda a: nn.functional.relu(a),
                     lambda a: cl.conv_transpose2d(a, w)):
            got = call(variant)
            assert type(got) is np.ndarray
            np.testing.assert_array_equal(got, call(x))
    matrix = np.matrix(x[0, 0])
    got = cl.correlate(matrix, np.matrix(w[0, 0]))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, cl.correlate(x[0, 0], w[0, 0]))
    out, pullback = cl.vjp(nn.functional.relu, x.view(Tagged))
    assert type(pullback(np.ones_like(x))[0]) is np.ndarray


# -- ceil_mode and the other pooling geometry rules: PyTorch's, on a generated grid --------------------------------

def _pool_grid():
    """(kind, sizes, kernel, stride, padding, dilation, ceil_mode): every 1-d geometry of a small grid (empty
    inputs, windows larger than the input, padding above half the kernel), and random 2-d and 3-d ones."""
    cases = []
    for kind in ("max", "avg"):
        for i in range(0, 7):
            for k in range(1, 6):
                for s in range(1, 4):
                    for p in range(0, 4):
                        for d in ((1, 2, 3) if kind == "max" else (1,)):
                            for ceil_mode in (False, True):
                                cases.append((kind, (i,), (k,), (s,), (p,), (d,), ceil_mode))
    rng = np.random.default_rng(4)
    for kind in ("max", "avg"):
        for rank in (2, 3):
            for _ in range(300):
                dims = [(int(rng.integers(0 if rng.random() < 0.05 else 1, 6)), int(rng.integers(1, 6)),
                         int(rng.integers(1, 4)), int(rng.integers(0, 3)),
                         int(rng.integers(1, 4)) if kind == "max" else 1) for _ in range(rank)]
                cases.append((kind, *map(tuple, zip(*dims)), bool(rng.random() < 0.5)))
    return cases


def _torch_pool_output_size(i, k, s, p, d, ceil_mode):
    """ATen's pooling_output_shape, written out: div_rtn(i + 2p - d(k-1) - 1 + (s-1 if ceil), s) + 1, and with
    ceil_mode a last window starting at or past i + p is dropped."""
    out = (i + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= i + p:
        out -= 1
    return out


def _some_window_reads_only_padding(sizes, kernel, stride, padding, dilation, out):
    for i, k, s, p, d, o in zip(sizes, kernel, stride, padding, dilation, out):
        taps = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - p  # (out, k) input positions
        if not ((taps >= 0) & (taps < i)).any(axis=1).all():
            return True
    return False


@pytest.fixture
def torch_one_thread():
    """Thousands of tiny torch calls: a thread pool's wake-ups cost 100x the work (2.6 ms against 8 us each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pool_geometry_rules_match_torch_on_a_grid(torch_one_thread):
    """Where torch pools, we give its shape and numbers; where torch refuses, we refuse too.

    Two documented differences, each counted: a window that reads only padding
    (torch returns -inf and an index outside the input) is refused; and torch's
    avg_pool3d alone refuses an unpadded input smaller than the kernel, which
    avg_pool1d/2d and the N-d op accept, and so do we.
    """
    rng = np.random.default_rng(0)
    compared = refused_both = padding_only = avg3d_quirk = overhanging = 0
    for kind, sizes, kernel, stride, padding, dilation, ceil_mode in _pool_grid():
        rank = len(sizes)
        x = rng.standard_normal((1, 2, *sizes))
        if kind == "max":
            kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
            ours, theirs = getattr(cl, f"max_pool{rank}d"), getattr(F, f"max_pool{rank}d")
            kwargs["return_indices"] = True
        else:
            kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                          count_include_pad=bool(rng.random() < 0.5))
            ours, theirs = getattr(cl, f"avg_pool{rank}d"), getattr(F, f"avg_pool{rank}d")
        where = (kind, sizes, kwargs)
        try:
            expected = theirs(torch.from_numpy(x), **kwargs)
        except RuntimeError as error:
            if kind == "avg" and rank == 3 and "smaller than kernel size" in str(error) and all(
                    i > 0 and p <= k // 2 and _torch_pool_output_size(i, k, s, p, 1, ceil_mode) >= 1
                    for i, k, s, p in zip(sizes, kernel, stride, padding)):
                assert ours(x, **kwargs).shape[2:] == tuple(  # accepted, as avg_pool2d would
                    _torch_pool_output_size(i, k, s, p, 1, ceil_mode)
                    for i, k, s, p in zip(sizes, kernel, stride, padding))
                avg3d_quirk += 1
                continue
            with pytest.raises(ValueError, match=rf"^{kind}_pool{rank}d: (kernel_size|padding|input|dilation) "):
                ours(x, **kwargs)
            refused_both += 1
            continue
        expected = [t.numpy() for t in expected] if kind == "max" else [expected.numpy()]
        if _some_window_reads_only_padding(sizes, kernel, stride, padding, dilation, expected[0].shape[2:]):
            with pytest.raises(ValueError, match=rf"^max_pool{rank}d: dilation .*every window at least one input"):
                ours(x, **kwargs)
            padding_only += 1
            continue
        got = ours(x, **kwargs)
        got = list(got) if kind == "max" else [got]
        assert [g.shape for g in got] == [e.shape for e in expected], where
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=str(where))
        compared += 1
        overhanging += any(i + 2 * p < d * (k - 1) + 1 for i, k, p, d in zip(sizes, kernel, padding, dilation))
    # Each kind of case is there in numbers: the counts are (1149, 3344, 19, 48, 90) for this grid.
    assert compared > 1000 and refused_both > 3000 and padding_only > 15 and avg3d_quirk > 40 and overhanging > 80, (
        compared, refused_both, padding_only, avg3d_quirk, overhanging)


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(5, None, 0, 1), (5, 5, 0, 1), (4, 3, 2, 1),
                                                               (3, 4, 0, 3), (6, 4, 0, 1), (7, 4, 1, 1)])
def test_ceil_mode_window_larger_than_the_input(kernel, stride, padding, dilation):
    x = np.arange(1., 5.).reshape(1, 1, 4)
    got = cl.max_pool1d(x, kernel, stride, padding, dilation, ceil_mode=True)
    expected = F.max_pool1d(torch.from_numpy(x), kernel, stride, padding, dilation, ceil_mode=True).numpy()
    np.testing.assert_array_equal(got, expected)
    if dilation == 1:
        for include in (True, False):
            got = cl.avg_pool1d(x, kernel, stride, padding, ceil_mode=True, count_include_pad=include)
            expected = F.avg_pool1d(torch.from_numpy(x), kernel, stride, padding, ceil_mode=True,
                                    count_include_pad=include).numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_max_pool1d_kernel_5_over_4_samples_with_ceil_mode_is_their_maximum():
    np.testing.assert_array_equal(cl.max_pool1d(np.arange(1., 5.).reshape(1, 1, 4), 5, ceil_mode=True), [[[4.]]])
    with pytest.raises(ValueError, match=named("max_pool1d", "kernel_size", "must fit inside the padded input",
                                               "window extent 5")):
        cl.max_pool1d(np.arange(1., 5.).reshape(1, 1, 4), 5)


def test_ceil_mode_window_gradients_match_torch():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 3))
    for name, kwargs in (("max_pool2d", dict(dilation=(1, 2))), ("avg_pool2d", dict(count_include_pad=False))):
        tx = torch.from_numpy(x).requires_grad_()
        out = getattr(F, name)(tx, (5, 3), (5, 2), (2, 1), ceil_mode=True, **kwargs)
        cotangent = np.random.default_rng(2).standard_normal(tuple(out.shape))
        out.backward(torch.from_numpy(cotangent))
        got, pullback = cl.vjp(getattr(cl, name), x, kernel_size=(5, 3), stride=(5, 2), padding=(2, 1),
                               ceil_mode=True, **kwargs)
        np.testing.assert_allclose(got, out.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(pullback(cotangent)[0], tx.grad.numpy(), rtol=1e-12)


# -- the error-inputs table: every parameter of every public op -----------------------------------------------------
#
# For each op family: the ops, valid arguments for a rank (None: the N-d op, run in 2-d), and one bad value per
# parameter with the exception it raises. The message must start "{op}: {parameter} ". A test below checks the
# table names every parameter of every op, so a new parameter needs a row.

def _ones(*shape, dtype=np.float64):
    return np.ones(shape, dtype)


def _spatial(rank, size):
    return (size,) * (rank or 2)


def _size(rank, value):
    """An int for a fixed-rank op; a tuple for the N-d op, which reads its rank from it."""
    return value if rank else (value, value)


def _conv_base(rank):
    return dict(input=_ones(1, 2, *_spatial(rank, 5)), weight=_ones(2, 2, *_spatial(rank, 3)))


def _transpose_base(rank):
    return dict(input=_ones(1, 2, *_spatial(rank, 3)), weight=_ones(2, 1, *_spatial(rank, 3)), stride=2)


def _pool_base(rank):
    return dict(input=_ones(1, 2, *_spatial(rank, 4)), kernel_size=_size(rank, 2))


def _unpool_base(rank):
    return dict(input=_ones(1, 1, *_spatial(rank, 2)), indices=np.zeros((1, 1, *_spatial(rank, 2)), np.int64),
                kernel_size=_size(rank, 2))


def _adaptive_base(rank):
    return dict(input=_ones(1, 2, *_spatial(rank, 5)), output_size=_size(rank, 2))


def _pool_input_base(rank):
    return dict(grad_output=_ones(1, 2, *_spatial(rank, 2)), input=_ones(1, 2, *_spatial(rank, 4)),
                kernel_size=_size(rank, 2))


def _conv_input_base(rank):
    return dict(input_size=(1, 2, *_spatial(rank, 5)), weight=_ones(2, 2, *_spatial(rank, 3)),
                grad_output=_ones(1, 2, *_spatial(rank, 3)))


def _conv_weight_base(rank):
    return dict(input=_ones(1, 2, *_spatial(rank, 5)), weight_size=(2, 2, *_spatial(rank, 3)),
                grad_output=_ones(1, 2, *_spatial(rank, 3)))


class From:
    """A bad value made from the base arguments (so it fits each rank but the one thing wrong)."""

    def __init__(self, make):
        self.make = make


def _like(value, bad):
    """``bad`` spelled as ``value`` is: an int, or a tuple of its length."""
    return bad if isinstance(value, int) else (bad,) * len(value)


MASKED = np.ma.ones((1, 2, 4, 4))
CONV_GEOMETRY_ROWS = [
    ("stride", 0, ValueError), ("padding", -1, ValueError), ("dilation", 1.5, TypeError), ("groups", 0, ValueError),
    ("padding_mode", "mirror", ValueError), ("flip", "False", TypeError),
]
POOL_ROWS = [("kernel_size", From(lambda a: _like(a["kernel_size"], 0)), ValueError), ("stride", -1, ValueError),
             ("padding", 2, ValueError)]

ERROR_TABLE = [
    # (ops, rank of each op, base(rank), rows: (parameter, bad value, exception))
    ((cl.conv, cl.conv1d, cl.conv2d, cl.conv3d), (None, 1, 2, 3), _conv_base, [
        ("input", [[1.0]], TypeError), ("weight", From(lambda a: a["weight"].astype(np.float32)), TypeError),
        ("bias", _ones(5), ValueError), *CONV_GEOMETRY_ROWS, ("algorithm", "magic", ValueError)]),
    ((cl.conv_transpose, cl.conv_transpose1d, cl.conv_transpose2d, cl.conv_transpose3d), (None, 1, 2, 3),
     _transpose_base, [
        ("input", MASKED, TypeError), ("weight", "w", TypeError), ("bias", _ones(2, 1), ValueError),
        ("stride", (1, 2, 3, 4), ValueError), ("padding", "same", ValueError), ("output_padding", 2, ValueError),
        ("groups", 1.5, TypeError), ("dilation", 0, ValueError), ("output_size", "78", TypeError)]),
    ((cl.max_pool, cl.max_pool1d, cl.max_pool2d, cl.max_pool3d), (None, 1, 2, 3), _pool_base, [
        ("input", _ones(1, 2, 4, 4, dtype=complex), TypeError), *POOL_ROWS, ("dilation", 0, ValueError),
        ("ceil_mode", "yes", TypeError), ("return_indices", 1, TypeError)]),
    ((cl.avg_pool, cl.avg_pool1d, cl.avg_pool2d, cl.avg_pool3d), (None, 1, 2, 3), _pool_base, [
        ("input", MASKED, TypeError), *POOL_ROWS, ("ceil_mode", None, TypeError),
        ("count_include_pad", "no", TypeError), ("divisor_override", 0, ValueError)]),
    ((cl.adaptive_avg_pool, cl.adaptive_avg_pool1d, cl.adaptive_avg_pool2d, cl.adaptive_avg_pool3d), (None, 1, 2, 3),
     _adaptive_base, [("input", MASKED, TypeError), ("output_size", "2", TypeError)]),
    ((cl.adaptive_max_pool, cl.adaptive_max_pool1d, cl.adaptive_max_pool2d, cl.adaptive_max_pool3d), (None, 1, 2, 3),
     _adaptive_base, [("input", [1.0], TypeError),
                      ("output_size", From(lambda a: _like(a["output_size"], -1)), ValueError),
                      ("return_indices", "x", TypeError)]),
    ((cl.max_unpool, cl.max_unpool1d, cl.max_unpool2d, cl.max_unpool3d), (None, 1, 2, 3), _unpool_base, [
        ("input", MASKED, TypeError), ("indices", _ones(1, 1, 2, 2), TypeError),
        ("kernel_size", From(lambda a: _like(a["kernel_size"], 0)), ValueError),
        ("stride", 0, ValueError), ("padding", -1, ValueError), ("output_size", (100, 100, 100), ValueError)]),
    ((cl.unfold,), (2,), lambda rank: dict(input=_ones(1, 2, 4, 4), kernel_size=2), [
        ("input", MASKED, TypeError), ("kernel_size", 9, ValueError), ("dilation", 0, ValueError),
        ("padding", -1, ValueError), ("stride", 2.0, TypeError)]),
    ((cl.fold,), (2,), lambda rank: dict(input=_ones(1, 8, 9), output_size=(4, 4), kernel_size=2), [
        ("input", _ones(1, 8, 8), ValueError), ("output_size", 0, ValueError), ("kernel_size", "2", TypeError),
        ("dilation", 0, ValueError), ("padding", (1, 2, 3), ValueError), ("stride", None, TypeError)]),
    ((cl.correlate, cl.convolve), (1, 1), lambda rank: dict(in1=_ones(5), in2=_ones(2)), [
        ("in1", np.ones(3, dtype=object), TypeError), ("in2", _ones(2, 2), ValueError),
        ("mode", "sam", ValueError), ("method", "fast", ValueError)]),
    ((cl.output_shape,), (2,), lambda rank: dict(input_shape=(1, 2, 5, 5), weight_shape=(2, 2, 3, 3)), [
        ("input_shape", (1, 2, 5.0, 5), TypeError), ("weight_shape", (2, 2, -3, 3), ValueError),
        *[row for row in CONV_GEOMETRY_ROWS if row[0] not in ("padding_mode", "flip")]]),
    ((cl.conv_spec,), (2,), lambda rank: dict(input_shape=(1, 2, 5, 5), weight_shape=(2, 2, 3, 3), op="conv2d"), [
        ("input_shape", "15", TypeError), ("weight_shape", (2, 2, -3, 3), ValueError), *CONV_GEOMETRY_ROWS]),
    ((cl.plan,), (2,), lambda rank: dict(input_shape=(1, 2, 5, 5), weight_shape=(2, 2, 3, 3)), [
        ("input_shape", (1, 2, 5, -5), ValueError), ("weight_shape", None, TypeError),
        ("dtype", np.bool_, TypeError), *CONV_GEOMETRY_ROWS]),
    ((cl.grad.conv_input, cl.grad.conv1d_input, cl.grad.conv2d_input, cl.grad.conv3d_input), (None, 1, 2, 3),
     _conv_input_base, [
        ("input_size", "abc", TypeError), ("weight", MASKED, TypeError), ("grad_output", _ones(1, 2, 2), ValueError),
        *CONV_GEOMETRY_ROWS, ("algorithm", "im2col", ValueError)]),
    ((cl.grad.conv_weight, cl.grad.conv1d_weight, cl.grad.conv2d_weight, cl.grad.conv3d_weight), (None, 1, 2, 3),
     _conv_weight_base, [
        ("input", MASKED, TypeError), ("weight_size", (2, 2.0, 3, 3), TypeError),
        ("grad_output", _ones(1, 2, 3, 3, 3, 3, dtype=np.float32), ValueError),
        *CONV_GEOMETRY_ROWS, ("algorithm", "scatter", ValueError)]),
    ((cl.grad.max_pool_input, cl.grad.max_pool1d_input, cl.grad.max_pool2d_input, cl.grad.max_pool3d_input),
     (None, 1, 2, 3), _pool_input_base, [
        ("grad_output", np.ones((1, 2, 2, 2), np.int64), TypeError), ("input", MASKED, TypeError), *POOL_ROWS,
        ("dilation", -2, ValueError), ("ceil_mode", 1, TypeError)]),
    ((cl.grad.avg_pool_input, cl.grad.avg_pool1d_input, cl.grad.avg_pool2d_input, cl.grad.avg_pool3d_input),
     (None, 1, 2, 3), _pool_input_base, [
        ("grad_output", _ones(7), ValueError), ("input", "x", TypeError), *POOL_ROWS,
        ("ceil_mode", "True", TypeError), ("count_include_pad", 0, TypeError), ("divisor_override", 2.5, TypeError)]),
    ((nn.functional.linear,), (None,), lambda rank: dict(input=_ones(2, 3), weight=_ones(4, 3)), [
        ("input", _ones(2, 5), ValueError), ("weight", _ones(4, 3, dtype=np.float32), TypeError),
        ("bias", _ones(3), ValueError)]),
    ((nn.functional.relu, nn.functional.tanh, nn.functional.sigmoid), (None,) * 3, lambda rank: dict(input=_ones(2)),
     [("input", np.arange(3), TypeError)]),
    ((nn.functional.leaky_relu,), (None,), lambda rank: dict(input=_ones(2)), [
        ("input", MASKED, TypeError), ("negative_slope", "0.1", TypeError)]),
    ((nn.functional.dropout,), (None,), lambda rank: dict(input=_ones(4)), [
        ("input", [1.0], TypeError), ("p", 1.5, ValueError), ("training", 1, TypeError),
        ("rng", "seed", TypeError)]),
    ((nn.functional.batch_norm,), (None,), lambda rank: dict(input=_ones(2, 3), running_mean=None,
                                                               running_var=None, training=True), [
        ("input", _ones(3), ValueError), ("running_mean", _ones(2), ValueError),
        ("running_var", _ones(3, dtype=np.float32), TypeError), ("weight", _ones(4), ValueError),
        ("bias", [0.0, 0.0, 0.0], TypeError), ("training", "train", TypeError), ("eps", -1.0, ValueError)]),
    ((nn.functional.cross_entropy,), (None,), lambda rank: dict(input=_ones(2, 3), target=np.array([0, 2])), [
        ("input", np.ones((2, 3), int), TypeError), ("target", np.array([0, 3]), ValueError),
        ("reduction", "avg", ValueError), ("label_smoothing", 2.0, ValueError)]),
    ((nn.functional.mse_loss,), (None,), lambda rank: dict(input=_ones(3), target=_ones(3)), [
        ("input", MASKED, TypeError), ("target", _ones(4), ValueError), ("reduction", None, ValueError)]),
    ((nn.functional.log_softmax,), (None,), lambda rank: dict(input=_ones(2, 3)), [
        ("input", "x", TypeError), ("axis", 2, ValueError)]),
]

#: Parameters that are not arguments a caller checks: conv_spec's op names the caller in messages, rank is set by
#: the fixed-rank wrappers.
NOT_IN_TABLE = {("conv_spec", "op"), ("conv_spec", "rank")}


def _error_cases():
    for ops, ranks, base, rows in ERROR_TABLE:
        for op, rank in zip(ops, ranks):
            for name, bad, kind in rows:
                yield pytest.param(op, base(rank), name, bad, kind, id=f"{op.__name__}-{name}")


@pytest.mark.parametrize("op, arguments, name, bad, kind", list(_error_cases()))
def test_error_inputs_table(op, arguments, name, bad, kind):
    op(**arguments)  # the base arguments are valid
    if isinstance(bad, From):
        bad = bad.make(arguments)
    expected_op = arguments.get("op", op.__name__)
    with pytest.raises(kind, match=rf"^{re.escape(expected_op)}: {re.escape(name)} .*, got "):
        op(**{**arguments, name: bad})


def test_error_inputs_table_names_every_parameter_of_every_op():
    import inspect

    covered = {(op.__name__, name) for ops, _, _, rows in ERROR_TABLE for op in ops for name, _, _ in rows}
    every = {(op.__name__, name) for ops, _, _, _ in ERROR_TABLE for op in ops
             for name in inspect.signature(op).parameters} - NOT_IN_TABLE
    assert every - covered == set()
    public = {name for name in cl.__all__ if callable(getattr(cl, name)) and name[0].islower()}
    public |= {f"grad.{name}" for name in cl.grad.__all__} | {f"nn.functional.{n}" for n in nn.functional.__all__}
    tabled = {op.__name__ for ops, _, _, _ in ERROR_TABLE for op in ops}
    tabled |= {f"grad.{n}" for n in cl.grad.__all__ if n in tabled}
    tabled |= {f"nn.functional.{n}" for n in nn.functional.__all__ if n in tabled}
    # The identities, the tracer, shapes' integer helpers and the settings are checked in their own tests.
    elsewhere = {"trace", "im2col_matrices", "check_direct_equals_im2col", "check_flip", "check_input_gradient",
                 "conv_matrix", "workspace_limit", "thread_count", "conv_output_size", "same_padding", "gradcheck",
                 "vjp"}
    assert public - tabled - elsewhere == set()
