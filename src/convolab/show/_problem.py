"""The problem as the showing-the-work functions take it: the checked spec, read-only copies, padded sources.

Shared by :mod:`~convolab.show.tracing`, :mod:`~convolab.show.matrices` and
:mod:`~convolab.show.checks`, which build on the convolution's own pieces
(the frozen spec and :func:`~convolab._window.pad`) rather than re-deriving them.
"""

from __future__ import annotations

from math import prod
from typing import Any, Sequence

import numpy as np

from .._window import pad
from ..functional import check_array
from ..spec import ConvSpec, PaddingArg, conv_spec

__all__ = ["frozen", "padded_sources", "checked_spec"]


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a``, so a frozen dataclass really is frozen."""
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def padded_sources(shape: Sequence[int], spec: ConvSpec) -> np.ndarray:
    """For every cell of the padded array, the flat index of the input sample it holds; -1 for a zero.

    The index array is padded with the convolution's own padding mode, so a
    reflected, replicated or wrapped cell holds the index of the sample it
    copies. Indices are shifted up by one first, so zero padding (which writes
    0) becomes -1 once shifted back.
    """
    index = np.arange(1, prod(shape) + 1, dtype=np.int64).reshape(tuple(shape))
    return pad(index, spec.padding, spec.padding_mode) - 1


def checked_spec(op: str, input_shape: Sequence[int], weight: np.ndarray, stride: Any, padding: PaddingArg,
                 dilation: Any, groups: Any, padding_mode: str, flip: bool) -> ConvSpec:
    """The weight checked as an array, then the convolution's spec (its errors name ``op``)."""
    check_array(op, "weight", weight)
    return conv_spec(input_shape, weight.shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op=op)
