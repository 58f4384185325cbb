"""The renderers: one :class:`~convolab.show.explain.steps.Explanation`, four ways (text, Markdown, JSON, rich).

They lay out the same steps and never compute: every number printed is in
a step's ``data`` or its claims. ``rich`` is imported inside :func:`render_rich` only.

The short form (the default) introduces each case once, at its first step,
prints a formula only when it differs from the previous step's, and says a
:class:`~convolab.show.explain.steps.Once` paragraph only the first time; the
long form (``verbose=True``) says everything at every step, and adds the
:class:`~convolab.show.explain.steps.Detail` items.
"""

from __future__ import annotations

import json
import textwrap
from math import prod
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse

from .._format import DEFAULT_WIDTH, SUMMARY_THRESHOLD, array_lines, counted, grid_lines, marked, number
from .cases import Case
from .steps import TOPICS, Detail, Explanation, Once, Show, Step

__all__ = ["render_text", "render_markdown", "render_json", "render_rich"]

INDENT = "   "

#: What every rendering says first: how to read the equations.
INTRODUCTION = ("Every step shows its numbers and the checks that ran. In each line a = b = ..., every side is "
                "NumPy over the step's arrays, and all sides are equal.")


class _Walk:
    """One pass over the steps: what each shows in the short or the long form."""

    def __init__(self, explanation: Explanation, verbose: bool) -> None:
        self.explanation, self.verbose = explanation, verbose

    def __iter__(self) -> Iterator[tuple[int, Step, str | None, Case | None, bool, list[str | Show]]]:
        """Per step: its number, the step, the question (when a topic starts), the case to introduce (when first
        used), whether to print the formula, and the body items to show."""
        previous_topic, previous_formula = None, None
        said: set[str] = set()
        cases = {case.name: case for case in self.explanation.cases}
        introduced: set[str] = set()
        for step_number, step in enumerate(self.explanation.steps, 1):
            heading = TOPICS[step.topic] if step.topic != previous_topic else None
            case = cases.get(step.case) if step.case not in introduced else None
            introduced.add(step.case)
            formula = self.verbose or step.formula != previous_formula
            items: list[str | Show] = []
            for item in step.body:
                if isinstance(item, Once):
                    if self.verbose or item.key not in said:
                        items.append(item.text)
                    said.add(item.key)
                elif isinstance(item, Detail):
                    if self.verbose:
                        items.append(item.item)
                else:
                    items.append(item)
            yield step_number, step, heading, case, formula, items
            previous_topic, previous_formula = step.topic, step.formula


def _for_display(value: Any) -> Any:
    """An array with its leading length-1 axes dropped (down to 2-D): the label keeps the full shape."""
    if scipy.sparse.issparse(value):  # 2-D already; dense only when it prints whole
        return value.toarray() if prod(value.shape) <= SUMMARY_THRESHOLD else value
    a = np.asarray(value)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def _marked_lines(values: Any, mask: Any) -> list[str]:
    """An array as a grid, the cells where ``mask`` is set in [brackets]; channels one under another."""
    values, mask = _for_display(values), np.broadcast_to(_for_display(mask), np.shape(_for_display(values)))
    planes = [(values, mask)] if values.ndim < 3 else list(zip(values, mask))
    cells = [marked(v, m) for v, m in planes]
    width = max(len(text) for plane in cells for text in plane.ravel())
    lines: list[str] = []
    for index, plane in enumerate(cells):
        lines += ([""] if index else []) + grid_lines(plane, width)
    return lines


def _blocks(step: Step, show: Show) -> list[list[str]]:
    """Each array of a :class:`Show` as a block of equally wide lines under its label."""
    blocks = []
    marks = show.marks or (None,) * len(show.keys)
    for key, label, mark in zip(show.keys, show.labels, marks):
        lines = (_marked_lines(step.data[key], step.data[mark]) if mark is not None
                 else array_lines(_for_display(step.data[key])))
        width = max(len(label), *(len(line) for line in lines))
        blocks.append([label.ljust(width), *(line.ljust(width) for line in lines)])
    return blocks


def _side_by_side(blocks: list[list[str]], width: int = 10**6, gap: str = "    ") -> list[str]:
    """Blocks next to each other while they fit in ``width``, the rest on the next rows."""
    rows: list[str] = []
    while blocks:
        count = 1
        while count < len(blocks) and sum(len(b[0]) for b in blocks[:count + 1]) + len(gap) * count <= width:
            count += 1
        shown, blocks = blocks[:count], blocks[count:]
        height = max(len(block) for block in shown)
        for i in range(height):
            cells = [block[i] if i < len(block) else " " * len(block[0]) for block in shown]
            rows.append(gap.join(cells).rstrip())
        if blocks:
            rows.append("")
    return rows


def _in_words(a: np.ndarray) -> str | None:
    """``1..9`` for 1, 2, 3, ... in order, ``all ones`` for ones: arrays said rather than printed; else None."""
    if a.size and np.array_equal(np.ravel(a), np.arange(1, a.size + 1)):
        return f"1..{a.size}"
    if a.size and (np.ravel(a) == 1).all():
        return "all ones"
    return None


def _case_line(case: Case) -> str:
    """``Case 'classic': conv2d(input, weight), input 1..9 as (1, 3, 3) -> output (1, 2, 2).``"""
    said = [f"{name} {_in_words(a) + ' ' if _in_words(a) else ''}{a.shape}" for name, a in (("input", case.input),
                                                                                     ("weight", case.weight))]
    return f"Case {case.name!r}: {', '.join(said)}{case.keywords()} -> {case.output().shape}."


def _case_blocks(case: Case, step: Step, items: Sequence[str | Show], earlier: Sequence[Case] = ()) -> list[list[str]]:
    """The case's input and weight as labelled blocks, but for those said in words, shown before, or in the step."""
    shown = [_for_display(step.data[key]) for item in items if isinstance(item, Show) for key in item.keys]
    shown += [_for_display(a) for other in earlier for a in (other.input, other.weight)]

    def is_shown(a: np.ndarray) -> bool:
        a = _for_display(a)
        return any(isinstance(b, np.ndarray) and b.shape == a.shape and np.array_equal(a, b) for b in shown)

    blocks = []
    for label, value in ((f"input {case.input.shape}", case.input), (f"weight {case.weight.shape}", case.weight)):
        if is_shown(value) or _in_words(value):
            continue
        lines = array_lines(_for_display(value))
        width = max(len(label), *(len(line) for line in lines))
        blocks.append([label.ljust(width), *(line.ljust(width) for line in lines)])
    return blocks


def self_cases_before(explanation: Explanation, case: Case) -> list[Case]:
    """The cases introduced before ``case``: their arrays are not printed again."""
    names = [step.case for step in explanation.steps]
    first = {name: names.index(name) for name in names}
    return [c for c in explanation.cases if first.get(c.name, -1) < first.get(case.name, -1)]


def _equation_lines(text: str, width: int) -> list[str]:
    """A printed claim (``a = b = value``), indented, its sides packed into lines of ``width``, ``= `` leading."""
    first, *rest = text.split(" = ")
    lines = [INDENT + first]
    for side in rest:
        if len(lines[-1]) + len(" = " + side) <= width:
            lines[-1] += " = " + side
        else:
            lines.append(INDENT + "  = " + side)
    return lines


def _claims_shown(step: Step) -> list[str]:
    """The claims printed under the check line: all but the one the formula line already printed."""
    return [c.text() for c in step.claims if c.text() != step.formula]


def _steps_count(explanation: Explanation) -> str:
    return counted(len(explanation.steps), "step")


def render_text(explanation: Explanation, width: int = DEFAULT_WIDTH, verbose: bool = False) -> str:
    """Plain text wrapped to ``width``: per question a heading; per step its title, formula, numbers, check.

    The short form (default) introduces each case once and says each repeated
    idea once; ``verbose=True`` gives the long form.
    """
    out = [*textwrap.wrap(explanation.title, width, subsequent_indent=INDENT, break_on_hyphens=False),
           *textwrap.wrap(INTRODUCTION, width), ""]
    prose = textwrap.TextWrapper(width=width, initial_indent=INDENT, subsequent_indent=INDENT, break_on_hyphens=False)
    top = textwrap.TextWrapper(width=width, subsequent_indent=INDENT, break_on_hyphens=False)
    inner = width - len(INDENT)
    for step_number, step, heading, case, formula, items in _Walk(explanation, verbose):
        if heading is not None:
            wrapped = textwrap.wrap(heading, width)
            out += [*wrapped, "=" * max(len(line) for line in wrapped), ""]
        if case is not None and len(explanation.cases) > 1:
            out += top.wrap(_case_line(case))
            blocks = _case_blocks(case, step, items, self_cases_before(explanation, case))
            out += [INDENT + line if line else "" for line in _side_by_side(blocks, inner)] + [""] if blocks else [""]
        out += top.wrap(f"{step_number}. {step.title}")
        out += _equation_lines(step.formula, width) if formula else []
        out.append("")
        for index, item in enumerate(items):
            if isinstance(item, Show):
                out += [INDENT + line if line else "" for line in _side_by_side(_blocks(step, item), inner)]
            else:
                for line in item.split("\n"):
                    out += prose.wrap(line)
                if item.endswith(":") and index + 1 < len(items) and isinstance(items[index + 1], Show):
                    continue  # the arrays the paragraph introduces follow at once
            out.append("")
        status = "check passed" if step.passed else "CHECK FAILED"
        out += top.wrap(f"[{status}] {step.check}")
        out += [line for text in _claims_shown(step) for line in _equation_lines(text, width)]
        out.append("")
    verdict = "All checks passed." if explanation.passed else "SOME CHECKS FAILED."
    out.append(f"{verdict} ({_steps_count(explanation)})")
    return "\n".join(out) + "\n"


def render_markdown(explanation: Explanation, verbose: bool = False) -> str:
    """Markdown: questions as sections, steps as subsections, numbers in fenced blocks."""
    out = [f"# {explanation.title}", "",
           INTRODUCTION, ""]
    for step_number, step, heading, case, formula, items in _Walk(explanation, verbose):
        if heading is not None:
            out += [f"## {heading}", ""]
        if case is not None and len(explanation.cases) > 1:
            blocks = _case_blocks(case, step, items, self_cases_before(explanation, case))
            out += [_case_line(case), ""] + (["```text", *_side_by_side(blocks), "```", ""] if blocks else [])
        out += [f"### {step_number}. {step.title}", ""]
        out += [f"`{step.formula}`", ""] if formula else []
        for item in items:
            if isinstance(item, Show):
                out += ["```text", *_side_by_side(_blocks(step, item)), "```"]
            else:
                out.append(item.replace("\n", "  \n"))
            out.append("")
        status = "**Check passed:**" if step.passed else "**CHECK FAILED:**"
        out += [f"{status} {step.check}", ""]
        claims = _claims_shown(step)
        out += ["```text", *claims, "```", ""] if claims else []
    verdict = "All checks passed." if explanation.passed else "**Some checks failed.**"
    out.append(f"{verdict} ({_steps_count(explanation)})")
    return "\n".join(out) + "\n"


def render_json(explanation: Explanation) -> str:
    """The explanation as strict JSON: the cases (with their outputs) and the steps, numbers as nested lists.

    Strict JSON has no NaN or Infinity, so a non-finite number (which a
    :class:`Case` refuses, but a hand-made :class:`Step` may hold) is written
    as the string ``"nan"``, ``"inf"`` or ``"-inf"``. The convolution matrix
    ``M`` (``"matrix"``) is nested lists up to :data:`MAX_DENSE_MATRIX_CELLS`
    entries and ``null`` beyond; its taps are always in ``"rows"``, ``"cols"``
    and ``"values"`` (with ``"shape"``), the sparse form.
    """
    return json.dumps(explanation.to_dict(), indent=2, allow_nan=False) + "\n"


def render_rich(explanation: Explanation, console: Any = None, verbose: bool = False) -> None:
    """Print the explanation to a ``rich`` console: panels, tables for arrays, a coloured check line.

    Imports ``rich`` here, so nothing else in convolab needs it; the CLI calls
    this only when stdout is a terminal and ``rich`` is installed.
    """
    from rich import box
    from rich.columns import Columns
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    console = console or Console()

    def grid(a: np.ndarray) -> Any:
        if scipy.sparse.issparse(a) or a.ndim == 0 or a.ndim > 3 or a.size > SUMMARY_THRESHOLD or a.shape[-1] > 24:
            return Text("\n".join(array_lines(a)))
        if a.ndim == 3:
            side_by_side = Table.grid(padding=(0, 1))
            side_by_side.add_row(*(Group(Text(f"[{c}]", style="dim"), grid(a[c])) for c in range(a.shape[0])))
            return side_by_side
        table = Table(show_header=False, box=box.SQUARE, padding=(0, 1))
        rows = a.reshape(1, -1) if a.ndim == 1 else a
        for _ in range(rows.shape[1]):
            table.add_column(justify="right")
        for row in rows:
            table.add_row(*(number(v) for v in row))
        return table

    def labelled(label: str, value: Any, mask: Any = None) -> Any:
        if mask is not None:  # brackets mark the cells (a window in its input)
            return Group(Text(label, style="bold"), Text("\n".join(_marked_lines(value, mask))))
        return Group(Text(label, style="bold"), grid(_for_display(value)))

    console.print(Text(explanation.title, style="bold"))
    console.print(INTRODUCTION + "\n")
    for step_number, step, heading, case, formula, items in _Walk(explanation, verbose):
        if heading is not None:
            console.print(Rule(Text(heading, style="bold magenta")))
        if case is not None and len(explanation.cases) > 1:
            console.print(Text(_case_line(case), style="bold"))
            blocks = _case_blocks(case, step, items, self_cases_before(explanation, case))
            if blocks:
                console.print(Text("\n".join(_side_by_side(blocks))))
        parts: list[Any] = [Text(step.formula, style="cyan"), Text("")] if formula else []
        for item in items:
            if isinstance(item, Show):
                marks = item.marks or (None,) * len(item.keys)
                parts.append(Columns([labelled(label, step.data[key], None if mark is None else step.data[mark])
                                      for key, label, mark in zip(item.keys, item.labels, marks)], padding=(0, 4)))
            else:
                parts.append(Text(item))
            parts.append(Text(""))
        mark, style = ("check passed", "bold green") if step.passed else ("CHECK FAILED", "bold red")
        parts.append(Text.assemble((f"[{mark}] ", style), step.check))
        parts += [Text(INDENT + text, style="cyan") for text in _claims_shown(step)]
        console.print(Panel(Group(*parts), title=Text(f"{step_number}. {step.title}", style="bold"), title_align="left",
                            box=box.ROUNDED))
    verdict = ("All checks passed.", "bold green") if explanation.passed else ("SOME CHECKS FAILED.", "bold red")
    console.print(Text.assemble(verdict, f" ({_steps_count(explanation)})"))
