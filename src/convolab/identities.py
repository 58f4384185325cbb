"""Moved: the tracer, the im2col and convolution matrices and the checks live in :mod:`convolab.show`.

``identities`` named the checks by the identities they test; they are checks
that two computations agree, and sit with the rest of "showing the work":

- :class:`Trace`, :func:`trace`, ``MAX_DRAWN_CELLS``: :mod:`convolab.show.tracing`;
- :class:`Im2colMatrices`, :func:`im2col_matrices`, :func:`conv_matrix`: :mod:`convolab.show.matrices`;
- :class:`Identity`, :class:`IdentityChain`, the ``check_*`` functions and
  :func:`scipy_mode`: :mod:`convolab.show.checks`.

Kept so that ``from convolab.identities import ...`` still works: every name is the new module's.
"""

from .show import *  # noqa: F401,F403 (this module's content: the names in convolab.show.__all__)
from .show import __all__  # noqa: F401
from .show.tracing import MAX_DRAWN_CELLS  # noqa: F401
