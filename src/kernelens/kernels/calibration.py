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

The temperature minimises the cross-entropy of ``softmax(scores / T)`` against Platt's
smoothed targets (:func:`smoothed_targets`: probability ``(N_c + 1) / (N_c + 2)`` on the
true class ``c``, the rest spread over the others), not against hard one-hot labels. When
the leave-one-out scores separate the classes perfectly, as they often do on small, easy
data sets, the hard-label NLL keeps falling as ``T -> 0`` and the probabilities become 0 and
1 (one test error then costs a log-loss of 35); the smoothed targets give a finite optimum
whose confidence grows with the number of examples behind it (Platt, "Probabilistic outputs
for support vector machines", 1999).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import minimize_scalar

__all__ = [
    "LOO_CALIBRATION_POINTS",
    "fit_temperature",
    "inverse_diagonal",
    "loo_temperature",
    "smoothed_targets",
]

#: Training points whose exact leave-one-out scores calibrate the temperature when an
#: iterative solver is used (one block solve with this many right-hand sides).
LOO_CALIBRATION_POINTS = 256


def smoothed_targets(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Platt's calibration targets ``[m, C]``: ``(N_c + 1) / (N_c + 2)`` on each row's class
    ``c`` (``N_c`` its count among ``codes``), the remaining ``1 / (N_c + 2)`` spread evenly
    over the other classes (for two classes exactly Platt's ``t+`` and ``t-``)."""
    codes = np.asarray(codes)
    counts = np.bincount(codes, minlength=n_classes)[codes].astype(np.float64)
    hit = (counts + 1.0) / (counts + 2.0)
    out = np.repeat(((1.0 - hit) / max(n_classes - 1, 1))[:, None], n_classes, axis=1)
    out[np.arange(len(codes)), codes] = hit
    return out


def fit_temperature(
    scores: np.ndarray, codes: np.ndarray, *, targets: np.ndarray | None = None
) -> float:
    """The ``T`` minimising the mean cross-entropy of ``softmax(scores / T)``.

    Args:
        scores: ``[m, C]`` held-out (or leave-one-out) scores.
        codes: ``[m]`` integer labels in ``0 .. C-1``.
        targets: ``[m, C]`` target probabilities (e.g. :func:`smoothed_targets`); None: the
            one-hot labels (the plain NLL).

    Returns:
        ``T`` in ``[e^-10, e^10]`` (a bounded search over ``log T``).
    """
    if targets is None:
        targets = np.eye(scores.shape[1])[codes]

    def nll(log_t: float) -> float:
        z = scores / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-(targets * logp).sum(axis=1).mean())

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
    """The softmax temperature of a kernel ridge classifier from its leave-one-out scores,
    fitted against :func:`smoothed_targets` of the rows used.

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
    used = np.asarray(codes)[rows.numpy()]
    return fit_temperature(scores.double().cpu().numpy(), used, targets=smoothed_targets(used, C))
