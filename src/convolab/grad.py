"""Gradients of the convolution, mirroring ``torch.nn.grad``.

``conv_input`` / ``conv_weight`` work in any rank; ``conv{1,2,3}d_input`` and
``conv{1,2,3}d_weight`` fix it. Every forward argument is accepted, including
"same" padding at any stride, ``(low, high)`` pairs and the non-zero padding
modes (whose gradient folds the border's share back onto the input). The
derivations sit beside the forward pass in :mod:`convolab._engine`.

The input gradient has three formulations, equal on every configuration:

- ``algorithm="scatter"``: for each output position, grad_output times the
  filter is added into the window that position read;
- ``algorithm="full"``: a full correlation of the stride-spread, padded
  grad_output with the filter rotated 180° (reversed on every spatial axis),
  input and output channels swapped;
- ``algorithm="phases"``: each stride phase of the input (the cells ``a + m*s``)
  a stride-1 correlation of grad_output with the filter taps that land on it,
  reversed (no spread zeros, nothing added back).

The weight gradient has two as well: ``"im2col"`` (the unrolled input times
grad_output; ``"gemm"`` is the same product in blocks of bounded memory, and
``"folded"`` the forward's fold in reverse: grad_output moved along by each
last-axis tap, one product for all of them; ``"row_shifts"`` one product per
tap of the other axes, over rows of the input unrolled along its last) and ``"conv"`` (a convolution of
the input with grad_output as the kernel, stride and dilation swapped).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._engine import conv_input_grad, conv_weight_grad, frozen_spec
from ._checks import check_array, check_grad_output
from ._fixed_rank import fixed_rank_ops
from .pooling import (  # pooling's gradients live beside its forward ops
    max_pool_input,
    max_pool1d_input,
    max_pool2d_input,
    max_pool3d_input,
    avg_pool_input,
    avg_pool1d_input,
    avg_pool2d_input,
    avg_pool3d_input,
)
from .spec import ConvSpec, PaddingArg, normalize_shape

__all__ = [
    "conv_input", "conv1d_input", "conv2d_input", "conv3d_input",
    "conv_weight", "conv1d_weight", "conv2d_weight", "conv3d_weight",
    "max_pool_input", "max_pool1d_input", "max_pool2d_input", "max_pool3d_input",
    "avg_pool_input", "avg_pool1d_input", "avg_pool2d_input", "avg_pool3d_input",
]


def _batched_grad_output(op: str, grad_output: Any, spec: ConvSpec, dtype: np.dtype) -> np.ndarray:
    """``grad_output`` checked against the forward output (shape, and ``dtype``), with a batch axis."""
    grad_output = check_grad_output(op, grad_output, spec.caller_output_shape, expected_dtype=dtype)
    return grad_output if spec.batched else grad_output[np.newaxis]


def _input_grad(op, rank, input_size, weight, grad_output, stride, padding, dilation, groups, padding_mode, flip,
                algorithm):
    weight = check_array(op, "weight", weight)
    spec = frozen_spec(normalize_shape(input_size, "input_size", op), weight.shape, stride=stride, padding=padding,
                       dilation=dilation, groups=groups, padding_mode=padding_mode, flip=flip, op=op, rank=rank)
    g = _batched_grad_output(op, grad_output, spec, weight.dtype)
    grad_input = conv_input_grad(g, weight, spec, algorithm)
    return grad_input if spec.batched else grad_input[0]


def _weight_grad(op, rank, input, weight_size, grad_output, stride, padding, dilation, groups, padding_mode, flip,
                 algorithm):
    input = check_array(op, "input", input)
    spec = frozen_spec(input.shape, normalize_shape(weight_size, "weight_size", op), stride=stride, padding=padding,
                       dilation=dilation, groups=groups, padding_mode=padding_mode, flip=flip, op=op, rank=rank)
    g = _batched_grad_output(op, grad_output, spec, input.dtype)
    return conv_weight_grad(input if spec.batched else input[np.newaxis], g, spec, algorithm)


def _input_grad_op(
    op: str,
    rank: int | None,
    input_size: Sequence[int],
    weight: np.ndarray,
    grad_output: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
    algorithm: str = "auto",
) -> np.ndarray:
    """The public ``conv*_input`` (:func:`convolab._fixed_rank.fixed_rank_ops` makes one per rank)."""
    return _input_grad(op, rank, input_size, weight, grad_output, stride, padding, dilation, groups, padding_mode,
                       flip, algorithm)


_INPUT_GRAD_DOC = """Gradient of ``conv{rank_name}`` with respect to its input.

    Parameters
    ----------
    input_size : tuple of int
        Shape of the forward input (batched, or unbatched ``(C_in, *spatial)``).
    weight : numpy.ndarray
        ``(C_out, C_in/groups, *kernel_size)``.
    grad_output : numpy.ndarray
        Gradient of the loss with respect to the forward output, of its shape and the weight's dtype.
    stride, padding, dilation, groups, padding_mode, flip
        The forward convolution's arguments.
    algorithm : {{"auto", "scatter", "full", "phases"}}
        The formulation (see :mod:`convolab.grad`); ``"auto"`` runs the plan's
        (``convolab.plan(...).input_grad``): depthwise's own where the forward
        runs depthwise, else ``"full"`` at stride 1 (through the forward
        planner) with a finite weight, unless the compiled ``"scatter"`` is
        estimated faster, and ``"scatter"`` otherwise, or at stride > 1 with a
        finite weight ``"phases"`` (each stride phase a stride-1 forward
        convolution) where that is estimated faster.

    Returns
    -------
    numpy.ndarray
        Of shape ``input_size``. Samples the forward pass never read (a stride
        that does not divide the input) get zero.

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> w = np.array([[[[1., 2.], [3., 4.]]]])
    >>> cl.grad.conv2d_input((1, 1, 3, 3), w, np.ones((1, 1, 2, 2)))[0, 0]
    array([[ 1.,  3.,  2.],
           [ 4., 10.,  6.],
           [ 3.,  7.,  4.]])
    """


def _weight_grad_op(
    op: str,
    rank: int | None,
    input: np.ndarray,
    weight_size: Sequence[int],
    grad_output: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
    algorithm: str = "auto",
) -> np.ndarray:
    """The public ``conv*_weight`` (:func:`convolab._fixed_rank.fixed_rank_ops` makes one per rank)."""
    return _weight_grad(op, rank, input, weight_size, grad_output, stride, padding, dilation, groups, padding_mode,
                        flip, algorithm)


_WEIGHT_GRAD_DOC = """Gradient of ``conv{rank_name}`` with respect to its weight.

    Parameters
    ----------
    input : numpy.ndarray
        The forward input.
    weight_size : tuple of int
        Shape of the weight ``(C_out, C_in/groups, *kernel_size)``.
    grad_output : numpy.ndarray
        Gradient of the loss with respect to the forward output, of its shape and the input's dtype.
    stride, padding, dilation, groups, padding_mode, flip
        The forward convolution's arguments.
    algorithm : {{"auto", "gemm", "folded", "row_shifts", "im2col", "conv"}}
        The formulation (see :mod:`convolab.grad`); ``"auto"`` runs the plan's
        (``convolab.plan(...).weight_grad``): ``"gemm"``, or the forward's own
        (depthwise's; ``"folded"``'s where folding halves the copies and the
        input is finite).

    Returns
    -------
    numpy.ndarray
        Of shape ``weight_size``.

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> x = np.arange(1., 10.).reshape(1, 1, 3, 3)
    >>> cl.grad.conv2d_weight(x, (1, 1, 2, 2), np.ones((1, 1, 2, 2)))[0, 0]
    array([[12., 16.],
           [24., 28.]])
    """


conv_input, conv1d_input, conv2d_input, conv3d_input = fixed_rank_ops(
    _input_grad_op, "conv", _INPUT_GRAD_DOC, suffix="_input")
conv_weight, conv1d_weight, conv2d_weight, conv3d_weight = fixed_rank_ops(
    _weight_grad_op, "conv", _WEIGHT_GRAD_DOC, suffix="_weight")
