"""The PNGs of ``convolab draw``: the im2col product beside the input it unrolls, and the convolution matrix."""

from __future__ import annotations

import os
from math import prod
from typing import Any, Sequence

import numpy as np

from ..._errors import fail
from ..._window import pad
from ..explain.slide import INPUT, PADDING, UNREAD, window_taps
from ..explain.steps import Step
from ._grid import (DONE, KERNEL, ROLE_COLOURS, _axes, _canvas_labels, _cell_size, _cells, _label, _label_space,
                    _Panel, _save, _symbol, _titled)

__all__ = ["draw_im2col", "draw_conv_matrix", "check_drawn_cells", "window_colours", "MAX_DRAWN_CELLS"]

#: ``draw_conv_matrix`` refuses a matrix of more cells than this (1024 x 1024: past it a cell is under a pixel).
MAX_DRAWN_CELLS = 1 << 20

#: One colour per window (unrolled row), repeating after this many; mid-tone, so black numbers on their tints read.
WINDOW_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")

#: Past this many windows their outlines on the input would be a thicket: the rows keep their colours only.
MAX_OUTLINED_WINDOWS = 36

#: How much of a window's colour its row's cells take (the rest white), so the numbers stay legible.
TINT = 0.3


def check_drawn_cells(op: str, name: str, shape: Sequence[int]) -> None:
    """Refuse (ValueError) drawing a matrix of more than :data:`MAX_DRAWN_CELLS` cells, before it is built."""
    cells = prod(shape)
    if cells > MAX_DRAWN_CELLS:
        fail(ValueError, op, name, f"shape {tuple(shape)} = {cells:,} cells",
             f"must have at most {MAX_DRAWN_CELLS:,} cells to be drawn (one row per output element, one column "
             "per input element: give a smaller input)")


def window_colours(windows: int) -> list[str]:
    """The colour of each window (and of its unrolled row, product row and output cells), cycling.

    >>> window_colours(10)[0] == window_colours(10)[9]
    True
    """
    return [WINDOW_COLOURS[r % len(WINDOW_COLOURS)] for r in range(windows)]


def _tint(colour: str) -> str:
    """``colour`` mixed with white, as a hex string: the background of a window's cells."""
    import matplotlib.colors as mcolors

    return mcolors.to_hex(TINT * np.array(mcolors.to_rgb(colour)) + (1 - TINT))


def _ink(colour: str) -> str:
    """Black or white, whichever reads better on ``colour`` (by its luminance)."""
    import matplotlib.colors as mcolors

    red, green, blue = mcolors.to_rgb(colour)
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def draw_im2col(step: Step, path: str | os.PathLike, *, dpi: int = 100) -> dict[str, Any]:
    """Write a PNG of the input and its windows, and ``unrolled @ filters = product`` reshaped into the output.

    Each output position ``y,x`` has one window on the (padded) input, one
    row of the unrolled input, one row of the product and one cell of each
    output channel: all four are drawn in that position's colour (the
    window as an outline on the input, the others tinted; colours repeat
    after :data:`WINDOW_COLOURS`' nine). Columns of the unrolled input are the
    taps ``c,i,j``; cells from the zero padding are grey, and input cells no
    window reads are marked. With groups, one line of matrices per group.

    Returns
    -------
    dict
        ``{"path", "size", "legend", "row_colours", "row_pixels"}``: the file,
        its size in pixels, the legend line of its title, each unrolled row's
        colour, and a pixel ``(x, y)`` inside each row's colour swatch (where
        the PNG shows that colour).
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
    image = np.asarray(data["input"])
    canvas = pad(image, data["padding"])  # (C, H + padding, W + padding)
    role = np.where(pad(np.ones(image.shape[1:], dtype=bool), data["padding"]), INPUT, PADDING)
    windows = [window_taps(position, data["stride"], data["dilation"], data["kernel_size"])
               for position in data["row_labels"]]
    read = np.zeros(role.shape, dtype=bool)
    for cells in windows:
        read[tuple(np.transpose(cells))] = True
    role[(role == INPUT) & ~read] = UNREAD
    colours = window_colours(rows)
    tints = np.array([_tint(colour) for colour in colours], dtype=object)

    row_labels, column_labels = _label(data["row_labels"]), _label(data["column_labels"])
    canvas_rows, canvas_cols = _canvas_labels(role, 0), _canvas_labels(role, 1)  # input indices; padding blank
    filter_labels = [[f"f{g * per_group + o}" for o in range(per_group)] for g in range(groups)]
    probe = _cell_size([[_Panel(rows, 1 + taps + 2 * per_group + per_group * out_w)]] * groups
                       + [[_Panel(canvas.shape[1], canvas.shape[2] * canvas.shape[0])]])
    left, top = _label_space(row_labels, probe), _label_space(column_labels, probe, above=True)
    source = [_Panel(*canvas.shape[1:], left=_label_space(canvas_rows, probe),
                     top=_label_space(canvas_cols, probe, above=True), gap=0.4) for _ in range(canvas.shape[0])]
    line = [_Panel(rows, 1, top=top, gap=0.08), _Panel(rows, taps, top=top, gap=0.2), _Panel(symbol="@", gap=0.2),
            _Panel(taps, per_group, left=left, top=top, gap=0.2), _Panel(symbol="=", gap=0.2),
            _Panel(rows, per_group, left=left, top=top, gap=0.1), _Panel(symbol="→", gap=0.2)]
    line += [_Panel(out_h, out_w, top=top, gap=0.3) for _ in range(per_group)]
    marks = ["rows: one per window, in its colour (output position y,x); columns: tap c,i,j (channel, kernel row, "
             "kernel column)"]
    if from_padding.any():
        marks.append("grey: from the zero padding")
    if (role == UNREAD).any():
        marks.append("red: input no window reads")
    if rows > len(WINDOW_COLOURS):
        marks.append(f"colours repeat every {len(WINDOW_COLOURS)} windows")
    title = (f"im2col: each window of the input, laid flat, is one row of the unrolled input {unrolled.shape[-2:]}; "
             f"unrolled @ filters {filters.shape[-2:]} = product {product.shape[-2:]}"
             + (f" in each of {groups} groups" if groups > 1 else "")
             + f", reshaped to the output {output.shape}\n" + "; ".join(marks))
    figure, cell, placed = _titled([source] + [line] * groups, title)

    role_colours = np.vectorize(ROLE_COLOURS.get, otypes=[object])(role)
    outlined = rows <= MAX_OUTLINED_WINDOWS
    for c, rect in enumerate(placed[0]):
        ax = _axes(figure, rect)
        _cells(ax, canvas[c], role_colours, cell, title=f"input[{c}]" + (" padded" if (role == PADDING).any() else ""),
               text_colours=np.where(role == INPUT, "black", np.where(role == UNREAD, "#8b1a1a", "#6b6b6b")),
               row_labels=canvas_rows, column_labels=canvas_cols)
        if outlined:
            _outline_windows(ax, windows, colours)
    swatch_pixels = []
    for g, rects in enumerate(placed[1:]):
        rects = iter(rects)
        suffix = f", group {g}" if groups > 1 else ""
        x, y, _, _ = swatch = next(rects)
        ax = _axes(figure, swatch)
        if _cells(ax, np.zeros((rows, 1)), np.array(colours, dtype=object)[:, None], cell,
                  show=np.zeros((rows, 1), dtype=bool), title="y,x"):
            for r, (label, colour) in enumerate(zip(row_labels, colours)):
                ax.text(0.5, r + 0.5, label, ha="center", va="center", fontsize=9, color=_ink(colour),
                        fontweight="bold")
        if g == 0:  # a point of each swatch away from its label and the grid lines: where its colour shows
            swatch_pixels = [(round((x + 0.12 * cell) * dpi), round((y + (r + 0.12) * cell) * dpi))
                             for r in range(rows)]
        row_tints = np.repeat(tints[:, None], taps, axis=1)
        unrolled_colours = np.where(from_padding[g], ROLE_COLOURS[PADDING], row_tints).astype(object)
        _cells(_axes(figure, next(rects)), unrolled[g], unrolled_colours, cell,
               title=f"unrolled input {unrolled[g].shape}{suffix}", column_labels=column_labels)
        _symbol(figure, next(rects), "@")
        _cells(_axes(figure, next(rects)), filters[g], np.full(filters[g].shape, KERNEL, dtype=object), cell,
               title=f"filters {filters[g].shape}", row_labels=column_labels, column_labels=filter_labels[g])
        _symbol(figure, next(rects), "=")
        _cells(_axes(figure, next(rects)), product[g], np.repeat(tints[:, None], per_group, axis=1), cell,
               title=f"product {product[g].shape}", row_labels=row_labels, column_labels=filter_labels[g])
        _symbol(figure, next(rects), "→")
        for o in range(per_group):
            channel = g * per_group + o
            _cells(_axes(figure, next(rects)), output[channel], tints.reshape(out_h, out_w), cell,
                   title=f"output[{channel}]")
    result = _save(figure, path, dpi)
    return {**result, "legend": "; ".join(marks), "row_colours": colours, "row_pixels": swatch_pixels}


def _outline_windows(ax: Any, windows: Sequence[Sequence[Sequence[int]]], colours: Sequence[str]) -> None:
    """Each window's box on the input, in its colour, inset by a step that differs between neighbours.

    Windows overlap, so their boxes would share edges: the insets (four, cycling) keep every box visible.
    """
    from matplotlib.patches import Rectangle

    for r, (cells, colour) in enumerate(zip(windows, colours)):
        (top, left), (bottom, right) = np.min(cells, axis=0), np.max(cells, axis=0) + 1
        inset = 0.07 + 0.08 * (r % 4)
        ax.add_patch(Rectangle((left + inset, top + inset), right - left - 2 * inset, bottom - top - 2 * inset,
                               fill=False, edgecolor=colour, linewidth=2.0))


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
    left, top = _label_space(row_labels + column_labels, probe), _label_space(column_labels, probe, above=True)
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
