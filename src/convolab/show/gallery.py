"""``convolab gallery``: the standard convolution cases as GIFs, with real numbers, and an index saying what each shows.

The cases are the ones a course puts on its slides: no padding, half
("same") padding, full padding, stride 2, stride 2 with padding, dilation 2,
and each one's transposed counterpart (the transposed convolution with the
same kernel, stride, padding and dilation, taking the forward output's shape
back to the forward input's). Every number in a frame is computed by
convolab (:func:`~convolab.show.explain.slide_steps`, checked against the op),
and every frame shades the padding, marks the input cells no window reads and
writes each window cell's product (:func:`~convolab.show.pictures.animate`).

matplotlib is imported only when a GIF is drawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .._errors import fail
from ..shapes import conv_transpose_output_size
from .explain.cases import Case
from .explain.slide import slide_steps

__all__ = ["GalleryCase", "gallery_cases", "write_gallery", "index_text", "GALLERY_NAMES", "FORWARD_CASES",
           "INDEX_NAME"]

#: The index written beside the GIFs.
INDEX_NAME = "index.md"

#: The kernel of every case: small integers, so each product can be checked by eye, and not symmetric under a
#: 180° rotation, so the transposed cases show the rotation.
KERNEL = np.array([[1, 0, 2], [0, 1, 0], [-1, 0, 1]])


@dataclass(frozen=True)
class GalleryCase:
    """One GIF of the gallery: its file name (without ``.gif``), a title, what it shows, and the case."""

    name: str
    title: str
    shows: str
    case: Case


def _grid(height: int, width: int) -> np.ndarray:
    """``1, 2, 3, ...`` in a one-channel ``(1, height, width)`` image: every cell's number is its place."""
    return np.arange(1, height * width + 1).reshape(1, height, width)


#: The forward cases: name, title, input size, parameters, and what the GIF shows (each statement checked by
#: tests/test_gallery.py against the case).
FORWARD_CASES = (
    ("no-padding", "No padding", (4, 4), {},
     "The 3x3 kernel stays inside the 4x4 input: (4 - 3)/1 + 1 = 2 positions per axis, a 2x2 output."),
    ("same", "Half (same) padding", (4, 4), {"padding": 1},
     "One zero (k // 2) on each side keeps the size: (4 - 3 + 2*1)/1 + 1 = 4. The edge windows read padding."),
    ("full", "Full padding", (3, 3), {"padding": 2},
     "k - 1 = 2 zeros on each side: every placement where kernel and input overlap, "
     "(3 - 3 + 2*2)/1 + 1 = 5; a corner window reads a single input cell."),
    ("stride-2", "Stride 2", (6, 6), {"stride": 2},
     "The window moves 2 cells at a time: floor((6 - 3)/2) + 1 = 2; the last row and column are never read."),
    ("stride-2-padding-1", "Stride 2 with padding 1", (5, 5), {"stride": 2, "padding": 1},
     "Padding 1 then stride 2: floor((5 - 3 + 2*1)/2) + 1 = 3, the input size halved and rounded up."),
    ("dilation-2", "Dilation 2", (6, 6), {"dilation": 2},
     "The kernel's taps are 2 cells apart, so it spans 2*(3 - 1) + 1 = 5 cells: (6 - 5)/1 + 1 = 2."),
)

#: Every GIF's name, in the gallery's order: each forward case, then its transposed counterpart.
GALLERY_NAMES = tuple(name + suffix for name, *_ in FORWARD_CASES for suffix in ("", "-transposed"))


def gallery_cases() -> list[GalleryCase]:
    """The gallery's cases, forward ones first, each followed by its transposed counterpart.

    >>> [(entry.name, entry.case.output().shape[1:]) for entry in gallery_cases()[:2]]
    [('no-padding', (2, 2)), ('no-padding-transposed', (4, 4))]
    """
    weight = KERNEL[None, None]  # conv2d's (C_out, C_in, kH, kW) and conv_transpose2d's (C_in, C_out, kH, kW) alike
    entries = []
    for name, title, size, params, shows in FORWARD_CASES:
        image = _grid(*size)
        case = Case(name, image, weight, **params)
        entries.append(GalleryCase(name, title, shows, case))
        # The transposed counterpart maps the forward output's shape back to the forward input's: output_padding
        # supplies what a stride's floor dropped.
        out_h, out_w = case.output().shape[1:]
        stride, padding, dilation = params.get("stride", 1), params.get("padding", 0), params.get("dilation", 1)
        extra = tuple(size - conv_transpose_output_size(out, len(KERNEL), stride, (padding, padding), dilation)
                      for size, out in zip(image.shape[1:], (out_h, out_w)))
        transposed = Case(f"{name}-transposed", _grid(out_h, out_w), weight, transposed=True,
                          output_padding=extra if any(extra) else 0, **params)
        border = dilation * (len(KERNEL) - 1) - padding  # zeros around the input, seen from the output
        canvas = (" spread with stride - 1 = 1 zero between samples" if stride > 1 else "") + (
            f"{' and' if stride > 1 else ''} padded with dilation*(k - 1) - padding = {border} zeros on each side"
            + (" (and output_padding 1 more at the end)" if any(extra) else "") if border > 0 else
            f"{',' if stride > 1 else ''} not padded at all (dilation*(k - 1) - padding = 0)")
        entries.append(GalleryCase(
            f"{name}-transposed", f"{title}, transposed",
            f"conv_transpose2d with the same kernel and parameters takes the {out_h}x{out_w} shape back to "
            f"{image.shape[1]}x{image.shape[2]}"
            + (" (output_padding 1 restores the row and column the stride's floor dropped)" if any(extra) else "")
            + ". Seen from the output it is a convolution at stride 1 with the kernel rotated 180°, over the input"
            + canvas + ".", transposed))
    return entries


def _command(case: Case) -> str:
    """The ``convolab animate`` command that draws ``case`` on its own."""
    rows = "; ".join(" ".join(str(v) for v in row) for row in case.input[0])
    kernel = "; ".join(" ".join(str(v) for v in row) for row in case.weight[0, 0])
    flags = [f'--input "{rows}"', f'--kernel "{kernel}"']
    for flag, value, default in (("stride", case.stride, 1), ("padding", case.padding, 0),
                                 ("dilation", case.dilation, 1), ("output-padding", case.output_padding, 0)):
        if value != default:
            flags.append(f"--{flag} {','.join(map(str, value)) if isinstance(value, tuple) else value}")
    if case.transposed:
        flags.append("--transposed")
    return "convolab animate " + " ".join(flags) + f" --output {case.name}.gif"


def write_gallery(folder: str | os.PathLike, *, names: Sequence[str] | None = None, fps: float = 1.0,
                  dpi: int = 100, progress: Any = None) -> dict[str, Any]:
    """Write the gallery's GIFs and its index (``index.md``) into ``folder``, which is created if need be.

    Parameters
    ----------
    folder : path-like
        Where the GIFs and the index go.
    names : sequence of str, optional
        Only these cases (names from :func:`gallery_cases`); all by default.
    fps : float
        Frames per second.
    dpi : int
        Pixels per inch.
    progress : callable, optional
        Called with each GIF's result (a dict, as :func:`~convolab.show.pictures.animate`
        returns it) as soon as it is written.

    Returns
    -------
    dict
        ``{"index": path, "gifs": [...]}``: the index and, per GIF, ``animate``'s
        result (``path``, ``frames``, ``elements``, ``size``, ``bytes``) with
        its ``name``.

    Raises
    ------
    ValueError
        A name that is not a gallery case.
    """
    from .pictures import FRAME_LIMIT, animate

    entries = gallery_cases()
    known = [entry.name for entry in entries]
    wanted = list(known if names is None else names)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        fail(ValueError, "gallery", "names", repr(unknown), f"must be among {', '.join(known)}")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    gifs = []
    for entry in entries:
        if entry.name not in wanted:
            continue
        result = animate(slide_steps(entry.case), os.path.join(folder, f"{entry.name}.gif"), fps=fps, dpi=dpi,
                         frames=FRAME_LIMIT)
        gifs.append({"name": entry.name, **result})
        if progress is not None:
            progress(gifs[-1])
    index = os.path.join(folder, INDEX_NAME)
    with open(index, "w", encoding="utf-8") as file:
        file.write(index_text([entry for entry in entries if entry.name in wanted], gifs))
    return {"index": index, "gifs": gifs}


def index_text(entries: Sequence[GalleryCase], gifs: Sequence[dict[str, Any]]) -> str:
    """The index, in Markdown: per GIF, what it shows, the case, its frames and size, and the command for it."""
    from .pictures import kilobytes

    lines = [
        "# The convolution gallery",
        "",
        "Each GIF slides the kernel over the input, one frame per output element. In every frame: the window in "
        "orange, each window cell's value with the kernel tap it meets (`×2`) and their product (`=14`) under it; "
        "the padding shaded grey; input cells no window ever reads in red; inserted zeros (transposed, stride 2) "
        "in blue; the sum written out under the grids; the output filling in. Every number is computed by "
        "convolab and checked against `conv2d` or `conv_transpose2d`.",
        "",
    ]
    for entry, gif in zip(entries, gifs):
        lines += [
            f"## {entry.title}",
            "",
            entry.shows,
            "",
            f"`{entry.case.describe()}`: {gif['frames']} frames, {gif['size'][0]}x{gif['size'][1]} pixels, "
            f"{kilobytes(gif['bytes'])}.",
            "",
            f"![{entry.title}]({entry.name}.gif)",
            "",
            "Draw it alone (change the numbers to try your own):",
            "",
            "```sh",
            _command(entry.case),
            "```",
            "",
        ]
    return "\n".join(lines)
