"""Offline data sets: every loader reads files shipped with kernelens or installed locally, or
generates data from a seed; nothing is downloaded.

Split loaders return a :class:`DataSplit` (``X_train, y_train, X_test, y_test, classes, name,
source, licence, info``). See docs/data.md for the source, licence, sizes and split of each set.
"""

from ._digits import digits
from ._fashion_mnist import FASHION_MNIST_CLASSES, balanced_order, fashion_mnist, find_fashion_mnist
from ._split import DataSplit
from ._synthetic import noisy_clusters, rfm_scaling, rfm_scaling_target, spirals, two_moons
from ._text import (
    SHAKESPEARE_LICENCE,
    SHAKESPEARE_SOURCE,
    SHAKESPEARE_WORKS,
    TEXT_VOCAB,
    TextWindows,
    decode_text,
    encode_text,
    normalize_text,
    shakespeare_text,
    shakespeare_works,
    text_windows,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "SHAKESPEARE_LICENCE",
    "SHAKESPEARE_SOURCE",
    "SHAKESPEARE_WORKS",
    "TEXT_VOCAB",
    "DataSplit",
    "TextWindows",
    "balanced_order",
    "decode_text",
    "digits",
    "encode_text",
    "fashion_mnist",
    "find_fashion_mnist",
    "noisy_clusters",
    "normalize_text",
    "rfm_scaling",
    "rfm_scaling_target",
    "shakespeare_text",
    "shakespeare_works",
    "spirals",
    "text_windows",
    "two_moons",
]
