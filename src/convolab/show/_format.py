"""Numbers, arrays and JSON as the showing-the-work code writes them: one place for all of it.

Two number styles, because two kinds of text need them:

- :func:`number` (six significant digits, ``-0`` written ``0``) is what
  ``convolab explain`` and the pictures print: enough digits to check a sum by hand;
- :func:`compact_number` (four significant digits, complex numbers to three,
  ``-0`` kept) is what ``str(trace)`` puts in its side-by-side cells, where
  width matters more than the last digits.

And two JSON styles: :func:`json_value` writes complex numbers as
``[real, imag]`` pairs and leaves non-finite floats to :mod:`json` (the data of
:class:`~convolab.Trace` and :class:`~convolab.Identity`); :func:`strict_json`
writes non-finite floats as strings and sparse matrices dense up to a limit
(the explanations, which promise strict JSON).

>>> number(2 / 3), compact_number(2 / 3), number(-0.0), compact_number(-0.0)
('0.666667', '0.6667', '0', '-0')
>>> terms(np.array([1, 2]), np.array([9, -8]), -7), ranges([0, 1, 2, 5])
('1*9 + 2*(-8) = -7', '0-2, 5')
>>> grid_lines(marked(np.array([1, 22]), np.array([True, False])), 4)
[' [1]  22 ']
>>> counted(1, "row"), counted(3, "row"), counted(2, "entry", "entries")
('1 row', '3 rows', '2 entries')
"""

from __future__ import annotations

import os
import shutil
import sys
from math import prod
from typing import Any, Sequence

import numpy as np
import scipy.sparse

__all__ = [
    "MAX_TERMS",
    "MAX_DENSE_MATRIX_CELLS",
    "SUMMARY_THRESHOLD",
    "EDGE_ITEMS",
    "number",
    "compact_number",
    "factor",
    "plus",
    "vector",
    "terms",
    "shape_text",
    "ranges",
    "counted",
    "DEFAULT_WIDTH",
    "terminal_width",
    "array_lines",
    "grid_lines",
    "marked",
    "json_value",
    "strict_json",
]

#: Products written out term by term up to this many; beyond, only their count and sum.
MAX_TERMS = 12

#: The convolution matrix is kept sparse; JSON holds it dense (nested lists) up to this many entries, else null.
MAX_DENSE_MATRIX_CELLS = 65_536

#: np.array2string summarizes (first and last EDGE_ITEMS per axis, '...' between) arrays larger than this.
SUMMARY_THRESHOLD = 400
EDGE_ITEMS = 4


# -- one number ------------------------------------------------------------------------------------


def _exact_int(value: Any) -> str | None:
    """An integer (or bool) written exactly; None for anything else."""
    return str(int(value)) if isinstance(value, (bool, int)) else None


def number(value: Any) -> str:
    """One number as text: integers exactly, floats to six significant digits (``-0`` as ``0``)."""
    value = value.item() if isinstance(value, np.generic) else value
    exact = _exact_int(value)
    if exact is not None:
        return exact
    text = f"{value:.6g}"
    return "0" if text == "-0" else text


def compact_number(value: Any) -> str:
    """One number as short text: integers exactly, floats to four significant digits, complex to three."""
    value = value.item() if isinstance(value, np.generic) else value
    exact = _exact_int(value)
    if exact is not None:
        return exact
    if isinstance(value, complex):
        return f"{value:.3g}"
    return f"{value:.4g}"


def factor(value: Any) -> str:
    """A number inside a sum or product: negatives in parentheses, ``(-1)``."""
    text = number(value)
    return f"({text})" if text.startswith("-") else text


def plus(values: Sequence[Any]) -> str:
    """``83 + (-4)``."""
    return " + ".join(factor(v) for v in values)


def vector(a: np.ndarray) -> str:
    """``[1, 2, 4, 5]``: an array laid flat."""
    return "[" + ", ".join(number(v) for v in np.ravel(a)) + "]"


def terms(left: np.ndarray, right: np.ndarray, total: Any) -> str:
    """``1*9 + 2*8 + ... = 83``, or the count of products when there are more than :data:`MAX_TERMS`."""
    pairs = list(zip(np.ravel(left), np.ravel(right)))
    if len(pairs) > MAX_TERMS:
        return f"the sum of {len(pairs)} products = {number(total)}"
    return " + ".join(f"{factor(a)}*{factor(b)}" for a, b in pairs) + f" = {number(total)}"


def shape_text(a: Any) -> str:
    """An array's shape as ``(2, 3)`` (``(4)`` for one axis, unlike a tuple's ``(4,)``)."""
    return "(" + ", ".join(map(str, np.shape(a))) + ")"


def ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    parts, run = [], []
    for i in indices:
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


def counted(count: int, word: str, plural: str | None = None) -> str:
    """``1 row``, ``3 rows``: a count with its noun in the right number."""
    return f"{count} {word if count == 1 else plural or word + 's'}"


#: The width text is wrapped to when stdout is not a terminal and ``COLUMNS`` is unset.
DEFAULT_WIDTH = 80


def terminal_width() -> int:
    """The width to wrap text to: ``COLUMNS`` when set, else the terminal's, else :data:`DEFAULT_WIDTH`.

    Piped output (not a terminal) is :data:`DEFAULT_WIDTH` wide whatever
    window it came from, so a saved walk-through reads the same everywhere.
    """
    if os.environ.get("COLUMNS", "").strip().isdigit():
        return max(int(os.environ["COLUMNS"]), 40)
    if sys.stdout is not None and sys.stdout.isatty():
        return max(shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns, 40)
    return DEFAULT_WIDTH


# -- whole arrays ----------------------------------------------------------------------------------


def array_lines(a: Any) -> list[str]:
    """An array as NumPy prints it (brackets, aligned columns), long axes summarized with '...'."""
    if scipy.sparse.issparse(a):
        return _sparse_lines(a)
    a = np.asarray(a)
    if a.ndim == 0:
        return [number(a)]
    if a.size == 0:
        return [f"(empty, shape {a.shape})"]
    return _summarized(a, _width(a.ravel()), SUMMARY_THRESHOLD)


def _width(values: np.ndarray) -> int:
    """The widest number among ``values`` as :func:`number` writes it (each distinct value formatted once)."""
    return max(len(number(v)) for v in np.unique(values))


def _summarized(a: np.ndarray, width: int, threshold: int) -> list[str]:
    text = np.array2string(a, separator=" ", threshold=threshold, edgeitems=EDGE_ITEMS, max_line_width=10**6,
                           formatter={"all": lambda v: number(v).rjust(width)})
    return text.split("\n")


def _sparse_lines(matrix: Any) -> list[str]:
    """A sparse matrix exactly as :func:`array_lines` prints it dense, densifying only the rows and columns shown.

    A large matrix is printed summarized: its first and last
    :data:`EDGE_ITEMS` rows and columns. Those, plus one row and column that
    the summary hides, make a small dense array that prints the same way.
    """
    rows, cols = matrix.shape
    if rows * cols <= SUMMARY_THRESHOLD or min(rows, cols) == 0:
        return array_lines(matrix.toarray())
    matrix = scipy.sparse.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    shown = [np.r_[0:EDGE_ITEMS + 1, n - EDGE_ITEMS:n] if n > 2 * EDGE_ITEMS else np.arange(n) for n in (rows, cols)]
    corners = matrix[shown[0]][:, shown[1]].toarray()
    stored = matrix.data if matrix.nnz == rows * cols else np.append(matrix.data, 0)  # implicit zeros print too
    return _summarized(corners, _width(stored), 0)


def grid_lines(cells: np.ndarray, width: int) -> list[str]:
    """A 1-d or 2-d array of strings as right-aligned rows, without brackets."""
    rows = cells.reshape(1, -1) if cells.ndim == 1 else cells
    return [" ".join(cell.rjust(width) for cell in row) for row in rows]


def marked(values: np.ndarray, padding: np.ndarray | None) -> np.ndarray:
    """Each value as :func:`compact_number` text; in brackets where ``padding`` is set (others padded with spaces)."""
    text = np.array([compact_number(v) for v in values.ravel()], dtype=object).reshape(values.shape)
    if padding is None or not padding.any():
        return text
    return np.where(padding, "[" + text + "]", " " + text + " ")


# -- JSON ------------------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """Arrays and NumPy scalars as JSON-able lists and numbers (complex as ``[real, imag]``; NaN left as NaN)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if np.iscomplexobj(value):
            return np.stack([value.real, value.imag], axis=-1).tolist()
        return value.tolist()
    if isinstance(value, (complex, np.complexfloating)):
        return [float(value.real), float(value.imag)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def strict_json(value: Any) -> Any:
    """Arrays and NumPy scalars as strict-JSON-able lists and plain numbers.

    Non-finite floats become the strings ``"nan"``, ``"inf"`` and ``"-inf"``
    (strict JSON has no NaN or Infinity); a sparse matrix becomes nested lists
    when it has at most :data:`MAX_DENSE_MATRIX_CELLS` entries, else ``None``.
    """
    if scipy.sparse.issparse(value):
        return strict_json(value.toarray()) if prod(value.shape) <= MAX_DENSE_MATRIX_CELLS else None
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return strict_json(value.tolist())  # walk the lists to replace the non-finite numbers
        return value.tolist()
    if isinstance(value, np.generic):
        return strict_json(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)  # "nan", "inf" or "-inf"
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    return value
