"""The layers' stateless ops, each with its vector-Jacobian product beside it.

These mirror ``torch.nn.functional`` for the ops a CNN needs besides
convolution and pooling (which live in :mod:`convolab`): ``linear``, the
activations, ``dropout``, ``batch_norm`` and the two losses. Each registers its
pullback with :func:`convolab._vjp.defines_vjp`, so ``cl.vjp`` and
``cl.gradcheck`` work on them exactly as on ``cl.conv2d``; the modules in
:mod:`convolab.nn` are thin stateful wrappers over these.

Axis legend: ``N`` batch, ``C`` channels or classes, ``*`` any trailing axes.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Any

import numpy as np

from .._dtypes import same_dtype
from .._errors import fail
from ..algorithms._compiled import kernels, numba_loaded, numba_missing
from ..functional import as_array, channel_sums
from .._vjp import defines_vjp
from ..spec import _is_int, check_flag
from .init import generator_from

__all__ = [
    "linear",
    "relu",
    "leaky_relu",
    "tanh",
    "sigmoid",
    "dropout",
    "batch_norm",
    "cross_entropy",
    "mse_loss",
    "log_softmax",
]

_REDUCTIONS = ("mean", "sum", "none")


def _float_array(op: str, name: str, value: Any) -> np.ndarray:
    """``value`` as computed with (:func:`convolab.functional.as_array`) if floating point, else a TypeError."""
    value = as_array(op, name, value)
    if value.dtype.kind != "f":
        fail(TypeError, op, name, f"dtype {value.dtype}", "must be floating point (float16, float32 or float64)")
    return value


def _same_dtype(op: str, name: str, value: np.ndarray, input: np.ndarray) -> None:
    if not same_dtype(value.dtype, input.dtype):
        fail(TypeError, op, name, f"dtype {value.dtype} with input dtype {input.dtype}",
             "must have the same dtype as input (cast one with .astype)")


def _check_grad(op: str, grad_output: Any, shape: tuple[int, ...]) -> np.ndarray:
    grad_output = as_array(op, "grad_output", grad_output, array_like=True)
    if grad_output.shape != shape:
        fail(ValueError, op, "grad_output", f"shape {grad_output.shape}", f"must have the output's shape {shape}")
    return grad_output


def _check_reduction(op: str, reduction: Any) -> str:
    if reduction not in _REDUCTIONS:
        fail(ValueError, op, "reduction", repr(reduction), f"must be one of {', '.join(map(repr, _REDUCTIONS))}")
    return reduction


# ---------------------------------------------------------------------------------------------------------------
# linear: y = x Wᵀ + b over the last axis.


def _linear_args(input: Any, weight: Any, bias: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The three arrays as computed with, once checked."""
    input = _float_array("linear", "input", input)
    weight = _float_array("linear", "weight", weight)
    _same_dtype("linear", "weight", weight, input)
    if weight.ndim != 2:
        fail(ValueError, "linear", "weight", f"shape {weight.shape}", "must be 2-D (out_features, in_features)")
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        fail(ValueError, "linear", "input", f"shape {input.shape}",
             f"must end in in_features={weight.shape[1]} (weight.shape[1])")
    if bias is not None:
        bias = _float_array("linear", "bias", bias)
        _same_dtype("linear", "bias", bias, input)
        if bias.shape != (weight.shape[0],):
            fail(ValueError, "linear", "bias", f"shape {bias.shape}",
                 f"must be 1-D of length out_features={weight.shape[0]}")
    return input, weight, bias


def linear(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Affine map of the last axis: ``input @ weight.T + bias``, as ``torch.nn.functional.linear``.

    Shape
    -----
    input ``(*, in_features)``, weight ``(out_features, in_features)``,
    bias ``(out_features,)`` → ``(*, out_features)``.

    Examples
    --------
    >>> import numpy as np
    >>> linear(np.array([[1., 2.]]), np.array([[1., 0.], [1., 1.]]), np.array([0., 10.]))
    array([[ 1., 13.]])
    """
    return _affine(*_linear_args(input, weight, bias))


def _affine(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """:func:`linear` on checked arrays; the bias added in place into the product, a new array."""
    out = input @ weight.T
    if bias is not None:
        out += bias
    return out


@defines_vjp(linear)
def _linear_vjp(input, weight, bias=None):
    input, weight, bias = _linear_args(input, weight, bias)
    out = _affine(input, weight, bias)  # checked once

    def pullback(grad_output):
        g = _check_grad("linear", grad_output, out.shape)
        g_rows = g.reshape(-1, weight.shape[0])  # (rows, out): every leading axis is a row
        x_rows = input.reshape(-1, weight.shape[1])  # (rows, in)
        grad_weight = g_rows.T @ x_rows  # (out, in)
        grad_bias = None if bias is None else g_rows.sum(axis=0)
        return g @ weight, grad_weight, grad_bias

    return out, pullback


# ---------------------------------------------------------------------------------------------------------------
# Elementwise activations: the pullback multiplies by the derivative at the saved input (or output).


def relu(input: np.ndarray) -> np.ndarray:
    """``max(input, 0)`` elementwise (a NaN stays NaN).

    >>> relu(np.array([-1., 0., 2.]))
    array([0., 0., 2.])
    """
    return _rectified(_float_array("relu", "input", input))


def _rectified(input: np.ndarray) -> np.ndarray:
    """:func:`relu` on a checked array: ``input if input > 0 else 0``, a NaN kept (PyTorch's ``relu``), by one
    compiled loop (:func:`convolab.algorithms._kernels_activation.relu_forward`) where it runs. In NumPy, a NaN
    anywhere makes the maximum NaN: one reduction, no temporary, picks the ``where`` that keeps it (``maximum``
    keeps it too, but gives -0 where the loop gives +0)."""
    if _compiled_loops_run(input):
        out = np.empty(input.shape, input.dtype)
        kernels("activation").relu_forward(input.reshape(-1), out.reshape(-1))
        return out
    return np.where(input <= 0, np.zeros((), input.dtype), input) if np.isnan(np.max(input, initial=-np.inf)) \
        else np.maximum(input, 0)


@defines_vjp(relu)
def _relu_vjp(input):
    input = _float_array("relu", "input", input)
    out = _rectified(input)  # checked once

    def pullback(grad_output):
        # The derivative at 0 is taken as 0, and at a NaN as 1, as in PyTorch.
        g = _check_grad("relu", grad_output, out.shape)
        if g.dtype == input.dtype and _compiled_loops_run(g, input):
            grad = np.empty(g.shape, g.dtype)
            kernels("activation").relu_backward(g.reshape(-1), input.reshape(-1), grad.reshape(-1))
            return (grad,)
        return (np.where(input <= 0, np.zeros((), g.dtype), g),)  # a select: an inf or NaN g at x <= 0 gives 0

    return out, pullback


def _compiled_loops_run(*arrays: np.ndarray) -> bool:
    """Whether an elementwise compiled loop takes ``arrays`` as they are: C-contiguous, float32 or float64, once
    Numba has been imported by another path (:func:`convolab.algorithms._compiled.numba_loaded`: a pass this
    cheap is not worth the import on its own)."""
    return (arrays[0].dtype in (np.float32, np.float64) and all(array.flags.c_contiguous for array in arrays)
            and numba_loaded())


def leaky_relu(input: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """``input`` where positive, ``negative_slope * input`` elsewhere.

    >>> leaky_relu(np.array([-2., 3.]), 0.1)
    array([-0.2,  3. ])
    """
    input = _float_array("leaky_relu", "input", input)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.floating, np.integer)):
        fail(TypeError, "leaky_relu", "negative_slope", repr(negative_slope), "must be a real number")
    slope = input.dtype.type(negative_slope)
    return np.where(input > 0, input, input * slope)


@defines_vjp(leaky_relu)
def _leaky_relu_vjp(input, negative_slope=0.01):
    input = _float_array("leaky_relu", "input", input)
    out = leaky_relu(input, negative_slope)

    def pullback(grad_output):
        g = _check_grad("leaky_relu", grad_output, out.shape)
        return (np.where(input > 0, g, g * input.dtype.type(negative_slope)),)

    return out, pullback


def tanh(input: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent elementwise; its derivative is ``1 - tanh²``.

    >>> tanh(np.array([0.]))
    array([0.])
    """
    return np.tanh(_float_array("tanh", "input", input))


@defines_vjp(tanh)
def _tanh_vjp(input):
    out = tanh(input)

    def pullback(grad_output):
        return (_check_grad("tanh", grad_output, out.shape) * (1 - out * out),)

    return out, pullback


def sigmoid(input: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-input))`` without overflow for large negative inputs.

    >>> sigmoid(np.array([0., -1000., 1000.]))
    array([0.5, 0. , 1. ])
    """
    input = _float_array("sigmoid", "input", input)
    # exp of a non-positive number only: exp(-|x|) never overflows.
    e = np.exp(-np.abs(input))
    return np.where(input >= 0, 1 / (1 + e), e / (1 + e)).astype(input.dtype, copy=False)


@defines_vjp(sigmoid)
def _sigmoid_vjp(input):
    out = sigmoid(input)

    def pullback(grad_output):
        return (_check_grad("sigmoid", grad_output, out.shape) * out * (1 - out),)

    return out, pullback


# ---------------------------------------------------------------------------------------------------------------
# dropout: zero each element with probability p, scale survivors by 1/(1-p) so the mean is kept.


def _dropout_mask(input: Any, p: Any, training: Any, rng: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The input as computed with, and the scale each element is multiplied by (0 or 1/(1-p)), or None where
    dropout does nothing."""
    input = _float_array("dropout", "input", input)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0 <= p <= 1:
        fail(ValueError, "dropout", "p", repr(p), "must be a probability in [0, 1]")
    check_flag(training, "training", "dropout")
    generator = generator_from("dropout", rng)
    if not training or p == 0:
        return input, None
    if p == 1:
        return input, np.zeros(input.shape, input.dtype)
    keep = generator.random(input.shape) >= p
    return input, keep.astype(input.dtype) * input.dtype.type(1 / (1 - p))


def dropout(input: np.ndarray, p: float = 0.5, training: bool = True, *, rng: Any = None) -> np.ndarray:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Parameters
    ----------
    input : numpy.ndarray
        Any shape, floating point.
    p : float
        Probability of zeroing an element, in ``[0, 1]``.
    training : bool
        When False, ``input`` is returned unchanged (inference).
    rng : None, int or numpy.random.Generator
        Where the mask comes from: None is :func:`convolab.nn.init.default_generator`
        (reseeded by ``manual_seed``); an int seed gives the same mask every call.

    Examples
    --------
    >>> dropout(np.ones(6), 0.5, rng=0)
    array([2., 0., 0., 0., 2., 2.])
    """
    input, scale = _dropout_mask(input, p, training, rng)
    return input if scale is None else input * scale


@defines_vjp(dropout)
def _dropout_vjp(input, p=0.5, training=True, rng=None):
    input, scale = _dropout_mask(input, p, training, rng)
    out = input if scale is None else input * scale

    def pullback(grad_output):
        g = _check_grad("dropout", grad_output, out.shape)
        return (g if scale is None else g * scale,)  # the same mask as the forward pass

    return out, pullback


# ---------------------------------------------------------------------------------------------------------------
# batch_norm: normalize every channel over the batch and spatial axes, then scale and shift.


def _batch_norm_args(input, running_mean, running_var, weight, bias, training, eps):
    """The five arrays as computed with (None stays None), once checked."""
    op = "batch_norm"
    input = _float_array(op, "input", input)
    if input.ndim < 2:
        fail(ValueError, op, "input", f"shape {input.shape}", "must be (N, C) or (N, C, *spatial)")
    channels = input.shape[1]
    vectors = []
    for name, value in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                        ("bias", bias)):
        if value is not None:
            value = _float_array(op, name, value)
            _same_dtype(op, name, value, input)
            if value.shape != (channels,):
                fail(ValueError, op, name, f"shape {value.shape}",
                     f"must be 1-D of length C={channels} (input.shape[1])")
        vectors.append(value)
    check_flag(training, "training", op)
    if not training and (running_mean is None or running_var is None):
        fail(ValueError, op, "running_mean", "None", "and running_var are needed when training=False")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps >= 0:
        fail(ValueError, op, "eps", repr(eps), "must be a number >= 0")
    values_per_channel = input.size // channels if channels else 0
    if training and channels and values_per_channel <= 1:
        fail(ValueError, op, "input", f"shape {input.shape}",
             "must hold more than one value per channel in training mode (the variance of one value is undefined)")
    return (input, *vectors)


def _channel_view(vector: np.ndarray, ndim: int) -> np.ndarray:
    """``(C,)`` → ``(1, C, 1, ...)`` so it broadcasts against ``(N, C, *spatial)``."""
    return vector.reshape((1, -1) + (1,) * (ndim - 2))


def batch_statistics(input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance over every axis but 1 (the statistics training normalizes by).

    Computed on an ``(N, C, S)`` view with two passes (mean, then squared deviations), each one
    ``einsum``, which is both accurate and several times faster than NumPy reductions over axes ``(0, 2, 3)``.
    """
    mean, var, _ = _statistics_and_deviations(input)
    return mean, var


def _statistics_and_deviations(input: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`batch_statistics`, and the deviations ``input - mean`` ``(N, C, S)`` it squared (a new array)."""
    rows = input.reshape(input.shape[0], input.shape[1], -1)  # (N, C, S)
    count = rows.shape[0] * rows.shape[2]
    sums = rows.sum(axis=2).sum(axis=0) if rows.dtype == np.float16 else np.einsum("ncs->c", rows)
    mean = sums / count
    deviations = rows - mean[:, np.newaxis]
    var = np.einsum("ncs,ncs->c", deviations, deviations) / count
    return mean.astype(input.dtype, copy=False), var.astype(input.dtype, copy=False), deviations


def _channel_means(values: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Per-channel means of ``values`` (times ``other``), as ``.mean(axis=(0, 2, ...))`` gives them."""
    if values.dtype == np.float16:
        return (values if other is None else values * other).mean(axis=(0, *range(2, values.ndim)))
    return channel_sums(values, other) / (values.size // values.shape[1])


def batch_norm_with_statistics(input, running_mean, running_var, weight=None, bias=None, training=False, eps=1e-5):
    """:func:`batch_norm`'s forward pass and pullback, plus the mean and biased variance it normalized by.

    The layer needs the batch statistics for its running averages; returning them
    here saves computing them twice. In training mode, for float32 and float64
    where Numba runs, both passes are compiled loops
    (:mod:`convolab.algorithms._kernels_batchnorm`: the same steps, sums
    accumulated in float64); elsewhere NumPy's whole-array passes.
    """
    input, running_mean, running_var, weight, bias = _batch_norm_args(input, running_mean, running_var, weight, bias,
                                                                       training, eps)
    ndim = input.ndim
    if training and _compiled_batch_norm_missing(input.dtype) is None:
        out, normalized, inv_std, mean, var = _batch_norm_compiled(input, weight, bias, eps)
    else:
        out, normalized, inv_std, mean, var = _batch_norm_numpy(input, running_mean, running_var, weight, bias,
                                                                training, eps)

    def pullback(grad_output):
        g = _check_grad("batch_norm", grad_output, out.shape)
        if training and g.dtype == normalized.dtype and _compiled_batch_norm_missing(g.dtype) is None:
            grad_input, grad_weight, grad_bias = _batch_norm_grad_compiled(g, normalized, weight, inv_std)
            return grad_input, None, None, None if weight is None else grad_weight, None if bias is None else grad_bias
        grad_weight = None if weight is None else channel_sums(g, normalized)
        grad_bias = None if bias is None else channel_sums(g)
        grad_normalized = g if weight is None else g * _channel_view(weight, ndim)
        if training:
            # x̂ = (x - μ)/σ with μ, σ functions of the batch: removing the mean and the
            # component along x̂ from the gradient is what differentiating μ and σ adds.
            mean_grad = _channel_means(grad_normalized)
            mean_grad_x = _channel_means(grad_normalized, normalized)
            grad_input = grad_normalized - _channel_view(mean_grad, ndim)
            grad_input -= normalized * _channel_view(mean_grad_x, ndim)
            grad_input *= _channel_view(inv_std, ndim)
        else:
            grad_input = grad_normalized * _channel_view(inv_std, ndim)
        return grad_input, None, None, grad_weight, grad_bias

    return out, pullback, mean, var


def _batch_norm_numpy(input, running_mean, running_var, weight, bias, training, eps):
    """:func:`batch_norm_with_statistics`'s forward by NumPy: ``(out, normalized, inv_std, mean, var)``."""
    ndim = input.ndim
    if training:
        mean, var, deviations = _statistics_and_deviations(input)
    else:
        mean, var = running_mean, running_var
        deviations = input - _channel_view(mean, ndim)
    # Each step in place on arrays made here: at a small layer's sizes, the passes and temporaries cost more
    # than the arithmetic. The values are those of (x - mean) * inv_std * weight + bias, step by step.
    inv_std = (1 / np.sqrt(var + input.dtype.type(eps))).astype(input.dtype)
    normalized = deviations.reshape(input.shape)
    normalized *= _channel_view(inv_std, ndim)
    if weight is not None:
        out = normalized * _channel_view(weight, ndim)
    elif bias is not None:
        out = normalized.copy()  # normalized is kept for the pullback
    else:
        out = normalized
    if bias is not None:
        out += _channel_view(bias, ndim)
    return out, normalized, inv_std, mean, var


def _compiled_batch_norm_missing(dtype: np.dtype) -> str | None:
    """None if the compiled batch normalization runs ``dtype``, else why not (Numba is imported only for
    float32 and float64)."""
    if dtype not in (np.float32, np.float64):
        return f"compiled kernels run float32 and float64 only, not {dtype}"
    return numba_missing()


def _batch_norm_compiled(input, weight, bias, eps):
    """Training mode's forward by :func:`._kernels_batchnorm.batch_norm_forward`: as :func:`_batch_norm_numpy`."""
    rows = np.ascontiguousarray(input).reshape(input.shape[0], input.shape[1], -1)  # (N, C, S)
    channels, dtype = rows.shape[1], rows.dtype
    empty = np.empty(0, dtype)  # an absent weight or bias
    statistics = np.empty((3, channels), dtype)  # mean, var, inv_std
    normalized = np.empty(input.shape, dtype)
    out = normalized if weight is None and bias is None else np.empty(input.shape, dtype)
    kernels("batchnorm").batch_norm_forward(
        rows, empty if weight is None else np.ascontiguousarray(weight), empty if bias is None else
        np.ascontiguousarray(bias), float(eps), *statistics, normalized.reshape(rows.shape), out.reshape(rows.shape))
    mean, var, inv_std = statistics
    return out, normalized, inv_std, mean, var


def _batch_norm_grad_compiled(g, normalized, weight, inv_std):
    """Training mode's pullback by :func:`._kernels_batchnorm.batch_norm_backward`: ``(grad_input, grad_weight,
    grad_bias)``."""
    rows = np.ascontiguousarray(g).reshape(normalized.shape[0], normalized.shape[1], -1)  # (N, C, S)
    dtype = rows.dtype
    vectors = np.empty((4, rows.shape[1]), dtype)  # grad_weight, grad_bias, and two scratch means
    grad_input = np.empty(normalized.shape, dtype)
    kernels("batchnorm").batch_norm_backward(
        rows, normalized.reshape(rows.shape), np.ones(rows.shape[1], dtype) if weight is None else
        np.ascontiguousarray(weight), inv_std, *vectors, grad_input.reshape(rows.shape))
    return grad_input, vectors[0], vectors[1]


def batch_norm(
    input: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    eps: float = 1e-5,
) -> np.ndarray:
    """Batch normalization: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel.

    In training mode the mean and (biased) variance are the batch's, over every
    axis but the channel axis; otherwise ``running_mean`` and ``running_var`` are
    used. Unlike ``torch.nn.functional.batch_norm`` this never writes to the
    running statistics: :class:`convolab.nn.BatchNorm2d` updates its own.

    Shape
    -----
    input ``(N, C)`` or ``(N, C, *spatial)``; every vector ``(C,)``; output as input.

    Examples
    --------
    >>> x = np.array([[1.], [3.]])
    >>> batch_norm(x, None, None, training=True, eps=0.0)
    array([[-1.],
           [ 1.]])
    """
    return batch_norm_with_statistics(input, running_mean, running_var, weight, bias, training, eps)[0]


@defines_vjp(batch_norm)
def _batch_norm_vjp(input, running_mean, running_var, weight=None, bias=None, training=False, eps=1e-5):
    return batch_norm_with_statistics(input, running_mean, running_var, weight, bias, training, eps)[:2]


# ---------------------------------------------------------------------------------------------------------------
# Losses. Each returns a 0-d array for reduction "mean"/"sum" and per-element losses for "none".


def log_softmax(input: np.ndarray, axis: int = 1) -> np.ndarray:
    """``log(softmax(input))`` along ``axis``, computed as ``x - max - log(sum(exp(x - max)))``.

    >>> np.round(log_softmax(np.array([[0., 1000.]])), 6)
    array([[-1000.,     0.]])
    """
    input = _float_array("log_softmax", "input", input)
    if not _is_int(axis) or not -input.ndim <= axis < input.ndim:
        fail(TypeError if not _is_int(axis) else ValueError, "log_softmax", "axis",
             f"{axis!r} for {input.ndim}-D input", f"must be an int in [-{input.ndim}, {input.ndim})")
    return _log_softmax_along(input, axis)


def _cross_entropy_args(input: Any, target: Any, reduction: Any,
                        label_smoothing: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Input and target as computed with, once checked, and the number of classes."""
    op = "cross_entropy"
    input = _float_array(op, "input", input)
    if isinstance(target, np.ndarray):
        target = as_array(op, "target", target)
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu":
        fail(TypeError, op, "target", repr(getattr(target, "dtype", type(target).__name__)),
             "must be an integer numpy.ndarray of class indices")
    _check_reduction(op, reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)) \
            or not 0 <= label_smoothing <= 1:
        fail(ValueError, op, "label_smoothing", repr(label_smoothing), "must be a number in [0, 1]")
    batched = input.ndim != 1
    expected = (input.shape[0], *input.shape[2:]) if batched else ()
    if input.ndim == 0 or target.shape != expected:
        fail(ValueError, op, "target", f"shape {target.shape} for input shape {input.shape}",
             "must be input's shape without the class axis (input (N, C, *) with target (N, *), or (C,) with ())")
    classes = input.shape[1] if batched else input.shape[0]
    if target.size and (target.min() < 0 or target.max() >= classes):
        bad = target.min() if target.min() < 0 else target.max()
        fail(ValueError, op, "target", f"class {bad}", f"must be a class index in [0, {classes})")
    return input, target, classes


def _log_softmax_along(input: np.ndarray, axis: int) -> np.ndarray:
    """:func:`log_softmax` of a checked array, each step after the shift in place on the one new array (the
    loss runs it every training step, on a few hundred values, where a temporary costs more than its
    arithmetic)."""
    shifted = input - input.max(axis=axis, keepdims=True)  # the largest exponent is 0: no overflow
    sums = np.exp(shifted).sum(axis=axis, keepdims=True)
    return np.subtract(shifted, np.log(sums, out=sums), out=shifted)


@lru_cache(maxsize=64)
def _rows(count: int) -> np.ndarray:
    """``arange(count)``, the row index paired with each row's label (made once per batch size; never written)."""
    rows = np.arange(count)
    rows.setflags(write=False)
    return rows


def _at_labels(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``values[n, labels[n], ...]`` ``(N, *)``: each sample's entry for its class (labels checked in range)."""
    if values.ndim == 2:
        return values[_rows(len(labels)), labels]
    return np.take_along_axis(values, labels[:, np.newaxis].astype(np.intp), axis=1)[:, 0]


def _cross_entropy(input, target, reduction, label_smoothing):
    """The loss, and what the pullback needs: a function giving ``softmax - smoothed one-hot`` ``(N, C, *)`` (a
    new array), the labels and the input as computed with; by one compiled loop where it runs
    (:func:`convolab.algorithms._kernels_loss.cross_entropy_rows`, which also makes the gradient's part)."""
    input, target, classes = _cross_entropy_args(input, target, reduction, label_smoothing)
    logits = input if input.ndim != 1 else input[np.newaxis]
    labels = target.reshape((-1, *target.shape[1:])) if input.ndim != 1 else target.reshape(1)
    # The smoothed target puts 1 - s + s/C on the label and s/C on every other class.
    if _compiled_loops_run(logits, labels):  # every shape, so that (N, C) and (N, C, 1) give the same bits
        samples, positions = len(logits), prod(logits.shape[2:])  # explicit: with no samples, -1 is ambiguous
        rows = logits.reshape(samples, classes, positions)  # (N, C, S)
        losses = np.empty(labels.shape, logits.dtype)  # (N, *)
        softmax_minus_target = np.empty(logits.shape, logits.dtype)
        scalars = np.array([1 - label_smoothing, label_smoothing / classes]).astype(logits.dtype)
        kernels("loss").cross_entropy_rows(rows, labels.reshape(samples, positions), scalars, bool(label_smoothing),
                                           losses.reshape(samples, positions), softmax_minus_target.reshape(rows.shape))
        gradient_part = lambda: softmax_minus_target  # noqa: E731  (one pullback per forward: never shared)
    else:
        log_probs = _log_softmax_along(logits, 1)  # (N, C, *)
        picked = _at_labels(log_probs, labels)  # (N, *)
        losses = (1 - label_smoothing) * (0.0 - picked)  # 0 - x rather than -x: a sure prediction costs +0, not -0
        if label_smoothing:
            losses = losses - label_smoothing / classes * log_probs.sum(axis=1)
        losses = losses.astype(input.dtype, copy=False)
        gradient_part = lambda: _softmax_minus_target(log_probs, labels, label_smoothing, classes)  # noqa: E731
    if input.ndim == 1:
        losses = losses[0]
    if reduction == "mean":
        out = np.asarray(losses.mean() if losses.size else np.nan, dtype=input.dtype)
    elif reduction == "sum":
        out = np.asarray(losses.sum(), dtype=input.dtype)
    else:
        out = losses
    return out, gradient_part, labels, input


def _softmax_minus_target(log_probs: np.ndarray, labels: np.ndarray, label_smoothing: float,
                          classes: int) -> np.ndarray:
    """d loss / d logits before the reduction's scale: ``softmax - smoothed one-hot``, per element (a new array)."""
    grad = np.exp(log_probs)
    if grad.ndim == 2:  # one class axis: an index pair, not take/put_along_axis's index arrays (their calls cost more)
        grad[_rows(len(labels)), labels] -= 1 - label_smoothing
    else:
        picked = np.take_along_axis(grad, labels[:, np.newaxis].astype(np.intp), axis=1) - (1 - label_smoothing)
        np.put_along_axis(grad, labels[:, np.newaxis].astype(np.intp), picked, axis=1)
    if label_smoothing:
        grad -= label_smoothing / classes
    return grad


def cross_entropy(input: np.ndarray, target: np.ndarray, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> np.ndarray:
    """Cross-entropy between logits and class indices, through a stable log-softmax.

    Parameters
    ----------
    input : numpy.ndarray
        Unnormalized scores (logits), ``(N, C)``, ``(N, C, *)`` or ``(C,)``.
    target : numpy.ndarray
        Integer class indices in ``[0, C)``, ``(N,)``, ``(N, *)`` or ``()``.
    reduction : {"mean", "sum", "none"}
        Average or sum the per-element losses, or return them.
    label_smoothing : float
        Mix the one-hot target with the uniform distribution by this amount.

    Notes
    -----
    Once Numba has been loaded by another path (a compiled convolution), one
    compiled loop computes the loss and its gradient, adding each row's
    exponentials in class order; before that, or without Numba, NumPy adds
    them pairwise. The two can differ in the last bit of a loss (both within
    the float's rounding of the exact sum).

    Examples
    --------
    >>> logits = np.array([[2., 0., 0.], [0., 1000., 0.]])  # no overflow at 1000
    >>> np.round(cross_entropy(logits, np.array([0, 1]), reduction="none"), 4)
    array([0.2395, 0.    ])
    """
    return _cross_entropy(input, target, reduction, label_smoothing)[0]


@defines_vjp(cross_entropy)
def _cross_entropy_vjp(input, target, reduction="mean", label_smoothing=0.0):
    out, gradient_part, labels, input = _cross_entropy(input, target, reduction, label_smoothing)

    def pullback(grad_output):
        g = _check_grad("cross_entropy", grad_output, out.shape)
        grad = gradient_part()
        if reduction == "none":
            scale = (g if input.ndim != 1 else g[np.newaxis])[:, np.newaxis]
        else:
            count = labels.size if reduction == "mean" else 1
            scale = g / count if count else g
        grad = (grad * scale).astype(input.dtype, copy=False)
        return (grad if input.ndim != 1 else grad[0]), None

    return out, pullback


def _mse_args(input: Any, target: Any, reduction: Any) -> tuple[np.ndarray, np.ndarray]:
    """Input and target as computed with, once checked."""
    input = _float_array("mse_loss", "input", input)
    target = _float_array("mse_loss", "target", target)
    _same_dtype("mse_loss", "target", target, input)
    if target.shape != input.shape:
        fail(ValueError, "mse_loss", "target", f"shape {target.shape}", f"must have input's shape {input.shape}")
    _check_reduction("mse_loss", reduction)
    return input, target


def mse_loss(input: np.ndarray, target: np.ndarray, reduction: str = "mean") -> np.ndarray:
    """Mean (or sum, or each) of the squared differences ``(input - target)²``.

    >>> mse_loss(np.array([1., 2.]), np.array([0., 0.]))
    array(2.5)
    """
    input, target = _mse_args(input, target, reduction)
    squares = (input - target) ** 2
    if reduction == "none":
        return squares
    return np.asarray(squares.mean() if reduction == "mean" else squares.sum(), dtype=input.dtype)


@defines_vjp(mse_loss)
def _mse_loss_vjp(input, target, reduction="mean"):
    input, target = _mse_args(input, target, reduction)
    out = mse_loss(input, target, reduction)

    def pullback(grad_output):
        g = _check_grad("mse_loss", grad_output, out.shape)
        scale = g if reduction == "none" else g / (input.size if reduction == "mean" and input.size else 1)
        grad = (2 * (input - target) * scale).astype(input.dtype, copy=False)
        return grad, -grad

    return out, pullback
