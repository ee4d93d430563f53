"""Classic kernels behind one small interface, and kernel estimators with a scikit-learn API."""

from .base import Kernel
from .calibration import fit_temperature
from .classic import (
    GaussianKernel,
    LaplaceKernel,
    LinearKernel,
    MahalanobisGaussianKernel,
    MahalanobisLaplaceKernel,
    PolynomialKernel,
    ProductLaplaceKernel,
)
from .distances import euclidean_distances, squared_distances
from .gp import GaussianProcessRegressor
from .registry import KERNELS, make_kernel, resolve_kernel
from .ridge import KernelClassifier, KernelRidge

__all__ = [
    "KERNELS",
    "GaussianKernel",
    "GaussianProcessRegressor",
    "Kernel",
    "KernelClassifier",
    "KernelRidge",
    "LaplaceKernel",
    "LinearKernel",
    "MahalanobisGaussianKernel",
    "MahalanobisLaplaceKernel",
    "PolynomialKernel",
    "ProductLaplaceKernel",
    "euclidean_distances",
    "fit_temperature",
    "make_kernel",
    "resolve_kernel",
    "squared_distances",
]
