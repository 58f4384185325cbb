"""Showing the work: convolution taken apart with the user's own numbers, checked as it is shown.

Everything here is assembled from the building blocks the convolution itself
uses (the frozen spec, the padding, the sliding windows, the oriented kernel,
im2col's unroll), so what is shown is what is computed. The rooms:

- :mod:`~convolab.show.tracing`: :func:`trace` takes one output element apart
  (its window, padding, sources, kernel, product, sum, bias, result);
- :mod:`~convolab.show.matrices`: :func:`im2col_matrices` (the unrolled input
  and filter matrix whose product is the convolution) and :func:`conv_matrix`
  (the convolution as one sparse matrix, its transpose the input gradient);
- :mod:`~convolab.show.checks`: :class:`Identity`, :class:`IdentityChain` and
  the ``check_*`` functions, which compute two or more ways of getting one
  quantity and say whether they agree;
- :mod:`~convolab.show.explain`: explanations as data (cases, steps with
  their numbers and checks, one module per topic) and their renderers (text,
  Markdown, JSON, rich); ``convolab explain`` prints them;
- :mod:`~convolab.show.pictures`: the GIF and PNGs ``convolab animate`` and
  ``convolab draw`` write from those steps (matplotlib, imported on use);
- ``_format`` (numbers, arrays and JSON as all of the above write them) and
  ``_problem`` (the checked spec, read-only copies, padded sources).

Only the first three are imported here (``import convolab`` exports them);
``explain`` and ``pictures`` load when asked for, so ``import convolab`` stays light.
"""

from .checks import (
    Identity,
    IdentityChain,
    check_direct_equals_im2col,
    check_flip,
    check_input_gradient,
    scipy_mode,
)
from .matrices import Im2colMatrices, conv_matrix, im2col_matrices
from .tracing import Trace, trace

__all__ = [
    "Trace",
    "trace",
    "Identity",
    "IdentityChain",
    "Im2colMatrices",
    "im2col_matrices",
    "check_direct_equals_im2col",
    "check_flip",
    "check_input_gradient",
    "conv_matrix",
    "scipy_mode",
]
