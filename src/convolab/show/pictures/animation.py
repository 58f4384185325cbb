"""The GIF of the kernel sliding (``convolab animate``, ``convolab gallery``): one frame per output element.

Each frame draws one :func:`~convolab.show.explain.slide_steps` element step:
the window on the canvas (padding shaded, never-read cells marked, inserted
zeros for a transposed convolution), each window cell's value with its kernel
tap and product written under it, the kernel, the product-sum written out,
and the output filling in.

A frame takes about half a second to draw and some tens of KB to store, so
past :data:`FRAME_LIMIT` frames an animation is long to make and to watch:
``frames=`` draws an evenly spread subset (the CLI does so by default, and
says so), and more than :data:`MAX_FRAMES` are refused.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import numpy as np

from ..._errors import fail
from .._format import factor, number, terms
from ..explain.slide import INPUT, INSERTED, PADDING, UNREAD
from ..explain.steps import Step
from ._grid import (DONE, EDGE, KERNEL, ROLE_COLOURS, ROLE_LABELS, WINDOW, _axes, _canvas_labels, _cell_size,
                    _cells, _figure, _font_size, _label_space, _layout, _make_folder, _matplotlib, _numbered, _Panel,
                    _saved_size, _wrapped)

__all__ = ["animate", "check_frames", "frame_elements", "kilobytes", "MAX_FRAMES", "FRAME_LIMIT"]

#: ``animate`` refuses to draw more frames than this (each takes about half a second and tens of KB).
MAX_FRAMES = 400

#: Past this many frames an animation is slow to make and to watch: ``convolab animate`` then draws this many,
#: evenly spread, unless ``--frames`` says otherwise, and :func:`animate` warns when asked for all of them.
FRAME_LIMIT = 64

#: A window cell's tap (``×9``) and product (``=45``), in points: legible at 100% zoom (13 pixels at 100 dpi).
TAP_POINTS = 9.5

#: The canvas cell, in inches: room for a value and, in the window, its tap and product under it.
ANIMATION_CELL_INCHES = 0.62

#: Colours a GIF's frames share: one palette for all, so that each frame after the first stores only the pixels
#: that changed (fewer than 256, leaving an index free for "transparent: as before").
PALETTE_COLOURS = 96

TAP_COLOUR = "#7a3b00"


def check_frames(frames: int) -> None:
    """Refuse (ValueError) an animation of more than :data:`MAX_FRAMES` frames, before any is computed."""
    if frames > MAX_FRAMES:
        fail(ValueError, "animate", "output", f"{frames:,} elements",
             f"must have at most {MAX_FRAMES} elements to animate, as frames are one per element (give a smaller "
             f"input or a larger stride, or draw an evenly spread subset: frames={FRAME_LIMIT}, on the command "
             f"line --frames {FRAME_LIMIT})")


def frame_elements(elements: int, frames: int | None = None) -> list[int]:
    """The output elements (flat indices) that get a frame: every one, or ``frames`` of them evenly spread.

    The first and the last element are always drawn.

    >>> frame_elements(4), frame_elements(324, 5)
    ([0, 1, 2, 3], [0, 81, 162, 242, 323])
    """
    if frames is None or frames >= elements:
        return list(range(elements))
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        fail(ValueError, "animate", "frames", repr(frames), "must be None (every element) or an int >= 1")
    if frames == 1:
        return [0]
    # Steps of (elements - 1) / (frames - 1) > 1 apart, so no two round to the same element.
    return [int(i) for i in np.linspace(0, elements - 1, frames).round()]


def kilobytes(size: int) -> str:
    """A file's size as the CLI and the gallery's index write it, rounded up.

    >>> kilobytes(1), kilobytes(66_560)
    ('1 KB', '65 KB')
    """
    return f"{(size + 1023) // 1024:,} KB"


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
        probe = _cell_size([[_Panel(height, width * channels + kw * per_group + out_w * out_channels)]],
                           ANIMATION_CELL_INCHES)
        left, top = _label_space(self.row_labels, probe), _label_space(self.column_labels, probe, above=True)
        panels = [_Panel(height, width, left=left, top=top, gap=0.35) for _ in range(channels)]
        panels[-1] = _Panel(height, width, left=left, top=top, gap=0.7)
        panels += [_Panel(kh, kw, gap=0.3) for _ in range(per_group)]
        panels[-1] = _Panel(kh, kw, gap=0.7)
        panels += [_Panel(out_h, out_w, gap=0.3) for _ in range(out_channels)]
        self.cell = _cell_size([panels], ANIMATION_CELL_INCHES)
        self.width = max(_layout([panels], self.cell, 0, 0)[0], 7.5)
        longest = max((data["shapes"], data["parameters"]), key=len)
        title_lines = 1 + _wrapped(longest, self.width, 10).count("\n") + 2
        self.header = 0.2 + 0.18 * title_lines
        width, self.height, placed = _layout([panels], self.cell, self.header, 1.0)
        self.width = max(width, 7.5)
        self.rects = placed[0]
        self.groups = (channels, per_group, out_channels)
        transposed = data["op"] == "conv_transpose2d"
        spread, padded = (self.role == INSERTED).any(), (self.role == PADDING).any()
        self.canvas_note = " " + " + ".join(w for w, on in (("spread", spread), ("padded", padded)) if on) \
            if spread or padded else ""
        self.kernel_note = " rotated 180°" if transposed else ""

    def draw(self, figure: Any, step: Step, frame: int, total: int, filled: np.ndarray, elements: int) -> None:
        """Draw one element step: ``frame`` of ``total`` drawn, ``filled`` the output elements already computed."""
        _, _, Rectangle = _matplotlib()
        channels, per_group, out_channels = self.groups
        kernel = np.asarray(step.data["kernel"])  # (C/groups, kH, kW)
        o, y, x = step.data["at"]
        reads = step.data["channels"]
        taps = np.asarray(step.data["taps"])
        weights = kernel.reshape(kernel.shape[0], -1)
        products = np.asarray(step.data["product"]).reshape(kernel.shape[0], -1)
        rects = iter(self.rects)
        role_colours = np.vectorize(ROLE_COLOURS.get, otypes=[object])(self.role)
        text_colours = np.where(self.role == INPUT, "black", np.where(self.role == UNREAD, "#8b1a1a", "#6b6b6b"))
        for c in range(channels):
            ax = _axes(figure, next(rects))
            colours = role_colours.copy()
            in_window = np.zeros(self.role.shape, dtype=bool)
            if c in reads:
                colours[taps[:, 0], taps[:, 1]] = WINDOW
                in_window[taps[:, 0], taps[:, 1]] = True
            numbered = _numbered(self.cell, self.canvas[c].size)
            _cells(ax, self.canvas[c], colours, self.cell, text_colours=text_colours,
                   show=~in_window if numbered else None, title=f"input[{c}]" + self.canvas_note,
                   row_labels=self.row_labels, column_labels=self.column_labels)
            if c not in reads:
                continue
            if numbered:
                channel = reads.index(c)
                self._window_cells(ax, self.canvas[c], taps, weights[channel], products[channel], text_colours)
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
        index = step.data["index"] + 1
        which = (f"frame {frame} of {total}: output element ({o}, {y}, {x})" if total == elements else
                 f"frame {frame} of {total} (every element would be {elements}; these are evenly spread): "
                 f"output element {index} of {elements}, ({o}, {y}, {x})")
        title = f"{self.first.data['shapes']}\n{self.first.data['parameters']}\n{which}"
        figure.text(0.5, 1 - 0.12 / self.height, _wrapped(title, self.width, 10), ha="center", va="top",
                    fontsize=10)
        written_out = terms(step.data["window"], step.data["kernel"], step.data["sum"])
        figure.text(0.5, 0.66 / self.height, _wrapped(f"out[{o}, {y}, {x}] = {written_out}", self.width, 11, 0.62),
                    ha="center", va="center", fontsize=11, family="monospace")
        present = [code for code in (PADDING, INSERTED, UNREAD) if (self.role == code).any()]
        handles = [Rectangle((0, 0), 1, 1, facecolor=WINDOW, edgecolor=EDGE)]
        handles += [Rectangle((0, 0), 1, 1, facecolor=ROLE_COLOURS[code], edgecolor=EDGE) for code in present]
        handles.append(Rectangle((0, 0), 1, 1, facecolor=DONE, edgecolor=EDGE))
        labels = ["window: value, ×tap, =product"] + [ROLE_LABELS[code] for code in present] + ["computed"]
        figure.legend(handles, labels, loc="lower center", fontsize=9, ncol=len(handles), frameon=False,
                      bbox_to_anchor=(0.5, 0.02 / self.height))

    def _window_cells(self, ax: Any, values: np.ndarray, taps: np.ndarray, weights: np.ndarray,
                      products: np.ndarray, text_colours: np.ndarray) -> None:
        """Each window cell: its value, and under it the kernel tap it meets (``×9``) and their product (``=45``)."""
        cell_points = self.cell * 72
        value_size = min(_font_size(values, cell_points), cell_points * 0.3)
        for (row, col), weight, product in zip(taps, weights, products):
            tap, result = f"×{factor(weight)}", f"={number(product)}"
            # The wider of the two lines fits the cell (about 0.6 em a character).
            size = min(TAP_POINTS, cell_points * 0.95 / (0.6 * max(len(tap), len(result))))
            if cell_points < 30 or size < 6:  # too small for three lines: the value, and the tap in the corner
                ax.text(col + 0.5, row + 0.5, number(values[row, col]), ha="center", va="center",
                        fontsize=_font_size(values, cell_points), color=text_colours[row, col])
                ax.text(col + 0.96, row + 0.96, tap, ha="right", va="bottom", fontsize=max(size, 6),
                        color=TAP_COLOUR)
                continue
            ax.text(col + 0.5, row + 0.27, number(values[row, col]), ha="center", va="center", fontsize=value_size,
                    color=text_colours[row, col])
            ax.text(col + 0.5, row + 0.58, tap, ha="center", va="center", fontsize=size, color=TAP_COLOUR)
            ax.text(col + 0.5, row + 0.84, result, ha="center", va="center", fontsize=size, color=TAP_COLOUR,
                    fontweight="bold")


def animate(steps: Sequence[Step], path: str | os.PathLike, *, fps: float = 1.25, dpi: int = 100,
            frames: int | None = None) -> dict[str, Any]:
    """Write a GIF of the kernel sliding: one frame per output element (or an evenly spread ``frames`` of them).

    Parameters
    ----------
    steps : sequence of Step
        :func:`convolab.show.explain.slide_steps` of a case: the canvas step, then
        one step per output element.
    path : path-like
        Where to write the GIF (its folder is created).
    fps : float
        Frames per second.
    dpi : int
        Pixels per inch of the figure.
    frames : int or None
        Draw this many output elements, evenly spread from the first to the
        last (the output still fills in element by element); None draws every
        one, with a warning past :data:`FRAME_LIMIT`.

    Returns
    -------
    dict
        ``{"path", "frames", "elements", "size", "bytes"}``: the file, the
        frames drawn, the output elements there are, ``(width, height)`` in
        pixels and the file's size in bytes.

    Raises
    ------
    ValueError
        Steps that are not slide steps, more than :data:`MAX_FRAMES` frames,
        ``frames`` not None or an int >= 1, or an ``fps`` that is not a finite
        number > 0.

    Warns
    -----
    UserWarning
        ``frames=None`` and more than :data:`FRAME_LIMIT` output elements.
    """
    if not steps or steps[0].topic != "slide" or "canvas" not in steps[0].data:
        raise ValueError("animate: steps must be slide_steps(case): the canvas step first, then one per element")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not (
            np.isfinite(fps) and fps > 0):
        fail(ValueError, "animate", "fps", repr(fps), "must be a finite number > 0")
    first, elements = steps[0], list(steps[1:])
    chosen = frame_elements(len(elements), frames)
    check_frames(len(chosen))
    if frames is None and len(chosen) > FRAME_LIMIT:
        warnings.warn(f"animate: drawing {len(chosen)} frames, one per output element, takes about "
                      f"{len(chosen) // 2} s and some MB; frames={FRAME_LIMIT} draws an evenly spread "
                      f"{FRAME_LIMIT}", stacklevel=2)
    _make_folder(path)  # before drawing: a path that cannot be written fails at once
    layout = _Animation(first)
    figure = _figure(layout.width, layout.height, dpi)
    flat_order = np.arange(layout.outputs.size).reshape(layout.outputs.shape)
    pictures = []
    for frame, element in enumerate(chosen, 1):
        figure.clear()
        layout.draw(figure, elements[element], frame, len(chosen), flat_order < element, len(elements))
        pictures.append(_grabbed(figure, pictures[0] if pictures else None))
    # optimize: each frame after the first keeps only the pixels that changed (the rest transparent), which LZW
    # compresses to almost nothing; most of a frame is the same as the one before.
    pictures[0].save(os.fspath(path), save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0,
                     optimize=True)
    return {"path": os.fspath(path), "frames": len(chosen), "elements": len(elements),
            "size": _saved_size(path), "bytes": os.path.getsize(path)}


def _grabbed(figure: Any, palette: Any) -> Any:
    """The figure as drawn, a palette image in ``palette``'s colours (None: the first frame, which makes it).

    All frames share one palette, so a pixel that did not change keeps its
    index and the GIF stores it as transparent. The palette is made from the
    first frame and a band of every fill colour (so that a colour the first
    frame shows only in its legend, such as "computed", keeps its own entry).
    """
    import matplotlib.colors as mcolors
    from PIL import Image

    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    image = Image.fromarray(pixels)
    if palette is None:
        fills = [WINDOW, DONE, KERNEL, TAP_COLOUR, *ROLE_COLOURS.values()]
        bands = np.repeat(np.array([mcolors.to_rgb(c) for c in fills]) * 255, 32, axis=0).round().astype(np.uint8)
        bands = np.broadcast_to(bands[:, None, :], (len(bands), pixels.shape[1], 3))
        sample = Image.fromarray(np.concatenate([pixels, bands]))
        palette = sample.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return image.quantize(palette=palette, dither=Image.Dither.NONE)
