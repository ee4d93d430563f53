"""kernelens: neural networks as kernel machines, kernel machines as learners and layers.

Subpackages load on first use, so ``import kernelens`` stays light:

- :mod:`kernelens.kernels` classic kernels and kernel ridge / GP estimators
- :mod:`kernelens.linalg` operators, solvers, eigensolvers, trace and rank estimators
- :mod:`kernelens.ntk` the empirical NTK engine (:func:`empirical_ntk`)
- :mod:`kernelens.epk` the Exact Path Kernel
- :mod:`kernelens.dynamics` linearised training dynamics, TrainingMonitor and diagnose
- :mod:`kernelens.rfm` Recursive Feature Machines
- :mod:`kernelens.sparse` Sparse Kernel layers
- :mod:`kernelens.data` offline data sets
- :mod:`kernelens.plot` figures (spectra, influences, metrics, learning curves)
- :mod:`kernelens.experiments`, :mod:`kernelens.report` the reproduced results and reports
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = (
    "data",
    "dynamics",
    "epk",
    "experiments",
    "kernels",
    "linalg",
    "ntk",
    "plot",
    "report",
    "rfm",
    "sparse",
)

__all__ = ["__version__", "empirical_ntk", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name == "empirical_ntk":
        return importlib.import_module(".ntk", __name__).empirical_ntk
    raise AttributeError(f"module 'kernelens' has no attribute {name!r}")
