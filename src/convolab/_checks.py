"""The argument checks every op shares: arrays in, flags, grad_output, bias, divisor.

Each check refuses a bad argument with :func:`convolab._errors.fail` (the op,
the parameter, the value, the rule) and returns the argument as the op computes
with it. The rules on a shape and a dtype are written apart from the array
conversion (:func:`check_grad_output_shape`), so the dask front end applies the
same rule to a dask array's shape and dtype.

This module is in the core layer: NumPy, ``_dtypes`` and ``_errors`` only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._dtypes import check_supported_dtype, same_dtype
from ._errors import fail

__all__ = [
    "is_int",
    "as_array",
    "check_array",
    "check_flag",
    "check_grad_output",
    "check_grad_output_shape",
    "check_bias",
    "check_divisor",
    "normalize_shape",
    "normalize_ints",
    "normalize_padding",
]

#: The padding strings a convolution accepts (resolved by :func:`convolab._geometry.resolve_padding`).
PADDING_STRINGS = ("valid", "same", "full")


def is_int(value: object) -> bool:
    """An integer argument: a Python or NumPy int, never a bool (``True`` is not a size or a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def normalize_shape(value: object, name: str, op: str) -> tuple[int, ...]:
    """A shape: a sequence of non-negative ints, as a tuple of Python ints.

    >>> normalize_shape((1, 3.5), "input_shape", "output_shape")
    Traceback (most recent call last):
    ...
    TypeError: output_shape: input_shape must be a sequence of ints, got (1, 3.5)
    """
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        value = value.tolist()
    if not isinstance(value, (tuple, list)) or not all(is_int(n) for n in value):
        fail(TypeError, op, name, repr(value), "must be a sequence of ints")
    if any(n < 0 for n in value):
        fail(ValueError, op, name, repr(tuple(value)), "must have no negative sizes")
    return tuple(int(n) for n in value)


def normalize_ints(value: object, rank: int, name: str, op: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or ``rank`` ints, each ``>= minimum``, as a tuple of Python ints.

    >>> normalize_ints(2, 3, "stride", "conv3d")
    (2, 2, 2)
    >>> normalize_ints((1, 2), 3, "stride", "conv3d")
    Traceback (most recent call last):
    ...
    ValueError: conv3d: stride must be one int or 3 ints (one per spatial dimension), got (1, 2) (2 values)
    """
    if is_int(value):
        values = (int(value),) * rank
    elif isinstance(value, (tuple, list)):
        if len(value) != rank:
            fail(
                ValueError, op, name, f"{tuple(value)!r} ({len(value)} values)",
                f"must be one int or {rank} ints (one per spatial dimension)",
            )
        for item in value:
            if not is_int(item):
                fail(TypeError, op, name, f"{tuple(value)!r}", "must hold integers only")
        values = tuple(int(item) for item in value)
    else:
        fail(TypeError, op, name, f"{value!r} of type {type(value).__name__}", f"must be an int or a tuple of {rank} ints")
    for item in values:
        if item < minimum:
            fail(ValueError, op, name, repr(value), f"must be >= {minimum} in every dimension")
    return values


def normalize_padding(padding: object, rank: int, op: str) -> str | tuple[tuple[int, int], ...]:
    """A padding string, or ``rank`` ``(low, high)`` pairs of non-negative ints.

    Accepted forms: an int; ``rank`` ints; ``rank`` ``(low, high)`` pairs;
    ``"valid"``, ``"same"`` or ``"full"``.

    >>> normalize_padding(1, 2, "conv2d")
    ((1, 1), (1, 1))
    >>> normalize_padding((1, (0, 2)), 2, "conv2d")
    ((1, 1), (0, 2))
    >>> normalize_padding("same", 2, "conv2d")
    'same'
    """
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            fail(ValueError, op, "padding", repr(padding), f"string must be one of {', '.join(map(repr, PADDING_STRINGS))}")
        return padding
    if is_int(padding):
        per_dim: list[object] = [padding] * rank
    elif isinstance(padding, (tuple, list)):
        if len(padding) != rank:
            fail(
                ValueError, op, "padding", f"{padding!r} ({len(padding)} values)",
                f"must be an int, {rank} ints, or {rank} (low, high) pairs (one per spatial dimension)",
            )
        per_dim = list(padding)
    else:
        fail(TypeError, op, "padding", f"{padding!r} of type {type(padding).__name__}",
             "must be an int, a tuple of ints or (low, high) pairs, or 'valid'/'same'/'full'")
    pairs = []
    for item in per_dim:
        if is_int(item):
            pair = (int(item), int(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(is_int(v) for v in item):
            pair = (int(item[0]), int(item[1]))
        else:
            fail(TypeError, op, "padding", repr(padding), "entries must be ints or (low, high) pairs of ints")
        if min(pair) < 0:
            fail(ValueError, op, "padding", repr(padding), "must be >= 0 (negative padding is not supported)")
        pairs.append(pair)
    return tuple(pairs)


def as_array(op: str, name: str, value: Any, *, array_like: bool = False) -> np.ndarray:
    """The one place an array argument of a public op becomes the array the op computes with.

    The policy, the same for every op:

    - a masked array (``numpy.ma.MaskedArray``) is refused with a TypeError
      naming ``name``: the ops would silently ignore its mask;
    - any other ndarray subclass (``numpy.memmap``, ``numpy.matrix``...) is
      read as its plain ndarray data (a view, no copy), so results are plain
      ndarrays and ``*`` never means a matrix product inside an op;
    - a non-native byte order (``>f8`` on a little-endian machine) is storage,
      not a dtype: the data is converted to native order once, here, so dtypes
      compare equal and results are native-order;
    - anything else that is not an ndarray is refused, unless ``array_like``
      (the SciPy-style ops), where :func:`numpy.asarray` converts it.

    The caller's array is never modified; it is returned as is when it is
    already a plain native-order ndarray.

    Parameters
    ----------
    op, name : str
        The op and the parameter, for messages.
    value : object
        The caller's argument.
    array_like : bool
        Whether non-arrays are converted (SciPy's semantics) rather than refused.

    Returns
    -------
    numpy.ndarray
        A plain ndarray in native byte order.

    Raises
    ------
    TypeError
        A masked array; a non-array unless ``array_like``.

    Examples
    --------
    >>> as_array("conv2d", "input", np.arange(3, dtype=">i4")).dtype.isnative
    True
    >>> as_array("conv2d", "input", np.ma.ones(2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: conv2d: input must not be a numpy.ma.MaskedArray: its mask would be ignored ...
    """
    if type(value) is np.ndarray and value.dtype.isnative:  # the common case, checked first: ops call this often
        return value
    if isinstance(value, np.ma.MaskedArray):
        fail(TypeError, op, name, f"a masked array of type {type(value).__name__}",
             "must not be a numpy.ma.MaskedArray: its mask would be ignored "
             "(pass value.filled(fill_value), or value.data to drop the mask)")
    if not isinstance(value, np.ndarray):
        if not array_like:
            fail(TypeError, op, name, f"an object of type {type(value).__name__}",
                 "must be a numpy.ndarray (convert with numpy.asarray)")
        value = np.asarray(value)
    elif type(value) is not np.ndarray:
        value = value.view(np.ndarray)
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    return value


def check_array(op: str, name: str, value: Any) -> np.ndarray:
    """``value`` through :func:`as_array`, if it is of a supported dtype, else a TypeError naming it.

    Callers compute with the returned array (native byte order, plain ndarray).

    >>> check_array("conv2d", "weight", np.ones(2, dtype=bool))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: conv2d: weight ...got dtype bool
    """
    value = as_array(op, name, value)
    check_supported_dtype(op, name, value.dtype)
    return value


def check_flag(value: object, name: str, op: str) -> bool:
    """A boolean flag (``flip``, ``ceil_mode``, ``return_indices``...) as a Python bool.

    Only ``bool`` and ``numpy.bool_`` are flags: ``"False"`` is a non-empty (true)
    string and ``0``/``1`` are counts, so each is refused rather than guessed at,
    as PyTorch refuses them.

    >>> check_flag(np.True_, "flip", "conv2d")
    True
    >>> check_flag("False", "flip", "conv2d")
    Traceback (most recent call last):
    ...
    TypeError: conv2d: flip must be a bool (True or False), got 'False' of type str
    """
    if not isinstance(value, (bool, np.bool_)):
        fail(TypeError, op, name, f"{value!r} of type {type(value).__name__}", "must be a bool (True or False)")
    return bool(value)


def check_grad_output_shape(
    op: str,
    shape: Sequence[int],
    dtype: np.dtype,
    expected_shape: Sequence[int],
    *,
    expected_dtype: np.dtype | None = None,
    floating: bool = False,
) -> None:
    """The rule on a ``grad_output``'s shape and dtype, whatever holds it (a NumPy or a dask array).

    It must be floating point where ``floating`` (the pools: their gradients
    are not integer), of the forward output's shape, and of ``expected_dtype``
    where one is given (byte order aside).

    >>> check_grad_output_shape("conv2d_input", (1, 1, 3, 3), np.dtype("f8"), (1, 1, 4, 4))
    Traceback (most recent call last):
    ...
    ValueError: conv2d_input: grad_output must have the forward output's shape (1, 1, 4, 4), got shape (1, 1, 3, 3)
    >>> check_grad_output_shape("conv2d_input", (2,), np.dtype("f4"), (2,), expected_dtype=np.dtype("f8"))
    Traceback (most recent call last):
    ...
    TypeError: conv2d_input: grad_output must have dtype float64, got dtype float32
    """
    if floating and np.dtype(dtype).kind != "f":
        fail(TypeError, op, "grad_output", f"dtype {dtype}", "must be a floating-point array")
    if tuple(shape) != tuple(expected_shape):
        fail(ValueError, op, "grad_output", f"shape {tuple(shape)}",
             f"must have the forward output's shape {tuple(expected_shape)}")
    if expected_dtype is not None and not same_dtype(dtype, expected_dtype):
        fail(TypeError, op, "grad_output", f"dtype {dtype}", f"must have dtype {np.dtype(expected_dtype)}")


def check_grad_output(
    op: str,
    grad_output: Any,
    expected_shape: Sequence[int],
    *,
    expected_dtype: np.dtype | None = None,
    floating: bool = False,
) -> np.ndarray:
    """``grad_output`` as computed with (:func:`check_array`), if it passes :func:`check_grad_output_shape`.

    >>> check_grad_output("max_pool1d", np.ones((1, 2), dtype=int), (1, 2), floating=True)
    Traceback (most recent call last):
    ...
    TypeError: max_pool1d: grad_output must be a floating-point array, got dtype int64
    """
    grad_output = check_array(op, "grad_output", grad_output)
    check_grad_output_shape(op, grad_output.shape, grad_output.dtype, expected_shape,
                            expected_dtype=expected_dtype, floating=floating)
    return grad_output


def check_bias(op: str, bias: Any, channels: int, dtype: np.dtype, *, channels_from: str = "weight.shape[0]"
               ) -> np.ndarray | None:
    """``bias`` as computed with (or None): 1-D of ``channels`` (``C_out``), of the input's ``dtype``.

    ``channels_from`` says where ``C_out`` comes from, for the message
    (``"weight.shape[1] × groups"`` for a transposed convolution).

    >>> check_bias("conv2d", np.ones(2), 3, np.dtype("f8"))
    Traceback (most recent call last):
    ...
    ValueError: conv2d: bias must be 1-D of length C_out=3 (weight.shape[0]), got shape (2,)
    """
    if bias is None:
        return None
    bias = check_array(op, "bias", bias)
    if bias.ndim != 1 or bias.shape[0] != channels:
        fail(ValueError, op, "bias", f"shape {bias.shape}", f"must be 1-D of length C_out={channels} ({channels_from})")
    if not same_dtype(bias.dtype, dtype):
        fail(TypeError, op, "bias", f"dtype {bias.dtype} with input dtype {np.dtype(dtype)}",
             "must have the same dtype as input (cast one with .astype)")
    return bias


def check_divisor(op: str, divisor_override: Any) -> int | None:
    """Average pooling's ``divisor_override``: None, or a nonzero int (as a Python int).

    >>> check_divisor("avg_pool2d", 0)
    Traceback (most recent call last):
    ...
    ValueError: avg_pool2d: divisor_override must be nonzero, got 0
    """
    if divisor_override is None:
        return None
    if not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override, (bool, np.bool_)):
        fail(TypeError, op, "divisor_override", f"{divisor_override!r} of type {type(divisor_override).__name__}",
             "must be an int or None")
    if divisor_override == 0:
        fail(ValueError, op, "divisor_override", "0", "must be nonzero")
    return int(divisor_override)
