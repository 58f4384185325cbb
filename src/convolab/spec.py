"""The frozen convolution spec: every argument checked and canonicalized once.

Public functions accept PyTorch's loose argument forms (an int or a tuple, a
padding string, a mode alias); :func:`conv_spec` turns them, together with the
input and weight shapes, into a :class:`ConvSpec` of per-dimension tuples with
padding always as ``(low, high)`` pairs. Everything downstream (the window
primitive, the algorithms, the gradients, the explainer) reads the spec and never
the raw arguments. This module is pure integer code: shapes in, shapes out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from math import prod
from typing import Sequence, Union

# check_flag and normalize_* moved to _checks (the one module of argument checks); imported from here still
from ._checks import check_flag, is_int as _is_int, normalize_ints, normalize_padding, normalize_shape
from ._errors import fail
from ._geometry import WindowGeometry, check_window_fits, resolve_padding

__all__ = [
    "ConvSpec",
    "conv_spec",
    "output_shape",
    "PADDING_MODES",
    "canonical_padding_mode",
    "normalize_ints",
    "normalize_shape",
    "normalize_padding",
    "check_flag",
]

PaddingArg = Union[int, str, Sequence[int], Sequence[Sequence[int]]]

#: Accepted padding_mode names and the canonical (PyTorch) name each means.
PADDING_MODES = {
    "zeros": "zeros",
    "constant": "zeros",  # NumPy's name
    "reflect": "reflect",
    "replicate": "replicate",
    "edge": "replicate",  # NumPy's name
    "circular": "circular",
    "wrap": "circular",  # NumPy's name
    "symmetric": "symmetric",  # NumPy's; PyTorch has no such mode
}

def canonical_padding_mode(padding_mode: object, op: str) -> str:
    """PyTorch's name for a padding mode given by its PyTorch or NumPy name.

    >>> canonical_padding_mode("edge", "conv2d")
    'replicate'
    """
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        fail(ValueError, op, "padding_mode", repr(padding_mode), f"must be one of {', '.join(map(repr, PADDING_MODES))}")
    return PADDING_MODES[padding_mode]


def check_padding_fits_mode(
    padding: tuple[tuple[int, int], ...], input_size: tuple[int, ...], mode: str, op: str
) -> None:
    """Reject padding that a mode cannot produce from an input this small.

    reflect mirrors without repeating the edge, so it needs ``pad < size``;
    circular and symmetric may wrap or mirror once, ``pad <= size``; replicate
    needs one sample to copy. (NumPy would repeat the pattern further; PyTorch
    refuses, and so do we.)
    """
    if mode == "zeros":
        return
    for dim, ((low, high), size) in enumerate(zip(padding, input_size)):
        largest = max(low, high)
        if largest == 0:
            continue
        if mode == "reflect" and largest >= size:
            fail(ValueError, op, "padding", f"{(low, high)} in spatial dimension {dim} of size {size}",
                 "must be smaller than the input size for padding_mode='reflect'")
        if mode in ("circular", "symmetric") and largest > size:
            fail(ValueError, op, "padding", f"{(low, high)} in spatial dimension {dim} of size {size}",
                 f"must be at most the input size for padding_mode={mode!r} (it may wrap only once)")
        if mode == "replicate" and size == 0:
            fail(ValueError, op, "padding", f"{(low, high)} in spatial dimension {dim} of size 0",
                 "needs a non-empty input for padding_mode='replicate'")


@dataclass(frozen=True)
class ConvSpec:
    """A convolution problem with every argument canonicalized.

    Shapes are batched; ``batched`` records whether the caller's input had a
    batch axis. Spatial tuples have one entry per spatial dimension.
    """

    op: str
    batched: bool
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    padding_mode: str = "zeros"
    flip: bool = False

    def __hash__(self) -> int:
        # Computed once: the planner's caches hash a layer's spec a dozen times a training step, and the
        # generated hash rebuilt the tuple of every field each time.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = hash(tuple(getattr(self, field.name) for field in fields(self)))
        return cached

    def __getstate__(self) -> dict[str, object]:
        # A string's hash differs from process to process: a pickled spec must not carry this one's.
        return {name: value for name, value in self.__dict__.items() if name != "_hash"}

    @property
    def rank(self) -> int:
        """Number of spatial dimensions."""
        return len(self.input_size)

    @cached_property
    def geometry(self) -> WindowGeometry:
        """The windows' geometry: input and kernel size, stride, dilation and padding per spatial axis."""
        return WindowGeometry(self.input_size, self.kernel_size, self.stride, self.dilation, self.padding)

    @property
    def in_channels_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_channels_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def padded_size(self) -> tuple[int, ...]:
        return self.geometry.padded_size

    @property
    def output_size(self) -> tuple[int, ...]:
        return self.geometry.output_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Batched input shape ``(N, C_in, *input_size)``."""
        return (self.batch, self.in_channels, *self.input_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels_per_group, *self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Batched output shape ``(N, C_out, *output_size)``."""
        return (self.batch, self.out_channels, *self.output_size)

    @property
    def caller_output_shape(self) -> tuple[int, ...]:
        """Output shape as the caller sees it (no batch axis if the input had none)."""
        return self.output_shape if self.batched else self.output_shape[1:]

    @property
    def terms(self) -> int:
        """Products summed into each output value: ``C_in / groups * prod(kernel_size)``, the depth of the
        convolution's matrix product (one filter's length)."""
        return self.in_channels_per_group * prod(self.kernel_size)

    @property
    def macs(self) -> int:
        """Multiply-adds of the forward; each gradient has as many."""
        return prod(self.output_shape) * self.terms

    @property
    def flops(self) -> int:
        """Multiply-adds times two, the usual FLOP count of a convolution."""
        return 2 * self.macs


def _describe_weight_axes(rank: int) -> str:
    names = {1: ("kW",), 2: ("kH", "kW"), 3: ("kD", "kH", "kW")}.get(rank, tuple(f"k{i}" for i in range(rank)))
    return "(C_out, C_in/groups, " + ", ".join(names) + ")"


def conv_spec(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    *,
    stride: object = 1,
    padding: PaddingArg = 0,
    dilation: object = 1,
    groups: object = 1,
    padding_mode: str = "zeros",
    flip: bool = False,
    op: str = "conv",
    rank: int | None = None,
) -> ConvSpec:
    """Check a convolution's arguments against its shapes and freeze them.

    ``rank`` fixes the number of spatial dimensions (``conv2d`` passes 2);
    ``None`` reads it from the weight, ``weight.ndim - 2``.

    Examples
    --------
    >>> spec = conv_spec((8, 3, 32, 32), (16, 3, 3, 3), stride=2, padding="same")
    >>> spec.padding, spec.output_shape
    (((0, 1), (0, 1)), (8, 16, 16, 16))
    """
    input_shape = normalize_shape(input_shape, "input_shape", op)
    weight_shape = normalize_shape(weight_shape, "weight_shape", op)
    if rank is None:
        if len(weight_shape) < 3:
            fail(ValueError, op, "weight", f"shape {weight_shape} ({len(weight_shape)} dimensions)",
                 "must have at least 3 dimensions (C_out, C_in/groups, *kernel_size)")
        rank = len(weight_shape) - 2
    elif len(weight_shape) != rank + 2:
        fail(ValueError, op, "weight", f"shape {weight_shape} ({len(weight_shape)} dimensions)",
             f"must have {rank + 2} dimensions {_describe_weight_axes(rank)}")
    if len(input_shape) == rank + 2:
        batched = True
    elif len(input_shape) == rank + 1:
        batched = False
        input_shape = (1, *input_shape)
    else:
        fail(ValueError, op, "input", f"shape {input_shape} ({len(input_shape)} dimensions)",
             f"must have {rank + 2} dimensions (N, C_in, *spatial) or {rank + 1} unbatched (C_in, *spatial) "
             f"for a weight of shape {weight_shape}")
    if not _is_int(groups):
        fail(TypeError, op, "groups", repr(groups), "must be an int")
    groups = int(groups)
    if groups < 1:
        fail(ValueError, op, "groups", str(groups), "must be >= 1")
    batch, in_channels, *input_size = input_shape
    out_channels, in_per_group, *kernel_size = weight_shape
    if out_channels % groups:
        fail(ValueError, op, "groups", f"groups={groups} with weight.shape[0]={out_channels} output channels",
             "must divide the number of output channels")
    if in_per_group * groups != in_channels:
        fail(ValueError, op, "input",
             f"{in_channels} channels (input shape {input_shape[1:] if not batched else input_shape})",
             f"must have {in_per_group * groups} channels (weight.shape[1]={in_per_group} × groups={groups})")
    if min(kernel_size) < 1:
        fail(ValueError, op, "weight", f"shape {weight_shape}", "must have kernel sizes >= 1")
    strides = normalize_ints(stride, rank, "stride", op)
    dilations = normalize_ints(dilation, rank, "dilation", op)
    pads = resolve_padding(padding, tuple(input_size), tuple(kernel_size), strides, dilations, op)
    mode = canonical_padding_mode(padding_mode, op)
    check_padding_fits_mode(pads, tuple(input_size), mode, op)
    check_window_fits(op, "weight", input_size, kernel_size, dilations, pads)
    return ConvSpec(
        op=op, batched=batched, batch=batch, in_channels=in_channels, out_channels=out_channels,
        groups=groups, input_size=tuple(input_size), kernel_size=tuple(kernel_size), stride=strides,
        padding=pads, dilation=dilations, padding_mode=mode, flip=check_flag(flip, "flip", op),
    )


def output_shape(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: object = 1,
    padding: PaddingArg = 0,
    dilation: object = 1,
    groups: object = 1,
) -> tuple[int, ...]:
    """Shape of ``conv(input, weight, ...)`` from the shapes alone.

    Checks the arguments exactly as :func:`convolab.conv` does. An unbatched
    ``input_shape`` ``(C_in, *spatial)`` gives an unbatched result.

    Shape
    -----
    Per spatial dimension, ``out = floor((in + lo + hi - dilation*(k-1) - 1) / stride) + 1``.

    Examples
    --------
    >>> output_shape((1, 1, 3, 3), (1, 1, 2, 2))
    (1, 1, 2, 2)
    >>> output_shape((3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    (64, 112, 112)
    >>> output_shape((1, 1, 10), (1, 1, 4), stride=3, padding="same")
    (1, 1, 4)
    """
    spec = conv_spec(input_shape, weight_shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, op="output_shape")
    return spec.caller_output_shape
