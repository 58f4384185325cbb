"""What every picture is built from: grids of numbered cells, laid out in inches, and the files they go to.

A picture is lines of panels (:class:`_Panel`): grids of one cell size and
the operator symbols between them. :func:`_layout` places them, grids of a
line centred on one horizontal axis, so that ``A @ B = C`` reads across the
middle of its matrices whatever their heights; :func:`_cells` draws one grid
with its numbers.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .._format import number
from ..explain.slide import INPUT, INSERTED, PADDING, UNREAD

#: Cells with more than this many in a matrix are drawn as colours, without their numbers.
MAX_LABELLED_CELLS = 1600

CELL_INCHES = 0.42
ROLE_COLOURS = {INPUT: "#ffffff", PADDING: "#d4d4d4", INSERTED: "#dbe5f1", UNREAD: "#f4c7c3"}
ROLE_LABELS = {PADDING: "padding (zeros)", INSERTED: "inserted zero (stride)", UNREAD: "never read"}
WINDOW = "#ffa94d"
KERNEL = "#e3ecfa"
DONE = "#c8e6c9"
EDGE = "#8a8a8a"

#: Row and column indices beside a grid, in points: 9 points is 12.5 pixels at 100 dpi, legible at 100% zoom.
LABEL_POINTS = 9.0


def _matplotlib() -> tuple[Any, Any, Any]:
    """``Figure``, ``FigureCanvasAgg`` and ``Rectangle``, imported on first use."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError as error:  # pragma: no cover - exercised only without the extra installed
        raise ImportError("convolab's pictures need matplotlib: pip install \"convolab[viz]\"") from error
    return Figure, FigureCanvasAgg, Rectangle


# -- layout: grids of one fixed cell size, placed in inches ------------------------------------------

@dataclass(frozen=True)
class _Panel:
    """One item of a line of the picture: a grid of ``rows`` x ``cols`` cells, or an operator symbol."""

    rows: int = 0
    cols: int = 0
    symbol: str = ""
    left: float = 0.0  # inches kept free left of the grid, for row labels
    top: float = 0.0  # inches kept free above the grid, for column labels (the title's space is added)
    gap: float = 0.3  # inches after it


TITLE_SPACE = 0.28
SYMBOL_WIDTH = 0.45
MARGIN = 0.3


def _cell_size(lines: Sequence[Sequence[_Panel]], largest: float = CELL_INCHES) -> float:
    """One cell size for the whole picture: ``largest``, smaller only where the picture would be huge."""
    wide = max(sum(p.cols for p in line) for line in lines)
    tall = sum(max(p.rows for p in line) for line in lines)
    return float(min(largest, 20.0 / max(wide, 1), 13.0 / max(tall, 1)))


def _layout(lines: Sequence[Sequence[_Panel]], cell: float, header: float,
            footer: float) -> tuple[float, float, list[list[tuple[float, float, float, float]]]]:
    """Place every panel: the figure's (width, height) and, per panel, (x, y_top, width, height) in inches.

    The grids of a line are centred on the line's middle, and so are its symbols: an ``@`` sits between the
    middles of the matrices it joins, not beside the empty space under a short one.
    """
    placed, y, width = [], header, 0.0
    for line in lines:
        top = max(p.top for p in line) + TITLE_SPACE
        tallest = max(p.rows for p in line) * cell
        x, row = MARGIN, []
        for panel in line:
            if panel.symbol:
                row.append((x, y + top, SYMBOL_WIDTH, tallest))
                x += SYMBOL_WIDTH + panel.gap
                continue
            x += panel.left
            height = panel.rows * cell
            row.append((x, y + top + (tallest - height) / 2, panel.cols * cell, height))
            x += panel.cols * cell + panel.gap
        placed.append(row)
        width = max(width, x - line[-1].gap + MARGIN)
        y += top + tallest + 0.25
    return width, y + footer, placed


def _titled(lines: Sequence[Sequence[_Panel]], title: str,
            footer: float = 0.1) -> tuple[Any, float, list[list[tuple[float, float, float, float]]]]:
    """A figure for ``lines`` under a wrapped ``title``: the figure, the cell size and the panels' places."""
    cell = _cell_size(lines)
    if not _labels_fit(cell):
        title += "\n(too many cells to number: coloured by value, dark to bright)"
    width = max(_layout(lines, cell, 0, 0)[0], 7.0)
    text = _wrapped(title, width, 10)
    width, height, placed = _layout(lines, cell, 0.25 + 0.19 * (text.count("\n") + 1), footer)
    width = max(width, 7.0)
    figure = _figure(width, height)
    figure.text(0.5, 1 - 0.1 / height, text, ha="center", va="top", fontsize=10)
    right = max(x + w for row in placed for x, _, w, _ in row) + MARGIN
    if width > right + 0.01:  # centre a narrow picture
        shift = (width - right) / 2
        placed = [[(x + shift, y, w, h) for x, y, w, h in row] for row in placed]
    return figure, cell, placed


def _figure(width: float, height: float, dpi: float = 100) -> Any:
    Figure, FigureCanvasAgg, _ = _matplotlib()
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _axes(figure: Any, rect: tuple[float, float, float, float]) -> Any:
    """An axes at ``(x, y_top, width, height)`` inches from the figure's top-left corner."""
    width, height = figure.get_size_inches()
    x, top, w, h = rect
    return figure.add_axes((x / width, 1 - (top + h) / height, w / width, h / height))


def _symbol(figure: Any, rect: tuple[float, float, float, float], symbol: str) -> None:
    ax = _axes(figure, rect)
    ax.axis("off")
    ax.text(0.5, 0.5, symbol, ha="center", va="center", fontsize=20, transform=ax.transAxes)


def _wrapped(text: str, width_inches: float, font_size: float, char_width: float = 0.56) -> str:
    """``text`` wrapped to the figure's width (each of its lines separately); ``char_width`` in ems."""
    chars = max(30, int((width_inches - 0.4) * 72 / (font_size * char_width)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _font_size(values: np.ndarray, cell_points: float) -> float:
    """A font size at which the widest number fits its cell."""
    widest = max((len(number(v)) for v in np.ravel(values)), default=1)
    return float(np.clip(cell_points * 1.45 / max(widest, 2.2), 4.0, 12.0))


def _labels_fit(cell: float) -> bool:
    return cell * 72 >= 13


def _numbered(cell: float, cells: int) -> bool:
    """Whether :func:`_cells` writes the numbers of a grid of ``cells`` cells of ``cell`` inches."""
    return _labels_fit(cell) and cells <= MAX_LABELLED_CELLS


def _upright(labels: Sequence[str]) -> bool:
    """Whether column labels are short enough to stand upright above their cells."""
    return max(len(label) for label in labels) <= 3


def _label_space(labels: Sequence[str] | None, cell: float, above: bool = False) -> float:
    """Inches that tick labels of :data:`LABEL_POINTS` need beside a grid (``above``: over it, as columns)."""
    if not labels or not _labels_fit(cell):
        return 0.0
    if above and _upright(labels):
        return 0.1 + LABEL_POINTS * 1.2 / 72
    return 0.1 + LABEL_POINTS * 0.6 / 72 * max(len(label) for label in labels)


def _cells(ax: Any, values: np.ndarray, colours: np.ndarray, cell: float, *, title: str = "",
           text_colours: np.ndarray | None = None, show: np.ndarray | None = None,
           row_labels: Sequence[str] | None = None, column_labels: Sequence[str] | None = None,
           bold: np.ndarray | None = None) -> bool:
    """A labelled grid: one coloured cell per value, its number written in it; True if numbers were written.

    ``colours`` holds a colour per cell; ``show`` says which numbers to write
    (all by default). Where cells are too small to read, only the colours are
    drawn (and False returned).
    """
    import matplotlib
    import matplotlib.colors as mcolors

    rows, cols = values.shape
    legible = _numbered(cell, values.size)
    if legible:
        rgb = np.array([mcolors.to_rgb(c) for c in colours.ravel()]).reshape(rows, cols, 3)
        ax.imshow(rgb, interpolation="nearest", extent=(0, cols, rows, 0), aspect="auto")
    else:  # too small to number: colour by value instead (cells not shown stay white)
        shade = np.where(True if show is None else show, values.astype(np.float64), np.nan)
        colour_map = matplotlib.colormaps["viridis"].with_extremes(bad="white")
        ax.imshow(shade, cmap=colour_map, interpolation="nearest", extent=(0, cols, rows, 0), aspect="auto")
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    if legible:
        ax.set_xticks(np.arange(cols + 1), minor=True)
        ax.set_yticks(np.arange(rows + 1), minor=True)
        ax.grid(which="minor", color=EDGE, linewidth=0.6)
    ax.tick_params(which="both", length=0, labelsize=LABEL_POINTS, colors="#444444", pad=2)
    ax.set_xticks(np.arange(cols) + 0.5 if legible and column_labels else [])
    ax.set_yticks(np.arange(rows) + 0.5 if legible and row_labels else [])
    if legible and column_labels:  # indices of up to 3 characters read upright; longer ones turn to fit
        ax.set_xticklabels(column_labels, rotation=0 if _upright(column_labels) else 90)
    if legible and row_labels:
        ax.set_yticklabels(row_labels)
    ax.xaxis.set_ticks_position("top")
    for spine in ax.spines.values():
        spine.set_color(EDGE)
    if title:
        pad = 2 + (72 * _label_space(column_labels, cell, above=True) if column_labels else 0)
        ax.set_title(title, fontsize=10, pad=pad)
    if not legible:
        return False
    size = _font_size(values, cell * 72)
    for (i, j), value in np.ndenumerate(values):
        if show is not None and not show[i, j]:
            continue
        ax.text(j + 0.5, i + 0.5, number(value), ha="center", va="center", fontsize=size,
                color="black" if text_colours is None else text_colours[i, j],
                fontweight="bold" if bold is not None and bold[i, j] else "normal")
    return True


def _saved_size(path: str | os.PathLike) -> tuple[int, int]:
    """The pixel size of the written file, read back (the figure's inches times dpi may round either way)."""
    from PIL import Image  # matplotlib depends on Pillow

    with Image.open(os.fspath(path)) as image:
        return image.size


def _make_folder(path: str | os.PathLike) -> None:
    """Create the folder ``path`` goes in, as a learner following the README expects (``pictures/classic``)."""
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)


def _save(figure: Any, path: str | os.PathLike, dpi: int) -> dict[str, Any]:
    _make_folder(path)
    figure.savefig(os.fspath(path), dpi=dpi)
    return {"path": os.fspath(path), "size": _saved_size(path)}


def _canvas_labels(role: np.ndarray, axis: int) -> list[str]:
    """Input row (axis 0) or column (axis 1) indices along the canvas; padding and inserted zeros unlabelled."""
    holds_input = np.isin(role, (INPUT, UNREAD)).any(axis=1 - axis)
    numbers = np.cumsum(holds_input) - 1
    return [str(n) if inside else "" for n, inside in zip(numbers, holds_input)]


def _label(indices: Sequence[Sequence[int]]) -> list[str]:
    return [",".join(map(str, index)) for index in indices]
