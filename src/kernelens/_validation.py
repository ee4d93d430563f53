"""Shared input validation: every public entry point checks its arguments here.

Each helper raises an error that names the argument, says what was wrong and how to fix
it, so users see one consistent style of message across kernelens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "check_choice",
    "check_consistent_length",
    "check_finite",
    "check_nonnegative",
    "check_positive",
    "check_positive_int",
    "check_same_device_dtype",
]


def as_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_empty: bool = False,
    finite: bool = True,
    floating: bool = True,
) -> torch.Tensor:
    """Convert array-like ``x`` to a tensor and check it.

    Args:
        x: a torch tensor, numpy array or nested sequence of numbers.
        name: the argument name used in error messages.
        ndim: required number of dimensions (or a tuple of allowed ones).
        dtype: cast to this dtype; by default float tensors keep theirs and everything else
            becomes ``torch.get_default_dtype()`` (when ``floating``).
        device: move to this device.
        allow_empty: accept a tensor with zero elements.
        finite: reject NaN and Inf.
        floating: cast integer/boolean input to a floating dtype.

    Returns:
        The checked tensor (no copy when nothing had to change).
    """
    if isinstance(x, torch.Tensor):
        t = x
    else:
        if isinstance(x, str | bytes):
            raise TypeError(f"{name} must be numeric array-like, got a string {x!r}.")
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy gives varied errors
            raise TypeError(f"{name} could not be converted to an array: {exc}") from exc
        if arr.dtype == object or arr.dtype.kind in "USO":
            raise TypeError(
                f"{name} must hold numbers, got an array of dtype {arr.dtype}; "
                "encode categorical values as numbers first."
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if dtype is not None:
        t = t.to(dtype)
    elif floating and not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if device is not None:
        t = t.to(device)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(
                f"{name} must be {want}, got shape {tuple(t.shape)}"
                + (
                    " (reshape a single feature with x.reshape(-1, 1))"
                    if 2 in allowed and t.ndim == 1
                    else ""
                )
                + "."
            )
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one sample.")
    if finite and t.is_floating_point():
        check_finite(t, name)
    return t


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ValueError if ``t`` holds NaN or Inf, saying how many and where the first is."""
    if not t.is_floating_point() and not t.is_complex():
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n_bad = int(bad.sum())
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        raise ValueError(
            f"{name} contains {n_bad} non-finite value(s) ({kind}; first at index {first}); "
            "remove or impute them before calling."
        )


def check_same_device_dtype(tensors: dict[str, torch.Tensor]) -> None:
    """Raise if the named tensors disagree in device or floating dtype."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    if len(items) < 2:
        return
    n0, t0 = items[0]
    for n, t in items[1:]:
        if t.device != t0.device:
            raise ValueError(
                f"{n} is on {t.device} but {n0} is on {t0.device}; move them to one device "
                f"(e.g. {n}.to({n0}.device))."
            )
        if t.is_floating_point() and t0.is_floating_point() and t.dtype != t0.dtype:
            raise TypeError(
                f"{n} has dtype {t.dtype} but {n0} has dtype {t0.dtype}; cast one of them "
                f"(e.g. {n}.to({n0}.dtype))."
            )


def check_consistent_length(**arrays: Any) -> int:
    """Raise if the first dimensions of the named arrays differ; return the common length."""
    lengths = {k: len(v) for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"inconsistent numbers of samples: {desc}; they must be equal.")
    return next(iter(lengths.values()))


def _as_number(value: Any, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}."
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    return float(value)


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as float if it is finite and > 0, else raise ValueError."""
    v = _as_number(value, name)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
    return v


def check_nonnegative(value: Any, name: str) -> float:
    """Return ``value`` as float if it is finite and >= 0, else raise ValueError."""
    v = _as_number(value, name)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}.")
    return v


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_choice(value: Any, name: str, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options``, else raise listing the valid ones."""
    opts = list(options)
    if value not in opts:
        raise ValueError(
            f"unknown {name} {value!r}; valid options are: {', '.join(map(repr, opts))}."
        )
    return value
