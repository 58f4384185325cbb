"""The docstrings of the chunked ops: one template per op family, and what each rank fills in.

The fixed-rank ops are made by :func:`convolab._fixed_rank.fixed_rank_ops`,
which fills a template with the op's name, the axis names of its rank
(:func:`convolab._fixed_rank.rank_words`: ``spatial``, ``kernel``, ``out``,
``rank_name``) and the fields :func:`per_rank` gathers here (summary,
examples...); the examples run as doctests on the ops they end up on.
"""

from __future__ import annotations

from typing import Mapping

from .._fixed_rank import RANKS

__all__ = ["CONV_DOC", "CONV_SUMMARIES", "CONV_EXAMPLES", "SIGNAL_DOC", "SIGNAL_EXAMPLES", "POOL_DOC",
           "MAX_POOL_SUMMARIES", "AVG_POOL_SUMMARIES", "MAX_POOL_FIELDS", "AVG_POOL_FIELDS", "MAX_POOL_EXAMPLES",
           "AVG_POOL_EXAMPLES", "INPUT_GRAD_DOC", "INPUT_GRAD_EXAMPLES", "WEIGHT_GRAD_DOC", "WEIGHT_GRAD_EXAMPLES",
           "per_rank"]

CONV_DOC = """{summary}

    The chunked counterpart of :func:`convolab.{op}`: same arguments, same
    result, computed one output block at a time (see :mod:`convolab.chunked`).

    Parameters
    ----------
    input : dask.array.Array
        ``(N, C_in, {spatial})`` or unbatched ``(C_in, {spatial})``, any
        chunking with known sizes. The channel axis is rechunked to one chunk.
    weight : numpy.ndarray or dask.array.Array
        ``(C_out, C_in / groups, {kernel})``, of the input's dtype; sent once
        to each worker.
    bias : numpy.ndarray or dask.array.Array, optional
        ``(C_out,)``.
    stride, padding, dilation, groups, padding_mode, flip
        As in :func:`convolab.{op}`; every padding mode is applied at the
        array's true edges only.
    algorithm : str
        The eager algorithm each block runs (as in :func:`convolab.{op}`);
        ``"auto"`` plans per block, so floating-point results may differ from
        the eager op's in the last bits where a block picks another algorithm.

    Returns
    -------
    dask.array.Array
        Lazy ``(N, C_out, {out})`` (no batch axis for unbatched input), in the
        eager op's dtype; batch chunks as the input's, spatial chunks from
        :func:`~convolab.chunked.axis_blocks` (input chunks divided by the stride).

    Raises
    ------
    TypeError
        ``input`` not a dask array, ``weight``/``bias`` neither NumPy nor dask,
        and every TypeError of :func:`convolab.{op}`.
    ValueError
        Unknown chunk sizes, and every ValueError of :func:`convolab.{op}`.

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``.

    Examples
    --------
{examples}
"""

CONV_SUMMARIES = {
    None: "N-d convolution of a dask array (cross-correlation by default).",
    1: "1-d convolution of a dask array: ``conv`` with one spatial dimension.",
    2: "2-d convolution of a dask array: ``conv`` with two spatial dimensions.",
    3: "3-d convolution of a dask array: ``conv`` with three spatial dimensions.",
}

CONV_EXAMPLES = {
    None: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.chunked as cld
    >>> x = da.arange(2 * 64).reshape(2, 1, 8, 8).rechunk((1, 1, 3, 5))
    >>> w = np.arange(18).reshape(2, 1, 3, 3)
    >>> y = cld.conv(x, w, padding=1, stride=2, padding_mode="circular")
    >>> y.chunks
    ((1, 1), (2,), (2, 1, 1), (3, 1))
    >>> np.array_equal(y.compute(), cl.conv(x.compute(), w, padding=1, stride=2, padding_mode="circular"))
    True""",
    1: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.from_array(np.array([[1, 2, 3, 4, 5, 6]]), chunks=(1, 2))
    >>> cld.conv1d(x, np.array([[[1, 0, -1]]]), padding=1, padding_mode="reflect").compute()
    array([[ 0, -2, -2, -2, -2,  0]])""",
    2: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.chunked as cld
    >>> x = da.arange(100).reshape(1, 10, 10).rechunk((1, 4, 3))
    >>> sobel = np.array([[[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]]])
    >>> y = cld.conv2d(x, sobel, padding="same", padding_mode="replicate")
    >>> np.array_equal(y.compute(), cl.conv2d(x.compute(), sobel, padding="same", padding_mode="replicate"))
    True""",
    3: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.ones((1, 2, 6, 6, 6), chunks=(1, 1, 2, 3, 6))
    >>> y = cld.conv3d(x, np.ones((4, 2, 3, 3, 3)), padding=1)
    >>> y.shape, y.chunks[1], float(y[0, 0, 2, 2, 2].compute())
    ((1, 4, 6, 6, 6), (4,), 54.0)""",
}

SIGNAL_DOC = """{summary}

    The chunked counterpart of :func:`convolab.{op}` (``scipy.signal.{op}``'s
    semantics): ``in1`` is a chunked dask array, ``in2`` a small kernel.

    Parameters
    ----------
    in1 : dask.array.Array
        The signal, at least 1-d, any chunking with known sizes.
    in2 : array_like or dask.array.Array
        The kernel, of ``in1``'s number of dimensions; sent once to each worker.
    mode : {{"full", "valid", "same"}}
        As in :func:`convolab.{op}`. For ``"valid"``, ``in2`` must fit inside
        ``in1`` (SciPy would swap the two; here ``in2`` is the one that slides).
    method : {{"auto", "direct", "fft"}}
        The eager method each block runs.

    Returns
    -------
    dask.array.Array
        Lazy, of the eager op's shape and dtype, chunked like ``in1``.

    Raises
    ------
    TypeError, ValueError
        ``in1`` not a dask array or with unknown chunks; a 0-d ``in1``; an
        ``in2`` larger than ``in1`` in ``"valid"`` mode; and every error of
        :func:`convolab.{op}`.

    Shape
    -----
    Per axis: full ``s1 + s2 - 1``; same ``s1``; valid ``s1 - s2 + 1``.

    Examples
    --------
{examples}
"""

SIGNAL_EXAMPLES = {
    "correlate": """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.from_array(np.array([1, 2, 3, 4, 5]), chunks=2)
    >>> cld.correlate(x, [1, 0, -1]).compute()
    array([-1, -2, -2, -2, -2,  4,  5])
    >>> cld.correlate(x, [1, 0, -1], mode="same").chunks
    ((2, 2, 1),)""",
    "convolve": """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.chunked as cld
    >>> image = da.arange(48).reshape(6, 8).rechunk((4, 3))
    >>> kernel = np.array([[1, 2], [3, 4]])
    >>> np.array_equal(cld.convolve(image, kernel, mode="same").compute(),
    ...                cl.convolve(image.compute(), kernel, mode="same"))
    True""",
}

POOL_DOC = """{summary}

    The chunked counterpart of :func:`convolab.{op}`: same arguments, same
    result, one output block at a time. Channels never mix, so channel chunks
    are kept.

    Parameters
    ----------
    input : dask.array.Array
        ``(N, C, {spatial})`` or unbatched ``(C, {spatial})``, any chunking
        with known sizes.
    {params}
        As in :func:`convolab.{op}`; the implicit padding (and ``ceil_mode``'s
        overhang) is applied at the array's true edges only.

    Returns
    -------
    dask.array.Array
        Lazy ``(N, C, {out})``, in the eager op's dtype.

    Raises
    ------
    TypeError, ValueError
        ``input`` not a dask array or with unknown chunks;{extra_raises} and
        every error of :func:`convolab.{op}`.

    Notes
    -----
    {notes}

    Shape
    -----
    Per spatial dimension,
    ``out = floor((in + 2 * padding - {extent}) / stride) + 1`` (``ceil`` with ``ceil_mode``).

    Examples
    --------
{examples}
"""

MAX_POOL_SUMMARIES = {rank: f"{'N' if rank is None else rank}-d max pooling of a dask array." for rank in RANKS}
AVG_POOL_SUMMARIES = {rank: f"{'N' if rank is None else rank}-d average pooling of a dask array." for rank in RANKS}

#: What differs between the two pools' docstrings (beside the summaries and examples).
MAX_POOL_FIELDS = {
    "extent": "dilation * (kernel_size - 1) - 1",
    "params": "kernel_size, stride, padding, dilation, ceil_mode",
    "extra_raises": " ``return_indices=True`` (indices are not computed on chunks: use the eager op);",
    "notes": "Padding cells are filled with ``-inf`` (an integer dtype's minimum), which the maximum never\n"
             "    prefers over an input cell, so the values equal the eager op's (padding taps are masked there).",
}
AVG_POOL_FIELDS = {
    "extent": "kernel_size",
    "params": "kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override",
    "extra_raises": "",
    "notes": "Each block sums its windows with the eager op and divides by the divisor of the window's place\n"
             "    in the whole array (PyTorch's rule). Integer inputs give the eager op's exact numbers; floating\n"
             "    point sums may differ from it in the last bit (the window sums are added in another order).",
}

MAX_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.chunked as cld
    >>> x = da.random.default_rng(0).standard_normal((2, 3, 9, 11), chunks=(1, 2, 4, 3))
    >>> y = cld.max_pool(x, (3, 3), stride=2, padding=1, ceil_mode=True)
    >>> np.array_equal(y.compute(), cl.max_pool(x.compute(), (3, 3), stride=2, padding=1, ceil_mode=True))
    True""",
    1: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.from_array(np.array([[3, 1, 4, 1, 5, 9, 2]]), chunks=(1, 2))
    >>> cld.max_pool1d(x, 3, stride=2).compute()
    array([[4, 5, 9]])""",
    2: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.arange(16.).reshape(1, 4, 4).rechunk((1, 3, 1))
    >>> cld.max_pool2d(x, 2).compute()
    array([[[ 5.,  7.],
            [13., 15.]]])""",
    3: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.arange(64.).reshape(1, 1, 4, 4, 4).rechunk(3)
    >>> cld.max_pool3d(x, 2).compute().ravel()
    array([21., 23., 29., 31., 53., 55., 61., 63.])""",
}

AVG_POOL_EXAMPLES = {
    None: """    >>> import numpy as np, dask.array as da, convolab as cl, convolab.chunked as cld
    >>> x = da.arange(2 * 70).reshape(2, 1, 7, 10).rechunk((1, 1, 3, 4))
    >>> y = cld.avg_pool(x, (3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    >>> np.array_equal(y.compute(),
    ...                cl.avg_pool(x.compute(), (3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False))
    True""",
    1: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.from_array(np.array([[1., 2., 3., 4., 5.]]), chunks=(1, 2))
    >>> cld.avg_pool1d(x, 3, stride=2, padding=1, count_include_pad=False).compute()
    array([[1.5, 3. , 4.5]])""",
    2: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> x = da.arange(16.).reshape(1, 1, 4, 4).rechunk((1, 1, 1, 3))
    >>> cld.avg_pool2d(x, 2).compute()
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])""",
    3: """    >>> import numpy as np, dask.array as da, convolab.chunked as cld
    >>> cld.avg_pool3d(da.ones((2, 3, 3, 3), chunks=1), 2, stride=1, padding=1).shape
    (2, 4, 4, 4)""",
}

INPUT_GRAD_DOC = """Gradient of :func:`convolab.chunked.conv{rank_name}` with respect to its input, on dask arrays.

    The chunked counterpart of :func:`convolab.grad.{op}`. Each chunk of the
    result is computed from the ``grad_output`` rows whose windows reach it;
    the gradient that lands on padding cells is folded back onto the cells
    they copied (for ``"circular"``, at the far edge).

    Parameters
    ----------
    input_size : tuple of int
        Shape of the forward input (batched, or unbatched ``(C_in, {spatial})``).
    weight : numpy.ndarray or dask.array.Array
        ``(C_out, C_in / groups, {kernel})``.
    grad_output : dask.array.Array
        Of the forward output's shape and the weight's dtype, any chunking.
    stride, padding, dilation, groups, padding_mode, flip, algorithm
        As in :func:`convolab.grad.{op}`.
    chunks : dask chunks, optional
        The result's chunks; pass ``chunks=input.chunks`` to get the gradient
        chunked like the input. ``None``: batch chunks of ``grad_output``, one
        channel chunk, spatial chunks under ``grad_output``'s (times the stride).

    Returns
    -------
    dask.array.Array
        Lazy, of shape ``input_size``, dtype as the eager op.

    Raises
    ------
    TypeError, ValueError
        ``grad_output`` not a dask array, of the wrong shape or dtype; an
        invalid ``chunks``; and every error of :func:`convolab.grad.{op}`.

    Shape
    -----
    ``grad_input`` has shape ``input_size``; ``grad_output`` the forward output's,
    ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convolab as cl, convolab.chunked as cld
{examples}
"""

WEIGHT_GRAD_DOC = """Gradient of :func:`convolab.chunked.conv{rank_name}` with respect to its weight, on dask arrays.

    The chunked counterpart of :func:`convolab.grad.{op}`: each block of the
    input (batch and spatial chunks alike) gives its share of the weight
    gradient from its slab and its ``grad_output`` block, and the shares are
    summed with a tree reduction (``split_every`` at a time).

    Parameters
    ----------
    input : dask.array.Array
        The forward input, ``(N, C_in, {spatial})`` or unbatched.
    weight_size : tuple of int
        ``(C_out, C_in / groups, {kernel})``.
    grad_output : dask.array.Array
        Of the forward output's shape and the input's dtype; rechunked to the
        forward output's chunks if it is not already.
    stride, padding, dilation, groups, padding_mode, flip, algorithm
        As in :func:`convolab.grad.{op}`.
    split_every : int, optional
        Shares added per node of the reduction tree, ``>= 2``; ``None`` is dask's default.

    Returns
    -------
    dask.array.Array
        Lazy, of shape ``weight_size``, one chunk; dtype as the eager op
        (float16 shares are summed in float32). Float sums are added in
        another order than the eager op's, so they agree to rounding.

    Raises
    ------
    TypeError, ValueError
        ``input`` or ``grad_output`` not dask arrays, a ``grad_output`` of
        the wrong shape or dtype, a bad ``split_every``, and every error of
        :func:`convolab.grad.{op}`. Integer data whose summed gradient might
        not fit int64 is refused as the eager op refuses it (its bound on the
        whole arrays), when the result is computed.

    Shape
    -----
    The result has shape ``weight_size``; ``grad_output`` the forward output's.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convolab as cl, convolab.chunked as cld
{examples}
"""

INPUT_GRAD_EXAMPLES = {
    None: """    >>> w = np.arange(8).reshape(2, 1, 2, 2)
    >>> g = da.ones((3, 2, 6, 6), dtype=int, chunks=(1, 2, 3, 2))
    >>> dx = cld.conv_input((3, 1, 5, 5), w, g, padding=1, padding_mode="circular", chunks=(1, 1, 2, 3))
    >>> dx.chunks[2:], np.array_equal(dx.compute(), cl.grad.conv_input(
    ...     (3, 1, 5, 5), w, g.compute(), padding=1, padding_mode="circular"))
    (((2, 2, 1), (3, 2)), True)""",
    1: """    >>> g = da.ones((1, 1, 3), chunks=1)
    >>> cld.conv1d_input((1, 1, 4), np.array([[[1., 2.]]]), g).compute()
    array([[[1., 3., 3., 2.]]])""",
    2: """    >>> w = np.array([[[[1., 2.], [3., 4.]]]])
    >>> cld.conv2d_input((1, 1, 3, 3), w, da.ones((1, 1, 2, 2), chunks=1)).compute()[0, 0]
    array([[ 1.,  3.,  2.],
           [ 4., 10.,  6.],
           [ 3.,  7.,  4.]])""",
    3: """    >>> g = da.ones((1, 1, 2, 2, 2), chunks=1)
    >>> cld.conv3d_input((1, 1, 3, 3, 3), np.ones((1, 1, 2, 2, 2)), g).compute()[0, 0, 1]
    array([[2., 4., 2.],
           [4., 8., 4.],
           [2., 4., 2.]])""",
}

WEIGHT_GRAD_EXAMPLES = {
    None: """    >>> x = da.arange(4 * 2 * 36).reshape(4, 2, 6, 6).rechunk((1, 2, 4, 3))
    >>> g = da.ones((4, 3, 4, 4), dtype=int, chunks=1)
    >>> dw = cld.conv_weight(x, (3, 2, 2, 2), g, stride=2, padding=1, padding_mode="reflect")
    >>> np.array_equal(dw.compute(), cl.grad.conv_weight(
    ...     x.compute(), (3, 2, 2, 2), g.compute(), stride=2, padding=1, padding_mode="reflect"))
    True""",
    1: """    >>> x = da.from_array(np.array([[[1., 2., 3.]], [[4., 5., 6.]]]), chunks=1)
    >>> cld.conv1d_weight(x, (1, 1, 2), da.ones((2, 1, 2), chunks=1)).compute()
    array([[[12., 16.]]])""",
    2: """    >>> x = da.arange(1., 10.).reshape(1, 1, 3, 3).rechunk(2)
    >>> cld.conv2d_weight(x, (1, 1, 2, 2), da.ones((1, 1, 2, 2), chunks=1)).compute()[0, 0]
    array([[12., 16.],
           [24., 28.]])""",
    3: """    >>> x = da.ones((2, 1, 3, 3, 3), chunks=(1, 1, 2, 2, 2))
    >>> cld.conv3d_weight(x, (1, 1, 2, 2, 2), da.ones((2, 1, 2, 2, 2), chunks=1)).compute().ravel()
    array([16., 16., 16., 16., 16., 16., 16., 16.])""",
}



def per_rank(examples: Mapping[int | None, str], summaries: Mapping[int | None, str] | None = None,
             **fields: str) -> dict[int | None, dict[str, str]]:
    """The fields a family's template takes at each rank: its examples, its summary, and ``fields`` (every rank)."""
    return {rank: {**fields, "examples": examples[rank], **({"summary": summaries[rank]} if summaries else {})}
            for rank in RANKS}
