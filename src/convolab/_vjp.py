"""Vector-Jacobian products for the functional ops, and a finite-difference check.

Every differentiable op registers its rule beside its own definition with
:func:`defines_vjp`. A rule takes the op's array arguments positionally and its
parameters as keywords, and returns ``(output, pullback)``; ``pullback(grad_output)``
returns one gradient per array argument (``None`` where that argument was ``None``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["defines_vjp", "vjp", "gradcheck", "GradcheckError"]

Pullback = Callable[[np.ndarray], tuple[Any, ...]]
Rule = Callable[..., tuple[Any, Pullback]]

_RULES: dict[Callable[..., Any], Rule] = {}


def defines_vjp(op: Callable[..., Any]) -> Callable[[Rule], Rule]:
    """Decorator: register ``rule`` as the vector-Jacobian product of ``op``."""

    def register(rule: Rule) -> Rule:
        _RULES[op] = rule
        return rule

    return register


def _name(op: Any) -> str:
    return getattr(op, "__name__", repr(op))


def vjp(op: Callable[..., Any], *arrays: Any, **params: Any) -> tuple[Any, Pullback]:
    """Run ``op`` forward and return ``(output, pullback)``.

    Parameters
    ----------
    op : callable
        A differentiable convolab op, e.g. ``convolab.conv2d``.
    *arrays : numpy.ndarray or None
        The op's array arguments, in its order (for a convolution: input,
        weight, and optionally bias).
    **params
        Its other arguments, by keyword (``stride=2``, ``kernel_size=3``...).

    Returns
    -------
    output : numpy.ndarray
        ``op(*arrays, **params)``.
    pullback : callable
        ``pullback(grad_output)`` returns one gradient per array argument, each
        shaped like that argument; ``None`` for an argument given as ``None``
        (a bias), one per array passed. The convolutions' (``conv``,
        ``conv1d``...) also take ``input_grad=False``: the input's gradient is
        then not computed, and None in its place (a network's first layer).

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> x, w = np.arange(9.).reshape(1, 1, 3, 3), np.ones((1, 1, 2, 2))
    >>> out, pullback = cl.vjp(cl.conv2d, x, w)
    >>> grad_input, grad_weight = pullback(np.ones_like(out))
    >>> grad_input[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    rule = _RULES.get(op)
    if rule is None:
        known = ", ".join(sorted(_name(f) for f in _RULES))
        raise ValueError(f"vjp: op {_name(op)} has no registered pullback; differentiable ops are: {known}")
    output, pullback = rule(*arrays, **params)

    def pullback_for_given_arrays(grad_output: np.ndarray, **options: Any) -> tuple[Any, ...]:
        # Rules return a gradient for every array parameter of the op (a bias
        # that was left out gets None); hand back one per array actually given.
        # ``options`` go to the rule's pullback (the convolutions' input_grad=False, for convolab.nn).
        return tuple(pullback(grad_output, **options))[: len(arrays)]

    return output, pullback_for_given_arrays


class GradcheckError(AssertionError):
    """An analytic gradient disagreed with finite differences."""


def _inner(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.vdot(np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()))


def gradcheck(
    op: Callable[..., Any],
    *arrays: Any,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    max_elements: int = 2048,
    directions: int = 8,
    seed: int = 0,
    **params: Any,
) -> bool:
    """Check ``vjp(op, ...)``'s pullback against central finite differences in float64.

    With a random cotangent ``v``, the scalar ``f(x) = <op(x), v>`` has gradient
    ``pullback(v)``. For each array of at most ``max_elements`` elements every
    partial derivative is compared; larger arrays are probed along ``directions``
    random unit directions ``u`` (``<pullback(v), u>`` against the difference quotient).
    Integer arrays (indices) are held constant and not checked.

    Returns
    -------
    bool
        True when every comparison is within ``atol + rtol * |numeric|``.

    Raises
    ------
    GradcheckError
        Naming the argument, the worst element (or direction), its index and
        both values.

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> rng = np.random.default_rng(0)
    >>> cl.gradcheck(cl.conv2d, rng.normal(size=(1, 2, 5, 5)), rng.normal(size=(3, 2, 3, 3)), stride=2, padding=1)
    True
    """
    rng = np.random.default_rng(seed)
    # Integer arrays (max_unpool's indices) are constants, not variables: passed as they are, never probed.
    arrays64 = [None if a is None or np.asarray(a).dtype.kind in "iub" else np.asarray(a, dtype=np.float64)
                for a in arrays]
    arrays64 = [a if a64 is None else a64 for a, a64 in zip(arrays, arrays64)]
    variables = [a is not None and np.asarray(a).dtype.kind not in "iub" for a in arrays]
    output, pullback = vjp(op, *arrays64, **params)
    cotangent = rng.standard_normal(np.shape(output))
    analytic = pullback(cotangent)

    def objective(position: int, replacement: np.ndarray) -> float:
        trial = list(arrays64)
        trial[position] = replacement
        return _inner(op(*trial, **params), cotangent)

    for position, (array, gradient) in enumerate(zip(arrays64, analytic)):
        if not variables[position]:
            continue
        if gradient is None or np.shape(gradient) != array.shape:
            raise GradcheckError(
                f"gradcheck: {_name(op)} argument {position}: pullback returned "
                f"{'None' if gradient is None else f'shape {np.shape(gradient)}'} for an array of shape {array.shape}"
            )
        if array.size <= max_elements:
            probes = [(np.unravel_index(flat, array.shape), None) for flat in range(array.size)]
        else:
            probes = []
            for _ in range(directions):
                direction = rng.standard_normal(array.shape)
                probes.append((None, direction / np.linalg.norm(direction)))
        worst: tuple[float, Any, float, float] | None = None
        for index, direction in probes:
            if direction is None:
                step = np.zeros_like(array)
                step[index] = eps
                claimed = float(np.asarray(gradient, dtype=np.float64)[index])
            else:
                step = eps * direction
                claimed = _inner(gradient, direction)
            numeric = (objective(position, array + step) - objective(position, array - step)) / (2 * eps)
            excess = abs(claimed - numeric) - (atol + rtol * abs(numeric))
            if excess > 0 and (worst is None or excess > worst[0]):
                worst = (excess, index if index is not None else "a random direction", claimed, numeric)
        if worst is not None:
            _, where, claimed, numeric = worst
            where_text = tuple(int(i) for i in where) if isinstance(where, tuple) else where
            raise GradcheckError(
                f"gradcheck: {_name(op)} argument {position} disagrees with finite differences; "
                f"worst at index {where_text}: pullback gives {claimed!r}, finite differences give {numeric!r}"
            )
    return True
