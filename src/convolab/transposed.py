"""Transposed convolution: the input gradient of a convolution, used as an op.

``conv_transpose(x, w)`` scatters each input sample, times the filter, into an
output window: exactly the input gradient of ``conv(·, w)``. It upsamples, and
``output_padding`` (or ``output_size``) picks among the output sizes that a
strided forward convolution maps to the same size.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import shapes
from ._engine import conv_forward, conv_input_grad, conv_weight_grad
from ._checks import check_array, check_bias, check_grad_output
from ._fixed_rank import fixed_rank_ops
from ._geometry import resolve_padding
from ._dtypes import same_dtype
from ._errors import fail
from .spec import ConvSpec, _is_int, conv_spec, normalize_ints

__all__ = ["conv_transpose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


class TransposeGeometry:
    """A transposed convolution as a forward spec over the full extent, plus a crop.

    The scatter covers ``E = (in - 1)*stride + dilation*(k - 1) + 1`` cells per
    dimension (the forward convolution of an ``E``-sized input with no padding
    has exactly ``in`` outputs). The result is cells ``[low, low + out)`` of that
    extent, zero past its end (output_padding beyond the high padding).

    Wherever the crop allows (no output past the extent by a stride or more),
    ``padding`` is None and ``spec`` is the same convolution over the output
    itself with the crop as its padding (:func:`_cropped_spec`): crop and uncrop
    are then nothing to do, and the input gradient's add-back drops the padding's
    cells as it goes (DCGAN 256 -> 128: no 4 MB crop of a 34x34 extent, 0.6 ms
    of a 12 ms forward on one thread), and a huge stride cropped by a huge
    padding never builds the extent.
    """

    def __init__(self, spec: ConvSpec, padding: tuple[tuple[int, int], ...] | None, output_size: tuple[int, ...]):
        self.spec = spec  # the forward convolution whose input gradient this is
        self.padding = padding
        self.output_size = output_size

    def _whole(self) -> bool:
        """Whether the output is the whole extent (no padding, no output_padding): crop and uncrop copy nothing."""
        return self.padding is None or all(
            low == 0 and size == extent for (low, _), size, extent in
            zip(self.padding, self.output_size, self.spec.input_size))

    def crop(self, full: np.ndarray) -> np.ndarray:
        """Cells ``[low, low + out)`` of the scattered extent, zero-filled past its end."""
        if self._whole():
            return full
        out = np.zeros((*full.shape[:2], *self.output_size), dtype=full.dtype)
        source, target = [], []
        for (low, _), size, extent in zip(self.padding, self.output_size, self.spec.input_size):
            stop = min(low + size, extent)
            source.append(slice(low, stop))
            target.append(slice(0, stop - low))
        out[(Ellipsis, *target)] = full[(Ellipsis, *source)]
        return out

    def uncrop(self, grad: np.ndarray) -> np.ndarray:
        """The transpose of :meth:`crop`: place ``grad`` back in the full extent."""
        if self._whole():
            return grad
        full = np.zeros((*grad.shape[:2], *self.spec.input_size), dtype=grad.dtype)
        source, target = [], []
        for (low, _), size, extent in zip(self.padding, self.output_size, self.spec.input_size):
            stop = min(low + size, extent)
            target.append(slice(low, stop))
            source.append(slice(0, stop - low))
        full[(Ellipsis, *target)] = grad[(Ellipsis, *source)]
        return full


def _transpose_geometry(
    op: str,
    rank: int | None,
    input: Any,
    weight: Any,
    stride: Any,
    padding: Any,
    output_padding: Any,
    groups: Any,
    dilation: Any,
    output_size: Sequence[int] | None,
) -> tuple[TransposeGeometry, bool]:
    """The geometry of ``conv_transpose(input, weight, ...)`` and whether the input has a batch axis."""
    if rank is None:
        rank = weight.ndim - 2
    if weight.ndim != rank + 2 or rank < 1:
        fail(ValueError, op, "weight", f"shape {weight.shape}",
             f"must have {rank + 2} dimensions (C_in, C_out/groups, *kernel_size)")
    if input.ndim not in (rank + 1, rank + 2):
        fail(ValueError, op, "input", f"shape {input.shape}",
             f"must have {rank + 2} dimensions (N, C_in, *spatial) or {rank + 1} unbatched")
    batched = input.ndim == rank + 2
    x_shape = input.shape if batched else (1, *input.shape)
    if not same_dtype(input.dtype, weight.dtype):
        fail(TypeError, op, "weight", f"dtype {weight.dtype} with input dtype {input.dtype}",
             "must have the same dtype as input (cast one with .astype)")
    if x_shape[1] != weight.shape[0]:
        fail(ValueError, op, "input", f"{x_shape[1]} channels", f"must have weight.shape[0]={weight.shape[0]} channels")
    strides = normalize_ints(stride, rank, "stride", op)
    dilations = normalize_ints(dilation, rank, "dilation", op)
    kernel = weight.shape[2:]
    # Removed from the output, never a convolution's "same"/"full": only ints or pairs.
    padding_pairs = resolve_padding(padding, x_shape[2:], kernel, strides, dilations, op, strings=False)
    smallest = tuple(
        shapes.conv_transpose_output_size(i, k, s, p, d)
        for i, k, s, p, d in zip(x_shape[2:], kernel, strides, padding_pairs, dilations)
    )
    if output_size is not None:
        if output_padding not in (0, None) and normalize_ints(output_padding, rank, "output_padding", op, 0) != (0,) * rank:
            fail(ValueError, op, "output_padding", repr(output_padding), "must be 0 when output_size is given")
        extra = _output_padding_for(op, output_size, smallest, strides, x_shape[2:])
    else:
        extra = normalize_ints(output_padding, rank, "output_padding", op, minimum=0)
        for p, s, d in zip(extra, strides, dilations):
            if p >= max(s, d):
                fail(ValueError, op, "output_padding", repr(output_padding),
                     f"must be smaller than stride {strides} or dilation {dilations} in every dimension")
    out_size = tuple(low + p for low, p in zip(smallest, extra))
    if min(out_size) < 1:
        fail(ValueError, op, "padding", repr(padding),
             f"leaves an output of size {out_size}; it must be at least 1 in every dimension")
    extent = tuple((i - 1) * s + shapes.dilated_kernel_size(k, d)
                   for i, k, s, d in zip(x_shape[2:], kernel, strides, dilations))
    # The forward convolution this transposes: C_out_t channels of the extent in, C_in_t out.
    spec = conv_spec((x_shape[0], weight.shape[1] * _groups(groups), *extent), weight.shape, stride=strides,
                     dilation=dilations, groups=groups, op=op)
    cropped = _cropped_spec(spec, padding_pairs, out_size)
    if cropped is not None:
        return TransposeGeometry(cropped, None, out_size), batched
    return TransposeGeometry(spec, padding_pairs, out_size), batched


def _output_padding_for(op: str, output_size: Any, smallest: tuple[int, ...], strides: tuple[int, ...],
                        input_size: tuple[int, ...]) -> tuple[int, ...]:
    """The output_padding that gives ``output_size``: PyTorch's rule, sizes from ``smallest`` to ``+ stride - 1``.

    ``output_size`` holds ints only (Python or NumPy integers, not bools, not
    floats, not a string of digits): ``rank`` spatial sizes, or a full shape
    ending in them.
    """
    rank = len(smallest)
    if isinstance(output_size, np.ndarray) and output_size.ndim == 1 and output_size.dtype.kind in "iu":
        output_size = output_size.tolist()
    if not isinstance(output_size, (tuple, list)) or not all(_is_int(n) for n in output_size):
        fail(TypeError, op, "output_size", f"{output_size!r} of type {type(output_size).__name__}",
             f"must be a tuple of ints ({rank} spatial sizes, or a full shape ending in them)")
    sizes = tuple(int(n) for n in output_size)
    if len(sizes) in (rank + 1, rank + 2):
        sizes = sizes[-rank:]
    if len(sizes) != rank:
        fail(ValueError, op, "output_size", f"{tuple(output_size)!r} ({len(output_size)} values)",
             f"must give {rank} spatial sizes (or a full shape ending in them)")
    largest = tuple(low + s - 1 for low, s in zip(smallest, strides))
    if not all(low <= size <= high for size, low, high in zip(sizes, smallest, largest)):
        fail(ValueError, op, "output_size", repr(tuple(output_size)),
             f"must lie between {smallest} and {largest} in every dimension: the valid sizes for an input of "
             f"spatial size {tuple(input_size)} at stride {strides}")
    return tuple(size - low for size, low in zip(sizes, smallest))


def _cropped_spec(
    spec: ConvSpec, padding: tuple[tuple[int, int], ...], output_size: tuple[int, ...]
) -> ConvSpec | None:
    """The forward convolution over the output itself, the crop as its padding, or None where the output holds
    another window.

    The output is cells ``[low, low + out)`` of the extent ``E``: the forward
    convolution of an ``out``-sized input padded by ``(low, E - low - out)`` has
    the same windows, and its input gradient is exactly that crop (zero padding
    drops the rest). Past the extent (``E - low - out < 0``) no padding is
    needed while the extra cells stay short of another window (fewer than a
    stride). Where the extent would be huge, the convolution then runs on the
    cells its windows read (:func:`convolab._window.compact_reads`).
    """
    pairs = []
    for (low, _), size, extent, s in zip(padding, output_size, spec.input_size, spec.stride):
        if low + size - extent >= s:  # the output would hold another window
            return None
        pairs.append((low, max(extent - low - size, 0)))
    return conv_spec((spec.batch, spec.in_channels, *output_size), spec.weight_shape, stride=spec.stride,
                     padding=tuple(pairs), dilation=spec.dilation, groups=spec.groups, op=spec.op)


def _groups(groups: Any) -> int:
    """groups as an int for the channel count; conv_spec then checks it and says what is wrong."""
    return int(groups) if _is_int(groups) else 1


def _conv_transpose(op, rank, input, weight, bias, stride, padding, output_padding, groups, dilation, output_size):
    """The output, its geometry, whether batched, and the arrays as computed with (for the pullback)."""
    input = check_array(op, "input", input)
    weight = check_array(op, "weight", weight)
    geometry, batched = _transpose_geometry(op, rank, input, weight, stride, padding, output_padding, groups, dilation,
                                            output_size)
    bias = check_bias(op, bias, geometry.spec.in_channels, input.dtype, channels_from="weight.shape[1] × groups")
    x = input if batched else input[np.newaxis]
    out = geometry.crop(conv_input_grad(x, weight, geometry.spec))
    if bias is not None:
        out += bias.astype(out.dtype).reshape(-1, *([1] * geometry.spec.rank))
    return (out if batched else out[0]), geometry, batched, (input, weight, bias)


_DOC = """{summary}

    PyTorch's ``conv_transpose{rank_name}`` with its argument order: each input
    sample, times the filter, is added into an output window (``stride`` apart),
    which is the gradient of ``conv{rank_name}`` with respect to its input.

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C_in, {spatial})`` or unbatched ``(C_in, {spatial})``.
    weight : numpy.ndarray
        ``(C_in, C_out / groups, {kernel})`` (note: C_in first, as in PyTorch).
    bias : numpy.ndarray, optional
        ``(C_out,)``.
    stride, dilation : int or tuple of int
        Of the forward convolution this transposes.
    padding : int, tuple of int, or tuple of (low, high) pairs
        Removed from the output (``dilation*(k-1) - padding`` zero padding of
        the input, in the other view).
    output_padding : int or tuple of int
        Extra size on the high side, smaller than stride or dilation.
    groups : int
        As in the forward convolution.
    output_size : sequence of int, keyword-only
        The output's spatial size (or full shape), instead of ``output_padding``,
        as in ``ConvTranspose2d.forward(input, output_size)``.

    Returns
    -------
    numpy.ndarray
        ``(N, C_out, {out})``; dtypes as :func:`convolab.conv`.

    Shape
    -----
    ``out = (in - 1)*stride - lo - hi + dilation*(k - 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, convolab as cl
    >>> x = np.ones((1, 1{ones}))
    >>> cl.conv_transpose{rank_name}(x, np.ones((1, 1{kernel_ones})), stride=2).shape
    {shape}
"""


def _conv_transpose_op(
    op: str,
    rank: int | None,
    input: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    output_size: Sequence[int] | None = None,
) -> np.ndarray:
    """The public ops (:func:`convolab._fixed_rank.fixed_rank_ops` makes one per rank): the output alone."""
    return _conv_transpose(op, rank, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           output_size)[0]


def _conv_transpose_vjp(op, rank, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                        dilation=1, output_size=None):
    out, geometry, batched, (input, weight, bias) = _conv_transpose(
        op, rank, input, weight, bias, stride, padding, output_padding, groups, dilation, output_size)

    def pullback(grad_output: np.ndarray):
        # y = crop(T(x)) with T the input gradient of conv(., w): its adjoint is conv itself.
        grad_output = check_grad_output(op, grad_output, out.shape)
        batched_grad = grad_output if batched else grad_output[np.newaxis]
        g = geometry.uncrop(batched_grad).astype(out.dtype, copy=False)
        x = input if batched else input[np.newaxis]
        grad_input = conv_forward(g, weight, None, geometry.spec)
        grad_weight = conv_weight_grad(g, x, geometry.spec)
        # The bias reaches every output cell, including those past the scattered extent.
        grad_bias = None if bias is None else batched_grad.sum(axis=(0, *range(2, g.ndim))).astype(bias.dtype)
        return (grad_input if batched else grad_input[0]), grad_weight, grad_bias

    return out, pullback


conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d = fixed_rank_ops(
    _conv_transpose_op, "conv_transpose", _DOC, vjp=_conv_transpose_vjp, words={
        None: dict(summary="N-d transposed convolution (the input gradient of ``conv``), PyTorch's semantics.",
                   ones=", 3, 3", kernel_ones=", 3, 3", shape="(1, 1, 7, 7)"),
        1: dict(summary="1-d transposed convolution.", ones=", 4", kernel_ones=", 2", shape="(1, 1, 8)"),
        2: dict(summary="2-d transposed convolution.", ones=", 3, 3", kernel_ones=", 3, 3", shape="(1, 1, 7, 7)"),
        3: dict(summary="3-d transposed convolution.", ones=", 2, 2, 2", kernel_ones=", 2, 2, 2",
                shape="(1, 1, 4, 4, 4)"),
    })
