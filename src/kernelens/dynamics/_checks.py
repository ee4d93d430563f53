"""Input checks shared by the prediction functions: kernels, targets, initial outputs, times."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import as_tensor, check_finite

__all__ = [
    "as_2d_kernel",
    "check_fx",
    "check_kernel",
    "check_targets",
    "check_times",
    "psd_tolerance",
]


def psd_tolerance(dtype: torch.dtype, n: int) -> float:
    """Relative size (to the largest eigenvalue) below which an eigenvalue counts as zero:
    ``n * eps`` of the dtype, the round-off level of a symmetric eigendecomposition."""
    return max(n, 1) * torch.finfo(dtype).eps


def check_kernel(k: Any, name: str, *, square: bool) -> torch.Tensor:
    """A kernel ``[N1, N2]`` or ``[N1, N2, O, O]`` as a floating tensor (finite, and for
    ``square`` kernels symmetric). Integer input becomes float64."""
    t = as_tensor(k, name, ndim=(2, 4), dtype=None)
    if not t.is_floating_point():  # pragma: no cover - as_tensor casts
        t = t.double()
    if t.ndim == 4 and t.shape[2] != t.shape[3]:
        raise ValueError(
            f"{name} must be [N1, N2, O, O] with equal output axes, got shape {tuple(t.shape)}."
        )
    if square:
        if t.shape[0] != t.shape[1]:
            raise ValueError(
                f"{name} must be square over examples ([N, N] or [N, N, O, O]), got shape "
                f"{tuple(t.shape)}."
            )
        k2 = as_2d_kernel(t)
        scale = float(k2.abs().max())
        asym = float((k2 - k2.T).abs().max())
        if asym > 1e3 * torch.finfo(t.dtype).eps * max(scale, 1e-300):
            raise ValueError(
                f"{name} is not symmetric (max |K - K^T| = {asym:.3g}, max |K| = {scale:.3g}); a "
                "train-train NTK/NNGP Gram is symmetric: pass kernel(x_train, x_train), not a "
                "test-train block."
            )
    return t


def as_2d_kernel(k: torch.Tensor) -> torch.Tensor:
    """``[N1, N2]`` unchanged; ``[N1, N2, O, O]`` as ``[N1 O, N2 O]`` with row index ``i O + a``
    (the C-order flattening of outputs ``[N, O]``)."""
    if k.ndim == 2:
        return k
    n1, n2, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n1 * o, n2 * o)


def check_targets(y: Any, n: int, dtype: torch.dtype, name: str = "y_train") -> torch.Tensor:
    """Targets ``[N, O]`` (``[N]`` is read as ``[N, 1]``) in ``dtype``."""
    t = as_tensor(y, name, ndim=(1, 2), dtype=dtype)
    if t.shape[0] != n:
        raise ValueError(
            f"{name} has {t.shape[0]} rows but the kernel has {n} training examples; they must "
            "be the same examples in the same order."
        )
    return t


def check_fx(fx: Any, shape: tuple[int, ...], dtype: torch.dtype, name: str) -> torch.Tensor | None:
    """Initial outputs: None, a scalar, or a tensor broadcastable to ``shape``."""
    if fx is None:
        return None
    t = as_tensor(fx, name, dtype=dtype, allow_empty=False)
    try:
        return torch.broadcast_to(t, shape)
    except RuntimeError as exc:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, which does not broadcast to the outputs' shape "
            f"{shape}; pass the network's outputs [N, O] (or a scalar)."
        ) from exc


def check_times(t: Any, dtype: torch.dtype, *, discrete: bool) -> torch.Tensor:
    """Times as a tensor of any shape: non-negative, finite, and whole numbers of steps when
    ``discrete``."""
    tt = torch.as_tensor(t, dtype=dtype) if not isinstance(t, torch.Tensor) else t.to(dtype)
    check_finite(tt, "t")
    if bool((tt < 0).any()):
        raise ValueError(f"t must be non-negative, got min {float(tt.min()):.3g}.")
    if discrete and bool((tt != tt.round()).any()):
        raise ValueError(
            "with discrete=True, t counts gradient steps and must hold whole numbers, got "
            f"{tt.flatten()[(tt != tt.round()).flatten()][0].item()!r}; round it or use "
            "discrete=False for continuous time."
        )
    return tt
