"""The convolution ops on NumPy arrays, mirroring ``torch.nn.functional``.

``conv`` works in any number of spatial dimensions (read from ``weight.ndim - 2``);
``conv1d``, ``conv2d`` and ``conv3d`` are the same op with the rank fixed, so a
weight of the wrong rank is caught with a message naming the expected axes.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

# as_array and check_array live in _checks; the ops and nn import them from here too
from ._checks import as_array, check_array, check_bias, check_grad_output
from ._dtypes import same_dtype
from ._errors import fail
from ._engine import conv_forward, conv_grads, conv_weight_grad, frozen_spec
from ._fixed_rank import fixed_rank_ops
from .spec import ConvSpec, PaddingArg

__all__ = ["conv", "conv1d", "conv2d", "conv3d", "as_array", "check_array", "check_conv_arrays", "channel_sums"]


def check_conv_arrays(op: str, input: Any, weight: Any, bias: Any, spec: ConvSpec) -> np.ndarray | None:
    """Dtypes must agree (no silent promotion, as in PyTorch); bias must be ``(C_out,)``.

    Returns the bias as :func:`check_array` gives it (or None).
    """
    if not same_dtype(input.dtype, weight.dtype):
        fail(TypeError, op, "weight", f"dtype {weight.dtype} with input dtype {input.dtype}",
             "must have the same dtype as input (cast one with .astype)")
    return check_bias(op, bias, spec.out_channels, input.dtype)


def channel_sums(values: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Sums of ``values`` (times ``other``, elementwise) ``(N, C, *spatial)`` over every axis but 1: ``(C,)``.

    A bias's gradient, and batch normalization's statistics. For float32 and
    float64, one ``einsum`` over the ``(N, C, S)`` view: no product array, and
    several times faster than NumPy's strided reduction over ``(0, 2, ...)`` at
    a small layer's sizes, as accurate. Other dtypes keep that reduction (float16's
    sums round at every step, so their order is kept as it was).

    >>> channel_sums(np.arange(12.).reshape(2, 3, 2))
    array([14., 22., 30.])
    """
    if values.dtype not in (np.float32, np.float64):
        return (values if other is None else values * other).sum(axis=(0, *range(2, values.ndim)))
    rows = values.reshape(*values.shape[:2], prod(values.shape[2:]))  # (N, C, S); N may be 0
    if other is None:
        return np.einsum("ncs->c", rows)
    return np.einsum("ncs,ncs->c", rows, other.reshape(rows.shape))


def _conv(
    op: str,
    rank: int | None,
    input: Any,
    weight: Any,
    bias: Any,
    stride: Any,
    padding: PaddingArg,
    dilation: Any,
    groups: Any,
    padding_mode: str,
    flip: bool,
    algorithm: str,
) -> tuple[np.ndarray, ConvSpec, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """The output, the spec, and the arrays as computed with (for the pullback)."""
    input = check_array(op, "input", input)
    weight = check_array(op, "weight", weight)
    spec = frozen_spec(input.shape, weight.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups, padding_mode=padding_mode, flip=flip, op=op, rank=rank)
    bias = check_conv_arrays(op, input, weight, bias, spec)
    batched_input = input if spec.batched else input[np.newaxis]
    out = conv_forward(batched_input, weight, bias, spec, algorithm)
    return (out if spec.batched else out[0]), spec, (input, weight, bias)


_CONV_DOC = """{summary}

    By default this is the cross-correlation that deep-learning frameworks call
    convolution: output element ``o`` is the sum over input channels of its group
    and kernel taps ``j`` of ``x_padded[c, o*stride + j*dilation] * weight[c_out, c, j]``.
    With ``flip=True`` the kernel is reversed on every spatial axis first, which
    is the convolution of mathematics and signal processing (``scipy.signal.convolve``).

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C_in, {spatial})``, or unbatched ``(C_in, {spatial})``.
    weight : numpy.ndarray
        ``(C_out, C_in / groups, {kernel})``; must have the input's dtype.
    bias : numpy.ndarray, optional
        ``(C_out,)``, added to every output position.
    stride : int or tuple of int
        Step between kernel positions, per spatial dimension, ``>= 1``.
    padding : int, tuple, or {{"valid", "same", "full"}}
        An int for every side; one int per spatial dimension; one ``(low, high)``
        pair per spatial dimension (asymmetric). ``"valid"`` is no padding;
        ``"full"`` pads ``dilation*(k-1)`` on both sides (every partial overlap);
        ``"same"`` gives output size ``ceil(in / stride)`` at every stride, with
        total padding ``max((out-1)*stride + dilation*(k-1) + 1 - in, 0)`` and the
        odd unit on the high side (TensorFlow/JAX). PyTorch refuses ``"same"`` at
        stride > 1; at stride 1 the two agree. SciPy's ``mode="same"`` puts the
        odd unit on the low side instead (see :func:`convolab.correlate`).
    dilation : int or tuple of int
        Spacing between kernel taps, ``>= 1``.
    groups : int
        Split channels into ``groups`` independent convolutions; must divide
        ``C_in`` and ``C_out``. ``groups == C_in`` is depthwise.
    padding_mode : str
        How padding cells are filled. PyTorch's names, with NumPy's as aliases;
        drawn for ``a b c d`` padded by 3::

            zeros / constant     0 0 0 | a b c d | 0 0 0
            reflect              d c b | a b c d | c b a   (pad < size)
            symmetric            c b a | a b c d | d c b   (pad <= size)
            replicate / edge     a a a | a b c d | d d d
            circular / wrap      b c d | a b c d | a b c   (pad <= size)

    flip : bool
        Reverse the kernel on every spatial axis (true convolution).
    algorithm : {{"auto", "measure", "direct", "im2col", "gemm", "folded", "shifted", "depthwise", "winograd2", "winograd3", "winograd4", "fft", "compiled", "space_to_depth", "packed", "space_to_batch", "row_shifts", "broadcast"}}
        ``"direct"`` is the one-element-at-a-time reference; ``"im2col"`` one
        matrix product per group; ``"gemm"`` the same in cache-sized blocks;
        ``"folded"`` gemm with the last kernel axis folded into the product's
        rows; ``"shifted"`` one product per kernel tap; ``"depthwise"`` for one
        input channel per group; ``"winograd2"``/``"winograd3"``/``"winograd4"`` Winograd tiles
        for 3-tap stride-1 kernels; ``"fft"`` products of Fourier transforms
        (the last three floating point only); ``"compiled"`` Numba loops with
        sums held in registers, ``"space_to_depth"`` one product per sample
        where windows never overlap (kernel <= stride), and ``"packed"``
        gemm's columns packed block by block and multiplied in compiled
        register tiles, without the BLAS; ``"space_to_batch"`` runs a stride-1
        dilated 3-tap convolution as Winograd tiles on its phase sub-images
        (every ``d``-th input cell); ``"row_shifts"`` unrolls the last axis
        only and takes one product per tap of the other axes over shifted
        rows, leaving zero padding's rows out; ``"broadcast"`` a direct sum
        with the output channels in the vector lanes and each input value
        broadcast to them. ``"compiled"``, ``"packed"`` and ``"broadcast"``
        need Numba and float32/float64 data; ``"space_to_depth"`` copies with
        NumPy where Numba is missing. ``"auto"`` takes the planner's
        pick (see :func:`convolab.plan`), ``"measure"`` the fastest of its
        candidates timed once per problem.

    Returns
    -------
    numpy.ndarray
        ``(N, C_out, {out})`` (no batch axis for unbatched input). float16 is
        accumulated in float32 and returned as float16; integer inputs are
        accumulated and returned exactly as int64; other dtypes are kept.

    Raises
    ------
    TypeError
        A non-array or masked-array argument (other ndarray subclasses are read
        as their data; byte order is not a dtype: results are native-order), an
        unsupported or mismatched dtype, a non-integer stride/dilation/groups, a
        non-bool flip.
    ValueError
        A wrong rank or channel count, groups not dividing the channels, a
        stride or dilation below 1, negative padding, an unknown padding string
        or mode, a dilated kernel larger than the padded input, padding too
        large for the padding mode, or a bias not of shape ``(C_out,)``.

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``
    (see :func:`convolab.output_shape`).

    Examples
    --------
{examples}
"""

_CONV_EXAMPLES_ND = """    >>> import numpy as np, convolab as cl
    >>> x = np.arange(1, 10).reshape(1, 1, 3, 3)
    >>> w = np.array([[[[9, 8], [7, 6]]]])
    >>> cl.conv(x, w)
    array([[[[ 83, 113],
             [173, 203]]]])
    >>> cl.conv(np.ones((2, 4, 5, 5, 5)), np.ones((6, 2, 3, 3, 3)), groups=2, padding="same").shape
    (2, 6, 5, 5, 5)"""

_CONV_EXAMPLES_1D = """    >>> import numpy as np, convolab as cl
    >>> cl.conv1d(np.array([[1., 2., 3., 4.]]), np.array([[[1., 0., -1.]]]))
    array([[-2., -2.]])
    >>> cl.conv1d(np.array([[1., 2., 3., 4.]]), np.array([[[1., 0., -1.]]]), flip=True)
    array([[2., 2.]])"""

_CONV_EXAMPLES_2D = """    >>> import numpy as np, convolab as cl
    >>> x = np.arange(1., 10.).reshape(1, 3, 3)
    >>> sobel = np.array([[[[-1., -2., -1.], [0., 0., 0.], [1., 2., 1.]]]])
    >>> cl.conv2d(x, sobel, padding=1)
    array([[[ 13.,  20.,  17.],
            [ 18.,  24.,  18.],
            [-13., -20., -17.]]])
    >>> cl.conv2d(x, sobel, padding=1, flip=True)
    array([[[-13., -20., -17.],
            [-18., -24., -18.],
            [ 13.,  20.,  17.]]])
    >>> image = np.array([[[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]])
    >>> cl.conv2d(image, np.array([[[[1, 0, 1], [0, 1, 0], [1, 0, 1]]]]))
    array([[[4, 3, 4],
            [2, 4, 3],
            [2, 3, 4]]])"""

_CONV_EXAMPLES_3D = """    >>> import numpy as np, convolab as cl
    >>> cl.conv3d(np.ones((1, 2, 4, 4, 4)), np.ones((1, 2, 3, 3, 3)), padding=(1, 0, (0, 2))).shape
    (1, 1, 4, 2, 4)"""


def _conv_op(
    op: str,
    rank: int | None,
    input: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
    algorithm: str = "auto",
) -> np.ndarray:
    """The public ops (:func:`convolab._fixed_rank.fixed_rank_ops` makes one per rank): the output alone."""
    return _conv(op, rank, input, weight, bias, stride, padding, dilation, groups, padding_mode, flip, algorithm)[0]


def _conv_vjp(op, rank, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              flip=False, algorithm="auto"):
    out, spec, (input, weight, bias) = _conv(op, rank, input, weight, bias, stride, padding, dilation, groups,
                                             padding_mode, flip, algorithm)

    def pullback(grad_output: np.ndarray, input_grad: bool = True):
        """The gradients of input, weight and bias; with ``input_grad=False`` None for the input, not computed
        (a network's first layer: :class:`convolab.nn.VjpModule` asks so where its layer allows)."""
        grad_output = check_grad_output(op, grad_output, spec.caller_output_shape)
        g = grad_output if spec.batched else grad_output[np.newaxis]
        x = input if spec.batched else input[np.newaxis]
        if input_grad:
            grad_input, grad_weight = conv_grads(x, g, weight, spec)  # derivations beside the forward, in _engine
            grad_input = grad_input if spec.batched else grad_input[0]
        else:
            grad_input, grad_weight = None, conv_weight_grad(x, g, spec)
        grad_bias = None if bias is None else channel_sums(g).astype(out.dtype)
        return grad_input, grad_weight, grad_bias

    return out, pullback


conv, conv1d, conv2d, conv3d = fixed_rank_ops(_conv_op, "conv", _CONV_DOC, vjp=_conv_vjp, words={
    None: dict(summary="N-d convolution (cross-correlation by default) of a batch of multi-channel signals.",
               examples=_CONV_EXAMPLES_ND),
    1: dict(summary="1-d convolution: ``conv`` with one spatial dimension (audio, time series).",
            examples=_CONV_EXAMPLES_1D),
    2: dict(summary="2-d convolution: ``conv`` with two spatial dimensions (images).", examples=_CONV_EXAMPLES_2D),
    3: dict(summary="3-d convolution: ``conv`` with three spatial dimensions (volumes, video).",
            examples=_CONV_EXAMPLES_3D),
})
