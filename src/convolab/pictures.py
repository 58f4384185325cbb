"""Moved: the pictures (``convolab animate`` and ``convolab draw``) live in :mod:`convolab.show.pictures`.

Kept so that ``from convolab.pictures import ...`` still works: every name is the new module's.
Importing it still needs no matplotlib; drawing does.
"""

from .show.pictures import *  # noqa: F401,F403 (this module's content: the names in convolab.show.pictures.__all__)
from .show.pictures import MAX_LABELLED_CELLS, __all__  # noqa: F401
