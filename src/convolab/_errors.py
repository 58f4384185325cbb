"""One way to reject an argument: name the op, the parameter, the value and the rule."""

from __future__ import annotations

from typing import NoReturn

__all__ = ["fail"]


def fail(kind: type[Exception], op: str, name: str, got: str, rule: str) -> NoReturn:
    """Raise ``kind`` with the message ``"{op}: {name} {rule}, got {got}"``.

    >>> fail(ValueError, "conv2d", "stride", "0", "must be >= 1")
    Traceback (most recent call last):
    ...
    ValueError: conv2d: stride must be >= 1, got 0
    """
    raise kind(f"{op}: {name} {rule}, got {got}")
