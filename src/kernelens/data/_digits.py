"""scikit-learn's bundled 8x8 hand-written digits, scaled to [0, 1], with a stratified split."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ._fashion_mnist import balanced_order
from ._split import DataSplit, check_float_dtype, check_fraction, check_seed

__all__ = ["digits"]

_SOURCE = (
    "scikit-learn's bundled copy (sklearn.datasets.load_digits) of the test set of the UCI "
    "'Optical Recognition of Handwritten Digits' data (Alpaydin & Kaynak, 1998), "
    "https://archive.ics.uci.edu/dataset/80"
)
_LICENCE = "BSD-3-Clause (as distributed with scikit-learn); UCI lists the data under CC BY 4.0"


def digits(
    *, test_fraction: float = 0.25, seed: int = 0, dtype: torch.dtype = torch.float32
) -> DataSplit:
    """The 1797 8x8 grey-scale digit images shipped with scikit-learn.

    The split is stratified by class (``sklearn.model_selection.train_test_split`` with
    ``random_state=seed``); each part is then put in :func:`balanced_order`, so prefixes such as
    ``X_train[:n]`` are class-balanced. With the default ``test_fraction=0.25`` there are 1347
    training and 450 test images.

    Args:
        test_fraction: fraction of the images held out for testing, in ``(0, 1)``; both parts
            must keep at least one image per class.
        seed: seed of the split and of the order within each part.
        dtype: floating dtype of ``X``.

    Returns:
        DataSplit with ``X`` ``[N, 64]`` = pixel / 16 in ``[0, 1]`` (row-major 8x8 image),
        ``y`` int64 in ``0..9``, ``classes`` ``["0", ..., "9"]``.
    """
    test_fraction = check_fraction(test_fraction, "test_fraction", low=0.0, high=1.0, closed=False)
    seed = check_seed(seed)
    dtype = check_float_dtype(dtype)
    bunch = load_digits()
    images, labels = bunch.data, bunch.target.astype(np.int64)
    n_classes, n = len(np.unique(labels)), len(labels)
    n_test = math.ceil(test_fraction * n)  # how train_test_split rounds a float test_size
    if n_test < n_classes or n - n_test < n_classes:
        raise ValueError(
            f"test_fraction={test_fraction} leaves {n - n_test} training and {n_test} test "
            f"images of {n}; both need at least one per class ({n_classes}); choose a "
            f"test_fraction between {n_classes / n:.4f} and {1 - n_classes / n:.4f}."
        )
    X_tr, X_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    parts = []
    for X, y in ((X_tr, y_tr), (X_te, y_te)):
        order = balanced_order(y, seed)
        parts += [torch.from_numpy(X[order] / 16.0).to(dtype), torch.from_numpy(y[order])]
    return DataSplit(
        X_train=parts[0],
        y_train=parts[1],
        X_test=parts[2],
        y_test=parts[3],
        classes=[str(k) for k in range(n_classes)],
        name="digits",
        source=_SOURCE,
        licence=_LICENCE,
    )
