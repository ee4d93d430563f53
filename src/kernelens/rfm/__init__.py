"""Recursive Feature Machines: kernel machines that learn their metric from the average
gradient outer product (AGOP) of their own predictor (Radhakrishnan et al., Science 2024).

- :class:`RFMRegressor`, :class:`RFMClassifier`: scikit-learn estimators.
- :func:`agop`: the AGOP of a fitted kernel machine (closed form, in tiles) or of any
  differentiable callable (autograd).
- :class:`KernelMachine`: ``f(x) = k_M(x, X) coef + intercept``, what a fitted RFM holds.
"""

from .agop import agop
from .estimators import (
    AGOPVanishedWarning,
    EarlyStoppingWarning,
    RFMClassifier,
    RFMRegressor,
    fit_temperature,
)
from .machine import KernelMachine

__all__ = [
    "AGOPVanishedWarning",
    "EarlyStoppingWarning",
    "KernelMachine",
    "RFMClassifier",
    "RFMRegressor",
    "agop",
    "fit_temperature",
]
