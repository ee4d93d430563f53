"""One entry point for kernel ridge systems ``(K(X, X) + shift I) alpha = Y`` of any size."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .._memory import element_size, resolve_memory_budget
from .._validation import (
    as_tensor,
    check_choice,
    check_consistent_length,
    check_nonnegative,
    check_positive_int,
    check_same_device_dtype,
)
from ._common import Seed
from ._kernel_tiles import KernelFn, kernel_matmul
from .cg import conjugate_gradient
from .cholesky import cholesky_solve
from .eigenpro import eigenpro_solve
from .operator import LinearOperator
from .preconditioners import EigenProPreconditioner

__all__ = [
    "SOLVERS",
    "KernelSolveResult",
    "dense_solve_fits",
    "kernel_operator",
    "resolve_solver",
    "solve_kernel_system",
]

#: The solver choices of every kernel ridge solve in kernelens (``solve_kernel_system``,
#: ``KernelRidge``, ``KernelClassifier``, ``RFMRegressor``, ``RFMClassifier``).
SOLVERS = ("auto", "cholesky", "cg", "eigenpro")
#: Dense Gram-sized buffers the Cholesky route holds (Gram, factor, a temporary).
_CHOLESKY_BUFFERS = 3


def dense_solve_fits(n: int, dtype: torch.dtype, memory_budget: int | float | None) -> bool:
    """Whether the Cholesky route for ``n`` points (three ``n x n`` matrices) fits the budget."""
    need = _CHOLESKY_BUFFERS * n * n * element_size(dtype)
    return need <= resolve_memory_budget(memory_budget)


def resolve_solver(
    solver: str,
    n: int,
    dtype: torch.dtype,
    memory_budget: int | float | None,
    *,
    refuse_over_budget: bool = False,
) -> str:
    """The solver ``solver`` stands for with ``n`` points: the one home of the ``"auto"`` rule.

    ``"auto"`` is ``"cholesky"`` while three ``n x n`` matrices of ``dtype`` fit the declared
    ``memory_budget`` (default a fixed 2 GiB, see :mod:`kernelens._memory`) and ``"cg"``
    beyond: it depends only on the data's size and the declared budget, never on the memory
    free at call time. Other names are returned as they are; with ``refuse_over_budget`` an
    explicit ``"cholesky"`` that does not fit raises :class:`MemoryError` naming the fix.
    """
    solver = check_choice(solver, "solver", SOLVERS)
    fits = dense_solve_fits(n, dtype, memory_budget)
    if solver == "auto":
        return "cholesky" if fits else "cg"
    if solver == "cholesky" and refuse_over_budget and not fits:
        dense = _CHOLESKY_BUFFERS * n * n * element_size(dtype)
        raise MemoryError(
            f"solver='cholesky' needs the {n} x {n} Gram and its factor (about "
            f"{dense / 2**30:.1f} GiB), more than memory_budget allows; raise memory_budget "
            "or use solver='cg' or 'eigenpro' (they never form the Gram)."
        )
    return solver


@dataclass
class KernelSolveResult:
    """Outcome of :func:`solve_kernel_system`.

    Attributes:
        x: ``alpha``, ``[n]`` or ``[n, c]`` like ``Y``.
        solver: the solver that ran (``"cholesky"``, ``"cg"`` or ``"eigenpro"``).
        converged: ``True`` for Cholesky; the iterative solver's verdict otherwise.
        residual_norm: relative residuals ``||(K + shift I) x - y|| / ||y||``, ``[]`` or ``[c]``.
        iterations: CG iterations or EigenPro epochs (0 for Cholesky).
    """

    x: torch.Tensor
    solver: str
    converged: bool
    residual_norm: torch.Tensor
    iterations: int

    @property
    def method(self) -> str:
        """Deprecated name of :attr:`solver` (removed in the next release)."""
        warnings.warn(
            "KernelSolveResult.method is deprecated; use .solver.", DeprecationWarning, stacklevel=2
        )
        return self.solver


def kernel_operator(
    kernel: KernelFn,
    X: torch.Tensor,
    *,
    memory_budget: int | float | None = None,
    client: Any = None,
) -> LinearOperator:
    """``K(X, X)`` as a symmetric matrix-free operator whose products run in tiles.

    Uses ``kernel.operator`` for a :class:`kernelens.kernels.Kernel` (its own tiled matvec, on
    the workers of ``client`` when one is given), and tiles ``kernel(X1, X2)`` calls for any
    other callable (in-process only).
    """
    from ..kernels.base import Kernel  # deferred: kernels depends on linalg.operator

    if isinstance(kernel, Kernel):
        return kernel.operator(X, memory_budget=memory_budget, client=client)
    if client is not None:
        raise TypeError(
            f"client= needs a kernelens.kernels.Kernel (its tiles can be sent to workers), got "
            f"{type(kernel).__name__}; build one with kernelens.kernels.make_kernel(...)."
        )
    return LinearOperator(
        (X.shape[0], X.shape[0]),
        lambda V: kernel_matmul(kernel, X, X, V, memory_budget=memory_budget),
        dtype=X.dtype,
        device=X.device,
        symmetric=True,
    )


def solve_kernel_system(
    kernel: KernelFn,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    shift: float,
    solver: str = "auto",
    tol: float | None = None,
    max_iter: int | None = None,
    rank: int = 200,
    subsample_size: int | None = None,
    x0: torch.Tensor | None = None,
    seed: Seed = 0,
    memory_budget: int | float | None = None,
    warn: bool = True,
    show_progress: bool | None = None,
    method: str | None = None,
    client: Any = None,
) -> KernelSolveResult:
    """Solve ``(K(X, X) + shift I) alpha = Y`` within a memory budget.

    Routes:

    - ``"cholesky"``: form the Gram and factor it (:func:`cholesky_solve`, jitter with a
      warning if needed). Exact; memory ``~3 n^2`` numbers.
    - ``"cg"``: :func:`conjugate_gradient` on the tiled kernel operator, preconditioned by
      an :class:`EigenProPreconditioner` of ``rank`` (from ``subsample_size`` points).
      Memory ``O(n (rank + c))`` plus Gram tiles; each iteration is one pass over the
      Gram, for all ``c`` right-hand sides together.
    - ``"eigenpro"``: :func:`eigenpro_solve` (``max_iter`` epochs, default 20): cheap
      approximate solutions, early stopping as regularisation.
    - ``"auto"`` (default): ``"cholesky"`` when ``3 n^2`` numbers fit the memory budget,
      else ``"cg"`` (:func:`resolve_solver`, the one home of this rule).

    Args:
        kernel: callable ``k(X1, X2) -> [a, b]`` (e.g. a :class:`kernelens.kernels.Kernel`).
        X: ``[n, d]``; Y: ``[n]`` or ``[n, c]``.
        shift: ridge ``>= 0`` (the estimators' ``alpha``).
        solver: one of :data:`SOLVERS`: ``"auto"``, ``"cholesky"``, ``"cg"``, ``"eigenpro"``.
        tol: relative residual target of the iterative routes (their defaults if None).
        max_iter: CG iterations / EigenPro epochs.
        rank: preconditioner rank (``"cg"``) or damped directions (``"eigenpro"``); capped
            below the subsample size.
        subsample_size: points used to estimate the top eigenpairs.
        x0: warm start for the iterative routes.
        seed: int, torch.Generator or None.
        memory_budget: bytes (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
        warn: warn when an iterative route does not converge.
        show_progress: progress bars (default: on a terminal).
        method: deprecated name of ``solver`` (removed in the next release).
        client: a :class:`distributed.Client`: the iterative routes run their kernel products
            on its workers (``memory_budget`` then applies per worker); ``"auto"`` never picks
            the dense Cholesky route with a client. None computes in-process.

    Returns:
        :class:`KernelSolveResult`.
    """
    X = as_tensor(X, "X", ndim=2)
    Y = as_tensor(Y, "Y", ndim=(1, 2), dtype=X.dtype if not isinstance(Y, torch.Tensor) else None)
    check_same_device_dtype({"X": X, "Y": Y})
    n = check_consistent_length(X=X, Y=Y)
    shift = check_nonnegative(shift, "shift")
    if method is not None:
        warnings.warn(
            "solve_kernel_system(method=...) is deprecated; use solver=... (the one name of the "
            "solver choice across kernelens).",
            DeprecationWarning,
            stacklevel=2,
        )
        solver = check_choice(method, "method", SOLVERS)
    rank = check_positive_int(rank, "rank")
    budget = resolve_memory_budget(memory_budget)
    solver = check_choice(solver, "solver", SOLVERS)
    if client is not None and solver == "cholesky":
        raise ValueError(
            "solver='cholesky' forms the Gram in this process, so it cannot use client=; pass "
            "solver='cg' (or 'eigenpro', or 'auto') to run the kernel products on the workers."
        )
    solver = "cg" if client is not None and solver == "auto" else solver
    solver = resolve_solver(solver, n, X.dtype, budget)

    if solver == "cholesky":
        with torch.no_grad():
            K = kernel(X, X)
            K = (K + K.T) / 2
            K.diagonal().add_(shift)
            x = cholesky_solve(K, Y, warn=warn)
            Ym = Y[:, None] if Y.ndim == 1 else Y
            xm = x[:, None] if x.ndim == 1 else x
            ynorm = Ym.norm(dim=0)
            rel = (K @ xm - Ym).norm(dim=0) / torch.where(ynorm > 0, ynorm, 1.0)
        return KernelSolveResult(x, "cholesky", True, rel[0] if Y.ndim == 1 else rel, 0)

    s = min(n, max(2000, 4 * rank)) if subsample_size is None else subsample_size
    q = min(rank, s - 1)
    if solver == "eigenpro":
        res = eigenpro_solve(
            kernel,
            X,
            Y,
            shift=shift,
            top_q=q,
            subsample_size=s,
            tol=tol,
            max_epochs=20 if max_iter is None else max_iter,
            x0=x0,
            seed=seed,
            memory_budget=budget,
            warn=warn,
            show_progress=show_progress,
            client=client,
        )
        return KernelSolveResult(res.x, "eigenpro", res.converged, res.residual_norm, res.epochs)

    P = EigenProPreconditioner(
        kernel, X, q, subsample_size=s, shift=shift, seed=seed, memory_budget=budget
    )
    op = kernel_operator(kernel, X, memory_budget=budget, client=client).shift(shift)
    res = conjugate_gradient(
        op,
        Y,
        preconditioner=P,
        x0=x0,
        tol=tol,
        max_iter=max_iter,
        warn=warn,
        show_progress=show_progress,
    )
    return KernelSolveResult(res.x, "cg", res.converged, res.residual_norm, res.iterations)
