"""Steps as data: :class:`Step` (the numbers, the formula, the body, the check), :class:`Explanation`.

A step's body is paragraphs and :class:`Show` items naming arrays in its
``data``; the renderers (:mod:`~convolab.show.explain.render`) lay them out,
and nothing here draws or prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._format import strict_json
from .cases import Case

__all__ = ["TOPICS", "DEFAULT_TOPICS", "Show", "Step", "Explanation", "show_arrays", "same"]

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

    def to_dict(self) -> dict[str, Any]:
        return {"show": list(self.keys), "labels": list(self.labels)}


def show_arrays(*pairs: tuple[str, str]) -> Show:
    """``show_arrays(("window", "window"), ("kernel", "the kernel"))``: keys with their labels."""
    return Show(tuple(key for key, _ in pairs), tuple(label for _, label in pairs))


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
        What was checked, with what was found.
    passed : bool
        Whether it held, computed.
    case : str
        The name of the :class:`Case` the step uses.
    data : dict
        The numbers, by name (arrays as NumPy arrays, the convolution matrix
        as a ``scipy.sparse`` matrix; JSON gets nested lists, see :func:`render_json`).
    """

    topic: str
    title: str
    formula: str
    body: tuple[str | Show, ...]
    check: str
    passed: bool
    case: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-able data: arrays as nested lists."""
        return {
            "topic": self.topic,
            "question": TOPICS[self.topic],
            "case": self.case,
            "title": self.title,
            "formula": self.formula,
            "body": [item.to_dict() if isinstance(item, Show) else {"text": item} for item in self.body],
            "check": self.check,
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
