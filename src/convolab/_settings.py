"""Execution settings that are not part of a convolution's meaning: the workspace limit.

The limit bounds the scratch memory an algorithm may hold at once (the unrolled
im2col block, an FFT's spectra). It is read, in order, from an active
:func:`workspace_limit` block, the ``CONVOLAB_WORKSPACE_BYTES`` environment
variable, or the default of 256 MiB.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

__all__ = ["DEFAULT_WORKSPACE_BYTES", "WORKSPACE_ENV", "current_workspace_limit", "workspace_limit"]

DEFAULT_WORKSPACE_BYTES = 256 * 2**20
WORKSPACE_ENV = "CONVOLAB_WORKSPACE_BYTES"

_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("convolab_workspace", default=None)


def current_workspace_limit() -> int:
    """The workspace limit in bytes now in force."""
    override = _override.get()
    if override is not None:
        return override
    text = os.environ.get(WORKSPACE_ENV)
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{WORKSPACE_ENV} must be a whole number of bytes, got {text!r}") from None
        if value < 1:
            raise ValueError(f"{WORKSPACE_ENV} must be >= 1 byte, got {value}")
        return value
    return DEFAULT_WORKSPACE_BYTES


@contextlib.contextmanager
def workspace_limit(limit_bytes: int) -> Iterator[None]:
    """Bound the scratch memory of convolutions run inside the block.

    >>> import numpy as np, convolab as cl
    >>> with cl.workspace_limit(1 << 20):
    ...     cl.conv2d(np.ones((1, 3, 64, 64)), np.ones((4, 3, 3, 3)), padding=1).shape
    (1, 4, 64, 64)
    """
    if not isinstance(limit_bytes, int) or isinstance(limit_bytes, bool) or limit_bytes < 1:
        raise ValueError(f"workspace_limit: limit_bytes must be an int >= 1, got {limit_bytes!r}")
    token = _override.set(limit_bytes)
    try:
        yield
    finally:
        _override.reset(token)
