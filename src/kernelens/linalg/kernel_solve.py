"""One entry point for kernel ridge systems ``(K(X, X) + shift I) alpha = Y`` of any size."""

from __future__ import annotations

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

__all__ = ["KernelSolveResult", "kernel_operator", "solve_kernel_system"]

METHODS = ("auto", "cholesky", "cg", "eigenpro")
#: Dense Gram-sized buffers the Cholesky route holds (Gram, factor, a temporary).
_CHOLESKY_BUFFERS = 3


@dataclass
class KernelSolveResult:
    """Outcome of :func:`solve_kernel_system`.

    Attributes:
        x: ``alpha``, ``[n]`` or ``[n, c]`` like ``Y``.
        method: the route taken (``"cholesky"``, ``"cg"`` or ``"eigenpro"``).
        converged: ``True`` for Cholesky; the iterative solver's verdict otherwise.
        residual_norm: relative residuals ``||(K + shift I) x - y|| / ||y||``, ``[]`` or ``[c]``.
        iterations: CG iterations or EigenPro epochs (0 for Cholesky).
    """

    x: torch.Tensor
    method: str
    converged: bool
    residual_norm: torch.Tensor
    iterations: int


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
    method: str = "auto",
    tol: float | None = None,
    max_iter: int | None = None,
    rank: int = 200,
    subsample_size: int | None = None,
    x0: torch.Tensor | None = None,
    seed: Seed = 0,
    memory_budget: int | float | None = None,
    warn: bool = True,
    show_progress: bool | None = None,
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
      else ``"cg"``.

    Args:
        kernel: callable ``k(X1, X2) -> [a, b]`` (e.g. a :class:`kernelens.kernels.Kernel`).
        X: ``[n, d]``; Y: ``[n]`` or ``[n, c]``.
        shift: ridge ``>= 0``.
        method: one of ``"auto"``, ``"cholesky"``, ``"cg"``, ``"eigenpro"``.
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
    method = check_choice(method, "method", METHODS)
    rank = check_positive_int(rank, "rank")
    budget = resolve_memory_budget(memory_budget)
    if client is not None and method == "cholesky":
        raise ValueError(
            "method='cholesky' forms the Gram in this process, so it cannot use client=; pass "
            "method='cg' (or 'eigenpro', or 'auto') to run the kernel products on the workers."
        )
    if method == "auto" and client is not None:
        method = "cg"
    if method == "auto":
        dense_bytes = _CHOLESKY_BUFFERS * n * n * element_size(X.dtype)
        method = "cholesky" if dense_bytes <= budget else "cg"

    if method == "cholesky":
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
    if method == "eigenpro":
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
