"""The :class:`DataSplit` container returned by every split loader, and shared argument checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["DataSplit", "check_float_dtype", "check_fraction", "check_seed"]


@dataclass(frozen=True, repr=False)
class DataSplit:
    """A fixed train/test split of one data set.

    Attributes:
        X_train: inputs ``[N_train, ...]`` (floating dtype chosen by the loader's ``dtype=``).
        y_train: targets ``[N_train]``: int64 class labels for classification, floats for
            regression.
        X_test: inputs ``[N_test, ...]``.
        y_test: targets ``[N_test]``.
        classes: class names (``classes[k]`` names label ``k``), or ``None`` for regression.
        name: short name of the data set, e.g. ``"fashion_mnist"``.
        source: where the data come from (URL, package or generating formula).
        licence: the licence the data are distributed under.
        info: loader-specific extras (documented by each loader), e.g. which labels were
            flipped or which copy of a data set was read.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str] | None
    name: str
    source: str
    licence: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int | None:
        """Number of classes, or ``None`` for a regression set."""
        return None if self.classes is None else len(self.classes)

    def __repr__(self) -> str:
        kind = "regression" if self.classes is None else f"{len(self.classes)} classes"
        return (
            f"DataSplit(name={self.name!r}, X_train={tuple(self.X_train.shape)}, "
            f"X_test={tuple(self.X_test.shape)}, {kind}, dtype={self.X_train.dtype})"
        )


def check_float_dtype(dtype: Any) -> torch.dtype:
    """Return ``dtype`` if it is a floating torch dtype, else raise naming the argument."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch dtype such as torch.float32 or torch.float64, "
            f"got {dtype!r}."
        )
    return dtype


def check_seed(seed: Any) -> int:
    """Return ``seed`` if it is a non-negative integer, else raise."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must lie in [0, 2**63), got {seed}.")
    return int(seed)


def check_fraction(value: Any, name: str, *, low: float, high: float, closed: bool) -> float:
    """Return ``value`` as float if it lies in ``[low, high]`` (``(low, high)`` if not closed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    v = float(value)
    inside = low <= v <= high if closed else low < v < high
    if not inside:
        bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise ValueError(f"{name} must lie in {bounds}, got {value!r}.")
    return v
