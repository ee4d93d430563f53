"""Local kernel ridge regression: one small ridge system per query, solved in a batch."""

from __future__ import annotations

import torch

from ..kernels import Kernel
from ..kernels.batched import batched_gram
from ..linalg import cholesky_solve

__all__ = ["local_kernel_regression"]


def local_kernel_regression(
    kernel: Kernel,
    queries: torch.Tensor,
    neighbors: torch.Tensor,
    targets: torch.Tensor,
    reg: float,
) -> torch.Tensor:
    """Kernel ridge regression of each query on its own neighbours.

    For query ``x_b`` with neighbours ``Z_b [k, p]`` and their targets ``Y_b [k, c]``, solve
    ``(K(Z_b, Z_b) + reg I) alpha_b = Y_b`` by a (batched) Cholesky factorisation and return
    ``K(x_b, Z_b) alpha_b``. Differentiable in every tensor argument and in the kernel's
    parameters.

    Args:
        kernel: the kernel.
        queries: ``[B, p]``.
        neighbors: ``[B, k, p]``.
        targets: ``[B, k, c]``.
        reg: ridge added to the diagonal of each local Gram (``>= 0``; jitter with a
            :class:`~kernelens.linalg.JitterWarning` if a system is singular).

    Returns:
        ``[B, c]``.
    """
    # one Gram of [query, neighbours] per batch entry: row 0 is K(x, Z), the rest K(Z, Z)
    G = batched_gram(kernel, torch.cat([queries[:, None, :], neighbors], dim=1))
    K = G[:, 1:, 1:]
    if reg:
        K = K + reg * torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    alpha = cholesky_solve(K, targets)
    return (G[:, :1, 1:] @ alpha)[:, 0, :]
