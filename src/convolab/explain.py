"""Moved: the explanations live in the package :mod:`convolab.show.explain`, split by concern.

- :mod:`~convolab.show.explain.cases`: :class:`Case`, :func:`standard_cases` and the limits ``MAX_*``;
- :mod:`~convolab.show.explain.steps`: :class:`Step`, :class:`Show`, :class:`Explanation`, :data:`TOPICS`;
- one module per topic: ``dot``, ``im2col``, ``backprop``, ``flip``, ``shape``, ``slide``;
- :mod:`~convolab.show.explain.render`: ``render_text``, ``render_markdown``, ``render_json``, ``render_rich``;
- the package itself: :func:`explain` and :func:`worked_examples`;
- :mod:`convolab.show._format`: the number formatting and :func:`strict_json`.

Kept so that ``from convolab.explain import ...`` still works: every name is the new home's.
"""

from .show._format import EDGE_ITEMS, MAX_TERMS, SUMMARY_THRESHOLD, strict_json  # noqa: F401
from .show.explain import *  # noqa: F401,F403 (this module's content: the names in convolab.show.explain.__all__)
from .show.explain import __all__  # noqa: F401
from .show.explain.slide import INPUT, INSERTED, PADDING, UNREAD  # noqa: F401
