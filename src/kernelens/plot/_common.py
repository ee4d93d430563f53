"""Input conversion shared by the plotting functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["as_array", "new_figure"]


def as_array(x: Any, name: str, *, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` (tensor, array or nested sequence) as a float64 numpy array, checked."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric array-like, got {type(x).__name__}.") from exc
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and arr.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}.")
    return arr


def new_figure(width: float, height: float) -> Figure:
    """A figure not registered with pyplot (so it is garbage-collected like any object)."""
    return Figure(figsize=(width, height), layout="constrained")
