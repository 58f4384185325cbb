"""Fixtures shared by the test modules."""

from __future__ import annotations

from typing import Iterator

import pytest

from convolab import planner
from convolab.algorithms import _compiled


@pytest.fixture
def without_numba() -> Iterator[None]:
    """The planner as it plans where Numba cannot be imported: every compiled algorithm refuses every problem,
    so that "auto" chooses among the NumPy paths (whose own planning these tests pin)."""
    saved = _compiled._checked, _compiled._missing
    _compiled._checked, _compiled._missing = True, "numba is not installed (hidden by the test)"
    planner._forget_plans()
    try:
        yield
    finally:
        _compiled._checked, _compiled._missing = saved
        planner._forget_plans()  # plans made without it would outlive the test
