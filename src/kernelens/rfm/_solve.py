"""Solving the kernel ridge system ``(K + reg I) coef = Y`` of one RFM iteration."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._memory import element_size, resolve_memory_budget
from ..kernels import Kernel
from ..linalg import jittered_cholesky

__all__ = ["SOLVERS", "Solution", "dense_fits", "resolve_solver", "solve"]

#: Solver names accepted by the RFM estimators.
SOLVERS = ("auto", "cholesky")


@dataclass
class Solution:
    """``coef [n, c]`` and the fitted values ``K coef [n, c]`` on the training points."""

    coef: torch.Tensor
    fitted: torch.Tensor
    method: str


def dense_fits(n: int, dtype: torch.dtype, memory_budget: int | None) -> bool:
    """Whether the ``n x n`` Gram and its Cholesky factor (plus slack) fit the budget."""
    return 3 * n * n * element_size(dtype) <= resolve_memory_budget(memory_budget)


def resolve_solver(solver: str, n: int, dtype: torch.dtype, memory_budget: int | None) -> str:
    """The concrete method ``"auto"`` stands for, or ``solver`` itself after a memory check."""
    if dense_fits(n, dtype, memory_budget):
        return "cholesky"
    size = 3 * n * n * element_size(dtype) / 2**30
    raise MemoryError(
        f"solver={solver!r} needs the {n} x {n} Gram and its Cholesky factor (about "
        f"{size:.1f} GiB), more than memory_budget allows; raise memory_budget or subsample."
    )


def solve(
    kernel: Kernel,
    U: torch.Tensor,
    Y: torch.Tensor,
    reg: float,
    method: str,
) -> Solution:
    """Solve ``(k(U, U) + reg I) coef = Y`` for ``U [n, r]``, ``Y [n, c]`` by ``method``."""
    K = kernel(U)
    K.diagonal().add_(reg)
    L, jitter = jittered_cholesky(K)
    del K
    coef = torch.cholesky_solve(Y, L)
    # (K + (reg + jitter) I) coef = Y, so K coef = Y - (reg + jitter) coef exactly
    return Solution(coef, Y - (reg + jitter) * coef, method)
