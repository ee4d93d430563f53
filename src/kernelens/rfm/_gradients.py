"""Input gradients of kernel machines ``f(u) = sum_i coef_i k(u, u_i)`` in closed form, in tiles.

For the radial kernels ``k = phi(||u - u_i||)`` the gradient is
``grad f(u) = sum_i coef_i w(u, u_i) (u - u_i)`` with ``w = phi'(r) / r``:

==================  =====================================  ===============================
kernel              ``k(u, v)``                            ``w(u, v)``
==================  =====================================  ===============================
``laplace``         ``exp(-r / L)``                        ``-k / (L r)``, 0 when ``r = 0``
``gaussian``        ``exp(-r^2 / (2 L^2))``                ``-k / L^2``
==================  =====================================  ===============================

and for ``product_laplace`` (``k = exp(-||u - v||_1 / L)``) it is
``-(1/L) sum_i coef_i k(u, u_i) sign(u - u_i)`` with ``sign(0) = 0``.

The Laplace kernel is not differentiable at ``u = u_i`` (a cone): its gradient there is a
set, and ``w`` diverges like ``1 / r``. Following Radhakrishnan et al. (Science 2024) and
their code, pairs closer than ``ZERO_DISTANCE * L`` contribute nothing: at a training point
this drops the point's own term, which is the minimum-norm element of the subdifferential
of the cone at its apex (0). The Gaussian kernel has no singularity; for product-Laplace
``sign(0) = 0`` is the same convention coordinate-wise.
"""

from __future__ import annotations

from typing import cast

import torch

from .._memory import element_size, tile_size
from .._validation import check_choice
from ..kernels import resolve_kernel
from ..kernels.classic import _StationaryKernel

__all__ = ["GRADIENT_KERNELS", "ZERO_DISTANCE", "base_kernel", "machine_gradients"]

#: Kernels with closed-form gradients.
GRADIENT_KERNELS = ("laplace", "gaussian", "product_laplace")
#: Pairs with ``||u - v|| <= ZERO_DISTANCE * bandwidth`` are treated as coincident (Laplace).
ZERO_DISTANCE = 1e-10


def base_kernel(kind: str, bandwidth: float) -> _StationaryKernel:
    """The kernel applied to the mapped inputs ``u = x S`` (see :mod:`kernelens.rfm._metric`):
    :func:`kernelens.kernels.resolve_kernel` restricted to the kernels with closed-form
    gradients. Its ``distances`` (``||u - v||`` for Laplace, ``||u - v||^2`` for Gaussian,
    ``||u - v||_1`` for product-Laplace) and ``from_distances`` are the kernel formulas the
    gradients below reuse."""
    return cast(
        _StationaryKernel, resolve_kernel(check_choice(kind, "kernel", GRADIENT_KERNELS), bandwidth)
    )


def weights_from_gram(
    kind: str, K: torch.Tensor, D: torch.Tensor, bandwidth: float
) -> torch.Tensor:
    """``w = phi'(r) / r`` from the kernel values ``K`` and :func:`distances` ``D``, in place
    on ``K``. Values on coincident pairs (``r = 0``, e.g. a regularised diagonal) do not
    matter: they multiply ``u - u_i = 0``, and for Laplace they are set to 0."""
    if kind == "laplace":
        zero = D <= ZERO_DISTANCE * bandwidth
        return K.div_(D).mul_(-1.0 / bandwidth).masked_fill_(zero, 0.0)
    return K.mul_(-1.0 / bandwidth**2)


def _weights(kind: str, Uq: torch.Tensor, Uc: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``w(u_q, u_i) [m, nb]`` for the radial kernels."""
    kernel = base_kernel(kind, bandwidth)
    D = kernel.distances(Uq, Uc)
    return weights_from_gram(kind, kernel.from_distances(D), D, bandwidth)


def machine_gradients(
    kind: str,
    bandwidth: float,
    Uq: torch.Tensor,
    U: torch.Tensor,
    coef: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    memory_budget: int | None = None,
) -> torch.Tensor:
    """Gradients of every output of ``f(u) = k(u, U) @ coef`` at the query points.

    Args:
        kind: ``"laplace"``, ``"gaussian"`` or ``"product_laplace"``.
        bandwidth: ``L > 0``.
        Uq: query points ``[m, r]``.
        U: centres ``[n, r]``.
        coef: coefficients ``[n, c]``.
        weights: the weights ``w(Uq, U) [m, n]`` if already known (radial kernels).
        memory_budget: bytes for the temporaries of one tile of centres.

    Returns:
        ``[m, c, r]``: ``out[q, j] = grad f_j(Uq[q])``.
    """
    m, r = Uq.shape
    n, c = coef.shape
    item = element_size(Uq.dtype)
    out = torch.zeros(m, c, r, dtype=Uq.dtype, device=Uq.device)
    if r == 0 or n == 0:
        return out
    if kind == "product_laplace":
        per_centre = item * (m * (r + 3) + c * r)
    else:
        per_centre = item * (4 * m + c * r)
    step = tile_size(n, per_centre, memory_budget)
    kernel = base_kernel(kind, bandwidth)
    # the gradients are translation invariant; centring keeps ``u_q (W A) - W (A U)`` free of
    # cancellation when the inputs share a large offset (and exact for constant coordinates)
    centre = U.mean(dim=0, keepdim=True)
    Uq, U = Uq - centre, U - centre
    for c0 in range(0, n, step):
        Uc, A = U[c0 : c0 + step], coef[c0 : c0 + step]
        if kind == "product_laplace":
            diff = Uq[:, None, :] - Uc[None, :, :]  # [m, nb, r]
            K = kernel.from_distances(diff.abs().sum(dim=2), in_place=True)
            out -= torch.einsum("qi,ic,qir->qcr", K, A, diff.sign_()) / bandwidth
            continue
        if weights is None:
            W = _weights(kind, Uq, Uc, bandwidth)
        else:
            W = weights[:, c0 : c0 + step]
        WA = W @ A  # [m, c]
        AU = (A[:, :, None] * Uc[:, None, :]).reshape(len(Uc), c * r)
        out += WA[:, :, None] * Uq[:, None, :]
        out -= (W @ AU).reshape(m, c, r)
    return out
