"""``convolab train``: a LeNet-5-style CNN trained with :mod:`convolab.nn`, end to end.

The default data set is scikit-learn's digits (1,797 images of 8×8 pixels with
values 0–16, ten classes), split once into train and test sets by a seeded,
stratified split. ``--data file.npz`` trains on the user's own images instead.
Everything random (initial weights, batch order) comes from ``--seed``, so the
same seed gives the same test accuracy.

The network (the shape of LeNet-5: two convolution + pooling stages, then three
fully connected layers)::

    Conv2d(C, 16, 3, padding=1) BatchNorm2d ReLU MaxPool2d(2)
    Conv2d(16, 32, 3, padding=1) BatchNorm2d ReLU MaxPool2d(2)
    Flatten Linear(32·H/4·W/4, 120) ReLU Linear(120, 84) ReLU Linear(84, classes)

trained with AdamW and a cosine learning-rate schedule on cross-entropy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .. import nn
from .._errors import fail
from ..show._format import strict_json
from ..shapes import pool_output_size

__all__ = ["Dataset", "load_digits", "load_npz", "stratified_split", "lenet", "batch_order", "TrainResult",
           "train", "add_train_parser"]

DEFAULTS = dict(epochs=20, batch_size=32, lr=2e-3, weight_decay=1e-4, seed=0, test_fraction=0.25)
#: Labels are class indices below this: the network has one output per class, so a label of 10**9 would ask
#: for a billion-output layer.
MAX_CLASSES = 1000
#: The train/test split is the same whatever ``--seed`` is: runs differ only in weights and batch order.
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Images ``(N, C, H, W)`` float32 in [0, 1] and integer labels ``(N,)``, split into train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with every class split in the same proportion.

    Each class's indices are shuffled by a generator seeded with ``seed`` and
    ``round(test_fraction * count)`` of them go to the test set; both index
    arrays come back sorted, so the split depends on the seed alone.

    >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25, seed=0)
    >>> len(train), len(test), np.array([0, 0, 0, 0, 1, 1, 1, 1])[test].tolist()
    (6, 2, [0, 1])
    """
    if not 0 < test_fraction < 1:
        fail(ValueError, "stratified_split", "test_fraction", repr(test_fraction), "must be in (0, 1)")
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        test.append(members[: int(round(test_fraction * len(members)))])
    test_indices = np.sort(np.concatenate(test))
    train_indices = np.setdiff1d(np.arange(len(labels)), test_indices)
    return train_indices, test_indices


def _as_images(op: str, name: str, images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` or ``(N, C, H, W)`` numbers → float32 ``(N, C, H, W)`` scaled into [0, 1] by the maximum."""
    images = np.asarray(images)
    if images.dtype.kind not in "iuf" or images.ndim not in (3, 4):
        fail(ValueError, op, name, f"shape {images.shape} dtype {images.dtype}",
             "must be real numbers shaped (N, H, W) or (N, C, H, W)")
    if len(images) == 0:
        fail(ValueError, op, name, f"shape {images.shape}", "must hold at least one image")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(images))[0])
        fail(ValueError, op, name, f"{images[where]} at index {where}",
             "must be finite numbers (a NaN or infinite pixel makes every loss and gradient NaN)")
    if images.ndim == 3:
        images = images[:, np.newaxis]
    if images.dtype.itemsize <= 4:
        images = images.astype(np.float32)  # exact, but for int32/uint32 rounding as float32 always did
    # 8-byte values are divided in float64 and only then cast: float64 values beyond float32's range scale
    # into [-1, 1] instead of overflowing to infinity. The peak is a Python float (int64's minimum has no abs).
    peak = max(abs(float(images.min())), abs(float(images.max())))
    return (images / peak if peak > 0 else images).astype(np.float32, copy=False)


def _as_labels(op: str, name: str, labels: np.ndarray, count: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        fail(ValueError, op, name, f"shape {labels.shape} dtype {labels.dtype}",
             f"must be {count} non-negative integer class labels, one per image")
    # Compared in the labels' own dtype, before any cast: uint64 values >= 2**63 would wrap negative in int64.
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= MAX_CLASSES:
        fail(ValueError, op, name, f"labels from {low} to {high}",
             f"must be class indices from 0 to {MAX_CLASSES - 1} (the network has one output per class)")
    return labels.astype(np.int64)


def _dataset(images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int, name: str) -> Dataset:
    train_indices, test_indices = stratified_split(labels, test_fraction, seed)
    if len(test_indices) == 0:  # an accuracy over no images would read 0.0000, a number that measured nothing
        classes = len(np.unique(labels))
        fail(ValueError, "load_npz", "images", f"{len(labels)} image{'s' if len(labels) != 1 else ''} in "
             f"{classes} class{'es' if classes != 1 else ''}",
             f"must leave a test set: the split puts round({test_fraction} * count) of each class's images in it, "
             "none here (give more images per class, or 'test_images' and 'test_labels')")
    return Dataset(images[train_indices], labels[train_indices], images[test_indices], labels[test_indices],
                   int(labels.max()) + 1, name)


def load_digits(test_fraction: float = DEFAULTS["test_fraction"], seed: int = SPLIT_SEED) -> Dataset:
    """scikit-learn's digits (1,797 8×8 images), pixels scaled from 0–16 to [0, 1], split by :func:`stratified_split`.

    Raises
    ------
    ImportError
        When scikit-learn is not installed (``pip install "convolab[train]"``).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("the digits data set comes with scikit-learn: pip install \"convolab[train]\", "
                          "or give your own images with --data file.npz") from None
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, np.newaxis]  # (1797, 1, 8, 8)
    return _dataset(images, digits.target.astype(np.int64), test_fraction, seed, "digits")


def load_npz(path: str | os.PathLike[str], test_fraction: float = DEFAULTS["test_fraction"],
             seed: int = SPLIT_SEED) -> Dataset:
    """Images and labels from a ``.npz`` file.

    The file holds ``images`` (``(N, H, W)`` or ``(N, C, H, W)``, any real dtype,
    finite, scaled into [0, 1] by dividing by the largest absolute value) and
    ``labels`` (``(N,)`` integers from 0 to ``MAX_CLASSES - 1``). With
    ``test_images`` and ``test_labels`` as well (both or neither), those are the
    test set; otherwise the data are split by :func:`stratified_split`, which
    must leave at least one test image.

    Raises
    ------
    ValueError
        A file that cannot be read or lacks the arrays; images that are not
        finite real numbers or none at all; labels that are not integers in
        range, one per image; an empty test set.
    """
    op = "load_npz"
    try:
        archive = np.load(path)
    except _UNREADABLE as error:
        fail(ValueError, op, "path", repr(os.fspath(path)), f"must be a readable .npz file ({error})")
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file holds one array, without names
        fail(ValueError, op, "path", repr(os.fspath(path)), "must be a .npz file of named arrays (numpy.savez)")
    with archive:
        return _load_archive(archive, path, test_fraction, seed)


#: What reading a damaged or foreign file raises: pickled or object arrays, truncated or corrupt archives.
_UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _member(archive: Any, key: str, path: str | os.PathLike[str]) -> np.ndarray:
    """``archive[key]``; a damaged member shows only when it is read."""
    try:
        return archive[key]
    except _UNREADABLE as error:
        fail(ValueError, "load_npz", "path", repr(os.fspath(path)), f"must hold a readable array {key!r} ({error})")


def _load_archive(archive: Any, path: str | os.PathLike[str], test_fraction: float, seed: int) -> Dataset:
    """:func:`load_npz` once the file has opened as an archive."""
    op = "load_npz"
    missing = {"images", "labels"} - set(archive.files)
    if missing:
        fail(ValueError, op, "path", f"{os.fspath(path)!r} with arrays {sorted(archive.files)}",
             "must hold arrays named 'images' and 'labels'")
    images = _as_images(op, "images", _member(archive, "images", path))
    labels = _as_labels(op, "labels", _member(archive, "labels", path), len(images))
    name = os.path.basename(os.fspath(path))
    given = {"test_images", "test_labels"} & set(archive.files)
    if len(given) == 1:
        fail(ValueError, op, "path", f"{os.fspath(path)!r} with arrays {sorted(archive.files)}",
             "must hold 'test_images' and 'test_labels' together, or neither")
    if not given:
        return _dataset(images, labels, test_fraction, seed, name)
    test_images = _as_images(op, "test_images", _member(archive, "test_images", path))
    test_labels = _as_labels(op, "test_labels", _member(archive, "test_labels", path), len(test_images))
    if test_images.shape[1:] != images.shape[1:]:
        fail(ValueError, op, "test_images", f"shape {test_images.shape}",
             f"must have the training images' shape per image {images.shape[1:]}")
    classes = int(max(labels.max(), test_labels.max())) + 1
    return Dataset(images, labels, test_images, test_labels, classes, name)


def lenet(in_channels: int, height: int, width: int, classes: int, *, rng: Any = None) -> nn.Sequential:
    """The LeNet-5-style network of this module's docstring, sized for ``(in_channels, height, width)`` images.

    >>> lenet(1, 8, 8, 10, rng=0)[-1]
    Linear(in_features=84, out_features=10, bias=True)
    """
    if min(height, width) < 4:
        fail(ValueError, "lenet", "image size", f"{height}x{width}", "must be at least 4x4 (two 2x2 poolings)")
    rng = nn.init.generator_from("lenet", rng)
    pooled = [pool_output_size(pool_output_size(size, 2, 2), 2, 2) for size in (height, width)]
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, rng=rng), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * pooled[0] * pooled[1], 120, rng=rng), nn.ReLU(),
        nn.Linear(120, 84, rng=rng), nn.ReLU(), nn.Linear(84, classes, rng=rng),
    )


def batch_order(count: int, batch_size: int, epoch: int, seed: int) -> list[np.ndarray]:
    """The batches of epoch ``epoch``: a permutation seeded by ``(seed, epoch)``, cut into ``batch_size`` pieces.

    A PyTorch run that takes its batches from here sees exactly the same images in the same order.

    >>> [b.tolist() for b in batch_order(5, 2, epoch=0, seed=0)]
    [[2, 4], [3, 0], [1]]
    """
    permutation = np.random.default_rng((seed, epoch)).permutation(count)
    return [permutation[start:start + batch_size] for start in range(0, count, batch_size)]


@dataclass
class TrainResult:
    """What a run measured: one entry per epoch, and the final test accuracy."""

    history: list[dict[str, float]] = field(default_factory=list)
    test_accuracy: float = float("nan")

    @property
    def seconds_per_epoch(self) -> float:
        """Median training time of an epoch (the forward/backward/update loop, not evaluation)."""
        return float(np.median([entry["train_seconds"] for entry in self.history])) if self.history else float("nan")


def evaluate(net: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` in evaluation mode; the network's mode is restored."""
    was_training = net.training
    net.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        logits = net(images[start:start + batch_size])
        total_loss += float(loss_fn(logits, labels[start:start + batch_size]))
        correct += int((logits.argmax(axis=1) == labels[start:start + batch_size]).sum())
    net.train(was_training)
    return total_loss / max(len(images), 1), correct / max(len(images), 1)


def train(data: Dataset, *, epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], weight_decay: float = DEFAULTS["weight_decay"], seed: int = DEFAULTS["seed"],
          progress: Callable[[int, int, dict[str, float]], None] | None = None,
          epoch_done: Callable[[dict[str, float]], None] | None = None) -> tuple[nn.Sequential, TrainResult]:
    """Train :func:`lenet` on ``data``; returns the network and the per-epoch history.

    ``progress(epoch, batches_done, running)`` is called after every batch and
    ``epoch_done(entry)`` after every epoch (for a progress bar).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            fail(ValueError, "train", name, repr(value), "must be an int >= 1")
    if not lr > 0:
        fail(ValueError, "train", "lr", repr(lr), "must be > 0")
    net = lenet(*data.image_shape, data.classes, rng=np.random.default_rng(seed))
    optimizer = nn.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = nn.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    result = TrainResult()
    for epoch in range(epochs):
        net.train()
        started = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        batches = batch_order(len(data.train_images), batch_size, epoch, seed)
        predicted = []  # each batch's predicted classes, counted once an epoch unless a progress bar wants them
        for done, indices in enumerate(batches, 1):
            images, labels = data.train_images[indices], data.train_labels[indices]
            logits = net(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            net.backward(loss_fn.backward(), input_grad=False)  # the images need no gradient
            optimizer.step()
            seen += len(indices)
            loss_sum += float(loss) * len(indices)
            predicted.append(logits.argmax(axis=1))
            if progress is not None:
                correct += int((predicted[-1] == labels).sum())
                elapsed = time.perf_counter() - started
                progress(epoch, done, dict(loss=loss_sum / seen, accuracy=correct / seen,
                                           images_per_second=seen / elapsed if elapsed else 0.0,
                                           batches=len(batches)))
        if progress is None:
            correct = int((np.concatenate(predicted) == data.train_labels[np.concatenate(batches)]).sum())
        train_seconds = time.perf_counter() - started
        schedule.step()
        test_loss, test_accuracy = evaluate(net, data.test_images, data.test_labels)
        entry = dict(epoch=epoch + 1, loss=loss_sum / seen, accuracy=correct / seen, test_loss=test_loss,
                     test_accuracy=test_accuracy, train_seconds=train_seconds, images_per_second=seen / train_seconds,
                     lr=optimizer.param_groups[0]["lr"])
        result.history.append(entry)
        if epoch_done is not None:
            epoch_done(entry)
    result.test_accuracy = result.history[-1]["test_accuracy"]
    return net, result


# -- the command line -------------------------------------------------------------------------------------------


class _TextProgress:
    """One line per epoch; while it runs, a bar redrawn in place when the output is a terminal."""

    def __init__(self, epochs: int, stream: Any = None):
        self.epochs, self.stream = epochs, stream or sys.stdout
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def batch(self, epoch: int, done: int, running: dict[str, float]) -> None:
        if not self.live:
            return
        width, total = 30, int(running["batches"])
        filled = width * done // total
        self.stream.write(f"\repoch {epoch + 1}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] "
                          f"loss {running['loss']:.4f} acc {running['accuracy']:.2%} "
                          f"{running['images_per_second']:,.0f} img/s")
        self.stream.flush()

    def epoch(self, entry: dict[str, float]) -> None:
        prefix = "\r" if self.live else ""
        self.stream.write(f"{prefix}epoch {entry['epoch']:>{len(str(self.epochs))}}/{self.epochs}  "
                          f"loss {entry['loss']:.4f}  acc {entry['accuracy']:.2%}  test loss {entry['test_loss']:.4f}"
                          f"  test acc {entry['test_accuracy']:.2%}  {entry['images_per_second']:,.0f} img/s"
                          f"  {entry['train_seconds']:.2f} s" + " " * 8 + "\n")
        self.stream.flush()


def write_curves(history: Sequence[dict[str, float]], path: str) -> bool:
    """A PNG of loss and accuracy per epoch (train and test); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [entry["epoch"] for entry in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [e["loss"] for e in history], label="train")
    loss_axis.plot(epochs, [e["test_loss"] for e in history], label="test")
    loss_axis.set(title="cross-entropy loss", xlabel="epoch", yscale="log")
    accuracy_axis.plot(epochs, [e["accuracy"] for e in history], label="train")
    accuracy_axis.plot(epochs, [e["test_accuracy"] for e in history], label="test")
    lowest = min(0.9, *(e[key] for e in history for key in ("accuracy", "test_accuracy")))
    accuracy_axis.set(title="accuracy", xlabel="epoch", ylim=(lowest - 0.01, 1.005))
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def run_train(args: argparse.Namespace) -> int:
    """Run the ``train`` subcommand."""
    data = load_digits() if args.data is None else load_npz(args.data)
    print(f"data: {data.name}, {len(data.train_images)} training and {len(data.test_images)} test images of "
          f"{'x'.join(map(str, data.image_shape))}, {data.classes} classes")
    print(f"training for {args.epochs} epochs, batch size {args.batch_size}, AdamW lr {args.lr} (cosine), "
          f"seed {args.seed}")
    bar = _TextProgress(args.epochs)
    started = time.perf_counter()
    net, result = train(data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        progress=bar.batch, epoch_done=bar.epoch)
    total = time.perf_counter() - started
    os.makedirs(args.output, exist_ok=True)
    weights = os.path.join(args.output, "weights.npz")
    net.save(weights)
    with open(os.path.join(args.output, "history.json"), "w") as file:
        # A run that diverged has NaN losses: strict JSON writes them as "nan", as explain's JSON does.
        json.dump(strict_json(dict(data=data.name, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                                   lr=args.lr, test_accuracy=result.test_accuracy, history=result.history)),
                  file, indent=1, allow_nan=False)
    curves = os.path.join(args.output, "curves.png")
    wrote_curves = write_curves(result.history, curves)
    print(f"wrote {weights}, {os.path.join(args.output, 'history.json')}"
          + (f" and {curves}" if wrote_curves else " (no curves.png: pip install \"convolab[train]\" for matplotlib)"))
    print(f"trained in {total:.1f} s ({result.seconds_per_epoch:.3f} s per epoch)")
    print(f"test accuracy: {result.test_accuracy:.4f}")
    return 0


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse ``type``: the text as ``kind`` (int or float), finite and > 0, else an error naming the flag."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not (value > 0 and value != float("inf")):  # 'nan' and 'inf' parse as floats, and are no rate
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
        return value

    return parse


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand on ``subparsers``."""
    parser = subparsers.add_parser(
        "train", help="train a LeNet-5-style CNN with convolab.nn (digits by default)",
        description="Train a small CNN written with convolab.nn on scikit-learn's digits (a seeded, stratified "
                    "75/25 split) or on your own images (--data), print a line per epoch, save the weights, the "
                    "history and a PNG of the curves, and end with 'test accuracy: <fraction>'.")
    parser.add_argument("--data", help="a .npz with 'images' (N,H,W) or (N,C,H,W) and 'labels' (N,); optional "
                                       "'test_images'/'test_labels' (default: scikit-learn's digits)")
    parser.add_argument("--epochs", type=positive(int), default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=positive(int), default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=positive(float), default=DEFAULTS["lr"], help="AdamW's peak learning rate")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="initial weights and batch order (the split is fixed)")
    parser.add_argument("--output", default="convolab-train", help="folder for weights.npz, history.json, curves.png")
    parser.set_defaults(run=run_train)
    return parser
