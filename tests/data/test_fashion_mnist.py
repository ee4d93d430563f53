"""Fashion-MNIST: the bundled subset, the full-set search order, selection and errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from kernelens.data import (
    FASHION_MNIST_CLASSES,
    _bundle,
    _fashion_mnist,
    balanced_order,
    fashion_mnist,
    find_fashion_mnist,
)
from kernelens.data._idx import read_idx, write_idx


@pytest.fixture
def no_full_set(monkeypatch, tmp_path):
    """Hide any installed full set so ``source="auto"`` resolves to the bundled subset."""
    monkeypatch.delenv("KERNELENS_DATA", raising=False)
    monkeypatch.setattr(_fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")


@pytest.fixture
def fake_full_set(monkeypatch, tmp_path):
    """A tiny stand-in for the full set (7 train / 4 test images per class) in $KERNELENS_DATA."""
    directory = tmp_path / "data" / "fashion-mnist"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, per_class in (("train", 7), ("test", 4)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        image_stem, label_stem = _fashion_mnist.FULL_FILES[split]
        write_idx(directory / f"{image_stem}.gz", images)
        write_idx(directory / label_stem, labels)  # plain IDX is accepted too
    monkeypatch.setenv("KERNELENS_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(_fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
    return directory


def test_bundled_defaults(no_full_set):
    split = fashion_mnist()
    assert split.info["source"] == "bundled"
    assert split.X_train.shape == (10000, 1, 28, 28)
    assert split.X_test.shape == (2000, 1, 28, 28)
    assert split.X_train.dtype == torch.float32
    assert split.y_train.dtype == torch.int64
    assert float(split.X_train.min()) == 0.0 and float(split.X_train.max()) == 1.0
    assert split.classes == FASHION_MNIST_CLASSES
    assert torch.equal(split.y_train.bincount(), torch.full((10,), 1000))
    assert torch.equal(split.y_test.bincount(), torch.full((10,), 200))
    assert "zalandoresearch" in split.source and "MIT" in split.licence
    assert split.n_classes == 10


def test_values_are_pixels_over_255(no_full_set):
    split = fashion_mnist(50, 10, dtype=torch.float64)
    pixels = split.X_train * 255
    assert torch.equal(pixels, pixels.round())
    images = read_idx(_bundle.bundled_file("fashion-mnist-train-images.idx.gz"))
    expected = torch.from_numpy(images[:50].astype(np.float64) / 255.0).unsqueeze(1)
    assert torch.equal(split.X_train, expected)


def test_flatten(no_full_set):
    a = fashion_mnist(30, 20)
    b = fashion_mnist(30, 20, flatten=True)
    assert b.X_train.shape == (30, 784) and b.X_test.shape == (20, 784)
    assert torch.equal(b.X_train, a.X_train.reshape(30, 784))


@pytest.mark.parametrize("n", [1, 9, 10, 1234])
def test_prefix_is_class_balanced(no_full_set, n):
    for seed in (0, 3):
        counts = fashion_mnist(n, 7, seed=seed).y_train.bincount(minlength=10)
        assert int(counts.sum()) == n and int(counts.max() - counts.min()) <= 1


def test_subsets_are_prefixes_and_deterministic(no_full_set):
    small, large = fashion_mnist(100, 50), fashion_mnist(300, 60)
    assert torch.equal(small.X_train, large.X_train[:100])
    assert torch.equal(small.y_test, large.y_test[:50])
    again = fashion_mnist(100, 50)
    assert torch.equal(small.X_train, again.X_train) and torch.equal(small.y_test, again.y_test)


def test_seed_changes_selection(no_full_set):
    a, b = fashion_mnist(200, 50, seed=0), fashion_mnist(200, 50, seed=1)
    assert not torch.equal(a.info["train_index"], b.info["train_index"])
    assert torch.equal(fashion_mnist(200, 50, seed=1).X_train, b.X_train)


def test_indices_unique(no_full_set):
    split = fashion_mnist()
    for key, total in (("train_index", 60000), ("test_index", 10000)):
        index = split.info[key]
        assert len(index.unique()) == len(index)
        assert int(index.min()) >= 0 and int(index.max()) < total


def test_full_set_from_kernelens_data(fake_full_set):
    assert find_fashion_mnist() == fake_full_set
    split = fashion_mnist()
    assert split.info["source"] == "full" and split.info["path"] == str(fake_full_set)
    assert split.X_train.shape == (70, 1, 28, 28) and split.X_test.shape == (40, 1, 28, 28)
    images = read_idx(fake_full_set / "train-images-idx3-ubyte.gz")
    labels = read_idx(fake_full_set / "train-labels-idx1-ubyte")
    index = split.info["train_index"].numpy()
    np.testing.assert_array_equal(index, balanced_order(labels, 0))
    np.testing.assert_array_equal(split.X_train[:, 0].numpy() * 255, images[index])
    np.testing.assert_array_equal(split.y_train.numpy(), labels[index])
    with pytest.raises(ValueError, match="exceeds the 70 train images .* full set"):
        fashion_mnist(71)
    assert fashion_mnist(source="bundled").info["source"] == "bundled"


def test_kernelens_data_root_itself_is_not_searched(fake_full_set, monkeypatch):
    """MNIST uses the same file names, so only the fashion-mnist sub-directory counts."""
    monkeypatch.setenv("KERNELENS_DATA", str(fake_full_set))
    assert find_fashion_mnist() is None


def test_incomplete_directory_is_ignored(fake_full_set):
    (fake_full_set / "t10k-labels-idx1-ubyte").unlink()
    assert find_fashion_mnist() is None
    assert fashion_mnist(10, 10).info["source"] == "bundled"


def test_source_full_missing(no_full_set):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist(source="full")


def test_too_many_explains_where_to_get_the_full_set(no_full_set):
    with pytest.raises(ValueError, match="n_train=10001 exceeds") as info:
        fashion_mnist(10001)
    assert "dataset-fashion-mnist" in str(info.value) and "KERNELENS_DATA" in str(info.value)
    with pytest.raises(ValueError, match="n_test=2001 exceeds"):
        fashion_mnist(10, 2001)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_train": 0}, ValueError, "n_train must be >= 1"),
        ({"n_test": -5}, ValueError, "n_test must be >= 1"),
        ({"n_train": 2.5}, TypeError, "n_train must be an integer"),
        ({"source": "web"}, ValueError, "valid options are: 'auto', 'full', 'bundled'"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating"),
        ({"seed": -1}, ValueError, "seed must lie in"),
        ({"seed": 1.0}, TypeError, "seed must be an int"),
        ({"flatten": "yes"}, TypeError, "flatten must be True or False"),
    ],
)
def test_bad_arguments(no_full_set, kwargs, error, match):
    with pytest.raises(error, match=match):
        fashion_mnist(**kwargs)


def test_damaged_bundle_is_detected(tmp_path, monkeypatch):
    copy = tmp_path / "bundled"
    shutil.copytree(_bundle.BUNDLE_DIR, copy)
    name = "fashion-mnist-test-labels.idx.gz"
    (copy / name).write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    monkeypatch.setattr(_bundle, "BUNDLE_DIR", copy)
    _bundle.bundled_file.cache_clear()
    _bundle._manifest.cache_clear()
    try:
        with pytest.raises(OSError, match="does not match its manifest"):
            _bundle.bundled_file(name)
        with pytest.raises(FileNotFoundError, match="missing"):
            _bundle.bundled_file("no-such-file.gz")
    finally:
        _bundle.bundled_file.cache_clear()
        _bundle._manifest.cache_clear()


def test_balanced_order_properties():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 9)
    order = balanced_order(labels, 4)
    assert sorted(order.tolist()) == list(range(len(labels)))
    first_rounds = labels[order[:6]]
    assert np.bincount(first_rounds).tolist() == [2, 2, 2]
    assert np.array_equal(order, balanced_order(labels, 4))
    assert not np.array_equal(order, balanced_order(labels, 5))


def test_balanced_order_is_pinned():
    """The order must never change: the bundled subset was cut with it."""
    assert balanced_order(np.repeat(np.arange(3), 3), 0).tolist() == PINNED_ORDER


PINNED_ORDER = [1, 7, 4, 5, 0, 6, 3, 2, 8]


def _real_full_set():
    directory = find_fashion_mnist()
    if directory is None:
        return None
    labels = read_idx(_fashion_mnist.idx_path(directory, "train-labels-idx1-ubyte"))
    return directory if len(labels) == 60000 else None


@pytest.mark.skipif(_real_full_set() is None, reason="the full Fashion-MNIST set is not installed")
def test_bundle_equals_the_official_files():
    """The bundled images and labels are byte-identical to the rows they were cut from."""
    directory = _real_full_set()
    for split in ("train", "test"):
        full_images, full_labels = _fashion_mnist.read_full(directory, split)
        images, labels, index = _fashion_mnist.read_bundle(split)
        np.testing.assert_array_equal(images, full_images[index])
        np.testing.assert_array_equal(labels, full_labels[index])
    bundled, full = fashion_mnist(source="bundled"), fashion_mnist(10000, 2000, source="full")
    for name in ("X_train", "y_train", "X_test", "y_test"):
        assert torch.equal(getattr(bundled, name), getattr(full, name))
    assert torch.equal(bundled.info["train_index"], full.info["train_index"])
