"""The layers: PyTorch's constructors, each forward with its backward beside it.

Every layer with a convolab op behind it is a :class:`~convolab.nn.module.VjpModule`:
its forward runs the op through :func:`convolab.vjp` and its backward runs the
pullback, so a layer's gradient is exactly the op's, which the differential tests
check against PyTorch. Constructors take PyTorch's arguments in PyTorch's order
(``dtype`` defaults to float32) plus ``rng=`` for the initial weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import pooling
from .._errors import fail
from ..functional import as_array, conv1d, conv2d, conv3d
from ..spec import _is_int, canonical_padding_mode, check_flag, normalize_ints, normalize_padding
from ..transposed import conv_transpose1d, conv_transpose2d, conv_transpose3d
from . import functional as F
from ..algorithms._columns import keeping_columns, reusing_columns
from ..algorithms._compiled import kernels, numba_loaded
from .init import default_bound, generator_from, uniform
from .module import Module, Parameter, VjpModule

__all__ = [
    "Conv1d", "Conv2d", "Conv3d",
    "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout", "Flatten", "Linear",
]


def _positive_int(op: str, name: str, value: Any, minimum: int = 1) -> int:
    if not _is_int(value):
        fail(TypeError, op, name, repr(value), "must be an int")
    if value < minimum:
        fail(ValueError, op, name, repr(value), f"must be >= {minimum}")
    return int(value)


def _float_dtype(op: str, dtype: Any) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        fail(TypeError, op, "dtype", repr(dtype), "must be a NumPy floating dtype")
    if resolved.kind != "f":
        fail(TypeError, op, "dtype", repr(dtype), "must be a floating dtype (float16, float32 or float64)")
    return resolved


def _check_input_rank(op: str, input: Any, ranks: tuple[int, ...], shape_text: str) -> None:
    """PyTorch's layers accept batched and unbatched input; anything else is named here."""
    input = as_array(op, "input", input)
    if input.ndim not in ranks:
        fail(ValueError, op, "input", f"shape {input.shape} ({input.ndim}-D)", f"must be {shape_text}")


# ---------------------------------------------------------------------------------------------------------------
# Convolutions


class _ConvNd(VjpModule):
    rank: int
    transposed = False
    param_names = ("weight", "bias")
    skips_input_grad = True  # set False by the transposed layers, whose op's pullback has no such option

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 output_padding: Any = 0, *, dtype: Any = np.float32, rng: Any = None):
        super().__init__()
        op = type(self).__name__
        self.in_channels = _positive_int(op, "in_channels", in_channels)
        self.out_channels = _positive_int(op, "out_channels", out_channels)
        self.groups = _positive_int(op, "groups", groups)
        for name, channels in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if channels % self.groups:
                fail(ValueError, op, name, str(channels), f"must be divisible by groups={self.groups}")
        self.kernel_size = normalize_ints(kernel_size, self.rank, "kernel_size", op)
        self.stride = normalize_ints(stride, self.rank, "stride", op)
        self.dilation = normalize_ints(dilation, self.rank, "dilation", op)
        # Kept as given (an int, a tuple or a string): the functional op reads it per call.
        normalize_padding(padding, self.rank, op)
        self.padding = padding
        self.padding_mode = canonical_padding_mode(padding_mode, op)
        if self.transposed:
            if self.padding_mode != "zeros":
                fail(ValueError, op, "padding_mode", repr(padding_mode),
                     "must be 'zeros' for a transposed convolution (as in PyTorch)")
            self.output_padding = normalize_ints(output_padding, self.rank, "output_padding", op, minimum=0)
            weight_shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        else:
            weight_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        dtype = _float_dtype(op, dtype)
        generator = generator_from(op, rng)
        bound = default_bound(weight_shape)
        self.weight = Parameter(uniform(weight_shape, bound, dtype, generator))
        self.register_parameter(
            "bias", Parameter(uniform((self.out_channels,), bound, dtype, generator)) if check_flag(bias, "bias", op)
            else None)

    def forward(self, input: np.ndarray) -> np.ndarray:
        if self.transposed:
            return super().forward(input)
        # A small layer's unrolled input is kept for its weight gradient, which then copies nothing.
        with keeping_columns() as kept:
            output = super().forward(input)
        self._for_backward["columns"] = kept
        return output

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        saved = self.__dict__.get("_for_backward") or {}
        with reusing_columns(saved.get("columns")):  # the input is the one the forward unrolled, as saved
            return super().backward(grad_output, input_grad)  # no input gradient: the weight's and bias's alone

    def op_kwargs(self) -> dict[str, Any]:
        if self.transposed:
            return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                        groups=self.groups, dilation=self.dilation)
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")
        if self.dilation != (1,) * self.rank:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text


class Conv1d(_ConvNd):
    """1-d convolution layer, ``torch.nn.Conv1d``'s arguments; forward is :func:`convolab.conv1d`.

    Shape
    -----
    ``(N, C_in, L)`` or ``(C_in, L)`` → ``(N, C_out, L_out)``, with
    ``L_out = floor((L + 2 * padding - dilation * (k - 1) - 1) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> Conv1d(2, 4, 3, padding=1, rng=0)(np.zeros((5, 2, 10), np.float32)).shape
    (5, 4, 10)
    """

    rank = 1
    op = conv1d

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 dtype: Any = np.float32, rng: Any = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, dtype=dtype, rng=rng)


class Conv2d(Conv1d):
    """2-d convolution layer, ``torch.nn.Conv2d``'s arguments; forward is :func:`convolab.conv2d`.

    Shape
    -----
    ``(N, C_in, H, W)`` or ``(C_in, H, W)`` → ``(N, C_out, H_out, W_out)``, each
    ``out = floor((in + 2 * padding - dilation * (k - 1) - 1) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Conv2d(1, 6, 3, padding=1, rng=0)
    >>> layer.weight.shape, layer.bias.shape
    ((6, 1, 3, 3), (6,))
    >>> out = layer(np.ones((2, 1, 8, 8), np.float32))
    >>> layer.backward(np.ones_like(out)).shape, layer.weight.grad.shape
    ((2, 1, 8, 8), (6, 1, 3, 3))
    """

    rank = 2
    op = conv2d


class Conv3d(Conv1d):
    """3-d convolution layer, ``torch.nn.Conv3d``'s arguments; forward is :func:`convolab.conv3d`.

    Shape
    -----
    ``(N, C_in, D, H, W)`` or unbatched → ``(N, C_out, D_out, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> Conv3d(1, 2, 3, stride=2, rng=0)(np.zeros((1, 1, 7, 7, 7), np.float32)).shape
    (1, 2, 3, 3, 3)
    """

    rank = 3
    op = conv3d


class ConvTranspose1d(_ConvNd):
    """1-d transposed convolution layer, ``torch.nn.ConvTranspose1d``'s arguments.

    The weight is ``(C_in, C_out / groups, k)``; forward is :func:`convolab.conv_transpose1d`.

    Shape
    -----
    ``L_out = (L - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> ConvTranspose1d(2, 3, 4, stride=2, padding=1, rng=0)(np.zeros((1, 2, 5), np.float32)).shape
    (1, 3, 10)
    """

    rank = 1
    transposed = True
    skips_input_grad = False
    op = conv_transpose1d

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 padding_mode: str = "zeros", *, dtype: Any = np.float32, rng: Any = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, dtype=dtype, rng=rng)


class ConvTranspose2d(ConvTranspose1d):
    """2-d transposed convolution layer, ``torch.nn.ConvTranspose2d``'s arguments.

    Shape
    -----
    Per spatial dimension,
    ``out = (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> ConvTranspose2d(4, 2, 2, stride=2, rng=0)(np.zeros((1, 4, 3, 3), np.float32)).shape
    (1, 2, 6, 6)
    """

    rank = 2
    op = conv_transpose2d


class ConvTranspose3d(ConvTranspose1d):
    """3-d transposed convolution layer, ``torch.nn.ConvTranspose3d``'s arguments.

    Shape
    -----
    As :class:`ConvTranspose2d`, per each of the three spatial dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> ConvTranspose3d(1, 1, 3, rng=0)(np.zeros((1, 1, 2, 2, 2), np.float32)).shape
    (1, 1, 4, 4, 4)
    """

    rank = 3
    op = conv_transpose3d


# ---------------------------------------------------------------------------------------------------------------
# Pooling: no parameters; the op's pullback is the whole backward.


class _MaxPoolNd(VjpModule):
    rank: int

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        op = type(self).__name__
        self.kernel_size = normalize_ints(kernel_size, self.rank, "kernel_size", op)
        self.stride = self.kernel_size if stride is None else normalize_ints(stride, self.rank, "stride", op)
        self.padding = normalize_ints(padding, self.rank, "padding", op, minimum=0)
        self.dilation = normalize_ints(dilation, self.rank, "dilation", op)
        self.return_indices = check_flag(return_indices, "return_indices", op)
        self.ceil_mode = check_flag(ceil_mode, "ceil_mode", op)

    def op_kwargs(self) -> dict[str, Any]:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding, dilation=self.dilation,
                    ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """1-d max pooling, ``torch.nn.MaxPool1d``'s arguments; forward is :func:`convolab.max_pool1d`.

    With ``return_indices=True`` forward returns ``(values, indices)`` and backward
    takes the gradient of the values.

    Shape
    -----
    ``L_out = floor((L + 2 * padding - dilation * (k - 1) - 1) / stride) + 1`` (ceil with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np
    >>> MaxPool1d(2)(np.array([[1., 3., 2., 0.]]))
    array([[3., 2.]])
    """

    rank = 1
    op = pooling.max_pool1d


class MaxPool2d(_MaxPoolNd):
    """2-d max pooling, ``torch.nn.MaxPool2d``'s arguments; forward is :func:`convolab.max_pool2d`.

    Shape
    -----
    Per spatial dimension as :class:`MaxPool1d`.

    Examples
    --------
    >>> import numpy as np
    >>> pool = MaxPool2d(2)
    >>> pool(np.arange(16.).reshape(1, 4, 4))
    array([[[ 5.,  7.],
            [13., 15.]]])
    >>> pool.backward(np.ones((1, 2, 2)))[0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    rank = 2
    op = pooling.max_pool2d


class MaxPool3d(_MaxPoolNd):
    """3-d max pooling, ``torch.nn.MaxPool3d``'s arguments; forward is :func:`convolab.max_pool3d`.

    Shape
    -----
    Per spatial dimension as :class:`MaxPool1d`.

    Examples
    --------
    >>> import numpy as np
    >>> MaxPool3d(2)(np.zeros((1, 1, 4, 4, 4))).shape
    (1, 1, 2, 2, 2)
    """

    rank = 3
    op = pooling.max_pool3d


class _AvgPoolNd(VjpModule):
    rank: int

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__()
        op = type(self).__name__
        self.kernel_size = normalize_ints(kernel_size, self.rank, "kernel_size", op)
        self.stride = self.kernel_size if stride is None else normalize_ints(stride, self.rank, "stride", op)
        self.padding = normalize_ints(padding, self.rank, "padding", op, minimum=0)
        self.ceil_mode = check_flag(ceil_mode, "ceil_mode", op)
        self.count_include_pad = check_flag(count_include_pad, "count_include_pad", op)
        self.divisor_override = None if divisor_override is None else _positive_int(op, "divisor_override",
                                                                                     divisor_override)

    def op_kwargs(self) -> dict[str, Any]:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
                    count_include_pad=self.count_include_pad, divisor_override=self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """1-d average pooling, ``torch.nn.AvgPool1d``'s arguments; forward is :func:`convolab.avg_pool1d`.

    Shape
    -----
    ``L_out = floor((L + 2 * padding - k) / stride) + 1`` (ceil with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np
    >>> AvgPool1d(2)(np.array([[1., 3., 2., 0.]]))
    array([[2., 1.]])
    """

    rank = 1
    op = pooling.avg_pool1d

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """2-d average pooling, ``torch.nn.AvgPool2d``'s arguments; forward is :func:`convolab.avg_pool2d`.

    Shape
    -----
    Per spatial dimension as :class:`AvgPool1d`.

    Examples
    --------
    >>> import numpy as np
    >>> AvgPool2d(2)(np.arange(16.).reshape(1, 1, 4, 4))
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    """

    rank = 2
    op = pooling.avg_pool2d


class AvgPool3d(_AvgPoolNd):
    """3-d average pooling, ``torch.nn.AvgPool3d``'s arguments; forward is :func:`convolab.avg_pool3d`.

    Shape
    -----
    Per spatial dimension as :class:`AvgPool1d`.

    Examples
    --------
    >>> import numpy as np
    >>> AvgPool3d(2)(np.ones((1, 1, 4, 4, 4))).shape
    (1, 1, 2, 2, 2)
    """

    rank = 3
    op = pooling.avg_pool3d


class _AdaptiveAvgPoolNd(VjpModule):
    rank: int

    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def op_kwargs(self) -> dict[str, Any]:
        return dict(output_size=self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Average over ``output_size`` adaptive windows, ``torch.nn.AdaptiveAvgPool1d``.

    Shape
    -----
    ``(N, C, L)`` → ``(N, C, output_size)``.

    Examples
    --------
    >>> import numpy as np
    >>> AdaptiveAvgPool1d(1)(np.array([[1., 2., 3.]]))
    array([[2.]])
    """

    rank = 1
    op = pooling.adaptive_avg_pool1d


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Average over adaptive windows, ``torch.nn.AdaptiveAvgPool2d`` (global pooling with ``1``).

    Shape
    -----
    ``(N, C, H, W)`` → ``(N, C, *output_size)``.

    Examples
    --------
    >>> import numpy as np
    >>> AdaptiveAvgPool2d(1)(np.arange(4.).reshape(1, 1, 2, 2))
    array([[[[1.5]]]])
    """

    rank = 2
    op = pooling.adaptive_avg_pool2d


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """Average over adaptive windows, ``torch.nn.AdaptiveAvgPool3d``.

    Shape
    -----
    ``(N, C, D, H, W)`` → ``(N, C, *output_size)``.

    Examples
    --------
    >>> import numpy as np
    >>> AdaptiveAvgPool3d((1, 2, 2))(np.ones((1, 1, 3, 4, 4))).shape
    (1, 1, 1, 2, 2)
    """

    rank = 3
    op = pooling.adaptive_avg_pool3d


# ---------------------------------------------------------------------------------------------------------------
# Batch normalization: the op normalizes; the layer keeps the running statistics.


class _BatchNorm(Module):
    input_ranks: tuple[int, ...]
    input_text: str

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, dtype: Any = np.float32):
        super().__init__()
        op = type(self).__name__
        self.num_features = _positive_int(op, "num_features", num_features)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            fail(ValueError, op, "eps", repr(eps), "must be a number > 0")
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0 <= momentum <= 1):
            fail(ValueError, op, "momentum", repr(momentum), "must be None (a cumulative average) or in [0, 1]")
        self.eps, self.momentum = float(eps), momentum
        self.affine = check_flag(affine, "affine", op)
        self.track_running_stats = check_flag(track_running_stats, "track_running_stats", op)
        dtype = _float_dtype(op, dtype)
        self.register_parameter("weight", Parameter(np.ones(num_features, dtype)) if self.affine else None)
        self.register_parameter("bias", Parameter(np.zeros(num_features, dtype)) if self.affine else None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, np.int64))
        else:
            object.__setattr__(self, "running_mean", None)
            object.__setattr__(self, "running_var", None)

    def forward(self, input: np.ndarray) -> np.ndarray:
        op = type(self).__name__
        _check_input_rank(op, input, self.input_ranks, self.input_text)
        if input.shape[1] != self.num_features:
            fail(ValueError, op, "input", f"shape {input.shape}",
                 f"must have num_features={self.num_features} channels on axis 1")
        use_batch = self.training or not self.track_running_stats
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        output, pullback, mean, var = F.batch_norm_with_statistics(
            input, None if use_batch else self.running_mean, None if use_batch else self.running_var, weight, bias,
            training=use_batch, eps=self.eps)
        self._save_for_backward(pullback=pullback)
        if self.training and self.track_running_stats:
            self._update_running_statistics(mean, var, input.size // input.shape[1])
        return output

    def _update_running_statistics(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        # PyTorch's rule: the running variance follows the unbiased batch variance, var * count / (count - 1).
        tracked = self.num_batches_tracked + 1
        factor = 1 / float(tracked) if self.momentum is None else self.momentum
        dtype = self.running_mean.dtype
        if _compiled_running_statistics(self.running_mean, self.running_var, mean, var):
            new_mean, new_var = np.empty_like(self.running_mean), np.empty_like(self.running_var)
            scalars = np.array([1 - factor, factor, count / (count - 1)]).astype(dtype)
            kernels("batchnorm").running_statistics(self.running_mean, self.running_var, mean, var, scalars,
                                                    new_mean, new_var)
        else:
            unbiased = var * (count / (count - 1))
            new_mean = ((1 - factor) * self.running_mean + factor * mean).astype(dtype)
            new_var = ((1 - factor) * self.running_var + factor * unbiased).astype(dtype)
        self._set_buffer("running_mean", new_mean)
        self._set_buffer("running_var", new_var)
        self._set_buffer("num_batches_tracked", np.asarray(tracked, np.int64))

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        grad_input, _, _, grad_weight, grad_bias = self._saved_for_backward(input_grad)["pullback"](grad_output)
        if self.weight is not None:
            self.weight.accumulate(grad_weight)
            self.bias.accumulate(grad_bias)
        self._release_saved()
        return grad_input if input_grad else None

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


def _compiled_running_statistics(*vectors: np.ndarray) -> bool:
    """Whether :func:`convolab.algorithms._kernels_batchnorm.running_statistics` takes ``vectors``: one dtype,
    float32 or float64, C-contiguous, once Numba has been loaded by another path (the batch's own statistics
    came from its forward kernel)."""
    dtype = vectors[0].dtype
    return (dtype in (np.float32, np.float64) and all(v.dtype == dtype and v.flags.c_contiguous for v in vectors)
            and numba_loaded())


class BatchNorm1d(_BatchNorm):
    """Batch normalization of ``(N, C)`` or ``(N, C, L)``, ``torch.nn.BatchNorm1d``'s arguments.

    Training normalizes with the batch's statistics and updates the running ones
    (``running = (1 - momentum) * running + momentum * batch``, unbiased variance);
    evaluation normalizes with the running statistics.

    Shape
    -----
    Output as input.

    Examples
    --------
    >>> import numpy as np
    >>> bn = BatchNorm1d(1)
    >>> bn(np.array([[1.], [3.]], np.float32)).round(3)
    array([[-1.],
           [ 1.]], dtype=float32)
    >>> bn.running_mean, bn.running_var
    (array([0.2], dtype=float32), array([1.1], dtype=float32))
    """

    input_ranks = (2, 3)
    input_text = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of ``(N, C, H, W)``, ``torch.nn.BatchNorm2d``'s arguments.

    Shape
    -----
    Output as input.

    Examples
    --------
    >>> import numpy as np
    >>> BatchNorm2d(3)(np.random.default_rng(0).normal(size=(4, 3, 5, 5)).astype(np.float32)).shape
    (4, 3, 5, 5)
    """

    input_ranks = (4,)
    input_text = "(N, C, H, W)"


class BatchNorm3d(_BatchNorm):
    """Batch normalization of ``(N, C, D, H, W)``, ``torch.nn.BatchNorm3d``'s arguments.

    Shape
    -----
    Output as input.

    Examples
    --------
    >>> import numpy as np
    >>> BatchNorm3d(2)(np.ones((2, 2, 2, 2, 2), np.float32)).shape
    (2, 2, 2, 2, 2)
    """

    input_ranks = (5,)
    input_text = "(N, C, D, H, W)"


# ---------------------------------------------------------------------------------------------------------------
# Activations, dropout, reshaping, the fully connected layer


class ReLU(VjpModule):
    """``max(x, 0)``; the gradient is passed where ``x > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> ReLU()(np.array([-1., 2.]))
    array([0., 2.])
    """

    op = F.relu


class LeakyReLU(VjpModule):
    """``x`` where positive, ``negative_slope * x`` elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> LeakyReLU(0.1)(np.array([-1., 2.]))
    array([-0.1,  2. ])
    """

    op = F.leaky_relu

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            fail(TypeError, "LeakyReLU", "negative_slope", repr(negative_slope), "must be a real number")
        self.negative_slope = float(negative_slope)

    def op_kwargs(self) -> dict[str, Any]:
        return dict(negative_slope=self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Tanh(VjpModule):
    """Hyperbolic tangent.

    Examples
    --------
    >>> import numpy as np
    >>> Tanh()(np.array([0.]))
    array([0.])
    """

    op = F.tanh


class Sigmoid(VjpModule):
    """Logistic sigmoid ``1 / (1 + exp(-x))``.

    Examples
    --------
    >>> import numpy as np
    >>> Sigmoid()(np.array([0.]))
    array([0.5])
    """

    op = F.sigmoid


class Dropout(VjpModule):
    """Zero each element with probability ``p`` while training (scaling the rest by ``1/(1-p)``).

    In evaluation mode it passes input through. The masks come from ``rng``
    (default: :func:`convolab.nn.init.default_generator`, reseeded by ``manual_seed``).

    Examples
    --------
    >>> import numpy as np
    >>> drop = Dropout(0.5, rng=0)
    >>> drop(np.ones(4))
    array([2., 0., 0., 0.])
    >>> drop.eval()(np.ones(4))
    array([1., 1., 1., 1.])
    """

    op = F.dropout

    def __init__(self, p: float = 0.5, *, rng: Any = None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            fail(ValueError, "Dropout", "p", repr(p), "must be a probability in [0, 1]")
        self.p = float(p)
        self.rng = None if rng is None else generator_from("Dropout", rng)

    def op_kwargs(self) -> dict[str, Any]:
        return dict(p=self.p, training=self.training, rng=self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Flatten(Module):
    """Merge axes ``start_dim`` … ``end_dim`` into one (default: all but the batch axis).

    Examples
    --------
    >>> import numpy as np
    >>> Flatten()(np.zeros((2, 3, 4, 4))).shape
    (2, 48)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not _is_int(value):
                fail(TypeError, "Flatten", name, repr(value), "must be an int")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, input: np.ndarray) -> np.ndarray:
        input = as_array("Flatten", "input", input)
        ndim = max(input.ndim, 1)
        start, end = self.start_dim % ndim, self.end_dim % ndim
        if not (-ndim <= self.start_dim < ndim and -ndim <= self.end_dim < ndim) or start > end:
            fail(ValueError, "Flatten", "start_dim", f"{self.start_dim} (end_dim {self.end_dim}) for {input.ndim}-D input",
                 "must name axes of the input with start_dim <= end_dim")
        output = input.reshape(input.shape[:start] + (-1,) + input.shape[end + 1:]) if input.ndim else input.reshape(1)
        self._save_for_backward(input_shape=input.shape, output_shape=output.shape)
        return output

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        saved = self._saved_for_backward(input_grad)
        grad_output = as_array("Flatten.backward", "grad_output", grad_output, array_like=True)
        if grad_output.shape != saved["output_shape"]:
            fail(ValueError, "Flatten.backward", "grad_output", f"shape {grad_output.shape}",
                 f"must have the output's shape {saved['output_shape']}")
        self._release_saved()
        return grad_output.reshape(saved["input_shape"]) if input_grad else None


class Linear(VjpModule):
    """Fully connected layer ``y = x Wᵀ + b``, ``torch.nn.Linear``'s arguments and initialization.

    Shape
    -----
    ``(*, in_features)`` → ``(*, out_features)``.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Linear(4, 3, rng=0)
    >>> layer(np.ones((2, 4), np.float32)).shape
    (2, 3)
    """

    op = F.linear
    param_names = ("weight", "bias")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, dtype: Any = np.float32,
                 rng: Any = None):
        super().__init__()
        self.in_features = _positive_int("Linear", "in_features", in_features)
        self.out_features = _positive_int("Linear", "out_features", out_features)
        dtype = _float_dtype("Linear", dtype)
        generator = generator_from("Linear", rng)
        bound = default_bound((self.out_features, self.in_features))
        self.weight = Parameter(uniform((self.out_features, self.in_features), bound, dtype, generator))
        self.register_parameter(
            "bias",
            Parameter(uniform((self.out_features,), bound, dtype, generator)) if check_flag(bias, "bias", "Linear")
            else None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
