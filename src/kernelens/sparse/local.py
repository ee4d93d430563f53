"""Local kernel ridge regression: one small ridge system per query, solved in a batch."""

from __future__ import annotations

import torch

from ..kernels import Kernel
from ..kernels.batched import batched_gram
from ..linalg import jittered_cholesky

__all__ = ["local_kernel_regression"]


def local_kernel_regression(
    kernel: Kernel,
    queries: torch.Tensor,
    neighbors: torch.Tensor,
    targets: torch.Tensor,
    reg: float,
    *,
    return_variance: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Kernel ridge regression of each query on its own neighbours.

    For query ``x_b`` with neighbours ``Z_b [k, p]`` and their targets ``Y_b [k, c]``, factor
    ``K(Z_b, Z_b) + reg I = L L^T`` (batched Cholesky), and with ``v = L^{-1} K(Z_b, x_b)``
    and ``U = L^{-1} Y_b`` return the prediction ``v^T U = K(x_b, Z_b) alpha_b`` and,
    optionally, the GP posterior variance ``k(x_b, x_b) - v^T v``. Differentiable in every
    tensor argument and in the kernel's parameters.

    Args:
        kernel: the kernel.
        queries: ``[B, p]``.
        neighbors: ``[B, k, p]``.
        targets: ``[B, k, c]``.
        reg: ridge added to the diagonal of each local Gram (``>= 0``; jitter with a
            :class:`~kernelens.linalg.JitterWarning` if a system is singular).
        return_variance: also return the variances.

    Returns:
        ``[B, c]``, or ``([B, c], [B])`` with ``return_variance`` (variances clamped at 0,
        below which only round-off can take them).
    """
    # one Gram of [query, neighbours] per batch entry: row 0 is K(x, Z), the rest K(Z, Z)
    G = batched_gram(kernel, torch.cat([queries[:, None, :], neighbors], dim=1))
    K = G[:, 1:, 1:]
    if reg:
        K = K + reg * torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    L, _ = jittered_cholesky(K)
    kx = G[:, :1, 1:].transpose(1, 2)  # [B, k, 1]
    W = torch.linalg.solve_triangular(L, torch.cat([kx, targets], dim=2), upper=False)
    v, U = W[:, :, :1], W[:, :, 1:]
    mean = (v.transpose(1, 2) @ U)[:, 0, :]
    if not return_variance:
        return mean
    var = (G[:, 0, 0] - (v * v).sum(dim=(1, 2))).clamp_min(0.0)
    return mean, var
