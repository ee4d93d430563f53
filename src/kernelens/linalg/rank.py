"""Effective-rank measures of a spectrum: participation ratio and entropy effective rank."""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import check_finite, check_positive_int
from ._common import Seed, as_square_operator, make_generator
from .operator import LinearOperator
from .trace import hutchpp_trace

__all__ = ["entropy_effective_rank", "participation_ratio"]


def _as_float_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}).")
    check_finite(t, name)
    return t


def _check_nonzero(den: torch.Tensor, what: str) -> None:
    if bool((den == 0).any()):
        raise ValueError(
            f"{what} is zero (all eigenvalues vanish); the effective rank is undefined."
        )


def participation_ratio(
    A: torch.Tensor | np.ndarray | LinearOperator,
    *,
    num_matvecs: int = 99,
    seed: Seed = 0,
) -> torch.Tensor:
    """Participation ratio ``tr(G)^2 / ||G||_F^2 = (sum_i l_i)^2 / sum_i l_i^2``.

    Between 1 (one eigenvalue dominates) and ``n`` (a flat spectrum); a smooth, scale-free
    count of the directions a kernel or NTK actually uses.

    Args:
        A: one of
            - eigenvalues ``[n]`` (1-D),
            - a symmetric matrix ``[..., n, n]`` (batched; no eigendecomposition needed:
              ``tr(G)^2 / ||G||_F^2`` directly),
            - a symmetric :class:`LinearOperator`: both traces are estimated with
              :func:`hutchpp_trace`, ``tr(G)`` with ``num_matvecs`` products and
              ``tr(G^2)`` with ``num_matvecs`` products of ``G^2`` (``2 num_matvecs`` of
              ``G``). If that is no cheaper than forming ``G`` (``3 num_matvecs >= n``),
              ``G`` is formed and the ratio is exact.
        num_matvecs: Hutch++ budget per trace (operators only).
        seed: randomness of the estimate (operators only).

    Returns:
        A tensor: 0-d, or ``[...]`` for a batch of matrices.
    """
    if isinstance(A, LinearOperator):
        op = as_square_operator(A, "A", symmetric=True)
        m = check_positive_int(num_matvecs, "num_matvecs", minimum=3)
        if 3 * m >= op.shape[0]:
            return participation_ratio(op.to_dense())
        gen = make_generator(seed)
        tr = hutchpp_trace(op, m, seed=gen)
        squared = LinearOperator(
            op.shape,
            lambda V: op.matmat(op.matmat(V)),
            dtype=op.dtype,
            device=op.device,
            symmetric=True,
        )
        tr2 = hutchpp_trace(squared, m, seed=gen)
        _check_nonzero(tr2, "the estimated tr(G^2)")
        return tr**2 / tr2
    t = _as_float_tensor(A, "A")
    if t.ndim == 1:
        den = (t**2).sum()
        _check_nonzero(den, "sum of squared eigenvalues")
        return t.sum() ** 2 / den
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(
            f"A must be eigenvalues [n] or a square matrix [..., n, n], got shape {tuple(t.shape)}."
        )
    den = (t**2).sum(dim=(-2, -1))
    _check_nonzero(den, "||G||_F^2")
    return t.diagonal(dim1=-2, dim2=-1).sum(-1) ** 2 / den


def entropy_effective_rank(
    evals: torch.Tensor | np.ndarray, *, negative_tol: float | None = None
) -> torch.Tensor:
    """Entropy effective rank ``exp(-sum_i p_i log p_i)``, ``p_i = l_i / sum_j l_j``
    (Roy & Vetterli 2007).

    Between 1 and the number of non-zero eigenvalues, equal to ``r`` for ``r`` equal
    non-zero eigenvalues. Roy & Vetterli define it on singular values; for a PSD matrix
    (Gram, kernel, NTK) those are its eigenvalues.

    Args:
        evals: non-negative eigenvalues or singular values ``[..., n]`` (batched over
            leading dimensions).
        negative_tol: round-off allowance: values above ``-negative_tol * max(evals)`` are
            clamped to 0 (default ``sqrt(eps)`` of the dtype); more negative ones raise,
            since the measure is not defined for indefinite spectra (pass ``evals.abs()``,
            i.e. the singular values, if that is what you mean).

    Returns:
        A tensor of shape ``[...]``.
    """
    t = _as_float_tensor(evals, "evals")
    tol = math.sqrt(torch.finfo(t.dtype).eps) if negative_tol is None else negative_tol
    top = t.abs().amax(dim=-1, keepdim=True)
    if bool((t < -tol * top).any()):
        raise ValueError(
            f"evals has negative values (min {float(t.min()):.3g}, max |value| "
            f"{float(top.max()):.3g}); entropy effective rank needs a PSD spectrum. Pass "
            "singular values (evals.abs()) or raise negative_tol if this is round-off."
        )
    t = t.clamp_min(0)
    total = t.sum(dim=-1, keepdim=True)
    _check_nonzero(total, "sum of eigenvalues")
    p = t / total
    entropy = -torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0).sum(-1)
    return torch.exp(entropy)
