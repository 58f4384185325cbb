"""Steps as data: :class:`Step` (the numbers, the formula, the body, the check), :class:`Explanation`.

A step's body is paragraphs and :class:`Show` items naming arrays in its
``data``; the renderers (:mod:`~convolab.show.explain.render`) lay them out,
and nothing here draws or prints. A paragraph wrapped in :class:`Once` is said
the first time its key comes up, and one wrapped in :class:`Detail` only in the
long form (``--verbose``).

Every formula and check line a step prints is a :class:`Claim`: expressions
that NumPy evaluates, over the step's ``data`` and :data:`NAMESPACE`, to the
value printed after the last ``=``. :func:`claim` evaluates them when the
step is built, so ``passed`` covers them and the value shown is the one computed.

>>> c = claim({"window": np.array([[1, 2], [4, 5]]), "kernel": np.array([[9, 8], [7, 6]])},
...           "(window * kernel).sum()", "window.ravel() @ kernel.ravel()")
>>> c.text(), c.holds
('(window * kernel).sum() = window.ravel() @ kernel.ravel() = 83', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.signal

from ...functional import conv2d
from ...grad import conv2d_input, conv2d_weight
from ...transposed import conv_transpose2d
from .._format import number, strict_json
from .cases import Case

__all__ = ["TOPICS", "DEFAULT_TOPICS", "NAMESPACE", "Show", "Once", "Detail", "Claim", "Step", "Explanation",
           "show_arrays", "claim", "same"]

#: Every topic and the question it answers, in the order they are walked through.
TOPICS: dict[str, str] = {
    "dot": "Is one step of a convolution a dot product, or a Hadamard product and a sum?",
    "im2col": "How is a whole convolution one matrix product?",
    "backprop": "Does backpropagation need the filter rotated by 180 degrees?",
    "flip": "Why does PyTorch's 'convolution' differ from the textbook's and SciPy's?",
    "shape": "How big is the output, and which input rows and columns are never read?",
    "slide": "The kernel sliding over the input, one output element at a time",
}

#: What ``convolab explain`` walks through when no topic is named: the four questions and the output size.
DEFAULT_TOPICS = ("dot", "im2col", "backprop", "flip", "shape")


# -- steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Show:
    """A body item: the arrays ``data[key]`` for each key, side by side, under their labels."""

    keys: tuple[str, ...]
    labels: tuple[str, ...]
    #: Per key, the key of a boolean array in ``data`` whose set cells are drawn in brackets (None: none).
    marks: tuple[str | None, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"show": list(self.keys), "labels": list(self.labels)}
        if any(self.marks):
            shown["marks"] = list(self.marks)
        return shown


def show_arrays(*pairs: tuple[str, str], marks: dict[str, str] | None = None) -> Show:
    """``show_arrays(("window", "window"), ("kernel", "the kernel"))``: keys with their labels.

    ``marks`` maps a key to the key of a boolean mask whose cells are drawn in brackets.
    """
    marks = marks or {}
    return Show(tuple(key for key, _ in pairs), tuple(label for _, label in pairs),
                tuple(marks.get(key) for key, _ in pairs) if marks else ())


@dataclass(frozen=True)
class Once:
    """A paragraph (or :class:`Show`) said once: printed the first time ``key`` comes up (every time with --verbose)."""

    key: str
    text: str | Show

    def to_dict(self) -> dict[str, Any]:
        inner = self.text.to_dict() if isinstance(self.text, Show) else {"text": self.text}
        return {**inner, "once": self.key}


@dataclass(frozen=True)
class Detail:
    """A body item for the long form only (``--verbose``): a paragraph or a :class:`Show`."""

    item: str | Show

    def to_dict(self) -> dict[str, Any]:
        inner = self.item.to_dict() if isinstance(self.item, Show) else {"text": self.item}
        return {**inner, "detail": True}


#: The names a claim may use besides the step's data (which comes first and may shadow them).
NAMESPACE: dict[str, Any] = {"np": np, "signal": scipy.signal, "conv2d": conv2d,
                             "conv_transpose2d": conv_transpose2d, "conv2d_input": conv2d_input,
                             "conv2d_weight": conv2d_weight}

#: Arrays up to this many elements are printed after a claim's last '='; larger ones are only compared.
SHOWN_VALUE_SIZE = 9


@dataclass(frozen=True)
class Claim:
    """A statement ``side = side = ... = value``: each side a Python expression over the data and :data:`NAMESPACE`.

    ``value`` is the first side's value, computed; ``holds`` whether every
    side equals it (:func:`same`). The value is printed when it is a number,
    a shape or a short array; otherwise the sides are compared and printed
    as ``a = b``.
    """

    sides: tuple[str, ...]
    value: Any
    holds: bool

    def text(self) -> str:
        shown = value_text(self.value)
        return " = ".join(self.sides + ((shown,) if shown is not None else ()))

    def to_dict(self) -> dict[str, Any]:
        return {"sides": list(self.sides), "value": strict_json(self.value), "holds": self.holds,
                "text": self.text()}


def value_text(value: Any) -> str | None:
    """A claim's value as printed: a number, a tuple (a shape), a short flat list; None when too large to print."""
    if isinstance(value, tuple):
        return "(" + ", ".join(number(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    a = np.asarray(value)
    if a.ndim == 0:
        return number(a)
    if a.ndim == 1 and a.size <= SHOWN_VALUE_SIZE:
        return "[" + ", ".join(number(v) for v in a) + "]"
    return None


def evaluate(expression: str, data: dict[str, Any]) -> Any:
    """The value of ``expression`` with the step's data (first) and :data:`NAMESPACE` as its names."""
    return eval(expression, {"__builtins__": __builtins__, **NAMESPACE, **data})  # noqa: S307 - our own text


def claim(data: dict[str, Any], *sides: str) -> Claim:
    """Evaluate every side over ``data``; the claim holds when all equal the first."""
    values = [evaluate(side, data) for side in sides]
    first = values[0]
    holds = all(same(first, other) for other in values[1:])
    return Claim(tuple(sides), first, holds)


@dataclass(frozen=True)
class Step:
    """One step of an explanation: what it shows, the formula, the numbers, the check.

    Attributes
    ----------
    topic : str
        A key of :data:`TOPICS`.
    title : str
        What the step shows, in a line.
    formula : str
        The formula behind the numbers.
    body : tuple of str and Show
        Paragraphs, and :class:`Show` items naming arrays in ``data``.
    check : str
        What was checked, in words (the equations are in ``claims``).
    passed : bool
        Whether it held, computed (every claim included).
    case : str
        The name of the :class:`Case` the step uses.
    data : dict
        The numbers, by name (arrays as NumPy arrays, the convolution matrix
        as a ``scipy.sparse`` matrix; JSON gets nested lists, see :func:`render_json`).
    claims : tuple of Claim
        The check's equations, each evaluated over ``data``; printed under the check line.
    """

    topic: str
    title: str
    formula: str
    body: tuple[str | Show | Once | Detail, ...]
    check: str
    passed: bool
    case: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-able data: arrays as nested lists."""
        return {
            "topic": self.topic,
            "question": TOPICS[self.topic],
            "case": self.case,
            "title": self.title,
            "formula": self.formula,
            "body": [{"text": item} if isinstance(item, str) else item.to_dict() for item in self.body],
            "check": self.check,
            "claims": [c.to_dict() for c in self.claims],
            "passed": bool(self.passed),
            "data": {key: strict_json(value) for key, value in self.data.items()},
        }


@dataclass(frozen=True)
class Explanation:
    """The cases used and the steps, in order; ``passed`` when every step's check held."""

    title: str
    cases: tuple[Case, ...]
    steps: tuple[Step, ...]

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "cases": [case.to_dict() for case in self.cases],
            "steps": [step.to_dict() for step in self.steps],
        }


def same(a: Any, b: Any) -> bool:
    """Equal: exactly for integers, to float64 rounding for floats."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        return bool(np.array_equal(a, b))
    scale = max(1.0, float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(b), initial=0)))
    return bool(np.allclose(a, b, rtol=0, atol=1e-9 * scale))
