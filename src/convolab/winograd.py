"""Winograd's minimal filtering: moved to :mod:`convolab.algorithms.winograd`, beside its algorithm.

Kept so that ``convolab.winograd`` still imports.
"""

from .algorithms.winograd import POINTS, supports, winograd_conv, winograd_matrices

__all__ = ["POINTS", "winograd_matrices", "winograd_conv", "supports"]
