"""Linearised training dynamics and training diagnosis.

What the NTK predicts, set beside what training actually did: closed-form gradient descent on
the squared loss with a fixed kernel (:func:`gradient_descent_mse`, and for an infinite ensemble
of infinitely wide networks :func:`gradient_descent_mse_ensemble`, both with neural-tangents
0.6.5's conventions), the linearised network as a trainable module (:func:`linearize`), a monitor
for the user's own training loop (:class:`TrainingMonitor`) and a verdict on the run
(:func:`diagnose`); the RKHS norm of an interpolant (:func:`rkhs_norm`) and the NTK diagonal
against saliency (:func:`saliency_vs_ntk_diagonal`). See docs/dynamics.md.
"""

from .diagnose import DEVIATION_LAZY, LOSS_FLOOR, LOSS_MARGIN, VERDICTS, Diagnosis, diagnose
from .ensemble import EnsemblePredictor, Gaussian, gradient_descent_mse_ensemble
from .linearize import LinearizedModel, linearize
from .monitor import TrainingMonitor, centered_alignment, kernel_distance, mse
from .predict import MSEPredictor, gradient_descent_mse
from .rkhs import RKHSNorm, rkhs_norm
from .saliency import SaliencyNTK, ntk_diagonal, saliency_vs_ntk_diagonal

__all__ = [
    "DEVIATION_LAZY",
    "LOSS_FLOOR",
    "LOSS_MARGIN",
    "VERDICTS",
    "Diagnosis",
    "EnsemblePredictor",
    "Gaussian",
    "LinearizedModel",
    "MSEPredictor",
    "RKHSNorm",
    "SaliencyNTK",
    "TrainingMonitor",
    "centered_alignment",
    "diagnose",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "kernel_distance",
    "linearize",
    "mse",
    "ntk_diagonal",
    "rkhs_norm",
    "saliency_vs_ntk_diagonal",
]
