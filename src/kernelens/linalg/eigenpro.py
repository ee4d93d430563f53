"""EigenPro iteration: preconditioned mini-batch gradient descent for kernel systems.

Solves ``(K + shift I) alpha = Y`` for large ``n`` by stochastic gradient steps on the
square loss of ``f = sum_j alpha_j k(x_j, .)``, with EigenPro's preconditioner (Ma & Belkin,
"Diving into the shallows", 2017; "Kernel machines that adapt to GPUs", 2019): the top
``rank`` eigendirections of the kernel's covariance operator, estimated on a subsample,
are damped to the level of the ``rank + 1``-th, so the step size can grow from
``~1 / lambda_1`` to ``~1 / lambda_{rank+1}`` and the batch size to
``beta / lambda_{rank+1}`` (``beta = max_x k(x, x)``). The ridge ``shift`` is treated as
part of the kernel (``k + shift * delta``), so every fixed point solves the regularised
system exactly.

Each step costs ``batch x n`` kernel evaluations (an epoch about one product with ``K``),
so a few epochs give a good predictor for large ``n``. For tight tolerances prefer
:func:`conjugate_gradient` with an :class:`EigenProPreconditioner` or
:class:`NystromPreconditioner`, whose iterations are optimal in the Krylov sense.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._memory import resolve_memory_budget
from .._progress import progress
from .._validation import (
    as_tensor,
    check_consistent_length,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_same_device_dtype,
)
from ._common import Seed, default_tol, make_generator, warn_not_converged
from ._kernel_tiles import KernelFn, kernel_matmul

__all__ = ["EigenProResult", "eigenpro_solve"]

#: Step-size halvings allowed after a divergent epoch before giving up.
_MAX_HALVINGS = 8
#: An epoch whose residual estimate exceeds the best one by this factor counts as divergent
#: (the eigenvalue estimates from the subsample were too optimistic for the step size).
_DIVERGENCE_RATIO = 1.5


@dataclass
class EigenProResult:
    """Outcome of :func:`eigenpro_solve`.

    Attributes:
        x: coefficients ``alpha``, ``[n]`` or ``[n, c]`` like ``Y``.
        epochs: passes over the data run.
        residual_norm: true relative residuals ``||(K + shift I) x - y|| / ||y||`` per column,
            recomputed at the end, ``[]`` or ``[c]``.
        converged: every column reached ``tol``.
        batch_size, step_size: what the iteration used (after any halving).
        top_q: eigendirections damped by the preconditioner.
        history: per-epoch estimate of the largest relative residual (from the mini-batch
            residuals seen during the epoch).
    """

    x: torch.Tensor
    epochs: int
    residual_norm: torch.Tensor
    converged: bool
    batch_size: int
    step_size: float
    top_q: int
    history: list[float] = field(default_factory=list)


def _step_size(m: int, n: int, beta: float, lam: float) -> float:
    """Largest safe step for mini-batches of ``m`` of ``n`` points drawn without replacement.

    The mini-batch Hessian ``H_b`` of the square loss satisfies
    ``E[H_b^2] <= H^2 + f (beta H - H^2) / m`` with the finite-population factor
    ``f = (n - m) / (n - 1)``, so steps up to ``1 / (lam + f (beta - lam) / m)`` contract in
    expectation (``lam`` the top eigenvalue of ``H``). With ``f = 1`` this is the rule
    ``m / (beta + (m - 1) lam)`` of Ma, Bassily & Belkin (2018) used by EigenPro; at ``m = n``
    it is the full-gradient step ``1 / lam``. The critical batch size ``~beta / lam`` is
    where the noise term stops dominating.
    """
    f = (n - m) / (n - 1) if n > 1 else 0.0
    return 1.0 / (lam + f * max(beta - lam, 0.0) / m)


class _Products:
    """The products with ``K(X, X)`` an EigenPro epoch needs: rows ``K(X[idx], X) @ alpha`` per
    mini-batch and the full ``K alpha`` for residuals; in-process tiles, or on the workers of a
    Dask ``client`` (column tiles summed in a fixed order)."""

    def __init__(self, kernel: KernelFn, X: torch.Tensor, budget: int, client: Any) -> None:
        self.kernel, self.X, self.budget = kernel, X, budget
        self.op = None
        if client is not None:
            from .kernel_solve import kernel_operator

            self.op = kernel_operator(kernel, X, memory_budget=budget, client=client)

    def rows(self, idx: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if self.op is not None:
            return self.op.rows_product(idx, alpha)
        return kernel_matmul(self.kernel, self.X[idx], self.X, alpha, memory_budget=self.budget)

    def full(self, alpha: torch.Tensor) -> torch.Tensor:
        if self.op is not None:
            return self.op.matmat(alpha)
        return kernel_matmul(self.kernel, self.X, self.X, alpha, memory_budget=self.budget)


def eigenpro_solve(
    kernel: KernelFn,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    shift: float = 0.0,
    top_q: int = 100,
    subsample_size: int | None = None,
    batch_size: int | None = None,
    tol: float | None = None,
    max_epochs: int = 20,
    x0: torch.Tensor | None = None,
    seed: Seed = 0,
    memory_budget: int | float | None = None,
    callback: Callable[[int, torch.Tensor, float], None] | None = None,
    warn: bool = True,
    show_progress: bool | None = None,
    client: Any = None,
) -> EigenProResult:
    """Solve ``(K(X, X) + shift I) alpha = Y`` by the EigenPro iteration.

    Args:
        kernel: a callable ``k(X1 [a, d], X2 [b, d]) -> [a, b]`` (e.g. any
            :class:`kernelens.kernels.Kernel`); positive semi-definite.
        X: ``[n, d]`` training points.
        Y: ``[n]`` or ``[n, c]`` targets.
        shift: ridge ``>= 0`` added to the diagonal.
        top_q: eigendirections to damp (fewer if the subsample spectrum is numerically
            smaller, or if a given ``batch_size`` is too small to use them: only
            eigenvalues above ``beta / batch_size`` are damped); ``0`` gives plain
            mini-batch gradient descent.
        subsample_size: points for the eigensystem (default ``min(n, max(2000, 4 top_q))``).
        batch_size: default ``min(n, beta / lambda_{q+1})``, EigenPro's critical batch
            size, beyond which larger batches stop speeding up an epoch.
        tol: relative residual target (default ``1e-6`` in float64, ``1e-4`` in float32).
            Checked on the true residual (one extra pass over the data) whenever the
            running estimate says it is met.
        max_epochs: passes over the data.
        x0: warm start ``[n]`` or ``[n, c]`` (e.g. the previous RFM iteration's solution).
        seed: int, torch.Generator or None: subsample and batch order.
        memory_budget: bytes for Gram tiles (default: 2 GiB, or $KERNELENS_MEMORY_BUDGET).
        callback: ``callback(epoch, alpha, residual_estimate)`` after each epoch.
        warn: warn (:class:`ConvergenceWarning`) when ``tol`` was not reached.
        show_progress: progress bar over epochs (default: on a terminal).
        client: a :class:`distributed.Client` (``kernel`` must then be a
            :class:`kernelens.kernels.Kernel`): the mini-batch rows and the residual products
            run on its workers; the small subsample products stay in-process.

    Returns:
        :class:`EigenProResult`.
    """
    if not callable(kernel):
        raise TypeError(f"kernel must be callable as kernel(X1, X2), got {type(kernel).__name__}.")
    X = as_tensor(X, "X", ndim=2)
    Y = as_tensor(Y, "Y", ndim=(1, 2), dtype=X.dtype if not isinstance(Y, torch.Tensor) else None)
    check_same_device_dtype({"X": X, "Y": Y})
    n = check_consistent_length(X=X, Y=Y)
    vec = Y.ndim == 1
    Ym = Y[:, None] if vec else Y
    shift = check_nonnegative(shift, "shift")
    top_q = check_positive_int(top_q, "top_q", minimum=0)
    s = min(n, max(2000, 4 * top_q)) if subsample_size is None else subsample_size
    s = check_positive_int(s, "subsample_size")
    if s > n:
        raise ValueError(f"subsample_size={s} exceeds the number of points n={n}.")
    if top_q >= s:
        raise ValueError(f"top_q={top_q} must be smaller than subsample_size={s}.")
    tol = default_tol(X.dtype, f64=1e-6, f32=1e-4) if tol is None else check_positive(tol, "tol")
    max_epochs = check_positive_int(max_epochs, "max_epochs")
    budget = resolve_memory_budget(memory_budget)
    gen = make_generator(seed)
    dtype, device = X.dtype, X.device
    products = _Products(kernel, X, budget, client)

    with torch.no_grad():
        # -- eigensystem of the subsample: covariance eigenvalues sigma_i / s ------------------
        S = torch.randperm(n, generator=gen)[:s].to(device)
        Xs = X[S]
        Kss = kernel(Xs, Xs)
        if Kss.shape != (s, s):
            raise ValueError(
                f"kernel(X_S, X_S) returned shape {tuple(Kss.shape)}, expected {(s, s)}."
            )
        Kss = ((Kss + Kss.T) / 2).double()
        beta = float(Kss.diagonal().max()) + shift
        sigma, V = torch.linalg.eigh(Kss)
        sigma, V = sigma.flip(0), V.flip(1)
        if not float(sigma[0]) > 0:
            raise ValueError("the subsample Gram is numerically zero; check the kernel.")
        usable = int((sigma > float(sigma[0]) * s * torch.finfo(dtype).eps).sum())
        q = min(top_q, usable - 1) if usable > 1 else 0
        cov = sigma / s + shift / n  # eigenvalues of the (shifted) covariance operator
        if batch_size is None:
            # EigenPro's critical batch size for the damped spectrum
            m = min(n, max(1, int(beta / float(cov[q]))))
        else:
            m = min(check_positive_int(batch_size, "batch_size"), n)
            # damping below ~beta / m gains nothing: the step is then noise-limited
            q = min(q, int((cov > beta / m).sum()))
        lam_floor = float(cov[q])  # the top eigenvalue after preconditioning
        damp = ((1 - lam_floor / cov[:q]) / sigma[:q]).to(dtype)
        Vq = V[:, :q].to(dtype)

        # -- step size for this batch size ----------------------------------------------------
        eta = _step_size(m, n, beta, lam_floor)

        if x0 is None:
            alpha = torch.zeros_like(Ym)
        else:
            x0 = as_tensor(x0, "x0", ndim=Y.ndim, dtype=dtype, device=device)
            if x0.shape != Y.shape:
                raise ValueError(f"x0 has shape {tuple(x0.shape)} but Y has {tuple(Y.shape)}.")
            alpha = (x0[:, None] if vec else x0).clone()
        ynorm = Ym.norm(dim=0)
        safe = torch.where(ynorm > 0, ynorm, torch.ones_like(ynorm))

        history: list[float] = []
        best = math.inf
        best_alpha = alpha.clone()
        halvings = 0
        converged = False
        epochs = 0
        final = None
        for epoch in progress(range(1, max_epochs + 1), desc="EigenPro", enable=show_progress):
            epochs = epoch
            start_alpha = alpha.clone()
            sq = torch.zeros(Ym.shape[1], dtype=dtype, device=device)
            order = torch.randperm(n, generator=gen).to(device)
            for b0 in range(0, n, m):
                idx = order[b0 : b0 + m]
                Xb = X[idx]
                g = products.rows(idx, alpha)
                g = g + shift * alpha[idx] - Ym[idx]
                sq += (g**2).sum(dim=0)
                step = eta / idx.numel()
                alpha[idx] -= step * g
                if q:
                    KSb_g = kernel_matmul(kernel, Xs, Xb, g, memory_budget=budget)
                    alpha[S] += step * (Vq @ (damp[:, None] * (Vq.T @ KSb_g)))
            est = float((sq.sqrt() / safe).max())
            if not math.isfinite(est) or est > _DIVERGENCE_RATIO * best:
                # diverging: the eigenvalue estimates were too optimistic for this step size
                halvings += 1
                if halvings > _MAX_HALVINGS:
                    raise RuntimeError(
                        "eigenpro_solve diverged even after halving the step size "
                        f"{_MAX_HALVINGS} times; use a larger subsample_size, a smaller top_q "
                        "or conjugate_gradient."
                    )
                # the residuals are seen a step late, so return to the best epoch's start
                alpha = best_alpha.clone()
                eta /= 2
                history.append(est)
                continue
            if est < best:
                best, best_alpha = est, start_alpha
            history.append(est)
            if callback is not None:
                callback(epoch, alpha, est)
            if est <= tol:
                R = products.full(alpha) + shift * alpha - Ym
                final = R.norm(dim=0) / safe
                if bool((final <= tol).all()):
                    converged = True
                    break
                final = None
        if final is None:
            R = products.full(alpha) + shift * alpha - Ym
            final = R.norm(dim=0) / safe
        final = torch.where(ynorm > 0, final, torch.zeros_like(final))

    if warn and not converged:
        warn_not_converged(
            f"eigenpro_solve did not reach tol={tol:.3g} in {epochs} epoch(s) (worst relative "
            f"residual {float(final.max()):.3g}). Raise max_epochs, loosen tol, or for a tight "
            "solve use conjugate_gradient with an EigenProPreconditioner."
        )
    return EigenProResult(
        x=alpha[:, 0] if vec else alpha,
        epochs=epochs,
        residual_norm=final[0] if vec else final,
        converged=converged,
        batch_size=m,
        step_size=eta,
        top_q=q,
        history=history,
    )
