"""``convolab train``'s old address: it now lives in :mod:`convolab.apps.train`.

Imports such as ``from convolab.train import lenet, batch_order`` keep working.
"""

from .apps.train import (  # noqa: F401 (this module's content)
    DEFAULTS, MAX_CLASSES, SPLIT_SEED, Dataset, TrainResult, add_train_parser, batch_order, evaluate, lenet,
    load_digits, load_npz, positive, run_train, stratified_split, train, write_curves)

__all__ = ["Dataset", "load_digits", "load_npz", "stratified_split", "lenet", "batch_order", "TrainResult",
           "train", "add_train_parser"]
