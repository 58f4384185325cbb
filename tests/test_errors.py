"""Every rejected argument: the exception type, and a message that names the parameter and the value.

convolab raises through ``_errors.fail``, whose messages read
``"{op}: {name} {rule}, got {got}"``. Each case below gives the op, the
parameter the message must name right after the op, and fragments that must
appear after ``got`` (the offending value). The ``match`` pattern checks all of
them at once.
"""

from __future__ import annotations

import ast
import pathlib
import re

import numpy as np
import pytest

import convolab as cl


def message_pattern(op: str, name: str, *got: str) -> str:
    """Regex: the message starts with ``op: name ``, has ``, got ``, and contains every fragment."""
    lookaheads = "".join(f"(?=.*{re.escape(fragment)})" for fragment in got)
    return rf"(?s)^(?=.*, got ){lookaheads}{re.escape(op)}: {re.escape(name)} "


def f64(*shape: int) -> np.ndarray:
    return np.ones(shape, dtype=np.float64)


X2 = f64(1, 1, 3, 3)  # a 3x3 single-channel image
W2 = f64(1, 1, 2, 2)  # a 2x2 single-filter kernel


def tensor(*shape: int):
    """A float64 PyTorch tensor of ones; the case using it skips where PyTorch is not installed."""
    torch = pytest.importorskip("torch")
    return torch.ones(shape, dtype=torch.float64)


class TensorLike:
    """Array-like but not an ndarray: convolab asks for numpy.asarray first."""

    def __array__(self, dtype=None, copy=None):
        return np.ones((1, 1, 3, 3))


# (id, call, exception type, op, parameter, got-fragments)
CASES = [
    # ---- wrong input rank
    ("input-rank-2d-too-few", lambda: cl.conv2d(f64(3, 3), W2), ValueError, "conv2d", "input", ["shape (3, 3)", "2 dimensions"]),
    ("input-rank-2d-too-many", lambda: cl.conv2d(f64(1, 1, 1, 3, 3), W2), ValueError, "conv2d", "input", ["shape (1, 1, 1, 3, 3)", "5 dimensions"]),
    ("input-rank-1d", lambda: cl.conv1d(f64(1, 1, 3, 3), f64(1, 1, 2)), ValueError, "conv1d", "input", ["shape (1, 1, 3, 3)"]),
    ("input-rank-1d-too-few", lambda: cl.conv1d(f64(5), f64(1, 1, 2)), ValueError, "conv1d", "input", ["shape (5,)"]),
    ("input-rank-3d", lambda: cl.conv3d(f64(1, 3, 3), f64(1, 1, 2, 2, 2)), ValueError, "conv3d", "input", ["shape (1, 3, 3)", "3 dimensions"]),
    ("input-rank-nd", lambda: cl.conv(f64(3, 3), W2), ValueError, "conv", "input", ["shape (3, 3)"]),
    # ---- weight rank wrong for the op
    ("weight-rank-conv1d", lambda: cl.conv1d(f64(1, 1, 5), f64(1, 1, 2, 2)), ValueError, "conv1d", "weight", ["shape (1, 1, 2, 2)", "4 dimensions"]),
    ("weight-rank-conv2d-3", lambda: cl.conv2d(X2, f64(1, 1, 2)), ValueError, "conv2d", "weight", ["shape (1, 1, 2)", "3 dimensions"]),
    ("weight-rank-conv2d-5", lambda: cl.conv2d(X2, f64(1, 1, 2, 2, 2)), ValueError, "conv2d", "weight", ["shape (1, 1, 2, 2, 2)", "5 dimensions"]),
    ("weight-rank-conv3d", lambda: cl.conv3d(f64(1, 1, 3, 3, 3), W2), ValueError, "conv3d", "weight", ["shape (1, 1, 2, 2)", "4 dimensions"]),
    ("weight-rank-conv-2", lambda: cl.conv(X2, f64(1, 1)), ValueError, "conv", "weight", ["shape (1, 1)", "2 dimensions"]),
    ("weight-zero-kernel", lambda: cl.conv2d(X2, f64(1, 1, 0, 2)), ValueError, "conv2d", "weight", ["shape (1, 1, 0, 2)"]),
    # ---- groups not dividing the channels
    ("groups-not-dividing-c-in", lambda: cl.conv2d(f64(1, 3, 4, 4), f64(4, 1, 2, 2), groups=2), ValueError, "conv2d", "input", ["groups=2", "got 3 channels", "must have 2 channels"]),
    ("groups-not-dividing-c-out", lambda: cl.conv2d(f64(1, 4, 4, 4), f64(3, 2, 2, 2), groups=2), ValueError, "conv2d", "groups", ["groups=2", "weight.shape[0]=3"]),
    ("groups-larger-than-channels", lambda: cl.conv1d(f64(1, 2, 5), f64(4, 1, 2), groups=4), ValueError, "conv1d", "input", ["groups=4", "got 2 channels", "must have 4 channels"]),
    # ---- groups 0, negative, or not an int
    ("groups-zero", lambda: cl.conv2d(X2, W2, groups=0), ValueError, "conv2d", "groups", ["0"]),
    ("groups-negative", lambda: cl.conv2d(X2, W2, groups=-1), ValueError, "conv2d", "groups", ["-1"]),
    ("groups-float", lambda: cl.conv2d(X2, W2, groups=1.0), TypeError, "conv2d", "groups", ["1.0"]),
    ("groups-bool", lambda: cl.conv2d(X2, W2, groups=True), TypeError, "conv2d", "groups", ["True"]),
    ("groups-str", lambda: cl.conv2d(X2, W2, groups="1"), TypeError, "conv2d", "groups", ["'1'"]),
    ("groups-none", lambda: cl.conv2d(X2, W2, groups=None), TypeError, "conv2d", "groups", ["None"]),
    # ---- stride
    ("stride-zero", lambda: cl.conv2d(X2, W2, stride=0), ValueError, "conv2d", "stride", ["0"]),
    ("stride-negative", lambda: cl.conv2d(X2, W2, stride=-2), ValueError, "conv2d", "stride", ["-2"]),
    ("stride-zero-in-tuple", lambda: cl.conv2d(X2, W2, stride=(1, 0)), ValueError, "conv2d", "stride", ["(1, 0)"]),
    ("stride-float", lambda: cl.conv2d(X2, W2, stride=1.5), TypeError, "conv2d", "stride", ["1.5"]),
    ("stride-integral-float", lambda: cl.conv2d(X2, W2, stride=2.0), TypeError, "conv2d", "stride", ["2.0"]),
    ("stride-bool", lambda: cl.conv2d(X2, W2, stride=True), TypeError, "conv2d", "stride", ["True"]),
    ("stride-str", lambda: cl.conv2d(X2, W2, stride="2"), TypeError, "conv2d", "stride", ["'2'"]),
    ("stride-none", lambda: cl.conv2d(X2, W2, stride=None), TypeError, "conv2d", "stride", ["None"]),
    ("stride-float-in-tuple", lambda: cl.conv2d(X2, W2, stride=(1, 2.0)), TypeError, "conv2d", "stride", ["(1, 2.0)"]),
    ("stride-bool-in-tuple", lambda: cl.conv2d(X2, W2, stride=(1, True)), TypeError, "conv2d", "stride", ["(1, True)"]),
    ("stride-too-many", lambda: cl.conv2d(X2, W2, stride=(1, 1, 1)), ValueError, "conv2d", "stride", ["(1, 1, 1)", "3 values"]),
    ("stride-too-few", lambda: cl.conv2d(X2, W2, stride=(1,)), ValueError, "conv2d", "stride", ["(1,)", "1 values"]),
    ("stride-too-few-3d", lambda: cl.conv3d(f64(1, 1, 3, 3, 3), f64(1, 1, 2, 2, 2), stride=[1, 2]), ValueError, "conv3d", "stride", ["(1, 2)", "2 values"]),
    ("stride-too-many-1d", lambda: cl.conv1d(f64(1, 1, 5), f64(1, 1, 2), stride=(1, 1)), ValueError, "conv1d", "stride", ["(1, 1)", "2 values"]),
    # ---- dilation
    ("dilation-zero", lambda: cl.conv2d(X2, W2, dilation=0), ValueError, "conv2d", "dilation", ["0"]),
    ("dilation-negative", lambda: cl.conv2d(X2, W2, dilation=-1), ValueError, "conv2d", "dilation", ["-1"]),
    ("dilation-zero-in-tuple", lambda: cl.conv2d(X2, W2, dilation=(0, 1)), ValueError, "conv2d", "dilation", ["(0, 1)"]),
    ("dilation-float", lambda: cl.conv2d(X2, W2, dilation=1.0), TypeError, "conv2d", "dilation", ["1.0"]),
    ("dilation-bool", lambda: cl.conv2d(X2, W2, dilation=False), TypeError, "conv2d", "dilation", ["False"]),
    ("dilation-str", lambda: cl.conv2d(X2, W2, dilation="1"), TypeError, "conv2d", "dilation", ["'1'"]),
    ("dilation-float-in-tuple", lambda: cl.conv2d(X2, W2, dilation=(1, 1.5)), TypeError, "conv2d", "dilation", ["(1, 1.5)"]),
    ("dilation-too-many", lambda: cl.conv2d(X2, W2, dilation=(1, 1, 1)), ValueError, "conv2d", "dilation", ["(1, 1, 1)", "3 values"]),
    ("dilation-too-few-3d", lambda: cl.conv3d(f64(1, 1, 3, 3, 3), f64(1, 1, 2, 2, 2), dilation=(1,)), ValueError, "conv3d", "dilation", ["(1,)", "1 values"]),
    # ---- padding: negative, wrong count, wrong type, unknown string
    ("padding-negative", lambda: cl.conv2d(X2, W2, padding=-1), ValueError, "conv2d", "padding", ["-1"]),
    ("padding-negative-in-tuple", lambda: cl.conv2d(X2, W2, padding=(1, -1)), ValueError, "conv2d", "padding", ["(1, -1)"]),
    ("padding-negative-in-pair", lambda: cl.conv2d(X2, W2, padding=((0, -2), 0)), ValueError, "conv2d", "padding", ["((0, -2), 0)"]),
    ("padding-too-many", lambda: cl.conv2d(X2, W2, padding=(1, 1, 1)), ValueError, "conv2d", "padding", ["(1, 1, 1)", "3 values"]),
    ("padding-too-few-3d", lambda: cl.conv3d(f64(1, 1, 3, 3, 3), f64(1, 1, 2, 2, 2), padding=(1, 1)), ValueError, "conv3d", "padding", ["(1, 1)", "2 values"]),
    ("padding-pair-not-nested-1d", lambda: cl.conv1d(f64(1, 1, 5), f64(1, 1, 2), padding=(1, 2)), ValueError, "conv1d", "padding", ["(1, 2)", "2 values"]),
    ("padding-triple-entry", lambda: cl.conv2d(X2, W2, padding=((1, 2, 3), 1)), TypeError, "conv2d", "padding", ["((1, 2, 3), 1)"]),
    ("padding-float", lambda: cl.conv2d(X2, W2, padding=1.0), TypeError, "conv2d", "padding", ["1.0"]),
    ("padding-bool", lambda: cl.conv2d(X2, W2, padding=True), TypeError, "conv2d", "padding", ["True"]),
    ("padding-none", lambda: cl.conv2d(X2, W2, padding=None), TypeError, "conv2d", "padding", ["None"]),
    ("padding-unknown-string", lambda: cl.conv2d(X2, W2, padding="SAME"), ValueError, "conv2d", "padding", ["'SAME'"]),
    ("padding-mode-as-padding", lambda: cl.conv2d(X2, W2, padding="circular"), ValueError, "conv2d", "padding", ["'circular'"]),
    ("padding-empty-string", lambda: cl.conv2d(X2, W2, padding=""), ValueError, "conv2d", "padding", ["''"]),
    # ---- padding_mode
    ("padding-mode-unknown", lambda: cl.conv2d(X2, W2, padding=1, padding_mode="mirror"), ValueError, "conv2d", "padding_mode", ["'mirror'"]),
    ("padding-mode-case", lambda: cl.conv2d(X2, W2, padding=1, padding_mode="Reflect"), ValueError, "conv2d", "padding_mode", ["'Reflect'"]),
    ("padding-mode-none", lambda: cl.conv2d(X2, W2, padding_mode=None), ValueError, "conv2d", "padding_mode", ["None"]),
    # ---- padding too large for the mode
    ("reflect-pad-equal-size", lambda: cl.conv2d(X2, W2, padding=3, padding_mode="reflect"), ValueError, "conv2d", "padding", ["(3, 3)", "size 3", "reflect"]),
    ("reflect-pad-larger", lambda: cl.conv1d(f64(1, 1, 2), f64(1, 1, 2), padding=((0, 5),), padding_mode="reflect"), ValueError, "conv1d", "padding", ["(0, 5)", "size 2"]),
    ("circular-pad-larger", lambda: cl.conv2d(X2, W2, padding=4, padding_mode="circular"), ValueError, "conv2d", "padding", ["(4, 4)", "size 3", "circular"]),
    ("wrap-pad-larger", lambda: cl.conv2d(X2, W2, padding=(0, 4), padding_mode="wrap"), ValueError, "conv2d", "padding", ["(4, 4)", "size 3"]),
    ("symmetric-pad-larger", lambda: cl.conv2d(X2, W2, padding=4, padding_mode="symmetric"), ValueError, "conv2d", "padding", ["(4, 4)", "size 3"]),
    # ---- the dilated kernel does not fit the padded input
    ("kernel-larger-than-input", lambda: cl.conv2d(X2, f64(1, 1, 4, 4)), ValueError, "conv2d", "weight", ["extent 4", "padded input is 3"]),
    ("dilated-kernel-larger", lambda: cl.conv2d(X2, W2, dilation=3), ValueError, "conv2d", "weight", ["extent 4", "dilation 3", "padded input is 3"]),
    ("dilated-kernel-larger-padded", lambda: cl.conv1d(f64(1, 1, 3), f64(1, 1, 3), dilation=3, padding=1), ValueError, "conv1d", "weight", ["extent 7", "padded input is 5"]),
    # ---- bias
    ("bias-2d", lambda: cl.conv2d(X2, W2, bias=f64(1, 1)), ValueError, "conv2d", "bias", ["shape (1, 1)"]),
    ("bias-0d", lambda: cl.conv2d(X2, W2, bias=np.array(1.0)), ValueError, "conv2d", "bias", ["shape ()"]),
    ("bias-wrong-length", lambda: cl.conv2d(X2, f64(3, 1, 2, 2), bias=f64(2)), ValueError, "conv2d", "bias", ["shape (2,)", "C_out=3"]),
    ("bias-other-dtype", lambda: cl.conv2d(X2, W2, bias=np.ones(1, np.float32)), TypeError, "conv2d", "bias", ["dtype float32", "float64"]),
    ("bias-int-with-float", lambda: cl.conv2d(X2, W2, bias=np.ones(1, np.int64)), TypeError, "conv2d", "bias", ["dtype int64"]),
    ("bias-list", lambda: cl.conv2d(X2, W2, bias=[1.0]), TypeError, "conv2d", "bias", ["list"]),
    ("bias-scalar", lambda: cl.conv2d(X2, W2, bias=1.0), TypeError, "conv2d", "bias", ["float"]),
    ("bias-bool-dtype", lambda: cl.conv2d(X2, W2, bias=np.ones(1, bool)), TypeError, "conv2d", "bias", ["dtype bool"]),
    # ---- dtypes
    ("mixed-float-dtypes", lambda: cl.conv2d(X2, W2.astype(np.float32)), TypeError, "conv2d", "weight", ["dtype float32", "input dtype float64"]),
    ("mixed-int-float", lambda: cl.conv2d(X2.astype(np.int64), W2), TypeError, "conv2d", "weight", ["dtype float64", "input dtype int64"]),
    ("mixed-int-widths", lambda: cl.conv2d(X2.astype(np.int8), W2.astype(np.int16)), TypeError, "conv2d", "weight", ["dtype int16", "input dtype int8"]),
    ("input-bool", lambda: cl.conv2d(X2.astype(bool), W2.astype(bool)), TypeError, "conv2d", "input", ["dtype bool"]),
    ("input-uint64", lambda: cl.conv2d(X2.astype(np.uint64), W2.astype(np.uint64)), TypeError, "conv2d", "input", ["dtype uint64"]),
    ("input-object", lambda: cl.conv2d(X2.astype(object), W2.astype(object)), TypeError, "conv2d", "input", ["dtype object"]),
    ("input-str", lambda: cl.conv2d(np.full((1, 1, 3, 3), "a"), np.full((1, 1, 2, 2), "a")), TypeError, "conv2d", "input", ["dtype <U1"]),
    ("input-datetime", lambda: cl.conv2d(np.zeros((1, 1, 3, 3), "datetime64[s]"), W2), TypeError, "conv2d", "input", ["dtype datetime64[s]"]),
    ("weight-bool", lambda: cl.conv2d(X2, W2.astype(bool)), TypeError, "conv2d", "weight", ["dtype bool"]),
    ("weight-uint64", lambda: cl.conv1d(f64(1, 1, 4).astype(np.uint32), f64(1, 1, 2).astype(np.uint64)), TypeError, "conv1d", "weight", ["dtype uint64"]),
    # ---- not an ndarray
    ("input-list", lambda: cl.conv2d(X2.tolist(), W2), TypeError, "conv2d", "input", ["list"]),
    ("input-none", lambda: cl.conv2d(None, W2), TypeError, "conv2d", "input", ["NoneType"]),
    ("input-tensor", lambda: cl.conv2d(tensor(1, 1, 3, 3), W2), TypeError, "conv2d", "input", ["Tensor"]),
    ("input-array-like", lambda: cl.conv2d(TensorLike(), W2), TypeError, "conv2d", "input", ["TensorLike"]),
    ("input-scalar", lambda: cl.conv1d(3.0, f64(1, 1, 1)), TypeError, "conv1d", "input", ["float"]),
    ("weight-list", lambda: cl.conv2d(X2, W2.tolist()), TypeError, "conv2d", "weight", ["list"]),
    ("weight-tensor", lambda: cl.conv2d(X2, tensor(1, 1, 2, 2)), TypeError, "conv2d", "weight", ["Tensor"]),
    # ---- algorithm
    ("algorithm-unknown", lambda: cl.conv2d(X2, W2, algorithm="winograd"), ValueError, "conv2d", "algorithm", ["'winograd'"]),
    ("algorithm-case", lambda: cl.conv2d(X2, W2, algorithm="FFT"), ValueError, "conv2d", "algorithm", ["'FFT'"]),
    ("algorithm-none", lambda: cl.conv2d(X2, W2, algorithm=None), ValueError, "conv2d", "algorithm", ["None"]),
    ("algorithm-unknown-empty-batch", lambda: cl.conv2d(f64(0, 1, 3, 3), W2, algorithm="bogus"), ValueError, "conv2d", "algorithm", ["'bogus'"]),
    ("fft-on-int64", lambda: cl.conv2d(X2.astype(np.int64), W2.astype(np.int64), algorithm="fft"), ValueError, "conv2d", "algorithm", ["'fft'", "integer"]),
    ("fft-on-int8", lambda: cl.conv1d(f64(1, 1, 4).astype(np.int8), f64(1, 1, 2).astype(np.int8), algorithm="fft"), ValueError, "conv1d", "algorithm", ["'fft'", "integer"]),
    ("fft-on-uint8-nd", lambda: cl.conv(f64(1, 1, 4).astype(np.uint8), f64(1, 1, 2).astype(np.uint8), algorithm="fft"), ValueError, "conv", "algorithm", ["'fft'", "integer"]),
    # ---- correlate / convolve
    ("correlate-mode", lambda: cl.correlate([1.0, 2.0, 3.0], [1.0, 2.0], mode="bogus"), ValueError, "correlate", "mode", ["'bogus'"]),
    ("convolve-mode", lambda: cl.convolve([1.0, 2.0, 3.0], [1.0, 2.0], mode="Full"), ValueError, "convolve", "mode", ["'Full'"]),
    ("correlate-mode-none", lambda: cl.correlate([1.0, 2.0, 3.0], [1.0, 2.0], mode=None), ValueError, "correlate", "mode", ["None"]),
    ("correlate-method", lambda: cl.correlate([1.0, 2.0, 3.0], [1.0, 2.0], method="im2col"), ValueError, "correlate", "method", ["'im2col'"]),
    ("convolve-method", lambda: cl.convolve([1.0, 2.0, 3.0], [1.0, 2.0], method="bogus"), ValueError, "convolve", "method", ["'bogus'"]),
    ("convolve-method-list", lambda: cl.convolve([1.0, 2.0, 3.0], [1.0, 2.0], method=["fft"]), ValueError, "convolve", "method", ["['fft']"]),
    ("correlate-ndim", lambda: cl.correlate(np.ones((3, 5)), np.ones(2)), ValueError, "correlate", "in2", ["1 dimensions", "in1 of 2"]),
    ("convolve-ndim", lambda: cl.convolve(np.ones(5), np.ones((2, 2))), ValueError, "convolve", "in2", ["2 dimensions", "in1 of 1"]),
    ("correlate-valid-neither-fits", lambda: cl.correlate(np.ones((3, 5)), np.ones((5, 3)), mode="valid"), ValueError, "correlate", "in2", ["shape (5, 3)", "in1 of shape (3, 5)"]),
    ("convolve-valid-neither-fits", lambda: cl.convolve(np.ones((2, 6, 4)), np.ones((3, 3, 3)), mode="valid"), ValueError, "convolve", "in2", ["shape (3, 3, 3)", "in1 of shape (2, 6, 4)"]),
    ("correlate-fft-on-integers", lambda: cl.correlate(np.arange(5), np.arange(2), method="fft"), ValueError, "correlate", "method", ["'fft'", "integer"]),
    ("correlate-uint64", lambda: cl.correlate(np.ones(4, np.uint64), np.ones(2)), TypeError, "correlate", "in1", ["dtype uint64"]),
    ("convolve-object", lambda: cl.convolve(np.ones(4), np.array([1, "a"], dtype=object)), TypeError, "convolve", "in2", ["dtype object"]),
    ("convolve-str", lambda: cl.convolve(["a", "b"], [1.0]), TypeError, "convolve", "in1", ["dtype <U1"]),
    # ---- output_shape
    ("output-shape-stride", lambda: cl.output_shape((1, 1, 5, 5), (1, 1, 3, 3), stride=0), ValueError, "output_shape", "stride", ["0"]),
    ("output-shape-stride-float", lambda: cl.output_shape((1, 1, 5, 5), (1, 1, 3, 3), stride=1.5), TypeError, "output_shape", "stride", ["1.5"]),
    ("output-shape-dilation-count", lambda: cl.output_shape((1, 1, 5, 5), (1, 1, 3, 3), dilation=(1, 1, 1)), ValueError, "output_shape", "dilation", ["(1, 1, 1)"]),
    ("output-shape-padding", lambda: cl.output_shape((1, 1, 5, 5), (1, 1, 3, 3), padding=-1), ValueError, "output_shape", "padding", ["-1"]),
    ("output-shape-padding-string", lambda: cl.output_shape((1, 1, 5, 5), (1, 1, 3, 3), padding="half"), ValueError, "output_shape", "padding", ["'half'"]),
    ("output-shape-groups", lambda: cl.output_shape((1, 1, 5, 5), (1, 1, 3, 3), groups=0), ValueError, "output_shape", "groups", ["0"]),
    ("output-shape-groups-divide", lambda: cl.output_shape((1, 4, 5, 5), (3, 2, 3, 3), groups=2), ValueError, "output_shape", "groups", ["groups=2"]),
    ("output-shape-channels", lambda: cl.output_shape((1, 3, 5, 5), (1, 2, 3, 3)), ValueError, "output_shape", "input", ["3 channels", "must have 2 channels"]),
    ("output-shape-input-rank", lambda: cl.output_shape((5, 5), (1, 1, 3, 3)), ValueError, "output_shape", "input", ["shape (5, 5)"]),
    ("output-shape-weight-rank", lambda: cl.output_shape((1, 1, 5, 5), (3, 3)), ValueError, "output_shape", "weight", ["shape (3, 3)"]),
    ("output-shape-kernel-too-big", lambda: cl.output_shape((1, 1, 5, 5), (1, 1, 3, 3), dilation=3), ValueError, "output_shape", "weight", ["extent 7", "padded input is 5"]),
]


@pytest.mark.parametrize(
    ("call", "kind", "op", "name", "got"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_rejected_argument(call, kind, op, name, got):
    with pytest.raises(kind, match=message_pattern(op, name, *got)) as caught:
        call()
    assert type(caught.value) is kind  # not merely a subclass


def test_message_pattern_really_checks_name_and_value():
    """The helper pattern is strict: wrong name or a value absent from the message does not match."""
    message = "conv2d: stride must be >= 1 in every dimension, got (1, 0)"
    assert re.search(message_pattern("conv2d", "stride", "(1, 0)"), message)
    assert not re.search(message_pattern("conv2d", "dilation", "(1, 0)"), message)
    assert not re.search(message_pattern("conv2d", "stride", "(0, 1)"), message)
    assert not re.search(message_pattern("conv1d", "stride", "(1, 0)"), message)
    assert not re.search(message_pattern("conv2d", "stride", "(1, 0)"), "conv2d: stride must be >= 1 in every dimension (1, 0)")


@pytest.mark.parametrize(
    ("groups", "in_channels", "weight_shape"),
    [(1, 3, (4, 2, 3, 3)), (1, 1, (2, 3, 3, 3)), (2, 6, (4, 2, 3, 3)), (3, 9, (6, 2, 3, 3)), (2, 2, (4, 2, 3, 3))],
)
def test_channel_mismatch_states_expected_and_actual(groups, in_channels, weight_shape):
    """The message gives the expected count, weight.shape[1] x groups, and the actual one."""
    expected = weight_shape[1] * groups
    assert expected != in_channels
    pattern = (
        rf"^conv2d: input must have {expected} channels "
        rf"\(weight\.shape\[1\]={weight_shape[1]} × groups={groups}\), got {in_channels} channels"
    )
    with pytest.raises(ValueError, match=pattern):
        cl.conv2d(f64(2, in_channels, 5, 5), f64(*weight_shape), groups=groups)


@pytest.mark.parametrize("op, rank", [(cl.conv1d, 1), (cl.conv2d, 2), (cl.conv3d, 3), (cl.conv, 2)])
def test_channel_mismatch_unbatched(op, rank):
    x = f64(3, *(4,) * rank)  # (C_in=3, *spatial), no batch axis
    w = f64(1, 2, *(2,) * rank)
    name = op.__name__
    with pytest.raises(ValueError, match=rf"^{name}: input must have 2 channels .*, got 3 channels"):
        op(x, w)


def test_padding_equal_to_size_is_allowed_where_the_mode_allows_it():
    """The boundary of the mode rule: circular/symmetric accept pad == size, reflect pad == size - 1."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    assert cl.conv2d(x, W2, padding=3, padding_mode="circular").shape == (1, 1, 8, 8)
    assert cl.conv2d(x, W2, padding=3, padding_mode="symmetric").shape == (1, 1, 8, 8)
    assert cl.conv2d(x, W2, padding=2, padding_mode="reflect").shape == (1, 1, 6, 6)
    assert cl.conv2d(x, W2, padding=9, padding_mode="replicate").shape == (1, 1, 20, 20)


def test_reflect_padding_checked_per_dimension():
    """Only the too-small dimension fails, and the message names it."""
    x = f64(1, 1, 2, 6)
    assert cl.conv2d(x, W2, padding=(1, 4), padding_mode="reflect").shape == (1, 1, 3, 13)
    with pytest.raises(ValueError, match=message_pattern("conv2d", "padding", "(2, 2)", "spatial dimension 0", "size 2")):
        cl.conv2d(x, W2, padding=(2, 4), padding_mode="reflect")


@pytest.mark.parametrize(
    ("input_shape", "got"),
    [
        ((1, 1, 3.5, 3), "3.5"),  # a non-integer size must not be truncated to 3
        ((-1, 1, 3, 3), "-1"),  # a negative batch must not give a negative output shape
        ((1, 1, -3, 3), "-3"),  # a negative size is the input's fault, not the weight's
    ],
    ids=["float-size", "negative-batch", "negative-spatial"],
)
def test_output_shape_rejects_bad_input_shape(input_shape, got):
    with pytest.raises((ValueError, TypeError), match=rf"^output_shape: input(_shape)? .*, got .*{re.escape(got)}"):
        cl.output_shape(input_shape, (1, 1, 2, 2))


def test_output_shape_rejects_non_sequence_input_shape():
    with pytest.raises(TypeError, match=r"^output_shape: input(_shape)? .*, got .*None"):
        cl.output_shape(None, (1, 1, 2, 2))


def test_no_assert_statements_validate_in_the_package():
    """Validation must survive ``python -O``: no ``assert`` statement anywhere under src/convolab."""
    package = pathlib.Path(cl.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert len(sources) >= 10
    offenders = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{path.name}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert offenders == []


def test_fft_refusal_names_the_callers_dtype():
    """The reason names the dtype the caller passed (int8), not the int64 it would be accumulated in."""
    x, w = np.ones((1, 1, 4), np.int8), np.ones((1, 1, 2), np.int8)
    with pytest.raises(ValueError, match=message_pattern("conv1d", "algorithm", "'fft'", "int8")):
        cl.conv1d(x, w, algorithm="fft")
