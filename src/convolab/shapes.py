"""Shape arithmetic: pure integer functions, no arrays.

Every output size in convolab is computed here, from integers alone, so it can
be read, tested and reused (by the planner, the explainer, Dask chunking)
without touching data.

Notation, per spatial dimension:

- ``i``: input size; ``k``: kernel size; ``s``: stride; ``d``: dilation;
- ``lo``, ``hi``: padding added before and after the input;
- ``k_eff = d * (k - 1) + 1``: the extent of the dilated kernel;
- ``o = floor((i + lo + hi - k_eff) / s) + 1``: the output size.

Examples
--------
>>> conv_output_size(5, 3, stride=2, padding=(1, 1))
3
>>> same_padding(5, 2, stride=2)
(0, 1)
"""

from __future__ import annotations

__all__ = [
    "dilated_kernel_size",
    "conv_output_size",
    "same_padding",
    "full_padding",
    "unread_input_count",
    "compact_axis",
    "conv_transpose_output_size",
    "pool_output_size",
]


def dilated_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Extent of a kernel of ``kernel_size`` taps spaced ``dilation`` apart.

    >>> dilated_kernel_size(3, dilation=2)
    5
    """
    return dilation * (kernel_size - 1) + 1


def conv_output_size(
    input_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    dilation: int = 1,
) -> int:
    """Number of kernel positions along one axis.

    ``floor((input_size + lo + hi - dilation * (kernel_size - 1) - 1) / stride) + 1``,
    computed with integer floor division (never floats).

    Raises
    ------
    ValueError
        If the dilated kernel is larger than the padded input.

    Examples
    --------
    >>> conv_output_size(7, 3)
    5
    >>> conv_output_size(7, 3, stride=2, padding=(1, 1), dilation=2)
    3
    """
    low, high = padding
    padded = input_size + low + high
    extent = dilated_kernel_size(kernel_size, dilation)
    if padded < extent:
        _refuse_window("conv_output_size", input_size, kernel_size, dilation, padding, stride, None)
    return (padded - extent) // stride + 1


def same_padding(input_size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """``(low, high)`` padding that makes the output size ``ceil(input_size / stride)``.

    The total is ``max((out - 1) * stride + k_eff - input_size, 0)`` and the odd
    unit goes on the high side, the TensorFlow/JAX rule. At stride 1 this is
    exactly PyTorch's ``padding="same"`` (which PyTorch refuses at stride > 1).
    SciPy's ``mode="same"`` centres the other way for even kernels, putting the
    odd unit on the low side; :func:`convolab.correlate` follows SciPy there.

    Examples
    --------
    >>> same_padding(6, 3)
    (1, 1)
    >>> same_padding(6, 4)
    (1, 2)
    >>> same_padding(7, 3, stride=2)
    (1, 1)
    """
    output_size = -(-input_size // stride)  # ceil without floats
    total = max((output_size - 1) * stride + dilated_kernel_size(kernel_size, dilation) - input_size, 0)
    low = total // 2
    return (low, total - low)


def full_padding(kernel_size: int, dilation: int = 1) -> tuple[int, int]:
    """``(low, high)`` padding for a "full" convolution: every partial overlap.

    >>> full_padding(3)
    (2, 2)
    """
    extent = dilated_kernel_size(kernel_size, dilation)
    return (extent - 1, extent - 1)


def unread_input_count(
    input_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    dilation: int = 1,
) -> int:
    """How many trailing input samples no kernel position ever reads.

    When the stride does not divide ``padded - k_eff``, the last window stops
    short of the end; those samples get zero gradient.

    >>> unread_input_count(6, 3, stride=2)
    1
    >>> unread_input_count(7, 3, stride=2)
    0
    >>> unread_input_count(1, 1, stride=3, padding=(2, 0))
    1
    """
    low, high = padding
    output_size = conv_output_size(input_size, kernel_size, stride, padding, dilation)
    last_read = (output_size - 1) * stride + dilated_kernel_size(kernel_size, dilation) - 1  # in padded coordinates
    # Cells past the last read, counted within the input only (not its high padding).
    return min(max(input_size + low - 1 - last_read, 0), input_size)


def compact_axis(
    output_size: int, kernel_size: int, stride: int = 1, dilation: int = 1, unfold_taps: bool = True
) -> tuple[int, int, int]:
    """The cells the windows read along one axis, laid end to end: ``(length, stride, dilation)`` of that axis.

    Output ``o`` reads the padded cells ``o*s + j*d`` (taps ``j < k``). A
    convolution over the compact axis with the returned stride and dilation
    reads the same cells in the same order, whichever of two layouts is
    shorter (the first on a tie; the first always with ``unfold_taps=False``,
    which keeps the dilation):

    - *span*: each window's whole extent ``k_eff = d*(k-1) + 1``, windows
      ``min(s, k_eff)`` apart: where they overlap this is the padded axis
      itself (less its unread tail); where the stride leaves gaps between
      them, the gaps are dropped. Compact cell ``c`` is padded cell
      ``(c // s')*s + c % s'``.
    - *unfolded*: only the taps, ``k`` cells per window, ``k`` apart, at
      dilation 1 (the holes of a dilated window dropped too). Compact cell ``c``
      is padded cell ``(c // k)*s + (c % k)*d``.

    The length is at most the padded size; it is much smaller where the
    windows leave most of the padded axis unread (a stride or dilation far
    larger than the kernel), and never more than ``out * k`` cells. Nothing
    here depends on the padding: a huge padding is huge only where it is read.

    Examples
    --------
    >>> compact_axis(3, 3, stride=100000)  # three windows of 3 cells, gaps dropped
    (9, 3, 1)
    >>> compact_axis(4, 3, stride=2)  # overlapping windows: the span itself
    (9, 2, 1)
    >>> compact_axis(5, 2, dilation=10**9)  # two taps a billion apart, five windows
    (10, 2, 1)
    """
    extent = dilated_kernel_size(kernel_size, dilation)
    span_stride = min(stride, extent)
    span = (output_size - 1) * span_stride + extent
    unfolded = output_size * kernel_size
    if unfold_taps and unfolded < span:
        return unfolded, kernel_size, 1
    return span, span_stride, dilation


def conv_transpose_output_size(
    input_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    dilation: int = 1,
    output_padding: int = 0,
) -> int:
    """Output size of a transposed convolution (PyTorch's ``ConvTranspose``).

    ``(input_size - 1) * stride - lo - hi + dilation * (kernel_size - 1) + output_padding + 1``:
    the size of the input whose forward convolution gives ``input_size`` outputs,
    ``output_padding`` choosing among the ``stride`` sizes that all do.

    >>> conv_transpose_output_size(3, 3, stride=2, padding=(1, 1))
    5
    >>> conv_transpose_output_size(3, 3, stride=2, padding=(1, 1), output_padding=1)
    6
    """
    low, high = padding
    return (input_size - 1) * stride - low - high + dilated_kernel_size(kernel_size, dilation) + output_padding


def pool_output_size(
    input_size: int,
    kernel_size: int,
    stride: int,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output size of a pooling window, PyTorch's rule.

    ``floor`` (or ``ceil`` with ``ceil_mode``) of
    ``(input_size + 2*padding - dilation*(kernel_size-1) - 1) / stride``, plus one;
    in ``ceil_mode`` a last window that would start inside the right padding is dropped.
    So in ``ceil_mode`` a window larger than the padded input still gives one
    output where it overhangs by less than the stride, as in PyTorch.

    Raises
    ------
    ValueError
        Where that leaves no output (PyTorch's "output size is too small").

    >>> pool_output_size(5, 2, 2)
    2
    >>> pool_output_size(5, 2, 2, ceil_mode=True)
    3
    >>> pool_output_size(4, 2, 2, padding=1, ceil_mode=True)
    3
    >>> pool_output_size(4, 5, 5, ceil_mode=True)
    1
    """
    span = input_size + 2 * padding - dilated_kernel_size(kernel_size, dilation)
    output_size = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (output_size - 1) * stride >= input_size + padding:
        output_size -= 1
    if output_size < 1:
        _refuse_window("pool_output_size", input_size, kernel_size, dilation, (padding, padding), stride, ceil_mode)
    return output_size


def _refuse_window(op: str, input_size: int, kernel_size: int, dilation: int, padding: tuple[int, int],
                   stride: int, ceil_mode: bool | None) -> None:
    """The one "window must fit" ValueError (:func:`convolab._geometry.refuse_window`), for one axis."""
    from ._geometry import refuse_window  # here, not at the top: _geometry computes its sizes with this module

    refuse_window(op, "kernel_size", 0, input_size, kernel_size, dilation, padding, stride, ceil_mode)
