"""Fashion-MNIST: the full set when installed, else a class-balanced subset shipped in the package.

Search order for the full set (the four IDX files of Zalando's release, ``.gz`` or plain):
``$KERNELENS_DATA/fashion-mnist/``, then the Debian/Ubuntu package location
``/usr/share/datasets/fashion-mnist/`` (``apt install dataset-fashion-mnist``). The sub-directory
is required because the original MNIST uses the very same file names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_choice, check_positive_int
from ._bundle import BUNDLE_DIR, bundled_file
from ._idx import read_idx
from ._split import DataSplit, check_float_dtype, check_seed

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "balanced_order",
    "fashion_mnist",
    "find_fashion_mnist",
]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FULL_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
BUNDLE_FILES = {
    split: tuple(f"fashion-mnist-{split}-{part}.idx.gz" for part in ("images", "labels", "index"))
    for split in ("train", "test")
}
_SOURCE = "Fashion-MNIST, Zalando Research, https://github.com/zalandoresearch/fashion-mnist"
_LICENCE = "MIT (Copyright (c) 2017 Zalando SE)"
_HOW_TO_GET = (
    "For the full set (60000 train / 10000 test images) install the Debian/Ubuntu package "
    f"`dataset-fashion-mnist` (files in {DEBIAN_FASHION_MNIST_DIR}) or download the four IDX "
    ".gz files from https://github.com/zalandoresearch/fashion-mnist into "
    "$KERNELENS_DATA/fashion-mnist/ (set the KERNELENS_DATA environment variable)."
)


def idx_path(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist() -> Path | None:
    """Directory holding the full Fashion-MNIST IDX files, or ``None`` if none is found.

    Looks in ``$KERNELENS_DATA/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist``, in that
    order; a directory counts only if it holds all four files. (Not ``$KERNELENS_DATA`` itself:
    MNIST's files have the same names.)
    """
    candidates = []
    root = os.environ.get("KERNELENS_DATA")
    if root:
        candidates.append(Path(root) / "fashion-mnist")
    candidates.append(DEBIAN_FASHION_MNIST_DIR)
    for directory in candidates:
        stems = [stem for pair in FULL_FILES.values() for stem in pair]
        if all(idx_path(directory, stem) is not None for stem in stems):
            return directory
    return None


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 mixing function on uint64 (wrap-around arithmetic)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(len(labels))`` whose every prefix is class-balanced.

    Each class is shuffled; the order then takes one example of every class per round (class
    order within a round shuffled too), so the first ``n`` indices hold ``n // C`` or
    ``n // C + 1`` examples of each of the ``C`` classes (while every class has examples left).
    The shuffle sorts by a splitmix64 hash of ``(seed, position)`` rather than drawing from a
    numpy generator, so the order (and with it the bundled subset) never changes with the
    numpy version.

    Args:
        labels: class labels ``[N]``.
        seed: non-negative integer seed.

    Returns:
        int64 indices ``[N]``.
    """
    labels = np.asarray(labels)
    with np.errstate(over="ignore"):
        base = _splitmix64(np.asarray([seed], dtype=np.uint64))
        key = _splitmix64(np.arange(len(labels), dtype=np.uint64) ^ base)
        tiebreak = _splitmix64(key)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(key[members], kind="stable")]
        rank[members] = np.arange(len(members))
    return np.lexsort((tiebreak, rank))


def read_full(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = FULL_FILES[split]
    images = read_idx(idx_path(directory, image_stem))
    labels = read_idx(idx_path(directory, label_stem))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(
            f"Fashion-MNIST files in {directory} have unexpected shapes: images "
            f"{images.shape}, labels {labels.shape}; expected [N, 28, 28] and [N]."
        )
    return images, labels


def read_bundle(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels, index = (read_idx(bundled_file(name)) for name in BUNDLE_FILES[split])
    return images, labels, index


def _select(split: str, n: int | None, available: int, where: str) -> int:
    if n is None:
        return available
    n = check_positive_int(n, f"n_{split}")
    if n > available:
        raise ValueError(
            f"n_{split}={n} exceeds the {available} {split} images available in {where}. "
            + _HOW_TO_GET
        )
    return n


def fashion_mnist(
    n_train: int | None = None,
    n_test: int | None = None,
    *,
    flatten: bool = False,
    seed: int = 0,
    source: str = "auto",
    dtype: torch.dtype = torch.float32,
) -> DataSplit:
    """Fashion-MNIST (Zalando, MIT licence): 28x28 grey-scale images of 10 clothing classes.

    The official train/test split is kept. ``n_train`` / ``n_test`` examples are taken as a
    prefix of :func:`balanced_order`, so every class appears ``n // 10`` or ``n // 10 + 1``
    times. The bundled subset holds the first 10000 train / 2000 test examples of that order
    for ``seed=0`` of the full set, so with the default ``seed=0`` the result is identical
    whether the full set is installed or not (for ``n_train <= 10000``, ``n_test <= 2000``).

    Args:
        n_train: number of training images (default: all available: 60000 full, 10000 bundled).
        n_test: number of test images (default: all available: 10000 full, 2000 bundled).
        flatten: return ``X`` as ``[N, 784]`` instead of ``[N, 1, 28, 28]``.
        seed: seed of the class-balanced selection and order.
        source: ``"auto"`` (full set if found, else bundled), ``"full"`` or ``"bundled"``.
        dtype: floating dtype of ``X``.

    Returns:
        DataSplit with ``X`` in ``[0, 1]`` (pixel / 255), ``y`` int64 in ``0..9``,
        ``classes`` the 10 class names, and ``info`` holding ``"source"`` (``"full"`` or
        ``"bundled"``), ``"path"`` (directory read) and ``"train_index"`` / ``"test_index"``
        (int64 positions of the returned examples in the official 60000 / 10000 files).

    Raises:
        ValueError: ``n_train`` / ``n_test`` exceed what is available (the message says where
            to get the full set), or are not positive.
        FileNotFoundError: ``source="full"`` and the full set is not installed.
    """
    check_choice(source, "source", ["auto", "full", "bundled"])
    seed = check_seed(seed)
    dtype = check_float_dtype(dtype)
    if not isinstance(flatten, bool):
        raise TypeError(f"flatten must be True or False, got {flatten!r}.")
    directory = None if source == "bundled" else find_fashion_mnist()
    if source == "full" and directory is None:
        raise FileNotFoundError("the full Fashion-MNIST set was not found. " + _HOW_TO_GET)

    parts: dict[str, Any] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        if directory is not None:
            images, labels = read_full(directory, split)
            order = balanced_order(labels, seed)
            where = f"the full set in {directory}"
        else:
            images, labels, index = read_bundle(split)
            order = np.arange(len(labels)) if seed == 0 else balanced_order(labels, seed)
            where = "the bundled subset"
        take = order[: _select(split, n, len(labels), where)]
        X = torch.from_numpy(images[take]).to(dtype).div_(255.0)
        X = X.reshape(len(take), -1) if flatten else X.unsqueeze(1)
        original = take if directory is not None else index[take]
        parts[split] = (X, torch.from_numpy(labels[take].astype(np.int64)), original)

    return DataSplit(
        X_train=parts["train"][0],
        y_train=parts["train"][1],
        X_test=parts["test"][0],
        y_test=parts["test"][1],
        classes=list(FASHION_MNIST_CLASSES),
        name="fashion_mnist",
        source=_SOURCE,
        licence=_LICENCE,
        info={
            "source": "bundled" if directory is None else "full",
            "path": str(directory or BUNDLE_DIR),
            "train_index": torch.from_numpy(parts["train"][2].astype(np.int64)),
            "test_index": torch.from_numpy(parts["test"][2].astype(np.int64)),
        },
    )
