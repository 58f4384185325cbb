"""Differential tests of the forward convolution against PyTorch.

Every generated case (see ``conv_cases.py``) is run through ``convolab.conv`` and
through ``torch.nn.functional.conv{1,2,3}d``. Padding PyTorch accepts natively
(an int, per-dimension ints, ``"valid"``, ``"same"`` at stride 1, with zeros) is
passed to it as is; everything else (asymmetric pairs, ``"same"`` at stride > 1,
``"full"``, a non-zero padding mode) is applied first with ``torch.nn.functional.pad``
(``numpy.pad`` for ``symmetric``, which PyTorch lacks) and PyTorch is run with
padding 0. Cases whose mode PyTorch's ``ConvNd`` modules support are also checked
against the module itself. Tolerances are ``torch.testing.assert_close``'s
defaults for the dtype.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

import convolab as cl
from conv_cases import PADDING_KINDS, PADDING_MODES, ConvCase, generate_cases

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

CASES = generate_cases(300, seed=0)
SUBSET = CASES[::5]  # 60 cases for the slower or narrower checks

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_MODULE = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def native_torch_padding(case: ConvCase):
    """``case.padding`` as PyTorch's conv accepts it, or None where it cannot."""
    if case.padding_kind in ("int", "valid", "same"):
        return case.padding
    if case.padding_kind == "per_dim":
        return tuple(case.padding)
    return None  # pairs, "same" at stride > 1, "full"


def torch_conv(case: ConvCase, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, flip: bool = False,
               force_explicit_pad: bool = False):
    """PyTorch's result for ``case`` (a tensor), with the kernel flipped on its spatial axes if ``flip``."""
    conv = TORCH_CONV[case.rank]
    wt = torch.from_numpy(w)
    if flip:
        wt = torch.flip(wt, dims=tuple(range(2, 2 + case.rank)))
    bt = None if b is None else torch.from_numpy(b)
    native = native_torch_padding(case)
    if native is not None and case.canonical_mode == "zeros" and not force_explicit_pad:
        return conv(torch.from_numpy(x), wt, bt, stride=case.strides, padding=native,
                    dilation=case.dilations, groups=case.groups)
    xb = x if case.batched else x[np.newaxis]
    pairs = case.padding_pairs
    if case.canonical_mode == "symmetric":
        xt = torch.from_numpy(np.pad(xb, [(0, 0), (0, 0), *pairs], mode="symmetric"))
    else:
        flat = [p for lo_hi in reversed(pairs) for p in lo_hi]  # last dimension first
        xt = F.pad(torch.from_numpy(xb), flat, mode=TORCH_PAD_MODE[case.canonical_mode])
    out = conv(xt, wt, bt, stride=case.strides, padding=0, dilation=case.dilations, groups=case.groups)
    return out if case.batched else out[0]


def check_close(actual: np.ndarray, expected) -> None:
    """assert_close with its per-dtype default tolerances; dtype and shape must match too."""
    assert isinstance(actual, np.ndarray)
    torch.testing.assert_close(torch.from_numpy(np.ascontiguousarray(actual)), expected)


# -- the generator covers what it promises -------------------------------------------------------


def test_generated_cases_cover_every_feature():
    kinds = collections.Counter(c.padding_kind for c in CASES)
    modes = collections.Counter(c.padding_mode for c in CASES)
    combos = {(c.rank, c.padding_kind, c.padding_mode) for c in CASES}
    assert set(kinds) == set(PADDING_KINDS)
    assert set(modes) == set(PADDING_MODES)
    assert len(combos) == 3 * len(PADDING_KINDS) * len(PADDING_MODES)
    assert any(not c.batched for c in CASES)
    assert any(c.batched and c.batch == 0 for c in CASES)
    assert any(c.is_depthwise for c in CASES)
    assert any(1 < c.groups < c.in_channels for c in CASES)
    assert any(max(c.dilations) > 1 for c in CASES)
    assert any(c.bias for c in CASES) and any(not c.bias for c in CASES)
    dividing = [(p - e) % s == 0 for c in CASES for p, e, s in zip(c.padded_size, c.dilated_kernel_size, c.strides)
                if s > 1]
    assert any(dividing) and not all(dividing)  # strides that do and do not divide the input
    assert any(c.padding_kind == "pairs" and any(isinstance(p, int) for p in c.padding) for c in CASES)
    assert any(isinstance(c.stride, int) for c in CASES) and any(isinstance(c.stride, tuple) for c in CASES)


@pytest.mark.parametrize("case", CASES[:40], ids=str)
def test_generated_cases_are_valid_and_sized_as_documented(case):
    assert max(case.input_size) <= {1: 12, 2: 9, 3: 6}[case.rank]
    assert max(case.in_channels, case.out_channels) <= 6
    assert all(i + lo + hi >= e for i, (lo, hi), e in zip(case.input_size, case.padding_pairs,
                                                           case.dilated_kernel_size))
    assert cl.output_shape(case.input_shape, case.weight_shape, case.stride, case.padding, case.dilation,
                           case.groups) == case.output_shape


# -- the main sweep ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_matches_torch(case, dtype):
    x, w, b = case.arrays(dtype)
    out = cl.conv(x, w, b, **case.kwargs())
    assert out.shape == case.output_shape
    check_close(out, torch_conv(case, x, w, b))


@pytest.mark.parametrize("case", SUBSET, ids=str)
def test_fixed_rank_ops_match_torch(case):
    """conv1d/conv2d/conv3d are ``conv`` with the rank fixed."""
    x, w, b = case.arrays(np.float64)
    op = {1: cl.conv1d, 2: cl.conv2d, 3: cl.conv3d}[case.rank]
    check_close(op(x, w, b, **case.kwargs()), torch_conv(case, x, w, b))


NATIVE_PADDING_CASES = [c for c in CASES if native_torch_padding(c) is not None and c.canonical_mode == "zeros"]


@pytest.mark.parametrize("case", NATIVE_PADDING_CASES[:40], ids=str)
def test_explicit_zero_padding_agrees_with_torch_native_padding(case):
    """The F.pad route used for the other cases gives torch's own answer where both exist."""
    x, w, b = case.arrays(np.float64)
    torch.testing.assert_close(torch_conv(case, x, w, b, force_explicit_pad=True), torch_conv(case, x, w, b))
    check_close(cl.conv(x, w, b, **case.kwargs()), torch_conv(case, x, w, b))


MODULE_CASES = [c for c in CASES if c.canonical_mode in TORCH_PAD_MODE and c.canonical_mode != "zeros"
                and c.padding_kind in ("int", "per_dim", "same")]


@pytest.mark.parametrize("case", MODULE_CASES, ids=str)
def test_padding_mode_matches_torch_conv_module(case):
    """PyTorch's ConvNd(padding_mode=...) pads on its own; convolab must agree with it."""
    x, w, b = case.arrays(np.float64)
    module = TORCH_MODULE[case.rank](
        case.in_channels, case.out_channels, case.kernel_size, stride=case.strides,
        padding=native_torch_padding(case), dilation=case.dilations, groups=case.groups, bias=case.bias,
        padding_mode=case.canonical_mode, dtype=torch.float64,
    )
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(w))
        if b is not None:
            module.bias.copy_(torch.from_numpy(b))
        expected = module(torch.from_numpy(x))
    check_close(cl.conv(x, w, b, **case.kwargs()), expected)


def test_module_cases_cover_every_torch_mode():
    assert {c.canonical_mode for c in MODULE_CASES} == {"reflect", "replicate", "circular"}
    assert {c.padding_kind for c in MODULE_CASES} == {"int", "per_dim", "same"}


# -- particular inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if not c.batched][:12], ids=str)
def test_unbatched_input_matches_torch_and_batched_call(case):
    x, w, b = case.arrays(np.float64)
    out = cl.conv(x, w, b, **case.kwargs())
    assert out.shape == case.output_shape and out.ndim == case.rank + 1
    check_close(out, torch_conv(case, x, w, b))
    np.testing.assert_array_equal(out, cl.conv(x[np.newaxis], w, b, **case.kwargs())[0])


@pytest.mark.parametrize("case", [c for c in CASES if c.batched and c.batch == 0][:12], ids=str)
def test_empty_batch_matches_torch(case):
    x, w, b = case.arrays(np.float32)
    out = cl.conv(x, w, b, **case.kwargs())
    assert out.shape == case.output_shape and out.shape[0] == 0 and out.dtype == np.float32
    check_close(out, torch_conv(case, x, w, b))


@pytest.mark.parametrize("case", [c for c in CASES if c.groups > 1][:30], ids=str)
def test_groups_match_torch_and_per_group_convolutions(case):
    """Grouped (and depthwise) convolution equals torch, and equals G separate convolutions stacked."""
    x, w, b = case.arrays(np.float64)
    out = cl.conv(x, w, b, **case.kwargs())
    check_close(out, torch_conv(case, x, w, b))
    g, cpg, opg = case.groups, case.in_channels // case.groups, case.out_channels // case.groups
    channel_axis = 1 if case.batched else 0
    pieces = []
    for group in range(g):
        xg = np.take(x, range(group * cpg, (group + 1) * cpg), axis=channel_axis)
        bg = None if b is None else b[group * opg:(group + 1) * opg]
        kwargs = dict(case.kwargs(), groups=1)
        pieces.append(cl.conv(xg, w[group * opg:(group + 1) * opg], bg, **kwargs))
    np.testing.assert_allclose(out, np.concatenate(pieces, axis=channel_axis), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", SUBSET, ids=str)
def test_flip_equals_torch_with_flipped_kernel(case):
    x, w, b = case.arrays(np.float64)
    out = cl.conv(x, w, b, **case.kwargs(), flip=True)
    check_close(out, torch_conv(case, x, w, b, flip=True))
    # and flip is the kernel reversed, nothing else
    flipped = np.ascontiguousarray(w[(Ellipsis, *([slice(None, None, -1)] * case.rank))])
    np.testing.assert_allclose(out, cl.conv(x, flipped, b, **case.kwargs()), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", SUBSET, ids=str)
def test_float16_matches_torch_float32_cast_to_float16(case):
    x, w, b = case.arrays(np.float16)
    out = cl.conv(x, w, b, **case.kwargs())
    assert out.dtype == np.float16
    up = lambda a: None if a is None else a.astype(np.float32)  # noqa: E731
    expected = torch_conv(case, up(x), up(w), up(b)).to(torch.float16)
    check_close(out, expected)  # float16 defaults: rtol 1e-3, atol 1e-5


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32]


@pytest.mark.parametrize("case", SUBSET, ids=str)
def test_integer_inputs_exact(case):
    dtype = INT_DTYPES[CASES.index(case) % len(INT_DTYPES)]
    x, w, b = case.arrays(dtype)
    out = cl.conv(x, w, b, **case.kwargs())
    assert out.dtype == np.int64
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    expected = torch_conv(case, f64(x), f64(w), f64(b)).numpy()
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.int64))


def test_integer_inputs_do_not_wrap_around():
    """int8 products and sums that overflow int8 come back exact in int64."""
    x = np.full((1, 2, 4, 4), 127, dtype=np.int8)
    w = np.full((1, 2, 3, 3), -128, dtype=np.int8)
    out = cl.conv2d(x, w, padding=1)
    expected = F.conv2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)), padding=1)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected.numpy().astype(np.int64))
    assert out[0, 0, 1, 1] == 127 * -128 * 18


# -- memory layout -------------------------------------------------------------------------------


def _strided(a: np.ndarray) -> np.ndarray:
    """The same values as a view that skips every other element of a bigger array, on every axis."""
    big = np.full(tuple(2 * n + 1 for n in a.shape), 99, dtype=a.dtype)
    view = big[tuple(slice(1, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _transposed(a: np.ndarray) -> np.ndarray:
    """The same values as a transposed view (spatial axes reversed in memory)."""
    axes = tuple(reversed(range(a.ndim)))
    return np.ascontiguousarray(a.transpose(axes)).transpose(axes)


def _reversed(a: np.ndarray) -> np.ndarray:
    """The same values as a view with negative strides on the last axis."""
    return np.ascontiguousarray(a[..., ::-1])[..., ::-1]


LAYOUTS = {"strided": _strided, "transposed": _transposed, "reversed": _reversed, "fortran": np.asfortranarray}


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("case", CASES[1:120:8], ids=str)
def test_non_contiguous_inputs_match_contiguous(case, layout, algorithm):
    x, w, b = case.arrays(np.float64)
    xv, wv = LAYOUTS[layout](x), LAYOUTS[layout](w)
    bv = None if b is None else _strided(b)
    if layout == "strided" and x.size > 1:
        assert not xv.flags.c_contiguous
    np.testing.assert_array_equal(xv, x)
    expected = cl.conv(x, w, b, **case.kwargs(), algorithm=algorithm)
    out = cl.conv(xv, wv, bv, **case.kwargs(), algorithm=algorithm)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(xv, x)  # inputs are never written to
    np.testing.assert_array_equal(wv, w)
