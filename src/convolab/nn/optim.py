"""Optimizers and learning-rate schedules, with PyTorch's update rules.

Each optimizer holds ``param_groups`` (one dict of hyper-parameters with its
``"params"`` list, as PyTorch does) so a schedule can change ``"lr"`` between
steps; ``step()`` updates every parameter's ``.data`` in place from its
``.grad`` (parameters whose ``.grad`` is None are skipped).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .._errors import fail
from ..algorithms._compiled import kernels, numba_missing
from ..spec import check_flag
from .module import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR"]


def _number(op: str, name: str, value: Any, low: float = 0.0, high: float = math.inf,
            low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(TypeError, op, name, repr(value), "must be a real number")
    if not (low < value if low_open else low <= value) or not value <= high:
        interval = f"{'(' if low_open else '['}{low}, {high}{']' if high != math.inf else ')'}"
        fail(ValueError, op, name, repr(value), f"must be in {interval}")
    return float(value)


class Optimizer:
    """Base: checks the parameters, holds ``param_groups`` and per-parameter ``state``."""

    def __init__(self, params: Iterable[Parameter], defaults: dict[str, Any]):
        op = type(self).__name__
        params = list(params)
        if not params:
            fail(ValueError, op, "params", "an empty list", "must hold at least one Parameter")
        for index, parameter in enumerate(params):
            if not isinstance(parameter, Parameter):
                fail(TypeError, op, f"params[{index}]", type(parameter).__name__,
                     "must be a convolab.nn.Parameter (pass module.parameters())")
        self.param_groups = [dict(defaults, params=params)]
        self.state: dict[int, dict[str, Any]] = {}

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``.grad = None``)."""
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.grad = None

    def step(self) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    self._update(parameter, self.state.setdefault(id(parameter), {}), group)

    def _update(self, parameter: Parameter, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, weight decay and Nesterov momentum.

    With ``g = grad + weight_decay * p``: the first step sets ``b = g``, later
    ones ``b = momentum * b + (1 - dampening) * g``; the step direction is
    ``g + momentum * b`` (Nesterov) or ``b``, and ``p -= lr * direction``.

    Examples
    --------
    >>> import numpy as np
    >>> p = Parameter(np.array([1.0])); p.grad = np.array([0.5])
    >>> SGD([p], lr=0.1).step(); p.data
    array([0.95])
    """

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        op = "SGD"
        nesterov = check_flag(nesterov, "nesterov", op)
        defaults = dict(lr=_number(op, "lr", lr), momentum=_number(op, "momentum", momentum),
                        dampening=_number(op, "dampening", dampening),
                        weight_decay=_number(op, "weight_decay", weight_decay), nesterov=nesterov)
        if nesterov and (momentum <= 0 or dampening != 0):
            fail(ValueError, op, "nesterov", "True", f"needs momentum > 0 and dampening = 0 (momentum={momentum}, "
                 f"dampening={dampening})")
        super().__init__(params, defaults)

    def _update(self, parameter: Parameter, state: dict[str, Any], group: dict[str, Any]) -> None:
        grad = parameter.grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * parameter.data
        if group["momentum"]:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = np.array(grad, dtype=parameter.dtype, copy=True)
            else:
                buffer *= group["momentum"]
                buffer += (1 - group["dampening"]) * grad
            grad = grad + group["momentum"] * buffer if group["nesterov"] else buffer
        parameter.data -= (group["lr"] * grad).astype(parameter.dtype, copy=False)


class Adam(Optimizer):
    """Adam: bias-corrected running means of the gradient and its square.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g²``,
    ``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``; ``weight_decay``
    adds ``weight_decay * p`` to ``g`` (L2), as PyTorch's Adam does.

    Examples
    --------
    >>> import numpy as np
    >>> p = Parameter(np.array([1.0])); p.grad = np.array([0.5])
    >>> Adam([p], lr=0.1).step(); p.data.round(6)
    array([0.9])
    """

    decoupled = False

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        op = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            fail(TypeError, op, "betas", repr(betas), "must be a pair (beta1, beta2)")
        defaults = dict(lr=_number(op, "lr", lr), betas=(_number(op, "betas[0]", betas[0], high=1.0),
                                                          _number(op, "betas[1]", betas[1], high=1.0)),
                        eps=_number(op, "eps", eps), weight_decay=_number(op, "weight_decay", weight_decay))
        for index, beta in enumerate(defaults["betas"]):
            if beta >= 1:
                fail(ValueError, op, f"betas[{index}]", repr(beta), "must be < 1")
        super().__init__(params, defaults)

    def _update(self, parameter: Parameter, state: dict[str, Any], group: dict[str, Any]) -> None:
        grad = parameter.grad
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(parameter.data), exp_avg_sq=np.zeros_like(parameter.data),
                         scratch=np.empty_like(parameter.data))
        if _compiled_adam_runs(parameter.data, grad, state):
            step = state["step"] = state["step"] + 1
            flat = state["flat_views"]  # the 1-d views of the arrays checked once (_compiled_adam_runs)
            scalars = self._step_scalars.get((id(group), step, flat[0].dtype))
            if scalars is None:
                scalars = self._scalars(group, step, flat[0].dtype)
            update = self._adam_update
            if update is None:
                update = self._adam_update = kernels("optim").adam_update
            update(flat[0], grad.reshape(-1), flat[1], flat[2], scalars)
            return
        beta1, beta2 = group["betas"]
        if group["weight_decay"]:
            if self.decoupled:  # AdamW: shrink the weights directly, outside the adaptive scaling
                parameter.data *= 1 - group["lr"] * group["weight_decay"]
            else:
                grad = grad + group["weight_decay"] * parameter.data
        state["step"] += 1
        exp_avg, exp_avg_sq, scratch = state["exp_avg"], state["exp_avg_sq"], state["scratch"]
        # In place through one scratch array: small layers make the per-array temporaries cost more than the math.
        exp_avg *= beta1
        np.multiply(grad, 1 - beta1, out=scratch)
        exp_avg += scratch
        exp_avg_sq *= beta2
        np.multiply(grad, grad, out=scratch)
        scratch *= 1 - beta2
        exp_avg_sq += scratch
        step_size = group["lr"] / (1 - beta1 ** state["step"])
        np.sqrt(exp_avg_sq, out=scratch)
        scratch *= 1 / math.sqrt(1 - beta2 ** state["step"])
        scratch += group["eps"]
        np.divide(exp_avg, scratch, out=scratch)
        scratch *= step_size
        parameter.data -= scratch


    def step(self) -> None:
        # This step's scalars, shared by its parameters; the kernel looked up once a step, not once a parameter
        # (a small network's ten parameters paid more for these lookups than for their update).
        self._step_scalars: dict[tuple[int, int, np.dtype], np.ndarray] = {}
        self._adam_update = None
        super().step()

    def _scalars(self, group: dict[str, Any], step: int, dtype: np.dtype) -> np.ndarray:
        """The compiled update's scalars (:func:`convolab.algorithms._kernels_optim.adam_update`) for ``group``
        at ``step`` in ``dtype``: the same steps as NumPy's below, each scalar in the parameter's dtype, as NumPy
        casts a Python float. Made once per step for all the group's parameters of that dtype (a small network's
        ten parameters paid more for making them than for their update)."""
        key = (id(group), step, dtype)
        scalars = self._step_scalars.get(key)
        if scalars is None:
            beta1, beta2 = group["betas"]
            decay = 1 - group["lr"] * group["weight_decay"] if self.decoupled and group["weight_decay"] else 1.0
            scalars = self._step_scalars[key] = np.array(
                [decay, 0.0 if self.decoupled else group["weight_decay"], beta1, 1 - beta1, beta2, 1 - beta2,
                 1 / math.sqrt(1 - beta2 ** step), group["eps"], group["lr"] / (1 - beta1 ** step)]).astype(dtype)
        return scalars


def _compiled_adam_runs(data: np.ndarray, grad: np.ndarray, state: dict[str, Any]) -> bool:
    """Whether :func:`convolab.algorithms._kernels_optim.adam_update` can take this parameter: float32 or
    float64, every array of its dtype and shape, C-contiguous, the written ones writeable (Numba importable)."""
    dtype, shape = data.dtype, data.shape
    if dtype != np.float32 and dtype != np.float64:
        return False
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    checked = state.get("checked_arrays")
    # once per set of arrays (a restored checkpoint may replace the moments and keep the data): layout and views
    if checked is None or checked[0] is not data or checked[1] is not exp_avg or checked[2] is not exp_avg_sq:
        for array in (data, exp_avg, exp_avg_sq):  # a loop, not any(generator): it runs per parameter
            if array.dtype != dtype or array.shape != shape or not array.flags.c_contiguous:
                return False
        state["checked_arrays"] = (data, exp_avg, exp_avg_sq)
        state["flat_views"] = (data.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1))  # (values,) each
    if not (data.flags.writeable and exp_avg.flags.writeable and exp_avg_sq.flags.writeable):
        return False  # every step: writeable is a flag a caller may clear
    if grad.dtype != dtype or grad.shape != shape or not grad.flags.c_contiguous:
        return False  # every step: a new gradient
    return numba_missing() is None


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam step.

    Examples
    --------
    >>> import numpy as np
    >>> p = Parameter(np.array([1.0])); p.grad = np.array([0.0])
    >>> AdamW([p], lr=0.1, weight_decay=0.5).step(); p.data
    array([0.95])
    """

    decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class _Schedule:
    """A learning-rate schedule: ``step()`` once per epoch sets every group's ``"lr"``."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            fail(TypeError, type(self).__name__, "optimizer", type(optimizer).__name__, "must be an Optimizer")
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = 0

    def lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(base_lr, self.last_epoch)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


class StepLR(_Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Examples
    --------
    >>> import numpy as np
    >>> schedule = StepLR(SGD([Parameter(np.zeros(1))], lr=1.0), step_size=2, gamma=0.5)
    >>> [(schedule.step(), schedule.get_last_lr()[0])[1] for _ in range(4)]
    [1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
            fail(ValueError, "StepLR", "step_size", repr(step_size), "must be an int >= 1")
        self.step_size, self.gamma = int(step_size), _number("StepLR", "gamma", gamma)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """Follow half a cosine from the base rate down to ``eta_min`` over ``T_max`` epochs.

    ``lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (the
    closed form of PyTorch's recursion).

    Examples
    --------
    >>> import numpy as np
    >>> schedule = CosineAnnealingLR(SGD([Parameter(np.zeros(1))], lr=1.0), T_max=2)
    >>> [round((schedule.step(), schedule.get_last_lr()[0])[1], 6) for _ in range(2)]
    [0.5, 0.0]
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        if isinstance(T_max, bool) or not isinstance(T_max, (int, np.integer)) or T_max < 1:
            fail(ValueError, "CosineAnnealingLR", "T_max", repr(T_max), "must be an int >= 1")
        self.T_max, self.eta_min = int(T_max), _number("CosineAnnealingLR", "eta_min", eta_min)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
