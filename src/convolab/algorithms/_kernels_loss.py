"""Cross-entropy's forward and the gradient's softmax part, as one compiled loop.

This module imports Numba at its top, so only :mod:`._compiled` imports it, on
first use; the wrapper is :func:`convolab.nn.functional._cross_entropy`. NumPy's
version is a dozen whole-array calls (max, subtract, exp, sum, log, the label
pick, the smoothing terms; the gradient's exp and the label's subtraction) on a
few hundred values: at a small network's sizes the calls cost several times the
arithmetic (70-100 us a training step of the digits CNN, against a few here).

The contract: ``logits`` ``(N, C, S)`` (the positions of ``(N, C, *)``
flattened, 1 for ``(N, C)``) and the outputs C-contiguous, one dtype (float32
or float64); ``labels`` ``(N, S)`` integers already checked to lie in ``[0, C)``; ``scalars`` an array of that dtype, ``(1 - smoothing, smoothing / C)``,
so that each step rounds as NumPy's does with a Python float in that dtype.
Each row's maximum is taken first (a NaN anywhere in the row makes it NaN, as
NumPy's ``max``), and its exponentials summed in the row's order: NumPy sums
the same terms pairwise, so a row's logarithm may differ in the last place.
No ``fastmath``: it may assume there is no NaN or infinity.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["cross_entropy_rows"]


@njit(cache=True, nogil=True, error_model="numpy")
def cross_entropy_rows(logits, labels, scalars, smoothed, losses, softmax_minus_target):
    """Per sample ``n`` and position ``s``, with ``log_p = x - max - log(sum(exp(x - max)))`` over the classes
    of ``x = logits[n, :, s]``::

        losses[n, s] = keep * (0 - log_p[label]) - share * sum(log_p)     (the last term only if ``smoothed``)
        softmax_minus_target[n, :, s] = exp(log_p) - keep * onehot(label) - share

    where ``(keep, share) = scalars`` and ``label = labels[n, s]``: the loss
    against the smoothed target, and its gradient with respect to the logits
    (before the reduction's scale). ``logits`` ``(N, C, S)``, ``labels`` and
    ``losses`` ``(N, S)``, ``softmax_minus_target`` ``(N, C, S)``.
    """
    samples, classes, positions = logits.shape
    keep, share = scalars[0], scalars[1]
    zero = logits.dtype.type(0)
    log_p = np.empty(classes, logits.dtype)
    for n in range(samples):
        for s in range(positions):
            peak = logits[n, 0, s]
            for c in range(1, classes):
                value = logits[n, c, s]
                if value > peak or value != value:  # a NaN wins and stays
                    peak = value
            total = zero
            for c in range(classes):
                log_p[c] = logits[n, c, s] - peak
                total += np.exp(log_p[c])
            log_total = np.log(total)
            row_sum = zero
            for c in range(classes):
                log_p[c] -= log_total
                row_sum += log_p[c]
                softmax_minus_target[n, c, s] = np.exp(log_p[c]) - share
            label = labels[n, s]
            softmax_minus_target[n, label, s] = np.exp(log_p[label]) - keep - share
            loss = keep * (zero - log_p[label])
            losses[n, s] = loss - share * row_sum if smoothed else loss
