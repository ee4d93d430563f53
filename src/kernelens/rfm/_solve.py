"""Solving the kernel ridge system ``(K + alpha I) coef = Y`` of one RFM iteration.

The dense route (:func:`solve_dense`) factors the Gram itself so that the pairwise distances
it computes also give the AGOP weights at the training points (one distance pass per RFM
iteration instead of two); the iterative routes go through
:func:`kernelens.linalg.solve_kernel_system`. Which route ``solver="auto"`` takes is decided
by :func:`kernelens.linalg.kernel_solve.resolve_solver`, the one home of that rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.classic import _StationaryKernel
from ..linalg import jittered_cholesky, solve_kernel_system
from ..linalg.kernel_solve import SOLVERS, resolve_solver
from ._gradients import weights_from_gram

__all__ = ["SOLVERS", "Solution", "resolve_solver", "solve", "solve_dense"]


@dataclass
class Solution:
    """The coefficients ``[n, c]``, the fitted values ``K coef [n, c]`` on the training
    points (exact for Cholesky, up to the solver's residual otherwise) and how they were
    found; ``factor`` is the Cholesky factor of ``K + (alpha + jitter) I`` when it was kept."""

    coef: torch.Tensor
    fitted: torch.Tensor
    solver: str
    converged: bool
    iterations: int
    factor: torch.Tensor | None = None


def solve(
    kernel: _StationaryKernel,
    U: torch.Tensor,
    Y: torch.Tensor,
    alpha: float,
    solver: str,
    *,
    x0: torch.Tensor | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int | None = 0,
    memory_budget: int | None = None,
    show_progress: bool | None = None,
) -> Solution:
    """Solve ``(k(U, U) + alpha I) coef = Y`` for ``U [n, r]``, ``Y [n, c]`` by ``solver``
    (``"cholesky"``, ``"cg"`` with an EigenPro preconditioner, or ``"eigenpro"``)."""
    res = solve_kernel_system(
        kernel,
        U,
        Y,
        shift=alpha,
        solver=solver,
        tol=tol,
        max_iter=max_iter,
        x0=x0,
        seed=seed,
        memory_budget=memory_budget,
        show_progress=show_progress,
    )
    # (K + alpha I) coef = Y - residual, so K coef = Y - alpha coef up to the residual
    fitted = Y - alpha * res.x
    return Solution(res.x, fitted, res.solver, res.converged, res.iterations)


def solve_dense(
    kind: str,
    kernel: _StationaryKernel,
    U: torch.Tensor,
    Y: torch.Tensor,
    alpha: float,
    *,
    keep_factor: bool = False,
) -> tuple[Solution, torch.Tensor | None]:
    """Cholesky solve of ``(k(U, U) + alpha I) coef = Y``.

    Returns:
        The solution (with its Cholesky factor when ``keep_factor``), and, unless
        ``keep_factor``, for the Laplace and Gaussian kernels the AGOP weights
        ``w(u_i, u_j) [n, n]`` from the same distances (None otherwise). Peak memory: three
        ``n x n`` matrices.
    """
    D = None
    if kind in ("laplace", "gaussian") and not keep_factor:
        D = kernel.distances(U, U, same=True)
        K = kernel.from_distances(D)
    else:
        K = kernel(U)
    K.diagonal().add_(alpha)
    L, jitter = jittered_cholesky(K)
    coef = torch.cholesky_solve(Y, L)
    # (K + (alpha + jitter) I) coef = Y, so K coef = Y - (alpha + jitter) coef exactly
    sol = Solution(
        coef, Y - (alpha + jitter) * coef, "cholesky", True, 0, L if keep_factor else None
    )
    del L
    W = None if D is None else weights_from_gram(kind, K, D, kernel.bandwidth)
    return sol, W
