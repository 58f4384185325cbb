"""Checks that two computations of one quantity agree: :class:`Identity` and :class:`IdentityChain`.

Each ``check_*`` computes every side of an identity behind convolution and
compares them, so ``holds`` is computed, never assumed:

- :func:`check_direct_equals_im2col`: one element at a time equals one matrix product per group;
- :func:`check_flip`: true convolution is correlation with the kernel reversed, and is SciPy's;
- :func:`check_input_gradient`: scatter-add, full correlation with the rotated
  filter and ``conv_transpose`` give one input gradient.

Floating-point sides are compared within a bound on their rounding
(``_tolerance``); integer sides exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Sequence

import numpy as np
import scipy.signal

from .._dtypes import compute_dtype, is_exact, result_dtype
from .._engine import oriented_kernel
from .._errors import fail
from .._window import reverse_spatial
from ..functional import conv
from ..grad import conv_input
from ..spec import ConvSpec, PaddingArg
from ..transposed import conv_transpose
from ._format import json_value
from ._problem import checked_spec, frozen
from .matrices import im2col_matrices

__all__ = [
    "Identity",
    "IdentityChain",
    "check_direct_equals_im2col",
    "check_flip",
    "check_input_gradient",
    "scipy_mode",
]


# -- both sides computed, compared -----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Identity:
    """Two computations of one quantity, compared.

    ``holds`` is computed: ``max_abs_difference <= tolerance``, with tolerance
    0 for integer inputs (exact equality) and, for floating point, a bound on
    the rounding error of the sums involved and of the final rounding to the
    result dtype (see ``_tolerance``).
    """

    name: str
    left: np.ndarray
    right: np.ndarray
    max_abs_difference: float
    holds: bool
    tolerance: float = 0.0

    def __bool__(self) -> bool:
        return self.holds

    def to_dict(self) -> dict[str, Any]:
        """The identity as JSON-able data."""
        return {"name": self.name, "holds": self.holds, "max_abs_difference": self.max_abs_difference,
                "tolerance": self.tolerance, "left": json_value(self.left), "right": json_value(self.right)}

    def __str__(self) -> str:
        verdict = "holds" if self.holds else "FAILS"
        return (f"{self.name}: {verdict} (max |left - right| = {self.max_abs_difference:.3g}, "
                f"tolerance {self.tolerance:.3g}, shape {self.left.shape})")

    def __repr__(self) -> str:
        return (f"Identity(name={self.name!r}, holds={self.holds}, max_abs_difference={self.max_abs_difference!r}, "
                f"tolerance={self.tolerance!r}, shape={self.left.shape})")


@dataclass(frozen=True, eq=False)
class IdentityChain:
    """Several computations of one quantity: ``sides[0] == sides[1] == ...``.

    ``identities`` compares the first side with each later one; the chain
    holds when all of them do. ``chain["label"]`` is the array labelled so.
    """

    name: str
    labels: tuple[str, ...]
    sides: tuple[np.ndarray, ...]
    identities: tuple[Identity, ...]

    @property
    def holds(self) -> bool:
        return all(identity.holds for identity in self.identities)

    @property
    def max_abs_difference(self) -> float:
        return max((identity.max_abs_difference for identity in self.identities), default=0.0)

    def __bool__(self) -> bool:
        return self.holds

    def __getitem__(self, label: str) -> np.ndarray:
        if label not in self.labels:
            fail(KeyError, "IdentityChain", "label", repr(label), f"must be one of {', '.join(map(repr, self.labels))}")
        return self.sides[self.labels.index(label)]

    def to_dict(self) -> dict[str, Any]:
        """The chain as JSON-able data: its sides by label, and each comparison."""
        return {"name": self.name, "holds": self.holds,
                "sides": {k: json_value(v) for k, v in zip(self.labels, self.sides)},
                "identities": [{key: value for key, value in identity.to_dict().items()
                                if key not in ("left", "right")} for identity in self.identities]}

    def __str__(self) -> str:
        verdict = "holds" if self.holds else "FAILS"
        return "\n".join([f"{self.name}: {verdict}", *(f"  {identity}" for identity in self.identities)])

    def __repr__(self) -> str:
        return f"IdentityChain(name={self.name!r}, holds={self.holds}, labels={self.labels})"


def _tolerance(dtype: np.dtype, terms: int, factors: Sequence[np.ndarray], sides: Sequence[np.ndarray]) -> float:
    """How far float computations of the same sums of products may differ by rounding alone.

    Each compared element is a sum of at most ``terms`` products of entries of
    ``factors``, so every partial sum is at most ``M = terms * prod(max|factor|)``.
    Summed in different orders in precision ``eps_sum`` (the accumulation dtype),
    two results differ by at most about ``2 * terms * eps_sum * M``; rounding
    each to the result dtype then moves it by at most ``eps_out / 2`` of its
    size, ``eps_out * max|side|`` for the pair. Integers are exact: 0.
    """
    if is_exact(dtype):
        return 0.0
    terms = max(terms, 1)
    bound = float(terms)
    for factor in factors:
        bound *= float(np.max(np.abs(factor), initial=0))
    largest = max(float(np.max(np.abs(side), initial=0)) for side in sides)
    eps_sum = float(np.finfo(compute_dtype(dtype)).eps)
    eps_out = float(np.finfo(result_dtype(dtype)).eps)
    return 2 * terms * eps_sum * bound + eps_out * largest


def _compare(name: str, left: np.ndarray, right: np.ndarray, tolerance: float) -> Identity:
    if left.shape != right.shape:
        difference = float("inf")
    elif left.size == 0:
        difference = 0.0
    else:
        difference = float(np.max(np.abs(left - right)))
    return Identity(name=name, left=frozen(left), right=frozen(right), max_abs_difference=difference,
                    holds=bool(difference <= tolerance), tolerance=tolerance)


def _chain(name: str, labels: Sequence[str], sides: Sequence[np.ndarray], tolerance: float) -> IdentityChain:
    """``sides[0]`` compared with each later side, under one tolerance."""
    identities = tuple(_compare(f"{labels[0]} == {label}", sides[0], side, tolerance)
                       for label, side in zip(labels[1:], sides[1:]))
    frozen_sides = (identities[0].left, *(identity.right for identity in identities))  # read-only copies
    return IdentityChain(name=name, labels=tuple(labels), sides=frozen_sides, identities=identities)


def check_direct_equals_im2col(
    input: np.ndarray,
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Identity:
    """One element at a time (the definition) equals one matrix product per group (im2col).

    Left: ``conv(..., algorithm="direct")``, each output element its window
    times the kernel, summed. Right: :func:`im2col_matrices`' product, folded.

    Parameters
    ----------
    input, weight, stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.conv`.

    Returns
    -------
    Identity

    Shape
    -----
    Both sides have the convolution's output shape.

    Examples
    --------
    >>> import numpy as np
    >>> check_direct_equals_im2col(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]])).holds
    True
    """
    matrices = im2col_matrices(input, weight, stride, padding, dilation, groups, padding_mode=padding_mode, flip=flip)
    direct = conv(input, weight, None, stride, padding, dilation, groups, padding_mode=padding_mode, flip=flip,
                  algorithm="direct")
    spec = matrices.spec
    terms = spec.terms
    by_matrices = matrices.output()
    return _compare("direct == im2col", direct, by_matrices,
                    _tolerance(input.dtype, terms, (input, weight), (direct, by_matrices)))


# -- the flip --------------------------------------------------------------------------------------


def scipy_mode(spec: ConvSpec) -> str | None:
    """The ``scipy.signal.convolve`` mode whose padding this is, in every dimension; None if none is.

    >>> from convolab import conv_spec
    >>> scipy_mode(conv_spec((1, 1, 5, 5), (1, 1, 3, 3), padding=2)), scipy_mode(conv_spec((1, 1, 5), (1, 1, 4), padding=1))
    ('full', None)
    """
    per_mode = {
        "valid": tuple((0, 0) for _ in spec.kernel_size),
        "full": tuple((k - 1, k - 1) for k in spec.kernel_size),
        # SciPy centres "same" on the full result with the odd sample dropped low (see convolab.signal).
        "same": tuple(((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in spec.kernel_size),
    }
    for mode, pairs in per_mode.items():
        if spec.padding == pairs:
            return mode
    return None


def check_flip(
    input: np.ndarray,
    weight: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> IdentityChain:
    """True convolution is correlation with the kernel reversed, and is SciPy's ``convolve``.

    Sides: ``conv(x, w, flip=True)``; ``conv(x, w reversed on every spatial
    axis)`` (rotated 180° in 2-d); and, where SciPy has the same problem (one
    input and one output channel, stride 1, no dilation, zero padding matching
    ``mode="valid"``, ``"full"`` or ``"same"`` in every dimension), the stack of
    ``scipy.signal.convolve(x[n, 0], w[0, 0], mode, method="direct")``.

    Parameters
    ----------
    input, weight, stride, padding, dilation, groups, padding_mode
        As in :func:`convolab.conv`.

    Returns
    -------
    IdentityChain
        Labels ``"flip=True"``, ``"reversed weight"`` and, where it applies,
        ``"scipy.signal.convolve(mode=...)"``.

    Shape
    -----
    Every side has the convolution's output shape.

    Examples
    --------
    >>> import numpy as np
    >>> chain = check_flip(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]), padding=1)
    >>> chain.labels
    ('flip=True', 'reversed weight', "scipy.signal.convolve(mode='full')")
    >>> chain.holds, chain["flip=True"][0, 0, 0].tolist()
    (True, [9, 26, 43, 24])
    """
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode)
    flipped = conv(input, weight, flip=True, **params)
    reversed_weight = np.ascontiguousarray(reverse_spatial(weight, weight.ndim - 2))
    labels, sides = ["flip=True", "reversed weight"], [flipped, conv(input, reversed_weight, **params)]
    spec = checked_spec("check_flip", input.shape, weight, stride, padding, dilation, groups, padding_mode, True)
    mode = scipy_mode(spec)
    unpadded = all(pair == (0, 0) for pair in spec.padding)
    if (mode is not None and spec.in_channels == 1 and spec.out_channels == 1 and set(spec.stride) == {1}
            and set(spec.dilation) == {1} and (spec.padding_mode == "zeros" or unpadded)):
        accumulate = compute_dtype(input.dtype)  # SciPy's direct method has no float16; integers stay exact
        signals = input.reshape(spec.input_shape)[:, 0].astype(accumulate)  # (N, *spatial)
        kernel = weight[0, 0].astype(accumulate)
        by_scipy = np.zeros((spec.batch, *spec.output_size), dtype=accumulate)
        for n, signal in enumerate(signals):
            by_scipy[n] = scipy.signal.convolve(signal, kernel, mode=mode, method="direct")
        by_scipy = by_scipy.astype(result_dtype(input.dtype)).reshape(spec.caller_output_shape)
        labels.append(f"scipy.signal.convolve(mode={mode!r})")
        sides.append(by_scipy)
    terms = spec.terms
    return _chain("flip=True is correlation with the reversed kernel, the convolution of mathematics", labels, sides,
                  _tolerance(input.dtype, terms, (input, weight), sides))


# -- the input gradient, three ways -----------------------------------------------------------------


def check_input_gradient(
    input_shape: Sequence[int],
    weight: np.ndarray,
    grad_output: np.ndarray,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> IdentityChain:
    """The input gradient three ways: scatter-add == full correlation with the rotated filter == conv_transpose.

    - ``"scatter"``: every output position adds grad_output times the filter
      into the window it read (then the padding's transpose);
    - ``"full"``: a full correlation of the stride-spread grad_output with the
      filter reversed on every axis (rotated 180°), channels swapped;
    - ``"conv_transpose"``: :func:`convolab.conv_transpose` of grad_output with
      the same weight (oriented as the forward applied it), its padding the
      forward's ``(low, high)`` pairs and ``output_size`` the input's. Only
      where it can express the forward problem: zero padding (any padding
      argument, resolved to pairs), or no padding at all; and a non-empty
      input (conv_transpose refuses to produce an empty output).

    Parameters
    ----------
    input_shape : tuple of int
        The forward input's shape (batched or unbatched).
    weight, grad_output
        As in :func:`convolab.grad.conv_input`.
    stride, padding, dilation, groups, padding_mode, flip
        The forward convolution's arguments.

    Returns
    -------
    IdentityChain
        Labels ``"scatter"``, ``"full"`` and, where it applies,
        ``"conv_transpose"``; ``chain.sides`` are the arrays.

    Shape
    -----
    Every side has shape ``input_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> chain = check_input_gradient((1, 1, 3, 3), np.array([[[[1, 2], [3, 4]]]]), np.ones((1, 1, 2, 2), int))
    >>> chain.holds, chain.labels
    (True, ('scatter', 'full', 'conv_transpose'))
    >>> chain["conv_transpose"][0, 0]
    array([[ 1,  3,  2],
           [ 4, 10,  6],
           [ 3,  7,  4]])
    """
    spec = checked_spec("check_input_gradient", input_shape, weight, stride, padding, dilation, groups, padding_mode,
                        flip)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  flip=flip)
    labels = ["scatter", "full"]
    sides = [conv_input(tuple(input_shape), weight, grad_output, algorithm=algorithm, **params)
             for algorithm in labels]
    expressible = spec.padding_mode == "zeros" or all(pair == (0, 0) for pair in spec.padding)
    if expressible and min(spec.input_size) > 0:  # conv_transpose makes no empty outputs
        # conv_transpose's weight is (C_in_t, C_out_t/groups, *k) = (C_out, C_in/groups, *k): the forward weight.
        kernel = np.ascontiguousarray(oriented_kernel(weight, spec.flip))
        labels.append("conv_transpose")
        sides.append(conv_transpose(grad_output, kernel, None, spec.stride, spec.padding, 0, spec.groups,
                                    spec.dilation, output_size=spec.input_size))
    # Each input sample collects at most O*K products per padded cell holding it: one without padding
    # or with zeros; at most three per dimension for reflect/circular/symmetric (padding <= size);
    # the edge sample fills the whole border for replicate.
    copies = 1
    for low, high in spec.padding:
        copies *= {"zeros": 1, "replicate": 1 + low + high}.get(spec.padding_mode, min(3, 1 + low + high))
    terms = spec.out_channels_per_group * prod(spec.kernel_size) * copies
    name = "input gradient: scatter-add == full correlation with the rotated filter"
    if "conv_transpose" in labels:
        name += " == conv_transpose"
    return _chain(name, labels, sides, _tolerance(weight.dtype, terms, (weight, grad_output), sides))
