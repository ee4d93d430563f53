"""Preconditioned conjugate gradients for symmetric positive definite systems, block RHS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .._progress import progress
from .._validation import as_tensor, check_positive, check_positive_int, check_same_device_dtype
from ._common import as_square_operator, default_tol, warn_not_converged
from .operator import LinearOperator

__all__ = ["CGResult", "Preconditioner", "conjugate_gradient"]

Apply = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class Preconditioner(Protocol):
    """Anything with ``apply(R [n, k]) -> [n, k]`` approximating ``A^{-1} R`` (SPD)."""

    def apply(self, R: torch.Tensor) -> torch.Tensor: ...


@dataclass
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes:
        x: the solution, ``[n]`` or ``[n, k]`` like ``B``.
        iterations: iterations run (for a block, the most any column needed).
        residual_norm: relative residuals ``||b - A x|| / ||b||`` recomputed from ``x`` at the
            end, ``[]`` or ``[k]``.
        converged: whether every column reached ``tol``.
        history: the largest relative (recursive) residual over the active columns after each
            iteration, starting with the initial one.
    """

    x: torch.Tensor
    iterations: int
    residual_norm: torch.Tensor
    converged: bool
    history: list[float] = field(default_factory=list)


def _as_apply(preconditioner: object, n: int) -> Apply | None:
    if preconditioner is None:
        return None
    if isinstance(preconditioner, LinearOperator):
        if preconditioner.shape != (n, n):
            raise ValueError(f"preconditioner has shape {preconditioner.shape} but A is {n} x {n}.")
        return preconditioner.matmat
    if isinstance(preconditioner, torch.Tensor):
        if preconditioner.shape != (n, n):
            raise ValueError(
                f"preconditioner has shape {tuple(preconditioner.shape)} but A is {n} x {n}."
            )
        M = preconditioner
        return lambda R: M @ R
    if isinstance(preconditioner, Preconditioner):
        return preconditioner.apply
    if callable(preconditioner):
        return preconditioner  # type: ignore[return-value]
    raise TypeError(
        "preconditioner must be an object with .apply(R), a LinearOperator, a tensor or a "
        f"callable, got {type(preconditioner).__name__}."
    )


#: Failed true-residual checks in a row without halving the residual before a column stops.
_MAX_STALLS = 3


def _col_dot(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return (U * V).sum(dim=0)


def _check_rz(rz: torch.Tensor) -> None:
    if bool((rz <= 0).any()) or not bool(torch.isfinite(rz).all()):
        raise ValueError(
            "the preconditioner is not positive definite (r^T M r <= 0 or non-finite for some "
            "residual r); CG needs a symmetric positive definite preconditioner."
        )


def conjugate_gradient(
    A: LinearOperator | torch.Tensor | np.ndarray,
    B: torch.Tensor | np.ndarray,
    *,
    preconditioner: Preconditioner | LinearOperator | torch.Tensor | Apply | None = None,
    x0: torch.Tensor | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    warn: bool = True,
    show_progress: bool | None = None,
) -> CGResult:
    """Solve ``A X = B`` for symmetric positive definite ``A`` by (preconditioned) CG.

    Each column of ``B`` runs its own CG recurrence, but all active columns share one
    ``A.matmat`` per iteration, so a block of right-hand sides costs about as many operator
    passes as one (for a tiled kernel operator the Gram tiles are formed once per pass).
    A column stops when its relative residual ``||b - A x|| / ||b||`` is at most ``tol``;
    that is then confirmed on the true residual (one extra product), and if round-off made
    the recursive residual optimistic the column restarts from the true one. A column whose
    true residual stops improving over three such restarts (``tol`` below the accuracy the
    dtype can reach) stops early and is reported as not converged.

    Args:
        A: SPD ``[n, n]`` tensor or square :class:`LinearOperator` (not declared symmetric:
            a two-matvec symmetry probe runs first).
        B: ``[n]`` or ``[n, k]`` right-hand sides.
        preconditioner: an approximation of ``A^{-1}`` that is itself SPD: an object with
            ``apply(R [n, k])`` (e.g. :class:`NystromPreconditioner`), a LinearOperator, a
            dense ``[n, n]`` tensor or a callable.
        x0: initial guess shaped like ``B`` (default zeros).
        tol: relative residual target per column (default ``1e-8`` in float64, ``1e-4`` in
            float32: float32 cannot get much below ``eps * cond(A)``-ish relative residuals).
        max_iter: iteration cap (default ``10 n``, as scipy).
        callback: ``callback(iteration, X [n, k], rel_residuals [k])`` after each iteration.
        warn: emit a :class:`ConvergenceWarning` when some column did not converge.
        show_progress: progress bar (default: on a terminal).

    Returns:
        :class:`CGResult`. Not differentiable (runs under ``torch.no_grad``); use
        :func:`cholesky_solve` when gradients through a small solve are needed.
    """
    op = as_square_operator(A, "A", symmetric=True)
    n = op.shape[0]
    B = as_tensor(B, "B", ndim=(1, 2), dtype=None if isinstance(B, torch.Tensor) else op.dtype)
    check_same_device_dtype({"A": torch.empty(0, dtype=op.dtype, device=op.device), "B": B})
    if B.shape[0] != n:
        raise ValueError(f"B has {B.shape[0]} rows but A is {n} x {n}; they must match.")
    vec = B.ndim == 1
    Bm = B[:, None] if vec else B
    tol = default_tol(op.dtype, f64=1e-8, f32=1e-4) if tol is None else check_positive(tol, "tol")
    max_iter = 10 * n if max_iter is None else check_positive_int(max_iter, "max_iter", minimum=0)
    M = _as_apply(preconditioner, n)

    with torch.no_grad():
        k = Bm.shape[1]
        bnorm = Bm.norm(dim=0)
        if x0 is None:
            X = torch.zeros_like(Bm)
            R = Bm.clone()
        else:
            x0 = as_tensor(x0, "x0", ndim=B.ndim, dtype=op.dtype, device=op.device)
            if x0.shape != B.shape:
                raise ValueError(f"x0 has shape {tuple(x0.shape)} but B has {tuple(B.shape)}.")
            X = (x0[:, None] if vec else x0).clone()
            R = Bm - op.matmat(X)
        safe_bnorm = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
        rel = R.norm(dim=0) / safe_bnorm
        rel = torch.where(bnorm > 0, rel, torch.zeros_like(rel))
        X[:, bnorm == 0] = 0
        active = torch.nonzero(rel > tol).flatten()
        history = [float(rel.max()) if k else 0.0]
        iterations = 0

        def precondition(Rs: torch.Tensor) -> torch.Tensor:
            if M is None:
                return Rs
            Z = M(Rs)
            if Z.shape != Rs.shape:
                raise ValueError(
                    f"preconditioner returned shape {tuple(Z.shape)} for input "
                    f"{tuple(Rs.shape)}; it must preserve the shape."
                )
            return Z

        Ra = R[:, active]
        Za = precondition(Ra)
        Pa = Za.clone()
        rz = _col_dot(Ra, Za)
        _check_rz(rz)
        verified = rel <= tol  # columns whose true residual is known to be below tol
        broken = torch.zeros(k, dtype=torch.bool, device=B.device)
        # stagnation: true residuals that stop improving across restarts (the dtype's
        # attainable accuracy for this conditioning lies above tol)
        last_fail = torch.full((k,), float("inf"), dtype=rel.dtype, device=B.device)
        stalls = torch.zeros(k, dtype=torch.long, device=B.device)
        stagnated = torch.zeros(k, dtype=torch.bool, device=B.device)

        steps = progress(range(1, max_iter + 1), total=max_iter, desc="CG", enable=show_progress)
        for it in steps:
            if active.numel() == 0:
                break
            iterations = it
            APa = op.matmat(Pa)
            if not bool(torch.isfinite(APa).all()):
                raise ValueError("A returned non-finite values during CG; check the operator.")
            pAp = _col_dot(Pa, APa)
            bad = pAp <= 0
            broken[active[bad]] = True
            alpha = torch.where(bad, torch.zeros_like(rz), rz / torch.where(bad, 1.0, pAp))
            X[:, active] += alpha * Pa
            Ra = Ra - alpha * APa
            rel[active] = Ra.norm(dim=0) / safe_bnorm[active]

            done = (rel[active] <= tol) | bad
            restart = torch.zeros_like(done)
            pos = torch.nonzero(done & ~bad).flatten()
            if pos.numel():
                # confirm on the true residual; if round-off made the recursive one
                # optimistic, continue from the true residual with a fresh direction
                cols = active[pos]
                R_true = Bm[:, cols] - op.matmat(X[:, cols])
                rel[cols] = R_true.norm(dim=0) / safe_bnorm[cols]
                ok = rel[cols] <= tol
                verified[cols[ok]] = True
                failed, fpos = cols[~ok], pos[~ok]
                improved = rel[failed] < 0.5 * last_fail[failed]
                stalls[failed] = torch.where(improved, 0, stalls[failed] + 1)
                last_fail[failed] = torch.minimum(last_fail[failed], rel[failed])
                give_up = stalls[failed] >= _MAX_STALLS
                stagnated[failed[give_up]] = True
                done[fpos[~give_up]] = False
                restart[fpos[~give_up]] = True
                Ra[:, fpos[~give_up]] = R_true[:, ~ok][:, ~give_up]

            keep = ~done
            active, Ra, Pa, rz, restart = (
                active[keep],
                Ra[:, keep],
                Pa[:, keep],
                rz[keep],
                restart[keep],
            )
            history.append(float(rel[active].max()) if active.numel() else 0.0)
            if callback is not None:
                callback(it, X, rel)
            if active.numel() == 0:
                break
            Za = precondition(Ra)
            rz_new = _col_dot(Ra, Za)
            _check_rz(rz_new)
            beta = torch.where(restart, torch.zeros_like(rz_new), rz_new / rz)
            Pa = Za + beta * Pa
            rz = rz_new

        final = (Bm - op.matmat(X)).norm(dim=0) / safe_bnorm
        final = torch.where(bnorm > 0, final, torch.zeros_like(final))
        converged = bool((verified & ~broken).all())

    if warn and not converged:
        worst = float(final.max())
        n_bad = int((~(verified & ~broken)).sum())
        if bool(broken.any()):
            reason = " A (or the preconditioner) is not positive definite: p^T A p <= 0 occurred."
        elif bool(stagnated.any()):
            reason = (
                " The residual stagnated: tol is below the accuracy attainable in "
                f"{op.dtype} for this conditioning; loosen tol, use float64 or a "
                "preconditioner."
            )
        else:
            reason = " Raise max_iter, loosen tol or use a preconditioner."
        warn_not_converged(
            f"conjugate_gradient did not converge: {n_bad} of {k} "
            f"column(s) above tol={tol:.3g} after {iterations} iteration(s) (worst relative "
            f"residual {worst:.3g}).{reason}"
        )
    x = X[:, 0] if vec else X
    res = final[0] if vec else final
    return CGResult(
        x=x, iterations=iterations, residual_norm=res, converged=converged, history=history
    )
