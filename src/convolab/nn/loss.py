"""Losses as modules: call with ``(input, target)``, then ``backward()`` gives d loss / d input."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._vjp import vjp
from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


class _Loss(Module):
    def _remember(self, op: Any, input: np.ndarray, target: np.ndarray, **params: Any) -> np.ndarray:
        loss, pullback = vjp(op, input, target, **params)
        self._save_for_backward(pullback=pullback, loss_shape=np.shape(loss))
        return loss

    def backward(self, grad_output: Any = None) -> np.ndarray:
        """The gradient of the loss with respect to the input; ``grad_output`` defaults to 1.

        Once per forward, as every module's backward.
        """
        saved = self._saved_for_backward()
        if grad_output is None:
            grad_output = np.ones(saved["loss_shape"])
        grad_input = saved["pullback"](grad_output)[0]
        self._release_saved()
        return grad_input


class CrossEntropyLoss(_Loss):
    """Cross-entropy from logits and class indices (:func:`convolab.nn.functional.cross_entropy`).

    Shape
    -----
    input ``(N, C)`` or ``(N, C, *)``, target ``(N,)`` or ``(N, *)`` integers;
    a 0-d loss (``reduction="none"``: shaped like target).

    Examples
    --------
    >>> import numpy as np
    >>> loss_fn = CrossEntropyLoss()
    >>> loss = loss_fn(np.array([[0., 0.], [0., 0.]]), np.array([0, 1]))
    >>> float(loss.round(4)), loss_fn.backward()
    (0.6931, array([[-0.25,  0.25],
           [ 0.25, -0.25]]))
    """

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        self.reduction, self.label_smoothing = reduction, label_smoothing

    def forward(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._remember(F.cross_entropy, input, target, reduction=self.reduction,
                              label_smoothing=self.label_smoothing)


class MSELoss(_Loss):
    """Mean squared error (:func:`convolab.nn.functional.mse_loss`).

    Examples
    --------
    >>> import numpy as np
    >>> loss_fn = MSELoss()
    >>> loss_fn(np.array([1., 3.]), np.array([0., 0.])), loss_fn.backward()
    (array(5.), array([1., 3.]))
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self._remember(F.mse_loss, input, target, reduction=self.reduction)
