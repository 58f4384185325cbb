"""Explanations as data: a list of steps with their numbers, rendered separately.

:func:`explain` answers the questions learners ask about convolution, on the
standard examples or on any case given to it, as an :class:`Explanation`: the
cases it used and a list of :class:`Step`. Each step carries

- the numbers it shows (``data``, arrays by name),
- the formula behind them,
- a body that says how to lay them out (paragraphs and :class:`Show` items
  naming arrays in ``data``),
- a check that was actually run: ``passed`` is computed, never assumed.

Nothing here draws or prints. The renderers (:mod:`.render`) turn the same
steps into plain text, Markdown, JSON or (when a terminal asks for it) rich
text, and :mod:`convolab.show.pictures` turns them into GIFs and PNGs; the
tests read the same steps. So what is shown is what was computed and checked.

The topics (:data:`TOPICS`):

- ``dot``: one output element is a Hadamard product and a sum, which is the
  dot product of the two arrays laid flat (also for a 3-D, multi-channel window);
- ``im2col``: the whole convolution is one matrix product (the unrolled input
  times the filter matrix), or, the other way round, one sparse matrix times
  the flattened input;
- ``backprop``: the input gradient three ways (scatter-add, full correlation
  with the filter rotated 180°, ``conv_transpose``), what goes wrong without
  the rotation, why the full correlation pads and then crops, and the weight
  gradient (a correlation of the input with grad_output);
- ``flip``: deep learning's "convolution" is cross-correlation; the textbook's
  and SciPy's reverses the kernel;
- ``shape``: the output-size arithmetic (the course formula, ``same`` at a
  stride), which input rows and columns no window ever reads, and a transposed
  convolution's output size;
- ``slide``: the kernel sliding over the padded input, one output element per
  step (the frames of ``convolab animate``), also for transposed convolution.

Each topic's steps are built in a module of its name; :mod:`.cases` holds
:class:`Case`, the standard examples and the size limits, :mod:`.steps` the
step data and :data:`TOPICS`, :mod:`.render` the renderers. This module picks
the steps for the topics asked.

Examples
--------
>>> explanation = explain(topics=["dot"])
>>> [step.passed for step in explanation.steps]
[True, True]
>>> int(explanation.steps[0].data["dot"])
83
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._format import MAX_DENSE_MATRIX_CELLS
from .backprop import backprop_steps, weight_gradient_step
from .cases import (MAX_CANVAS_CELLS, MAX_CELLS, MAX_PRODUCTS, MAX_SLIDE_STEPS, Case, example_grad_output,
                    standard_cases)
from .dot import dot_step
from .flip import flip_step
from .im2col import conv_matrix_step, im2col_step
from .render import render_json, render_markdown, render_rich, render_text
from .shape import shape_step, transposed_shape_step
from .slide import ROLE_NAMES, slide_steps
from .steps import DEFAULT_TOPICS, TOPICS, Explanation, Show, Step

__all__ = [
    "TOPICS",
    "DEFAULT_TOPICS",
    "MAX_CELLS",
    "MAX_CANVAS_CELLS",
    "MAX_PRODUCTS",
    "MAX_SLIDE_STEPS",
    "MAX_DENSE_MATRIX_CELLS",
    "ROLE_NAMES",
    "Case",
    "Show",
    "Step",
    "Explanation",
    "standard_cases",
    "explain",
    "worked_examples",
    "slide_steps",
    "render_text",
    "render_markdown",
    "render_json",
    "render_rich",
]


def _topic_steps(topic: str, case: Case, at: tuple[int, int, int]) -> list[Step]:
    if topic == "dot":
        return [dot_step(case, at)]
    if topic == "im2col":
        return [im2col_step(case), conv_matrix_step(case)]
    if topic == "backprop":
        grad_output = example_grad_output(case)
        return [*backprop_steps(case, grad_output), weight_gradient_step(case, grad_output)]
    if topic == "flip":
        return [flip_step(case)]
    if topic == "shape":
        return [transposed_shape_step(case) if case.transposed else shape_step(case)]
    return slide_steps(case)


def _standard_steps(topic: str, cases: dict[str, Case]) -> list[Step]:
    classic = cases["classic"]
    if topic == "dot":
        return [dot_step(classic, (0, 0, 0)), dot_step(cases["two-channel"], (0, 0, 0))]
    if topic == "im2col":
        return [im2col_step(classic), conv_matrix_step(classic)]
    if topic == "backprop":
        grad_output = np.array([[[1, 2], [3, 4]]])
        strided = cases["stride-2-padding-1"]
        # The classic case for the rotation, the strided, padded one for the padding and the crop.
        return [*backprop_steps(classic, grad_output), *backprop_steps(strided, example_grad_output(strided), True),
                weight_gradient_step(classic, grad_output)]
    if topic == "flip":
        return [flip_step(cases["sobel"])]
    if topic == "shape":
        return [shape_step(cases["strided"])]
    return slide_steps(classic)


def _check_topics(topics: Sequence[str] | None, transposed: bool) -> tuple[str, ...]:
    if topics is None or len(topics) == 0:
        topics = ("slide",) if transposed else DEFAULT_TOPICS
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        raise ValueError(f"explain: topic must be one of {', '.join(map(repr, TOPICS))}, got {unknown[0]!r}")
    if transposed and set(topics) - {"slide", "shape"}:
        raise ValueError(f"explain: topics for a transposed convolution must be 'slide' or 'shape', got "
                         f"{list(topics)}")
    # In the order of TOPICS, each once.
    return tuple(t for t in TOPICS if t in topics)


def explain(case: Case | None = None, topics: Sequence[str] | None = None,
            at: Sequence[int] | None = None) -> Explanation:
    """Build the explanation: the standard examples (``case=None``) or one case, for the topics asked.

    Parameters
    ----------
    case : Case, optional
        The problem to explain; None walks through the standard examples
        (:func:`standard_cases`).
    topics : sequence of str, optional
        Keys of :data:`TOPICS`; default :data:`DEFAULT_TOPICS` (``("slide",)``
        for a transposed case).
    at : (c_out, row, col), optional
        The output element the ``dot`` topic takes apart (default the first).

    Returns
    -------
    Explanation
        The steps, with their data and computed checks.

    Raises
    ------
    ValueError
        An unknown topic; ``at`` outside the output.

    Examples
    --------
    >>> e = explain(topics=["im2col"])
    >>> e.steps[0].data["output"].tolist(), e.passed
    ([[[83, 113], [173, 203]]], True)
    """
    chosen = _check_topics(topics, case is not None and case.transposed)
    if case is None:
        cases = standard_cases()
        steps = [step for topic in chosen for step in _standard_steps(topic, cases)]
        used = tuple(cases[name] for name in cases if any(step.case == name for step in steps))
        return Explanation("convolab explain: the standard examples", used, tuple(steps))
    element = tuple(at) if at is not None else (0, 0, 0)
    shape = case.output().shape
    if len(element) != 3 or not all(0 <= i < n for i, n in zip(element, shape)):
        raise ValueError(f"explain: at must be (c_out, row, col) inside the output of shape {shape}, got {element}")
    steps = [step for topic in chosen for step in _topic_steps(topic, case, element)]
    return Explanation(f"convolab explain: {case.describe()}", (case,), tuple(steps))


def worked_examples() -> list[Step]:
    """The standard walk-through's steps (``explain().steps``)."""
    return list(explain().steps)
