"""The RKHS norm of the minimum-norm interpolant of targets ``y`` with kernel ``K``."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._validation import check_nonnegative
from ._checks import check_kernel, check_targets, psd_tolerance
from ._spectral import KernelEigh

__all__ = ["RKHSNorm", "rkhs_norm"]


class RKHSNorm(NamedTuple):
    """``value = sum_k contributions[k]``; ``contributions[k] = ||v_k^T y||^2 / lambda_k`` for
    the eigenpairs of ``K`` in descending order (0 for dropped modes); ``n_dropped`` modes had
    ``lambda_k <= rcond * lambda_max``."""

    value: float
    contributions: torch.Tensor
    eigenvalues: torch.Tensor
    n_dropped: int


def rkhs_norm(K: Any, y: Any, rcond: float | None = None) -> RKHSNorm:
    """``||f||_H^2 = y^T K^{-1} y`` through the eigendecomposition ``K = sum lambda_k v_k v_k^T``.

    Args:
        K: PSD kernel ``[N, N]``.
        y: targets ``[N]`` or ``[N, O]`` (the norms of the O outputs are summed).
        rcond: eigenvalues ``<= rcond * lambda_max`` are dropped (pseudo-inverse); default
            ``N * eps`` of the dtype.

    Returns:
        :class:`RKHSNorm` (value, per-mode contributions ``[N]``, eigenvalues ``[N]``, number
        of modes dropped), modes sorted by descending eigenvalue.
    """
    k = check_kernel(K, "K", square=True)
    if k.ndim != 2:
        raise ValueError(f"K must be [N, N], got shape {tuple(k.shape)}.")
    t = check_targets(y, k.shape[0], k.dtype, name="y")
    y2 = t[:, None] if t.ndim == 1 else t
    n = k.shape[0]
    rc = psd_tolerance(k.dtype, n) if rcond is None else check_nonnegative(rcond, "rcond")
    eig = KernelEigh.of(k, 0.0, "K")
    evals, evecs = eig.evals.flip(0), eig.evecs.flip(1)
    keep = evals > rc * max(float(evals[0]), 0.0)
    proj = ((evecs.T @ y2) ** 2).sum(1)
    safe = torch.where(keep, evals, torch.ones_like(evals))
    contrib = torch.where(keep, proj / safe, torch.zeros_like(proj))
    return RKHSNorm(float(contrib.sum()), contrib, evals, int((~keep).sum()))
