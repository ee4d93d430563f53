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
    A: torch.Tensor, C: torch.Tensor | None = None, *, M: torch.Tensor | None = None
) -> torch.Tensor:
    """``(a - c)^T M (a - c)`` for every pair within each batch entry.

    Args:
        A: ``[B, m, p]``.
        C: ``[B, q, p]``, or None for A (then the diagonals are exactly zero).
        M: ``[p, p]`` symmetric PSD, or None for the identity.

    Returns:
        ``[B, m, q]``. Computed by the Gram expansion ``|a|^2 + |c|^2 - 2 a.c`` after
        centring each batch entry on the mean of its ``C`` points; pairs much closer than their
        norms are recomputed from their difference, so entries are accurate to a few ulps
        relative to ``d^2``. Memory and passes over ``[B, m, p]`` are kept to a minimum: the
        norms are read off the Gram's diagonal in the symmetric case.
    """
    same = C is None
    Cb = A if C is None else C
    centre = Cb.detach().mean(dim=1, keepdim=True)
    Ac = A - centre
    Cc = Ac if same else Cb - centre
    AM = Ac if M is None else Ac @ M
    G = AM @ Cc.transpose(1, 2)
    if same:
        a2 = c2 = G.diagonal(dim1=1, dim2=2)
    else:
        a2 = (AM * Ac).sum(dim=-1)
        c2 = ((Cc if M is None else Cc @ M) * Cc).sum(dim=-1)
    scale = a2[:, :, None] + c2[:, None, :]
    d2 = (scale - 2.0 * G).clamp_min(0.0)
    ratio = _REFINE_RATIO.get(d2.dtype, 1e-1)
    with torch.no_grad():
        close = d2 <= ratio * scale
        if same:
            close.diagonal(dim1=1, dim2=2).fill_(False)
        b, i, j = torch.nonzero(close, as_tuple=True)
    if b.numel():
        diff = Ac[b, i] - Cc[b, j]
        exact = ((diff if M is None else diff @ M) * diff).sum(dim=-1)
        d2 = d2.index_put((b, i, j), exact)
    if same:
        d2 = d2 * (1.0 - torch.eye(d2.shape[1], dtype=d2.dtype, device=d2.device))
    return d2


def _sqrt(d2: torch.Tensor) -> torch.Tensor:
    # as kernelens.kernels.euclidean_distances: exact at 0, zero gradient there
    return torch.sqrt(d2.clamp_min(torch.finfo(d2.dtype).tiny))


def _M(kernel: Kernel, like: torch.Tensor) -> torch.Tensor:
    M: torch.Tensor = kernel.M  # type: ignore[attr-defined]
    return M.to(dtype=like.dtype, device=like.device)


def _laplace(k: Kernel, A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    return torch.exp(-_sqrt(batched_squared_distances(A, C)) / k.bandwidth)  # type: ignore[attr-defined]


def _gaussian(k: Kernel, A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    d2 = batched_squared_distances(A, C)
    return torch.exp(-d2 / (2.0 * k.bandwidth**2))  # type: ignore[attr-defined]


def _mahalanobis_laplace(k: Kernel, A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    d2 = batched_squared_distances(A, C, M=_M(k, A))
    return torch.exp(-_sqrt(d2) / k.bandwidth)  # type: ignore[attr-defined]


def _mahalanobis_gaussian(k: Kernel, A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    d2 = batched_squared_distances(A, C, M=_M(k, A))
    return torch.exp(-d2 / (2.0 * k.bandwidth**2))  # type: ignore[attr-defined]


def _product_laplace(k: Kernel, A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    return torch.exp(-torch.cdist(A, A if C is None else C, p=1.0) / k.bandwidth)  # type: ignore[attr-defined]


def _linear(k: Kernel, A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    return A @ (A if C is None else C).transpose(1, 2)


def _polynomial(k: Kernel, A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    gamma = k.gamma if k.gamma is not None else 1.0 / A.shape[-1]  # type: ignore[attr-defined]
    return (gamma * (A @ (A if C is None else C).transpose(1, 2)) + k.coef0) ** k.degree  # type: ignore[attr-defined]


_FAST: dict[type[Kernel], Callable[[Kernel, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
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
    fast = _FAST.get(type(kernel))
    if fast is not None:
        return fast(kernel, A, C)
    return torch.stack([kernel(A[b], None if C is None else C[b]) for b in range(A.shape[0])])
