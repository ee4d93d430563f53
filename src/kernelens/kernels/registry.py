"""Kernels by name."""

from __future__ import annotations

import copy
from typing import Any

import torch

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
    check_bandwidth,
)

__all__ = ["KERNELS", "make_kernel", "resolve_kernel"]

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


def resolve_kernel(
    kernel: str | Kernel,
    bandwidth: float | torch.Tensor | None = None,
    kernel_params: dict[str, Any] | None = None,
) -> Kernel:
    """The one place where a ``(kernel, bandwidth, kernel_params)`` triple becomes a kernel.

    Every estimator and layer that takes these three arguments resolves them here, so their
    meaning cannot drift apart between packages:

    - a name: ``KERNELS[name](bandwidth=..., **kernel_params)``; ``bandwidth=None`` means
      1.0 for kernels that have one. A ``"bandwidth"`` key in ``kernel_params`` is the
      same argument (giving both is an error).
    - a :class:`Kernel` instance: returned as is when ``bandwidth`` is None; a copy with
      ``bandwidth`` replaced otherwise. ``kernel_params`` must then be empty (the instance
      already holds its parameters).
    - a ``bandwidth`` for a kernel without one (``linear``, ``polynomial``) is an error, not
      silently ignored.

    Args:
        kernel: a name of :data:`KERNELS` or a :class:`Kernel`.
        bandwidth: ``L > 0`` (a float, or a 0-d tensor for a learned bandwidth), or None.
        kernel_params: extra constructor arguments of a named kernel (e.g. ``{"M": M}``).

    Returns:
        The kernel.

    Example:
        >>> resolve_kernel("laplace", 2.0)
        LaplaceKernel(bandwidth=2.0)
        >>> resolve_kernel(LaplaceKernel(5.0), 3.0)
        LaplaceKernel(bandwidth=3.0)
    """
    params = dict(kernel_params or {})
    if "bandwidth" in params:
        if bandwidth is not None:
            raise ValueError(
                "bandwidth is given twice, as bandwidth= and in kernel_params; pass it once."
            )
        bandwidth = params.pop("bandwidth")
    if isinstance(kernel, Kernel):
        if params:
            raise ValueError(
                f"kernel is a {type(kernel).__name__} instance, which holds its own parameters; "
                f"do not pass kernel_params too (got {sorted(params)})."
            )
        template = kernel
    elif isinstance(kernel, str):
        name = check_choice(kernel, "kernel", KERNELS)
        if KERNELS[name].has_bandwidth:
            bw = 1.0 if bandwidth is None else check_bandwidth(bandwidth)
            return KERNELS[name](bandwidth=bw, **params)
        template = KERNELS[name](**params)
    else:
        raise TypeError(f"kernel must be a name or a Kernel, got {type(kernel).__name__}.")
    if bandwidth is None:
        return template
    if not template.has_bandwidth:
        raise ValueError(
            f"kernel {template.name!r} has no bandwidth; do not pass bandwidth={bandwidth!r}."
        )
    out = copy.copy(template)
    out.bandwidth = check_bandwidth(bandwidth)  # type: ignore[attr-defined]
    return out
