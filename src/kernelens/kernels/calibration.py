"""Temperature calibration of softmax probabilities from exact leave-one-out scores.

For kernel ridge regression ``(K + alpha I) coef = Y`` the leave-one-out prediction at a
training point has a closed form: ``f_loo_i = y_i - coef_i / [(K + alpha I)^-1]_ii``. Every
kernelens classifier (``KernelClassifier``, ``RFMClassifier``) fits its softmax temperature on
these scores of its final model, here, so calibration needs no held-out split and is not
fooled by the training fit:

- with a Cholesky factor the diagonal of the inverse is exact for every training point;
- with an iterative solver it is computed for a seeded subsample of
  :data:`LOO_CALIBRATION_POINTS` training points, by one block solve against their unit
  vectors (exact up to the solver's tolerance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import minimize_scalar

__all__ = ["LOO_CALIBRATION_POINTS", "fit_temperature", "inverse_diagonal", "loo_temperature"]

#: Training points whose exact leave-one-out scores calibrate the temperature when an
#: iterative solver is used (one block solve with this many right-hand sides).
LOO_CALIBRATION_POINTS = 256


def fit_temperature(scores: np.ndarray, codes: np.ndarray) -> float:
    """The ``T`` minimising the mean NLL of ``softmax(scores / T)`` for labels ``codes``.

    Args:
        scores: ``[m, C]`` held-out (or leave-one-out) scores.
        codes: ``[m]`` integer labels in ``0 .. C-1``.

    Returns:
        ``T`` in ``[e^-10, e^10]`` (a bounded search over ``log T``).
    """
    idx = np.arange(len(codes))

    def nll(log_t: float) -> float:
        z = scores / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[idx, codes] - np.log(np.exp(z).sum(axis=1))).mean())

    res = minimize_scalar(nll, bounds=(-10.0, 10.0), method="bounded")
    return float(np.exp(res.x))


def inverse_diagonal(
    n: int,
    dtype: torch.dtype,
    *,
    factor: torch.Tensor | None = None,
    solve: Callable[[torch.Tensor], torch.Tensor] | None = None,
    points: int = LOO_CALIBRATION_POINTS,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx [m]`` and ``diag(A^-1)[idx] [m]`` of the regularised Gram ``A [n, n]``.

    Args:
        n: training points.
        dtype: of the result.
        factor: the lower Cholesky factor of ``A`` (then every row, exactly), or None.
        solve: ``B [n, m] -> A^-1 B`` (used without a factor, on a seeded subsample).
        points: subsample size for ``solve``.
        seed: of the subsample.
    """
    if factor is not None:
        eye = torch.eye(n, dtype=factor.dtype, device=factor.device)
        Linv = torch.linalg.solve_triangular(factor, eye, upper=False)
        return torch.arange(n), (Linv * Linv).sum(dim=0).to(dtype)
    if solve is None:
        raise ValueError("inverse_diagonal needs a Cholesky factor or a solve function.")
    m = min(n, points)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m]
    E = torch.zeros(n, m, dtype=dtype)
    E[idx, torch.arange(m)] = 1.0
    Z = solve(E)
    return idx, Z[idx, torch.arange(m)].to(dtype)


def loo_temperature(
    Y: torch.Tensor,
    coef: torch.Tensor,
    codes: np.ndarray,
    *,
    factor: torch.Tensor | None = None,
    solve: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> float:
    """The softmax temperature of a kernel ridge classifier from its leave-one-out scores.

    Args:
        Y: ``[n, C]`` one-hot targets (before any intercept is subtracted: the intercept
            cancels in ``f_loo = Y - coef / diag(A^-1)``).
        coef: ``[n, C]`` coefficients, ``A coef = Y - intercept``.
        codes: ``[n]`` integer labels.
        factor, solve, seed: see :func:`inverse_diagonal`.

    Returns:
        ``T`` (1.0 with fewer than two points or classes).
    """
    n, C = coef.shape
    if n < 2 or C < 2:
        return 1.0
    rows, inv = inverse_diagonal(n, coef.dtype, factor=factor, solve=solve, seed=seed)
    scores = Y[rows].to(coef.dtype) - coef[rows] / inv[:, None]
    return fit_temperature(scores.double().cpu().numpy(), np.asarray(codes)[rows.numpy()])
