"""Where initial weights come from: one seeded generator, and PyTorch's default rules.

PyTorch initializes a convolution or linear weight with
``kaiming_uniform_(w, a=sqrt(5))``: uniform on ``[-b, b]`` with
``b = gain * sqrt(3 / fan_in)`` and ``gain = sqrt(2 / (1 + a²)) = sqrt(1/3)``,
so ``b = 1 / sqrt(fan_in)``; the bias is uniform on the same interval. ``fan_in``
is ``weight.shape[1]`` times the kernel's size (for a transposed convolution,
whose weight is ``(C_in, C_out / groups, *k)``, that is ``C_out / groups * prod(k)``,
as PyTorch computes it).

Layers draw from :func:`default_generator` unless given ``rng=``;
:func:`manual_seed` resets it, so a seeded run builds the same network every time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._errors import fail

__all__ = ["manual_seed", "default_generator", "uniform", "fan_in", "default_bound", "generator_from"]

_GENERATOR = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the generator layers draw their initial weights from; returns it.

    >>> a = (manual_seed(0), default_generator().random())[1]
    >>> b = (manual_seed(0), default_generator().random())[1]
    >>> a == b
    True
    """
    global _GENERATOR
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        fail(TypeError, "manual_seed", "seed", repr(seed), "must be an int")
    _GENERATOR = np.random.default_rng(int(seed))
    return _GENERATOR


def default_generator() -> np.random.Generator:
    """The generator layers use when not given ``rng=``."""
    return _GENERATOR


def generator_from(op: str, rng: Any) -> np.random.Generator:
    """``rng`` as a Generator: None means the default generator, an int seeds a new one."""
    if rng is None:
        return _GENERATOR
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    fail(TypeError, op, "rng", repr(rng), "must be None, an int seed or a numpy.random.Generator")


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output: ``shape[1]`` times the product of the trailing (kernel) axes."""
    return shape[1] * math.prod(shape[2:]) if len(shape) >= 2 else shape[0]


def default_bound(weight_shape: tuple[int, ...]) -> float:
    """PyTorch's ``1 / sqrt(fan_in)`` for both weight and bias (0 for an empty weight)."""
    inputs = fan_in(weight_shape)
    return 1 / math.sqrt(inputs) if inputs > 0 else 0.0


def uniform(shape: tuple[int, ...], bound: float, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Samples uniform on ``[-bound, bound]`` of ``dtype`` (drawn in float64, then rounded)."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)
