"""Batch normalization's training passes as compiled loops: statistics, normalization and the gradient.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrappers are in :mod:`convolab.nn.functional`
(``batch_norm_with_statistics``). At a small layer's sizes NumPy's version is
about nine whole-array passes and as many temporaries, each costing more in
calls than in arithmetic; here the forward reads the input three times (sum,
squared deviations, and one pass that writes both outputs: two passes had
cost a fifth more on the digits CNN's first layer) and the backward reads
``g`` twice, one channel at a time, so a channel stays in cache between its
passes.

The contract of both kernels:

- ``x``, ``g``, ``normalized`` and ``out`` are ``(N, C, S)`` (the spatial axes
  flattened), C-contiguous, one dtype (float32 or float64); every ``(C,)``
  vector has that dtype too;
- the caller makes every output array; nothing is read from them first;
- sums over a channel are accumulated in float64, in any order (the three
  reductions alone are compiled with ``fastmath={"reassoc"}``, so that they
  vectorize: a strict left-to-right sum is one add per 4 cycles, and was two
  thirds of the forward's time); the NumPy path's ``einsum`` accumulates in the
  input's dtype: the results agree up to that rounding. NaN and inf still
  propagate (no ``nnan``/``ninf`` flag);
  each per-channel scalar is stored in the dtype's ``(C,)`` vector and read
  back, so the elementwise steps round exactly as NumPy's do in that dtype.
  ``inv_std`` is ``1 / sqrt(var + eps)`` evaluated in float64 and rounded once
  (NumPy rounds after each step: at most one unit in the last place apart).

Axis legend: N batch, C channels, S spatial positions (their product).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["batch_norm_forward", "batch_norm_backward", "running_statistics"]


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _channel_sum(x, c):
    """``sum x[:, c, :]`` in float64."""
    total = 0.0
    for n in range(x.shape[0]):
        for s in range(x.shape[2]):
            total += x[n, c, s]
    return total


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _channel_squares(x, c, centre):
    """``sum (x[:, c, :] - centre)**2`` in float64, each deviation rounded in x's dtype first."""
    total = 0.0
    for n in range(x.shape[0]):
        for s in range(x.shape[2]):
            deviation = x[n, c, s] - centre
            total += deviation * deviation
    return total


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _channel_sums_pair(g, y, c):
    """``(sum g[:, c, :], sum g[:, c, :] * y[:, c, :])`` in float64."""
    total, along = 0.0, 0.0
    for n in range(g.shape[0]):
        for s in range(g.shape[2]):
            total += g[n, c, s]
            along += g[n, c, s] * y[n, c, s]
    return total, along


@njit(cache=True, nogil=True)
def batch_norm_forward(x, weight, bias, eps, mean, var, inv_std, normalized, out):
    """Training mode's forward: per channel ``mean``, biased ``var``, ``inv_std``; ``normalized`` is
    ``(x - mean) * inv_std`` and ``out`` is ``normalized * weight + bias``.

    ``weight`` or ``bias`` of length 0 stands for an absent one (``out`` then
    skips that step, as NumPy's path does); ``eps`` is a float.
    """
    batch, channels, positions = x.shape
    count = batch * positions
    for c in range(channels):
        mean[c] = _channel_sum(x, c) / count
        centre = mean[c]  # in x's dtype, as NumPy's mean
        var[c] = _channel_squares(x, c, centre) / count
        inv_std[c] = 1.0 / np.sqrt(np.float64(var[c]) + eps)
        scale = inv_std[c]
        # one pass writes both: each value rounded in the dtype as NumPy's steps round it
        if weight.size and bias.size:
            w, b = weight[c], bias[c]
            for n in range(batch):
                for s in range(positions):
                    value = (x[n, c, s] - centre) * scale
                    normalized[n, c, s] = value
                    out[n, c, s] = value * w + b
        elif weight.size:
            w = weight[c]
            for n in range(batch):
                for s in range(positions):
                    value = (x[n, c, s] - centre) * scale
                    normalized[n, c, s] = value
                    out[n, c, s] = value * w
        elif bias.size:
            b = bias[c]
            for n in range(batch):
                for s in range(positions):
                    value = (x[n, c, s] - centre) * scale
                    normalized[n, c, s] = value
                    out[n, c, s] = value + b
        else:
            for n in range(batch):
                for s in range(positions):
                    normalized[n, c, s] = (x[n, c, s] - centre) * scale


@njit(cache=True, nogil=True)
def batch_norm_backward(g, normalized, weight, inv_std, grad_weight, grad_bias, mean_grad, mean_grad_x,
                        grad_input):
    """Training mode's pullback: ``grad_bias = sum g``, ``grad_weight = sum g * normalized`` per channel, and

        grad_input = (g * weight - mean(g * weight) - normalized * mean(g * weight * normalized)) * inv_std

    (removing the mean and the component along ``normalized`` is what differentiating the batch's
    mean and variance adds). An absent weight comes as ones (``g * 1`` is ``g``, bit for bit);
    ``mean_grad`` and ``mean_grad_x`` are scratch ``(C,)`` vectors for the two means.
    """
    batch, channels, positions = g.shape
    count = batch * positions
    for c in range(channels):
        total, along = _channel_sums_pair(g, normalized, c)
        grad_bias[c] = total
        grad_weight[c] = along
        mean_grad[c] = weight[c] * total / count
        mean_grad_x[c] = weight[c] * along / count
        w, shift, slope, scale = weight[c], mean_grad[c], mean_grad_x[c], inv_std[c]
        for n in range(batch):
            for s in range(positions):
                grad_input[n, c, s] = (g[n, c, s] * w - shift - normalized[n, c, s] * slope) * scale


@njit(cache=True, nogil=True)
def running_statistics(running_mean, running_var, mean, var, scalars, new_mean, new_var):
    """The layer's running averages after a training batch, into the new ``(C,)`` vectors::

        new_mean = keep * running_mean + factor * mean
        new_var = keep * running_var + factor * (var * bessel)     (the unbiased batch variance)

    with ``(keep, factor, bessel) = scalars`` in the vectors' dtype, each step rounded there as NumPy's
    whole-array steps with Python floats are (:meth:`convolab.nn.layers._BatchNorm._update_running_statistics`):
    the same bits, in one call where NumPy made eight.
    """
    keep, factor, bessel = scalars[0], scalars[1], scalars[2]
    for c in range(mean.size):
        new_mean[c] = keep * running_mean[c] + factor * mean[c]
        new_var[c] = keep * running_var[c] + factor * (var[c] * bessel)
