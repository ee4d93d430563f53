"""Batched Gram matrices ``[B, m, q]`` of kernelens kernels, one small Gram per batch entry.

:class:`~kernelens.kernels.Kernel` works on two sets of points; a Sparse Kernel layer needs
one small Gram per query (the query's neighbours against each other). For the classic kernels
of :mod:`kernelens.kernels` this module computes all of them with batched matmuls, reading the
kernel's own parameters (bandwidth, ``M``, degree, ...) so autograd reaches them; any other
:class:`Kernel` falls back to calling it once per batch entry. tests/sparse checks the fast
path against that fallback for every registered kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..kernels import (
    GaussianKernel,
    Kernel,
    LaplaceKernel,
    LinearKernel,
    MahalanobisGaussianKernel,
    MahalanobisLaplaceKernel,
    PolynomialKernel,
    ProductLaplaceKernel,
)

__all__ = ["batched_gram", "batched_squared_distances"]

#: Pairs with ``d^2 <= ratio * (|a|^2 + |b|^2)`` are recomputed from their difference (the
#: same rule as :func:`kernelens.kernels.squared_distances`).
_REFINE_RATIO = {torch.float64: 1e-4, torch.float32: 1e-2}


def batched_squared_distances(
    A: torch.Tensor, C: torch.Tensor, *, M: torch.Tensor | None = None, same: bool = False
) -> torch.Tensor:
    """``(a - c)^T M (a - c)`` for every pair within each batch entry.

    Args:
        A: ``[B, m, p]``.
        C: ``[B, q, p]``.
        M: ``[p, p]`` symmetric PSD, or None for the identity.
        same: C is A; the diagonals are set to exactly zero.

    Returns:
        ``[B, m, q]``. Computed by the centred Gram expansion; pairs much closer than their
        norms are recomputed from their difference, so entries are accurate to a few ulps
        relative to ``d^2``.
    """
    centre = C.detach().mean(dim=1, keepdim=True)
    A, C = A - centre, C - centre
    AM, CM = (A, C) if M is None else (A @ M, C @ M)
    a2 = (AM * A).sum(dim=-1)
    c2 = (CM * C).sum(dim=-1)
    d2 = (a2[:, :, None] + c2[:, None, :] - 2.0 * (AM @ C.transpose(1, 2))).clamp_min(0.0)
    ratio = _REFINE_RATIO.get(d2.dtype, 1e-1)
    with torch.no_grad():
        close = d2 <= ratio * (a2[:, :, None] + c2[:, None, :])
        if same:
            close &= ~torch.eye(d2.shape[1], dtype=torch.bool, device=d2.device)
        b, i, j = torch.nonzero(close, as_tuple=True)
    if b.numel():
        diff = A[b, i] - C[b, j]
        exact = ((diff if M is None else diff @ M) * diff).sum(dim=-1)
        d2 = d2.index_put((b, i, j), exact)
    if same:
        eye = torch.eye(d2.shape[1], dtype=d2.dtype, device=d2.device)
        d2 = d2 * (1.0 - eye)
    return d2


def _sqrt(d2: torch.Tensor) -> torch.Tensor:
    # as kernelens.kernels.euclidean_distances: exact at 0, zero gradient there
    return torch.sqrt(d2.clamp_min(torch.finfo(d2.dtype).tiny))


def _M(kernel: Kernel, like: torch.Tensor) -> torch.Tensor:
    M: torch.Tensor = kernel.M  # type: ignore[attr-defined]
    return M.to(dtype=like.dtype, device=like.device)


def _laplace(k: Kernel, A: torch.Tensor, C: torch.Tensor, same: bool) -> torch.Tensor:
    return torch.exp(-_sqrt(batched_squared_distances(A, C, same=same)) / k.bandwidth)  # type: ignore[attr-defined]


def _gaussian(k: Kernel, A: torch.Tensor, C: torch.Tensor, same: bool) -> torch.Tensor:
    d2 = batched_squared_distances(A, C, same=same)
    return torch.exp(-d2 / (2.0 * k.bandwidth**2))  # type: ignore[attr-defined]


def _mahalanobis_laplace(k: Kernel, A: torch.Tensor, C: torch.Tensor, same: bool) -> torch.Tensor:
    d2 = batched_squared_distances(A, C, M=_M(k, A), same=same)
    return torch.exp(-_sqrt(d2) / k.bandwidth)  # type: ignore[attr-defined]


def _mahalanobis_gaussian(k: Kernel, A: torch.Tensor, C: torch.Tensor, same: bool) -> torch.Tensor:
    d2 = batched_squared_distances(A, C, M=_M(k, A), same=same)
    return torch.exp(-d2 / (2.0 * k.bandwidth**2))  # type: ignore[attr-defined]


def _product_laplace(k: Kernel, A: torch.Tensor, C: torch.Tensor, same: bool) -> torch.Tensor:
    return torch.exp(-torch.cdist(A, C, p=1.0) / k.bandwidth)  # type: ignore[attr-defined]


def _linear(k: Kernel, A: torch.Tensor, C: torch.Tensor, same: bool) -> torch.Tensor:
    return A @ C.transpose(1, 2)


def _polynomial(k: Kernel, A: torch.Tensor, C: torch.Tensor, same: bool) -> torch.Tensor:
    gamma = k.gamma if k.gamma is not None else 1.0 / A.shape[-1]  # type: ignore[attr-defined]
    return (gamma * (A @ C.transpose(1, 2)) + k.coef0) ** k.degree  # type: ignore[attr-defined]


_FAST: dict[type[Kernel], Callable[[Kernel, torch.Tensor, torch.Tensor, bool], torch.Tensor]] = {
    LaplaceKernel: _laplace,
    GaussianKernel: _gaussian,
    MahalanobisLaplaceKernel: _mahalanobis_laplace,
    MahalanobisGaussianKernel: _mahalanobis_gaussian,
    ProductLaplaceKernel: _product_laplace,
    LinearKernel: _linear,
    PolynomialKernel: _polynomial,
}


def batched_gram(kernel: Kernel, A: torch.Tensor, C: torch.Tensor | None = None) -> torch.Tensor:
    """``kernel(A[b], C[b])`` for every ``b`` -> ``[B, m, q]``.

    Args:
        kernel: any :class:`~kernelens.kernels.Kernel`.
        A: ``[B, m, p]``.
        C: ``[B, q, p]``, or None for A (symmetric Grams with an exact-zero-distance diagonal).
    """
    same = C is None
    Cb = A if C is None else C
    fast = _FAST.get(type(kernel))
    if fast is not None:
        return fast(kernel, A, Cb, same)
    return torch.stack([kernel(A[b], None if same else Cb[b]) for b in range(A.shape[0])])
