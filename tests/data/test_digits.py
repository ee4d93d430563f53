"""digits(): scikit-learn's 8x8 digits, scaled, stratified, class-balanced prefixes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from kernelens.data import digits


def test_shapes_ranges_and_metadata():
    split = digits()
    assert split.X_train.shape == (1347, 64) and split.X_test.shape == (450, 64)
    assert split.X_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    for X in (split.X_train, split.X_test):
        assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    assert split.classes == [str(k) for k in range(10)]
    assert "load_digits" in split.source and "BSD" in split.licence


def test_split_is_a_partition_of_the_original_images():
    split = digits(dtype=torch.float64)
    reference = load_digits()
    rows = {row.tobytes(): label for row, label in zip(reference.data / 16.0, reference.target)}
    seen = [X.numpy() for X in (split.X_train, split.X_test)]
    all_rows = np.concatenate(seen)
    assert len(all_rows) == len(reference.data)
    # every returned image is an original image with its original label
    labels = np.concatenate([split.y_train.numpy(), split.y_test.numpy()])
    assert all(rows[row.tobytes()] == label for row, label in zip(all_rows, labels))
    # the original set has a few duplicate images; count multiplicities to check disjointness
    original, counts = np.unique(reference.data / 16.0, axis=0, return_counts=True)
    got, got_counts = np.unique(all_rows, axis=0, return_counts=True)
    assert np.array_equal(original, got) and np.array_equal(counts, got_counts)


def test_stratified_and_balanced_prefixes():
    split = digits()
    reference = np.bincount(load_digits().target) / 1797
    test_share = split.y_test.bincount().numpy() / 450
    assert np.abs(test_share - reference).max() < 0.01
    for n in (10, 55, 200):
        counts = split.y_train[:n].bincount(minlength=10)
        assert int(counts.max() - counts.min()) <= 1


def test_deterministic_and_seeded():
    a, b, c = digits(), digits(), digits(seed=1)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_test, c.X_test)


def test_test_fraction():
    split = digits(test_fraction=0.5)
    assert len(split.X_test) == 899 and len(split.X_train) == 898


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"test_fraction": 0.0}, ValueError, r"test_fraction must lie in \(0.0, 1.0\)"),
        ({"test_fraction": 1.2}, ValueError, "test_fraction must lie in"),
        ({"test_fraction": 0.001}, ValueError, "need at least one per class"),
        ({"test_fraction": 0.999}, ValueError, "need at least one per class"),
        ({"test_fraction": "0.2"}, TypeError, "test_fraction must be a number"),
        ({"dtype": torch.int32}, TypeError, "dtype must be a floating"),
        ({"seed": -3}, ValueError, "seed must lie in"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        digits(**kwargs)
