"""Batched Gram matrices ``[B, m, q]`` of kernelens kernels, one small Gram per batch entry.

:class:`~kernelens.kernels.Kernel` works on two sets of points; a Sparse Kernel layer needs
one small Gram per query (the query's neighbours against each other, on ``[B, k, d]``
neighbourhoods). For the classic kernels this module computes the pairwise quantity each
kernel depends on (distances, squared or Mahalanobis distances, L1 distances, inner products)
with batched matmuls and applies the kernel's *own* formula to it (``from_distances`` /
``from_inner_products`` of :mod:`kernelens.kernels.classic`): no formula is restated here, and
autograd reaches the kernel's parameters (bandwidth, ``M``). Any other :class:`Kernel` is
called once per batch entry. tests/sparse checks every registered kernel against the kernel
classes' own Grams.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import classic as c
from .base import Kernel
from .distances import _REFINE_RATIO

__all__ = ["batched_gram", "batched_squared_distances"]


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
    ratio = _REFINE_RATIO.get(d2.dtype, 1e-1)  # the rule of kernelens.kernels.squared_distances
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
    return kernel._M(like)  # type: ignore[attr-defined,no-any-return]


def _inner(A: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    return A @ (A if C is None else C).transpose(1, 2)


_Statistic = Callable[[Kernel, torch.Tensor, torch.Tensor | None], torch.Tensor]
#: What each classic kernel's formula (its ``from_distances`` / ``from_inner_products``)
#: is applied to, as batched ``[B, m, q]`` tensors. Exact types only: a subclass may change
#: the formula, and is then evaluated by its own ``_gram``.
_STATISTIC: dict[type[Kernel], _Statistic] = {
    c.LaplaceKernel: lambda k, A, C: _sqrt(batched_squared_distances(A, C)),
    c.GaussianKernel: lambda k, A, C: batched_squared_distances(A, C),
    c.MahalanobisLaplaceKernel: lambda k, A, C: _sqrt(batched_squared_distances(A, C, M=_M(k, A))),
    c.MahalanobisGaussianKernel: lambda k, A, C: batched_squared_distances(A, C, M=_M(k, A)),
    c.ProductLaplaceKernel: lambda k, A, C: torch.cdist(A, A if C is None else C, p=1.0),
    c.LinearKernel: lambda k, A, C: _inner(A, C),
    c.PolynomialKernel: lambda k, A, C: _inner(A, C),
}


def batched_gram(kernel: Kernel, A: torch.Tensor, C: torch.Tensor | None = None) -> torch.Tensor:
    """``kernel(A[b], C[b])`` for every ``b`` -> ``[B, m, q]``.

    Args:
        kernel: any :class:`~kernelens.kernels.Kernel`.
        A: ``[B, m, p]``.
        C: ``[B, q, p]``, or None for A (symmetric Grams with an exact-zero-distance diagonal).
    """
    statistic = _STATISTIC.get(type(kernel))
    if statistic is None:
        if A.shape[0] == 0:
            return A.new_zeros(0, A.shape[1], A.shape[1] if C is None else C.shape[1])
        return torch.stack([kernel(A[b], None if C is None else C[b]) for b in range(A.shape[0])])
    S = statistic(kernel, A, C)
    if isinstance(kernel, c.LinearKernel | c.PolynomialKernel):
        return kernel.from_inner_products(S, A.shape[-1])
    return kernel.from_distances(S, in_place=True)  # type: ignore[attr-defined,no-any-return]
