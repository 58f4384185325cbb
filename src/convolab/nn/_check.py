"""Finite-difference check of a whole module: its input gradient and every parameter gradient."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .._errors import fail
from .._vjp import _RULES, gradcheck as gradcheck_op
from .module import Module

__all__ = ["gradcheck"]


def gradcheck(module: Module, input: np.ndarray, *, seed: int = 0, **tolerances: Any) -> bool:
    """Check ``module.backward`` against central finite differences, in float64.

    The module is copied and cast to float64 (the original is untouched); its
    forward becomes a function of ``(input, *parameters)`` whose pullback is
    ``backward`` plus the accumulated parameter gradients, and that function goes
    through :func:`convolab.gradcheck`. Dropout masks are drawn from a generator
    rewound before every evaluation, so each evaluation sees the same mask.

    Parameters
    ----------
    module : Module
        Any layer or network; checked in its current train/eval mode.
    input : numpy.ndarray
        A floating-point input.
    seed : int
        Seeds the cotangent, the probe directions and the dropout masks.
    **tolerances
        ``eps``, ``atol``, ``rtol``, ``max_elements``, ``directions`` for :func:`convolab.gradcheck`.

    Raises
    ------
    convolab.GradcheckError
        Naming the argument (0 is the input, then the parameters in
        ``named_parameters()`` order) and the worst disagreement.

    Examples
    --------
    >>> import numpy as np
    >>> from convolab import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, rng=0), nn.Tanh(), nn.Flatten(), nn.Linear(18, 2, rng=1))
    >>> nn.gradcheck(net, np.random.default_rng(0).normal(size=(2, 1, 3, 3)))
    True
    """
    if not isinstance(module, Module):
        fail(TypeError, "gradcheck", "module", type(module).__name__, "must be a convolab.nn.Module")
    if not isinstance(input, np.ndarray) or input.dtype.kind != "f":
        fail(TypeError, "gradcheck", "input", repr(getattr(input, "dtype", type(input).__name__)),
             "must be a floating-point numpy.ndarray")
    checked = copy.deepcopy(module)
    for _, parameter in checked.named_parameters():
        parameter.data = parameter.data.astype(np.float64)
    for sub in checked.modules():
        for name, array in list(sub._buffers.items()):
            if array.dtype.kind == "f":
                sub._set_buffer(name, array.astype(np.float64))
    rewinds = []
    for sub in checked.modules():
        if hasattr(sub, "rng") and "p" in sub.__dict__:  # a Dropout: give it its own rewindable generator
            sub.rng = np.random.default_rng(seed)
            rewinds.append((sub.rng, sub.rng.bit_generator.state))
    parameters = checked.parameters()

    def run(x: np.ndarray, *values: np.ndarray) -> np.ndarray:
        for parameter, value in zip(parameters, values):
            parameter.data = value
        for generator, state in rewinds:
            generator.bit_generator.state = state
        return checked(x)

    def rule(x: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, Any]:
        output = run(x, *values)

        def pullback(grad_output: np.ndarray) -> tuple[Any, ...]:
            checked.zero_grad()
            grad_input = checked.backward(grad_output)
            return (grad_input, *(p.grad if p.grad is not None else np.zeros_like(p.data) for p in parameters))

        return output, pullback

    run.__name__ = f"{type(module).__name__}.forward"
    _RULES[run] = rule
    try:
        return gradcheck_op(run, input.astype(np.float64), *(p.data for p in parameters), seed=seed, **tolerances)
    finally:
        del _RULES[run]
