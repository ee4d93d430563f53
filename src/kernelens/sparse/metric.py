"""The metric a Sparse Kernel layer searches neighbours in: the kernel's own.

A stationary kernel is a decreasing function of one distance, so the ``k`` centers with the
largest kernel values are the ``k`` nearest in that distance, and the search must use it:

==========================================  ============================================
kernel                                      neighbour search
==========================================  ============================================
``laplace``, ``gaussian``                   Euclidean
``mahalanobis_laplace``/``_gaussian``       Euclidean on ``x M^(1/2)`` (= the M metric)
``product_laplace``                         L1
``linear``, ``polynomial``, other kernels   Euclidean on the features
==========================================  ============================================

The linear and polynomial kernels are not functions of a distance; their neighbourhoods are
Euclidean by definition of the layer (for the linear kernel this is also its induced metric
``k(x, x) + k(z, z) - 2 k(x, z)``). A ``Kernel`` subclass that kernelens does not know is
searched in the Euclidean metric too; subclass a Mahalanobis kernel or product-Laplace to
search in theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import (
    Kernel,
    MahalanobisGaussianKernel,
    MahalanobisLaplaceKernel,
    ProductLaplaceKernel,
)
from .neighbors.base import Metric

__all__ = ["SearchMetric", "psd_sqrt", "search_metric"]


@dataclass(frozen=True)
class SearchMetric:
    """Where neighbours are searched: points ``f [b, p]`` are indexed as ``f @ transform``
    (``transform [p, p]``, or None for ``f`` itself) in the index metric ``metric``."""

    metric: Metric
    transform: torch.Tensor | None

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """The search points ``[b, p]`` of detached ``features [b, p]``."""
        return features if self.transform is None else features @ self.transform


def psd_sqrt(M: torch.Tensor) -> torch.Tensor:
    """The symmetric square root ``M^(1/2)`` of a symmetric PSD ``M [p, p]`` (computed in
    float64, negative round-off eigenvalues set to 0), in ``M``'s dtype: then
    ``||(x - z) M^(1/2)||_2^2 = (x - z)^T M (x - z)``."""
    w, V = torch.linalg.eigh(M.detach().double())
    return ((V * w.clamp_min(0.0).sqrt()) @ V.T).to(M.dtype)


def search_metric(kernel: Kernel, like: torch.Tensor) -> SearchMetric:
    """The kernel's own search metric (module docstring), for features like ``like``."""
    if isinstance(kernel, ProductLaplaceKernel):
        return SearchMetric("l1", None)
    if isinstance(kernel, MahalanobisLaplaceKernel | MahalanobisGaussianKernel):
        if kernel.M.shape[0] != like.shape[1]:
            raise ValueError(
                f"the kernel's M is {tuple(kernel.M.shape)} but the features have "
                f"{like.shape[1]} dimensions; M must be [p, p] for features [n, p]."
            )
        R = psd_sqrt(kernel.M.detach().to(device=like.device, dtype=torch.float64))
        return SearchMetric("l2", R.to(like.dtype))
    return SearchMetric("l2", None)
