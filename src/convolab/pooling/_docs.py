"""The docstring templates of the pooling ops and their words per rank.

Each op family has one numpydoc template, filled per rank by
:func:`convolab._fixed_rank.fixed_rank_ops` with the shared words
(``op``, ``rank_name``, ``spatial``, ``out``: :func:`convolab._fixed_rank.rank_words`)
and the family's ``*_WORDS`` table here: per rank, the summary line, how the
kernel or output size is typed (:func:`_rank_fields`), the family's own
wording, and the doctests for the N-d op (key ``None``) and for
``1d``/``2d``/``3d``. The examples run as doctests of the module that makes
the op.
"""

from __future__ import annotations

from typing import Mapping

from .._fixed_rank import RANKS

_DIMENSIONS = {1: "one spatial dimension", 2: "two spatial dimensions", 3: "three spatial dimensions"}


def _rank_fields(rank: int | None) -> dict[str, str]:
    """How a template types the kernel size (``kernel_*``) or the output size (``size_*``) at ``rank``.

    >>> _rank_fields(2)["kernel_type"]
    'int or tuple of int'
    """
    nd = rank is None
    return {
        "kernel_type": "tuple of int" if nd else "int or tuple of int",
        "kernel_note": " Its length is the number of spatial dimensions." if nd else "",
        "size_type": "tuple of int or None" if nd else "int, or tuple of int or None",
        "size_note": " Its length is the number of spatial dimensions." if nd else "",
    }


def _summaries(family: str, title: str, nd_summary: str) -> dict[int | None, str]:
    """The summary line per rank: ``nd_summary`` for the N-d op, else "2-d {title}: ``family`` with two ...".

    >>> _summaries("max_pool", "max pooling", "N-d max pooling.")[2]
    '2-d max pooling: ``max_pool`` with two spatial dimensions.'
    """
    return {None: nd_summary, **{rank: f"{rank}-d {title}: ``{family}`` with {_DIMENSIONS[rank]}."
                                 for rank in _DIMENSIONS}}


def _per_rank(examples: Mapping[int | None, str], summaries: Mapping[int | None, str] | None = None,
              **family_words: str) -> dict[int | None, dict[str, str]]:
    """A family's words for :func:`convolab._fixed_rank.fixed_rank_ops`: per rank, its examples, its summary
    (if the template has one), :func:`_rank_fields` and the ``family_words`` every rank shares."""
    return {rank: {**_rank_fields(rank), **family_words, "examples": examples[rank],
                   **({"summary": summaries[rank]} if summaries else {})} for rank in RANKS}


_MAX_POOL_DOC = """{summary}

    Output element ``o`` of each channel is the maximum of the window
    ``x[o * stride + j * dilation - padding]`` over kernel taps ``j``; padding is
    implicit ``-inf`` (it is never selected).

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``; floating or integer.
    kernel_size : {kernel_type}
        Window size per spatial dimension, ``>= 1``.{kernel_note}
    stride : int or tuple of int, optional
        Step between windows, ``>= 1``; ``None`` (default) means ``kernel_size``.
    padding : int or tuple of int
        Implicit ``-inf`` on both sides, ``0 <= padding <= kernel_size // 2``.
    dilation : int or tuple of int
        Spacing between window taps, ``>= 1``.
    ceil_mode : bool
        Round the output size up, adding a last window that may hang past the
        padded input, if it starts inside the input or the left padding.
    return_indices : bool
        Also return, for each output, the flat index of the chosen element in
        its ``(n, c)`` plane of the unpadded input (what :func:`max_unpool{rank_name}` takes).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, numpy.ndarray)
        ``(N, C, {out})`` (no batch axis for unbatched input) in the input's
        dtype (integers stay integers); with ``return_indices``, also int64
        indices of the same shape.

    Raises
    ------
    TypeError
        A non-array, masked-array or complex input; non-integer sizes; non-bool flags.
    ValueError
        A wrong input rank or an empty spatial dimension; kernel_size, stride
        or dilation below 1 or of the wrong count; padding negative or above
        ``kernel_size // 2``; a window larger than the padded input (with
        ``ceil_mode``: by a stride or more, which leaves no output), or one that
        reads only padding.

    Notes
    -----
    Ties follow PyTorch: the window is read in row-major order over the kernel
    taps and the *first* maximum wins; the gradient (see the vjp and
    :func:`max_pool{rank_name}_input`) goes entirely to that one element. NaN propagates, with
    the index of the window's last NaN.

    Under :func:`convolab.vjp` with ``return_indices=True`` the output is the
    pair ``(values, indices)``; the pullback takes the values' cotangent (or
    ``(grad_values, None)``), since indices have no gradient.

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``
    (``ceil`` instead of ``floor`` with ``ceil_mode``, dropping a last window
    that would start in the right padding; see :func:`convolab.shapes.pool_output_size`).

    Examples
    --------
{examples}
"""

_MAX_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[[[1., 5., 2., 0.], [3., 4., 9., 8.], [7., 6., 1., 2.]]]])
    >>> P.max_pool(x, (2, 2))
    array([[[[5., 9.]]]])
    >>> P.max_pool(x, (2, 2), ceil_mode=True, return_indices=True)
    (array([[[[5., 9.],
             [7., 2.]]]]), array([[[[ 1,  6],
             [ 8, 11]]]]))""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_pool1d(np.array([[3, 1, 4, 1, 5, 9, 2]]), 3, stride=2)
    array([[4, 5, 9]])
    >>> P.max_pool1d(np.array([[2., 2., 1.]]), 2, stride=1, return_indices=True)[1]
    array([[0, 1]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.arange(16.).reshape(1, 4, 4)
    >>> P.max_pool2d(x, 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
    >>> P.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)[1]
    array([[[ 5,  7],
            [13, 15]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_pool3d(np.arange(64.).reshape(1, 1, 4, 4, 4), 2, stride=2).ravel()
    array([21., 23., 29., 31., 53., 55., 61., 63.])""",
}

_MAX_POOL_INPUT_DOC = """Gradient of :func:`max_pool{rank_name}` with respect to its input.

    The gradient of ``max_pool{rank_name}(input, ...)`` with respect to ``input``, given the
    gradient ``grad_output`` of its output: each output's gradient is added to the
    one input element its window selected (the first maximum in row-major window
    order, as PyTorch); overlapping windows that select the same element add up.

    Parameters
    ----------
    grad_output : numpy.ndarray
        Floating point, of the forward output's shape ``(N, C, {out})`` or
        unbatched ``(C, {out})``.
    input : numpy.ndarray
        The forward input ``(N, C, {spatial})`` or ``(C, {spatial})``.
    kernel_size, stride, padding, dilation, ceil_mode
        As in :func:`max_pool{rank_name}`.

    Returns
    -------
    numpy.ndarray
        ``grad_input`` of ``input``'s shape, in ``grad_output``'s dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool{rank_name}`; also a non-floating ``grad_output`` or one not
        shaped like the output.

    Shape
    -----
    ``grad_input`` has ``input``'s shape; ``grad_output`` has the output's,
    ``out = floor((in + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``
    (``ceil`` with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np, convolab.pooling as P
{examples}
"""

_MAX_POOL_INPUT_EXAMPLES = {
    None: """    >>> P.max_pool_input(np.ones((1, 1, 1, 2)), np.array([[[[1., 3., 2., 2.]]]]), (1, 2))
    array([[[[0., 1., 1., 0.]]]])""",
    1: """    >>> P.max_pool1d_input(np.ones((1, 3)), np.array([[1., 3., 3., 2.]]), 2, stride=1)
    array([[0., 2., 1., 0.]])""",
    2: """    >>> P.max_pool2d_input(np.ones((1, 1, 1)), np.array([[[1., 4.], [4., 0.]]]), 2)
    array([[[0., 1.],
            [0., 0.]]])""",
    3: """    >>> P.max_pool3d_input(np.ones((1, 1, 1, 1)), np.arange(8.).reshape(1, 2, 2, 2), 2)[0, 1]
    array([[0., 0.],
           [0., 1.]])""",
}



_AVG_POOL_DOC = """{summary}

    Output element ``o`` of each channel is the sum of its window
    ``x[o * stride + j - padding]`` (padding is implicit zeros) divided by
    PyTorch's divisor: ``divisor_override`` if given; else the window's size
    clipped to the padded extent ``[-padding, in + padding)`` with
    ``count_include_pad``; else the number of input (non-padding) elements it
    covers. A ``ceil_mode`` window that hangs past ``in + padding`` never counts
    the cells beyond.

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``; floating or integer.
    kernel_size : {kernel_type}
        Window size per spatial dimension, ``>= 1``.{kernel_note}
    stride : int or tuple of int, optional
        Step between windows, ``>= 1``; ``None`` (default) means ``kernel_size``.
    padding : int or tuple of int
        Implicit zeros on both sides, ``0 <= padding <= kernel_size // 2``.
    ceil_mode : bool
        Round the output size up (see Shape).
    count_include_pad : bool
        Whether padding cells count in the divisor.
    divisor_override : int, optional
        Nonzero; divide every window's sum by it instead. (PyTorch's
        ``avg_pool1d`` lacks it; it is accepted here at every rank.)

    Returns
    -------
    numpy.ndarray
        ``(N, C, {out})`` (no batch axis for unbatched input). float16 is summed
        in float32 and returned as float16; float32/float64 are kept. Integer
        inputs are averaged exactly and returned as float64, like ``numpy.mean``
        (PyTorch's CPU kernels refuse every integer dtype but int64, and
        truncate that one toward zero).

    Raises
    ------
    TypeError
        A non-array, masked-array or complex input; non-integer sizes or divisor; non-bool flags.
    ValueError
        A wrong input rank or an empty spatial dimension; kernel_size or stride
        below 1 or of the wrong count; padding negative or above
        ``kernel_size // 2``; a window larger than the padded input (with
        ``ceil_mode``: by a stride or more, which leaves no output);
        ``divisor_override=0``.

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + 2 * padding - kernel_size) / stride) + 1``
    (``ceil`` instead of ``floor`` with ``ceil_mode``, dropping a last window
    that would start in the right padding).

    Examples
    --------
{examples}
"""

_AVG_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[[[1., 2., 3.], [4., 5., 6.]]]])
    >>> P.avg_pool(x, (2, 2), stride=1)
    array([[[[3., 4.]]]])
    >>> P.avg_pool(x, (2, 2), ceil_mode=True)
    array([[[[3. , 4.5]]]])""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[1., 2., 3., 4., 5.]])
    >>> P.avg_pool1d(x, 3, stride=2, padding=1)
    array([[1., 3., 3.]])
    >>> P.avg_pool1d(x, 3, stride=2, padding=1, count_include_pad=False)
    array([[1.5, 3. , 4.5]])
    >>> P.avg_pool1d(np.array([[1, 2, 4]]), 2, stride=1)
    array([[1.5, 3. ]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.arange(16.).reshape(1, 1, 4, 4)
    >>> P.avg_pool2d(x, 2)
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    >>> P.avg_pool2d(x, 2, divisor_override=1)
    array([[[[10., 18.],
             [42., 50.]]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.avg_pool3d(np.ones((2, 3, 3, 3)), 2, stride=1, padding=1).shape
    (2, 4, 4, 4)""",
}

_AVG_POOL_INPUT_DOC = """Gradient of :func:`avg_pool{rank_name}` with respect to its input.

    The gradient of ``avg_pool{rank_name}(input, ...)`` with respect to ``input``, given the
    gradient ``grad_output`` of its output: each input element receives
    ``grad_output[o] / divisor[o]`` from every window ``o`` that covers it
    (the divisor as in :func:`avg_pool{rank_name}`).

    Parameters
    ----------
    grad_output : numpy.ndarray
        Floating point, of the forward output's shape ``(N, C, {out})`` or
        unbatched ``(C, {out})``.
    input : numpy.ndarray
        The forward input ``(N, C, {spatial})`` or ``(C, {spatial})`` (only its
        shape is read).
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As in :func:`avg_pool{rank_name}`.

    Returns
    -------
    numpy.ndarray
        ``grad_input`` of ``input``'s shape, in ``grad_output``'s dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`avg_pool{rank_name}`; also a non-floating ``grad_output`` or one not
        shaped like the output.

    Shape
    -----
    ``grad_input`` has ``input``'s shape; ``grad_output`` has the output's,
    ``out = floor((in + 2 * padding - kernel_size) / stride) + 1`` (``ceil`` with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np, convolab.pooling as P
{examples}
"""

_AVG_POOL_INPUT_EXAMPLES = {
    None: """    >>> P.avg_pool_input(np.ones((1, 1, 1, 2)), np.zeros((1, 1, 1, 3)), (1, 2), stride=1)
    array([[[[0.5, 1. , 0.5]]]])""",
    1: """    >>> P.avg_pool1d_input(np.ones((1, 2)), np.zeros((1, 3)), 2, padding=1)
    array([[0.5, 0.5, 0.5]])""",
    2: """    >>> P.avg_pool2d_input(np.full((1, 1, 1), 4.), np.zeros((1, 2, 2)), 2)
    array([[[1., 1.],
            [1., 1.]]])""",
    3: """    >>> P.avg_pool3d_input(np.ones((1, 1, 1, 1)), np.zeros((1, 2, 2, 2)), 2, divisor_override=1).sum()
    np.float64(8.0)""",
}



_ADAPTIVE_DOC = """{summary}

    Output position ``o`` (per spatial dimension) pools the input window
    ``[floor(o * in / out), ceil((o + 1) * in / out))``; windows may overlap and
    differ in length by one when ``out`` does not divide ``in``.
    {semantics}

    Parameters
    ----------
    input : numpy.ndarray
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``; floating or
        integer, with non-empty spatial dimensions.
    output_size : {size_type}
        The output's spatial size, each ``>= 0``; ``None`` entries keep that
        input size.{size_note}{extra_params}

    Returns
    -------
    {returns}

    Raises
    ------
    TypeError
        A non-array or complex input; a non-integer output_size entry.
    ValueError
        A wrong input rank; an empty spatial dimension; output_size negative or
        of the wrong count.

    Shape
    -----
    ``(N, C, {spatial})`` to ``(N, C, *output_size)``: ``out = output_size``
    (or ``in`` where ``None``), independent of the input size.

    Examples
    --------
{examples}
"""

_ADAPTIVE_AVG_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool(np.arange(10.).reshape(1, 2, 5), (1, 3))
    array([[[3. , 4.5, 6. ]]])""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool1d(np.array([[0., 1., 2., 3., 4.]]), 3)
    array([[0.5, 2. , 3.5]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool2d(np.arange(12.).reshape(1, 1, 3, 4), (None, 1))
    array([[[[1.5],
             [5.5],
             [9.5]]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_avg_pool3d(np.ones((2, 3, 5, 6, 7)), 1).shape
    (2, 3, 1, 1, 1)""",
}

_ADAPTIVE_MAX_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool(np.array([[[3., 1.], [4., 1.], [5., 9.]]]), (2, 1), return_indices=True)
    (array([[[4.],
            [9.]]]), array([[[2],
            [5]]]))""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool1d(np.array([[3, 1, 4, 1, 5]]), 3)
    array([[3, 4, 5]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool2d(np.arange(12.).reshape(1, 3, 4), (2, 2))
    array([[[ 5.,  7.],
            [ 9., 11.]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.adaptive_max_pool3d(np.arange(8).reshape(1, 1, 2, 2, 2), 1, return_indices=True)
    (array([[[[[7]]]]]), array([[[[[7]]]]]))""",
}



_MAX_UNPOOL_DOC = """{summary}

    A partial inverse of :func:`max_pool{rank_name}`: every input value is written at the flat
    position ``indices`` gives it in its ``(n, c)`` plane of the output; every
    other output element is zero. Where indices repeat, the last value written
    wins (PyTorch leaves it unspecified).

    Parameters
    ----------
    input : numpy.ndarray
        Pooled values ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``.
    indices : numpy.ndarray
        Integer flat plane indices of ``input``'s shape, e.g. from
        ``max_pool{rank_name}(..., return_indices=True)``; each in ``[0, prod(output size))``.
    kernel_size : {kernel_type}
        The pooling's window size, ``>= 1``.{kernel_note}
    stride : int or tuple of int, optional
        The pooling's stride; ``None`` (default) means ``kernel_size``.
    padding : int or tuple of int
        The pooling's padding, ``>= 0``.
    output_size : tuple of int, optional
        The spatial size to produce (``rank`` entries, or ``rank + 2`` whose
        first two are ignored), strictly within ``stride`` of the default; this
        recovers input sizes the pooling's floor division lost.

    Returns
    -------
    numpy.ndarray
        ``(N, C, {out})`` (no batch axis for unbatched input), input's dtype.

    Raises
    ------
    TypeError
        A non-array or complex input; non-array or non-integer indices;
        non-integer sizes.
    ValueError
        A wrong input rank; indices not of the input's shape or out of range;
        kernel_size or stride below 1; negative padding; an output_size of the
        wrong count or too far from the default.

    Shape
    -----
    Per spatial dimension, ``out = (in - 1) * stride - 2 * padding + kernel_size``,
    or ``output_size``.

    Examples
    --------
{examples}
"""

_MAX_UNPOOL_EXAMPLES = {
    None: """    >>> import numpy as np, convolab.pooling as P
    >>> x = np.array([[[[1., 5., 2.], [3., 4., 9.]]]])
    >>> values, indices = P.max_pool(x, (2, 2), return_indices=True)
    >>> P.max_unpool(values, indices, (2, 2), output_size=(2, 3))
    array([[[[0., 5., 0.],
             [0., 0., 0.]]]])""",
    1: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_unpool1d(np.array([[7., 8.]]), np.array([[1, 2]]), 2)
    array([[0., 7., 8., 0.]])""",
    2: """    >>> import numpy as np, convolab.pooling as P
    >>> values, indices = P.max_pool2d(np.arange(16.).reshape(1, 4, 4), 2, return_indices=True)
    >>> P.max_unpool2d(values, indices, 2)
    array([[[ 0.,  0.,  0.,  0.],
            [ 0.,  5.,  0.,  7.],
            [ 0.,  0.,  0.,  0.],
            [ 0., 13.,  0., 15.]]])""",
    3: """    >>> import numpy as np, convolab.pooling as P
    >>> P.max_unpool3d(np.ones((1, 1, 1, 1)), np.array([[[[7]]]]), 2).ravel()
    array([0., 0., 0., 0., 0., 0., 0., 1.])""",
}


_MAX_POOL_WORDS = _per_rank(_MAX_POOL_EXAMPLES, _summaries(
    "max_pool", "max pooling", "N-d max pooling: the maximum of each window, per channel."))
_MAX_POOL_INPUT_WORDS = _per_rank(_MAX_POOL_INPUT_EXAMPLES)
_AVG_POOL_WORDS = _per_rank(_AVG_POOL_EXAMPLES, _summaries(
    "avg_pool", "average pooling", "N-d average pooling: the mean of each window, per channel."))
_AVG_POOL_INPUT_WORDS = _per_rank(_AVG_POOL_INPUT_EXAMPLES)
_ADAPTIVE_AVG_WORDS = _per_rank(
    _ADAPTIVE_AVG_EXAMPLES,
    _summaries("adaptive_avg_pool", "adaptive average pooling", "N-d adaptive average pooling to a fixed output size."),
    semantics="Each output is its window's mean.",
    extra_params="",
    returns="numpy.ndarray\n        ``(N, C, *output_size)`` (no batch axis for unbatched input); float16\n"
            "        is summed in float32; integers are averaged and returned as float64.",
)
_ADAPTIVE_MAX_WORDS = _per_rank(
    _ADAPTIVE_MAX_EXAMPLES,
    _summaries("adaptive_max_pool", "adaptive max pooling", "N-d adaptive max pooling to a fixed output size."),
    semantics=("Each output is its window's maximum. Ties go to the first maximum in\n"
               "    row-major window order, which alone receives the gradient; NaN propagates\n"
               "    with the index of the window's last NaN. Both as in PyTorch. Under\n"
               "    ``convolab.vjp`` with ``return_indices=True`` the pullback takes the\n"
               "    values' cotangent (or ``(grad_values, None)``)."),
    extra_params=("\n    return_indices : bool\n        Also return the int64 flat index of each "
                  "maximum in its ``(n, c)`` plane."),
    returns=("numpy.ndarray, or (numpy.ndarray, numpy.ndarray)\n        ``(N, C, *output_size)`` "
             "(no batch axis for unbatched input) in the input's dtype;\n        with ``return_indices``, "
             "also the int64 indices."),
)
_MAX_UNPOOL_WORDS = _per_rank(_MAX_UNPOOL_EXAMPLES, _summaries(
    "max_unpool", "max unpooling", "N-d max unpooling: scatter pooled maxima back into place."))
