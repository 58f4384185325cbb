"""Renamed :mod:`convolab._engine` (what it is: the engine that runs the planner's passes).

Kept so that ``from convolab._conv import ...`` still works: every name is the engine's.
"""

from __future__ import annotations

from typing import Any

from . import _engine


def __getattr__(name: str) -> Any:
    return getattr(_engine, name)
