"""The Exact Path Kernel: a trained network as an exact kernel machine over its training data.

Record training with :class:`TrajectoryRecorder` (or :func:`fit`), then
:class:`ExactPathKernel` turns the :class:`Trajectory` into per-example attributions,
path-kernel values, exact predictions and GP-style uncertainty. See docs/epk.md.
"""

from .kernel import OUTPUTS, ExactPathKernel
from .losses import LossSpec, resolve_loss
from .optim import SUPPORTED_OPTIMIZERS, StepRule
from .recorder import TrajectoryRecorder, fit
from .results import EPKVerificationError, PathDecomposition, VerifyReport
from .store import StoreError
from .trajectory import StepRecord, Trajectory, TrajectoryHeader

__all__ = [
    "OUTPUTS",
    "SUPPORTED_OPTIMIZERS",
    "EPKVerificationError",
    "ExactPathKernel",
    "LossSpec",
    "PathDecomposition",
    "StepRecord",
    "StepRule",
    "StoreError",
    "Trajectory",
    "TrajectoryHeader",
    "TrajectoryRecorder",
    "VerifyReport",
    "fit",
    "resolve_loss",
]
