"""Pictures of the explanation steps: a GIF of the kernel sliding, PNGs of the matrix views.

Everything drawn here is read from :class:`~convolab.show.explain.Step` data, the
same steps ``convolab explain`` prints and the tests check, so a picture never
shows a number the library did not compute:

- :func:`animate` draws :func:`~convolab.show.explain.slide_steps`: one frame per
  output element, the window highlighted on the padded input (padding shaded,
  never-read cells marked, inserted zeros for a transposed convolution), the
  kernel, the product-sum written out, and the output filling in.
- :func:`draw_im2col` draws the ``im2col`` step: the unrolled input times the
  filter matrix equals the product, reshaped into the output.
- :func:`draw_conv_matrix` draws the convolution matrix step: ``M`` times the
  flattened input equals the flattened output.

matplotlib (and Pillow, for GIFs) are imported inside the functions, and only
the Agg canvas is used (no pyplot, no global backend switch), so ``import
convolab`` never needs them. Install them with ``pip install "convolab[viz]"``.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from math import prod
from typing import Any, Sequence

import numpy as np

from .._errors import fail
from ._format import factor, number, terms
from .explain.slide import INPUT, INSERTED, PADDING, UNREAD
from .explain.steps import Step

__all__ = ["animate", "draw_im2col", "draw_conv_matrix", "check_frames", "check_drawn_cells", "MAX_FRAMES",
           "MAX_DRAWN_CELLS"]

#: ``animate`` refuses to draw more frames than this (one per output element; each takes about a second).
MAX_FRAMES = 400

#: ``draw_conv_matrix`` refuses a matrix of more cells than this (1024 x 1024: past it a cell is under a pixel).
MAX_DRAWN_CELLS = 1 << 20

#: Cells with more than this many in a matrix are drawn as colours, without their numbers.
MAX_LABELLED_CELLS = 1600

CELL_INCHES = 0.42
ROLE_COLOURS = {INPUT: "#ffffff", PADDING: "#d4d4d4", INSERTED: "#dbe5f1", UNREAD: "#f4c7c3"}
ROLE_LABELS = {PADDING: "padding (zeros)", INSERTED: "inserted zero (stride)", UNREAD: "never read"}
WINDOW = "#ffa94d"
KERNEL = "#e3ecfa"
DONE = "#c8e6c9"
EDGE = "#8a8a8a"


def check_frames(frames: int) -> None:
    """Refuse (ValueError) an animation of more than :data:`MAX_FRAMES` frames, before any is computed."""
    if frames > MAX_FRAMES:
        fail(ValueError, "animate", "output", f"{frames:,} elements",
             f"must have at most {MAX_FRAMES} elements to animate, as frames are one per element (give a smaller "
             "input or a larger stride)")


def check_drawn_cells(op: str, name: str, shape: Sequence[int]) -> None:
    """Refuse (ValueError) drawing a matrix of more than :data:`MAX_DRAWN_CELLS` cells, before it is built."""
    cells = prod(shape)
    if cells > MAX_DRAWN_CELLS:
        fail(ValueError, op, name, f"shape {tuple(shape)} = {cells:,} cells",
             f"must have at most {MAX_DRAWN_CELLS:,} cells to be drawn (one row per output element, one column "
             "per input element: give a smaller input)")


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


def _cell_size(lines: Sequence[Sequence[_Panel]]) -> float:
    """One cell size for the whole picture: CELL_INCHES, smaller only where the picture would be huge."""
    wide = max(sum(p.cols for p in line) for line in lines)
    tall = sum(max(p.rows for p in line) for line in lines)
    return float(min(CELL_INCHES, 20.0 / max(wide, 1), 13.0 / max(tall, 1)))


def _layout(lines: Sequence[Sequence[_Panel]], cell: float, header: float,
            footer: float) -> tuple[float, float, list[list[tuple[float, float, float, float]]]]:
    """Place every panel: the figure's (width, height) and, per panel, (x, y_top, width, height) in inches.

    Grids of a line share the top edge of their cells; symbols are centred on the line's tallest grid.
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
            row.append((x, y + top, panel.cols * cell, panel.rows * cell))
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
    if width > placed[0][-1][0] + placed[0][-1][2] + MARGIN + 0.01:  # centre a narrow picture
        shift = (width - (placed[0][-1][0] + placed[0][-1][2] + MARGIN)) / 2
        placed = [[(x + shift, y, w, h) for x, y, w, h in row] for row in placed]
    return figure, cell, placed


def _figure(width: float, height: float) -> Any:
    Figure, FigureCanvasAgg, _ = _matplotlib()
    figure = Figure(figsize=(width, height))
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


def _label_space(labels: Sequence[str] | None, cell: float) -> float:
    """Inches that tick labels of 7 points need beside a grid."""
    if not labels or not _labels_fit(cell):
        return 0.0
    return 0.1 + 0.075 * max(len(label) for label in labels)


def _cells(ax: Any, values: np.ndarray, colours: np.ndarray, cell: float, *, title: str = "",
           text_colours: np.ndarray | None = None, show: np.ndarray | None = None,
           row_labels: Sequence[str] | None = None, column_labels: Sequence[str] | None = None,
           bold: np.ndarray | None = None) -> None:
    """A labelled grid: one coloured cell per value, its number written in it.

    ``colours`` holds a colour per cell; ``show`` says which numbers to write
    (all by default). Where cells are too small to read, only the colours are
    drawn.
    """
    import matplotlib
    import matplotlib.colors as mcolors

    rows, cols = values.shape
    legible = _labels_fit(cell) and values.size <= MAX_LABELLED_CELLS
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
    ax.tick_params(which="both", length=0, labelsize=7, colors="#555555")
    ax.set_xticks(np.arange(cols) + 0.5 if legible and column_labels else [])
    ax.set_yticks(np.arange(rows) + 0.5 if legible and row_labels else [])
    if legible and column_labels:
        ax.set_xticklabels(column_labels, rotation=90)
    if legible and row_labels:
        ax.set_yticklabels(row_labels)
    ax.xaxis.set_ticks_position("top")
    for spine in ax.spines.values():
        spine.set_color(EDGE)
    if title:
        pad = 2 + (72 * _label_space(column_labels, cell) if column_labels else 0)
        ax.set_title(title, fontsize=9, pad=pad)
    if not legible:
        return
    size = _font_size(values, cell * 72)
    for (i, j), value in np.ndenumerate(values):
        if show is not None and not show[i, j]:
            continue
        ax.text(j + 0.5, i + 0.5, number(value), ha="center", va="center", fontsize=size,
                color="black" if text_colours is None else text_colours[i, j],
                fontweight="bold" if bold is not None and bold[i, j] else "normal")


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


def _label(indices: Sequence[Sequence[int]]) -> list[str]:
    return [",".join(map(str, index)) for index in indices]


# -- the sliding kernel ------------------------------------------------------------------------------


def _canvas_labels(role: np.ndarray, axis: int) -> list[str]:
    """Input row (axis 0) or column (axis 1) indices along the canvas; padding and inserted zeros unlabelled."""
    holds_input = np.isin(role, (INPUT, UNREAD)).any(axis=1 - axis)
    numbers = np.cumsum(holds_input) - 1
    return [str(n) if inside else "" for n, inside in zip(numbers, holds_input)]


class _Animation:
    """The fixed layout of every frame, and how to draw one."""

    def __init__(self, first: Step):
        self.first = first
        data = first.data
        self.canvas, self.role = np.asarray(data["canvas"]), np.asarray(data["role"])
        self.kernels = np.asarray(data["kernel"])  # (C_out, C/groups, kH, kW), as applied
        self.outputs = np.asarray(data["output"])
        self.row_labels, self.column_labels = _canvas_labels(self.role, 0), _canvas_labels(self.role, 1)
        channels, height, width = self.canvas.shape
        per_group, kh, kw = self.kernels.shape[1:]
        out_channels, out_h, out_w = self.outputs.shape
        panels = [_Panel(height, width, left=0.25, top=0.2, gap=0.35) for _ in range(channels)]
        panels[-1] = _Panel(height, width, left=0.25, top=0.2, gap=0.7)
        panels += [_Panel(kh, kw, gap=0.3) for _ in range(per_group)]
        panels[-1] = _Panel(kh, kw, gap=0.7)
        panels += [_Panel(out_h, out_w, gap=0.3) for _ in range(out_channels)]
        self.cell = _cell_size([panels])
        self.width = max(_layout([panels], self.cell, 0, 0)[0], 7.5)
        longest = max((data["shapes"], data["parameters"]), key=len)
        title_lines = 1 + _wrapped(longest, self.width, 9.5).count("\n") + 2
        self.header = 0.2 + 0.17 * title_lines
        width, self.height, placed = _layout([panels], self.cell, self.header, 0.95)
        self.width = max(width, 7.5)
        self.rects = placed[0]
        self.groups = (channels, per_group, out_channels)
        transposed = data["op"] == "conv_transpose2d"
        spread, padded = (self.role == INSERTED).any(), (self.role == PADDING).any()
        self.canvas_note = " " + " + ".join(w for w, on in (("spread", spread), ("padded", padded)) if on) \
            if spread or padded else ""
        self.kernel_note = " rotated 180°" if transposed else ""

    def draw(self, figure: Any, step: Step, frame: int, total: int, filled: np.ndarray) -> None:
        _, _, Rectangle = _matplotlib()
        channels, per_group, out_channels = self.groups
        kernel = np.asarray(step.data["kernel"])  # (C/groups, kH, kW)
        o, y, x = step.data["at"]
        reads = step.data["channels"]
        taps = np.asarray(step.data["taps"])
        weights = kernel.reshape(kernel.shape[0], -1)
        rects = iter(self.rects)
        role_colours = np.vectorize(ROLE_COLOURS.get, otypes=[object])(self.role)
        text_colours = np.where(self.role == INPUT, "black", np.where(self.role == UNREAD, "#8b1a1a", "#6b6b6b"))
        for c in range(channels):
            ax = _axes(figure, next(rects))
            colours = role_colours.copy()
            if c in reads:
                colours[taps[:, 0], taps[:, 1]] = WINDOW
            _cells(ax, self.canvas[c], colours, self.cell, text_colours=text_colours,
                   title=f"input[{c}]" + self.canvas_note, row_labels=self.row_labels,
                   column_labels=self.column_labels)
            if c not in reads:
                continue
            if _labels_fit(self.cell):
                small = _font_size(weights, self.cell * 72) * 0.62
                for (row, col), w in zip(taps, weights[reads.index(c)]):
                    ax.text(col + 0.96, row + 0.96, f"×{factor(w)}", ha="right", va="bottom", fontsize=small,
                            color="#7a3b00")
            top, left = taps.min(axis=0)
            bottom, right = taps.max(axis=0) + 1
            ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="#d9480f",
                                   linewidth=2.2, clip_on=False))
        for c in range(per_group):
            ax = _axes(figure, next(rects))
            name = (f"kernel[{o}, {c}]" if per_group > 1 else f"kernel[{o}]") + self.kernel_note
            _cells(ax, kernel[c], np.full(kernel[c].shape, KERNEL, dtype=object), self.cell, title=name)
        for c in range(out_channels):
            ax = _axes(figure, next(rects))
            current = np.zeros(filled[c].shape, dtype=bool)
            colours = np.where(filled[c], DONE, "#ffffff").astype(object)
            if c == o:
                current[y, x] = True
                colours[y, x] = WINDOW
            _cells(ax, self.outputs[c], colours, self.cell, show=filled[c] | current, bold=current,
                   title=f"output[{c}]")
        title = (f"{self.first.data['shapes']}\n{self.first.data['parameters']}\n"
                 f"frame {frame} of {total}: output element ({o}, {y}, {x})")
        figure.text(0.5, 1 - 0.12 / self.height, _wrapped(title, self.width, 9.5), ha="center", va="top",
                    fontsize=9.5)
        written_out = terms(step.data["window"], step.data["kernel"], step.data["sum"])
        figure.text(0.5, 0.62 / self.height, _wrapped(f"out[{o}, {y}, {x}] = {written_out}", self.width, 10.5, 0.62),
                    ha="center", va="center", fontsize=10.5, family="monospace")
        present = [code for code in (PADDING, INSERTED, UNREAD) if (self.role == code).any()]
        handles = [Rectangle((0, 0), 1, 1, facecolor=WINDOW, edgecolor=EDGE)]
        handles += [Rectangle((0, 0), 1, 1, facecolor=ROLE_COLOURS[code], edgecolor=EDGE) for code in present]
        handles.append(Rectangle((0, 0), 1, 1, facecolor=DONE, edgecolor=EDGE))
        labels = ["window (×: kernel tap)"] + [ROLE_LABELS[code] for code in present] + ["computed"]
        figure.legend(handles, labels, loc="lower center", fontsize=8, ncol=len(handles), frameon=False,
                      bbox_to_anchor=(0.5, 0.02 / self.height))


def animate(steps: Sequence[Step], path: str | os.PathLike, *, fps: float = 1.25, dpi: int = 100) -> dict[str, Any]:
    """Write a GIF of the kernel sliding: one frame per output element.

    Parameters
    ----------
    steps : sequence of Step
        :func:`convolab.show.explain.slide_steps` of a case: the canvas step, then
        one step per output element.
    path : path-like
        Where to write the GIF.
    fps : float
        Frames per second.
    dpi : int
        Pixels per inch of the figure.

    Returns
    -------
    dict
        ``{"path", "frames", "size"}``: the file, the frame count (the number
        of output elements) and ``(width, height)`` in pixels.

    Raises
    ------
    ValueError
        Steps that are not slide steps, more than :data:`MAX_FRAMES` frames,
        or an ``fps`` that is not a finite number > 0.
    """
    from matplotlib.animation import PillowWriter

    if not steps or steps[0].topic != "slide" or "canvas" not in steps[0].data:
        raise ValueError("animate: steps must be slide_steps(case): the canvas step first, then one per element")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not (
            np.isfinite(fps) and fps > 0):
        fail(ValueError, "animate", "fps", repr(fps), "must be a finite number > 0")
    first, elements = steps[0], list(steps[1:])
    check_frames(len(elements))
    layout = _Animation(first)
    figure = _figure(layout.width, layout.height)
    filled = np.zeros(layout.outputs.shape, dtype=bool)
    writer = PillowWriter(fps=fps)
    _make_folder(path)
    with writer.saving(figure, os.fspath(path), dpi):
        for frame, step in enumerate(elements, 1):
            figure.clear()
            layout.draw(figure, step, frame, len(elements), filled)
            writer.grab_frame()
            filled[tuple(step.data["at"])] = True
    return {"path": os.fspath(path), "frames": len(elements), "size": _saved_size(path)}


# -- the matrix views --------------------------------------------------------------------------------


def draw_im2col(step: Step, path: str | os.PathLike, *, dpi: int = 100) -> dict[str, Any]:
    """Write a PNG of ``unrolled @ filters = product``, reshaped into the output, from an ``im2col`` step.

    Rows of the unrolled input are labelled with their output position
    ``y,x``, its columns with the tap ``c,i,j`` they hold; cells that came from
    the zero padding are shaded. With groups, one line of matrices per group.

    Returns
    -------
    dict
        ``{"path", "size"}``, the size in pixels.
    """
    data = step.data
    if step.topic != "im2col" or "unrolled" not in data:
        raise ValueError("draw_im2col: step must be the im2col step of explain(...) (with 'unrolled' in its data)")
    unrolled, filters, product = (np.asarray(data[k]) for k in ("unrolled", "filters", "product"))
    from_padding = np.asarray(data["from_padding"])
    output = np.asarray(data["output"])
    if unrolled.ndim == 2:
        unrolled, filters, product, from_padding = (a[None] for a in (unrolled, filters, product, from_padding))
    groups, rows, taps = unrolled.shape
    per_group = filters.shape[2]
    out_h, out_w = output.shape[1:]
    row_labels, column_labels = _label(data["row_labels"]), _label(data["column_labels"])
    filter_labels = [[f"f{g * per_group + o}" for o in range(per_group)] for g in range(groups)]
    probe = _cell_size([[_Panel(rows, taps + 2 * per_group + per_group * out_w)]] * groups)
    left, top = _label_space(row_labels, probe), _label_space(column_labels, probe)
    line = [_Panel(rows, taps, left=left, top=top, gap=0.2), _Panel(symbol="@", gap=0.2),
            _Panel(taps, per_group, left=left, top=top, gap=0.2), _Panel(symbol="=", gap=0.2),
            _Panel(rows, per_group, left=left, top=top, gap=0.1), _Panel(symbol="→", gap=0.2)]
    line += [_Panel(out_h, out_w, top=top, gap=0.3) for _ in range(per_group)]
    title = (f"im2col: unrolled input {unrolled.shape[-2:]} @ filters {filters.shape[-2:]} = product "
             f"{product.shape[-2:]}" + (f" in each of {groups} groups" if groups > 1 else "")
             + f", reshaped to the output {output.shape}\nrows: output position y,x; columns: tap c,i,j (channel, "
             "kernel row, kernel column); grey: from the zero padding")
    figure, cell, placed = _titled([line] * groups, title)
    for g, rects in enumerate(placed):
        rects = iter(rects)
        suffix = f", group {g}" if groups > 1 else ""
        colours = np.where(from_padding[g], ROLE_COLOURS[PADDING], "#ffffff").astype(object)
        _cells(_axes(figure, next(rects)), unrolled[g], colours, cell, title=f"unrolled input {unrolled[g].shape}"
               f"{suffix}", row_labels=row_labels, column_labels=column_labels)
        _symbol(figure, next(rects), "@")
        _cells(_axes(figure, next(rects)), filters[g], np.full(filters[g].shape, KERNEL, dtype=object), cell,
               title=f"filters {filters[g].shape}", row_labels=column_labels, column_labels=filter_labels[g])
        _symbol(figure, next(rects), "=")
        _cells(_axes(figure, next(rects)), product[g], np.full(product[g].shape, DONE, dtype=object), cell,
               title=f"product {product[g].shape}", row_labels=row_labels, column_labels=filter_labels[g])
        _symbol(figure, next(rects), "→")
        for o in range(per_group):
            channel = g * per_group + o
            _cells(_axes(figure, next(rects)), output[channel], np.full((out_h, out_w), DONE, dtype=object), cell,
                   title=f"output[{channel}]")
    return _save(figure, path, dpi)


def draw_conv_matrix(step: Step, path: str | os.PathLike, *, dpi: int = 100) -> dict[str, Any]:
    """Write a PNG of ``M @ input.ravel() = output.ravel()`` from the convolution-matrix step.

    Each row of ``M`` is one output element (labelled ``o,y,x``), each column
    one input element (``c,y,x``); the kernel's taps are tinted and numbered,
    the other entries (zeros) left blank.

    Returns
    -------
    dict
        ``{"path", "size"}``, the size in pixels.

    Raises
    ------
    ValueError
        Not the convolution-matrix step, or a matrix of more than :data:`MAX_DRAWN_CELLS` cells.
    """
    data = step.data
    if "rows" not in data or "input_vector" not in data:
        raise ValueError("draw_conv_matrix: step must be the convolution-matrix step of explain(...)")
    rows, cols = data["shape"]
    check_drawn_cells("draw_conv_matrix", "M", (rows, cols))  # drawn dense: one cell per entry
    values = np.asarray(data["values"])
    matrix = np.zeros((rows, cols), dtype=values.dtype)
    is_tap = np.zeros((rows, cols), dtype=bool)
    r, c = np.asarray(data["rows"], dtype=np.int64), np.asarray(data["cols"], dtype=np.int64)
    matrix[r, c] = values
    is_tap[r, c] = True
    x = np.asarray(data["input_vector"]).reshape(-1, 1)
    y = np.asarray(data["output_vector"]).reshape(-1, 1)
    row_labels, column_labels = _label(data["row_labels"]), _label(data["column_labels"])
    probe = _cell_size([[_Panel(max(rows, cols), cols + 2)]])
    left, top = _label_space(row_labels + column_labels, probe), _label_space(column_labels, probe)
    line = [_Panel(rows, cols, left=left, top=top, gap=0.1), _Panel(symbol="@", gap=0.1),
            _Panel(cols, 1, left=left, top=top, gap=0.1), _Panel(symbol="=", gap=0.1),
            _Panel(rows, 1, left=left, top=top)]
    title = (f"The convolution as one matrix: M {matrix.shape} @ input.ravel() ({cols},) = output.ravel() ({rows},)"
             f"\nrow o,y,x: one output element; column c,y,x: one input element; tinted: the {int(is_tap.sum())} "
             "kernel taps (blank: zeros)")
    figure, cell, placed = _titled([line], title)
    rects = iter(placed[0])
    _cells(_axes(figure, next(rects)), matrix, np.where(is_tap, KERNEL, "#ffffff").astype(object), cell,
           show=is_tap, title=f"M {matrix.shape}", row_labels=row_labels, column_labels=column_labels)
    _symbol(figure, next(rects), "@")
    _cells(_axes(figure, next(rects)), x, np.full(x.shape, "#ffffff", dtype=object), cell, title="input",
           row_labels=column_labels)
    _symbol(figure, next(rects), "=")
    _cells(_axes(figure, next(rects)), y, np.full(y.shape, DONE, dtype=object), cell, title="output",
           row_labels=row_labels)
    return _save(figure, path, dpi)
