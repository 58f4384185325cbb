"""convolab train: the split, the data files, the network, and the command end to end."""

from __future__ import annotations

import builtins
import json
import re

import numpy as np
import pytest

from convolab.apps import train as T
from convolab.cli import main


def test_stratified_split_keeps_class_proportions_and_depends_on_the_seed_only():
    labels = np.repeat(np.arange(4), [40, 20, 12, 8])
    train, test = T.stratified_split(labels, 0.25, seed=3)
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == len(labels)
    assert np.bincount(labels[test]).tolist() == [10, 5, 3, 2]
    again = T.stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(T.stratified_split(labels, 0.25, seed=4)[1], test)


def test_digits_split_is_fixed_and_stratified():
    pytest.importorskip("sklearn")
    data = T.load_digits()
    assert data.train_images.shape == (1347, 1, 8, 8) and data.test_images.shape == (450, 1, 8, 8)
    assert data.train_images.dtype == np.float32 and 0 <= data.train_images.min() and data.train_images.max() == 1
    assert np.array_equal(T.load_digits().test_labels, data.test_labels)
    counts = np.bincount(data.test_labels)
    assert counts.min() >= 44 and counts.max() <= 46  # each class a quarter of its ~180 images


def test_lenet_shapes_follow_the_image_size():
    for shape in ((1, 8, 8), (3, 28, 28), (1, 10, 13)):
        net = T.lenet(*shape, classes=7, rng=0)
        assert net(np.zeros((2, *shape), np.float32)).shape == (2, 7)
    with pytest.raises(ValueError, match="lenet: image size must be at least 4x4"):
        T.lenet(1, 3, 8, 10)


def test_batch_order_covers_every_image_once_per_epoch():
    batches = T.batch_order(103, 16, epoch=2, seed=1)
    assert [len(b) for b in batches] == [16] * 6 + [7]
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(T.batch_order(103, 16, epoch=3, seed=1)))


def _toy_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two easy classes: a bright top half or a bright bottom half, in uint8 like a real image file."""
    labels = rng.integers(0, 2, count)
    images = rng.integers(0, 60, (count, 12, 12)).astype(np.uint8)
    for image, label in zip(images, labels):
        image[(slice(0, 6) if label else slice(6, 12))] += 180
    return images, labels


def test_load_npz_scales_images_and_splits_or_uses_the_given_test_set(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = _toy_images(60, rng)
    np.savez(tmp_path / "plain.npz", images=images, labels=labels)
    data = T.load_npz(tmp_path / "plain.npz")
    assert data.train_images.shape[1:] == (1, 12, 12) and abs(len(data.test_images) - 15) <= 1  # per-class rounding
    assert data.train_images.dtype == np.float32 and data.train_images.max() <= 1 and data.classes == 2
    np.savez(tmp_path / "split.npz", images=images, labels=labels, test_images=images[:5], test_labels=labels[:5])
    given = T.load_npz(tmp_path / "split.npz")
    assert len(given.train_images) == 60 and len(given.test_images) == 5


@pytest.mark.parametrize("arrays, message", [
    (dict(pictures=np.zeros((4, 8, 8))), "must hold arrays named 'images' and 'labels'"),
    (dict(images=np.zeros((4, 8)), labels=np.zeros(4, int)), r"images must be real numbers shaped \(N, H, W\)"),
    (dict(images=np.zeros((4, 8, 8)), labels=np.zeros(3, int)), "labels must be 4 non-negative integer class labels"),
    (dict(images=np.zeros((4, 8, 8)), labels=np.zeros(4)), "labels must be 4 non-negative integer class labels"),
])
def test_load_npz_names_what_is_wrong(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        T.load_npz(tmp_path / "bad.npz")


def test_train_command_on_user_data_writes_weights_history_curves_and_the_accuracy_line(tmp_path, capsys):
    rng = np.random.default_rng(1)
    images, labels = _toy_images(200, rng)
    np.savez(tmp_path / "toy.npz", images=images, labels=labels)
    output = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "toy.npz"), "--epochs", "3", "--batch-size", "16",
                 "--output", str(output)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("test accuracy: ") and float(lines[-1].split(": ")[1]) >= 0.9
    assert sum(line.startswith("epoch ") for line in lines) == 3
    history = json.loads((output / "history.json").read_text())
    assert len(history["history"]) == 3 and round(history["test_accuracy"], 4) == float(lines[-1].split(": ")[1])
    net = T.lenet(1, 12, 12, 2).load(output / "weights.npz")
    assert net[0].weight.shape == (16, 1, 3, 3)
    if pytest.importorskip("matplotlib"):
        assert (output / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_training_reaches_98_percent_and_repeats_exactly(tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert main(["train", "--output", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out.splitlines()[-1]
    assert float(first.split(": ")[1]) >= 0.98
    data = T.load_digits()
    _, short_a = T.train(data, epochs=2, seed=5)
    _, short_b = T.train(data, epochs=2, seed=5)
    strip = [{k: v for k, v in e.items() if "seconds" not in k and "per_second" not in k} for e in short_a.history]
    assert strip == [{k: v for k, v in e.items() if "seconds" not in k and "per_second" not in k}
                     for e in short_b.history]
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert round(history["test_accuracy"], 4) == float(first.split(": ")[1])


def test_train_without_scikit_learn_says_how_to_get_it(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    assert main(["train", "--epochs", "1"]) == 2
    error = capsys.readouterr().err
    assert 'pip install "convolab[train]"' in error and "--data" in error and "[viz]" not in error


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--batch-size", "-3"], ["--lr", "zero"], ["--lr", "inf"],
                                   ["--lr", "nan"]])
def test_train_flags_are_checked(flags, capsys):
    with pytest.raises(SystemExit):
        main(["train", *flags])
    assert flags[0] in capsys.readouterr().err


# -- train --data refuses what it cannot train on, in one line (issue 13) ---------------------------------------


def _with_nan(images):
    images = images.astype(np.float64)
    images[3, 2, 2] = np.nan
    return images


def _label(labels, index, value, dtype=np.int64):
    labels = labels.astype(dtype)
    labels[index] = value
    return labels


@pytest.mark.parametrize("make, message", [
    (lambda im, lab: dict(images=_with_nan(im), labels=lab),  # trained to a reported 33%
     r"images must be finite numbers .* got nan at index \(3, 2, 2\)"),
    (lambda im, lab: dict(images=im, labels=lab.astype(np.uint64) + np.uint64(2**63)),  # wrapped negative
     r"labels must be class indices from 0 to 999 .* got labels from 9223372036854775808 to 9223372036854775809"),
    (lambda im, lab: dict(images=im, labels=_label(lab, 0, 10**9)),  # a 626 GiB MemoryError
     r"labels must be class indices from 0 to 999 .* got labels from 0 to 1000000000"),
    (lambda im, lab: dict(images=im, labels=lab, test_images=im[:4]),  # a KeyError
     "path must hold 'test_images' and 'test_labels' together, or neither"),
    (lambda im, lab: dict(images=im, labels=lab, test_labels=lab[:4]),
     "path must hold 'test_images' and 'test_labels' together, or neither"),
    (lambda im, lab: dict(images=im[:1], labels=lab[:1]),  # "test accuracy: 0.0000" over no images
     r"images must leave a test set: .* got 1 image in 1 class$"),
    (lambda im, lab: dict(images=im, labels=lab, test_images=im[:0], test_labels=lab[:0]),
     "test_images must hold at least one image"),
], ids=["nan-image", "uint64-label", "huge-label", "test-images-alone", "test-labels-alone", "one-image",
        "empty-test-set"])
def test_train_data_that_cannot_be_trained_on_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    images, labels = _toy_images(40, np.random.default_rng(2))
    np.savez(tmp_path / "bad.npz", **make(images, labels))
    assert main(["train", "--data", str(tmp_path / "bad.npz"), "--epochs", "1", "--output", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert re.search(f"^convolab train: error: load_npz: {message}", captured.err.strip()), captured.err
    assert not (tmp_path / "run").exists()


def test_a_damaged_npz_is_one_line(tmp_path, capsys):
    images, labels = _toy_images(8, np.random.default_rng(3))
    np.savez(tmp_path / "good.npz", images=images, labels=labels)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:-300])
    assert main(["train", "--data", str(tmp_path / "cut.npz")]) == 2
    assert "load_npz: path must be a readable .npz file" in capsys.readouterr().err


def test_huge_float64_pixels_scale_instead_of_overflowing_float32(tmp_path):
    images, labels = _toy_images(40, np.random.default_rng(4))
    np.savez(tmp_path / "huge.npz", images=images * 1e300, labels=labels)
    np.savez(tmp_path / "plain.npz", images=images, labels=labels)
    huge, plain = T.load_npz(tmp_path / "huge.npz"), T.load_npz(tmp_path / "plain.npz")
    assert np.isfinite(huge.train_images).all() and huge.train_images.max() == 1
    np.testing.assert_allclose(huge.train_images, plain.train_images, rtol=1e-6)
