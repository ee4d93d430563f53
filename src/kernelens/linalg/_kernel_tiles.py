"""Tiled products with a kernel given only as a callable ``k(X1, X2) -> [n1, n2]``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._memory import element_size, tile_grid

__all__ = ["KernelFn", "kernel_matmul"]

KernelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Gram-sized temporaries a kernel evaluation may hold per entry (distances, exp, output).
GRAM_TEMPORARIES = 4


def kernel_matmul(
    kernel: KernelFn,
    X1: torch.Tensor,
    X2: torch.Tensor,
    V: torch.Tensor,
    *,
    memory_budget: int | float | None = None,
) -> torch.Tensor:
    """``k(X1, X2) @ V`` for ``X1 [n1, d]``, ``X2 [n2, d]``, ``V [n2, c]`` -> ``[n1, c]``.

    Tiles rows of ``X1`` and, if one row of the Gram does not fit the budget, columns of
    ``X2`` too, so at most ``memory_budget`` bytes of Gram tiles exist at once.
    """
    n1, n2 = X1.shape[0], X2.shape[0]
    itemsize = element_size(X1.dtype)
    rows, cols = tile_grid(n1, n2, GRAM_TEMPORARIES * itemsize, memory_budget)
    out = torch.empty(n1, V.shape[1], dtype=V.dtype, device=V.device)
    for r0 in range(0, n1, rows):
        xa = X1[r0 : r0 + rows]
        acc = None
        for c0 in range(0, n2, cols):
            part = kernel(xa, X2[c0 : c0 + cols]) @ V[c0 : c0 + cols]
            acc = part if acc is None else acc + part
        out[r0 : r0 + rows] = acc
    return out
