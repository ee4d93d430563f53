"""Solving the kernel ridge system ``(K + reg I) coef = Y`` of one RFM iteration.

The dense route (:func:`solve_dense`) factors the Gram itself so that the pairwise distances
it computes also give the AGOP weights at the training points (one distance pass per RFM
iteration instead of two); the iterative routes go through
:func:`kernelens.linalg.solve_kernel_system`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._memory import element_size, resolve_memory_budget
from ..kernels import Kernel
from ..linalg import jittered_cholesky, solve_kernel_system
from ._gradients import distances, kernel_from_distances, weights_from_gram

__all__ = ["SOLVERS", "Solution", "resolve_solver", "solve", "solve_dense"]

#: Solver names accepted by the RFM estimators.
SOLVERS = ("auto", "cholesky", "cg", "eigenpro")
#: Gram-sized buffers of the dense route (Gram, factor, a temporary).
_DENSE_BUFFERS = 3


@dataclass
class Solution:
    """The coefficients ``[n, c]``, the fitted values ``K coef [n, c]`` on the training
    points (exact for Cholesky, up to the solver's residual otherwise) and how they were
    found."""

    coef: torch.Tensor
    fitted: torch.Tensor
    method: str
    converged: bool
    iterations: int


def resolve_solver(solver: str, n: int, dtype: torch.dtype, memory_budget: int | None) -> str:
    """The route ``solver`` stands for with ``n`` points: ``"auto"`` is ``"cholesky"`` while
    the dense Gram and its factor fit the memory budget and ``"cg"`` beyond."""
    dense = _DENSE_BUFFERS * n * n * element_size(dtype)
    fits = dense <= resolve_memory_budget(memory_budget)
    if solver == "auto":
        return "cholesky" if fits else "cg"
    if solver == "cholesky" and not fits:
        raise MemoryError(
            f"solver='cholesky' needs the {n} x {n} Gram and its factor (about "
            f"{dense / 2**30:.1f} GiB), more than memory_budget allows; raise memory_budget "
            "or use solver='cg' or 'eigenpro' (they never form the Gram)."
        )
    return solver


def solve(
    kernel: Kernel,
    U: torch.Tensor,
    Y: torch.Tensor,
    reg: float,
    method: str,
    *,
    x0: torch.Tensor | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int | None = 0,
    memory_budget: int | None = None,
    show_progress: bool | None = None,
) -> Solution:
    """Solve ``(k(U, U) + reg I) coef = Y`` for ``U [n, r]``, ``Y [n, c]`` by ``method``
    (``"cholesky"``, ``"cg"`` with an EigenPro preconditioner, or ``"eigenpro"``)."""
    res = solve_kernel_system(
        kernel,
        U,
        Y,
        shift=reg,
        method=method,
        tol=tol,
        max_iter=max_iter,
        x0=x0,
        seed=seed,
        memory_budget=memory_budget,
        show_progress=show_progress,
    )
    # (K + reg I) coef = Y - residual, so K coef = Y - reg coef up to the residual
    fitted = Y - reg * res.x
    return Solution(res.x, fitted, res.method, res.converged, res.iterations)


def solve_dense(
    kind: str, kernel: Kernel, U: torch.Tensor, Y: torch.Tensor, reg: float
) -> tuple[Solution, torch.Tensor | None]:
    """Cholesky solve of ``(k(U, U) + reg I) coef = Y``.

    Returns:
        The solution, and for the Laplace and Gaussian kernels the AGOP weights
        ``w(u_i, u_j) [n, n]`` from the same distances (None for product-Laplace). Peak
        memory: three ``n x n`` matrices.
    """
    D = None
    if kind in ("laplace", "gaussian"):
        D = distances(kind, U, U, same=True)
        K = kernel_from_distances(kind, D, kernel.bandwidth)
    else:
        K = kernel(U)
    K.diagonal().add_(reg)
    L, jitter = jittered_cholesky(K)
    coef = torch.cholesky_solve(Y, L)
    del L
    # (K + (reg + jitter) I) coef = Y, so K coef = Y - (reg + jitter) coef exactly
    sol = Solution(coef, Y - (reg + jitter) * coef, "cholesky", True, 0)
    W = None if D is None else weights_from_gram(kind, K, D, kernel.bandwidth)
    return sol, W
