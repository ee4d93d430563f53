"""The AGOP of a radial kernel machine without forming its gradients: the "Gram route".

With ``w_qi = w(u_q, u_i)`` (see :mod:`kernelens.rfm._gradients`), ``W [m, n]``, ``s = W A``
``[m, c]`` and centres ``U [n, r]``, the gradient of output ``j`` at query ``q`` is
``g_qj = s_qj u_q - sum_i w_qi A_ij u_i``, and summing ``g g^T`` over queries and outputs gives

    sum_{q,j} g_qj g_qj^T = Uq^T diag(|s_q|^2) Uq - Uq^T (W * B) U - U^T (W * B)^T Uq
                            + U^T ((W^T W) * (A A^T)) U,        B = s A^T  [m, n]

(``*`` elementwise). Forming the gradients costs ``m n c r`` and their outer products
``m c r^2``; this costs about ``m n (c + 2 r) + m n^2 + n^2 (c + r) + (m + n) r^2``, far less
when ``c r`` is large compared with ``n`` (one-hot text: ``c = 51`` outputs, ``r = 3264``
inputs). It needs the ``[n, n]`` matrix ``W^T W``, accumulated over tiles of queries.
"""

from __future__ import annotations

import torch

from .._memory import element_size, resolve_memory_budget, tile_size
from ._gradients import _weights

__all__ = ["gram_route_agop", "gram_route_cost", "gram_route_fits"]


def gram_route_cost(m: int, n: int, c: int, r: int) -> tuple[float, float]:
    """Approximate flops of ``(direct, gram)`` AGOP routes."""
    direct = m * n * c * r + m * c * r * r
    gram = m * n * (c + 2 * r) + m * n * n + n * n * (c + r) + (m + n) * r * r
    return float(direct), float(gram)


def gram_route_fits(n: int, dtype: torch.dtype, memory_budget: int | None) -> bool:
    """Whether the ``[n, n]`` accumulator and its temporaries take at most half the budget."""
    return 3 * n * n * element_size(dtype) <= resolve_memory_budget(memory_budget) // 2


def gram_route_agop(
    kind: str,
    bandwidth: float,
    Uq: torch.Tensor,
    U: torch.Tensor,
    A: torch.Tensor,
    *,
    diagonal: bool,
    weights: torch.Tensor | None = None,
    memory_budget: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_{q,j} g_qj g_qj^T, sum_q g_q)`` for a Laplace or Gaussian machine.

    Args:
        kind: ``"laplace"`` or ``"gaussian"``.
        bandwidth: ``L``.
        Uq: query points ``[m, r]``.
        U: centres ``[n, r]``.
        A: coefficients ``[n, c]``.
        diagonal: return only the diagonal ``[r]`` of the first sum.
        weights: the weights ``w(Uq, U) [m, n]`` if already known.
        memory_budget: bytes; the query tiles' ``[rows, n]`` temporaries use half of it.

    Returns:
        ``[r, r]`` (or ``[r]``) and the gradient sums ``[c, r]``.
    """
    m, r = Uq.shape
    n = U.shape[0]
    centre = U.mean(dim=0, keepdim=True)  # translation invariance; avoids cancellation
    Uq, U = Uq - centre, U - centre
    item = element_size(Uq.dtype)
    budget = resolve_memory_budget(memory_budget)
    rows = tile_size(m, 6 * n * item, budget // 2)
    WtW = torch.zeros(n, n, dtype=Uq.dtype, device=Uq.device)
    first = Uq.new_zeros(r) if diagonal else Uq.new_zeros(r, r)
    cross = Uq.new_zeros(r) if diagonal else Uq.new_zeros(r, r)
    grad_sum = Uq.new_zeros(A.shape[1], r)
    colsum = Uq.new_zeros(n)
    for q0 in range(0, m, rows):
        Ut = Uq[q0 : q0 + rows]
        if weights is None:
            W = _weights(kind, Ut, U, bandwidth)  # [t, n]
        else:
            W = weights[q0 : q0 + rows]
        s = W @ A  # [t, c]
        s2 = (s * s).sum(dim=1)  # [t]
        WB = W * (s @ A.T)  # [t, n]
        WBU = WB @ U  # [t, r]
        if diagonal:
            first += (Ut * Ut * s2[:, None]).sum(dim=0)
            cross += (Ut * WBU).sum(dim=0)
        else:
            first += (Ut * s2[:, None]).T @ Ut
            cross += Ut.T @ WBU
        WtW.addmm_(W.T, W)
        grad_sum += s.T @ Ut
        colsum += W.sum(dim=0)
    WtW.mul_(A @ A.T)  # P = (W^T W) * (A A^T)
    PU = WtW @ U  # [n, r]
    third = (U * PU).sum(dim=0) if diagonal else U.T @ PU
    if diagonal:
        total = first - 2 * cross + third
    else:
        total = first - cross - cross.T + third
        total = (total + total.T) / 2
    grad_sum -= (A * colsum[:, None]).T @ U
    return total, grad_sum
