"""Temperature calibration of softmax probabilities from regression scores."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["fit_temperature"]


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
