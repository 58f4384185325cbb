"""The renderers: one :class:`~convolab.show.explain.steps.Explanation`, four ways (text, Markdown, JSON, rich).

They lay out the same steps and never compute: every number printed is in
a step's ``data``. ``rich`` is imported inside :func:`render_rich` only.
"""

from __future__ import annotations

import json
import textwrap
from math import prod
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse

from .._format import SUMMARY_THRESHOLD, array_lines, number
from .steps import TOPICS, Explanation, Show, Step

__all__ = ["render_text", "render_markdown", "render_json", "render_rich"]


def _heading_for(steps: Sequence[Step]) -> Iterator[tuple[int, Step, str | None]]:
    """Each step with its number and, when a new topic starts, the question it answers."""
    previous = None
    for step_number, step in enumerate(steps, 1):
        yield step_number, step, (TOPICS[step.topic] if step.topic != previous else None)
        previous = step.topic


def _for_display(value: Any) -> Any:
    """An array with its leading length-1 axes dropped (down to 2-D): the label keeps the full shape."""
    if scipy.sparse.issparse(value):  # 2-D already; dense only when it prints whole
        return value.toarray() if prod(value.shape) <= SUMMARY_THRESHOLD else value
    a = np.asarray(value)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def _side_by_side(step: Step, show: Show, gap: str = "    ") -> list[str]:
    """Arrays under their labels, next to each other, as text lines."""
    blocks = []
    for key, label in zip(show.keys, show.labels):
        lines = array_lines(_for_display(step.data[key]))
        width = max(len(label), *(len(line) for line in lines))
        blocks.append([label.ljust(width), *(line.ljust(width) for line in lines)])
    height = max(len(block) for block in blocks)
    rows = []
    for i in range(height):
        cells = [block[i] if i < len(block) else " " * len(block[0]) for block in blocks]
        rows.append(gap.join(cells).rstrip())
    return rows


def render_text(explanation: Explanation) -> str:
    """Plain text: per question a heading; per step its number, title, formula, numbers and the check's outcome."""
    out = [explanation.title, "Every step shows the numbers, the formula, and a check that was run.", ""]
    wrap = textwrap.TextWrapper(width=100, initial_indent="   ", subsequent_indent="   ", break_on_hyphens=False)
    for step_number, step, heading in _heading_for(explanation.steps):
        if heading is not None:
            out += ["=" * min(len(heading), 100), heading, "=" * min(len(heading), 100), ""]
        out += [f"{step_number}. {step.title}", f"   {step.formula}", ""]
        for item in step.body:
            if isinstance(item, Show):
                out += ["   " + line for line in _side_by_side(step, item)]
            else:
                for line in item.split("\n"):
                    out += wrap.wrap(line)
            out.append("")
        status = "check passed" if step.passed else "CHECK FAILED"
        out += [f"[{status}] {step.check}", ""]
    verdict = "All checks passed." if explanation.passed else "SOME CHECKS FAILED."
    out.append(f"{verdict} ({len(explanation.steps)} steps)")
    return "\n".join(out) + "\n"


def render_markdown(explanation: Explanation) -> str:
    """Markdown: questions as sections, steps as subsections, numbers in fenced blocks."""
    out = [f"# {explanation.title}", "", "Every step shows the numbers, the formula, and a check that was run.", ""]
    for step_number, step, heading in _heading_for(explanation.steps):
        if heading is not None:
            out += [f"## {heading}", ""]
        out += [f"### {step_number}. {step.title}", "", f"`{step.formula}`", ""]
        for item in step.body:
            if isinstance(item, Show):
                out += ["```text", *_side_by_side(step, item), "```"]
            else:
                out.append(item.replace("\n", "  \n"))
            out.append("")
        status = "**Check passed:**" if step.passed else "**CHECK FAILED:**"
        out += [f"{status} {step.check}", ""]
    verdict = "All checks passed." if explanation.passed else "**Some checks failed.**"
    out.append(f"{verdict} ({len(explanation.steps)} steps)")
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


def render_rich(explanation: Explanation, console: Any = None) -> None:
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

    def labelled(label: str, value: Any) -> Any:
        return Group(Text(label, style="bold"), grid(_for_display(value)))

    console.print(Text(explanation.title, style="bold"))
    console.print("Every step shows the numbers, the formula, and a check that was run.\n")
    for step_number, step, heading in _heading_for(explanation.steps):
        if heading is not None:
            console.print(Rule(Text(heading, style="bold magenta")))
        parts: list[Any] = [Text(step.formula, style="cyan"), Text("")]
        for item in step.body:
            if isinstance(item, Show):
                parts.append(Columns([labelled(label, step.data[key]) for key, label in zip(item.keys, item.labels)],
                                     padding=(0, 4)))
            else:
                parts.append(Text(item))
            parts.append(Text(""))
        mark, style = ("check passed", "bold green") if step.passed else ("CHECK FAILED", "bold red")
        parts.append(Text.assemble((f"[{mark}] ", style), step.check))
        console.print(Panel(Group(*parts), title=Text(f"{step_number}. {step.title}", style="bold"), title_align="left",
                            box=box.ROUNDED))
    verdict = ("All checks passed.", "bold green") if explanation.passed else ("SOME CHECKS FAILED.", "bold red")
    console.print(Text.assemble(verdict, f" ({len(explanation.steps)} steps)"))
