"""Numbers, arrays and JSON as the showing-the-work code writes them: one place for all of it.

:func:`compact_number` (four significant digits, complex numbers to three,
``-0`` kept) is what ``str(trace)`` puts in its side-by-side cells, where
width matters more than the last digits. :func:`json_value` writes complex
numbers as ``[real, imag]`` pairs and leaves non-finite floats to :mod:`json`
(the data of :class:`~convolab.Trace` and :class:`~convolab.Identity`).

>>> compact_number(2 / 3), compact_number(-0.0), grid_lines(marked(np.array([1, 22]), np.array([True, False])), 4)
('0.6667', '-0', [' [1]  22 '])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "compact_number",
    "grid_lines",
    "marked",
    "json_value",
]


# -- one number ------------------------------------------------------------------------------------


def _exact_int(value: Any) -> str | None:
    """An integer (or bool) written exactly; None for anything else."""
    return str(int(value)) if isinstance(value, (bool, int)) else None


def compact_number(value: Any) -> str:
    """One number as short text: integers exactly, floats to four significant digits, complex to three."""
    value = value.item() if isinstance(value, np.generic) else value
    exact = _exact_int(value)
    if exact is not None:
        return exact
    if isinstance(value, complex):
        return f"{value:.3g}"
    return f"{value:.4g}"


# -- whole arrays ----------------------------------------------------------------------------------


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
