"""Kernels by name."""

from __future__ import annotations

from typing import Any

from .._validation import check_choice
from .base import Kernel
from .classic import (
    GaussianKernel,
    LaplaceKernel,
    LinearKernel,
    MahalanobisGaussianKernel,
    MahalanobisLaplaceKernel,
    PolynomialKernel,
    ProductLaplaceKernel,
)

__all__ = ["KERNELS", "make_kernel"]

#: name -> kernel class
KERNELS: dict[str, type[Kernel]] = {
    cls.name: cls
    for cls in (
        LaplaceKernel,
        GaussianKernel,
        MahalanobisLaplaceKernel,
        MahalanobisGaussianKernel,
        ProductLaplaceKernel,
        LinearKernel,
        PolynomialKernel,
    )
}


def make_kernel(kernel: str | Kernel, **params: Any) -> Kernel:
    """Return ``kernel`` if it is a :class:`Kernel`, else build the named one with ``params``.

    Example:
        >>> make_kernel("laplace", bandwidth=10.0)
        LaplaceKernel(bandwidth=10.0)
    """
    if isinstance(kernel, Kernel):
        if params:
            raise ValueError("kernel is already a Kernel instance; do not pass parameters too.")
        return kernel
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a name or a Kernel, got {type(kernel).__name__}.")
    name = check_choice(kernel, "kernel", KERNELS)
    return KERNELS[name](**params)
